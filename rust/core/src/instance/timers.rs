//! Time and the outside world: timers (retries, sleeps, wait and workflow timeouts) and signals.

use std::cmp::Ordering;

use super::{Cont, ErrorInfo, Event, Failure, Host, Instance, Task, Waiter};
use crate::codec::Record;
use crate::plan::Node;

/// A heap entry: when, and which item (the heap is a max-heap, so ordering is reversed).
pub(super) struct Timer {
    pub(super) due: f64,
    pub(super) seq: u64,
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
    fn cmp(&self, o: &Self) -> Ordering {
        o.due.total_cmp(&self.due).then(o.seq.cmp(&self.seq))
    }
}

/// The suffix of the decision key (`<sleep key>~`, value `"slept"`) recording that a durable
/// sleep ended.
pub(crate) const SLEPT: &str = "~";

/// What happens when a timer fires.
pub(super) enum Due<V> {
    /// The next attempt of a failed step.
    Retry(Task<V>),
    /// A durable sleep at position `key` ends: its input flows on.
    Sleep { key: String, cont: Cont, value: V },
    /// A wait for a signal times out (the waiter is found by its key).
    WaitTimeout { key: String },
    /// The whole workflow ran past its timeout.
    WorkflowTimeout,
}

impl<V: Clone> Instance<V> {
    pub(super) fn push_timer(&mut self, due: f64, item: Due<V>) -> u64 {
        self.timer_seq += 1;
        self.timer_items.insert(self.timer_seq, item);
        self.timers.push(Timer { due, seq: self.timer_seq });
        self.timer_seq
    }

    /// The earliest time a timer is due, if any.
    pub fn next_deadline(&self) -> Option<f64> {
        self.timers.iter().filter(|t| self.timer_items.contains_key(&t.seq)).map(|t| t.due).min_by(f64::total_cmp)
    }

    /// The earliest time a retry is due, if any. A synchronous driver waits for retries in its
    /// thread; it leaves sleeps and waits (which may last months) to a later `resume`.
    pub fn next_retry(&self) -> Option<f64> {
        self.timers
            .iter()
            .filter(|t| matches!(self.timer_items.get(&t.seq), Some(Due::Retry(_))))
            .map(|t| t.due)
            .min_by(f64::total_cmp)
    }

    /// Fires every timer due at `now`: retries become ready tasks, sleeps end, waits and the
    /// workflow time out.
    pub fn fire_timers(&mut self, now: f64, host: &mut dyn Host<V>) {
        self.now = self.now.max(now);
        while let Some(t) = self.timers.peek() {
            if t.due > now || self.status.is_finished() {
                break;
            }
            let t = self.timers.pop().expect("peeked");
            match self.timer_items.remove(&t.seq) {
                None => {}
                Some(Due::Retry(task)) => self.ready.push_back(task),
                Some(Due::Sleep { key, cont, value }) => {
                    // recorded, so that a resume replays past the sleep instead of stopping at it
                    self.records.push(Record::Decision { key: format!("{key}{SLEPT}"), value: "slept".into() });
                    self.events.push_back(Event::Finish { cont, value });
                }
                Some(Due::WaitTimeout { key }) => self.time_out_wait(&key),
                Some(Due::WorkflowTimeout) => self.time_out_workflow(),
            }
            self.drive(host);
        }
    }

    /// Fails the instance: it ran past its workflow timeout.
    pub(super) fn time_out_workflow(&mut self) {
        let msg =
            format!("workflow {:?} ran past its timeout of {}s", self.plan.name, self.plan.timeout.unwrap_or_default());
        self.fail_instance(ErrorInfo {
            kind: "timeout",
            step: None,
            key: None,
            attempts: 0,
            failure: Failure::new("StepTimeout", msg),
        });
    }

    fn time_out_wait(&mut self, key: &str) {
        let Some(pos) = self.waits.iter().position(|w| w.key == key) else { return };
        let w = self.waits.remove(pos);
        self.records.push(Record::Decision { key: format!("{key}!"), value: "timeout".into() });
        self.after_timeout(w.key, w.name, w.node, w.input, w.cont);
    }

