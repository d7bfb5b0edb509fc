//! The one place observer hooks are called from: the core's step events as they happen, and the
//! start and end of a run. With no observer, nothing is built and nothing is called.

use pyo3::prelude::*;
use pyo3::types::PyString;
use tideflow_core::drive::Event;
use tideflow_core::Status;

use crate::workflow::Compiled;

/// `notify(event, *args)` of the engine's observer (see `tideflow/observe.py`), if any.
pub struct Observer {
    notify: Option<Py<PyAny>>,
}

impl Observer {
    /// Wraps the notifier (None, or Python None: not observed).
    pub fn new(py: Python<'_>, notify: Option<Py<PyAny>>) -> Self {
        Observer { notify: notify.filter(|n| !n.is_none(py)) }
    }

    /// Whether anyone listens (drivers then collect events).
    pub fn active(&self) -> bool {
        self.notify.is_some()
    }

    /// Hands the core's step events for instance `id` of `wf` to the observer, in order.
    pub fn steps(&self, py: Python<'_>, id: &Py<PyString>, wf: &Compiled, events: Vec<Event>) -> PyResult<()> {
        let Some(n) = &self.notify else { return Ok(()) };
        let n = n.bind(py);
        let name = |step: u32| wf.steps[step as usize].name.clone_ref(py);
        for e in events {
            match e {
                Event::StepStarted { step, key, attempt } => {
                    n.call1(("step_started", id.clone_ref(py), name(step), attempt, key))?;
                }
                Event::StepCompleted { step, key, attempt, duration } => {
                    n.call1(("step_completed", id.clone_ref(py), name(step), attempt, key, duration))?;
                }
                Event::StepFailed { step, key, attempt, duration, error, retrying } => {
                    let args = ("step_failed", id.clone_ref(py), name(step), attempt, key, duration, error, retrying);
                    n.call1(args)?;
                }
            }
        }
        Ok(())
    }

    /// A run of instance `id` of `workflow` starts (or resumes) in this process.
    pub fn started(&self, py: Python<'_>, id: &str, workflow: &str) -> PyResult<()> {
        if let Some(n) = &self.notify {
            n.bind(py).call1(("workflow_started", id, workflow))?;
        }
        Ok(())
    }

    /// A run of instance `id` ended here with `status`, `output` and `error` (JSON bytes).
    pub fn ended(
        &self,
        py: Python<'_>,
        id: &str,
        workflow: &str,
        status: Status,
        output: &Py<PyAny>,
        error: &Py<PyAny>,
    ) -> PyResult<()> {
        let Some(n) = &self.notify else { return Ok(()) };
        let n = n.bind(py);
        match status {
            Status::Completed => n.call1(("workflow_completed", id, workflow, output.clone_ref(py)))?,
            Status::Failed => n.call1(("workflow_failed", id, workflow, error.clone_ref(py)))?,
            Status::Cancelled => n.call1(("workflow_cancelled", id, workflow))?,
            Status::Suspended => n.call1(("workflow_suspended", id, workflow))?,
            Status::Pending | Status::Running => return Ok(()),
        };
        Ok(())
    }
}
