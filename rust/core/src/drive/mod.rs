//! The driving policy: given an instance and `now`, what a driver does next.
//!
//! A [`Driving`] wraps an [`Instance`] with what the store holds of it (version, status, due
//! time) and answers [`Driving::next`] with one [`Next`]: persist this commit, run these tasks,
//! read the inbox, sleep until a retry, wait for a timer or a signal, or stop. Drivers only
//! execute those answers and report back ([`Driving::committed`], [`Driving::settle`],
//! [`Driving::take_inbox`]); none of them decides anything on its own. The rules live here once:
//!
//! - **Commit before run**: tasks are taken (which notes that their attempts start) and handed
//!   out only after the commit that records those starts, together with whatever the previous
//!   step recorded, so a step costs one commit, a finished step never runs again after a crash,
//!   and a task that never started is never charged an attempt.
//! - **What runs together**: a synchronous driver runs one task at a time; a concurrent one takes
//!   every ready task that may run beside others, up to and including the first that may not
//!   (sync steps run one at a time, so those after it stay ready, and uncharged, until it ends).
//! - **Group commit**: settling records outcomes without committing; the next [`Driving::next`]
//!   commits everything that finished meanwhile in one transaction.
//! - **Cancellation wins**: a cancellation requested while a step ran is applied before that
//!   step's outcome is taken, so a `cancel()` in time is never overtaken by completion.
//! - **Step timeouts**: an attempt that ran past its step's timeout counts as a `StepTimeout`
//!   whatever it returned ([`Driving::overran`]); an async step's budget is its timeout capped by
//!   the workflow's deadline ([`Driving::budget`]).
//! - **A last look before suspending**: a driver reads the inbox once more before it leaves an
//!   instance waiting for a signal, so a signal sent meanwhile is never left unnoticed.
//! - **Waiting**: a synchronous driver sleeps in its thread for a retry due before any other
//!   timer, and leaves sleeps and waits (which may last months) suspended in the store.

use crate::codec::{encode_header, encode_record, Header};
use crate::error::Result;
use crate::instance::{Failure, Host, Instance, Task};
use crate::status::Status;
use crate::store::{Commit, ERROR_SUMMARY_MAX};

mod inbox;
pub use inbox::{cancel_reason, sort_inbox, Inbox, CANCEL_SIGNAL};

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_cancel;
#[cfg(test)]
mod tests_commit;
#[cfg(test)]
mod tests_inbox;
#[cfg(test)]
mod tests_looks;
#[cfg(test)]
mod tests_prop;

/// What the store holds of an instance, as last loaded or committed.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Stored {
    /// The version (1 after the create).
    pub version: u64,
    /// The indexed status.
    pub status: Status,
    /// The indexed due time.
    pub due_at: Option<f64>,
}

/// A commit the policy asks for, owned (the driver borrows it as a [`Commit`]).
#[derive(Debug, Clone, PartialEq)]
pub struct Pending {
    /// The version the store must still hold.
    pub expected_version: u64,
    /// The new status.
    pub status: Status,
    /// Commit time.
    pub updated_at: f64,
    /// The new due time.
    pub due_at: Option<f64>,
    /// The final header, when the instance finishes.
    pub header: Option<Vec<u8>>,
    /// The records, encoded.
    pub records: Vec<Vec<u8>>,
    /// The highest inbox number seen.
    pub signals_seen: u64,
    /// The failure summary, when the instance failed.
    pub error: Option<String>,
}

impl Pending {
    /// The store's view of this commit, for instance `id` written by `owner`.
    pub fn as_commit<'a>(&'a self, id: &'a str, owner: Option<&'a str>) -> Commit<'a> {
        Commit {
            id,
            expected_version: self.expected_version,
            status: self.status,
            updated_at: self.updated_at,
            due_at: self.due_at,
            header: self.header.as_deref(),
            records: &self.records,
            signals_seen: self.signals_seen,
            owner,
            error: self.error.as_deref(),
        }
    }
}

