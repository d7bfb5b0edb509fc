//! Rebuilding an instance from its records after time has passed: durable sleeps, waits (with and
//! without timeouts) and signals, resumed at every suspension the way `run_due` does and crashed
//! after any number of commits; which attempts count as started; and the retry budget of
//! interrupted attempts.

use super::tests::{apply, fns, plan, policy, seq, step, Signals, TestHost};
use super::*;
use crate::plan::{NextSpec, NodeSpec, StateSpec};
use proptest::prelude::*;
use serde_json::{json, Value};

/// The test host, except that every signal carries the same payload: which of several signals of
/// one name a wait took then does not change the output, so a run that was resumed in between
/// (and entered its waits in another order) must give the same output as one that was not.
fn host7() -> Signals {
    Signals(|_| Ok(json!(7)))
}

/// Signals in every inbox: 40 named "a" (sequence numbers 1..=40); none named "never".
fn inbox() -> Vec<(u64, String)> {
    (1..=40).map(|s| (s, "a".to_string())).collect()
}

fn sleep(s: f64) -> NodeSpec {
    NodeSpec::Sleep { seconds: Some(s), until: None }
}

fn wait(name: &str, timeout: Option<f64>, on_timeout: Option<NodeSpec>) -> NodeSpec {
    NodeSpec::WaitSignal { name: name.into(), wait: 0, timeout, on_timeout: on_timeout.map(Box::new) }
}

/// How a session of the simulated driver ended.
#[derive(Debug, PartialEq)]
enum End {
    Finished,
    Suspended,
    Crashed,
}

/// A driver shaped like the real ones: take one task (noting that it starts), commit, run it;
/// suspend when nothing is ready; optionally die right after commit number `crash_at`.
#[derive(Default)]
struct Sim {
    now: f64,
    records: Vec<Record>,
    commits: usize,
    /// How many times each position's step started (a crash right after the commit of its start
    /// counts: it may have run).
    starts: HashMap<String, u32>,
    /// `(key, attempt, earlier starts)` of every start whose attempt was not 1 + earlier starts.
    charged_wrongly: Vec<(String, u32, u32)>,
    resumes: usize,
}

impl Sim {
    fn commit(&mut self, inst: &mut Instance<Value>) {
        self.records.extend(inst.take_records());
        self.commits += 1;
    }

    fn session(&mut self, inst: &mut Instance<Value>, crash_at: Option<usize>) -> End {
        loop {
            inst.fire_timers(self.now, &mut host7());
            if inst.is_waiting() {
                inst.deliver(self.now, &mut host7());
            }
            match inst.pop_ready(self.now) {
                Some(t) => {
                    self.commit(inst);
                    let n = self.starts.entry(t.key.clone()).or_insert(0);
                    if t.attempt != *n + 1 {
                        self.charged_wrongly.push((t.key.clone(), t.attempt, *n));
                    }
                    *n += 1;
                    if crash_at == Some(self.commits) {
                        return End::Crashed; // the task started; its result is lost
                    }
                    let out = apply(&fns(4)[t.step as usize], &t.input);
                    let p = serde_json::to_vec(&out).unwrap();
                    inst.complete(t, out, p, self.now, &mut host7());
                }
                None => {
                    self.commit(inst);
                    return if inst.status().is_finished() { End::Finished } else { End::Suspended };
                }
            }
        }
    }

    fn resume(&mut self, p: &Arc<Plan>, input: i64) -> Instance<Value> {
        self.resumes += 1;
        let mut inst = Instance::resume("r", p.clone(), json!(input), 0.0, self.now, &self.records, &mut host7());
        inst.add_signals(inbox());
        inst.deliver(self.now, &mut host7());
        inst
    }

