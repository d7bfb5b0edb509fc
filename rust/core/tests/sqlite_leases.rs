//! Contract v2 on every store (memory and SQLite side by side, so the memory store, the reference,
//! checks the checks): leases, paged lists, counts, incremental reads and `load`; then what only
//! a file shared by connections can show: two claimers racing on one file.

use std::collections::BTreeSet;

use tideflow_core::store::memory::MemoryStore;
use tideflow_core::store::sqlite::SqliteStore;
use tideflow_core::store::{Claim, Commit, Count, InstanceMeta, ListQuery, Loaded, Store};
use tideflow_core::{CoreError, Status};

mod common;

use common::*;

const OTHER: &str = "plan-2";

fn plans(hashes: &[&str]) -> Vec<String> {
    hashes.iter().map(|h| h.to_string()).collect()
}

fn lost(id: &str, owner: Option<&str>, holder: Option<&str>) -> CoreError {
    CoreError::LeaseLost { instance: id.into(), owner: owner.map(String::from), holder: holder.map(String::from) }
}

fn lease_of<S: Store>(s: &mut S, id: &str) -> (Option<String>, Option<f64>) {
    let m = s.get(id).unwrap().unwrap().meta;
    (m.owner, m.lease_until)
}

fn lease_contract<S: Store>(s: &mut S) {
    let mine = plans(&[PLAN]);
    let claim =
        |owner, now, hashes: &'static [String]| Claim { owner, limit: 10, lease: 30.0, now, plan_hashes: hashes };
    let _ = claim;
    s.create(&meta("p1", "wf", Status::Pending, 1.0), b"h", &[rec("p1.0")]).unwrap();
    s.create(&InstanceMeta { plan_hash: OTHER.into(), ..meta("p2", "wf", Status::Pending, 2.0) }, b"h", &[]).unwrap();
    s.create(&InstanceMeta { due_at: Some(5.0), ..meta("s1", "wf", Status::Suspended, 3.0) }, b"h", &[]).unwrap();
    s.create(&InstanceMeta { due_at: Some(50.0), ..meta("s2", "wf", Status::Suspended, 3.0) }, b"h", &[]).unwrap();
    s.create(&meta("r1", "wf", Status::Running, 4.0), b"h", &[]).unwrap();
    s.create(&meta("done", "wf", Status::Completed, 4.0), b"h", &[]).unwrap();

    // a claim takes the free pending and due instances of its plans, earliest first
    let got = s.claim(&Claim { owner: "w1", limit: 10, lease: 30.0, now: 10.0, plan_hashes: &mine }).unwrap();
    assert_eq!(ids(&got), ["p1", "s1"]);
    assert!(got.iter().all(|m| m.owner.as_deref() == Some("w1") && m.lease_until == Some(40.0)));
    assert_eq!(got[0], s.get("p1").unwrap().unwrap().meta, "returned as stored");
    assert_eq!(version(s, "p1"), 1, "a claim is not a commit");
    // nothing left for a second claimer; none without plans; never another plan's instance
    assert!(s.claim(&Claim { owner: "w2", limit: 10, lease: 30.0, now: 11.0, plan_hashes: &mine }).unwrap().is_empty());
    assert!(s.claim(&Claim { owner: "w2", limit: 10, lease: 30.0, now: 11.0, plan_hashes: &[] }).unwrap().is_empty());
    let other = plans(&[OTHER, "plan-unknown"]);
    let got = s.claim(&Claim { owner: "w3", limit: 10, lease: 30.0, now: 11.0, plan_hashes: &other }).unwrap();
    assert_eq!(ids(&got), ["p2"]);
    assert!(got.iter().all(|m| m.plan_hash == OTHER));
    assert!(s.release("p2", "w3").unwrap());
    // due lists skip what someone holds
    assert!(s.due(20.0, None).unwrap().is_empty());

    // the holder commits; others (and an engine of its own) are refused and change nothing
    s.commit(&Commit { owner: Some("w1"), ..commit("p1", 1, Status::Running, 12.0, &[rec("p1.1")]) }).unwrap();
    assert_eq!(lease_of(s, "p1"), (Some("w1".into()), Some(40.0)), "a step commit keeps the lease");
    let r = s.commit(&commit("s1", 1, Status::Running, 12.0, &[rec("x")]));
    assert_eq!(r, Err(lost("s1", None, Some("w1"))));
    let r = s.commit(&Commit { owner: Some("w2"), ..commit("p1", 2, Status::Running, 12.0, &[rec("x")]) });
    assert_eq!(r, Err(lost("p1", Some("w2"), Some("w1"))));
    // the lease is checked before the version
    let r = s.commit(&Commit { owner: Some("w2"), ..commit("p1", 9, Status::Running, 12.0, &[]) });
    assert_eq!(r, Err(lost("p1", Some("w2"), Some("w1"))));
    let r = s.commit(&Commit { owner: Some("w1"), ..commit("p1", 9, Status::Running, 12.0, &[]) });
    assert_eq!(r, Err(CoreError::Conflict { instance: "p1".into(), expected: 9, found: 2 }));
    let r = s.commit(&Commit { owner: Some("w1"), ..commit("ghost", 1, Status::Running, 12.0, &[]) });
    assert_eq!(r, Err(CoreError::UnknownInstance("ghost".into())));
    assert_eq!((version(s, "p1"), version(s, "s1")), (2, 1));
    assert_eq!(s.records("p1", 0).unwrap(), [rec("p1.0"), rec("p1.1")]);
    assert_eq!(s.records("s1", 0).unwrap(), Vec::<Vec<u8>>::new());

    // extend: only the holder, only while it holds
    assert_eq!(s.extend("p1", "w2", 30.0, 13.0), Err(lost("p1", Some("w2"), Some("w1"))));
    assert_eq!(s.extend("p1", "w1", 30.0, 13.0).unwrap(), 43.0);
    assert_eq!(s.extend("ghost", "w1", 30.0, 13.0), Err(CoreError::UnknownInstance("ghost".into())));
    assert_eq!(s.extend("s1", "w1", 30.0, 41.0), Err(lost("s1", Some("w1"), None)), "expired at 40");

    // expired leases go to the next claimer, with what is newly due, earliest first
    let got = s.claim(&Claim { owner: "w2", limit: 10, lease: 30.0, now: 100.0, plan_hashes: &mine }).unwrap();
    assert_eq!(ids(&got), ["s1", "p1", "s2"]);
    assert!(got.iter().all(|m| m.owner.as_deref() == Some("w2") && m.lease_until == Some(130.0)));
    // the old owner's commit is refused and changes nothing
    let r = s.commit(&Commit { owner: Some("w1"), ..commit("p1", 2, Status::Completed, 101.0, &[rec("late")]) });
    assert_eq!(r, Err(lost("p1", Some("w1"), Some("w2"))));
    assert_eq!(version(s, "p1"), 2);
    assert_eq!(s.get("p1").unwrap().unwrap().meta.status, Status::Running);
    assert!(!s.release("p1", "w1").unwrap(), "w1 holds it no more");
    assert_eq!(s.release("ghost", "w1"), Err(CoreError::UnknownInstance("ghost".into())));
    assert!(s.release("s2", "w2").unwrap());
    assert_eq!(lease_of(s, "s2"), (None, None));

    // a commit that finishes releases; the failure summary is kept
    let fail = Commit { owner: Some("w2"), error: Some("boom"), ..commit("p1", 2, Status::Failed, 102.0, &[]) };
    s.commit(&fail).unwrap();
    let m = s.get("p1").unwrap().unwrap().meta;
    assert_eq!((m.owner, m.lease_until, m.error.as_deref(), m.status), (None, None, Some("boom"), Status::Failed));
    assert!(s
        .claim(&Claim { owner: "w3", limit: 10, lease: 30.0, now: 103.0, plan_hashes: &mine })
        .unwrap()
        .iter()
        .all(|m| m.id != "p1"));

    // a holder past its lease is refused; an engine of its own may then commit, and the lease goes
    let r = s.commit(&Commit { owner: Some("w2"), ..commit("s1", 1, Status::Running, 200.0, &[]) });
    assert_eq!(r, Err(lost("s1", Some("w2"), None)));
    s.commit(&commit("s1", 1, Status::Running, 201.0, &[rec("s1.1")])).unwrap();
    assert_eq!(lease_of(s, "s1"), (None, None));
    let m = s.get("s1").unwrap().unwrap().meta;
    assert_eq!((m.version, m.updated_at, m.error), (2, 201.0, None));
    // ... and a running instance without a lease is no one's to claim
    assert!(s
        .claim(&Claim { owner: "w4", limit: 10, lease: 30.0, now: 1e9, plan_hashes: &mine })
        .unwrap()
        .iter()
        .all(|m| m.id != "s1" && m.id != "r1"));
}

