//! The instance state machine: a position in a plan plus what has been checkpointed.
//!
//! An [`Instance`] walks its plan with an explicit event queue (no recursion, so a 100,000-step
//! chain needs no stack). Steps become [`Task`]s that a driver runs and hands back through
//! [`Instance::complete`] or [`Instance::fail`]; conditions, routers and the construction of tuples
//! and lists are asked of a [`Host`]. Every outcome is appended to a list of [`Record`]s that the
//! driver takes and commits atomically. Resuming replays the plan against stored records: a
//! recorded step output is decoded instead of run, a recorded decision is reused instead of asked,
//! so no user code runs to rebuild state.

use std::cmp::Ordering;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::sync::Arc;

use crate::codec::{Outcome, Record, StepRecord};
use crate::plan::{Next, Node, NodeId, Plan};
use crate::status::Status;

/// An error raised by user code or by the host, as the core keeps it (text only).
#[derive(Debug, Clone, PartialEq)]
pub struct Failure {
    /// The exception's type name.
    pub error_type: String,
    /// The exception's message.
    pub message: String,
    /// Traceback text, possibly empty.
    pub traceback: String,
}

impl Failure {
    /// A failure with no traceback.
    pub fn new(error_type: &str, message: impl Into<String>) -> Self {
        Failure { error_type: error_type.into(), message: message.into(), traceback: String::new() }
    }

    fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(&serde_json::json!({
            "type": self.error_type, "message": self.message, "traceback": self.traceback,
        }))
        .expect("json")
    }
}

/// Why an instance failed.
#[derive(Debug, Clone, PartialEq)]
pub struct ErrorInfo {
    /// `step`, `condition`, `router`, `definition`, `loop` or `codec`.
    pub kind: &'static str,
    /// The step involved, if any.
    pub step: Option<String>,
    /// The position key involved, if any.
    pub key: Option<String>,
    /// Attempts made of that step.
    pub attempts: u32,
    /// The original error.
    pub failure: Failure,
}

impl ErrorInfo {
    /// The JSON stored in the instance header.
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(&serde_json::json!({
            "kind": self.kind, "step": self.step, "key": self.key, "attempts": self.attempts,
            "type": self.failure.error_type, "message": self.failure.message,
            "traceback": self.failure.traceback,
        }))
        .expect("json")
    }
}

/// What the state machine asks of the world: evaluating pure functions of checkpointed values and
/// building values. Implemented by the Python bindings, and by plain Rust in tests.
pub trait Host<V> {
    /// Evaluates condition `f` (a branch or loop check) on `v`.
    fn condition(&mut self, f: u32, v: &V) -> Result<bool, Failure>;
    /// Evaluates router `f` on `v`; returns a state name.
    fn route(&mut self, f: u32, v: &V) -> Result<String, Failure>;
    /// The label of `v` for a transition table.
    fn label(&mut self, v: &V) -> Result<String, Failure>;
    /// The fan-in value of a parallel block.
    fn tuple(&mut self, items: Vec<V>) -> V;
    /// The fan-in value of a map.
    fn list(&mut self, items: Vec<V>) -> V;
    /// The items a map fans out over.
    fn items(&mut self, v: &V) -> Result<Vec<V>, Failure>;
    /// Decodes a stored output of step `step` (on resume).
    fn decode(&mut self, step: u32, payload: &[u8]) -> Result<V, Failure>;
    /// Encodes the workflow's final output.
    fn encode_output(&mut self, v: &V) -> Result<Vec<u8>, Failure>;
}

/// Where a finished node reports: a frame and a slot in it (`ROOT` for the instance itself).
#[derive(Debug, Clone, Copy, PartialEq)]
struct Cont {
    frame: u32,
    slot: u32,
}

const ROOT: u32 = u32::MAX;