    /// Runs to the end: each suspension is resumed from the records at its next deadline (and,
    /// with `early`, first once before it, moving nothing); dies after each commit in `crashes`.
    fn run(&mut self, p: &Arc<Plan>, input: i64, crashes: &[usize], early: bool) -> Instance<Value> {
        let mut inst = Instance::start("r", p.clone(), json!(input), 0.0, &mut host7());
        inst.add_signals(inbox());
        inst.deliver(0.0, &mut host7());
        let mut crashes = crashes.iter().copied().collect::<VecDeque<_>>();
        for _ in 0..400 {
            while crashes.front().is_some_and(|c| *c <= self.commits) {
                crashes.pop_front();
            }
            match self.session(&mut inst, crashes.front().copied()) {
                End::Finished => return inst,
                End::Crashed => inst = self.resume(p, input),
                End::Suspended => {
                    let due = inst.next_deadline().expect("suspended with no timer: stuck");
                    if early && due > self.now {
                        let mut again = self.resume(p, input);
                        assert_eq!(self.session(&mut again, None), End::Suspended, "an early resume moved");
                        assert_eq!(again.next_deadline(), Some(due), "an early resume changed the due time");
                    }
                    self.now = self.now.max(due);
                    inst = self.resume(p, input);
                }
            }
        }
        panic!("did not finish in 400 sessions");
    }

    /// Every inbox signal taken by some wait (a signal taken twice is counted once).
    fn consumed(&self) -> Vec<String> {
        let mut v: Vec<String> = self
            .records
            .iter()
            .filter_map(|r| match r {
                Record::Decision { key, value } if key.ends_with('@') => Some(value.clone()),
                _ => None,
            })
            .collect();
        v.sort();
        v
    }
}

/// The same plan driven once, never resumed: what every resumed run must equal.
fn uninterrupted(p: &Arc<Plan>, input: i64) -> (Instance<Value>, Sim) {
    let mut sim = Sim::default();
    let mut inst = Instance::start("r", p.clone(), json!(input), 0.0, &mut host7());
    inst.add_signals(inbox());
    inst.deliver(0.0, &mut host7());
    for _ in 0..400 {
        match sim.session(&mut inst, None) {
            End::Suspended => sim.now = sim.now.max(inst.next_deadline().expect("stuck")),
            _ => return (inst, sim),
        }
    }
    panic!("did not finish");
}

fn check_same(p: &Arc<Plan>, input: i64, crashes: &[usize], early: bool) -> Result<(), TestCaseError> {
    let (whole, ref_sim) = uninterrupted(p, input);
    let mut sim = Sim::default();
    let inst = sim.run(p, input, crashes, early);
    if let Some(e) = inst.error().filter(|e| e.kind == "interrupted") {
        // two crashes in one step of the default policy: a poison step, failed by design
        let key = e.key.clone().unwrap_or_default();
        prop_assert!(crashes.len() >= 2, "one crash failed the instance: {:?}", e);
        prop_assert_eq!(sim.starts.get(&key).copied(), Some(e.attempts), "{:?}", sim.starts);
        prop_assert!(sim.charged_wrongly.is_empty(), "attempts not matching starts: {:?}", sim.charged_wrongly);
        return Ok(());
    }
    prop_assert_eq!(inst.status(), whole.status());
    prop_assert_eq!(inst.output(), whole.output());
    prop_assert_eq!(inst.error().map(|e| e.kind), whole.error().map(|e| e.kind));
    prop_assert!(sim.charged_wrongly.is_empty(), "attempts not matching starts: {:?}", sim.charged_wrongly);
    prop_assert_eq!(sim.now, ref_sim.now, "the run ended at another time");
    // each wait took one signal, none was taken twice or lost (lost: a wait takes another)
    let consumed = sim.consumed();
    let mut distinct = consumed.clone();
    distinct.dedup();
    prop_assert_eq!(&consumed, &distinct, "a signal was consumed twice");
    prop_assert_eq!(consumed.len(), ref_sim.consumed().len(), "signals consumed: {:?}", consumed);
    // a step reruns only after a crash interrupted it
    let reruns: u32 = sim.starts.values().map(|n| n - 1).sum();
    prop_assert!(
        reruns as usize <= crashes.len(),
        "{} reruns after {} crashes: {:?}",
        reruns,
        crashes.len(),
        sim.starts
    );
    Ok(())
}

