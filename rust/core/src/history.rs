//! An instance's history as events, read from its records in log order: step attempts (finished
//! or interrupted), the decisions taken (branch, loop check, router), the timers set for sleeps and
//! wait timeouts, the signals consumed or rejected, the waits that timed out, the sleeps that ended,
//! and the cancellation. Nothing is run; the plan is only read to name the step of an attempt that
//! never finished.

use std::collections::{HashMap, HashSet};

use crate::codec::{Outcome, Record};
use crate::instance::{CANCEL_DECISION, CANCEL_KEY, SLEPT};
use crate::plan::{Node, Plan};

/// One event of an instance's history.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// A step attempt finished: completed, or failed (with the error's JSON and, if the policy
    /// retries, when the next attempt is due).
    Step {
        key: String,
        step: String,
        attempt: u32,
        started_at: f64,
        finished_at: f64,
        error: Option<Vec<u8>>,
        retry_at: Option<f64>,
    },
    /// A step attempt started and never finished (its process died, or it is running now).
    /// `retried`: a later attempt of that position started or was scheduled, or the instance
    /// finished without it.
    Interrupted { key: String, step: String, attempt: u32, retried: bool },
    /// A branch condition (`"branch"`, value `"true"`/`"false"`), a loop's check after iteration
    /// `iteration` (`"loop"`, `"true"` ends the loop) or a router (`"route"`, the target state).
    Decision { kind: &'static str, key: String, value: String, iteration: Option<u32> },
    /// A sleep or a wait's timeout was set to end at `until`.
    Timer { key: String, until: f64 },
    /// The wait at `key` consumed inbox signal `seq` (named `name`).
    Signal { key: String, seq: u64, name: String },
    /// The wait at `key` rejected inbox signal `seq`: its payload did not decode (`reason`).
    SignalRejected { key: String, seq: u64, name: String, reason: String },
    /// The wait at `key` timed out.
    TimedOut { key: String },
    /// The sleep at `key` ended.
    Slept { key: String },
    /// The instance was cancelled with `reason`.
    Cancelled { reason: String },
    /// A decision of a kind this version does not know (kept, not hidden).
    Other { key: String, value: String },
}

/// The events of `records`, in log order. `names` maps inbox numbers to signal names; `finished`
/// says whether the instance finished (an unfinished attempt of a finished instance was
/// interrupted, not running).
pub fn events(plan: Option<&Plan>, records: &[Record], names: &HashMap<u64, String>, finished: bool) -> Vec<Event> {
    // which attempts finished, the highest attempt seen per position, and step names per position
    let mut done: HashSet<(&str, u32)> = HashSet::new();
    let mut highest: HashMap<&str, u32> = HashMap::new();
    let mut step_names: HashMap<&str, &str> = HashMap::new();
    for r in records {
        let listed: &[(String, u32)] = match r {
            Record::Step(s) => {
                done.insert((&s.key, s.attempt));
                step_names.insert(&s.key, &s.step);
                bump(&mut highest, &s.key, s.attempt);
                if let Outcome::Failed { retry_at: Some(_), .. } = s.outcome {
                    bump(&mut highest, &s.key, s.attempt + 1);
                }
                &s.next
            }
            Record::Enqueued(ts) => ts,
            Record::Decision { .. } => &[],
        };
        for (k, a) in listed {
            bump(&mut highest, k, *a);
        }
    }
    let step_of = |key: &str| -> String {
        step_names.get(key).map(|s| s.to_string()).or_else(|| plan.and_then(|p| step_at(p, key))).unwrap_or_default()
    };
    let name_of = |seq: u64| names.get(&seq).cloned().unwrap_or_default();
    let mut out = Vec::new();
    let mut shown: HashSet<(&str, u32)> = HashSet::new();
    for r in records {
        let listed: &[(String, u32)] = match r {
            Record::Step(s) => {
                let (error, retry_at) = match &s.outcome {
                    Outcome::Completed(_) => (None, None),
                    Outcome::Failed { error, retry_at } => (Some(error.clone()), *retry_at),
                };
                out.push(Event::Step {
                    key: s.key.clone(),
                    step: s.step.clone(),
                    attempt: s.attempt,
                    started_at: s.started_at,
                    finished_at: s.finished_at,
                    error,
                    retry_at,
                });
                &s.next
            }
            Record::Enqueued(ts) => ts,
            Record::Decision { key, value } => {
                out.push(decision(key, value, &name_of));
                &[]
            }
        };
        for (k, a) in listed {
            if done.contains(&(k.as_str(), *a)) || !shown.insert((k.as_str(), *a)) {
                continue;
            }
            let later = highest.get(k.as_str()).is_some_and(|h| h > a);
            let retried = later || finished;
            // the last attempt of an unfinished instance that never finished: it is running now,
            // or its process died and the next resume runs it again
            out.push(Event::Interrupted { key: k.clone(), step: step_of(k), attempt: *a, retried });
        }
    }
    out
}

