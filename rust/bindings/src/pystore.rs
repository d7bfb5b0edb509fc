//! A store written in Python (see `tideflow/stores/base.py`), seen by the core as a `Store`.
//! Records cross as `bytes`; the Python side never parses them.

use std::cell::RefCell;

use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList, PyTuple};
use tideflow_core::store::{Commit, Created, InstanceMeta, ListQuery, Store, StoredInstance};
use tideflow_core::{CoreError, Status};

thread_local! {
    /// The Python exception behind the last `CoreError::Store` from a Python store, attached as
    /// the cause when the error reaches Python again (`errors::core_error`).
    static CAUSE: RefCell<Option<PyErr>> = const { RefCell::new(None) };
}

/// Takes the pending cause, if any.
pub fn take_cause() -> Option<PyErr> {
    CAUSE.with(|c| c.borrow_mut().take())
}

/// A Python object implementing the store protocol.
pub struct PyStore {
    obj: Py<PyAny>,
    name: String,
}

impl PyStore {
    /// Wraps `obj`, checking that it has every method of the protocol.
    pub fn new(obj: Bound<'_, PyAny>) -> PyResult<PyStore> {
        let methods = [
            "create",
            "commit",
            "commit_many",
            "get",
            "records",
            "list",
            "delete",
            "purge",
            "send_signal",
            "signals",
            "due",
            "describe",
        ];
        let missing: Vec<&str> = methods.iter().copied().filter(|m| !obj.hasattr(*m).unwrap_or(false)).collect();
        if !missing.is_empty() {
            let tn = obj.get_type().name()?.to_string();
            return Err(crate::errors::error(
                obj.py(),
                "StoreError",
                format!("{tn} is not a store: it lacks {}", missing.join(", ")),
            ));
        }
        let name = obj.call_method0("describe")?.extract::<String>()?;
        Ok(PyStore { obj: obj.unbind(), name })
    }

    fn map_err(&self, py: Python<'_>, e: PyErr) -> CoreError {
        let value = e.value(py);
        let class = value.get_type().name().map(|n| n.to_string()).unwrap_or_default();
        let attr = |n: &str| value.getattr(n).ok();
        if class == "StoreConflict" {
            let id = attr("instance_id").and_then(|v| v.extract::<String>().ok()).unwrap_or_default();
            let expected = attr("expected").and_then(|v| v.extract::<u64>().ok()).unwrap_or(0);
            let found = attr("found").and_then(|v| v.extract::<u64>().ok()).unwrap_or(0);
            return CoreError::Conflict { instance: id, expected, found };
        }
        if class == "UnknownInstance" {
            return CoreError::UnknownInstance(value.str().map(|s| s.to_string()).unwrap_or_default());
        }
        if class == "SignalError" {
            return CoreError::InvalidState(value.str().map(|s| s.to_string()).unwrap_or_default());
        }
        let text = value.str().map(|s| s.to_string()).unwrap_or_default();
        CAUSE.with(|c| *c.borrow_mut() = Some(e));
        CoreError::Store(format!("{}: {class}: {text}", self.name))
    }

    fn call<T>(&self, f: impl FnOnce(Python<'_>, &Bound<'_, PyAny>) -> PyResult<T>) -> Result<T, CoreError> {
        Python::attach(|py| f(py, self.obj.bind(py)).map_err(|e| self.map_err(py, e)))
    }
}

fn meta_tuple<'py>(py: Python<'py>, m: &InstanceMeta) -> PyResult<Bound<'py, PyTuple>> {
    (m.id.as_str(), m.workflow.as_str(), m.status.as_str(), m.version, m.created_at, m.updated_at, m.due_at)
        .into_pyobject(py)
}

type MetaTuple = (String, String, String, u64, f64, f64, Option<f64>);

fn meta_from(py: Python<'_>, t: MetaTuple) -> PyResult<InstanceMeta> {
    let (id, workflow, status, version, created_at, updated_at, due_at) = t;
    let status = Status::parse(&status)
        .ok_or_else(|| crate::errors::error(py, "StoreError", format!("store returned unknown status {status:?}")))?;
    Ok(InstanceMeta { id, workflow, status, version, created_at, updated_at, due_at })
}