fn arb_timed(depth: u32) -> BoxedStrategy<NodeSpec> {
    let leaf = prop_oneof![
        3 => (0u32..4).prop_map(step),
        1 => (1u32..4).prop_map(|s| sleep(s as f64)),
        1 => proptest::option::of(1u32..4).prop_map(|t| wait("a", t.map(f64::from), None)),
        1 => (1u32..4, proptest::option::of(0u32..4))
            .prop_map(|(t, o)| wait("never", Some(t as f64), o.map(step))),
    ]
    .boxed();
    leaf.prop_recursive(depth, 24, 3, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 1..4).prop_map(seq),
            proptest::collection::vec(inner.clone(), 1..3).prop_map(|c| NodeSpec::Parallel { children: c }),
            (inner.clone(), proptest::option::of(1u32..3))
                .prop_map(|(b, c)| NodeSpec::Map { body: Box::new(b), concurrency: c }),
            (inner.clone(), proptest::option::of(inner.clone())).prop_map(|(t, o)| NodeSpec::Branch {
                cond: 0,
                then: Box::new(t),
                otherwise: o.map(Box::new)
            }),
            (inner, 1u32..4).prop_map(|(b, m)| NodeSpec::Loop { body: Box::new(b), until: 0, max_iterations: Some(m) }),
        ]
    })
    .boxed()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, .. ProptestConfig::default() })]

    /// Plans with sleeps, waits (with and without timeouts) and signals, resumed from their records
    /// at every suspension (and crashed after random commits), end as an uninterrupted run does:
    /// same output at the same time, no step re-run that no crash interrupted, every attempt
    /// number counting only attempts that started, each signal consumed once.
    #[test]
    fn resumed_at_every_timer_equals_uninterrupted(
        root in arb_timed(3),
        input in 0i64..50,
        crashes in proptest::collection::vec(1usize..40, 0..3),
        early in any::<bool>(),
    ) {
        let p = plan(seq(vec![root, step(1)]), 4, None);
        let mut crashes = crashes;
        crashes.sort_unstable();
        crashes.dedup();
        check_same(&p, input, &crashes, early)?;
    }
}

fn keys_run(sim: &Sim) -> Vec<(String, u32)> {
    let mut v: Vec<(String, u32)> = sim.starts.iter().map(|(k, n)| (k.clone(), *n)).collect();
    v.sort();
    v
}

#[test]
fn a_sleep_that_ended_is_recorded_and_replayed_past() {
    // sleep -> step -> sleep -> step, resumed at each timer the way run_due does
    let p = plan(seq(vec![sleep(1.0), step(0), sleep(1.0), step(1)]), 2, None);
    let mut sim = Sim::default();
    let inst = sim.run(&p, 0, &[], true);
    assert_eq!(inst.status(), Status::Completed);
    assert_eq!(inst.output(), Some(&json!(3))); // 0*2+1 = 1, then 1*1+2 = 3
    assert_eq!(keys_run(&sim), vec![("1".into(), 1), ("3".into(), 1)]);
    for k in ["0~", "2~"] {
        assert!(sim.records.contains(&Record::Decision { key: k.into(), value: "slept".into() }), "{k}");
    }
}