fn bump<'a>(map: &mut HashMap<&'a str, u32>, key: &'a str, attempt: u32) {
    let e = map.entry(key).or_insert(0);
    *e = (*e).max(attempt);
}

/// The event a decision record stands for.
fn decision(key: &str, value: &str, name_of: &dyn Fn(u64) -> String) -> Event {
    if key == CANCEL_DECISION {
        return Event::Cancelled { reason: value.to_string() };
    }
    if let Some(k) = key.strip_suffix("@due") {
        if let Ok(until) = value.parse::<f64>() {
            return Event::Timer { key: k.to_string(), until };
        }
    }
    if let Some(k) = key.strip_suffix('@') {
        if let Ok(seq) = value.parse::<u64>() {
            return Event::Signal { key: k.to_string(), seq, name: name_of(seq) };
        }
    }
    if let Some((k, seq)) = key.rsplit_once("@r") {
        if let Ok(seq) = seq.parse::<u64>() {
            return Event::SignalRejected { key: k.to_string(), seq, name: name_of(seq), reason: value.to_string() };
        }
    }
    if let Some(k) = key.strip_suffix('!') {
        return Event::TimedOut { key: k.to_string() };
    }
    if let Some(k) = key.strip_suffix(SLEPT) {
        return Event::Slept { key: k.to_string() };
    }
    if let Some(k) = key.strip_suffix('?') {
        let (head, last) = match k.rsplit_once('.') {
            Some((h, l)) => (h, l),
            None => ("", k),
        };
        if let Some(i) = last.strip_prefix('u').and_then(|n| n.parse::<u32>().ok()) {
            // the check after iteration i + 1 of the loop at `head`
            let iteration = Some(i + 1);
            return Event::Decision { kind: "loop", key: head.to_string(), value: value.to_string(), iteration };
        }
        let kind = if last.contains('#') { "route" } else { "branch" };
        return Event::Decision { kind, key: k.to_string(), value: value.to_string(), iteration: None };
    }
    Event::Other { key: key.to_string(), value: value.to_string() }
}