#[test]
fn leases_meet_the_contract_on_every_store() {
    lease_contract(&mut MemoryStore::new());
    let dir = TempDir::new("leases");
    lease_contract(&mut open(&dir.join("l.db")));
}

fn claim_limits_and_order<S: Store>(s: &mut S) {
    let mine = plans(&[PLAN, OTHER]);
    for i in 0..20 {
        let plan = if i % 2 == 0 { PLAN } else { OTHER };
        let due = Some(100.0 - i as f64);
        let m = InstanceMeta {
            plan_hash: plan.into(),
            due_at: due,
            ..meta(&format!("i{i:02}"), "wf", Status::Suspended, 1.0)
        };
        s.create(&m, b"h", &[]).unwrap();
    }
    let got = s.claim(&Claim { owner: "w", limit: 3, lease: 10.0, now: 95.0, plan_hashes: &mine }).unwrap();
    assert_eq!(ids(&got), ["i19", "i18", "i17"], "earliest due first, across plans");
    let got = s.claim(&Claim { owner: "w", limit: 0, lease: 10.0, now: 95.0, plan_hashes: &mine }).unwrap();
    assert!(got.is_empty());
    let got = s.claim(&Claim { owner: "v", limit: 100, lease: 10.0, now: 95.0, plan_hashes: &mine }).unwrap();
    let want: Vec<String> = (5..17).rev().map(|i| format!("i{i:02}")).collect();
    assert_eq!(ids(&got), want, "due at 95 and earlier, not yet claimed");
}

