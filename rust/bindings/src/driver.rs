//! Driving one instance: running a step task, taking in signals, honouring cancellation, and
//! committing what the state machine recorded. Shared by the synchronous loop (`Engine.run`,
//! `resume`, `run_due`, `cancel`) and the asyncio driver (`AsyncRun`).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyString};
use tideflow_core::codec::{encode_header, encode_record, Header};
use tideflow_core::instance::{Instance, Task};
use tideflow_core::store::Commit;
use tideflow_core::{CoreError, Status};

use crate::checked::{encode_checked, Wording};
use crate::context::Context;
use crate::engine::Engine;
use crate::errors::{error, matches, IntoPy};
use crate::host::{failure, PyHost};
use crate::workflow::Compiled;

/// A cancellation request, shared by the engine, the driver and every `Context` of the instance.
#[derive(Default)]
pub struct CancelState {
    requested: AtomicBool,
    reason: Mutex<String>,
}

impl CancelState {
    /// Asks for cancellation with `reason`.
    pub fn request(&self, reason: &str) {
        *self.reason.lock().unwrap_or_else(|e| e.into_inner()) = reason.to_string();
        self.requested.store(true, Ordering::SeqCst);
    }

    /// Whether cancellation was asked for.
    pub fn requested(&self) -> bool {
        self.requested.load(Ordering::SeqCst)
    }

    fn reason(&self) -> String {
        self.reason.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// One instance being advanced by this process.
pub struct Driver {
    pub inst: Instance<Py<PyAny>>,
    pub wf: Py<Compiled>,
    pub id: Py<PyString>,
    pub id_str: String,
    pub input: Py<PyAny>,
    pub header: Header,
    pub version: u64,
    pub stored_status: Status,
    /// Inbox payloads already read, by sequence number.
    pub inbox: HashMap<u64, Vec<u8>>,
    pub cancel: Arc<CancelState>,
    /// The due time the store holds for the instance (as last loaded or committed).
    pub stored_due: Option<f64>,
    /// How many times the instance was reloaded from the store after another writer advanced it;
    /// a task taken before a reload belongs to the instance as it was and is not run.
    pub epoch: u64,
    /// The stored result, when another writer finished the instance meanwhile.
    pub settled: Option<Outcome>,
    /// A task already taken (its start committed with the instance's creation), to run first.
    pub first: Option<Task<Py<PyAny>>>,
}

/// What a finished or suspended run reports to Python: (status, output, error JSON).
pub type Outcome = (String, Py<PyAny>, Py<PyAny>);

/// Builds the host from the driver's fields (so that `inst` stays free to borrow mutably).
macro_rules! host {
    ($self:ident, $py:ident, $engine:ident) => {
        PyHost { py: $py, wf: $self.wf.get(), fallback: $engine.fallback.bind($py), inbox: &$self.inbox }
    };
}

impl Driver {
    /// The context object a step receives.
    pub fn context<'py>(&self, py: Python<'py>, task: &Task<Py<PyAny>>) -> PyResult<Bound<'py, Context>> {
        let wf = self.wf.get();
        Bound::new(
            py,
            Context {
                instance: self.id.clone_ref(py),
                step: wf.steps[task.step as usize].name.clone_ref(py),
                attempt: task.attempt,
                key: task.key.clone(),
                input: self.input.clone_ref(py),
                cancel: Arc::clone(&self.cancel),
            },
        )
    }

