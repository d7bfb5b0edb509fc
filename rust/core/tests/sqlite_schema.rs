//! The schema over time: a file written by schema 1 is migrated on open (plan hashes filled from
//! the headers, its one-row-per-record log still readable), and a commit's records share one row.

use rusqlite::{params, Connection};
use tideflow_core::codec::{encode_header, Header};
use tideflow_core::store::sqlite::{APPLICATION_ID, MIGRATIONS, SCHEMA_VERSION};
use tideflow_core::store::{Claim, Commit, ListQuery, Store};
use tideflow_core::Status;

mod common;

use common::*;

fn header(plan_hash: &str) -> Vec<u8> {
    encode_header(&Header {
        workflow: "wf".into(),
        version: None,
        plan_hash: plan_hash.into(),
        input: b"{}".to_vec(),
        created_at: 1.0,
        output: None,
        error: None,
        outline: None,
    })
}

/// Writes a file as tideflow with schema 1 left it: its SQL, its markers, its log layout (one
/// row per record, `idx` 0, 1, ...; a NULL marker for a commit without records).
fn schema_1_file(path: &std::path::Path) {
    let conn = Connection::open(path).unwrap();
    conn.execute_batch("PRAGMA journal_mode=WAL").unwrap();
    assert_eq!(MIGRATIONS[0].0, 1);
    conn.execute_batch(MIGRATIONS[0].1).unwrap();
    conn.execute_batch(&format!(
        "INSERT INTO tideflow_meta VALUES ('application', 'tideflow'), ('schema_version', '1');
         PRAGMA application_id = {APPLICATION_ID}; PRAGMA user_version = 1;"
    ))
    .unwrap();
    let instance = |id: &str, status: &str, seq: i64, header: &[u8], due: Option<f64>| {
        conn.execute(
            "INSERT INTO instances (id, workflow, status, version, created_at, updated_at, due_at, seq, header)
             VALUES (?1, 'wf', ?2, 1, 1.0, 2.0, ?3, ?4, ?5)",
            params![id, status, due, seq, header],
        )
        .unwrap();
    };
    let log = |id: &str, version: i64, idx: i64, data: Option<&[u8]>| {
        conn.execute("INSERT INTO records VALUES (?1, ?2, ?3, ?4)", params![id, version, idx, data]).unwrap();
    };
    instance("a", "suspended", 1, &header("hash-a"), Some(5.0));
    log("a", 1, 0, Some(b"a0"));
    log("a", 1, 1, Some(b"a1"));
    log("a", 2, 0, None); // a commit without records
    log("a", 3, 0, Some(b"a2"));
    log("a", 3, 1, Some(b""));
    log("a", 3, 2, Some(b"a3"));
    conn.execute("INSERT INTO signals VALUES ('a', 1, CAST('sig1' AS BLOB)), ('a', 2, CAST('sig2' AS BLOB))", [])
        .unwrap();
    instance("b", "pending", 2, &header("hash-b"), None);
    log("b", 1, 0, None);
    instance("bad", "running", 3, b"not a header", None);
    log("bad", 1, 0, Some(b"x"));
}

