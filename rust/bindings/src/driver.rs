//! Driving one instance: running a step task, and committing what the state machine recorded.
//! Shared by the synchronous loop (`Engine.run`) and the asyncio driver (`AsyncRun`).

use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyString};
use tideflow_core::codec::{encode_header, encode_record, Header};
use tideflow_core::instance::{Instance, Task};
use tideflow_core::store::Commit;
use tideflow_core::Status;

use crate::context::Context;
use crate::engine::Engine;
use crate::errors::{error, matches, IntoPy};
use crate::host::{encode_value, failure, PyHost};
use crate::workflow::Compiled;

/// One instance being advanced by this process.
pub struct Driver {
    pub inst: Instance<Py<PyAny>>,
    pub wf: Py<Compiled>,
    pub id: Py<PyString>,
    pub input: Py<PyAny>,
    pub header: Header,
    pub version: u64,
    pub stored_status: Status,
}

/// What a finished or suspended run reports to Python: (status, output, error JSON).
pub type Outcome = (String, Py<PyAny>, Py<PyAny>);

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
            },
        )
    }

    /// Feeds a step's result (or exception) back into the state machine.
    pub fn settle(
        &mut self,
        py: Python<'_>,
        engine: &Engine,
        task: Task<Py<PyAny>>,
        result: PyResult<Bound<'_, PyAny>>,
    ) -> PyResult<()> {
        let now = engine.clock.now(py)?;
        let wf = self.wf.get();
        let entry = &wf.steps[task.step as usize];
        let fallback = engine.fallback.bind(py);
        match result {
            Ok(out) => match encode_value(py, entry.encode.as_ref(), fallback, &out) {
                Ok(payload) => {
                    let mut host = PyHost { py, wf, fallback };
                    self.inst.complete(task, out.unbind(), payload, now, &mut host);
                }
                Err(e) => {
                    let mut f = failure(py, &e);
                    f.error_type = "CodecError".into();
                    f.message = format!(
                        "step {:?} returned a value that cannot be checkpointed: {}",
                        wf.plan.steps[task.step as usize].name, f.message
                    );
                    self.inst.fail(task, f, false, now);
                }
            },
            Err(e) => {
                if !e.is_instance_of::<pyo3::exceptions::PyException>(py) {
                    // KeyboardInterrupt, SystemExit, Cancelled...: not a step failure. The
                    // instance stays as committed and can be resumed.
                    return Err(e);
                }
                let retryable = !matches(py, &e, entry.give_up_on.bind(py)) && matches(py, &e, entry.retry_on.bind(py));
                self.inst.fail(task, failure(py, &e), retryable, now);
            }
        }
        Ok(())
    }

    /// Runs one task in this thread (an async step on a private event loop).
    pub fn run_task(&mut self, py: Python<'_>, engine: &Engine, task: Task<Py<PyAny>>) -> PyResult<()> {
        let wf = self.wf.get();
        let entry = &wf.steps[task.step as usize];
        let ctx = self.context(py, &task)?;
        let mut result = entry.func.bind(py).call1((ctx, task.input.bind(py)));
        if entry.is_async {
            result = result.and_then(|coro| engine.coro_runner.bind(py).call1((coro,)));
        }
        self.settle(py, engine, task, result)
    }

    /// The status stores should index now.
    fn status(&self) -> Status {
        match self.inst.status() {
            s if s.is_finished() => s,
            _ if self.inst.ready_len() > 0 || self.inst.running() > 0 => Status::Running,
            _ => Status::Suspended,
        }
    }

    /// Commits what the state machine recorded since the last commit (one store transaction),
    /// with the new status; a no-op when nothing changed.
    pub fn commit(&mut self, py: Python<'_>, engine: &Engine) -> PyResult<()> {
        let status = self.status();
        if !self.inst.has_records() && status == self.stored_status {
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
        let id = self.id.bind(py).to_str()?.to_owned();
        let commit = Commit {
            id: &id,
            expected_version: self.version,
            status,
            updated_at: now,
            due_at: if status == Status::Suspended { self.inst.next_deadline() } else { None },
            header: header.as_deref(),
            records: &records,
        };
        engine.with_store(py, |s| s.commit(&commit)).py_err(py)?;
        self.version += 1;
        self.stored_status = status;
        Ok(())
    }

    /// The run's result for Python.
    pub fn outcome(&self, py: Python<'_>) -> Outcome {
        let output = self.inst.output().map(|o| o.clone_ref(py)).unwrap_or_else(|| py.None());
        let err = match self.inst.error() {
            Some(e) => PyBytes::new(py, &e.to_json()).into_any().unbind(),
            None => py.None(),
        };
        (self.status().as_str().to_string(), output, err)
    }

    /// Advances the instance in this thread until it finishes or has nothing to do but wait for
    /// something other than a timer. Each wave of ready tasks is committed in one transaction.
    pub fn drive_sync(&mut self, py: Python<'_>, engine: &Engine) -> PyResult<()> {
        loop {
            let now = engine.clock.now(py)?;
            self.inst.fire_timers(now);
            let n = self.inst.ready_len();
            if n == 0 {
                self.commit(py, engine)?;
                if self.inst.status().is_finished() {
                    return Ok(());
                }
                match self.inst.next_deadline() {
                    Some(due) => engine.clock.sleep(py, due - now)?,
                    None if self.inst.running() == 0 => return Ok(()),
                    None => return Err(error(py, "TideflowError", "tasks are running elsewhere; cannot drive")),
                }
                continue;
            }
            for _ in 0..n {
                let Some(task) = self.inst.pop_ready(now) else { break };
                self.run_task(py, engine, task)?;
            }
            self.commit(py, engine)?;
        }
    }
}