    /// Feeds a step's result (or exception) back into the state machine. `started` is when the
    /// attempt began on the engine's clock: an attempt that ran past its step's timeout counts as
    /// a `StepTimeout`, whatever it returned.
    pub fn settle(
        &mut self,
        py: Python<'_>,
        engine: &Engine,
        task: Task<Py<PyAny>>,
        result: PyResult<Bound<'_, PyAny>>,
        started: f64,
    ) -> PyResult<()> {
        let now = engine.clock.now(py)?;
        // a cancellation asked for while the step ran wins over whatever the step returned, so
        // that a cancel() that came in time is never overtaken by completion
        self.apply_cancel(py, engine, now);
        let wf = self.wf.get();
        let entry = &wf.steps[task.step as usize];
        let observed = engine.notify.as_ref().map(|n| (n, task.key.clone(), task.attempt, entry.name.clone_ref(py)));
        let mut result = result;
        if let (Some(limit), Ok(_)) = (entry.timeout, &result) {
            if now - started > limit {
                let msg = format!(
                    "step {:?} ran {:.3}s, past its timeout of {limit}s; its result was discarded",
                    wf.plan.steps[task.step as usize].name,
                    now - started
                );
                result = Err(error(py, "StepTimeout", msg));
            }
        }
        match result {
            Ok(out) => match encode_checked(
                py,
                entry.encode.as_ref(),
                entry.decode.as_ref(),
                entry.check,
                engine.fallback.bind(py),
                &out,
            ) {
                Ok(checked) => {
                    // what a resume would hand the next step (see `Checked::decoded`)
                    let value = checked.value(&out).unbind();
                    let mut host = host!(self, py, engine);
                    self.inst.complete(task, value, checked.payload, now, &mut host);
                    if let Some((n, key, attempt, name)) = observed {
                        let args = ("step_completed", self.id.clone_ref(py), name, attempt, key, now - started);
                        n.bind(py).call1(args)?;
                    }
                }
                Err(refusal) => {
                    let subject = format!("step {:?} returned", wf.plan.steps[task.step as usize].name);
                    let type_name = format!("its return type {}", entry.hint);
                    let wording = Wording {
                        subject: &subject,
                        type_name: &type_name,
                        without: "without a return type hint",
                        annotate: "annotate the step",
                        prefix: "-> ",
                    };
                    let mut f = failure(py, &refusal.into_error(py, "CodecError", &wording));
                    f.error_type = "CodecError".into();
                    let text = format!("{}: {}", f.error_type, f.message);
                    let retrying = self.inst.fail(task, f, false, now).is_some();
                    self.observe_failure(py, observed, now - started, text, retrying)?;
                }
            },
            Err(e) => {
                if !e.is_instance_of::<pyo3::exceptions::PyException>(py) {
                    // KeyboardInterrupt, SystemExit, Cancelled...: not a step failure. The
                    // instance stays as committed and can be resumed.
                    let cancelled = self.inst.is_cancelling() || self.inst.status() == Status::Cancelled;
                    if cancelled && e.value(py).get_type().name().is_ok_and(|n| n == "Cancelled") {
                        // a step that saw the cancellation and stopped (cancelled above): let
                        // the attempt go (ignored, since the instance is cancelling or cancelled)
                        self.inst.fail(task, failure(py, &e), false, now);
                        return Ok(());
                    }
                    return Err(e);
                }
                let retryable = !matches(py, &e, entry.give_up_on.bind(py)) && matches(py, &e, entry.retry_on.bind(py));
                let f = failure(py, &e);
                let text = format!("{}: {}", f.error_type, f.message);
                let retrying = self.inst.fail(task, f, retryable, now).is_some();
                self.observe_failure(py, observed, now - started, text, retrying)?;
            }
        }
        Ok(())
    }

    fn observe_failure(
        &self,
        py: Python<'_>,
        observed: Option<(&Py<PyAny>, String, u32, Py<PyString>)>,
        duration: f64,
        error: String,
        retrying: bool,
    ) -> PyResult<()> {
        if let Some((n, key, attempt, name)) = observed {
            let args = ("step_failed", self.id.clone_ref(py), name, attempt, key, duration, error, retrying);
            n.bind(py).call1(args)?;
        }
        Ok(())
    }

    /// Tells the observer (if any) that `task` is about to run.
    pub fn observe_start(&self, py: Python<'_>, engine: &Engine, task: &Task<Py<PyAny>>) -> PyResult<()> {
        if let Some(n) = &engine.notify {
            let name = self.wf.get().steps[task.step as usize].name.clone_ref(py);
            n.bind(py).call1(("step_started", self.id.clone_ref(py), name, task.attempt, task.key.as_str()))?;
        }
        Ok(())
    }

