//! Several connections on one SQLite file from the very first open: none may see "database is
//! locked", whatever the moment they arrive at.

use std::sync::{Arc, Barrier};

use tideflow_core::store::sqlite::{Durability, SqliteStore};
use tideflow_core::store::Store;
use tideflow_core::Status;

mod common;

use common::*;

#[test]
fn connections_opening_one_new_file_at_once_all_succeed() {
    const THREADS: usize = 6;
    const ROUNDS: usize = 60;
    let dir = TempDir::new("first-opens");
    let barrier = Arc::new(Barrier::new(THREADS));
    let workers: Vec<_> = (0..THREADS)
        .map(|t| {
            let (dir, barrier) = (dir.0.clone(), Arc::clone(&barrier));
            std::thread::spawn(move || -> Vec<String> {
                let mut failures = Vec::new();
                for r in 0..ROUNDS {
                    barrier.wait();
                    let opened =
                        SqliteStore::open(&dir.join(format!("r{r}.db")), Durability::Normal).and_then(|mut s| {
                            let id = format!("t{t}");
                            s.create(&meta(&id, "wf", Status::Pending, 0.0), b"h", &[])?;
                            s.commit(&commit(&id, 1, Status::Completed, 1.0, &[rec("done")]))
                        });
                    if let Err(e) = opened {
                        failures.push(format!("round {r}: {e}"));
                    }
                }
                failures
            })
        })
        .collect();
    let failures: Vec<String> = workers.into_iter().flat_map(|w| w.join().unwrap()).collect();
    assert!(failures.is_empty(), "{} of {} opens failed: {failures:#?}", failures.len(), THREADS * ROUNDS);
    for r in 0..ROUNDS {
        let mut s = SqliteStore::open(&dir.join(&format!("r{r}.db")), Durability::Normal).unwrap();
        for t in 0..THREADS {
            assert_eq!(version(&mut s, &format!("t{t}")), 2);
        }
    }
}