/// What a driver does next.
#[derive(Debug)]
pub enum Next<V> {
    /// Persist [`Driving::commit`], then report [`Driving::committed`] (or reload the instance
    /// on a conflict), then ask again.
    Commit,
    /// Run these tasks (their starts are committed) and [`Driving::settle`] each.
    Run(Vec<Task<V>>),
    /// Read the inbox signals numbered above `after` and hand them to [`Driving::take_inbox`].
    ReadInbox { after: u64 },
    /// A retry is due before any other timer: wait in this thread until `until`, then ask again
    /// (synchronous drivers only).
    Sleep { until: f64 },
    /// Nothing to do before a timer (`until`), a signal or a running task's end. A synchronous
    /// driver leaves the instance suspended; a concurrent one waits for whichever comes first.
    Wait { until: Option<f64> },
    /// The instance finished (and its end is committed).
    Done,
}

/// How a driver runs tasks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// One task at a time, in the caller's thread; retries are waited for there.
    Sequential,
    /// Tasks that may run beside others run together (an asyncio driver).
    Concurrent,
}

/// What became of a task's attempt, as the driver saw it.
#[derive(Debug)]
pub enum Attempt<V> {
    /// It returned `value`, encoded as `payload`.
    Returned { value: V, payload: Vec<u8> },
    /// It raised; `retryable` is the step's retry policy's verdict on the exception.
    Raised { failure: Failure, retryable: bool },
    /// It stopped because the instance is being cancelled (its result is ignored).
    Stopped,
}

/// Something an observer may want to know, in the order it happened.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// An attempt is about to run.
    StepStarted { step: u32, key: String, attempt: u32 },
    /// An attempt returned (`duration` in seconds on the engine's clock).
    StepCompleted { step: u32, key: String, attempt: u32, duration: f64 },
    /// An attempt raised; `retrying` says whether another attempt is scheduled.
    StepFailed { step: u32, key: String, attempt: u32, duration: f64, error: String, retrying: bool },
}

/// Signals read from the inbox, sorted out ([`Driving::take_inbox`]).
#[derive(Debug, Default)]
pub struct Arrivals {
    /// `(seq, payload)` of the signals new to this driver, for the host to decode.
    pub payloads: Vec<(u64, Vec<u8>)>,
    /// The reason of a persisted cancellation request, if one was found.
    pub cancel: Option<String>,
}

/// One instance being driven: the state machine, what the store holds of it, and the policy.
pub struct Driving<V> {
    /// The state machine.
    pub inst: Instance<V>,
    stored: Stored,
    header: Header,
    mode: Mode,
    /// Tasks taken whose starts are in the commit asked for and not yet acknowledged.
    staged: Vec<Task<V>>,
    /// The commit asked for, until acknowledged.
    asked: Option<Pending>,
    /// A cancellation asked for and not applied yet.
    cancel: Option<String>,
    /// The highest inbox number read.
    inbox_read: u64,
    /// The highest inbox number of an internal record read (see [`Inbox::internal`]).
    internal_seen: u64,
    /// Whether the inbox was read since the instance last moved.
    looked: bool,
    /// Whether the driver was woken, so the inbox is read whatever the instance waits for.
    woken: bool,
    /// Collected events, when observed.
    events: Option<Vec<Event>>,
}

impl<V: Clone> Driving<V> {
    /// Drives `inst`, of which the store holds `stored`; `header` is its header record (kept for
    /// the final commit), `inbox_read` the highest inbox number already handed to it.
    pub fn new(inst: Instance<V>, stored: Stored, header: Header, mode: Mode, inbox_read: u64, observed: bool) -> Self {
        Driving {
            inst,
            stored,
            header,
            mode,
            staged: Vec::new(),
            asked: None,
            cancel: None,
            inbox_read,
            internal_seen: 0,
            looked: false,
            woken: false,
            events: observed.then(Vec::new),
        }
    }

