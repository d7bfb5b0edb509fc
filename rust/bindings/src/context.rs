//! `tideflow.Context`: what a step sees of its instance and position.

use std::sync::Arc;

use pyo3::prelude::*;
use pyo3::types::PyString;

use crate::cancels::CancelState;

/// The context a step receives as its first argument.
#[pyclass(module = "tideflow._core", name = "Context", frozen)]
pub struct Context {
    pub instance: Py<PyString>,
    pub step: Py<PyString>,
    pub attempt: u32,
    pub key: String,
    pub input: Py<PyAny>,
    pub cancel: Arc<CancelState>,
}

#[pymethods]
impl Context {
    /// The id of the workflow instance this step runs in.
    #[getter]
    fn instance_id(&self, py: Python<'_>) -> Py<PyString> {
        self.instance.clone_ref(py)
    }

    /// The name of the step being run.
    #[getter]
    fn step_name(&self, py: Python<'_>) -> Py<PyString> {
        self.step.clone_ref(py)
    }

    /// 1 on the first attempt, then 2, 3, … (an attempt interrupted by a crash counts).
    #[getter]
    fn attempt(&self) -> u32 {
        self.attempt
    }

    /// The step's position in the plan (stable across retries and resumes).
    #[getter]
    fn position(&self) -> &str {
        &self.key
    }

    /// A key for making side effects exactly-once: the same for every attempt and resume of this
    /// step position, different for every other position and loop iteration.
    #[getter]
    fn idempotency_key(&self, py: Python<'_>) -> PyResult<String> {
        Ok(format!("{}/{}", self.instance.bind(py).to_str()?, self.key))
    }

    /// The workflow's input.
    #[getter]
    fn input(&self, py: Python<'_>) -> Py<PyAny> {
        self.input.clone_ref(py)
    }

    /// Whether the instance was asked to cancel (check it in long steps, and stop early).
    #[getter]
    fn cancelled(&self) -> bool {
        self.cancel.requested()
    }

    /// Raises `tideflow.Cancelled` if the instance was asked to cancel.
    fn check_cancelled(&self, py: Python<'_>) -> PyResult<()> {
        if self.cancel.requested() {
            return Err(crate::errors::error(py, "Cancelled", "the instance was cancelled"));
        }
        Ok(())
    }

    fn __repr__(&self, py: Python<'_>) -> PyResult<String> {
        Ok(format!(
            "Context(instance_id={:?}, step_name={:?}, attempt={}, position={:?})",
            self.instance.bind(py).to_str()?,
            self.step.bind(py).to_str()?,
            self.attempt,
            self.key
        ))
    }
}
