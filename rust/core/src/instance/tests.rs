//! State-machine tests: every node kind, retries, failures, and resume from records, including a
//! property test that random plans agree with a direct recursive evaluator and survive a "crash"
//! (dropping the instance) after any number of commits.

use super::*;
use crate::plan::{NextSpec, NodeSpec, PlanSpec, StateSpec, StepSpec};
use crate::retry::RetryPolicy;
use proptest::prelude::*;
use serde_json::{json, Value};

/// Steps are `x -> x * mul + add` on integers (lists pass through element-wise for maps).
#[derive(Clone, Debug)]
pub(super) struct StepFn {
    pub(super) add: i64,
    pub(super) mul: i64,
}

pub(super) fn apply(f: &StepFn, v: &Value) -> Value {
    match v {
        Value::Array(xs) => {
            json!(xs.iter().map(|x| x.as_i64().unwrap_or(0)).sum::<i64>() * f.mul + f.add)
        }
        _ => json!(v.as_i64().unwrap_or(0).wrapping_mul(f.mul).wrapping_add(f.add) % 1_000_003),
    }
}

pub(super) struct TestHost;

fn num(v: &Value) -> i64 {
    match v {
        Value::Array(xs) => xs.iter().map(num).sum(),
        _ => v.as_i64().unwrap_or(0),
    }
}

impl Host<Value> for TestHost {
    // fn 0: even?  fn 1: > 100?  fn 2: router "s{n % 3}"
    fn condition(&mut self, f: u32, v: &Value) -> Result<bool, Failure> {
        match f {
            0 => Ok(num(v) % 2 == 0),
            1 => Ok(num(v) > 100),
            3 => Err(Failure::new("ValueError", "condition exploded")),
            _ => Ok(false),
        }
    }
    fn route(&mut self, _f: u32, v: &Value) -> Result<String, Failure> {
        Ok(format!("s{}", num(v).rem_euclid(3)))
    }
    fn label(&mut self, v: &Value) -> Result<String, Failure> {
        Ok(if num(v) % 2 == 0 { "even".into() } else { "odd".into() })
    }
    fn tuple(&mut self, items: Vec<Value>) -> Value {
        Value::Array(items)
    }
    fn list(&mut self, items: Vec<Value>) -> Value {
        Value::Array(items)
    }
    fn items(&mut self, v: &Value) -> Result<Vec<Value>, Failure> {
        let n = num(v).rem_euclid(5);
        Ok((0..n).map(|i| json!(i)).collect())
    }
    fn decode(&mut self, _step: u32, payload: &[u8]) -> Result<Value, Failure> {
        serde_json::from_slice(payload).map_err(|e| Failure::new("CodecError", e.to_string()))
    }
    fn encode_output(&mut self, v: &Value) -> Result<Vec<u8>, Failure> {
        Ok(serde_json::to_vec(v).unwrap())
    }
    fn signal(&mut self, _wait: u32, seq: u64) -> Result<Value, Failure> {
        Ok(json!(seq as i64 * 1000))
    }
    fn text(&mut self, s: &str) -> Value {
        json!(s)
    }
}

/// The test host, except that signal payloads come from the given function of the inbox number.
pub(super) struct Signals(pub fn(u64) -> Result<Value, Failure>);

impl Host<Value> for Signals {
    fn condition(&mut self, f: u32, v: &Value) -> Result<bool, Failure> {
        TestHost.condition(f, v)
    }
    fn route(&mut self, f: u32, v: &Value) -> Result<String, Failure> {
        TestHost.route(f, v)
    }
    fn label(&mut self, v: &Value) -> Result<String, Failure> {
        TestHost.label(v)
    }
    fn tuple(&mut self, items: Vec<Value>) -> Value {
        TestHost.tuple(items)
    }
    fn list(&mut self, items: Vec<Value>) -> Value {
        TestHost.list(items)
    }
    fn items(&mut self, v: &Value) -> Result<Vec<Value>, Failure> {
        TestHost.items(v)
    }
    fn decode(&mut self, step: u32, payload: &[u8]) -> Result<Value, Failure> {
        TestHost.decode(step, payload)
    }
    fn encode_output(&mut self, v: &Value) -> Result<Vec<u8>, Failure> {
        TestHost.encode_output(v)
    }
    fn signal(&mut self, _wait: u32, seq: u64) -> Result<Value, Failure> {
        (self.0)(seq)
    }
    fn text(&mut self, s: &str) -> Value {
        TestHost.text(s)
    }
}

