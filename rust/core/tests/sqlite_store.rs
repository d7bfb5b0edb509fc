//! The SQLite store against the store contract (the same checks the memory store passes), plus
//! what only a file can do: survive a reopen, be shared by two connections, and refuse files that
//! are not (or not yet) tideflow databases.

use std::time::Instant;

use tideflow_core::store::memory::MemoryStore;
use tideflow_core::store::sqlite::{Durability, SqliteStore, APPLICATION_ID, SCHEMA_VERSION};
use tideflow_core::store::{Commit, Created, ListQuery, Store, StoredInstance};
use tideflow_core::{CoreError, Status};

mod common;

use common::*;

// ---------------------------------------------------------------------------------------------
// the contract, run on every store

fn contract<S: Store>(s: &mut S) {
    // create, idempotently
    let a = meta("a", "wf1", Status::Pending, 10.0);
    assert_eq!(s.create(&a, b"header-a", &[rec("a0"), rec("a1")]).unwrap(), Created::New);
    let again = s.create(&meta("a", "other", Status::Running, 99.0), b"other", &[rec("zz")]).unwrap();
    assert_eq!(again, Created::Existing(StoredInstance { meta: a.clone(), header: b"header-a".to_vec() }));
    assert_eq!(s.records("a", 0).unwrap(), vec![rec("a0"), rec("a1")]);
    assert_eq!(s.get("a").unwrap(), Some(StoredInstance { meta: a.clone(), header: b"header-a".to_vec() }));
    assert_eq!(s.get("nope").unwrap(), None);
    assert_eq!(s.records("nope", 0).unwrap(), Vec::<Vec<u8>>::new());

    // commit: version +1, fields replaced, header kept unless given, records appended in order
    s.commit(&Commit { due_at: Some(50.0), ..commit("a", 1, Status::Running, 11.0, &[rec("a2")]) }).unwrap();
    let got = s.get("a").unwrap().unwrap();
    assert_eq!(got.meta.version, 2);
    assert_eq!(got.meta.status, Status::Running);
    assert_eq!(got.meta.updated_at, 11.0);
    assert_eq!(got.meta.created_at, 10.0);
    assert_eq!(got.meta.due_at, Some(50.0));
    assert_eq!(got.header, b"header-a");
    s.commit(&commit("a", 2, Status::Suspended, 12.0, &[rec("a3"), rec("a4"), rec("a5")])).unwrap();
    s.commit(&commit("a", 3, Status::Running, 13.0, &[])).unwrap();
    let got = s.get("a").unwrap().unwrap();
    assert_eq!((got.meta.version, got.meta.status, got.meta.due_at), (4, Status::Running, None));
    assert_eq!(s.records("a", 0).unwrap(), ["a0", "a1", "a2", "a3", "a4", "a5"].map(rec).to_vec());

    // stale and unknown commits are rejected without changes
    let stale = s.commit(&commit("a", 2, Status::Completed, 14.0, &[rec("x")]));
    assert_eq!(stale, Err(CoreError::Conflict { instance: "a".into(), expected: 2, found: 4 }));
    let ahead = s.commit(&commit("a", 5, Status::Completed, 14.0, &[rec("x")]));
    assert_eq!(ahead, Err(CoreError::Conflict { instance: "a".into(), expected: 5, found: 4 }));
    let unknown = s.commit(&commit("ghost", 1, Status::Running, 14.0, &[rec("x")]));
    assert_eq!(unknown, Err(CoreError::UnknownInstance("ghost".into())));
    assert_eq!(s.get("ghost").unwrap(), None);
    assert_eq!(version(s, "a"), 4);
    assert_eq!(s.records("a", 0).unwrap().len(), 6);

    // a header replacement, and empty byte strings round-trip
    s.commit(&Commit { header: Some(b"final"), ..commit("a", 4, Status::Completed, 15.0, &[rec("")]) }).unwrap();
    let got = s.get("a").unwrap().unwrap();
    assert_eq!((got.header.as_slice(), got.meta.status), (&b"final"[..], Status::Completed));
    assert_eq!(s.records("a", 0).unwrap().last(), Some(&Vec::new()));
    assert_eq!(s.create(&meta("empty", "wf1", Status::Pending, 1.0), b"", &[Vec::new()]).unwrap(), Created::New);
    assert_eq!(s.get("empty").unwrap().unwrap().header, Vec::<u8>::new());
    assert_eq!(s.records("empty", 0).unwrap(), vec![Vec::<u8>::new()]);
    s.commit(&Commit { header: Some(b""), ..commit("empty", 1, Status::Failed, 2.0, &[]) }).unwrap();
    assert_eq!(s.get("empty").unwrap().unwrap().header, Vec::<u8>::new());
    assert!(s.delete("empty").unwrap());

    // list: filters, limit, most recently created first (creation order, not timestamps)
    s.create(&meta("b", "wf2", Status::Pending, 5.0), b"h", &[]).unwrap();
    s.create(&meta("c", "wf1", Status::Running, 1.0), b"h", &[]).unwrap();
    s.create(&meta("d", "wf2", Status::Suspended, 7.0), b"h", &[]).unwrap();
    let all = s.list(&ListQuery::default()).unwrap().items;
    assert_eq!(ids(&all), ["d", "c", "b", "a"]);
    assert_eq!(all[3], s.get("a").unwrap().unwrap().meta);
    let q = |statuses: &[Status], workflow: Option<&str>, limit: Option<usize>| ListQuery {
        statuses: statuses.to_vec(),
        workflow: workflow.map(String::from),
        limit,
        ..ListQuery::default()
    };
    assert_eq!(ids(&s.list(&q(&[], Some("wf1"), None)).unwrap().items), ["c", "a"]);
    assert_eq!(ids(&s.list(&q(&[], Some("nope"), None)).unwrap().items), Vec::<&str>::new());
    assert_eq!(ids(&s.list(&q(&[Status::Pending], None, None)).unwrap().items), ["b"]);
    let active = [Status::Running, Status::Suspended, Status::Pending, Status::Running];
    assert_eq!(ids(&s.list(&q(&active, None, None)).unwrap().items), ["d", "c", "b"]);
    assert_eq!(ids(&s.list(&q(&active, Some("wf2"), None)).unwrap().items), ["d", "b"]);
    assert_eq!(ids(&s.list(&q(&[], None, Some(2))).unwrap().items), ["d", "c"]);
    assert_eq!(ids(&s.list(&q(&active, Some("wf2"), Some(1))).unwrap().items), ["d"]);
    assert_eq!(ids(&s.list(&q(&[], None, Some(0))).unwrap().items), Vec::<&str>::new());
    assert_eq!(ids(&s.list(&q(&[], None, Some(usize::MAX))).unwrap().items).len(), 4);

    // commits of several instances, one by one
    let r1 = [rec("b1")];
    let r2 = [rec("c1")];
    let r3 = [rec("d1")];
    let stale = s.commit(&commit("d", 7, Status::Running, 20.0, &r3));
    assert_eq!(stale, Err(CoreError::Conflict { instance: "d".into(), expected: 7, found: 1 }));
    for id in ["b", "c", "d"] {
        assert_eq!(version(s, id), 1, "{id} changed by a failed commit");
        assert!(s.records(id, 0).unwrap().is_empty(), "{id} got records from a failed commit");
    }
    s.commit(&commit("b", 1, Status::Running, 20.0, &r1)).unwrap();
    s.commit(&commit("c", 1, Status::Completed, 20.0, &r2)).unwrap();
    s.commit(&commit("d", 1, Status::Failed, 20.0, &r3)).unwrap();
    for (id, r, st) in [("b", "b1", Status::Running), ("c", "c1", Status::Completed), ("d", "d1", Status::Failed)] {
        let got = s.get(id).unwrap().unwrap().meta;
        assert_eq!((got.version, got.status, got.updated_at), (2, st, 20.0));
        assert_eq!(s.records(id, 0).unwrap(), vec![rec(r)]);
    }

    // delete
    s.create(&meta("e", "wf1", Status::Pending, 30.0), b"h", &[rec("e0")]).unwrap();
    assert!(s.delete("e").unwrap());
    assert!(!s.delete("e").unwrap());
    assert_eq!(s.get("e").unwrap(), None);
    assert!(s.records("e", 0).unwrap().is_empty());
    assert_eq!(s.commit(&commit("e", 1, Status::Running, 31.0, &[])), Err(CoreError::UnknownInstance("e".into())));
    // a re-created id starts a fresh log and counts as newest
    assert_eq!(s.create(&meta("e", "wf1", Status::Pending, 0.0), b"h2", &[rec("new")]).unwrap(), Created::New);
    assert_eq!(s.records("e", 0).unwrap(), vec![rec("new")]);
    assert_eq!(ids(&s.list(&ListQuery::default()).unwrap().items), ["e", "d", "c", "b", "a"]);
    assert!(s.delete("e").unwrap());

    // purge: finished only, strictly before the cut, optionally by status
    // now: a completed@15, b running@20, c completed@20, d failed@20
    assert_eq!(s.purge(100.0, &[Status::Running, Status::Pending]).unwrap(), 0);
    assert_eq!(s.purge(15.0, &[]).unwrap(), 0);
    assert_eq!(s.purge(20.0, &[Status::Failed]).unwrap(), 0);
    assert_eq!(s.purge(21.0, &[Status::Failed, Status::Running]).unwrap(), 1);
    assert_eq!(s.get("d").unwrap(), None);
    assert!(s.records("d", 0).unwrap().is_empty());
    assert_eq!(s.purge(21.0, &[]).unwrap(), 2);
    assert_eq!(ids(&s.list(&ListQuery::default()).unwrap().items), ["b"]);
    assert!(s.records("a", 0).unwrap().is_empty());
    assert_eq!(s.records("b", 0).unwrap(), vec![rec("b1")]);
    assert_eq!(s.purge(1e12, &[]).unwrap(), 0);
}