#[test]
fn a_schema_1_file_is_migrated_on_open_with_plan_hashes_from_the_headers() {
    let dir = TempDir::new("migrate");
    let path = dir.join("old.db");
    schema_1_file(&path);
    let mut s = open(&path);
    let a = s.load("a").unwrap().unwrap();
    assert_eq!(a.meta.plan_hash, "hash-a");
    assert_eq!(
        (a.meta.version, a.meta.status, a.meta.due_at, a.meta.updated_at),
        (3, Status::Suspended, Some(5.0), 2.0)
    );
    assert_eq!((a.meta.owner, a.meta.lease_until, a.meta.error), (None, None, None));
    assert_eq!(a.header, header("hash-a"));
    assert_eq!(a.records, ["a0", "a1", "a2", "", "a3"].map(rec));
    assert_eq!(a.signals, [(1, rec("sig1")), (2, rec("sig2"))]);
    assert_eq!(s.records("a", 1).unwrap(), ["a2", "", "a3"].map(rec));
    assert_eq!(s.records("a", 2).unwrap(), ["a2", "", "a3"].map(rec));
    assert_eq!(s.get("b").unwrap().unwrap().meta.plan_hash, "hash-b");
    assert_eq!(s.get("bad").unwrap().unwrap().meta.plan_hash, "", "an undecodable header leaves it empty");
    let by_plan = ListQuery { plan_hash: Some("hash-b".into()), ..ListQuery::default() };
    assert_eq!(ids(&s.list(&by_plan).unwrap().items), ["b"]);
    // the migrated instances are claimable by their plans, and go on from their versions
    let hashes = vec!["hash-a".to_string(), "hash-b".to_string()];
    let got = s.claim(&Claim { owner: "w", limit: 10, lease: 5.0, now: 10.0, plan_hashes: &hashes }).unwrap();
    assert_eq!(ids(&got), ["b", "a"]);
    let more = [rec("a4"), rec("a5")];
    s.commit(&Commit { owner: Some("w"), ..commit("a", 3, Status::Running, 11.0, &more) }).unwrap();
    assert_eq!(s.records("a", 3).unwrap(), more);
    drop(s);
    let conn = Connection::open(&path).unwrap();
    let v: String =
        conn.query_row("SELECT value FROM tideflow_meta WHERE key = 'schema_version'", [], |r| r.get(0)).unwrap();
    assert_eq!(v, SCHEMA_VERSION.to_string());
    let uv: u32 = conn.query_row("PRAGMA user_version", [], |r| r.get(0)).unwrap();
    assert_eq!(uv, SCHEMA_VERSION);
    drop(conn);
    // and all of it reads back after a reopen
    let mut s = open(&path);
    assert_eq!(s.records("a", 0).unwrap(), ["a0", "a1", "a2", "", "a3", "a4", "a5"].map(rec));
    assert_eq!(s.get("a").unwrap().unwrap().meta.version, 4);
}

#[test]
fn a_schema_1_file_is_refused_read_only_until_migrated() {
    let dir = TempDir::new("migrate-ro");
    let path = dir.join("old.db");
    schema_1_file(&path);
    let m = store_err(tideflow_core::store::sqlite::SqliteStore::open_read_only(&path), &path);
    assert!(m.contains("schema version 1"), "{m}");
    drop(open(&path));
    let mut s = tideflow_core::store::sqlite::SqliteStore::open_read_only(&path).unwrap();
    assert_eq!(s.get("a").unwrap().unwrap().meta.plan_hash, "hash-a");
}

#[test]
fn a_commit_is_one_log_row_whatever_it_carries_and_reads_back_after_a_reopen() {
    let dir = TempDir::new("packed");
    let path = dir.join("p.db");
    let blob = vec![0xABu8; 70_000]; // a length that takes a 3-byte varint
    {
        let mut s = open(&path);
        s.create(&meta("a", "wf", Status::Pending, 1.0), b"h", &[rec("c0"), rec(""), rec("c2")]).unwrap();
        s.commit(&commit("a", 1, Status::Running, 2.0, &[rec("step"), rec("decision")])).unwrap();
        s.commit(&commit("a", 2, Status::Running, 3.0, &[])).unwrap();
        s.commit(&commit("a", 3, Status::Running, 4.0, &[rec("one")])).unwrap();
        s.commit(&commit("a", 4, Status::Running, 5.0, &[blob.clone(), rec(""), blob.clone()])).unwrap();
        s.commit(&commit("a", 5, Status::Running, 6.0, &[rec(""), rec("")])).unwrap();
    }
    let mut s = open(&path);
    let all = [
        rec("c0"),
        rec(""),
        rec("c2"),
        rec("step"),
        rec("decision"),
        rec("one"),
        blob.clone(),
        rec(""),
        blob.clone(),
        rec(""),
        rec(""),
    ];
    assert_eq!(s.records("a", 0).unwrap(), all);
    assert_eq!(s.records("a", 1).unwrap(), all[3..]);
    assert_eq!(s.records("a", 2).unwrap(), all[5..]);
    assert_eq!(s.records("a", 4).unwrap(), all[6..]);
    assert_eq!(s.records("a", 5).unwrap(), all[9..]);
    let m = s.get("a").unwrap().unwrap().meta;
    assert_eq!((m.version, m.updated_at), (6, 6.0), "version and commit time from the log");
    drop(s);
    let conn = Connection::open(&path).unwrap();
    let rows: Vec<(i64, i64, Option<i64>)> = conn
        .prepare("SELECT version, idx, packed FROM records WHERE instance_id = 'a' ORDER BY version")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(rows, [(1, 0, Some(3)), (2, 0, Some(2)), (3, 0, None), (4, 0, None), (5, 0, Some(3)), (6, 0, Some(2))]);
}