    /// A new instance whose first tasks were taken ([`take_wave`]) before the create, which
    /// recorded their starts: they are handed out by the first [`Driving::next`], with no commit
    /// before them.
    pub fn with_first(mut self, first: Vec<Task<V>>) -> Self {
        if let Some(events) = &mut self.events {
            events.extend(first.iter().map(started));
        }
        self.staged = first;
        self
    }

    /// How this driver runs tasks.
    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// What the store holds, as last known.
    pub fn stored(&self) -> Stored {
        self.stored
    }

    /// The instance's header record.
    pub fn header(&self) -> &Header {
        &self.header
    }

    /// Asks for the instance to be cancelled with `reason` (applied at the next step boundary).
    pub fn request_cancel(&mut self, reason: &str) {
        if self.cancel.is_none() && !self.inst.is_cancelling() && !self.inst.status().is_finished() {
            self.cancel = Some(reason.to_string());
        }
    }

    /// Whether a cancellation is under way or asked for.
    pub fn cancelling(&self) -> bool {
        self.cancel.is_some() || self.inst.is_cancelling()
    }

    /// The events collected since the last call (empty unless observed).
    pub fn take_events(&mut self) -> Vec<Event> {
        self.events.as_mut().map(std::mem::take).unwrap_or_default()
    }

    fn apply_cancel(&mut self, now: f64, host: &mut dyn Host<V>) {
        if let Some(reason) = self.cancel.take() {
            self.inst.cancel(&reason, now, host);
        }
    }

    /// The status the store should index now.
    pub fn status(&self) -> Status {
        match self.inst.status() {
            s if s.is_finished() => s,
            _ if self.inst.ready_len() > 0 || self.inst.running() > 0 => Status::Running,
            _ => Status::Suspended,
        }
    }

    /// What to do next at `now`. `concurrent(step)` says whether a step may run beside others
    /// (only asked in [`Mode::Concurrent`]).
    pub fn next(&mut self, now: f64, host: &mut dyn Host<V>, concurrent: &dyn Fn(u32) -> bool) -> Next<V> {
        if self.asked.is_some() {
            return Next::Commit; // asked again before it was acknowledged: still due
        }
        if !self.staged.is_empty() {
            return Next::Run(std::mem::take(&mut self.staged));
        }
        self.apply_cancel(now, host);
        // signals just read arrived before anything now due fires (a wait's timeout that passed
        // while the instance was not driven does not overtake a signal sent in time)
        if self.inst.is_waiting() {
            self.inst.deliver(now, host);
        }
        self.inst.fire_timers(now, host);
        if self.inst.is_waiting() {
            self.inst.deliver(now, host);
        }
        if self.inst.has_records() {
            self.looked = false; // it moved (a timer, a signal): a wait it now has gets its own look
        }
        self.staged = take_wave(&mut self.inst, now, self.mode, concurrent);
        if let Some(events) = &mut self.events {
            events.extend(self.staged.iter().map(started));
        }
        let status = self.status();
        let due_at = if status == Status::Suspended { self.inst.next_deadline() } else { None };
        // a resume that moves nothing still corrects a due time that no longer holds (a signal
        // that no wait takes yet made the instance due): otherwise it stays due, and is resumed
        // again and again
        if self.inst.has_records() || status != self.stored.status || due_at != self.stored.due_at {
            self.asked = Some(self.pending(status, due_at, now));
            return Next::Commit;
        }
        if !self.staged.is_empty() {
            return Next::Run(std::mem::take(&mut self.staged));
        }
        let finished = self.inst.status().is_finished();
        if !finished && (self.woken || (self.inst.is_waiting() && !self.looked)) {
            // one last look before leaving it waiting (or a look the driver was woken for)
            self.looked = true;
            self.woken = false;
            return Next::ReadInbox { after: self.inbox_read };
        }
        if finished {
            return Next::Done;
        }
        let deadline = self.inst.next_deadline();
        match (self.mode, self.inst.next_retry()) {
            (Mode::Sequential, Some(retry)) if deadline.is_none_or(|d| retry <= d) => Next::Sleep { until: retry },
            _ => Next::Wait { until: deadline },
        }
    }