#[test]
fn claims_take_the_earliest_due_up_to_the_limit_on_every_store() {
    claim_limits_and_order(&mut MemoryStore::new());
    let dir = TempDir::new("claim-order");
    claim_limits_and_order(&mut open(&dir.join("c.db")));
}

/// Every page, following the cursor; asserts each page is at most `limit` long.
fn pages<S: Store>(s: &mut S, q: &ListQuery, between: &mut dyn FnMut(&mut S, usize)) -> Vec<String> {
    let mut out = Vec::new();
    let mut q = q.clone();
    for page in 0.. {
        let got = s.list(&q).unwrap();
        assert!(got.items.len() <= q.limit.unwrap());
        out.extend(got.items.iter().map(|m| m.id.clone()));
        match got.cursor {
            Some(c) => q.cursor = Some(c),
            None => break,
        }
        between(s, page);
    }
    out
}

fn paging_contract<S: Store>(s: &mut S) {
    for i in 0..23 {
        let plan = if i % 3 == 0 { OTHER } else { PLAN };
        let status = if i % 2 == 0 { Status::Pending } else { Status::Running };
        let m = InstanceMeta { plan_hash: plan.into(), ..meta(&format!("i{i:02}"), "wf", status, i as f64) };
        s.create(&m, b"h", &[]).unwrap();
    }
    let all: Vec<String> = (0..23).rev().map(|i| format!("i{i:02}")).collect();
    for limit in [1, 4, 22, 23] {
        let q = ListQuery { limit: Some(limit), ..ListQuery::default() };
        assert_eq!(pages(s, &q, &mut |_, _| {}), all, "limit {limit}");
    }
    // a full last page has no cursor; a page cut short has one
    let q = ListQuery { limit: Some(23), ..ListQuery::default() };
    assert_eq!(s.list(&q).unwrap().cursor, None);
    let q = ListQuery { limit: Some(22), ..ListQuery::default() };
    assert!(s.list(&q).unwrap().cursor.is_some());
    // filters page too
    let q = ListQuery { limit: Some(3), plan_hash: Some(OTHER.into()), ..ListQuery::default() };
    let want: Vec<String> = (0..23).rev().filter(|i| i % 3 == 0).map(|i| format!("i{i:02}")).collect();
    assert_eq!(pages(s, &q, &mut |_, _| {}), want);
    let q = ListQuery {
        limit: Some(2),
        plan_hash: Some(PLAN.into()),
        statuses: vec![Status::Running],
        ..ListQuery::default()
    };
    let want: Vec<String> = (0..23).rev().filter(|i| i % 3 != 0 && i % 2 == 1).map(|i| format!("i{i:02}")).collect();
    assert_eq!(pages(s, &q, &mut |_, _| {}), want);
    // instances created between pages come before the first page: the walk still sees every
    // older instance exactly once, and none of the new ones
    let q = ListQuery { limit: Some(5), ..ListQuery::default() };
    let mut made = 0;
    let seen = pages(s, &q, &mut |s, page| {
        for k in 0..3 {
            s.create(&meta(&format!("new{page}-{k}"), "wf", Status::Pending, 99.0), b"h", &[]).unwrap();
            made += 1;
        }
    });
    assert_eq!(seen, all);
    assert!(made > 0);
    // a bad cursor names itself
    for bad in ["x", "-1", "1.5", ""] {
        match s.list(&ListQuery { cursor: Some(bad.into()), ..ListQuery::default() }) {
            Err(CoreError::InvalidState(m)) => assert!(m.contains(&format!("{bad:?}")), "{m}"),
            other => panic!("cursor {bad:?}: {other:?}"),
        }
    }
    assert_eq!(s.list(&ListQuery { limit: Some(0), ..ListQuery::default() }).unwrap().cursor, None);
    assert!(s.list(&ListQuery { cursor: Some("0".into()), ..ListQuery::default() }).unwrap().items.is_empty());
}

