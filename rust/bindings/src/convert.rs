//! The typed values of the Python store protocol (`tideflow/stores/base.py`) built in Rust:
//! `InstanceMeta` and `Commit` as NamedTuples. What comes back from a store is checked by
//! `pystore::Check`.

use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyBytes, PyList, PyModule};
use tideflow_core::store::{Commit, InstanceMeta};

static BASE: PyOnceLock<Py<PyModule>> = PyOnceLock::new();

/// The class `name` of `tideflow.stores.base`.
pub fn class<'py>(py: Python<'py>, name: &str) -> PyResult<Bound<'py, PyAny>> {
    BASE.get_or_try_init(py, || py.import("tideflow.stores.base").map(Bound::unbind))?.bind(py).getattr(name)
}

/// `InstanceMeta` for Python.
pub fn meta_to_py<'py>(py: Python<'py>, m: &InstanceMeta) -> PyResult<Bound<'py, PyAny>> {
    class(py, "InstanceMeta")?.call1((
        m.id.as_str(),
        m.workflow.as_str(),
        m.plan_hash.as_str(),
        m.status.as_str(),
        m.version,
        m.created_at,
        m.updated_at,
        m.due_at,
        m.owner.as_deref(),
        m.lease_until,
        m.error.as_deref(),
    ))
}

/// `Commit` for Python.
pub fn commit_to_py<'py>(py: Python<'py>, c: &Commit<'_>) -> PyResult<Bound<'py, PyAny>> {
    let records = PyList::new(py, c.records.iter().map(|r| PyBytes::new(py, r)))?;
    class(py, "Commit")?.call1((
        c.id,
        c.expected_version,
        c.status.as_str(),
        c.updated_at,
        c.due_at,
        c.header.map(|h| PyBytes::new(py, h)),
        records,
        c.signals_seen,
        c.owner,
        c.error,
    ))
}
