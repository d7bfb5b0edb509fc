//! The instance state machine: a position in a plan plus what has been checkpointed.
//!
//! An [`Instance`] walks its plan with an explicit event queue (no recursion, so a 100,000-step
//! chain needs no stack). Steps become [`Task`]s that a driver runs and hands back through
//! [`Instance::complete`] or [`Instance::fail`]; conditions, routers and the construction of tuples
//! and lists are asked of a [`Host`]. Every outcome is appended to a list of [`Record`]s that the
//! driver takes and commits atomically. Resuming replays the plan against stored records: a
//! recorded step output is decoded instead of run, a recorded decision is reused instead of asked,
//! so no user code runs to rebuild state.

use std::collections::{BinaryHeap, HashMap, HashSet, VecDeque};
use std::sync::Arc;

use crate::codec::{Outcome, Record, StepRecord};
use crate::plan::{NodeId, Plan};
use crate::status::Status;

mod host;
pub mod inspect;
mod replay;
mod timers;
pub(crate) use timers::SLEPT;
mod walk;

pub use host::{ErrorInfo, Failure, Host};
use replay::Replay;
use timers::{Due, Timer};

/// Where a finished node reports: a frame and a slot in it (`ROOT` for the instance itself).
#[derive(Debug, Clone, Copy, PartialEq)]
struct Cont {
    frame: u32,
    slot: u32,
}

const ROOT: u32 = u32::MAX;
/// The continuation of the compensation step run on cancel.
const CANCEL: u32 = u32::MAX - 1;
/// The position key of the compensation step.
pub(crate) const CANCEL_KEY: &str = "cancel";
/// The decision key that records a cancellation (its value is the reason).
pub(crate) const CANCEL_DECISION: &str = "!cancel";

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
    /// How many attempts directly before this one were interrupted (started, never finished:
    /// their process died); 0 for a first attempt or a retry after a recorded failure. A worker
    /// that hands steps to other processes names the remote run after `attempt - interrupted`,
    /// so a takeover finds the run its predecessor handed out.
    pub interrupted: u32,
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
    timer_items: HashMap<u64, Due<V>>,
    timer_seq: u64,
    now: f64,
    waits: Vec<Waiter<V>>,
    inbox: Vec<(u64, String)>,
    consumed: HashSet<u64>,
    cancelling: bool,
    /// When the workflow times out (its creation time plus the plan's timeout), if it can.
    deadline: Option<f64>,
    running: usize,
    records: Vec<Record>,
    next: Vec<(String, u32)>,
    replay: Option<Replay>,
    output: Option<V>,
    output_payload: Option<Vec<u8>>,
    error: Option<ErrorInfo>,
}

/// A wait for a signal that has not arrived yet.
struct Waiter<V> {
    key: String,
    name: String,
    wait: u32,
    node: NodeId,
    input: V,
    cont: Cont,
    timer: Option<u64>,
}

impl<V: Clone> Instance<V> {
    /// Starts a new instance on `input` at time `now`; the first tasks are ready afterwards.
    pub fn start(id: &str, plan: Arc<Plan>, input: V, now: f64, host: &mut dyn Host<V>) -> Self {
        let mut inst = Self::empty(id, plan, None, now);
        inst.begin(input, now, host);
        inst
    }

    /// Rebuilds an instance from its stored records without running user code: recorded outputs
    /// are decoded, recorded decisions reused; unfinished steps become tasks again with a higher
    /// attempt, and pending retries, sleeps and wait timeouts become timers due when they were due.
    /// `created_at` is when the instance started (its workflow timeout counts from there).
    pub fn resume(
        id: &str,
        plan: Arc<Plan>,
        input: V,
        created_at: f64,
        now: f64,
        records: &[Record],
        host: &mut dyn Host<V>,
    ) -> Self {
        Self::rebuild(id, plan, input, created_at, now, records, false, host)
    }