#[test]
fn memory_store_meets_the_contract() {
    contract(&mut MemoryStore::new());
}

#[test]
fn sqlite_store_meets_the_contract() {
    let dir = TempDir::new("contract");
    for (name, durability) in [("normal.db", Durability::Normal), ("full.db", Durability::Full)] {
        let path = dir.join(name);
        let mut s = SqliteStore::open(&path, durability).unwrap();
        assert_eq!(s.describe(), format!("sqlite:{}", path.display()));
        contract(&mut s);
    }
}

// ---------------------------------------------------------------------------------------------
// SQLite only

#[test]
fn data_survives_close_and_reopen() {
    let dir = TempDir::new("reopen");
    let path = dir.join("t.db");
    {
        let mut s = open(&path);
        s.create(&meta("a", "wf", Status::Pending, 1.0), b"h", &[rec("r0")]).unwrap();
        s.create(&meta("b", "wf", Status::Pending, 2.0), b"h", &[]).unwrap();
        s.commit(&Commit { due_at: Some(9.5), ..commit("a", 1, Status::Suspended, 3.0, &[rec("r1")]) }).unwrap();
    }
    for _ in 0..2 {
        let mut s = SqliteStore::open(&path, Durability::Full).unwrap();
        let a = s.get("a").unwrap().unwrap();
        assert_eq!((a.meta.version, a.meta.status, a.meta.due_at), (2, Status::Suspended, Some(9.5)));
        assert_eq!(s.records("a", 0).unwrap(), vec![rec("r0"), rec("r1")]);
        assert_eq!(ids(&s.list(&ListQuery::default()).unwrap().items), ["b", "a"]);
    }
    // the ordering counter continues after a reopen
    let mut s = open(&path);
    s.create(&meta("c", "wf", Status::Pending, 0.0), b"h", &[]).unwrap();
    s.commit(&commit("a", 2, Status::Running, 4.0, &[rec("r2")])).unwrap();
    assert_eq!(ids(&s.list(&ListQuery::default()).unwrap().items), ["c", "b", "a"]);
    assert_eq!(s.records("a", 0).unwrap(), vec![rec("r0"), rec("r1"), rec("r2")]);
}

