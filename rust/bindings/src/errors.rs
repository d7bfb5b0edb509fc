//! The single mapping from core errors (and codec failures) onto the Python exception tree, which
//! is defined in `tideflow/errors.py` so that it is plain, typed Python.

use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyTuple, PyType};
use tideflow_core::CoreError;

static ERRORS: PyOnceLock<Py<PyModule>> = PyOnceLock::new();

/// The `tideflow.errors` module, imported once.
fn errors_module(py: Python<'_>) -> PyResult<&Bound<'_, PyModule>> {
    Ok(ERRORS.get_or_try_init(py, || py.import("tideflow.errors").map(Bound::unbind))?.bind(py))
}

/// An instance of `tideflow.errors.<class>` with `message` as its argument.
pub fn error(py: Python<'_>, class: &str, message: impl Into<String>) -> PyErr {
    let message = message.into();
    match errors_module(py).and_then(|m| m.getattr(class)) {
        Ok(cls) => match cls.cast_into::<PyType>() {
            Ok(t) => PyErr::from_type(t, (message,)),
            Err(_) => PyRuntimeError::new_err(message),
        },
        Err(e) => e,
    }
}

/// An instance of `tideflow.errors.<class>` built from `args`.
fn error_with<'py>(py: Python<'py>, class: &str, args: impl pyo3::call::PyCallArgs<'py>) -> PyErr {
    match errors_module(py).and_then(|m| m.getattr(class)).and_then(|cls| cls.call1(args)) {
        Ok(exc) => PyErr::from_value(exc),
        Err(e) => e,
    }
}

/// Maps a core error onto its Python class (a store's own exception, if any, as the cause).
pub fn core_error(py: Python<'_>, e: CoreError) -> PyErr {
    let err = match &e {
        CoreError::Conflict { instance, expected, found } => {
            error_with(py, "StoreConflict", (instance.as_str(), *expected, *found))
        }
        CoreError::LeaseLost { instance, owner, holder } => {
            error_with(py, "LeaseLost", (instance.as_str(), owner.as_deref(), holder.as_deref()))
        }
        other => {
            let class = match other {
                CoreError::Definition(_) => "DefinitionError",
                CoreError::Corrupt(_) => "CorruptCheckpoint",
                CoreError::UnknownInstance(_) => "UnknownInstance",
                CoreError::VersionMismatch { .. } => "VersionMismatch",
                CoreError::InvalidState(_) => "TideflowError",
                _ => "StoreError",
            };
            error(py, class, e.to_string())
        }
    };
    if matches!(e, CoreError::Store(_)) {
        if let Some(cause) = crate::pystore::take_cause() {
            err.set_cause(py, Some(cause));
        }
    }
    err
}

/// Extension trait: `result.py_err(py)?` maps a core error at the boundary.
pub trait IntoPy<T> {
    /// Maps the error side onto the Python exception tree.
    fn py_err(self, py: Python<'_>) -> PyResult<T>;
}

impl<T> IntoPy<T> for Result<T, CoreError> {
    fn py_err(self, py: Python<'_>) -> PyResult<T> {
        self.map_err(|e| core_error(py, e))
    }
}

/// Text of an exception for failure records: (type name, message, traceback).
pub fn describe_exception(py: Python<'_>, err: &PyErr) -> (String, String, String) {
    let ty = err.get_type(py);
    let name = ty.name().map(|n| n.to_string()).unwrap_or_else(|_| "Exception".into());
    let value = err.value(py);
    let message = value.str().map(|s| s.to_string()).unwrap_or_default();
    let traceback = format_traceback(py, err).unwrap_or_default();
    (name, message, traceback)
}

fn format_traceback(py: Python<'_>, err: &PyErr) -> PyResult<String> {
    let tb = py.import("traceback")?;
    let trace = err.traceback(py).map(Bound::into_any).unwrap_or_else(|| py.None().into_bound(py));
    let lines = tb.getattr("format_exception")?.call1((err.get_type(py), err.value(py), trace))?;
    let joined = pyo3::types::PyString::new(py, "").call_method1("join", (lines,))?;
    joined.extract()
}

/// Whether `err` is an instance of any class in `classes` (a tuple of exception types).
pub fn matches(py: Python<'_>, err: &PyErr, classes: &Bound<'_, PyTuple>) -> bool {
    !classes.is_empty() && err.value(py).is_instance(classes.as_any()).unwrap_or(false)
}
