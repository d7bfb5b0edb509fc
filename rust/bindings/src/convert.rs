//! The typed values of the Python store protocol (`tideflow/stores/base.py`) in and out of Rust:
//! `InstanceMeta`, `StoredInstance`, `Loaded` and `Commit` as NamedTuples, checked field by field
//! on the way in so that a store returning the wrong shape gets an error naming what came back.

use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyBytes, PyList, PyModule};
use tideflow_core::store::{Commit, InstanceMeta, Loaded, StoredInstance};
use tideflow_core::Status;

use crate::errors::error;

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

/// The error for a store method that returned something of the wrong shape.
pub fn bad_return(py: Python<'_>, store: &str, method: &str, what: &str, got: &Bound<'_, PyAny>) -> PyErr {
    let shown = got.repr().map(|r| r.to_string()).unwrap_or_else(|_| "?".into());
    let shown: String = shown.chars().take(120).collect();
    error(py, "StoreError", format!("{store}: {method}() must return {what}, got {shown}"))
}

fn field<'py, T: FromPyObjectOwned<'py>>(v: &Bound<'py, PyAny>, name: &str) -> PyResult<T> {
    v.getattr(name)?.extract::<T>().map_err(Into::into)
}

/// An `InstanceMeta` from Python (any object with its fields).
pub fn meta_from_py(py: Python<'_>, v: &Bound<'_, PyAny>) -> PyResult<InstanceMeta> {
    let status: String = field(v, "status")?;
    let status = Status::parse(&status)
        .ok_or_else(|| error(py, "StoreError", format!("the store returned an unknown status {status:?}")))?;
    Ok(InstanceMeta {
        id: field(v, "id")?,
        workflow: field(v, "workflow")?,
        plan_hash: field(v, "plan_hash")?,
        status,
        version: field(v, "version")?,
        created_at: field(v, "created_at")?,
        updated_at: field(v, "updated_at")?,
        due_at: field(v, "due_at")?,
        owner: field(v, "owner")?,
        lease_until: field(v, "lease_until")?,
        error: field(v, "error")?,
    })
}

/// A `StoredInstance` (or None) from Python.
pub fn stored_from_py(py: Python<'_>, v: &Bound<'_, PyAny>) -> PyResult<Option<StoredInstance>> {
    if v.is_none() {
        return Ok(None);
    }
    let meta = meta_from_py(py, &v.getattr("meta")?)?;
    Ok(Some(StoredInstance { meta, header: field(v, "header")? }))
}

/// A `Loaded` (or None) from Python.
pub fn loaded_from_py(py: Python<'_>, v: &Bound<'_, PyAny>) -> PyResult<Option<Loaded>> {
    if v.is_none() {
        return Ok(None);
    }
    let meta = meta_from_py(py, &v.getattr("meta")?)?;
    Ok(Some(Loaded { meta, header: field(v, "header")?, records: field(v, "records")?, signals: field(v, "signals")? }))
}