#[test]
fn paging_meets_the_contract_on_every_store() {
    paging_contract(&mut MemoryStore::new());
    let dir = TempDir::new("paging");
    paging_contract(&mut open(&dir.join("p.db")));
}

fn counts_and_reads<S: Store>(s: &mut S) {
    assert!(s.counts().unwrap().is_empty());
    s.create(&meta("a", "wf-b", Status::Pending, 1.0), b"ha", &[rec("a0"), rec("a1")]).unwrap();
    s.create(&meta("b", "wf-b", Status::Pending, 1.0), b"hb", &[]).unwrap();
    s.create(&meta("c", "wf-a", Status::Running, 1.0), b"hc", &[]).unwrap();
    s.commit(&commit("b", 1, Status::Completed, 2.0, &[])).unwrap();
    let count = |w: &str, status, count| Count { workflow: w.into(), status, count };
    assert_eq!(
        s.counts().unwrap(),
        [count("wf-a", Status::Running, 1), count("wf-b", Status::Pending, 1), count("wf-b", Status::Completed, 1)]
    );

    // incremental reads: the records of the commits after a version, the signals after a number
    s.commit(&commit("a", 1, Status::Running, 2.0, &[rec("a2"), rec("a3")])).unwrap();
    s.commit(&commit("a", 2, Status::Running, 3.0, &[])).unwrap();
    s.commit(&commit("a", 3, Status::Running, 4.0, &[rec("a4")])).unwrap();
    assert_eq!(s.records("a", 0).unwrap(), ["a0", "a1", "a2", "a3", "a4"].map(rec));
    assert_eq!(s.records("a", 1).unwrap(), ["a2", "a3", "a4"].map(rec));
    assert_eq!(s.records("a", 2).unwrap(), ["a4"].map(rec));
    assert_eq!(s.records("a", 3).unwrap(), ["a4"].map(rec));
    assert!(s.records("a", 4).unwrap().is_empty());
    assert!(s.records("ghost", 1).unwrap().is_empty());
    for (i, sig) in ["s1", "s2", "s3"].iter().enumerate() {
        assert_eq!(s.send_signal("a", sig.as_bytes(), 5.0).unwrap(), i as u64 + 1);
    }
    assert_eq!(s.signals("a", 1).unwrap(), [(2, rec("s2")), (3, rec("s3"))]);
    assert!(s.signals("a", 3).unwrap().is_empty());
    assert!(s.signals("ghost", 0).unwrap().is_empty());

    // load: everything at once
    let stored = s.get("a").unwrap().unwrap();
    let want = Loaded {
        meta: stored.meta,
        header: b"ha".to_vec(),
        records: ["a0", "a1", "a2", "a3", "a4"].map(rec).to_vec(),
        signals: vec![(1, rec("s1")), (2, rec("s2")), (3, rec("s3"))],
    };
    assert_eq!(s.load("a").unwrap(), Some(want));
    assert_eq!(s.load("ghost").unwrap(), None);
    assert_eq!(s.load("b").unwrap().unwrap().records, Vec::<Vec<u8>>::new());
    assert!(s.delete("b").unwrap());
    assert_eq!(s.counts().unwrap(), [count("wf-a", Status::Running, 1), count("wf-b", Status::Running, 1)]);
}

