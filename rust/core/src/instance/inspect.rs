//! Inspecting a stored instance without running it: what a suspended instance waits for.
//!
//! The instance is rebuilt from its records as a resume would, but on plain JSON values through a
//! host that runs no user code: stored outputs and signal payloads are parsed as JSON, decisions
//! are only ever read back from the records (a decision that was never recorded makes the rebuild
//! stop, and the instance is reported as waiting for nothing).

use std::collections::HashMap;
use std::sync::Arc;

use serde_json::Value;

use super::timers::Due;
use super::{Failure, Host, Instance};
use crate::codec::Record;
use crate::plan::Plan;
use crate::status::Status;

/// One thing a suspended instance waits for.
#[derive(Debug, Clone, PartialEq)]
pub struct Waiting {
    /// `"signal"` (a wait for a signal, `until` its timeout if it has one), `"sleep"` (a durable
    /// sleep ending at `until`), `"retry"` (the next attempt of a failed step, due at `until`) or
    /// `"workflow_timeout"` (the whole workflow times out at `until`).
    pub kind: &'static str,
    /// The position key of the wait, sleep or step (empty for the workflow's timeout).
    pub key: String,
    /// The signal's name (for `"signal"`).
    pub signal: Option<String>,
    /// The step's name (for `"retry"`).
    pub step: Option<String>,
    /// When it ends by itself (seconds since the epoch), if it does.
    pub until: Option<f64>,
}

/// What a rebuild on plain JSON asks of the world: nothing that is user code.
struct Inert<'a> {
    signals: &'a HashMap<u64, Vec<u8>>,
}

fn inert(what: &str) -> Failure {
    Failure::new("Inspecting", format!("inspecting an instance never runs its {what}"))
}

impl Host<Value> for Inert<'_> {
    fn condition(&mut self, _f: u32, _v: &Value) -> Result<bool, Failure> {
        Err(inert("conditions"))
    }
    fn route(&mut self, _f: u32, _v: &Value) -> Result<String, Failure> {
        Err(inert("routers"))
    }
    fn label(&mut self, v: &Value) -> Result<String, Failure> {
        match v {
            Value::String(s) => Ok(s.clone()),
            _ => Err(inert("labels")),
        }
    }
    fn tuple(&mut self, items: Vec<Value>) -> Value {
        Value::Array(items)
    }
    fn list(&mut self, items: Vec<Value>) -> Value {
        Value::Array(items)
    }
    fn items(&mut self, v: &Value) -> Result<Vec<Value>, Failure> {
        match v {
            Value::Array(items) => Ok(items.clone()),
            _ => Err(Failure::new("Inspecting", "a map's input is not a list")),
        }
    }
    fn decode(&mut self, _step: u32, payload: &[u8]) -> Result<Value, Failure> {
        serde_json::from_slice(payload).map_err(|e| Failure::new("CorruptCheckpoint", e.to_string()))
    }
    fn encode_output(&mut self, v: &Value) -> Result<Vec<u8>, Failure> {
        serde_json::to_vec(v).map_err(|e| Failure::new("Inspecting", e.to_string()))
    }
    fn signal(&mut self, _wait: u32, seq: u64) -> Result<Value, Failure> {
        let payload = self.signals.get(&seq).map(Vec::as_slice).unwrap_or(b"null");
        serde_json::from_slice(payload).map_err(|e| Failure::new("Inspecting", e.to_string()))
    }
    fn text(&mut self, s: &str) -> Value {
        Value::String(s.to_string())
    }
}

/// What the stored instance waits for, rebuilt from its `records` (`input` and `signals` as
/// stored JSON; `arrivals` the inbox's `(seq, name)` in order) at time `now`, without running user
/// code. Empty when it waits for nothing (or the rebuild needed a decision that was not recorded).
#[allow(clippy::too_many_arguments)] // the stored parts of an instance, each as it is stored
pub fn waiting_for(
    id: &str,
    plan: Arc<Plan>,
    input: &[u8],
    created_at: f64,
    now: f64,
    records: &[Record],
    signals: &HashMap<u64, Vec<u8>>,
    arrivals: &[(u64, String)],
) -> Vec<Waiting> {
    let Ok(input) = serde_json::from_slice::<Value>(input) else {
        return Vec::new();
    };
    let mut host = Inert { signals };
    let mut inst = Instance::resume(id, plan, input, created_at, now, records, &mut host);
    if inst.status() != Status::Running {
        return Vec::new();
    }
    inst.add_signals(arrivals.iter().cloned());
    inst.deliver(now, &mut host);
    inst.waiting()
}

impl<V: Clone> Instance<V> {
    /// The waits, sleeps, retries and the workflow timeout this instance is suspended on, soonest
    /// first (signal waits without a timeout last).
    fn waiting(&self) -> Vec<Waiting> {
        let mut out: Vec<Waiting> = Vec::new();
        for t in &self.timers {
            let Some(item) = self.timer_items.get(&t.seq) else { continue };
            let (kind, key, step) = match item {
                Due::Retry(task) => ("retry", task.key.clone(), Some(self.plan.steps[task.step as usize].name.clone())),
                // the sleep's own key: several sleeps due at the same time (the items of a map)
                // were all named after the first recorded timer with that due time
                Due::Sleep { key, .. } => ("sleep", key.clone(), None),
                Due::WaitTimeout { .. } => continue, // shown with its wait
                Due::WorkflowTimeout => ("workflow_timeout", String::new(), None),
            };
            out.push(Waiting { kind, key, signal: None, step, until: Some(t.due) });
        }
        for w in &self.waits {
            let until = w.timer.and_then(|seq| self.timers.iter().find(|t| t.seq == seq)).map(|t| t.due);
            out.push(Waiting { kind: "signal", key: w.key.clone(), signal: Some(w.name.clone()), step: None, until });
        }
        out.sort_by(|a, b| match (a.until, b.until) {
            (Some(x), Some(y)) => x.total_cmp(&y),
            (Some(_), None) => std::cmp::Ordering::Less,
            (None, Some(_)) => std::cmp::Ordering::Greater,
            (None, None) => std::cmp::Ordering::Equal,
        });
        out
    }
}