    /// How long an async step may run from `now`: its own timeout, capped by the time left until
    /// the workflow's deadline (the step is cancelled then, and the workflow times out).
    pub fn timeout_of(&self, step_timeout: Option<f64>, now: f64) -> Option<f64> {
        match (step_timeout, self.inst.workflow_deadline()) {
            (t, None) => t,
            (None, Some(d)) => Some((d - now).max(0.0)),
            (Some(t), Some(d)) => Some(t.min((d - now).max(0.0))),
        }
    }

    /// Runs one task in this thread (an async step on a private event loop).
    pub fn run_task(&mut self, py: Python<'_>, engine: &Engine, task: Task<Py<PyAny>>) -> PyResult<()> {
        let wf = self.wf.get();
        let entry = &wf.steps[task.step as usize];
        let ctx = self.context(py, &task)?;
        self.observe_start(py, engine, &task)?;
        let started = engine.clock.now(py)?;
        let mut result = entry.func.bind(py).call1((ctx, task.input.bind(py)));
        if entry.is_async {
            let timeout = self.timeout_of(entry.timeout, started);
            result = result.and_then(|coro| engine.coro_runner.bind(py).call1((coro, timeout)));
        }
        self.settle(py, engine, task, result, started)
    }

    /// Starts the cancellation of the instance if one was asked for and it has not begun.
    fn apply_cancel(&mut self, py: Python<'_>, engine: &Engine, now: f64) {
        if self.cancel.requested() && !self.inst.is_cancelling() && !self.inst.status().is_finished() {
            let mut host = host!(self, py, engine);
            self.inst.cancel(&self.cancel.reason(), now, &mut host);
        }
    }

    /// Fires due timers, applies a pending cancellation, and hands waiting signals to their waits.
    pub fn advance(&mut self, py: Python<'_>, engine: &Engine, now: f64) {
        self.apply_cancel(py, engine, now);
        let mut host = host!(self, py, engine);
        self.inst.fire_timers(now, &mut host);
        if self.inst.is_waiting() {
            self.inst.deliver(now, &mut host);
        }
    }

    /// Reads signals that arrived since the last look (and a persisted cancellation request) and
    /// offers them to the waits.
    pub fn refresh_signals(&mut self, py: Python<'_>, engine: &Engine) -> PyResult<()> {
        let fresh = engine.read_inbox(py, &self.id_str, |seq| self.inbox.contains_key(&seq))?;
        if let Some(reason) = fresh.cancel {
            if !self.cancel.requested() {
                self.cancel.request(&reason); // perhaps from another process
            }
        }
        let now = engine.clock.now(py)?;
        self.apply_cancel(py, engine, now);
        if !fresh.arrivals.is_empty() {
            self.inbox.extend(fresh.payloads);
            self.inst.add_signals(fresh.arrivals);
            let mut host = host!(self, py, engine);
            self.inst.deliver(now, &mut host);
        }
        Ok(())
    }

    /// Whether the instance finished (here, or by another writer).
    pub fn finished(&self) -> bool {
        self.settled.is_some() || self.inst.status().is_finished()
    }

    /// The status stores should index now.
    pub fn status(&self) -> Status {
        match self.inst.status() {
            s if s.is_finished() => s,
            _ if self.inst.ready_len() > 0 || self.inst.running() > 0 => Status::Running,
            _ => Status::Suspended,
        }
    }