fn stored_from(py: Python<'_>, v: &Bound<'_, PyAny>) -> PyResult<Option<StoredInstance>> {
    if v.is_none() {
        return Ok(None);
    }
    let (meta, header): (MetaTuple, Vec<u8>) = v.extract()?;
    Ok(Some(StoredInstance { meta: meta_from(py, meta)?, header }))
}

fn bytes_list<'py>(py: Python<'py>, records: &[Vec<u8>]) -> PyResult<Bound<'py, PyList>> {
    PyList::new(py, records.iter().map(|r| PyBytes::new(py, r)))
}

fn commit_tuple<'py>(py: Python<'py>, c: &Commit<'_>) -> PyResult<Bound<'py, PyTuple>> {
    let header = c.header.map(|h| PyBytes::new(py, h));
    (
        c.id,
        c.expected_version,
        c.status.as_str(),
        c.updated_at,
        c.due_at,
        header,
        bytes_list(py, c.records)?,
        c.signals_seen,
    )
        .into_pyobject(py)
}

fn names(statuses: &[Status]) -> Vec<&'static str> {
    statuses.iter().map(|s| s.as_str()).collect()
}

impl Store for PyStore {
    fn create(&mut self, meta: &InstanceMeta, header: &[u8], records: &[Vec<u8>]) -> Result<Created, CoreError> {
        self.call(|py, o| {
            let r =
                o.call_method1("create", (meta_tuple(py, meta)?, PyBytes::new(py, header), bytes_list(py, records)?))?;
            Ok(match stored_from(py, &r)? {
                None => Created::New,
                Some(s) => Created::Existing(s),
            })
        })
    }

    fn commit(&mut self, c: &Commit<'_>) -> Result<(), CoreError> {
        self.call(|py, o| o.call_method1("commit", (commit_tuple(py, c)?,)).map(|_| ()))
    }

    fn commit_many(&mut self, commits: &[Commit<'_>]) -> Result<(), CoreError> {
        self.call(|py, o| {
            let list = PyList::new(py, commits.iter().map(|c| commit_tuple(py, c)).collect::<PyResult<Vec<_>>>()?)?;
            o.call_method1("commit_many", (list,)).map(|_| ())
        })
    }

    fn get(&mut self, id: &str) -> Result<Option<StoredInstance>, CoreError> {
        self.call(|py, o| stored_from(py, &o.call_method1("get", (id,))?))
    }

    fn records(&mut self, id: &str) -> Result<Vec<Vec<u8>>, CoreError> {
        self.call(|_, o| o.call_method1("records", (id,))?.extract())
    }

    fn list(&mut self, q: &ListQuery) -> Result<Vec<InstanceMeta>, CoreError> {
        self.call(|py, o| {
            let rows: Vec<MetaTuple> =
                o.call_method1("list", (names(&q.statuses), q.workflow.as_deref(), q.limit))?.extract()?;
            rows.into_iter().map(|t| meta_from(py, t)).collect()
        })
    }

    fn delete(&mut self, id: &str) -> Result<bool, CoreError> {
        self.call(|_, o| o.call_method1("delete", (id,))?.extract())
    }

    fn purge(&mut self, before: f64, statuses: &[Status]) -> Result<u64, CoreError> {
        self.call(|_, o| o.call_method1("purge", (before, names(statuses)))?.extract())
    }

    fn send_signal(&mut self, id: &str, record: &[u8], now: f64) -> Result<u64, CoreError> {
        self.call(|py, o| o.call_method1("send_signal", (id, PyBytes::new(py, record), now))?.extract())
    }

    fn signals(&mut self, id: &str) -> Result<Vec<(u64, Vec<u8>)>, CoreError> {
        self.call(|_, o| o.call_method1("signals", (id,))?.extract())
    }

    fn due(&mut self, now: f64, limit: Option<usize>) -> Result<Vec<InstanceMeta>, CoreError> {
        self.call(|py, o| {
            let rows: Vec<MetaTuple> = o.call_method1("due", (now, limit))?.extract()?;
            rows.into_iter().map(|t| meta_from(py, t)).collect()
        })
    }

    fn describe(&self) -> String {
        self.name.clone()
    }
}