/// Runs an instance to the end (virtual time), failing step `fail_key` on its first `fail_times`
/// attempts; returns (instance, all records, number of step executions per key).
struct Run {
    fns: Vec<StepFn>,
    fail_key: Option<String>,
    fail_times: u32,
    now: f64,
    records: Vec<Record>,
    executions: HashMap<String, u32>,
}

impl Run {
    fn new(fns: Vec<StepFn>) -> Self {
        Run { fns, fail_key: None, fail_times: 0, now: 0.0, records: Vec::new(), executions: HashMap::new() }
    }

    /// Drives until finished, or until `stop_after` commits have happened (a simulated crash).
    fn drive(&mut self, inst: &mut Instance<Value>, stop_after: Option<usize>) -> bool {
        let mut commits = 0;
        loop {
            inst.fire_timers(self.now, &mut TestHost);
            let mut wave = Vec::new();
            while let Some(t) = inst.pop_ready(self.now) {
                wave.push(t);
            }
            if wave.is_empty() {
                self.records.extend(inst.take_records());
                if inst.status().is_finished() {
                    return true;
                }
                match inst.next_deadline() {
                    Some(d) => {
                        self.now = self.now.max(d);
                        continue;
                    }
                    None => panic!("stuck with nothing ready and no timer"),
                }
            }
            for t in wave {
                *self.executions.entry(t.key.clone()).or_insert(0) += 1;
                let fails = self.fail_key.as_deref() == Some(t.key.as_str()) && t.attempt <= self.fail_times;
                if fails {
                    inst.fail(t, Failure::new("IOError", "flaky"), true, self.now);
                } else {
                    let out = apply(&self.fns[t.step as usize], &t.input);
                    let p = serde_json::to_vec(&out).unwrap();
                    inst.complete(t, out, p, self.now, &mut TestHost);
                }
            }
            self.records.extend(inst.take_records());
            commits += 1;
            if stop_after == Some(commits) && !inst.status().is_finished() {
                return false;
            }
        }
    }
}

pub(super) fn plan(root: NodeSpec, nsteps: usize, retry: Option<RetryPolicy>) -> Arc<Plan> {
    let steps = (0..nsteps).map(|i| StepSpec { name: format!("s{i}"), retry: retry.clone(), timeout: None }).collect();
    let spec = PlanSpec {
        name: "t".into(),
        version: None,
        steps,
        fns: vec!["even".into(), "big".into(), "route".into(), "boom".into()],
        root,
        timeout: None,
        compensation: None,
    };
    Arc::new(Plan::from_spec(spec).expect("valid plan"))
}

pub(super) fn step(i: u32) -> NodeSpec {
    NodeSpec::Step { step: i }
}

pub(super) fn seq(c: Vec<NodeSpec>) -> NodeSpec {
    NodeSpec::Seq { children: c }
}

pub(super) fn fns(n: usize) -> Vec<StepFn> {
    (0..n).map(|i| StepFn { add: i as i64 + 1, mul: if i % 2 == 0 { 2 } else { 1 } }).collect()
}

fn run_to_end(p: &Arc<Plan>, n: usize, input: i64) -> (Instance<Value>, Run) {
    let mut r = Run::new(fns(n));
    let mut inst = Instance::start("i1", p.clone(), json!(input), 0.0, &mut TestHost);
    r.drive(&mut inst, None);
    (inst, r)
}