#[test]
fn counts_and_incremental_reads_meet_the_contract_on_every_store() {
    counts_and_reads(&mut MemoryStore::new());
    let dir = TempDir::new("counts");
    counts_and_reads(&mut open(&dir.join("c.db")));
}

#[test]
fn two_connections_racing_to_claim_never_share_an_instance() {
    const INSTANCES: usize = 300;
    let dir = TempDir::new("race");
    let path = dir.join("r.db");
    {
        let mut s = open(&path);
        for i in 0..INSTANCES {
            s.create(&meta(&format!("i{i}"), "wf", Status::Pending, i as f64), b"h", &[]).unwrap();
        }
    }
    let start = std::sync::Arc::new(std::sync::Barrier::new(2));
    let workers: Vec<_> = (0..2)
        .map(|w| {
            let path = path.clone();
            let start = start.clone();
            std::thread::spawn(move || -> Vec<String> {
                let mut s = SqliteStore::open(&path, tideflow_core::store::sqlite::Durability::Normal).unwrap();
                start.wait();
                let owner = format!("w{w}");
                let mine = plans(&[PLAN]);
                let mut got = Vec::new();
                loop {
                    let c = Claim { owner: &owner, limit: 7, lease: 60.0, now: 1000.0, plan_hashes: &mine };
                    let batch = s.claim(&c).unwrap();
                    if batch.is_empty() {
                        return got;
                    }
                    for m in &batch {
                        assert_eq!(m.owner.as_deref(), Some(owner.as_str()));
                        // the holder's commit goes through: it does hold the lease
                        let by = Commit { owner: Some(&owner), ..commit(&m.id, 1, Status::Running, 1001.0, &[]) };
                        s.commit(&by).unwrap();
                    }
                    got.extend(batch.into_iter().map(|m| m.id));
                }
            })
        })
        .collect();
    let results: Vec<Vec<String>> = workers.into_iter().map(|w| w.join().unwrap()).collect();
    let (a, b): (BTreeSet<&String>, BTreeSet<&String>) = (results[0].iter().collect(), results[1].iter().collect());
    assert_eq!(a.len() + b.len(), INSTANCES, "nothing claimed twice by one worker either");
    assert!(a.is_disjoint(&b));
    // (on a loaded machine one thread may well drain the queue before the other is scheduled;
    // the interleaving of two handles is pinned down by the test below)
    println!("claimed: {} / {}", a.len(), b.len());
    let mut s = open(&path);
    let all = s.list(&ListQuery::default()).unwrap().items;
    assert!(all.iter().all(|m| m.version == 2 && m.owner.is_some()));
}