    /// Rebuilds an instance as [`Instance::resume`] does, except that with `running` the last
    /// started attempt of an unfinished step is taken as still running (not interrupted): it is
    /// ready again with its own attempt number and nothing is charged. A worker that runs one
    /// step of an instance another worker holds rebuilds it so, to find that step's input.
    #[allow(clippy::too_many_arguments)] // resume's arguments plus the one flag
    pub fn rebuild(
        id: &str,
        plan: Arc<Plan>,
        input: V,
        created_at: f64,
        now: f64,
        records: &[Record],
        running: bool,
        host: &mut dyn Host<V>,
    ) -> Self {
        let mut replay = Replay::from_records(records);
        replay.running = running;
        let mut inst = Self::empty(id, plan, None, now);
        // consumed: `<key>@` = seq; rejected (also never offered again): `<key>@r<seq>`
        let rejected = replay.decisions.keys().filter_map(|k| k.rsplit_once("@r")?.1.parse::<u64>().ok());
        inst.consumed = replay
            .decisions
            .iter()
            .filter(|(k, _)| k.ends_with('@'))
            .filter_map(|(_, v)| v.parse::<u64>().ok())
            .chain(rejected)
            .collect();
        let cancel = replay.decisions.get(CANCEL_DECISION).cloned();
        inst.replay = Some(replay);
        inst.begin(input, created_at, host);
        if let Some(reason) = cancel {
            inst.begin_cancel(&reason, host);
        }
        inst.replay = None;
        inst
    }

    fn begin(&mut self, input: V, created_at: f64, host: &mut dyn Host<V>) {
        if let Some(t) = self.plan.timeout {
            self.deadline = Some(created_at + t);
            self.push_timer(created_at + t, Due::WorkflowTimeout);
        }
        let root = self.plan.root;
        self.events.push_back(Event::Enter {
            node: root,
            input,
            cont: Cont { frame: ROOT, slot: 0 },
            key: String::new(),
        });
        self.drive(host);
    }