/// The name of the step at position `key` of `plan`, if the key leads to one.
pub fn step_at(plan: &Plan, key: &str) -> Option<String> {
    let name = |s: u32| plan.steps.get(s as usize).map(|s| s.name.clone());
    if key == CANCEL_KEY {
        return plan.compensation.and_then(name);
    }
    let mut segs = key.split('.').filter(|s| !s.is_empty());
    let mut node = plan.root;
    loop {
        match plan.node(node) {
            Node::Sub { body, .. } => {
                node = *body;
                continue;
            }
            Node::Step { step } => return if segs.next().is_none() { name(*step) } else { None },
            _ => {}
        }
        let seg = segs.next()?;
        let index = |prefix: &str| seg.strip_prefix(prefix).and_then(|n| n.parse::<usize>().ok());
        node = match plan.node(node) {
            Node::Seq { children } => *children.get(index("")?)?,
            Node::Parallel { children } => *children.get(index("p")?)?,
            Node::Map { body, .. } => index("m").map(|_| *body)?,
            Node::Loop { body, .. } => index("i").map(|_| *body)?,
            Node::Branch { then, otherwise, .. } => match seg {
                "t" => *then,
                "f" => (*otherwise)?,
                _ => return None,
            },
            Node::States { states, .. } => {
                let (state, _) = seg.split_once('#')?;
                states.iter().find(|s| s.name == state)?.body
            }
            Node::WaitSignal { on_timeout, .. } if seg == "timeout" => (*on_timeout)?,
            _ => return None,
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::StepRecord;
    use crate::plan::{NodeSpec, PlanSpec, StateSpec, StepSpec};

    fn plan() -> Plan {
        let step = |i| NodeSpec::Step { step: i };
        let root = NodeSpec::Seq {
            children: vec![
                step(0),
                NodeSpec::Parallel {
                    children: vec![step(1), NodeSpec::Map { body: Box::new(step(2)), concurrency: None }],
                },
                NodeSpec::Branch { cond: 0, then: Box::new(step(3)), otherwise: None },
                NodeSpec::Loop { body: Box::new(step(4)), until: 0, max_iterations: Some(3) },
                NodeSpec::States {
                    start: "a".into(),
                    states: vec![StateSpec {
                        name: "a".into(),
                        body: NodeSpec::WaitSignal {
                            name: "go".into(),
                            wait: 0,
                            timeout: Some(1.0),
                            on_timeout: Some(Box::new(step(5))),
                        },
                        next: None,
                    }],
                },
            ],
        };
        let steps = (0..7).map(|i| StepSpec { name: format!("s{i}"), retry: None, timeout: None }).collect();
        let spec = PlanSpec {
            name: "h".into(),
            version: None,
            steps,
            fns: vec!["c".into()],
            root,
            timeout: None,
            compensation: Some(6),
        };
        Plan::from_spec(spec).expect("valid plan")
    }

    #[test]
    fn a_position_key_leads_to_its_step() {
        let p = plan();
        for (key, step) in [
            ("0", "s0"),
            ("1.p0", "s1"),
            ("1.p1.m7", "s2"),
            ("2.t", "s3"),
            ("3.i2", "s4"),
            ("4.a#0.timeout", "s5"),
            ("cancel", "s6"),
        ] {
            assert_eq!(step_at(&p, key).as_deref(), Some(step), "{key}");
        }
        for key in ["", "9", "1.p2", "2.f", "1.p1.x", "0.0", "4.b#0", "4.a#0"] {
            assert_eq!(step_at(&p, key), None, "{key}");
        }
    }

    #[test]
    fn decision_keys_become_typed_events() {
        let names: HashMap<u64, String> = [(5, "go".to_string())].into();
        let d = |k: &str, v: &str| Record::Decision { key: k.into(), value: v.into() };
        let records = [
            d("?", "true"),
            d("3.u1?", "false"),
            d("4.a#0?", "b"),
            d("4.a#0@due", "12.5"),
            d("4.a#0@r5", "bad payload"),
            d("4.a#0@", "5"),
            d("4.a#0!", "timeout"),
            d("2~", "slept"),
            d("!cancel", "bye"),
            d("x^", "1"),
        ];
        let got = events(None, &records, &names, false);
        let key = |k: &str| k.to_string();
        assert_eq!(
            got,
            vec![
                Event::Decision { kind: "branch", key: key(""), value: "true".into(), iteration: None },
                Event::Decision { kind: "loop", key: key("3"), value: "false".into(), iteration: Some(2) },
                Event::Decision { kind: "route", key: key("4.a#0"), value: "b".into(), iteration: None },
                Event::Timer { key: key("4.a#0"), until: 12.5 },
                Event::SignalRejected { key: key("4.a#0"), seq: 5, name: "go".into(), reason: "bad payload".into() },
                Event::Signal { key: key("4.a#0"), seq: 5, name: "go".into() },
                Event::TimedOut { key: key("4.a#0") },
                Event::Slept { key: key("2") },
                Event::Cancelled { reason: "bye".into() },
                Event::Other { key: key("x^"), value: "1".into() },
            ]
        );
    }

    #[test]
    fn an_attempt_started_and_never_finished_is_interrupted() {
        let p = plan();
        let rec = |key: &str, attempt, next: Vec<(String, u32)>| {
            Record::Step(StepRecord {
                key: key.into(),
                step: "s0".into(),
                attempt,
                started_at: 1.0,
                finished_at: 2.0,
                outcome: Outcome::Completed(b"1".to_vec()),
                next,
            })
        };
        let records = [
            Record::Enqueued(vec![("0".into(), 1)]),
            rec("0", 1, vec![("1.p0".into(), 1), ("1.p1.m0".into(), 1)]),
            Record::Enqueued(vec![("1.p0".into(), 2)]),
        ];
        let got = events(Some(&p), &records, &HashMap::new(), false);
        let interrupted: Vec<_> = got.iter().filter(|e| matches!(e, Event::Interrupted { .. })).collect();
        assert_eq!(
            interrupted,
            vec![
                &Event::Interrupted { key: "1.p0".into(), step: "s1".into(), attempt: 1, retried: true },
                &Event::Interrupted { key: "1.p1.m0".into(), step: "s2".into(), attempt: 1, retried: false },
                &Event::Interrupted { key: "1.p0".into(), step: "s1".into(), attempt: 2, retried: false },
            ]
        );
        let finished = events(Some(&p), &records, &HashMap::new(), true);
        assert!(finished.iter().all(|e| !matches!(e, Event::Interrupted { retried: false, .. })));
    }
}
