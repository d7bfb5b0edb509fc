//! Tests of the driving policy, through a tiny reference driver over a [`MemoryStore`]: it
//! executes what [`Driving::next`] answers (commit with [`Pending::as_commit`], read the inbox,
//! run steps that are pure functions of JSON values and settle them, sleep on a fake clock, wait)
//! and keeps a trace of what it did, so the tests can check the rules the policy owns. The tests
//! themselves are in `tests_*.rs`; this file holds the driver, the host and the plan builders.

use std::collections::HashMap;
use std::sync::Arc;

use serde_json::{json, Value};

use super::*;
use crate::codec::{decode_record, encode_signal, Outcome, Record, Signal};
use crate::instance::{Failure, Host, Instance, Task};
use crate::plan::{NodeSpec, Plan, PlanSpec, StepSpec};
use crate::retry::RetryPolicy;
use crate::status::Status;
use crate::store::memory::MemoryStore;
use crate::store::{Created, InstanceMeta, Store};

/// A host of pure functions of JSON values; signal payloads come from the inbox read so far.
#[derive(Default)]
pub(super) struct JsonHost {
    pub(super) inbox: HashMap<u64, Vec<u8>>,
}

pub(super) fn num(v: &Value) -> i64 {
    match v {
        Value::Array(xs) => xs.iter().map(num).sum(),
        _ => v.as_i64().unwrap_or(0),
    }
}

impl Host<Value> for JsonHost {
    // fn 0: even?  fn 1: > 100?
    fn condition(&mut self, f: u32, v: &Value) -> Result<bool, Failure> {
        match f {
            0 => Ok(num(v) % 2 == 0),
            1 => Ok(num(v) > 100),
            _ => Err(Failure::new("ValueError", "no such condition")),
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
        Ok((0..num(v).rem_euclid(4)).map(|i| json!(i)).collect())
    }
    fn decode(&mut self, _step: u32, payload: &[u8]) -> Result<Value, Failure> {
        serde_json::from_slice(payload).map_err(|e| Failure::new("CodecError", e.to_string()))
    }
    fn encode_output(&mut self, v: &Value) -> Result<Vec<u8>, Failure> {
        Ok(serde_json::to_vec(v).expect("json"))
    }
    fn signal(&mut self, _wait: u32, seq: u64) -> Result<Value, Failure> {
        let p = self.inbox.get(&seq).ok_or_else(|| Failure::new("CodecError", format!("no signal #{seq}")))?;
        serde_json::from_slice(p).map_err(|e| Failure::new("CodecError", e.to_string()))
    }
    fn text(&mut self, s: &str) -> Value {
        json!(s)
    }
}

/// Step `i` computes `x * (2 if i is even else 1) + i + 1` (lists count as their sum).
pub(super) fn apply(step: u32, v: &Value) -> Value {
    let mul = if step.is_multiple_of(2) { 2 } else { 1 };
    json!(num(v).wrapping_mul(mul).wrapping_add(step as i64 + 1) % 1_000_003)
}

/// What the reference driver did, in order.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Did {
    /// The create, with its first records (decoded).
    Created(Vec<Record>),
    /// A commit went through: its records (decoded) and status.
    Committed(Vec<Record>, Status),
    /// These tasks `(key, attempt)` were handed out.
    Ran(Vec<(String, u32)>),
    /// The inbox was read after `after`; this many signals came back.
    Read { after: u64, found: usize },
    /// Slept in the thread until then.
    Slept(f64),
    /// The policy answered `Wait`.
    Waited(Option<f64>),
    /// The policy answered `Done`.
    Done,
}

/// How a call of [`World::drive`] ended.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) enum End {
    /// The instance finished.
    Done,
    /// Nothing to do before `until` (None: a signal).
    Suspended(Option<f64>),
    /// The driver "crashed" right after a commit (it dropped its `Driving`).
    Crashed,
}

/// The attempts a commit's records note as starting: `(key, attempt)`.
pub(super) fn starts(records: &[Record]) -> Vec<(String, u32)> {
    let mut out = Vec::new();
    for r in records {
        match r {
            Record::Step(s) => out.extend(s.next.iter().cloned()),
            Record::Enqueued(ts) => out.extend(ts.iter().cloned()),
            Record::Decision { .. } => {}
        }
    }
    out
}

/// How many completed step records each key has.
pub(super) fn completions(records: &[Record]) -> HashMap<String, usize> {
    let mut out = HashMap::new();
    for r in records {
        if let Record::Step(s) = r {
            if matches!(s.outcome, Outcome::Completed(_)) {
                *out.entry(s.key.clone()).or_insert(0) += 1;
            }
        }
    }
    out
}