#[test]
fn chain_passes_values_along() {
    let p = plan(seq(vec![step(0), step(1), step(2)]), 3, None);
    let (inst, r) = run_to_end(&p, 3, 5);
    // s0: 5*2+1 = 11; s1: 11*1+2 = 13; s2: 13*2+3 = 29
    assert_eq!(inst.status(), Status::Completed);
    assert_eq!(inst.output(), Some(&json!(29)));
    assert_eq!(inst.output_payload(), Some(&b"29"[..]));
    let keys: Vec<&str> = r
        .records
        .iter()
        .filter_map(|x| match x {
            Record::Step(s) => Some(s.key.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(keys, vec!["0", "1", "2"]);
}

#[test]
fn parallel_gives_a_tuple_and_map_a_list() {
    let p = plan(seq(vec![NodeSpec::Parallel { children: vec![step(0), step(1)] }]), 2, None);
    let (inst, _) = run_to_end(&p, 2, 3);
    assert_eq!(inst.output(), Some(&json!([7, 5])));

    let body = Box::new(step(0));
    let p = plan(seq(vec![NodeSpec::Map { body, concurrency: Some(2) }]), 1, None);
    let (inst, r) = run_to_end(&p, 1, 4); // items 0..4
    assert_eq!(inst.output(), Some(&json!([1, 3, 5, 7])));
    assert!(r.executions.contains_key("0.m3"));
}

#[test]
fn map_respects_concurrency() {
    let p = plan(seq(vec![NodeSpec::Map { body: Box::new(step(0)), concurrency: Some(2) }]), 1, None);
    let mut inst = Instance::start("c", p, json!(4), 0.0, &mut TestHost);
    let mut max_ready = 0;
    loop {
        max_ready = max_ready.max(inst.ready_len());
        let Some(t) = inst.pop_ready(0.0) else { break };
        let out = apply(&StepFn { add: 0, mul: 1 }, &t.input);
        inst.complete(t, out.clone(), vec![], 0.0, &mut TestHost);
    }
    assert_eq!(max_ready, 2);
    assert_eq!(inst.status(), Status::Completed);
}

#[test]
fn empty_map_yields_empty_list() {
    let p = plan(seq(vec![NodeSpec::Map { body: Box::new(step(0)), concurrency: None }]), 1, None);
    let (inst, _) = run_to_end(&p, 1, 5); // 5 % 5 = 0 items
    assert_eq!(inst.output(), Some(&json!([])));
}

#[test]
fn branch_records_its_decision() {
    let b = NodeSpec::Branch { cond: 0, then: Box::new(step(0)), otherwise: Some(Box::new(step(1))) };
    let p = plan(seq(vec![b]), 2, None);
    let (inst, r) = run_to_end(&p, 2, 4);
    assert_eq!(inst.output(), Some(&json!(9)));
    assert!(r.records.contains(&Record::Decision { key: "0?".into(), value: "true".into() }));
    let (inst, _) = run_to_end(&p, 2, 3);
    assert_eq!(inst.output(), Some(&json!(5)));
}

#[test]
fn branch_without_otherwise_passes_through() {
    let b = NodeSpec::Branch { cond: 1, then: Box::new(step(0)), otherwise: None };
    let (inst, _) = run_to_end(&plan(seq(vec![b]), 1, None), 1, 7);
    assert_eq!(inst.output(), Some(&json!(7)));
}

#[test]
fn loop_runs_until_condition_and_fails_past_its_bound() {
    let l = NodeSpec::Loop { body: Box::new(step(0)), until: 1, max_iterations: Some(10) };
    let (inst, r) = run_to_end(&plan(seq(vec![l]), 1, None), 1, 1);
    // 1 -> 3 -> 7 -> 15 -> 31 -> 63 -> 127
    assert_eq!(inst.output(), Some(&json!(127)));
    assert_eq!(r.executions.len(), 6);
    assert!(r.executions.contains_key("0.i5"));

    let l = NodeSpec::Loop { body: Box::new(step(0)), until: 1, max_iterations: Some(3) };
    let (inst, _) = run_to_end(&plan(seq(vec![l]), 1, None), 1, 1);
    assert_eq!(inst.status(), Status::Failed);
    let e = inst.error().unwrap();
    assert_eq!(e.kind, "loop");
    assert!(e.failure.message.contains("max_iterations=3"), "{}", e.failure.message);
}

fn states(next_a: Option<NextSpec>) -> NodeSpec {
    NodeSpec::States {
        start: "a".into(),
        states: vec![
            StateSpec { name: "a".into(), body: step(0), next: next_a },
            StateSpec { name: "s0".into(), body: step(1), next: None },
            StateSpec { name: "s1".into(), body: step(1), next: Some(NextSpec::Goto("a".into())) },
            StateSpec { name: "s2".into(), body: step(1), next: None },
        ],
    }
}

#[test]
fn states_follow_routers_and_cycles() {
    let p = plan(states(Some(NextSpec::Router { router: 2, targets: None })), 2, None);
    let (inst, r) = run_to_end(&p, 2, 0);
    // a: 0*2+1 = 1 -> route s1: 1+2 = 3 -> a: 7 -> route s1: 9 -> a: 19 -> s1: 21 -> a: 43 -> s1 ...
    assert_eq!(inst.status(), Status::Completed);
    assert!(r.executions.contains_key("a#1"), "{:?}", r.executions.keys());
}

#[test]
fn labels_pick_the_next_state_and_unknown_labels_fail() {
    let table =
        NextSpec::Labels(vec![("even".into(), "s0".into()), ("odd".into(), "s2".into()), ("x".into(), "s1".into())]);
    let p = plan(states(Some(table)), 2, None);
    let (inst, r) = run_to_end(&p, 2, 0);
    assert_eq!(inst.status(), Status::Completed);
    assert!(r.executions.contains_key("s2#0"));

    let table =
        NextSpec::Labels(vec![("even".into(), "s0".into()), ("never".into(), "s1".into()), ("x".into(), "s2".into())]);
    let (inst, _) = run_to_end(&plan(states(Some(table)), 2, None), 2, 0);
    assert_eq!(inst.status(), Status::Failed);
    assert_eq!(inst.error().unwrap().kind, "definition");
    assert!(inst.error().unwrap().failure.message.contains("\"odd\""));
}

#[test]
fn unreachable_states_are_a_definition_error() {
    let table = NextSpec::Labels(vec![("even".into(), "s0".into()), ("odd".into(), "s2".into())]);
    let spec = PlanSpec {
        name: "t".into(),
        version: None,
        steps: vec![StepSpec { name: "a".into(), retry: None, timeout: None }; 2],
        fns: vec![],
        root: states(Some(table)),
        timeout: None,
        compensation: None,
    };
    let err = Plan::from_spec(spec).unwrap_err();
    assert!(err.to_string().contains("cannot be reached") && err.to_string().contains("s1"), "{err}");
}

#[test]
fn router_outside_declared_targets_fails() {
    let p = plan(
        states(Some(NextSpec::Router { router: 2, targets: Some(vec!["s0".into(), "s2".into(), "s1".into()]) })),
        2,
        None,
    );
    let (inst, _) = run_to_end(&p, 2, 0);
    assert_eq!(inst.status(), Status::Completed);
}

#[test]
fn loop_checks_and_branches_inside_loops_have_distinct_decision_keys() {
    // regression: a branch at position "0.i1" and the loop's check after iteration 1 once shared
    // the decision key "0.i1?", so a resume replayed one as the other
    let body = NodeSpec::Branch { cond: 0, then: Box::new(step(0)), otherwise: Some(Box::new(step(0))) };
    let l = NodeSpec::Loop { body: Box::new(body), until: 0, max_iterations: Some(3) };
    let (_, r) = run_to_end(&plan(seq(vec![l]), 1, None), 1, 2);
    let keys: Vec<&str> = r
        .records
        .iter()
        .filter_map(|x| match x {
            Record::Decision { key, .. } => Some(key.as_str()),
            _ => None,
        })
        .collect();
    let unique: std::collections::HashSet<&&str> = keys.iter().collect();
    assert_eq!(unique.len(), keys.len(), "{keys:?}");
}

#[test]
fn failing_condition_fails_the_instance() {
    let b = NodeSpec::Branch { cond: 3, then: Box::new(step(0)), otherwise: None };
    let (inst, _) = run_to_end(&plan(seq(vec![step(0), b]), 1, None), 1, 1);
    assert_eq!(inst.status(), Status::Failed);
    let e = inst.error().unwrap();
    assert_eq!((e.kind, e.key.as_deref()), ("condition", Some("1?")));
}

pub(super) fn policy(n: u32) -> Option<RetryPolicy> {
    Some(RetryPolicy { max_attempts: n, initial_delay: 1.0, multiplier: 2.0, max_delay: 100.0, jitter: 0.0 })
}

#[test]
fn retries_wait_the_policy_delays_then_succeed() {
    let p = plan(seq(vec![step(0), step(1)]), 2, policy(4));
    let mut r = Run::new(fns(2));
    r.fail_key = Some("1".into());
    r.fail_times = 3;
    let mut inst = Instance::start("r", p, json!(1), 0.0, &mut TestHost);
    r.drive(&mut inst, None);
    assert_eq!(inst.status(), Status::Completed);
    assert_eq!(r.executions["1"], 4);
    assert_eq!(r.now, 1.0 + 2.0 + 4.0);
}

#[test]
fn retries_exhausted_fail_with_the_attempt_count() {
    let p = plan(seq(vec![step(0)]), 1, policy(3));
    let mut r = Run::new(fns(1));
    r.fail_key = Some("0".into());
    r.fail_times = 99;
    let mut inst = Instance::start("r", p, json!(1), 0.0, &mut TestHost);
    r.drive(&mut inst, None);
    let e = inst.error().unwrap();
    assert_eq!((e.kind, e.attempts, e.step.as_deref()), ("step", 3, Some("s0")));
    assert_eq!(e.failure.message, "flaky");
}

#[test]
fn non_retryable_failure_gives_up_at_once() {
    let p = plan(seq(vec![step(0)]), 1, policy(5));
    let mut inst = Instance::start("r", p, json!(1), 0.0, &mut TestHost);
    let t = inst.pop_ready(0.0).unwrap();
    assert_eq!(inst.fail(t, Failure::new("KeyError", "x"), false, 0.0), None);
    assert_eq!(inst.status(), Status::Failed);
}

#[test]
fn resume_after_a_crash_mid_step_bumps_the_attempt_and_keeps_the_key() {
    let p = plan(seq(vec![step(0), step(1), step(2)]), 3, None);
    let mut inst = Instance::start("x", p.clone(), json!(5), 0.0, &mut TestHost);
    let t = inst.pop_ready(0.0).unwrap();
    let mut records = inst.take_records(); // a driver commits a task's start before running it
    let out = apply(&fns(3)[0], &t.input);
    inst.complete(t, out, b"11".to_vec(), 1.0, &mut TestHost);
    let t1 = inst.pop_ready(1.0).unwrap(); // step 1 "running" when we crash
    records.extend(inst.take_records());
    assert_eq!((t1.key.as_str(), t1.attempt), ("1", 1));
    drop(inst);

    let mut inst = Instance::resume("x", p, json!(5), 0.0, 0.0, &records, &mut TestHost);
    let t = inst.pop_ready(2.0).unwrap();
    assert_eq!((t.key.as_str(), t.attempt, t.input.clone()), ("1", 2, json!(11)));
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, .. ProptestConfig::default() })]

    /// Any plan, crashed after any number of commits and resumed from its records, ends with the
    /// same output as an uninterrupted run, and no completed step runs twice.
    #[test]
    fn resume_equals_uninterrupted(root in arb_node(3), input in 0i64..50, crash in 1usize..12) {
        let p = plan(seq(vec![root]), 4, None);
        let (whole, _) = run_to_end(&p, 4, input);

        let mut r = Run::new(fns(4));
        let mut inst = Instance::start("p", p.clone(), json!(input), 0.0, &mut TestHost);
        let finished = r.drive(&mut inst, Some(crash));
        if !finished {
            let first_run: HashMap<String, u32> = r.executions.clone();
            let completed: Vec<String> = r.records.iter().filter_map(|x| match x {
                Record::Step(s) if matches!(s.outcome, Outcome::Completed(_)) => Some(s.key.clone()),
                _ => None,
            }).collect();
            let mut inst2 = Instance::resume("p", p.clone(), json!(input), 0.0, 0.0, &r.records, &mut TestHost);
            r.executions.clear();
            r.drive(&mut inst2, None);
            prop_assert_eq!(inst2.status(), whole.status());
            prop_assert_eq!(inst2.output(), whole.output());
            for k in completed {
                prop_assert!(!r.executions.contains_key(&k), "completed step {} ran again", k);
            }
            prop_assert!(!first_run.is_empty());
        } else {
            prop_assert_eq!(inst.output(), whole.output());
        }
    }
}

fn arb_node(depth: u32) -> BoxedStrategy<NodeSpec> {
    let leaf = (0u32..4).prop_map(step).boxed();
    leaf.prop_recursive(depth, 24, 3, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 1..4).prop_map(seq),
            proptest::collection::vec(inner.clone(), 1..3).prop_map(|c| NodeSpec::Parallel { children: c }),
            (inner.clone(), proptest::option::of(1u32..3))
                .prop_map(|(b, c)| NodeSpec::Map { body: Box::new(b), concurrency: c }),
            (inner.clone(), proptest::option::of(inner.clone()))
                .prop_map(|(t, o)| { NodeSpec::Branch { cond: 0, then: Box::new(t), otherwise: o.map(Box::new) } }),
            (inner, 1u32..4).prop_map(|(b, m)| NodeSpec::Loop { body: Box::new(b), until: 0, max_iterations: Some(m) }),
        ]
    })
    .boxed()
}
