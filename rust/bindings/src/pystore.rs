//! A store written in Python (see `tideflow/stores/base.py`), seen by the core as a `Store`.
//! Records cross as `bytes`, indexed fields as the protocol's NamedTuples; the Python side never
//! parses a record. An `AsyncStore`'s coroutines are run to completion by the engine's runner on
//! the synchronous paths (the asyncio driver awaits them itself).

use std::cell::RefCell;

use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList};
use tideflow_core::store::{
    Claim, Commit, Count, Created, InstanceMeta, ListPage, ListQuery, Loaded, Store, StoredInstance,
};
use tideflow_core::{CoreError, Status};

use crate::convert::{bad_return, class, commit_to_py, loaded_from_py, meta_from_py, meta_to_py, stored_from_py};

thread_local! {
    /// The Python exception behind the last `CoreError::Store` from a Python store, attached as
    /// the cause when the error reaches Python again (`errors::core_error`).
    static CAUSE: RefCell<Option<PyErr>> = const { RefCell::new(None) };
}

/// Takes the pending cause, if any.
pub fn take_cause() -> Option<PyErr> {
    CAUSE.with(|c| c.borrow_mut().take())
}

/// The operations of the protocol, checked at construction.
const METHODS: [&str; 16] = [
    "create",
    "commit",
    "get",
    "load",
    "records",
    "signals",
    "list",
    "counts",
    "delete",
    "purge",
    "send_signal",
    "due",
    "claim",
    "extend",
    "release",
    "describe",
];

/// A Python object implementing `Store` or `AsyncStore`.
pub struct PyStore {
    obj: Py<PyAny>,
    name: String,
    is_async: bool,
    /// Runs a coroutine to completion (for an `AsyncStore` on the synchronous paths).
    runner: Py<PyAny>,
}

impl PyStore {
    /// Wraps `obj`, checking that it has every operation of the protocol.
    pub fn new(obj: Bound<'_, PyAny>, runner: Py<PyAny>) -> PyResult<PyStore> {
        let py = obj.py();
        let missing: Vec<&str> = METHODS.iter().copied().filter(|m| !obj.hasattr(*m).unwrap_or(false)).collect();
        if !missing.is_empty() {
            let tn = obj.get_type().name()?.to_string();
            return Err(crate::errors::error(
                py,
                "StoreError",
                format!("{tn} is not a store: it lacks {}", missing.join(", ")),
            ));
        }
        let name = obj.call_method0("describe")?.extract::<String>()?;
        let inspect = py.import("inspect")?;
        let is_async = inspect.call_method1("iscoroutinefunction", (obj.getattr("commit")?,))?.is_truthy()?;
        Ok(PyStore { obj: obj.unbind(), name, is_async, runner })
    }

    /// Another handle on the same Python object (no lock is shared between handles).
    pub fn clone_ref(&self, py: Python<'_>) -> PyStore {
        PyStore {
            obj: self.obj.clone_ref(py),
            name: self.name.clone(),
            is_async: self.is_async,
            runner: self.runner.clone_ref(py),
        }
    }

    /// Whether the store is an `AsyncStore`.
    pub fn is_async(&self) -> bool {
        self.is_async
    }

    /// The store object.
    pub fn object(&self) -> &Py<PyAny> {
        &self.obj
    }

    fn map_err(&self, py: Python<'_>, e: PyErr) -> CoreError {
        let value = e.value(py);
        let is = |name: &str| {
            py.import("tideflow.errors")
                .and_then(|m| m.getattr(name))
                .and_then(|cls| value.is_instance(&cls))
                .unwrap_or(false)
        };
        let attr = |n: &str| value.getattr(n).ok();
        let text = || value.str().map(|s| s.to_string()).unwrap_or_default();
        if is("StoreConflict") {
            let id = attr("instance_id").and_then(|v| v.extract::<String>().ok()).unwrap_or_default();
            let expected = attr("expected").and_then(|v| v.extract::<u64>().ok()).unwrap_or(0);
            let found = attr("found").and_then(|v| v.extract::<u64>().ok()).unwrap_or(0);
            return CoreError::Conflict { instance: id, expected, found };
        }
        if is("LeaseLost") {
            let id = attr("instance_id").and_then(|v| v.extract::<String>().ok()).unwrap_or_default();
            let owner = attr("owner").and_then(|v| v.extract::<Option<String>>().ok()).flatten();
            let holder = attr("holder").and_then(|v| v.extract::<Option<String>>().ok()).flatten();
            return CoreError::LeaseLost { instance: id, owner, holder };
        }
        if is("UnknownInstance") {
            return CoreError::UnknownInstance(text());
        }
        if is("SignalError") {
            return CoreError::InvalidState(text());
        }
        let class = value.get_type().name().map(|n| n.to_string()).unwrap_or_default();
        let msg = format!("{}: {class}: {}", self.name, text());
        CAUSE.with(|c| *c.borrow_mut() = Some(e));
        CoreError::Store(msg)
    }