    /// The commit asked for: the records taken now, with the status and due time decided.
    fn pending(&mut self, status: Status, due_at: Option<f64>, now: f64) -> Pending {
        let records = self.inst.take_records().iter().map(encode_record).collect();
        let (header, error) = if status.is_finished() {
            self.header.output = self.inst.output_payload().map(<[u8]>::to_vec);
            self.header.error = self.inst.error().map(|e| e.to_json());
            let error = self.inst.error().map(|e| summary(&e.failure.error_type, &e.failure.message));
            (Some(encode_header(&self.header)), error)
        } else {
            (None, None)
        };
        Pending {
            expected_version: self.stored.version,
            status,
            updated_at: now,
            due_at,
            header,
            records,
            signals_seen: self.inst.signals_seen().max(self.internal_seen),
            error,
        }
    }

    /// The commit a [`Next::Commit`] asks the driver to persist.
    pub fn commit(&self) -> Option<&Pending> {
        self.asked.as_ref()
    }

    /// The commit asked for by the last [`Driving::next`] is in the store. Returns the tasks
    /// whose starts it recorded, to run now (what the next [`Driving::next`] would answer), if
    /// any; else the driver asks [`Driving::next`].
    pub fn committed(&mut self) -> Option<Vec<Task<V>>> {
        if let Some(p) = self.asked.take() {
            self.stored = Stored { version: self.stored.version + 1, status: p.status, due_at: p.due_at };
        }
        (!self.staged.is_empty()).then(|| std::mem::take(&mut self.staged))
    }

    /// Whether the instance finished.
    pub fn finished(&self) -> bool {
        self.inst.status().is_finished()
    }

    /// The time budget of `task` from `now`: its step's timeout, capped by the time left until
    /// the workflow's deadline (an async step is cancelled then, and the workflow times out).
    pub fn budget(&self, task: &Task<V>, now: f64) -> Option<f64> {
        let step = self.inst.plan().steps[task.step as usize].timeout;
        match (step, self.inst.workflow_deadline()) {
            (t, None) => t,
            (None, Some(d)) => Some((d - now).max(0.0)),
            (Some(t), Some(d)) => Some(t.min((d - now).max(0.0))),
        }
    }

    /// Why an attempt of `task` that ended at `now` counts as timed out (it ran past its step's
    /// timeout, whatever it returned), if it does: the `StepTimeout` message.
    pub fn overran(&self, task: &Task<V>, now: f64) -> Option<String> {
        let step = &self.inst.plan().steps[task.step as usize];
        let limit = step.timeout?;
        let took = now - task.started_at;
        (took > limit).then(|| {
            format!("step {:?} ran {took:.3}s, past its timeout of {limit}s; its result was discarded", step.name)
        })
    }

    /// Takes a task's outcome at `now` (nothing is committed until the next [`Driving::next`]).
    /// A cancellation asked for meanwhile is applied first, so it wins over the outcome.
    pub fn settle(&mut self, task: Task<V>, attempt: Attempt<V>, now: f64, host: &mut dyn Host<V>) {
        self.apply_cancel(now, host);
        self.looked = false;
        // what an observer is told (only built when there is one)
        let seen = self.events.as_ref().map(|_| (task.step, task.key.clone(), task.attempt, now - task.started_at));
        match attempt {
            Attempt::Returned { value, payload } => {
                self.inst.complete(task, value, payload, now, host);
                if let Some((step, key, attempt, duration)) = seen {
                    self.emit(|| Event::StepCompleted { step, key, attempt, duration });
                }
            }
            Attempt::Raised { failure, retryable } => {
                let error = seen.as_ref().map(|_| format!("{}: {}", failure.error_type, failure.message));
                let retrying = self.inst.fail(task, failure, retryable, now).is_some();
                if let (Some((step, key, attempt, duration)), Some(error)) = (seen, error) {
                    self.emit(|| Event::StepFailed { step, key, attempt, duration, error, retrying });
                }
            }
            Attempt::Stopped => {
                // the attempt saw the cancellation and stopped: let it go (ignored, since the
                // instance is cancelling or cancelled)
                self.inst.fail(task, Failure::new("Cancelled", "stopped for a cancellation"), false, now);
            }
        }
    }

