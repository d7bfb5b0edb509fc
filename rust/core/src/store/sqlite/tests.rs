//! Unit tests of the SQLite store: the file registry, the schema steps and the query plans.

use super::*;
use rusqlite::params_from_iter;
use rusqlite::types::Value;

#[test]
fn stores_of_one_process_on_one_file_are_known_until_the_last_is_dropped() {
    let dir = std::env::temp_dir().join(format!("tideflow-held-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("held.db");
    assert!(!open::held::contains(&path));
    let a = SqliteStore::open(&path, Durability::Normal).unwrap();
    assert!(open::held::contains(&path));
    let b = SqliteStore::open(&path, Durability::Normal).unwrap(); // no descriptor of its own
    drop(a);
    assert!(open::held::contains(&path), "b still holds the file");
    drop(b);
    assert!(!open::held::contains(&path));
    std::fs::remove_dir_all(&dir).unwrap();
}

fn plan(conn: &Connection, sql: &str) -> String {
    let sql = format!("EXPLAIN QUERY PLAN {sql}");
    let mut stmt = conn.prepare(&sql).unwrap();
    let nulls = vec![Value::Null; stmt.parameter_count()];
    let rows = stmt.query_map(params_from_iter(nulls), |r| r.get::<_, String>(3)).unwrap();
    rows.map(|r| r.unwrap()).collect::<Vec<_>>().join("; ")
}

fn schema() -> Connection {
    let conn = Connection::open_in_memory().unwrap();
    for (_, step) in MIGRATIONS {
        conn.execute_batch(step).unwrap();
    }
    conn
}

/// The queries of the hot paths and the listings, by name.
fn hot_queries() -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = vec![
        ("commit read".into(), write::COMMIT_READ_SQL.into()),
        ("commit append".into(), write::COMMIT_APPEND_SQL.into()),
        ("commit update".into(), write::COMMIT_UPDATE_SQL.into()),
        ("records".into(), read::RECORDS_SQL.into()),
        ("due".into(), read::DUE_SQL.clone()),
        ("counts".into(), read::COUNTS_SQL.into()),
        ("list".into(), read::list_sql("seq < ?")),
        ("list by status".into(), read::list_sql("seq < ? AND status IN (?)")),
        ("list by statuses".into(), read::list_sql("seq < ? AND status IN (?, ?)")),
        ("list by workflow".into(), read::list_sql("seq < ? AND workflow = ?")),
        ("list by plan".into(), read::list_sql("seq < ? AND plan_hash = ?")),
    ];
    for (i, sql) in lease::CLAIM_SQL.iter().cloned().enumerate() {
        out.push((format!("claim {i}"), sql));
    }
    out
}

#[test]
fn queries_use_the_partial_indexes() {
    let conn = schema();
    for n in 1..=3 {
        for sql in write::purge_sql(n) {
            let p = plan(&conn, &sql);
            assert!(p.contains("instances_finished_updated_at (status=? AND updated_at<?)"), "{sql}: {p}");
        }
    }
    let commit = plan(&conn, "UPDATE instances SET version = 2 WHERE id = 'x' AND version = 1");
    assert!(commit.contains("sqlite_autoindex_instances_1"), "{commit}");
    let append = plan(&conn, "SELECT 1 FROM records WHERE instance_id = 'x' AND version = 3");
    assert!(append.contains("PRIMARY KEY"), "{append}");
    let want = [
        ("commit append", "USING PRIMARY KEY (instance_id=? AND version=?)"),
        ("commit read", "USING INDEX sqlite_autoindex_instances_1 (id=?)"),
        ("commit update", "USING INDEX sqlite_autoindex_instances_1 (id=?)"),
        ("records", "USING PRIMARY KEY (instance_id=? AND version>?)"),
        ("due", "USING INDEX instances_waiting_due_at (due_at>? AND due_at<?)"),
        ("counts", "USING COVERING INDEX instances_status_workflow"),
        ("list", "USING INDEX instances_seq (seq<?)"),
        ("list by workflow", "USING INDEX instances_workflow_seq (workflow=? AND seq<?)"),
        ("list by plan", "USING INDEX instances_plan_hash_seq (plan_hash=? AND seq<?)"),
        ("claim 0", "USING INDEX instances_claim_pending (plan_hash=?)"),
        ("claim 1", "USING INDEX instances_waiting_due_at (due_at>? AND due_at<?)"),
        ("claim 2", "USING INDEX instances_claim_leased (plan_hash=?"),
    ];
    let plans: Vec<(String, String)> = hot_queries().into_iter().map(|(n, sql)| (n, plan(&conn, &sql))).collect();
    for (name, p) in &plans {
        // no query reads every instance (a covering index scan is the count's whole job)
        let scans_all = p.split("; ").any(|step| step.starts_with("SCAN instances") && !step.contains("COVERING"));
        assert!(!scans_all, "{name}: {p}");
        assert!(!p.contains("SCAN records"), "{name}: {p}");
    }
    for (name, fragment) in want {
        let p = &plans.iter().find(|(n, _)| n == name).unwrap().1;
        assert!(p.contains(fragment), "{name}: {p}");
    }
    for name in ["claim 0", "claim 1", "due", "list", "list by workflow", "list by plan"] {
        let p = &plans.iter().find(|(n, _)| n == name).unwrap().1;
        assert!(!p.contains("TEMP B-TREE"), "{name} sorts: {p}");
    }
}

#[test]
fn schema_version_is_the_last_migration() {
    assert!(MIGRATIONS.windows(2).all(|w| w[0].0 < w[1].0));
    assert_eq!(SCHEMA_VERSION, MIGRATIONS.last().map_or(0, |m| m.0));
}

/// Prints the query plans (cargo test -p tideflow-core --lib print_query_plans -- --ignored --nocapture).
#[test]
#[ignore = "a listing, not a check"]
fn print_query_plans() {
    let conn = schema();
    for (name, sql) in hot_queries() {
        println!("{name}: {}", plan(&conn, &sql));
    }
}

#[test]
fn a_step_commit_writes_one_row_and_a_status_change_two() {
    use crate::store::{Commit, InstanceMeta};
    let dir = std::env::temp_dir().join(format!("tideflow-rows-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("rows.db");
    let _ = std::fs::remove_file(&path);
    let mut s = SqliteStore::open(&path, Durability::Normal).unwrap();
    let meta = InstanceMeta {
        id: "a".into(),
        workflow: "wf".into(),
        plan_hash: "p".into(),
        status: Status::Running,
        version: 1,
        created_at: 1.0,
        updated_at: 1.0,
        due_at: None,
        owner: None,
        lease_until: None,
        error: None,
    };
    s.create(&meta, b"h", &[]).unwrap();
    let two = [b"step".to_vec(), b"decision".to_vec()];
    let commit = |v: u64, status: Status| Commit {
        id: "a",
        expected_version: v,
        status,
        updated_at: v as f64 + 1.0,
        due_at: None,
        header: None,
        records: &two,
        signals_seen: 0,
        owner: None,
        error: None,
    };
    let changes = |s: &mut SqliteStore, c: &Commit<'_>| {
        let before = s.conn.total_changes();
        s.commit(c).unwrap();
        s.conn.total_changes() - before
    };
    assert_eq!(changes(&mut s, &commit(1, Status::Running)), 1, "a chain step: one INSERT, no UPDATE");
    assert_eq!(changes(&mut s, &commit(2, Status::Suspended)), 2, "a status change: the INSERT and the row");
    assert_eq!(changes(&mut s, &commit(3, Status::Suspended)), 1);
    assert_eq!(s.get("a").unwrap().unwrap().meta.updated_at, 4.0, "the commit time, from the log");
    drop(s);
    std::fs::remove_dir_all(&dir).unwrap();
}