#[test]
fn the_file_is_marked_and_versioned() {
    let dir = TempDir::new("marked");
    let path = dir.join("t.db");
    drop(open(&path));
    drop(open(&path)); // a second open finds it current and changes nothing
    let conn = rusqlite::Connection::open(&path).unwrap();
    let pragma = |name: &str| -> i64 { conn.query_row(&format!("PRAGMA {name}"), [], |r| r.get(0)).unwrap() };
    assert_eq!(pragma("application_id"), i64::from(APPLICATION_ID));
    assert_eq!(pragma("user_version"), i64::from(SCHEMA_VERSION));
    let mode: String = conn.query_row("PRAGMA journal_mode", [], |r| r.get(0)).unwrap();
    assert_eq!(mode, "wal");
    let meta: Vec<(String, String)> = conn
        .prepare("SELECT key, value FROM tideflow_meta ORDER BY key")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(
        meta,
        [("application".into(), "tideflow".into()), ("schema_version".into(), SCHEMA_VERSION.to_string())]
    );
}

#[test]
fn two_connections_on_one_file_commit_concurrently() {
    const COMMITS: u64 = 300;
    let dir = TempDir::new("concurrent");
    let path = dir.join("t.db");
    drop(open(&path));
    let workers: Vec<_> = (0..2)
        .map(|w| {
            let path = path.clone();
            std::thread::spawn(move || -> tideflow_core::Result<()> {
                let mut s = SqliteStore::open(&path, Durability::Normal)?;
                let id = format!("w{w}");
                s.create(&meta(&id, "wf", Status::Pending, 0.0), b"h", &[])?;
                let mut version = 1;
                for i in 1..=COMMITS {
                    let r = [format!("{w}:{i}").into_bytes()];
                    s.commit(&commit(&id, version, Status::Running, i as f64, &r))?;
                    version += 1;
                    if i % 10 == 0 {
                        // creations and commits of other instances interleave too
                        let side = format!("w{w}-{i}");
                        s.create(&meta(&side, "side", Status::Pending, 0.0), b"h", &[])?;
                        let r2 = [rec("s")];
                        s.commit(&commit(&side, 1, Status::Running, 1.0, &r2))?;
                        s.commit(&commit(&id, version, Status::Running, 1.0, &[]))?;
                        version += 1;
                    }
                }
                Ok(())
            })
        })
        .collect();
    for w in workers {
        w.join().unwrap().unwrap();
    }
    let mut s = open(&path);
    for w in 0..2 {
        assert_eq!(version(&mut s, &format!("w{w}")), 1 + COMMITS + COMMITS / 10);
        assert_eq!(s.records(&format!("w{w}"), 0).unwrap().len(), COMMITS as usize);
    }
    let all = s.list(&ListQuery::default()).unwrap().items;
    assert_eq!(all.len(), 2 + 2 * (COMMITS as usize / 10));
    let side = s.list(&ListQuery { workflow: Some("side".into()), ..ListQuery::default() }).unwrap().items;
    assert!(side.iter().all(|m| m.version == 2 && m.status == Status::Running));
}