    /// Calls `method` with `args` (awaiting an `AsyncStore`'s coroutine) and converts the result.
    fn call<T>(
        &self,
        method: &str,
        args: impl FnOnce(Python<'_>) -> PyResult<Bound<'_, pyo3::types::PyTuple>>,
        convert: impl FnOnce(Python<'_>, &Bound<'_, PyAny>) -> PyResult<T>,
    ) -> Result<T, CoreError> {
        Python::attach(|py| {
            let run = || -> PyResult<T> {
                let mut r = self.obj.bind(py).call_method1(method, args(py)?)?;
                if self.is_async {
                    r = self.runner.bind(py).call1((r, py.None()))?;
                }
                convert(py, &r).map_err(|e| {
                    if e.is_instance_of::<pyo3::exceptions::PyTypeError>(py)
                        || e.is_instance_of::<pyo3::exceptions::PyAttributeError>(py)
                    {
                        bad_return(py, &self.name, method, &format!("what the protocol says ({e})"), &r)
                    } else {
                        e
                    }
                })
            };
            run().map_err(|e| self.map_err(py, e))
        })
    }
}

fn names(statuses: &[Status]) -> Vec<&'static str> {
    statuses.iter().map(|s| s.as_str()).collect()
}

fn metas(py: Python<'_>, v: &Bound<'_, PyAny>) -> PyResult<Vec<InstanceMeta>> {
    v.try_iter()?.map(|m| meta_from_py(py, &m?)).collect()
}

impl Store for PyStore {
    fn create(&mut self, meta: &InstanceMeta, header: &[u8], records: &[Vec<u8>]) -> Result<Created, CoreError> {
        self.call(
            "create",
            |py| {
                let recs = PyList::new(py, records.iter().map(|r| PyBytes::new(py, r)))?;
                (meta_to_py(py, meta)?, PyBytes::new(py, header), recs).into_pyobject(py)
            },
            |py, r| Ok(stored_from_py(py, r)?.map_or(Created::New, Created::Existing)),
        )
    }

    fn commit(&mut self, c: &Commit<'_>) -> Result<(), CoreError> {
        self.call("commit", |py| (commit_to_py(py, c)?,).into_pyobject(py), |_, _| Ok(()))
    }

    fn get(&mut self, id: &str) -> Result<Option<StoredInstance>, CoreError> {
        self.call("get", |py| (id,).into_pyobject(py), stored_from_py)
    }

    fn load(&mut self, id: &str) -> Result<Option<Loaded>, CoreError> {
        self.call("load", |py| (id,).into_pyobject(py), loaded_from_py)
    }

    fn records(&mut self, id: &str, after: u64) -> Result<Vec<Vec<u8>>, CoreError> {
        self.call("records", |py| (id, after).into_pyobject(py), |_, r| r.extract())
    }

    fn list(&mut self, q: &ListQuery) -> Result<ListPage, CoreError> {
        self.call(
            "list",
            |py| {
                let query = class(py, "ListQuery")?.call1((
                    names(&q.statuses),
                    q.workflow.as_deref(),
                    q.plan_hash.as_deref(),
                    q.limit,
                    q.cursor.as_deref(),
                ))?;
                (query,).into_pyobject(py)
            },
            |py, r| Ok(ListPage { items: metas(py, &r.getattr("items")?)?, cursor: r.getattr("cursor")?.extract()? }),
        )
    }

    fn counts(&mut self) -> Result<Vec<Count>, CoreError> {
        self.call(
            "counts",
            |py| Ok(pyo3::types::PyTuple::empty(py)),
            |py, r| {
                r.try_iter()?
                    .map(|c| {
                        let c = c?;
                        let status: String = c.getattr("status")?.extract()?;
                        let status = Status::parse(&status).ok_or_else(|| {
                            crate::errors::error(py, "StoreError", format!("counts(): unknown status {status:?}"))
                        })?;
                        Ok(Count {
                            workflow: c.getattr("workflow")?.extract()?,
                            status,
                            count: c.getattr("instances")?.extract()?,
                        })
                    })
                    .collect()
            },
        )
    }

    fn delete(&mut self, id: &str) -> Result<bool, CoreError> {
        self.call("delete", |py| (id,).into_pyobject(py), |_, r| r.extract())
    }

    fn purge(&mut self, before: f64, statuses: &[Status]) -> Result<u64, CoreError> {
        self.call("purge", |py| (before, names(statuses)).into_pyobject(py), |_, r| r.extract())
    }

    fn send_signal(&mut self, id: &str, record: &[u8], now: f64) -> Result<u64, CoreError> {
        self.call("send_signal", |py| (id, PyBytes::new(py, record), now).into_pyobject(py), |_, r| r.extract())
    }

    fn signals(&mut self, id: &str, after: u64) -> Result<Vec<(u64, Vec<u8>)>, CoreError> {
        self.call("signals", |py| (id, after).into_pyobject(py), |_, r| r.extract())
    }

    fn due(&mut self, now: f64, limit: Option<usize>) -> Result<Vec<InstanceMeta>, CoreError> {
        self.call("due", |py| (now, limit).into_pyobject(py), metas)
    }

    fn claim(&mut self, c: &Claim<'_>) -> Result<Vec<InstanceMeta>, CoreError> {
        self.call(
            "claim",
            |py| {
                let claim = class(py, "Claim")?.call1((c.owner, c.limit, c.lease, c.now, c.plan_hashes.to_vec()))?;
                (claim,).into_pyobject(py)
            },
            metas,
        )
    }

    fn extend(&mut self, id: &str, owner: &str, lease: f64, now: f64) -> Result<f64, CoreError> {
        self.call("extend", |py| (id, owner, lease, now).into_pyobject(py), |_, r| r.extract())
    }

    fn release(&mut self, id: &str, owner: &str) -> Result<bool, CoreError> {
        self.call("release", |py| (id, owner).into_pyobject(py), |_, r| r.extract())
    }

    fn describe(&self) -> String {
        self.name.clone()
    }
}
