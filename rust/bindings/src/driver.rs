//! One instance driven by this process: the core's policy ([`Driving`]) plus what only Python
//! has (the callables, the context objects, the inbox payloads to decode). Drivers execute what
//! the policy answers; the two loops that do (`Engine.run` here, the asyncio one through
//! `AsyncRun`) share [`Driver::advance`], which performs the store I/O in this thread.

use std::collections::HashMap;
use std::sync::Arc;

use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyString};
use tideflow_core::drive::{Attempt, Driving, Next};
use tideflow_core::instance::Task;
use tideflow_core::store::Loaded;
use tideflow_core::{CoreError, Status};

use crate::cancels::CancelState;
use crate::checked::{encode_checked, Wording};
use crate::context::Context;
use crate::engine::Engine;
use crate::errors::{error, matches, IntoPy};
use crate::host::{failure, PyHost};
use crate::workflow::Compiled;

/// What a finished or suspended run reports to Python: (status, output, error JSON).
pub type Outcome = (String, Py<PyAny>, Py<PyAny>);

/// One instance being advanced by this process.
pub struct Driver {
    /// The policy and the state machine.
    pub core: Driving<Py<PyAny>>,
    pub wf: Py<Compiled>,
    pub id: Py<PyString>,
    pub id_str: String,
    pub input: Py<PyAny>,
    /// Inbox payloads read so far, by sequence number (the host decodes them for the waits).
    pub inbox: HashMap<u64, Vec<u8>>,
    pub cancel: Arc<CancelState>,
    /// How many times the instance was reloaded from the store after another writer advanced
    /// it; a task taken before a reload belongs to the instance as it was and is not settled.
    pub epoch: u64,
    /// The stored result, when another writer finished the instance meanwhile.
    pub settled: Option<Outcome>,
    /// The lease holder this driver commits as (a worker), or None (the engine's own process).
    pub owner: Option<String>,
    /// Whether every step may run beside others (a worker runs sync steps in threads and hands
    /// a fan-out's steps to other workers), not only async ones.
    pub spread: bool,
}