#[test]
fn two_connections_commit_hundreds_of_records_each() {
    // The plain case the engine produces: two processes, each driving its own instances.
    const COMMITS: u64 = 500;
    let dir = TempDir::new("concurrent2");
    let path = dir.join("t.db");
    let workers: Vec<_> = (0..2)
        .map(|w| {
            let path = path.clone();
            std::thread::spawn(move || -> tideflow_core::Result<()> {
                // both open (and so migrate) a brand-new file at the same time
                let mut s = SqliteStore::open(&path, Durability::Normal)?;
                let id = format!("w{w}");
                s.create(&meta(&id, "wf", Status::Pending, 0.0), b"h", &[])?;
                for v in 1..=COMMITS {
                    let r = [format!("{w}:{v}").into_bytes()];
                    s.commit(&commit(&id, v, Status::Running, v as f64, &r))?;
                }
                Ok(())
            })
        })
        .collect();
    for w in workers {
        w.join().unwrap().unwrap();
    }
    let mut s = open(&path);
    for w in 0..2 {
        let id = format!("w{w}");
        assert_eq!(version(&mut s, &id), COMMITS + 1);
        let want: Vec<Vec<u8>> = (1..=COMMITS).map(|v| format!("{w}:{v}").into_bytes()).collect();
        assert_eq!(s.records(&id, 0).unwrap(), want);
    }
}

// ---------------------------------------------------------------------------------------------
// timing (cargo test -p tideflow-core --release --test sqlite_store -- --ignored --nocapture timing)