/// A store, a fake clock, a host, and the reference driver's bookkeeping.
pub(super) struct World {
    pub(super) store: MemoryStore,
    pub(super) plan: Arc<Plan>,
    pub(super) id: String,
    pub(super) now: f64,
    pub(super) host: JsonHost,
    pub(super) mode: Mode,
    /// Which steps may run beside others (asked in `Mode::Concurrent` only).
    pub(super) concurrent: fn(u32) -> bool,
    /// Attempts that raise: key -> every attempt up to this one raises (retryably).
    pub(super) fails: HashMap<String, u32>,
    /// Keys whose first attempt raises when `hash(key) % n == 0` (property tests), if set.
    pub(super) flaky: Option<u64>,
    /// How long each attempt takes on the fake clock.
    pub(super) took: f64,
    pub(super) trace: Vec<Did>,
    /// How many times each key's step function was called.
    pub(super) executions: HashMap<String, u32>,
    /// Store commits that went through (the create not counted).
    pub(super) commits: usize,
    /// Crash right after the commit that makes `commits` one of these.
    pub(super) crash_at: Vec<usize>,
    /// On a crash, first call the step functions of the tasks just handed out (never settled).
    pub(super) crash_mid_run: bool,
    /// Tasks handed out and not settled yet (`Mode::Concurrent`).
    pub(super) inflight: Vec<Task<Value>>,
    /// Tasks [`Driving::committed`] handed back, to run before asking again.
    pub(super) handed: Option<Vec<Task<Value>>>,
}

fn fnv(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ b as u64).wrapping_mul(0x0000_0100_0000_01b3))
}

impl World {
    pub(super) fn new(plan: Arc<Plan>, mode: Mode) -> Self {
        World {
            store: MemoryStore::new(),
            plan,
            id: "i1".into(),
            now: 1000.0,
            host: JsonHost::default(),
            mode,
            concurrent: |_| true,
            fails: HashMap::new(),
            flaky: None,
            took: 1.0,
            trace: Vec::new(),
            executions: HashMap::new(),
            commits: 0,
            crash_at: Vec::new(),
            crash_mid_run: false,
            inflight: Vec::new(),
            handed: None,
        }
    }

    fn header(&self, input: &Value) -> Header {
        Header {
            workflow: self.plan.name.clone(),
            version: None,
            plan_hash: self.plan.hash.clone(),
            input: serde_json::to_vec(input).expect("json"),
            created_at: self.now,
            output: None,
            error: None,
            outline: Some(self.plan.outline.clone()),
        }
    }

    /// Creates the instance the way the engine does: its first tasks (as this mode runs them) are
    /// taken before the create, which records their starts; `run: false` only creates it
    /// (pending, for a later resume).
    pub(super) fn start(&mut self, input: Value, run: bool) -> Driving<Value> {
        let header = self.header(&input);
        let mut inst = Instance::start(&self.id, self.plan.clone(), input, self.now, &mut self.host);
        let c = self.concurrent;
        let first = if run { take_wave(&mut inst, self.now, self.mode, &|s| c(s)) } else { Vec::new() };
        let records = inst.take_records();
        let status = if run { Status::Running } else { Status::Pending };
        let meta = InstanceMeta {
            id: self.id.clone(),
            workflow: self.plan.name.clone(),
            plan_hash: self.plan.hash.clone(),
            status,
            version: 1,
            created_at: self.now,
            updated_at: self.now,
            due_at: (!run).then_some(self.now),
            owner: None,
            lease_until: None,
            error: None,
        };
        let raw: Vec<Vec<u8>> = records.iter().map(encode_record).collect();
        let created = self.store.create(&meta, &encode_header(&header), &raw).expect("create");
        assert_eq!(created, Created::New);
        self.trace.push(Did::Created(records));
        let stored = Stored { version: 1, status, due_at: meta.due_at };
        Driving::new(inst, stored, header, self.mode, 0, true).with_first(first)
    }

    /// Rebuilds the instance from what the store holds (a restart, or a resume when due), the way
    /// the engine does: replayed from its log, then handed its inbox.
    pub(super) fn load(&mut self) -> Driving<Value> {
        self.inflight.clear();
        self.handed = None;
        let loaded = self.store.load(&self.id).expect("load").expect("stored");
        let header = crate::codec::decode_header(&loaded.header).expect("header");
        let records: Vec<Record> = loaded.records.iter().map(|r| decode_record(r).expect("record")).collect();
        self.host.inbox.clear();
        for (seq, raw) in &loaded.signals {
            self.host.inbox.insert(*seq, crate::codec::decode_signal(raw).expect("signal").payload);
        }
        let input: Value = serde_json::from_slice(&header.input).expect("input");
        let inst =
            Instance::resume(&self.id, self.plan.clone(), input, header.created_at, self.now, &records, &mut self.host);
        let m = &loaded.meta;
        let stored = Stored { version: m.version, status: m.status, due_at: m.due_at };
        let mut d = Driving::new(inst, stored, header, self.mode, 0, true);
        d.take_inbox(&self.id, loaded.signals).expect("inbox");
        d
    }