#[test]
fn every_shape_with_a_sleep_before_later_progress_resumes_without_rerunning() {
    let states = NodeSpec::States {
        start: "a".into(),
        states: vec![
            StateSpec {
                name: "a".into(),
                body: seq(vec![sleep(1.0), step(0)]),
                next: Some(NextSpec::Goto("b".into())),
            },
            StateSpec { name: "b".into(), body: step(1), next: Some(NextSpec::Router { router: 2, targets: None }) },
            StateSpec { name: "s0".into(), body: step(1), next: None },
            StateSpec { name: "s1".into(), body: step(1), next: Some(NextSpec::Goto("a".into())) },
            StateSpec { name: "s2".into(), body: step(1), next: Some(NextSpec::Goto("a".into())) },
        ],
    };
    let shapes = vec![
        ("sleep-step-sleep-step", seq(vec![sleep(1.0), step(0), sleep(1.0), step(1)])),
        ("step-sleep-sleep-step", seq(vec![step(0), sleep(1.0), sleep(2.0), step(1)])),
        ("sleep-step-wait-step", seq(vec![sleep(60.0), step(0), wait("a", None, None), step(1)])),
        ("sleep-step-wait-timeout-step", seq(vec![sleep(1.0), step(0), wait("never", Some(5.0), None), step(1)])),
        (
            "sleep-step-wait-timeout-path-step",
            seq(vec![sleep(1.0), step(0), wait("never", Some(5.0), Some(step(2))), step(1)]),
        ),
        ("sleep-wait-step", seq(vec![sleep(1.0), wait("a", Some(9.0), None), step(1), wait("a", None, None), step(0)])),
        (
            "loop-with-a-sleeping-body",
            NodeSpec::Loop { body: Box::new(seq(vec![step(0), sleep(1.0)])), until: 1, max_iterations: Some(4) },
        ),
        ("states-cycling-through-a-sleep", states),
        (
            "parallel-sleeps",
            NodeSpec::Parallel { children: vec![seq(vec![sleep(1.0), step(0)]), seq(vec![sleep(2.0), step(1)])] },
        ),
    ];
    for (name, root) in shapes {
        let p = plan(seq(vec![root, step(3)]), 4, None);
        for early in [false, true] {
            for crash in 0..12 {
                let crashes: Vec<usize> = if crash == 0 { vec![] } else { vec![crash] };
                if let Err(e) = check_same(&p, 3, &crashes, early) {
                    panic!("{name} (early resume {early}, crash after commit {crash}): {e}");
                }
            }
        }
    }
}

#[test]
fn only_tasks_taken_count_as_started() {
    // a wave of three: the driver took one when it died; the other two were never charged
    let p = plan(NodeSpec::Parallel { children: vec![step(0), step(1), step(2)] }, 3, None);
    let mut inst = Instance::start("w", p.clone(), json!(1), 0.0, &mut TestHost);
    assert_eq!(inst.ready_len(), 3);
    let t = inst.pop_ready(0.0).unwrap();
    let records = inst.take_records();
    assert!(records.contains(&Record::Enqueued(vec![(t.key.clone(), 1)])), "{records:?}");
    let mut again = Instance::resume("w", p, json!(1), 0.0, 1.0, &records, &mut TestHost);
    let mut attempts = Vec::new();
    while let Some(t) = again.pop_ready(1.0) {
        attempts.push((t.key.clone(), t.attempt));
    }
    assert_eq!(attempts, vec![("p0".into(), 2), ("p1".into(), 1), ("p2".into(), 1)]);
}

#[test]
fn an_interrupted_step_gets_one_more_attempt_and_then_fails_as_interrupted() {
    // default policy (max_attempts 1): attempt 1 interrupted -> attempt 2; interrupted again -> fail
    let p = plan(seq(vec![step(0), step(1)]), 2, None);
    let mut inst = Instance::start("x", p.clone(), json!(1), 0.0, &mut TestHost);
    let t = inst.pop_ready(0.0).unwrap();
    let mut records = inst.take_records();
    drop(t);
    let mut again = Instance::resume("x", p.clone(), json!(1), 0.0, 1.0, &records, &mut TestHost);
    let t = again.pop_ready(1.0).unwrap();
    assert_eq!(t.attempt, 2);
    records.extend(again.take_records());
    let third = Instance::resume("x", p, json!(1), 0.0, 2.0, &records, &mut TestHost);
    assert_eq!(third.status(), Status::Failed);
    let e = third.error().unwrap();
    assert_eq!((e.kind, e.step.as_deref(), e.key.as_deref(), e.attempts), ("interrupted", Some("s0"), Some("0"), 2));
    assert_eq!(e.failure.error_type, "StepInterrupted");
    assert!(e.failure.message.contains("died during its last attempt"), "{}", e.failure.message);
    assert_eq!(third.ready_len(), 0);
}

