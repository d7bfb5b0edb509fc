//! Helpers shared by the SQLite store test files.
#![allow(dead_code)] // each test binary uses its own subset

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};
use tideflow_core::store::sqlite::{Durability, SqliteStore};
use tideflow_core::store::{Claim, Commit, InstanceMeta, Store};
use tideflow_core::{CoreError, Status};

// ---------------------------------------------------------------------------------------------
// helpers

/// A fresh directory under the system temp dir, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(name: &str) -> TempDir {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos());
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("tideflow-sqlite-{name}-{}-{nanos}-{n}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    pub fn join(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub fn meta(id: &str, workflow: &str, status: Status, t: f64) -> InstanceMeta {
    InstanceMeta {
        id: id.into(),
        workflow: workflow.into(),
        plan_hash: PLAN.into(),
        status,
        version: 1,
        created_at: t,
        updated_at: t,
        due_at: None,
        owner: None,
        lease_until: None,
        error: None,
    }
}

/// The plan hash of the instances [`meta`] makes.
pub const PLAN: &str = "plan-1";

pub fn commit<'a>(id: &'a str, expected: u64, status: Status, t: f64, records: &'a [Vec<u8>]) -> Commit<'a> {
    Commit {
        id,
        expected_version: expected,
        status,
        updated_at: t,
        due_at: None,
        header: None,
        records,
        signals_seen: 0,
        owner: None,
        error: None,
    }
}

/// A claim by `owner` at `now` of up to 10 instances of [`PLAN`] for 30 seconds.
pub fn claim_for(owner: &str, now: f64) -> Claim<'_> {
    static PLANS: std::sync::LazyLock<Vec<String>> = std::sync::LazyLock::new(|| vec![PLAN.to_string()]);
    Claim { owner, limit: 10, lease: 30.0, now, plan_hashes: PLANS.as_slice() }
}

pub fn rec(s: &str) -> Vec<u8> {
    s.as_bytes().to_vec()
}

pub fn ids(metas: &[InstanceMeta]) -> Vec<&str> {
    metas.iter().map(|m| m.id.as_str()).collect()
}

pub fn version<S: Store>(s: &mut S, id: &str) -> u64 {
    s.get(id).unwrap().unwrap().meta.version
}

/// Asserts `r` is a `CoreError::Store` whose message names `path`; returns the message.
pub fn store_err<T: std::fmt::Debug>(r: tideflow_core::Result<T>, path: &Path) -> String {
    match r {
        Err(CoreError::Store(m)) => {
            assert!(m.contains(&path.display().to_string()), "message does not name {}: {m}", path.display());
            m
        }
        other => panic!("expected CoreError::Store, got {other:?}"),
    }
}

pub fn open(path: &Path) -> SqliteStore {
    SqliteStore::open(path, Durability::Normal).unwrap()
}