    /// Sends signal `name` with a JSON payload to the store's inbox; returns its number.
    pub(super) fn send(&mut self, name: &str, payload: &Value) -> u64 {
        let s = Signal { name: name.into(), payload: serde_json::to_vec(payload).expect("json"), sent_at: self.now };
        self.store.send_signal(&self.id, &encode_signal(&s), self.now).expect("signal")
    }

    /// The whole stored log, decoded.
    pub(super) fn log(&mut self) -> Vec<Record> {
        self.store.records(&self.id, 0).expect("records").iter().map(|r| decode_record(r).expect("record")).collect()
    }

    /// What the store indexes of the instance.
    pub(super) fn meta(&mut self) -> InstanceMeta {
        self.store.get(&self.id).expect("get").expect("stored").meta
    }

    /// Calls the step function of `task` on the fake clock: what its attempt came to.
    pub(super) fn execute(&mut self, task: &Task<Value>) -> Attempt<Value> {
        *self.executions.entry(task.key.clone()).or_insert(0) += 1;
        let scripted = self.fails.get(&task.key).is_some_and(|n| task.attempt <= *n);
        let flaky = self.flaky.is_some_and(|n| task.attempt == 1 && fnv(&task.key).is_multiple_of(n));
        if scripted || flaky {
            return Attempt::Raised { failure: Failure::new("IOError", "flaky"), retryable: true };
        }
        let value = apply(task.step, &task.input);
        let payload = serde_json::to_vec(&value).expect("json");
        Attempt::Returned { value, payload }
    }

    /// Runs `task` to its end and settles it, as the engine does: an attempt that ran past its
    /// step's timeout counts as a `StepTimeout` whatever it returned.
    pub(super) fn run_and_settle(&mut self, d: &mut Driving<Value>, task: Task<Value>) {
        let mut attempt = self.execute(&task);
        self.now += self.took;
        if let (Attempt::Returned { .. }, Some(msg)) = (&attempt, d.overran(&task, self.now)) {
            attempt = Attempt::Raised { failure: Failure::new("StepTimeout", msg), retryable: true };
        }
        d.settle(task, attempt, self.now, &mut self.host);
    }

    /// Settles every task handed out and not settled yet (a concurrent driver whose tasks all
    /// ended before it asked again: one commit for all of them).
    pub(super) fn settle_inflight(&mut self, d: &mut Driving<Value>) {
        for t in std::mem::take(&mut self.inflight) {
            self.run_and_settle(d, t);
        }
    }

    /// Asks the policy once and executes the answer (a `Run` in `Mode::Concurrent` only hands the
    /// tasks out: they are settled by [`World::settle_inflight`]). The tasks a commit hands back
    /// are run by the next call, as the answer the policy would have given.
    pub(super) fn one(&mut self, d: &mut Driving<Value>) -> Did {
        let c = self.concurrent;
        let next = match self.handed.take() {
            Some(tasks) => Next::Run(tasks),
            None => d.next(self.now, &mut self.host, &|s| c(s)),
        };
        let did = match next {
            Next::Commit => {
                let p = d.commit().expect("a commit was asked for").clone();
                self.store.commit(&p.as_commit(&self.id, None)).expect("commit");
                self.handed = d.committed();
                self.commits += 1;
                let records = p.records.iter().map(|r| decode_record(r).expect("record")).collect();
                Did::Committed(records, p.status)
            }
            Next::Run(tasks) => {
                assert!(!tasks.is_empty(), "an empty run");
                let did = Did::Ran(tasks.iter().map(|t| (t.key.clone(), t.attempt)).collect());
                match self.mode {
                    Mode::Sequential => {
                        assert_eq!(tasks.len(), 1, "a sequential driver runs one task at a time");
                        for t in tasks {
                            self.run_and_settle(d, t);
                        }
                    }
                    Mode::Concurrent => self.inflight.extend(tasks),
                }
                did
            }
            Next::ReadInbox { after } => {
                let raw = self.store.signals(&self.id, after).expect("signals");
                let found = raw.len();
                let arrived = d.take_inbox(&self.id, raw).expect("inbox");
                self.host.inbox.extend(arrived.payloads);
                Did::Read { after, found }
            }
            Next::Sleep { until } => {
                assert_eq!(self.mode, Mode::Sequential, "only a sequential driver sleeps");
                self.now = self.now.max(until);
                Did::Slept(until)
            }
            Next::Wait { until } => Did::Waited(until),
            Next::Done => Did::Done,
        };
        self.trace.push(did.clone());
        did
    }