    /// Sorts out inbox signals read after [`Next::ReadInbox`] (or by a driver that looked on its
    /// own): a persisted cancellation request is asked for, the others are made known to the
    /// instance (delivered at the next [`Driving::next`]); returns the new payloads, for the
    /// host to decode. A signal record that does not decode is a `Corrupt` error naming it.
    pub fn take_inbox(&mut self, id: &str, raw: Vec<(u64, Vec<u8>)>) -> Result<Arrivals> {
        Ok(self.accept(sort_inbox(id, raw, self.inbox_read)?))
    }

    /// [`Driving::take_inbox`] for an inbox already sorted out ([`sort_inbox`]).
    pub fn accept(&mut self, inbox: Inbox) -> Arrivals {
        let Inbox { payloads, arrivals, cancel, newest, earliest, internal } = inbox;
        self.inbox_read = self.inbox_read.max(newest);
        self.internal_seen = self.internal_seen.max(internal);
        if let Some(sent) = earliest {
            // sending made the instance due then (`Store::send_signal`): what the store holds now,
            // so that the next commit corrects it if no wait takes the signal
            self.stored.due_at = Some(self.stored.due_at.map_or(sent, |d| d.min(sent)));
        }
        if let Some(reason) = &cancel {
            self.request_cancel(reason);
        }
        if !arrivals.is_empty() {
            self.looked = false;
            self.inst.add_signals(arrivals);
        }
        Arrivals { payloads, cancel }
    }

    /// The driver was woken (a signal or a cancellation in this process, or a poll of a shared
    /// store): the inbox is worth another look.
    pub fn wake(&mut self) {
        self.woken = true;
    }

    fn emit(&mut self, e: impl FnOnce() -> Event) {
        if let Some(events) = &mut self.events {
            events.push(e());
        }
    }
}

/// Takes the tasks that start now: one in [`Mode::Sequential`]; in [`Mode::Concurrent`] every
/// ready task that may run beside others (`concurrent(step)`), up to and including the first that
/// may not (sync steps run one at a time, so those after it stay ready, and uncharged, until it
/// ended). Their starts go into the instance's next records.
pub fn take_wave<V: Clone>(
    inst: &mut Instance<V>,
    now: f64,
    mode: Mode,
    concurrent: &dyn Fn(u32) -> bool,
) -> Vec<Task<V>> {
    let mut wave = Vec::new();
    while let Some(task) = inst.pop_ready(now) {
        let alone = mode == Mode::Sequential || !concurrent(task.step);
        wave.push(task);
        if alone {
            break;
        }
    }
    wave
}

/// The event of `t` starting.
fn started<V>(t: &Task<V>) -> Event {
    Event::StepStarted { step: t.step, key: t.key.clone(), attempt: t.attempt }
}

/// The one-line failure summary a store indexes: `Type: message`, first line, cut to
/// [`ERROR_SUMMARY_MAX`] bytes on a character boundary.
pub fn summary(error_type: &str, message: &str) -> String {
    let line = message.lines().next().unwrap_or("");
    let mut s = format!("{error_type}: {line}");
    if s.len() > ERROR_SUMMARY_MAX {
        let mut cut = ERROR_SUMMARY_MAX - 3;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
        s.push_str("...");
    }
    s
}