    /// Commits what the state machine recorded since the last commit (one store transaction),
    /// with the new status; a no-op when nothing changed.
    ///
    /// When another writer advanced the instance first (a version conflict), nothing of this
    /// driver's is written: it reloads the instance from the store and goes on from there (or
    /// reports the stored result if that writer finished it); `epoch` tells the caller.
    pub fn commit(&mut self, py: Python<'_>, engine: &Engine) -> PyResult<()> {
        if self.settled.is_some() {
            return Ok(());
        }
        let status = self.status();
        let due_at = if status == Status::Suspended { self.inst.next_deadline() } else { None };
        // a resume that moves nothing still corrects a due time that no longer holds (a signal
        // that no wait takes yet made the instance due): otherwise it stays due and is resumed
        // again and again
        if !self.inst.has_records() && status == self.stored_status && due_at == self.stored_due {
            return Ok(());
        }
        let records: Vec<Vec<u8>> = self.inst.take_records().iter().map(encode_record).collect();
        let header = if status.is_finished() {
            self.header.output = self.inst.output_payload().map(<[u8]>::to_vec);
            self.header.error = self.inst.error().map(|e| e.to_json());
            Some(encode_header(&self.header))
        } else {
            None
        };
        let now = engine.clock.now(py)?;
        let commit = Commit {
            id: &self.id_str,
            expected_version: self.version,
            status,
            updated_at: now,
            due_at,
            header: header.as_deref(),
            records: &records,
            signals_seen: self.inst.signals_seen(),
        };
        match engine.with_store(py, |s| s.commit(&commit)) {
            Ok(()) => {}
            Err(CoreError::Conflict { .. }) => return self.reload(py, engine),
            Err(e) => return Err(e).py_err(py),
        }
        self.version += 1;
        self.stored_status = status;
        self.stored_due = due_at;
        Ok(())
    }

    /// Replaces this driver's instance with what the store holds (another writer advanced it):
    /// rebuilt from its records, or the stored result if it finished.
    fn reload(&mut self, py: Python<'_>, engine: &Engine) -> PyResult<()> {
        let epoch = self.epoch + 1;
        match engine.reload(py, &self.id_str)? {
            Err(done) => self.settled = Some(done),
            Ok(fresh) => *self = fresh,
        }
        self.epoch = epoch;
        Ok(())
    }

    /// The run's result for Python.
    pub fn outcome(&self, py: Python<'_>) -> Outcome {
        if let Some((status, output, err)) = &self.settled {
            return (status.clone(), output.clone_ref(py), err.clone_ref(py));
        }
        let output = self.inst.output().map(|o| o.clone_ref(py)).unwrap_or_else(|| py.None());
        let err = match self.inst.error() {
            Some(e) => PyBytes::new(py, &e.to_json()).into_any().unbind(),
            None => py.None(),
        };
        (self.status().as_str().to_string(), output, err)
    }

    /// Advances the instance in this thread until it finishes or has nothing to do now but wait:
    /// retries are waited for here (on the engine's clock); durable sleeps, waits for signals and
    /// timeouts leave the instance suspended, due when its next timer is. Tasks run one after
    /// another: each is taken (which notes that its attempt starts), then committed together with
    /// what the previous one recorded, then run; so a step costs one commit, a finished step never
    /// runs again after a crash, and a task that never started is never charged an attempt.
    pub fn drive_sync(&mut self, py: Python<'_>, engine: &Engine) -> PyResult<()> {
        loop {
            if self.settled.is_some() {
                return Ok(()); // another writer finished the instance
            }
            let now = engine.clock.now(py)?;
            self.advance(py, engine, now);
            if let Some(task) = self.first.take().or_else(|| self.inst.pop_ready(now)) {
                let epoch = self.epoch;
                self.commit(py, engine)?;
                if self.epoch == epoch {
                    self.run_task(py, engine, task)?;
                } // else: the instance was reloaded from the store; that task is not its own
                continue;
            }
            if !self.inst.status().is_finished() && self.inst.is_waiting() {
                self.refresh_signals(py, engine)?; // one last look before suspending
                if self.inst.ready_len() > 0 || self.inst.status().is_finished() {
                    continue;
                }
            }
            let epoch = self.epoch;
            self.commit(py, engine)?;
            if self.epoch != epoch {
                continue;
            }
            if self.inst.status().is_finished() {
                return Ok(());
            }
            match (self.inst.next_retry(), self.inst.next_deadline()) {
                (Some(retry), Some(first)) if retry <= first => engine.clock.sleep(py, retry - now)?,
                _ if self.inst.running() == 0 => return Ok(()), // suspended
                _ => return Err(error(py, "TideflowError", "tasks are running elsewhere; cannot drive")),
            }
        }
    }
}