    /// A wait timed out (now or in the recorded past): route to its timeout path or fail.
    pub(super) fn after_timeout(&mut self, key: String, name: String, node: u32, input: V, cont: Cont) {
        let Node::WaitSignal { on_timeout, timeout, .. } = self.plan.node(node).clone() else {
            unreachable!("a waiter is always a wait node")
        };
        match on_timeout {
            Some(path) => {
                let k = super::child_key(&key, format_args!("timeout"));
                self.events.push_back(Event::Enter { node: path, input, cont, key: k });
            }
            None => {
                let msg = format!("no signal {name:?} arrived within {}s", timeout.unwrap_or_default());
                self.fail_instance(ErrorInfo {
                    kind: "timeout",
                    step: None,
                    key: Some(key),
                    attempts: 0,
                    failure: Failure::new("StepTimeout", msg),
                });
            }
        }
    }

    /// Makes inbox signals known to the instance: `(sequence number, name)` in arrival order.
    /// Already known or consumed ones are ignored. Call [`Instance::deliver`] afterwards.
    pub fn add_signals(&mut self, signals: impl IntoIterator<Item = (u64, String)>) {
        for (seq, name) in signals {
            if !self.consumed.contains(&seq) && !self.inbox.iter().any(|(s, _)| *s == seq) {
                self.inbox.push((seq, name));
            }
        }
        self.inbox.sort_by_key(|(s, _)| *s);
    }

    /// The highest inbox sequence number this instance has seen.
    pub fn signals_seen(&self) -> u64 {
        self.inbox.iter().map(|(s, _)| *s).chain(self.consumed.iter().copied()).max().unwrap_or(0)
    }

    /// Whether some wait for a signal is pending.
    pub fn is_waiting(&self) -> bool {
        !self.waits.is_empty()
    }

    /// Hands waiting signals to the waits that want them: the earliest unconsumed signal of a
    /// name goes to the earliest wait for that name. Each consumption is recorded.
    pub fn deliver(&mut self, now: f64, host: &mut dyn Host<V>) {
        self.now = self.now.max(now);
        let mut i = 0;
        while i < self.waits.len() && !self.status.is_finished() {
            match self.take_signal(&self.waits[i].name.clone()) {
                Some(seq) => {
                    let w = self.waits.remove(i);
                    if let Some(back) = self.consume(w, seq, host) {
                        self.waits.insert(i, back); // rejected: it waits on (for the next one)
                    }
                }
                None => i += 1,
            }
        }
        self.drive(host);
    }

    /// The earliest unconsumed inbox signal named `name`, marked consumed.
    pub(super) fn take_signal(&mut self, name: &str) -> Option<u64> {
        let pos = self.inbox.iter().position(|(s, n)| n == name && !self.consumed.contains(s))?;
        let (seq, _) = self.inbox.remove(pos);
        self.consumed.insert(seq);
        Some(seq)
    }

    /// Hands signal `seq` to wait `w`. A payload that does not decode into the wait's type is
    /// rejected instead (recorded as `<key>@r<seq>` with the reason, and never offered again):
    /// the wait is given back to go on waiting, and the instance does not fail.
    pub(super) fn consume(&mut self, w: Waiter<V>, seq: u64, host: &mut dyn Host<V>) -> Option<Waiter<V>> {
        match host.signal(w.wait, seq) {
            Ok(v) => {
                self.records.push(Record::Decision { key: format!("{}@", w.key), value: seq.to_string() });
                if let Some(t) = w.timer {
                    self.timer_items.remove(&t);
                }
                self.events.push_back(Event::Finish { cont: w.cont, value: v });
                None
            }
            Err(f) => {
                let reason = format!("{}: {}", f.error_type, f.message);
                self.records.push(Record::Decision { key: format!("{}@r{seq}", w.key), value: reason });
                Some(w)
            }
        }
    }
}