    /// Drives until the instance finishes, has nothing to do but wait, or the driver crashes
    /// (right after a commit in `crash_at`). A concurrent driver settles the tasks it handed out
    /// when the policy has nothing else for it.
    pub(super) fn drive(&mut self, d: &mut Driving<Value>) -> End {
        loop {
            match self.one(d) {
                Did::Committed(..) if self.crash_at.contains(&self.commits) => {
                    if self.crash_mid_run {
                        // the tasks whose starts were just committed run, and the process dies
                        // before their results are taken
                        for t in self.handed.take().unwrap_or_default() {
                            self.execute(&t);
                        }
                    }
                    self.inflight.clear();
                    self.handed = None;
                    return End::Crashed;
                }
                Did::Waited(_) if !self.inflight.is_empty() => self.settle_inflight(d),
                Did::Waited(until) => return End::Suspended(until),
                Did::Done => return End::Done,
                _ => {}
            }
        }
    }

    /// Runs the instance to its end, as an engine would: crashed drivers restart from the store;
    /// a sequential driver leaves a suspended instance and resumes it from the store when it is
    /// due; a concurrent one waits for the timer itself and is then woken.
    pub(super) fn run_to_end(&mut self, d: Driving<Value>) -> Driving<Value> {
        self.run(d, false).0
    }

    /// [`World::run_to_end`], or until the first crash when `stop_on_crash` (then `End::Crashed`
    /// and the driver that crashed, to be dropped).
    pub(super) fn run(&mut self, mut d: Driving<Value>, stop_on_crash: bool) -> (Driving<Value>, End) {
        for _ in 0..100_000 {
            match self.drive(&mut d) {
                End::Done => return (d, End::Done),
                End::Crashed if stop_on_crash => return (d, End::Crashed),
                End::Crashed => d = self.load(),
                End::Suspended(None) => panic!("waits for a signal that never comes: {:?}", self.trace.last()),
                End::Suspended(Some(until)) => {
                    self.now = self.now.max(until);
                    match self.mode {
                        Mode::Sequential => d = self.load(),
                        Mode::Concurrent => d.wake(),
                    }
                }
            }
        }
        panic!("the instance never finished");
    }
}

/// A plan over `nsteps` steps named `s0..`, each with `retry` and `timeout`.
pub(super) fn plan_with(
    root: NodeSpec,
    nsteps: usize,
    retry: Option<RetryPolicy>,
    timeout: Option<f64>,
    workflow_timeout: Option<f64>,
    compensation: Option<u32>,
) -> Arc<Plan> {
    let steps = (0..nsteps).map(|i| StepSpec { name: format!("s{i}"), retry: retry.clone(), timeout }).collect();
    let spec = PlanSpec {
        name: "t".into(),
        version: None,
        steps,
        fns: vec!["even".into(), "big".into()],
        root,
        timeout: workflow_timeout,
        compensation,
    };
    Arc::new(Plan::from_spec(spec).expect("valid plan"))
}

pub(super) fn plan(root: NodeSpec, nsteps: usize) -> Arc<Plan> {
    plan_with(root, nsteps, None, None, None, None)
}

pub(super) fn step(i: u32) -> NodeSpec {
    NodeSpec::Step { step: i }
}

pub(super) fn seq(c: Vec<NodeSpec>) -> NodeSpec {
    NodeSpec::Seq { children: c }
}

pub(super) fn par(c: Vec<NodeSpec>) -> NodeSpec {
    NodeSpec::Parallel { children: c }
}

pub(super) fn wait(name: &str, timeout: Option<f64>, on_timeout: Option<NodeSpec>) -> NodeSpec {
    NodeSpec::WaitSignal { name: name.into(), wait: 0, timeout, on_timeout: on_timeout.map(Box::new) }
}

pub(super) fn sleep(seconds: f64) -> NodeSpec {
    NodeSpec::Sleep { seconds: Some(seconds), until: None }
}

pub(super) fn policy(max_attempts: u32, delay: f64) -> Option<RetryPolicy> {
    Some(RetryPolicy { max_attempts, initial_delay: delay, multiplier: 1.0, max_delay: 1e9, jitter: 0.0 })
}

#[test]
fn the_reference_driver_runs_a_chain() {
    let mut w = World::new(plan(seq(vec![step(0), step(1), step(2)]), 3), Mode::Sequential);
    let d = w.start(json!(5), true);
    let d = w.run_to_end(d);
    // s0: 5*2+1 = 11; s1: 11+2 = 13; s2: 13*2+3 = 29
    assert_eq!(d.inst.output(), Some(&json!(29)));
    assert_eq!(w.meta().status, Status::Completed);
    let header = crate::codec::decode_header(&w.store.get("i1").unwrap().unwrap().header).unwrap();
    assert_eq!(header.output.as_deref(), Some(&b"29"[..]));
}