/// One attempt of one step at one position, handed to a driver to run.
#[derive(Debug, Clone)]
pub struct Task<V> {
    /// Index of the step in the plan's step table.
    pub step: u32,
    /// The position key; with the instance id it forms the idempotency key.
    pub key: String,
    /// 1-based attempt number.
    pub attempt: u32,
    /// The step's input.
    pub input: V,
    /// When the driver took it (set by [`Instance::pop_ready`]).
    pub started_at: f64,
    cont: Cont,
}

enum Frame<V> {
    Seq {
        node: NodeId,
        idx: u32,
        key: String,
        cont: Cont,
    },
    Par {
        results: Vec<Option<V>>,
        remaining: u32,
        cont: Cont,
    },
    Map {
        node: NodeId,
        items: Vec<Option<V>>,
        results: Vec<Option<V>>,
        next: u32,
        in_flight: u32,
        key: String,
        cont: Cont,
    },
    Loop {
        node: NodeId,
        iter: u32,
        key: String,
        cont: Cont,
    },
    States {
        node: NodeId,
        cur: u32,
        visits: Vec<u32>,
        key: String,
        cont: Cont,
    },
    Free,
}

enum Event<V> {
    Enter { node: NodeId, input: V, cont: Cont, key: String },
    Finish { cont: Cont, value: V },
}

struct Timer {
    due: f64,
    seq: u64,
}

