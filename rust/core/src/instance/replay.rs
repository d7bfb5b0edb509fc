//! Rebuilding an instance from its records: what each position already did.

use std::collections::HashMap;

use crate::codec::{Outcome, Record};

/// What stored records say about positions, used while resuming.
#[derive(Default)]
pub(super) struct Replay {
    pub(super) completed: HashMap<String, Vec<u8>>,
    pub(super) decisions: HashMap<String, String>,
    /// Highest attempt known to have been handed out (possibly interrupted).
    pub(super) enqueued: HashMap<String, u32>,
    /// Highest failed attempt and when its retry is due.
    pub(super) failed: HashMap<String, (u32, Option<f64>)>,
    /// Whether the last started attempt of an unfinished step is still running (see
    /// `Instance::rebuild`), rather than interrupted.
    pub(super) running: bool,
}

impl Replay {
    pub(super) fn from_records(records: &[Record]) -> Replay {
        let mut r = Replay::default();
        let note = |map: &mut HashMap<String, u32>, k: &str, a: u32| {
            let e = map.entry(k.to_string()).or_insert(0);
            *e = (*e).max(a);
        };
        for rec in records {
            match rec {
                Record::Step(s) => {
                    match &s.outcome {
                        Outcome::Completed(p) => {
                            r.completed.insert(s.key.clone(), p.clone());
                        }
                        Outcome::Failed { retry_at, .. } => {
                            let e = r.failed.entry(s.key.clone()).or_insert((0, None));
                            if s.attempt >= e.0 {
                                *e = (s.attempt, *retry_at);
                            }
                        }
                    }
                    for (k, a) in &s.next {
                        note(&mut r.enqueued, k, *a);
                    }
                }
                Record::Decision { key, value } => {
                    r.decisions.insert(key.clone(), value.clone());
                }
                Record::Enqueued(ts) => {
                    for (k, a) in ts {
                        note(&mut r.enqueued, k, *a);
                    }
                }
            }
        }
        r
    }
}