/// This thread's CPU time, in seconds (what a commit costs, without the time the loaded machine
/// spends running others meanwhile).
fn thread_cpu() -> f64 {
    #[repr(C)]
    struct Timespec {
        sec: i64,
        nsec: i64,
    }
    extern "C" {
        fn clock_gettime(clock: i32, tp: *mut Timespec) -> i32;
    }
    const CLOCK_THREAD_CPUTIME_ID: i32 = 3; // Linux
    let mut t = Timespec { sec: 0, nsec: 0 };
    // SAFETY: clock_gettime writes one timespec (two longs on 64-bit Linux) through the pointer.
    let rc = unsafe { clock_gettime(CLOCK_THREAD_CPUTIME_ID, &mut t) };
    assert_eq!(rc, 0);
    t.sec as f64 + t.nsec as f64 * 1e-9
}

/// A point in time on the wall clock and on this thread's CPU clock.
struct Mark(Instant, f64);

impl Mark {
    fn now() -> Mark {
        Mark(Instant::now(), thread_cpu())
    }
}

#[test]
#[ignore = "a measurement, not a check"]
fn timing_single_record_commit() {
    // Many short alternating batches of each kind; the median batch of each is reported (the machine
    // is shared, so longer batches would mostly measure who else ran meanwhile).
    const ROUNDS: usize = 61;
    let dir = TempDir::new("timing");
    let record = vec![7u8; 200];
    let records = [record.clone()];
    // a loop iteration: the step's record and the loop's decision record, in one commit
    let two = [record.clone(), vec![3u8; 24]];
    for durability in [Durability::Normal, Durability::Full] {
        let n: u64 = if durability == Durability::Full { 60 } else { 300 };
        // baseline: one raw INSERT + COMMIT per step on a WAL file with the same synchronous mode
        let conn = rusqlite::Connection::open(dir.join(&format!("raw-{durability:?}.db"))).unwrap();
        let sync = if durability == Durability::Full { "FULL" } else { "NORMAL" };
        conn.execute_batch(&format!(
            "PRAGMA journal_mode=WAL; PRAGMA synchronous={sync};
             CREATE TABLE t (k TEXT, seq INTEGER, data BLOB, PRIMARY KEY (k, seq)) WITHOUT ROWID;"
        ))
        .unwrap();
        let mut s = SqliteStore::open(&dir.join(&format!("store-{durability:?}.db")), durability).unwrap();
        for i in 0..100 {
            let m = meta(&format!("other{i}"), "wf", Status::Suspended, 0.0);
            s.create(&m, &[1u8; 300], std::slice::from_ref(&record)).unwrap();
        }
        for id in ["a", "b", "c"] {
            s.create(&meta(id, "wf", Status::Running, 0.0), &[1u8; 300], &[]).unwrap();
        }
        let mut batches: [Vec<f64>; 5] = Default::default();
        let mut cpu: [Vec<f64>; 5] = Default::default();
        let (mut i, mut va, mut vb, mut vc) = (0u64, 1u64, 1u64, 1u64);
        let per = |start: &Mark| start.0.elapsed().as_secs_f64() / n as f64 * 1e6;
        let per_cpu = |start: &Mark| (thread_cpu() - start.1) / n as f64 * 1e6;
        for _ in 0..ROUNDS {
            let start = Mark::now();
            for _ in 0..n {
                i += 1;
                conn.prepare_cached("BEGIN").unwrap().execute([]).unwrap();
                let mut insert = conn.prepare_cached("INSERT INTO t VALUES ('x', ?1, ?2)").unwrap();
                insert.execute(rusqlite::params![i, record]).unwrap();
                conn.prepare_cached("COMMIT").unwrap().execute([]).unwrap();
            }
            batches[0].push(per(&start));
            cpu[0].push(per_cpu(&start));
            let start = Mark::now();
            for _ in 0..n {
                conn.prepare_cached("BEGIN").unwrap().execute([]).unwrap();
                let mut insert = conn.prepare_cached("INSERT INTO t VALUES ('y', ?1, ?2)").unwrap();
                for r in &two {
                    i += 1;
                    insert.execute(rusqlite::params![i, r]).unwrap();
                }
                conn.prepare_cached("COMMIT").unwrap().execute([]).unwrap();
            }
            batches[1].push(per(&start));
            cpu[1].push(per_cpu(&start));
            let start = Mark::now();
            for _ in 0..n {
                s.commit(&commit("a", va, Status::Running, va as f64, &records)).unwrap();
                va += 1;
            }
            batches[2].push(per(&start));
            cpu[2].push(per_cpu(&start));
            let start = Mark::now();
            for _ in 0..n {
                s.commit(&commit("c", vc, Status::Running, vc as f64, &two)).unwrap();
                vc += 1;
            }
            batches[3].push(per(&start));
            cpu[3].push(per_cpu(&start));
            let start = Mark::now();
            for _ in 0..n {
                let status = if vb % 2 == 0 { Status::Running } else { Status::Suspended };
                s.commit(&Commit { due_at: Some(vb as f64), ..commit("b", vb, status, vb as f64, &records) }).unwrap();
                vb += 1;
            }
            batches[4].push(per(&start));
            cpu[4].push(per_cpu(&start));
        }
        let median = |mut b: Vec<f64>| {
            b.sort_by(f64::total_cmp);
            b[b.len() / 2]
        };
        let [raw, raw2, same, double, changing] = batches.map(median);
        let [craw, craw2, csame, cdouble, cchanging] = cpu.map(|b| b.into_iter().fold(f64::MAX, f64::min));
        println!(
            "{durability:?} CPU (best batch): raw INSERT+COMMIT {craw:.1} us (two raw INSERTs+COMMIT {craw2:.1} us, {:.2}x); \
             store commit with 1 record: {csame:.1} us ({:.2}x), with 2 records: {cdouble:.1} us ({:.2}x; \
             {:.2}x the 1-record commit), changing status and due time: {cchanging:.1} us ({:.2}x)",
            craw2 / craw,
            csame / craw,
            cdouble / craw,
            cdouble / csame,
            cchanging / craw
        );
        println!(
            "{durability:?} wall (median batch): raw INSERT+COMMIT {raw:.1} us (two raw INSERTs+COMMIT {raw2:.1} us, {:.2}x); \
             store commit with 1 record: {same:.1} us ({:.2}x), with 2 records: {double:.1} us ({:.2}x; \
             {:.2}x the 1-record commit), changing status and due time: {changing:.1} us ({:.2}x)",
            raw2 / raw,
            same / raw,
            double / raw,
            double / same,
            changing / raw
        );
    }
}