impl PartialEq for Timer {
    fn eq(&self, o: &Self) -> bool {
        self.cmp(o) == Ordering::Equal
    }
}
impl Eq for Timer {}
impl PartialOrd for Timer {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Timer {
    // reversed: BinaryHeap is a max-heap, we want the earliest first
    fn cmp(&self, o: &Self) -> Ordering {
        o.due.total_cmp(&self.due).then(o.seq.cmp(&self.seq))
    }
}

/// What stored records say about positions, used while resuming.
#[derive(Default)]
struct Replay {
    completed: HashMap<String, Vec<u8>>,
    decisions: HashMap<String, String>,
    /// Highest attempt known to have been handed out (possibly interrupted).
    enqueued: HashMap<String, u32>,
    /// Highest failed attempt and when its retry is due.
    failed: HashMap<String, (u32, Option<f64>)>,
}

impl Replay {
    fn from_records(records: &[Record]) -> Replay {
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

fn child_key(parent: &str, seg: std::fmt::Arguments<'_>) -> String {
    if parent.is_empty() {
        format!("{seg}")
    } else {
        format!("{parent}.{seg}")
    }
}

/// A running workflow instance.
pub struct Instance<V> {
    id: String,
    plan: Arc<Plan>,
    status: Status,
    frames: Vec<Frame<V>>,
    free: Vec<u32>,
    events: VecDeque<Event<V>>,
    ready: VecDeque<Task<V>>,
    timers: BinaryHeap<Timer>,
    timer_tasks: HashMap<u64, Task<V>>,
    timer_seq: u64,
    running: usize,
    records: Vec<Record>,
    next: Vec<(String, u32)>,
    replay: Option<Replay>,
    output: Option<V>,
    output_payload: Option<Vec<u8>>,
    error: Option<ErrorInfo>,
}

impl<V: Clone> Instance<V> {
    /// Starts a new instance on `input`; the first tasks are ready afterwards.
    pub fn start(id: &str, plan: Arc<Plan>, input: V, host: &mut dyn Host<V>) -> Self {
        let mut inst = Self::empty(id, plan, None);
        let root = inst.plan.root;
        inst.events.push_back(Event::Enter {
            node: root,
            input,
            cont: Cont { frame: ROOT, slot: 0 },
            key: String::new(),
        });
        inst.drive(host);
        inst
    }

    /// Rebuilds an instance from its stored records without running user code: recorded outputs
    /// are decoded, recorded decisions reused; unfinished steps become tasks again with a higher
    /// attempt, and pending retries become timers due when they were due.
    pub fn resume(id: &str, plan: Arc<Plan>, input: V, records: &[Record], host: &mut dyn Host<V>) -> Self {
        let mut inst = Self::empty(id, plan, Some(Replay::from_records(records)));
        let root = inst.plan.root;
        inst.events.push_back(Event::Enter {
            node: root,
            input,
            cont: Cont { frame: ROOT, slot: 0 },
            key: String::new(),
        });
        inst.drive(host);
        inst.replay = None;
        inst
    }

    fn empty(id: &str, plan: Arc<Plan>, replay: Option<Replay>) -> Self {
        Instance {
            id: id.to_string(),
            plan,
            status: Status::Running,
            frames: Vec::new(),
            free: Vec::new(),
            events: VecDeque::new(),
            ready: VecDeque::new(),
            timers: BinaryHeap::new(),
            timer_tasks: HashMap::new(),
            timer_seq: 0,
            running: 0,
            records: Vec::new(),
            next: Vec::new(),
            replay,
            output: None,
            output_payload: None,
            error: None,
        }
    }

    /// The instance id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The plan this instance runs on.
    pub fn plan(&self) -> &Arc<Plan> {
        &self.plan
    }

    /// `Running` until the instance completes or fails.
    pub fn status(&self) -> Status {
        self.status
    }

    /// The final output, once completed.
    pub fn output(&self) -> Option<&V> {
        self.output.as_ref()
    }

    /// The encoded final output, once completed.
    pub fn output_payload(&self) -> Option<&[u8]> {
        self.output_payload.as_deref()
    }

    /// Why the instance failed, once failed.
    pub fn error(&self) -> Option<&ErrorInfo> {
        self.error.as_ref()
    }

    /// Tasks ready to run now.
    pub fn ready_len(&self) -> usize {
        self.ready.len()
    }

    /// Tasks handed out and not yet completed or failed.
    pub fn running(&self) -> usize {
        self.running
    }

    /// The earliest time a timer (a retry) is due, if any.
    pub fn next_deadline(&self) -> Option<f64> {
        self.timers.peek().map(|t| t.due)
    }

    /// Moves every timer due at `now` to the ready queue.
    pub fn fire_timers(&mut self, now: f64) {
        while let Some(t) = self.timers.peek() {
            if t.due > now {
                break;
            }
            let t = self.timers.pop().expect("peeked");
            if let Some(task) = self.timer_tasks.remove(&t.seq) {
                self.ready.push_back(task);
            }
        }
    }

    /// Takes the next ready task, stamping its start time.
    #[inline]
    pub fn pop_ready(&mut self, now: f64) -> Option<Task<V>> {
        let mut t = self.ready.pop_front()?;
        t.started_at = now;
        self.running += 1;
        Some(t)
    }

    /// Records that `task` returned `output` (encoded as `payload`) and advances the plan.
    pub fn complete(&mut self, task: Task<V>, output: V, payload: Vec<u8>, now: f64, host: &mut dyn Host<V>) {
        self.running = self.running.saturating_sub(1);
        if self.status.is_finished() {
            return;
        }
        self.records.push(Record::Step(StepRecord {
            step: self.plan.steps[task.step as usize].name.clone(),
            key: task.key,
            attempt: task.attempt,
            started_at: task.started_at,
            finished_at: now,
            outcome: Outcome::Completed(payload),
            next: Vec::new(),
        }));
        self.events.push_back(Event::Finish { cont: task.cont, value: output });
        self.drive(host);
    }

    /// Records that `task` raised. When `retryable` and the step's policy allows another attempt,
    /// schedules it and returns the delay in seconds; otherwise fails the instance and returns None.
    pub fn fail(&mut self, mut task: Task<V>, failure: Failure, retryable: bool, now: f64) -> Option<f64> {
        self.running = self.running.saturating_sub(1);
        if self.status.is_finished() {
            return None;
        }
        let policy = self.plan.retry(task.step);
        let step_name = self.plan.steps[task.step as usize].name.clone();
        let retry = retryable && policy.allows_retry(task.attempt);
        let delay = if retry { Some(policy.delay(task.attempt, &format!("{}/{}", self.id, task.key))) } else { None };
        let retry_at = delay.map(|d| now + d);
        self.records.push(Record::Step(StepRecord {
            key: task.key.clone(),
            step: step_name.clone(),
            attempt: task.attempt,
            started_at: task.started_at,
            finished_at: now,
            outcome: Outcome::Failed { error: failure.to_json(), retry_at },
            next: Vec::new(),
        }));
        match retry_at {
            Some(at) => {
                task.attempt += 1;
                self.push_timer(at, task);
            }
            None => self.fail_instance(ErrorInfo {
                kind: "step",
                step: Some(step_name),
                key: Some(task.key),
                attempts: task.attempt,
                failure,
            }),
        }
        delay
    }

    /// Takes the records produced since the last call, for the driver to commit atomically. Tasks
    /// enqueued meanwhile are attached to the last step record (or to an `Enqueued` record), so a
    /// crash before they finish is seen on resume as an interrupted attempt.
    pub fn take_records(&mut self) -> Vec<Record> {
        if !self.next.is_empty() {
            let next = std::mem::take(&mut self.next);
            match self.records.iter_mut().rev().find_map(|r| match r {
                Record::Step(s) => Some(s),
                _ => None,
            }) {
                Some(s) => s.next.extend(next),
                None => self.records.push(Record::Enqueued(next)),
            }
        }
        std::mem::take(&mut self.records)
    }

    /// Whether there are records not yet taken.
    pub fn has_records(&self) -> bool {
        !self.records.is_empty() || !self.next.is_empty()
    }

    fn push_timer(&mut self, due: f64, task: Task<V>) {
        self.timer_seq += 1;
        self.timer_tasks.insert(self.timer_seq, task);
        self.timers.push(Timer { due, seq: self.timer_seq });
    }

    fn fail_instance(&mut self, info: ErrorInfo) {
        self.status = Status::Failed;
        self.error = Some(info);
        self.events.clear();
        self.ready.clear();
        self.timers.clear();
        self.timer_tasks.clear();
        self.next.clear();
    }

    fn fail_with(&mut self, kind: &'static str, key: &str, failure: Failure) {
        self.fail_instance(ErrorInfo { kind, step: None, key: Some(key.to_string()), attempts: 0, failure });
    }

    fn alloc(&mut self, f: Frame<V>) -> u32 {
        match self.free.pop() {
            Some(i) => {
                self.frames[i as usize] = f;
                i
            }
            None => {
                self.frames.push(f);
                (self.frames.len() - 1) as u32
            }
        }
    }

    fn release(&mut self, f: u32) {
        self.frames[f as usize] = Frame::Free;
        self.free.push(f);
    }

    fn drive(&mut self, host: &mut dyn Host<V>) {
        while let Some(ev) = self.events.pop_front() {
            if self.status.is_finished() {
                self.events.clear();
                return;
            }
            match ev {
                Event::Enter { node, input, cont, key } => self.enter(node, input, cont, key, host),
                Event::Finish { cont, value } => self.finish(cont, value, host),
            }
        }
    }

    /// A decision recorded earlier (on resume), or a fresh one, recorded now.
    fn decide(
        &mut self,
        key: String,
        ask: impl FnOnce(&mut dyn Host<V>) -> Result<String, Failure>,
        host: &mut dyn Host<V>,
    ) -> Result<String, (String, Failure)> {
        if let Some(v) = self.replay.as_ref().and_then(|r| r.decisions.get(&key)) {
            return Ok(v.clone());
        }
        match ask(host) {
            Ok(v) => {
                self.records.push(Record::Decision { key, value: v.clone() });
                Ok(v)
            }
            Err(f) => Err((key, f)),
        }
    }

    fn enter(&mut self, node: NodeId, input: V, cont: Cont, key: String, host: &mut dyn Host<V>) {
        let plan = Arc::clone(&self.plan);
        match plan.node(node) {
            Node::Step { step } => self.enter_step(*step, input, cont, key, host),
            Node::Seq { children } => {
                let first = children[0];
                let f = self.alloc(Frame::Seq { node, idx: 0, key: key.clone(), cont });
                let k = child_key(&key, format_args!("0"));
                self.events.push_back(Event::Enter { node: first, input, cont: Cont { frame: f, slot: 0 }, key: k });
            }
            Node::Parallel { children } => {
                let n = children.len();
                let f = self.alloc(Frame::Par { results: vec![None; n], remaining: n as u32, cont });
                for (i, c) in children.iter().enumerate() {
                    let k = child_key(&key, format_args!("p{i}"));
                    self.events.push_back(Event::Enter {
                        node: *c,
                        input: input.clone(),
                        cont: Cont { frame: f, slot: i as u32 },
                        key: k,
                    });
                }
            }
            Node::Map { body, concurrency } => {
                let items = match host.items(&input) {
                    Ok(items) => items,
                    Err(f) => return self.fail_with("codec", &key, f),
                };
                if items.is_empty() {
                    let v = host.list(Vec::new());
                    self.events.push_back(Event::Finish { cont, value: v });
                    return;
                }
                let n = items.len();
                let launch = (*concurrency as usize).min(n);
                let mut items: Vec<Option<V>> = items.into_iter().map(Some).collect();
                let first: Vec<V> = items[..launch].iter_mut().map(|x| x.take().expect("fresh")).collect();
                let f = self.alloc(Frame::Map {
                    node,
                    items,
                    results: vec![None; n],
                    next: launch as u32,
                    in_flight: launch as u32,
                    key: key.clone(),
                    cont,
                });
                for (i, v) in first.into_iter().enumerate() {
                    let k = child_key(&key, format_args!("m{i}"));
                    self.events.push_back(Event::Enter {
                        node: *body,
                        input: v,
                        cont: Cont { frame: f, slot: i as u32 },
                        key: k,
                    });
                }
            }
            Node::Branch { cond, then, otherwise } => {
                let (cond, then, otherwise) = (*cond, *then, *otherwise);
                let dkey = format!("{key}?");
                let decided = self.decide(dkey, |h| h.condition(cond, &input).map(|b| b.to_string()), host);
                match decided.as_deref() {
                    Ok("true") => {
                        let k = child_key(&key, format_args!("t"));
                        self.events.push_back(Event::Enter { node: then, input, cont, key: k });
                    }
                    Ok(_) => match otherwise {
                        Some(o) => {
                            let k = child_key(&key, format_args!("f"));
                            self.events.push_back(Event::Enter { node: o, input, cont, key: k });
                        }
                        None => self.events.push_back(Event::Finish { cont, value: input }),
                    },
                    Err((k, f)) => self.fail_with("condition", k, f.clone()),
                }
            }
            Node::Loop { body, .. } => {
                let body = *body;
                let f = self.alloc(Frame::Loop { node, iter: 0, key: key.clone(), cont });
                let k = child_key(&key, format_args!("i0"));
                self.events.push_back(Event::Enter { node: body, input, cont: Cont { frame: f, slot: 0 }, key: k });
            }
            Node::States { start, states } => {
                let start = *start;
                let f = self.alloc(Frame::States { node, cur: start, visits: vec![0; states.len()], key, cont });
                self.enter_state(f, start, input);
            }
            Node::Sub { body, .. } => {
                self.events.push_back(Event::Enter { node: *body, input, cont, key });
            }
        }
    }

    fn enter_step(&mut self, step: u32, input: V, cont: Cont, key: String, host: &mut dyn Host<V>) {
        let mut attempt = 1;
        let mut due = None;
        if let Some(r) = &self.replay {
            if let Some(p) = r.completed.get(&key) {
                match host.decode(step, p) {
                    Ok(v) => self.events.push_back(Event::Finish { cont, value: v }),
                    Err(f) => {
                        let name = self.plan.steps[step as usize].name.clone();
                        self.fail_instance(ErrorInfo {
                            kind: "codec",
                            step: Some(name),
                            key: Some(key),
                            attempts: 0,
                            failure: f,
                        });
                    }
                }
                return;
            }
            let enq = r.enqueued.get(&key).copied().unwrap_or(0);
            let (failed, retry_at) = r.failed.get(&key).copied().unwrap_or((0, None));
            if enq > failed {
                attempt = enq + 1; // handed out, never finished: it was interrupted
            } else if failed > 0 {
                attempt = failed + 1;
                due = retry_at;
            }
        }
        let task = Task { step, key, attempt, input, started_at: 0.0, cont };
        match due {
            Some(at) => self.push_timer(at, task),
            None => {
                self.next.push((task.key.clone(), attempt));
                self.ready.push_back(task);
            }
        }
    }

    fn enter_state(&mut self, f: u32, state: u32, input: V) {
        let plan = Arc::clone(&self.plan);
        let Frame::States { node, cur, visits, key, .. } = &mut self.frames[f as usize] else {
            unreachable!("enter_state on a non-state frame")
        };
        let Node::States { states, .. } = plan.node(*node) else { unreachable!("states frame on a non-states node") };
        *cur = state;
        let visit = visits[state as usize];
        visits[state as usize] += 1;
        let s = &states[state as usize];
        let k = child_key(key, format_args!("{}#{visit}", s.name));
        self.events.push_back(Event::Enter { node: s.body, input, cont: Cont { frame: f, slot: state }, key: k });
    }

    fn finish(&mut self, cont: Cont, value: V, host: &mut dyn Host<V>) {
        if cont.frame == ROOT {
            return self.finish_root(value, host);
        }
        let plan = Arc::clone(&self.plan);
        let f = cont.frame;
        match &mut self.frames[f as usize] {
            Frame::Seq { node, idx, key, cont: parent } => {
                let Node::Seq { children } = plan.node(*node) else { unreachable!() };
                *idx += 1;
                if (*idx as usize) == children.len() {
                    let parent = *parent;
                    self.release(f);
                    self.events.push_back(Event::Finish { cont: parent, value });
                } else {
                    let i = *idx;
                    let k = child_key(key, format_args!("{i}"));
                    self.events.push_back(Event::Enter {
                        node: children[i as usize],
                        input: value,
                        cont: Cont { frame: f, slot: i },
                        key: k,
                    });
                }
            }
            Frame::Par { results, remaining, cont: parent } => {
                results[cont.slot as usize] = Some(value);
                *remaining -= 1;
                if *remaining == 0 {
                    let parent = *parent;
                    let items: Vec<V> = results.iter_mut().map(|r| r.take().expect("every branch finished")).collect();
                    self.release(f);
                    let v = host.tuple(items);
                    self.events.push_back(Event::Finish { cont: parent, value: v });
                }
            }
            Frame::Map { node, items, results, next, in_flight, key, cont: parent } => {
                results[cont.slot as usize] = Some(value);
                *in_flight -= 1;
                if (*next as usize) < items.len() {
                    let i = *next;
                    *next += 1;
                    *in_flight += 1;
                    let Node::Map { body, .. } = plan.node(*node) else { unreachable!() };
                    let v = items[i as usize].take().expect("not launched yet");
                    let k = child_key(key, format_args!("m{i}"));
                    self.events.push_back(Event::Enter {
                        node: *body,
                        input: v,
                        cont: Cont { frame: f, slot: i },
                        key: k,
                    });
                } else if *in_flight == 0 {
                    let parent = *parent;
                    let out: Vec<V> = results.iter_mut().map(|r| r.take().expect("every item finished")).collect();
                    self.release(f);
                    let v = host.list(out);
                    self.events.push_back(Event::Finish { cont: parent, value: v });
                }
            }
            Frame::Loop { node, iter, key, cont: parent } => {
                let Node::Loop { body, until, max_iterations } = plan.node(*node) else { unreachable!() };
                let (body, until, max) = (*body, *until, *max_iterations);
                let i = *iter;
                let key = key.clone();
                let parent = *parent;
                let dkey = child_key(&key, format_args!("u{i}?"));
                match self.decide(dkey, |h| h.condition(until, &value).map(|b| b.to_string()), host).as_deref() {
                    Ok("true") => {
                        self.release(f);
                        self.events.push_back(Event::Finish { cont: parent, value });
                    }
                    Ok(_) if i + 1 >= max => {
                        let msg = format!(
                            "loop at position {:?} ran max_iterations={max} times without its condition {} holding",
                            if key.is_empty() { "root" } else { &key },
                            plan.fns[until as usize]
                        );
                        self.fail_with("loop", &key, Failure::new("LoopLimitExceeded", msg));
                    }
                    Ok(_) => {
                        if let Frame::Loop { iter, .. } = &mut self.frames[f as usize] {
                            *iter = i + 1;
                        }
                        let k = child_key(&key, format_args!("i{}", i + 1));
                        self.events.push_back(Event::Enter {
                            node: body,
                            input: value,
                            cont: Cont { frame: f, slot: 0 },
                            key: k,
                        });
                    }
                    Err((k, e)) => self.fail_with("condition", k, e.clone()),
                }
            }
            Frame::States { node, cur, visits, key, cont: parent } => {
                let Node::States { states, .. } = plan.node(*node) else { unreachable!() };
                let st = &states[*cur as usize];
                let parent = *parent;
                let skey = child_key(key, format_args!("{}#{}", st.name, visits[*cur as usize] - 1));
                match &st.next {
                    Next::End => {
                        self.release(f);
                        self.events.push_back(Event::Finish { cont: parent, value });
                    }
                    Next::Goto(t) => self.enter_state(f, *t, value),
                    Next::Labels(table) => match host.label(&value) {
                        Ok(label) => match table.iter().find(|(l, _)| *l == label) {
                            Some((_, t)) => self.enter_state(f, *t, value),
                            None => {
                                let known: Vec<&str> = table.iter().map(|(l, _)| l.as_str()).collect();
                                let msg = format!(
                                    "state {:?} produced label {label:?}, which is not in its transitions [{}]",
                                    st.name,
                                    known.join(", ")
                                );
                                self.fail_with("definition", &skey, Failure::new("DefinitionError", msg));
                            }
                        },
                        Err(e) => self.fail_with("definition", &skey, e),
                    },
                    Next::Router { router, targets } => {
                        let router = *router;
                        let name = st.name.clone();
                        let dkey = format!("{skey}?");
                        match self.decide(dkey, |h| h.route(router, &value), host) {
                            Ok(target) => {
                                let found = states.iter().position(|s| s.name == target).map(|i| i as u32);
                                let allowed = match (found, targets) {
                                    (Some(i), Some(ts)) => ts.contains(&i),
                                    (Some(_), None) => true,
                                    (None, _) => false,
                                };
                                if allowed {
                                    self.enter_state(f, found.expect("allowed implies found"), value);
                                } else {
                                    let msg = format!(
                                        "router {} of state {name:?} returned {target:?}, which is not {}",
                                        plan.fns[router as usize],
                                        if found.is_some() {
                                            "among its declared targets"
                                        } else {
                                            "a state of this workflow"
                                        }
                                    );
                                    self.fail_with("definition", &skey, Failure::new("DefinitionError", msg));
                                }
                            }
                            Err((k, e)) => self.fail_with("router", &k, e),
                        }
                    }
                }
            }
            Frame::Free => unreachable!("finish on a freed frame"),
        }
    }

    fn finish_root(&mut self, value: V, host: &mut dyn Host<V>) {
        match host.encode_output(&value) {
            Ok(p) => {
                self.output_payload = Some(p);
                self.output = Some(value);
                self.status = Status::Completed;
                self.ready.clear();
                self.timers.clear();
                self.timer_tasks.clear();
            }
            Err(f) => self.fail_with("codec", "", f),
        }
    }
}

#[cfg(test)]
#[path = "instance_tests.rs"]
mod tests;