/// Builds the host from the driver's fields (so that `core` stays free to borrow mutably).
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

    /// Hands a cancellation asked for in this process (`cancel()`, another thread) to the policy.
    fn forward_cancel(&mut self) {
        if self.cancel.requested() && !self.core.cancelling() {
            self.core.request_cancel(&self.cancel.reason());
        }
    }

    /// The policy's next answer; `concurrent`: async steps may run together (the asyncio driver).
    pub fn next(&mut self, py: Python<'_>, engine: &Engine, concurrent: bool) -> PyResult<Next<Py<PyAny>>> {
        self.forward_cancel();
        let now = engine.clock.now(py)?;
        let wf = self.wf.get();
        let mut host = host!(self, py, engine);
        let next = if concurrent && self.spread {
            self.core.next(now, &mut host, &|_| true)
        } else if concurrent {
            self.core.next(now, &mut host, &|s| wf.steps[s as usize].is_async)
        } else {
            self.core.next(now, &mut host, &|_| false)
        };
        self.observe(py, engine)?;
        Ok(next)
    }

    fn observe(&mut self, py: Python<'_>, engine: &Engine) -> PyResult<()> {
        if engine.observer.active() {
            let events = self.core.take_events();
            engine.observer.steps(py, &self.id, self.wf.get(), events)?;
        }
        Ok(())
    }

    /// Executes the policy's store answers (commit, read the inbox, reload after a conflict) on
    /// the engine's store in this thread, until it answers something else.
    pub fn advance(&mut self, py: Python<'_>, engine: &Engine, concurrent: bool) -> PyResult<Next<Py<PyAny>>> {
        loop {
            if self.settled.is_some() {
                return Ok(Next::Done); // another writer finished the instance
            }
            match self.next(py, engine, concurrent)? {
                Next::Commit => {
                    let result = {
                        let pending = self.core.commit().expect("the policy asked for a commit");
                        let commit = pending.as_commit(&self.id_str, self.owner.as_deref());
                        engine.backend.call(py, |s| s.commit(&commit))
                    };
                    if let Some(tasks) = self.committed(py, engine, result)? {
                        return Ok(Next::Run(tasks));
                    }
                }
                Next::ReadInbox { after } => {
                    let id = &self.id_str;
                    let raw = engine.backend.call(py, |s| s.signals(id, after)).py_err(py)?;
                    self.take_inbox(py, raw)?;
                }
                other => return Ok(other),
            }
        }
    }

    /// Takes the result of the commit the policy asked for, and returns the tasks it started, to
    /// run now. On a conflict (another writer advanced the instance first) nothing of this
    /// driver's was written, and it reloads.
    pub fn committed(
        &mut self,
        py: Python<'_>,
        engine: &Engine,
        result: Result<(), CoreError>,
    ) -> PyResult<Option<Vec<Task<Py<PyAny>>>>> {
        match result {
            Ok(()) => Ok(self.core.committed()),
            Err(CoreError::Conflict { .. }) => {
                let id = &self.id_str;
                let loaded = engine.backend.call(py, |s| s.load(id)).py_err(py)?;
                self.reloaded(py, engine, loaded)?;
                Ok(None)
            }
            Err(e) => Err(e).py_err(py),
        }
    }

    /// Replaces this driver's instance with what the store holds (another writer advanced it):
    /// rebuilt from its records, or the stored result if it finished.
    pub fn reloaded(&mut self, py: Python<'_>, engine: &Engine, loaded: Option<Loaded>) -> PyResult<()> {
        let epoch = self.epoch + 1;
        let loaded = loaded.ok_or_else(|| {
            error(py, "UnknownInstance", format!("instance {:?} was deleted while it ran", self.id_str))
        })?;
        let mode = self.core.mode();
        match crate::reopen::reopen(py, engine, loaded, mode)? {
            Err(done) => self.settled = Some(done),
            Ok(mut fresh) => {
                fresh.owner = self.owner.take();
                fresh.spread = self.spread;
                *self = fresh
            }
        }
        self.epoch = epoch;
        Ok(())
    }

    /// Sorts out inbox signals read from the store (see `Driving::take_inbox`).
    pub fn take_inbox(&mut self, py: Python<'_>, raw: Vec<(u64, Vec<u8>)>) -> PyResult<()> {
        let arrived = self.core.take_inbox(&self.id_str, raw).py_err(py)?;
        if let Some(reason) = arrived.cancel {
            if !self.cancel.requested() {
                self.cancel.request(&reason); // perhaps from another process: ctx.cancelled turns true
            }
        }
        self.inbox.extend(arrived.payloads);
        Ok(())
    }

    /// Feeds a step's result (or exception) back into the policy. An attempt that ran past its
    /// step's timeout counts as a `StepTimeout`, whatever it returned.
    pub fn settle(
        &mut self,
        py: Python<'_>,
        engine: &Engine,
        task: Task<Py<PyAny>>,
        result: PyResult<Bound<'_, PyAny>>,
    ) -> PyResult<()> {
        self.forward_cancel();
        let now = engine.clock.now(py)?;
        let attempt = self.attempt_of(py, engine, &task, result, now)?;
        let mut host = host!(self, py, engine);
        self.core.settle(task, attempt, now, &mut host);
        self.observe(py, engine)
    }

    /// Feeds an attempt's outcome, already judged (here or by the worker that ran it), back
    /// into the policy at the engine's `now`.
    pub fn settle_attempt(
        &mut self,
        py: Python<'_>,
        engine: &Engine,
        task: Task<Py<PyAny>>,
        attempt: Attempt<Py<PyAny>>,
    ) -> PyResult<()> {
        self.forward_cancel();
        let now = engine.clock.now(py)?;
        let mut host = host!(self, py, engine);
        self.core.settle(task, attempt, now, &mut host);
        self.observe(py, engine)
    }

    /// Judges a step's result (or exception): the value encoded with the step's codec, or the
    /// failure with the retry policy's verdict. An attempt that ran past its step's timeout
    /// counts as a `StepTimeout`, whatever it returned (`now`: when it ended); a
    /// `BaseException` that is not the cancellation under way is raised again.
    pub fn attempt_of(
        &self,
        py: Python<'_>,
        engine: &Engine,
        task: &Task<Py<PyAny>>,
        result: PyResult<Bound<'_, PyAny>>,
        now: f64,
    ) -> PyResult<Attempt<Py<PyAny>>> {
        let mut result = result;
        if result.is_ok() {
            if let Some(msg) = self.core.overran(task, now) {
                result = Err(error(py, "StepTimeout", msg));
            }
        }
        let wf = self.wf.get();
        let entry = &wf.steps[task.step as usize];
        Ok(match result {
            Ok(out) => match encode_checked(
                py,
                entry.encode.as_ref(),
                entry.decode.as_ref(),
                entry.check,
                engine.fallback.bind(py),
                &out,
            ) {
                // what a resume would hand the next step (see `Checked::decoded`)
                Ok(checked) => Attempt::Returned { value: checked.value(&out).unbind(), payload: checked.payload },
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
                    Attempt::Raised { failure: f, retryable: false }
                }
            },
            Err(e) if !e.is_instance_of::<pyo3::exceptions::PyException>(py) => {
                // KeyboardInterrupt, SystemExit, Cancelled...: not a step failure. The instance
                // stays as committed and can be resumed, unless the step stopped for the
                // cancellation under way
                let cancelled = self.core.cancelling() || self.core.inst.status() == Status::Cancelled;
                if !(cancelled && e.value(py).get_type().name().is_ok_and(|n| n == "Cancelled")) {
                    return Err(e);
                }
                Attempt::Stopped
            }
            Err(e) => {
                let retryable = !matches(py, &e, entry.give_up_on.bind(py)) && matches(py, &e, entry.retry_on.bind(py));
                Attempt::Raised { failure: failure(py, &e), retryable }
            }
        })
    }

    /// Runs one task in this thread (an async step on a private event loop, within its budget).
    pub fn run_task(&mut self, py: Python<'_>, engine: &Engine, task: Task<Py<PyAny>>) -> PyResult<()> {
        let wf = self.wf.get();
        let entry = &wf.steps[task.step as usize];
        let ctx = self.context(py, &task)?;
        let mut result = entry.func.bind(py).call1((ctx, task.input.bind(py)));
        if entry.is_async {
            let budget = self.core.budget(&task, engine.clock.now(py)?);
            result = result.and_then(|coro| engine.coro_runner.bind(py).call1((coro, budget)));
        }
        self.settle(py, engine, task, result)
    }

    /// Whether the instance finished (here, or by another writer).
    pub fn finished(&self) -> bool {
        self.settled.is_some() || self.core.finished()
    }

    /// The run's result for Python.
    pub fn outcome(&self, py: Python<'_>) -> Outcome {
        if let Some((status, output, err)) = &self.settled {
            return (status.clone(), output.clone_ref(py), err.clone_ref(py));
        }
        let inst = &self.core.inst;
        let output = inst.output().map(|o| o.clone_ref(py)).unwrap_or_else(|| py.None());
        let err = match inst.error() {
            Some(e) => PyBytes::new(py, &e.to_json()).into_any().unbind(),
            None => py.None(),
        };
        (self.core.status().as_str().to_string(), output, err)
    }

    /// Advances the instance in this thread until it finishes or has nothing to do now but wait:
    /// retries are waited for here (on the engine's clock); durable sleeps, waits for signals and
    /// timeouts leave it suspended, due when its next timer is.
    pub fn drive_sync(&mut self, py: Python<'_>, engine: &Engine) -> PyResult<()> {
        loop {
            match self.advance(py, engine, false)? {
                Next::Run(tasks) => {
                    for task in tasks {
                        self.run_task(py, engine, task)?;
                    }
                }
                Next::Sleep { until } => {
                    let now = engine.clock.now(py)?;
                    engine.clock.sleep(py, (until - now).max(0.0))?;
                }
                Next::Wait { .. } if self.core.inst.running() > 0 => {
                    return Err(error(py, "TideflowError", "tasks are running elsewhere; cannot drive"))
                }
                Next::Wait { .. } | Next::Done => return Ok(()),
                Next::Commit | Next::ReadInbox { .. } => {} // done by `advance`
            }
        }
    }
}