/// Signals: the inbox, its sequence numbers, the due mark, and the suspend-with-unseen-signal rule.
fn signal_contract<S: Store>(s: &mut S) {
    assert_eq!(s.create(&meta("w", "wf", Status::Running, 1.0), b"h", &[rec("r0")]).unwrap(), Created::New);
    assert_eq!(s.send_signal("w", b"first", 5.0).unwrap(), 1);
    assert_eq!(s.send_signal("w", b"second", 6.0).unwrap(), 2);
    assert_eq!(s.signals("w", 0).unwrap(), vec![(1, b"first".to_vec()), (2, b"second".to_vec())]);
    assert_eq!(s.send_signal("ghost", b"x", 6.0), Err(CoreError::UnknownInstance("ghost".into())));
    // a suspending commit that saw only signal 1 stays due now; one that saw both is not due
    s.commit(&Commit { signals_seen: 1, ..commit("w", 1, Status::Suspended, 7.0, &[rec("r1")]) }).unwrap();
    assert_eq!(s.due(7.0, None).unwrap().iter().map(|m| m.id.as_str()).collect::<Vec<_>>(), ["w"]);
    s.commit(&Commit { signals_seen: 2, due_at: Some(100.0), ..commit("w", 2, Status::Suspended, 8.0, &[]) }).unwrap();
    assert!(s.due(99.0, None).unwrap().is_empty());
    assert_eq!(s.due(100.0, Some(5)).unwrap()[0].id, "w");
    assert_eq!(s.records("w", 0).unwrap(), vec![rec("r0"), rec("r1")]);
    s.commit(&commit("w", 3, Status::Completed, 9.0, &[])).unwrap();
    assert!(matches!(s.send_signal("w", b"late", 10.0), Err(CoreError::InvalidState(_))));
    assert!(s.delete("w").unwrap());
    assert!(s.signals("w", 0).unwrap().is_empty());
}

#[test]
fn signals_meet_the_contract_on_every_store() {
    signal_contract(&mut MemoryStore::new());
    let dir = TempDir::new("signals");
    signal_contract(&mut SqliteStore::open(&dir.join("s.db"), Durability::Normal).unwrap());
}