#[test]
fn interrupted_attempts_count_against_a_larger_retry_budget() {
    // max_attempts 3: attempt 1 fails, 2 and 3 are interrupted -> failed after 3 attempts
    let p = plan(step(0), 1, policy(3));
    let mut inst = Instance::start("y", p.clone(), json!(1), 0.0, &mut TestHost);
    let t = inst.pop_ready(0.0).unwrap();
    inst.fail(t, Failure::new("IOError", "flaky"), true, 0.0);
    let mut records = inst.take_records();
    for (now, attempt) in [(10.0, 2), (20.0, 3)] {
        let mut again = Instance::resume("y", p.clone(), json!(1), 0.0, now, &records, &mut TestHost);
        again.fire_timers(now, &mut TestHost);
        let t = again.pop_ready(now).unwrap();
        assert_eq!(t.attempt, attempt);
        records.extend(again.take_records());
    }
    let last = Instance::resume("y", p, json!(1), 0.0, 30.0, &records, &mut TestHost);
    assert_eq!((last.status(), last.error().map(|e| (e.kind, e.attempts))), (Status::Failed, Some(("interrupted", 3))));
}

#[test]
fn a_rebuild_with_the_attempt_running_keeps_its_number_and_its_base() {
    // max_attempts 3: attempt 1 fails, attempt 2 starts. A worker running that step elsewhere
    // rebuilds with `running`: attempt 2 again (not charged), base 2. A takeover after the
    // holder died resumes at attempt 3 with one interrupted before it: the same base, 2.
    let p = plan(step(0), 1, policy(3));
    let mut inst = Instance::start("z", p.clone(), json!(1), 0.0, &mut TestHost);
    let t = inst.pop_ready(0.0).unwrap();
    assert_eq!((t.attempt, t.interrupted), (1, 0));
    inst.fail(t, Failure::new("IOError", "flaky"), true, 0.0);
    let mut records = inst.take_records();
    let mut second = Instance::resume("z", p.clone(), json!(1), 0.0, 10.0, &records, &mut TestHost);
    second.fire_timers(10.0, &mut TestHost);
    let t = second.pop_ready(10.0).unwrap();
    assert_eq!((t.attempt, t.interrupted), (2, 0));
    let key = t.key.clone();
    records.extend(second.take_records());
    let mut copy = Instance::rebuild("z", p.clone(), json!(1), 0.0, 11.0, &records, true, &mut TestHost);
    let t = copy.take_ready(&key, 11.0).expect("the running attempt is ready in the copy");
    assert_eq!((t.attempt, t.interrupted, t.started_at), (2, 0, 11.0));
    assert!(copy.take_records().is_empty(), "a copy records no start");
    let mut takeover = Instance::resume("z", p, json!(1), 0.0, 12.0, &records, &mut TestHost);
    let t = takeover.pop_ready(12.0).unwrap();
    assert_eq!((t.attempt, t.interrupted, t.attempt - t.interrupted), (3, 1, 2));
}

#[test]
fn take_ready_finds_a_position_and_nothing_else() {
    let p = plan(NodeSpec::Parallel { children: vec![step(0), step(1)] }, 2, None);
    let mut inst = Instance::start("w", p, json!(1), 0.0, &mut TestHost);
    assert!(inst.take_ready("nowhere", 0.0).is_none());
    let keys: Vec<String> =
        (0..2).filter_map(|_| inst.take_ready(&inst_first_key(&inst)?, 0.0)).map(|t| t.key).collect();
    assert_eq!(keys.len(), 2);
    assert_eq!(inst.ready_len(), 0);
}

fn inst_first_key(inst: &Instance<Value>) -> Option<String> {
    inst.ready.front().map(|t| t.key.clone())
}