    fn empty(id: &str, plan: Arc<Plan>, replay: Option<Replay>, now: f64) -> Self {
        Instance {
            id: id.to_string(),
            plan,
            status: Status::Running,
            frames: Vec::new(),
            free: Vec::new(),
            events: VecDeque::new(),
            ready: VecDeque::new(),
            timers: BinaryHeap::new(),
            timer_items: HashMap::new(),
            timer_seq: 0,
            now,
            waits: Vec::new(),
            inbox: Vec::new(),
            consumed: HashSet::new(),
            cancelling: false,
            deadline: None,
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

    /// Takes the ready task at position `key`, stamping its start time, without noting a start
    /// (see [`Instance::rebuild`]: the attempt was started, and recorded, by its holder).
    pub fn take_ready(&mut self, key: &str, now: f64) -> Option<Task<V>> {
        let i = self.ready.iter().position(|t| t.key == key)?;
        let mut t = self.ready.remove(i)?;
        t.started_at = now;
        Some(t)
    }

    /// Takes the next ready task, stamping its start time and noting that this attempt starts:
    /// the note goes into the next [`Instance::take_records`], which the driver commits before it
    /// runs the task. Only attempts handed out here count as started (a resume after a crash
    /// charges them as interrupted); a task that stays ready was never charged.
    #[inline]
    pub fn pop_ready(&mut self, now: f64) -> Option<Task<V>> {
        let mut t = self.ready.pop_front()?;
        t.started_at = now;
        self.running += 1;
        self.next.push((t.key.clone(), t.attempt));
        Some(t)
    }

    /// Records that `task` returned `output` (encoded as `payload`) and advances the plan.
    pub fn complete(&mut self, task: Task<V>, output: V, payload: Vec<u8>, now: f64, host: &mut dyn Host<V>) {
        self.running = self.running.saturating_sub(1);
        self.now = self.now.max(now);
        if self.status.is_finished() || (self.cancelling && task.key != CANCEL_KEY) {
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
        if self.overdue(now) {
            // the attempt finished past the workflow's deadline: it is recorded, and the
            // workflow times out instead of going on
            self.time_out_workflow();
            return;
        }
        self.events.push_back(Event::Finish { cont: task.cont, value: output });
        self.drive(host);
    }

    /// Whether `now` is past the workflow's deadline (a cancellation's compensation has none).
    fn overdue(&self, now: f64) -> bool {
        !self.cancelling && self.deadline.is_some_and(|d| now >= d)
    }

    /// The workflow's deadline, if it has a timeout and is not being cancelled.
    pub fn workflow_deadline(&self) -> Option<f64> {
        if self.cancelling || self.status.is_finished() {
            None
        } else {
            self.deadline
        }
    }

    /// Records that `task` raised. When `retryable` and the step's policy allows another attempt,
    /// schedules it and returns the delay in seconds; otherwise fails the instance and returns None.
    pub fn fail(&mut self, mut task: Task<V>, failure: Failure, retryable: bool, now: f64) -> Option<f64> {
        self.running = self.running.saturating_sub(1);
        self.now = self.now.max(now);
        if self.status.is_finished() || (self.cancelling && task.key != CANCEL_KEY) {
            return None;
        }
        let policy = self.plan.retry(task.step);
        let step_name = self.plan.steps[task.step as usize].name.clone();
        let overdue = self.overdue(now);
        let retry = retryable && !overdue && policy.allows_retry(task.attempt);
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
        if overdue {
            self.time_out_workflow();
            return None;
        }
        match retry_at {
            Some(at) => {
                task.attempt += 1;
                self.push_timer(at, Due::Retry(task));
            }
            None if task.key == CANCEL_KEY && self.cancelling => {
                // the compensation gave up: the instance is cancelled all the same, with the error
                self.status = Status::Cancelled;
                self.error = Some(ErrorInfo {
                    kind: "compensation",
                    step: Some(step_name),
                    key: Some(task.key),
                    attempts: task.attempt,
                    failure,
                });
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

    /// Takes the records produced since the last call, for the driver to commit atomically. The
    /// attempts started meanwhile ([`Instance::pop_ready`]) are attached to the last step record
    /// (or to an `Enqueued` record), so a crash before they finish is seen on resume as an
    /// interrupted attempt.
    pub fn take_records(&mut self) -> Vec<Record> {
        if !self.next.is_empty() {
            let next = std::mem::take(&mut self.next);
            match self.records.iter_mut().rev().find_map(|r| match r {
                Record::Step(s) => Some(s),
                _ => None,
            }) {
                Some(s) if s.next.is_empty() => s.next = next,
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

    /// Cancels the instance: records the request, drops everything pending, and runs the
    /// workflow's compensation step (with the reason as its input) if it has one.
    pub fn cancel(&mut self, reason: &str, now: f64, host: &mut dyn Host<V>) {
        self.now = self.now.max(now);
        if self.status.is_finished() || self.cancelling {
            return;
        }
        self.records.push(Record::Decision { key: CANCEL_DECISION.into(), value: reason.into() });
        self.begin_cancel(reason, host);
    }

    /// Whether a cancellation is under way (the compensation step runs).
    pub fn is_cancelling(&self) -> bool {
        self.cancelling
    }

    fn begin_cancel(&mut self, reason: &str, host: &mut dyn Host<V>) {
        self.clear_pending();
        match self.plan.compensation {
            None => self.status = Status::Cancelled,
            Some(step) => {
                self.cancelling = true;
                let value = host.text(reason);
                self.enter_step(step, value, Cont { frame: CANCEL, slot: 0 }, CANCEL_KEY.to_string(), host);
                self.drive(host);
            }
        }
    }

    fn clear_pending(&mut self) {
        self.events.clear();
        self.ready.clear();
        self.timers.clear();
        self.timer_items.clear();
        self.waits.clear();
        // `next` stays: it notes attempts that did start, which a resume must still count
    }

    fn fail_instance(&mut self, info: ErrorInfo) {
        self.status = Status::Failed;
        self.error = Some(info);
        self.clear_pending();
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
}

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_rejected;
#[cfg(test)]
mod tests_replay;
#[cfg(test)]
mod tests_waiting;