#[test]
fn two_handles_on_one_file_see_each_others_leases() {
    let dir = TempDir::new("handles");
    let path = dir.join("h.db");
    let (mut a, mut b) = (open(&path), open(&path));
    for i in 0..10 {
        a.create(&meta(&format!("i{i}"), "wf", Status::Pending, i as f64), b"h", &[]).unwrap();
    }
    let mine = plans(&[PLAN]);
    let claim = |owner, now| Claim { owner, limit: 4, lease: 10.0, now, plan_hashes: &mine };
    let got_a = a.claim(&claim("a", 1.0)).unwrap();
    let got_b = b.claim(&claim("b", 1.0)).unwrap();
    let got_a2 = a.claim(&claim("a", 1.0)).unwrap();
    assert_eq!(ids(&got_a), ["i0", "i1", "i2", "i3"]);
    assert_eq!(ids(&got_b), ["i4", "i5", "i6", "i7"]);
    assert_eq!(ids(&got_a2), ["i8", "i9"]);
    // b cannot commit what a holds; after a's lease ends, b takes it over and a is fenced off
    let r = b.commit(&Commit { owner: Some("b"), ..commit("i0", 1, Status::Running, 2.0, &[]) });
    assert_eq!(r, Err(lost("i0", Some("b"), Some("a"))));
    let got = b.claim(&Claim { limit: 1, ..claim("b", 11.0) }).unwrap();
    assert_eq!(ids(&got), ["i0"]);
    let r = a.commit(&Commit { owner: Some("a"), ..commit("i0", 1, Status::Running, 11.5, &[rec("late")]) });
    assert_eq!(r, Err(lost("i0", Some("a"), Some("b"))));
    b.commit(&Commit { owner: Some("b"), ..commit("i0", 1, Status::Running, 11.5, &[rec("b")]) }).unwrap();
    assert_eq!(a.records("i0", 0).unwrap(), [rec("b")]);
    assert_eq!(a.extend("i0", "a", 10.0, 12.0), Err(lost("i0", Some("a"), Some("b"))));
    assert_eq!(a.extend("i1", "a", 10.0, 9.0).unwrap(), 19.0);
}

fn due_contract<S: Store>(s: &mut S) {
    let at = |id: &str, status, due: Option<f64>| InstanceMeta { due_at: due, ..meta(id, "wf", status, 1.0) };
    s.create(&at("p", Status::Pending, Some(1.0)), b"h", &[]).unwrap(); // due from its creation
    s.create(&at("p-later", Status::Pending, Some(30.0)), b"h", &[]).unwrap();
    s.create(&at("p-never", Status::Pending, None), b"h", &[]).unwrap();
    s.create(&at("s", Status::Suspended, Some(5.0)), b"h", &[]).unwrap();
    s.create(&at("r", Status::Running, Some(2.0)), b"h", &[]).unwrap();
    s.create(&at("leased", Status::Pending, Some(0.5)), b"h", &[]).unwrap();
    let mine = plans(&[PLAN]);
    let got = s.claim(&Claim { owner: "w", limit: 1, lease: 100.0, now: 3.0, plan_hashes: &mine }).unwrap();
    assert_eq!(ids(&got), ["leased"]);
    assert_eq!(ids(&s.due(10.0, None).unwrap()), ["p", "s"]);
    assert_eq!(ids(&s.due(10.0, Some(1)).unwrap()), ["p"]);
    assert_eq!(ids(&s.due(40.0, None).unwrap()), ["p", "s", "p-later"]);
    assert_eq!(ids(&s.due(200.0, None).unwrap()), ["leased", "p", "s", "p-later"], "its lease ran out");
    s.commit(&commit("p", 1, Status::Running, 11.0, &[])).unwrap();
    assert_eq!(ids(&s.due(40.0, None).unwrap()), ["s", "p-later"]);
}

#[test]
fn due_lists_pending_and_suspended_instances_on_every_store() {
    due_contract(&mut MemoryStore::new());
    let dir = TempDir::new("due");
    due_contract(&mut open(&dir.join("d.db")));
}
