//! `_core.Plan` and `_core.Compiled`: a validated plan plus the callables it refers to by index.

use std::sync::Arc;

use pyo3::prelude::*;
use pyo3::types::{PyString, PyTuple};
use tideflow_core::plan::Plan;

use crate::checked::Check;
use crate::errors::IntoPy;

/// A validated, hashed plan (data only: no code).
#[pyclass(module = "tideflow._core", name = "Plan", frozen)]
pub struct PyPlan {
    pub plan: Arc<Plan>,
}

#[pymethods]
impl PyPlan {
    /// Parses and validates a JSON plan spec; raises DefinitionError naming what is wrong.
    #[new]
    fn new(py: Python<'_>, spec: &str) -> PyResult<Self> {
        Ok(PyPlan { plan: Arc::new(Plan::from_json(spec).py_err(py)?) })
    }

    /// The workflow name.
    #[getter]
    fn name(&self) -> &str {
        &self.plan.name
    }

    /// The version label, if any.
    #[getter]
    fn version(&self) -> Option<&str> {
        self.plan.version.as_deref()
    }

    /// The content hash of the plan's structure.
    #[getter]
    fn hash(&self) -> &str {
        &self.plan.hash
    }

    /// The plan drawn as a Mermaid flowchart.
    fn to_mermaid(&self) -> String {
        self.plan.to_mermaid()
    }

    /// The plan spec as JSON.
    fn to_json(&self) -> String {
        self.plan.to_json()
    }
}

/// One step's callable and codec hooks.
pub struct StepEntry {
    pub func: Py<PyAny>,
    pub name: Py<PyString>,
    pub is_async: bool,
    pub encode: Option<Py<PyAny>>,
    pub decode: Option<Py<PyAny>>,
    pub retry_on: Py<PyTuple>,
    pub give_up_on: Py<PyTuple>,
    /// Per-attempt timeout in seconds.
    pub timeout: Option<f64>,
    /// What its output is checked against before it is stored.
    pub check: Check,
    /// Its return type hint, described for error messages.
    pub hint: String,
}

/// A plan bound to this process's callables: what the engine runs.
#[pyclass(module = "tideflow._core", name = "Compiled", frozen)]
pub struct Compiled {
    pub plan: Arc<Plan>,
    pub steps: Vec<StepEntry>,
    pub fns: Vec<Py<PyAny>>,
    pub input_encode: Option<Py<PyAny>>,
    pub input_decode: Option<Py<PyAny>>,
    pub output_decode: Option<Py<PyAny>>,
    /// What the workflow input is checked against (its first step's input hint) before it is
    /// stored, and that hint described for error messages.
    pub input_check: Check,
    pub input_hint: String,
    /// The decoder of each wait's signal payload (None: plain JSON).
    pub waits: Vec<Option<Py<PyAny>>>,
}

type StepTuple<'py> = (
    Bound<'py, PyAny>,
    bool,
    Option<Bound<'py, PyAny>>,
    Option<Bound<'py, PyAny>>,
    Bound<'py, PyTuple>,
    Bound<'py, PyTuple>,
    String,
    String,
);

#[pymethods]
impl Compiled {
    /// Binds `plan` to callables: `steps[i]` is `(func, is_async, encode, decode, retry_on,
    /// give_up_on, check, hint)` for the plan's step `i`; `fns[i]` is its condition or router `i`.
    /// `check` (and `input_check`) is `"untyped"`, `"typed"` or a scalar's name (`"int"`...):
    /// what a value is checked against before it is stored; `hint` describes the type hint.
    #[new]
    #[allow(clippy::too_many_arguments)] // mirrors the Python constructor's keyword arguments
    #[pyo3(signature = (plan, steps, fns, input_encode=None, input_decode=None, output_decode=None, waits=Vec::new(), input_check="untyped", input_hint=""))]
    fn new(
        py: Python<'_>,
        plan: &PyPlan,
        steps: Vec<StepTuple<'_>>,
        fns: Vec<Bound<'_, PyAny>>,
        input_encode: Option<Bound<'_, PyAny>>,
        input_decode: Option<Bound<'_, PyAny>>,
        output_decode: Option<Bound<'_, PyAny>>,
        waits: Vec<Option<Bound<'_, PyAny>>>,
        input_check: &str,
        input_hint: &str,
    ) -> PyResult<Self> {
        let p = &plan.plan;
        if steps.len() != p.steps.len() || fns.len() != p.fns.len() {
            return Err(crate::errors::error(
                py,
                "DefinitionError",
                format!(
                    "plan {:?} names {} steps and {} functions, but {} and {} were bound",
                    p.name,
                    p.steps.len(),
                    p.fns.len(),
                    steps.len(),
                    fns.len()
                ),
            ));
        }
        let steps = steps
            .into_iter()
            .zip(p.steps.iter())
            .map(|((func, is_async, encode, decode, retry_on, give_up_on, check, hint), spec)| {
                Ok(StepEntry {
                    func: func.unbind(),
                    name: PyString::intern(py, &spec.name).unbind(),
                    is_async,
                    encode: encode.filter(|e| !e.is_none()).map(Bound::unbind),
                    decode: decode.filter(|e| !e.is_none()).map(Bound::unbind),
                    retry_on: retry_on.unbind(),
                    give_up_on: give_up_on.unbind(),
                    timeout: spec.timeout,
                    check: Check::parse(py, &check)?,
                    hint,
                })
            })
            .collect::<PyResult<Vec<_>>>()?;
        let unbind = |o: Option<Bound<'_, PyAny>>| o.filter(|e| !e.is_none()).map(Bound::unbind);
        Ok(Compiled {
            plan: Arc::clone(p),
            steps,
            fns: fns.into_iter().map(Bound::unbind).collect(),
            input_encode: unbind(input_encode),
            input_decode: unbind(input_decode),
            output_decode: unbind(output_decode),
            input_check: Check::parse(py, input_check)?,
            input_hint: input_hint.to_string(),
            waits: waits.into_iter().map(unbind).collect(),
        })
    }

    /// The plan's content hash.
    #[getter]
    fn hash(&self) -> &str {
        &self.plan.hash
    }

    /// The workflow name.
    #[getter]
    fn name(&self) -> &str {
        &self.plan.name
    }
}
