//! The typed values of the Python store protocol (`tideflow/stores/base.py`) in and out of Rust:
//! `InstanceMeta`, `Commit`, `ListQuery` and `Claim` built as NamedTuples, and [`Check`], which
//! reads what a store returned (or a caller passed) field by field, so that a wrong shape is an
//! error naming the store, the method and what came back. Used by every path that talks to a
//! store written in Python (`pystore.rs`, `async_run.rs`) and by `NativeStore`'s arguments.

use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyBool, PyBytes, PyFloat, PyInt, PyList, PyModule, PyString, PyTuple, PyType};
use tideflow_core::store::{Claim, Commit, Count, InstanceMeta, ListPage, ListQuery, Loaded, StoredInstance};
use tideflow_core::{CoreError, Status};

use crate::pystore::{classes, set_cause, store_error};

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

/// A short repr of a value, for messages.
pub fn shown(v: &Bound<'_, PyAny>) -> String {
    let r = v.repr().map(|r| r.to_string()).unwrap_or_else(|_| "?".into());
    if r.chars().count() > 120 {
        format!("{}...", r.chars().take(117).collect::<String>())
    } else {
        r
    }
}

/// Checks the values one method of one store returned (or, `given`, was passed from Python).
pub struct Check<'a> {
    /// The store's name (`describe()`).
    pub store: &'a str,
    /// The method.
    pub method: &'static str,
    /// Whether the values are arguments given to the method (else what it returned).
    pub given: bool,
}

impl Check<'_> {
    /// The error for a value `got` where `what` was expected (a `CoreError::Store`).
    pub fn bad(&self, what: &str, got: &Bound<'_, PyAny>) -> CoreError {
        set_cause(None); // not caused by an exception: none from an earlier call may stick to it
        let verb = if self.given { "was given" } else { "returned" };
        CoreError::Store(format!(
            "{}: {}() {verb} {} where {what} was expected",
            self.store,
            self.method,
            shown_typed(got)
        ))
    }

    pub fn text(&self, what: &str, v: &Bound<'_, PyAny>) -> Result<String, CoreError> {
        match v.cast::<PyString>() {
            Ok(s) => s.to_str().map(str::to_string).map_err(|_| self.bad(what, v)),
            Err(_) => Err(self.bad(what, v)),
        }
    }

    pub fn opt_text(&self, what: &str, v: &Bound<'_, PyAny>) -> Result<Option<String>, CoreError> {
        if v.is_none() {
            Ok(None)
        } else {
            self.text(what, v).map(Some)
        }
    }

    /// A non-negative int (not a bool).
    pub fn uint(&self, what: &str, v: &Bound<'_, PyAny>) -> Result<u64, CoreError> {
        if v.is_instance_of::<PyInt>() && !v.is_instance_of::<PyBool>() {
            v.extract::<u64>().map_err(|_| self.bad(what, v))
        } else {
            Err(self.bad(what, v))
        }
    }

    /// A float (an int is taken too; a bool is not).
    pub fn float(&self, what: &str, v: &Bound<'_, PyAny>) -> Result<f64, CoreError> {
        if v.is_instance_of::<PyFloat>() || (v.is_instance_of::<PyInt>() && !v.is_instance_of::<PyBool>()) {
            v.extract::<f64>().map_err(|_| self.bad(what, v))
        } else {
            Err(self.bad(what, v))
        }
    }

    pub fn opt_float(&self, what: &str, v: &Bound<'_, PyAny>) -> Result<Option<f64>, CoreError> {
        if v.is_none() {
            Ok(None)
        } else {
            self.float(what, v).map(Some)
        }
    }

    /// A bool.
    pub fn boolean(&self, what: &str, v: &Bound<'_, PyAny>) -> Result<bool, CoreError> {
        match v.cast::<PyBool>() {
            Ok(b) => Ok(b.is_true()),
            Err(_) => Err(self.bad(what, v)),
        }
    }

    /// `bytes` (exactly: a record is never text).
    pub fn bytes(&self, what: &str, v: &Bound<'_, PyAny>) -> Result<Vec<u8>, CoreError> {
        match v.cast::<PyBytes>() {
            Ok(b) => Ok(b.as_bytes().to_vec()),
            Err(_) => Err(self.bad(what, v)),
        }
    }

    /// The items of a list (or tuple).
    pub fn items<'py>(&self, what: &str, v: &Bound<'py, PyAny>) -> Result<Vec<Bound<'py, PyAny>>, CoreError> {
        if let Ok(l) = v.cast::<PyList>() {
            Ok(l.iter().collect())
        } else if let Ok(t) = v.cast::<PyTuple>() {
            Ok(t.iter().collect())
        } else {
            Err(self.bad(what, v))
        }
    }

    /// The fields of an instance of the NamedTuple `class` (`n` of them).
    pub fn fields<'py>(
        &self,
        what: &str,
        class: &Py<PyType>,
        n: usize,
        v: &Bound<'py, PyAny>,
    ) -> Result<Vec<Bound<'py, PyAny>>, CoreError> {
        let py = v.py();
        let ok = v.is_instance(class.bind(py)).unwrap_or(false);
        match v.cast::<PyTuple>() {
            Ok(t) if ok && t.len() == n => Ok(t.iter().collect()),
            _ => Err(self.bad(what, v)),
        }
    }

    /// An `InstanceMeta`.
    pub fn meta(&self, v: &Bound<'_, PyAny>) -> Result<InstanceMeta, CoreError> {
        let c = classes(v.py()).map_err(|e| store_error(v.py(), self.store, self.method, e, None))?;
        let f = self.fields("an InstanceMeta", &c.instance_meta, 11, v)?;
        let status = self.text("InstanceMeta.status, a str,", &f[3])?;
        let Some(status) = Status::parse(&status) else {
            return Err(self.bad("a status (pending, running, suspended, completed, failed, cancelled)", &f[3]));
        };
        Ok(InstanceMeta {
            id: self.text("InstanceMeta.id, a str,", &f[0])?,
            workflow: self.text("InstanceMeta.workflow, a str,", &f[1])?,
            plan_hash: self.text("InstanceMeta.plan_hash, a str,", &f[2])?,
            status,
            version: self.uint("InstanceMeta.version, an int,", &f[4])?,
            created_at: self.float("InstanceMeta.created_at, a float,", &f[5])?,
            updated_at: self.float("InstanceMeta.updated_at, a float,", &f[6])?,
            due_at: self.opt_float("InstanceMeta.due_at, a float or None,", &f[7])?,
            owner: self.opt_text("InstanceMeta.owner, a str or None,", &f[8])?,
            lease_until: self.opt_float("InstanceMeta.lease_until, a float or None,", &f[9])?,
            error: self.opt_text("InstanceMeta.error, a str or None,", &f[10])?,
        })
    }

    /// A list of `InstanceMeta`.
    pub fn metas(&self, v: &Bound<'_, PyAny>) -> Result<Vec<InstanceMeta>, CoreError> {
        self.items("a list of InstanceMeta", v)?.iter().map(|m| self.meta(m)).collect()
    }

    /// A `StoredInstance`, or None.
    pub fn stored(&self, v: &Bound<'_, PyAny>) -> Result<Option<StoredInstance>, CoreError> {
        if v.is_none() {
            return Ok(None);
        }
        let c = classes(v.py()).map_err(|e| store_error(v.py(), self.store, self.method, e, None))?;
        let f = self.fields("a StoredInstance or None", &c.stored_instance, 2, v)?;
        Ok(Some(StoredInstance {
            meta: self.meta(&f[0])?,
            header: self.bytes("StoredInstance.header, bytes,", &f[1])?,
        }))
    }

    /// A list of records (`bytes`).
    pub fn records(&self, v: &Bound<'_, PyAny>) -> Result<Vec<Vec<u8>>, CoreError> {
        self.items("a list of bytes", v)?.iter().map(|r| self.bytes("a record, bytes,", r)).collect()
    }

    /// A list of `(number, record)` signals.
    pub fn signals(&self, v: &Bound<'_, PyAny>) -> Result<Vec<(u64, Vec<u8>)>, CoreError> {
        let what = "a list of (int, bytes) signals";
        let mut out = Vec::new();
        for s in self.items(what, v)? {
            let pair = self.items(what, &s)?;
            let [n, r] = pair.as_slice() else { return Err(self.bad("a signal, an (int, bytes) pair,", &s)) };
            out.push((self.uint("a signal number, an int,", n)?, self.bytes("a signal record, bytes,", r)?));
        }
        Ok(out)
    }

    /// A `Loaded`, or None.
    pub fn loaded(&self, v: &Bound<'_, PyAny>) -> Result<Option<Loaded>, CoreError> {
        if v.is_none() {
            return Ok(None);
        }
        let c = classes(v.py()).map_err(|e| store_error(v.py(), self.store, self.method, e, None))?;
        let f = self.fields("a Loaded or None", &c.loaded, 4, v)?;
        Ok(Some(Loaded {
            meta: self.meta(&f[0])?,
            header: self.bytes("Loaded.header, bytes,", &f[1])?,
            records: self.records(&f[2])?,
            signals: self.signals(&f[3])?,
        }))
    }

    /// A `ListPage`.
    pub fn page(&self, v: &Bound<'_, PyAny>) -> Result<ListPage, CoreError> {
        let c = classes(v.py()).map_err(|e| store_error(v.py(), self.store, self.method, e, None))?;
        let f = self.fields("a ListPage", &c.list_page, 2, v)?;
        Ok(ListPage { items: self.metas(&f[0])?, cursor: self.opt_text("ListPage.cursor, a str or None,", &f[1])? })
    }

    /// A list of `Count`.
    pub fn counts(&self, v: &Bound<'_, PyAny>) -> Result<Vec<Count>, CoreError> {
        let c = classes(v.py()).map_err(|e| store_error(v.py(), self.store, self.method, e, None))?;
        let mut out = Vec::new();
        for item in self.items("a list of Count", v)? {
            let f = self.fields("a Count", &c.count, 3, &item)?;
            let status = self.text("Count.status, a str,", &f[1])?;
            let Some(status) = Status::parse(&status) else { return Err(self.bad("a status", &f[1])) };
            out.push(Count {
                workflow: self.text("Count.workflow, a str,", &f[0])?,
                status,
                count: self.uint("Count.instances, an int,", &f[2])?,
            });
        }
        Ok(out)
    }
}

fn shown_typed(v: &Bound<'_, PyAny>) -> String {
    let tn = v.get_type().name().map(|n| n.to_string()).unwrap_or_else(|_| "?".into());
    format!("{tn} {}", shown(v))
}

pub fn names(statuses: &[Status]) -> Vec<&'static str> {
    statuses.iter().map(|s| s.as_str()).collect()
}

pub fn bytes_list<'py>(py: Python<'py>, records: &[Vec<u8>]) -> PyResult<Bound<'py, PyList>> {
    PyList::new(py, records.iter().map(|r| PyBytes::new(py, r)))
}

/// A `ListQuery` for Python.
pub fn query_to_py<'py>(py: Python<'py>, q: &ListQuery) -> PyResult<Bound<'py, PyAny>> {
    classes(py)?.list_query.bind(py).call1((
        PyList::new(py, names(&q.statuses))?,
        q.workflow.as_deref(),
        q.plan_hash.as_deref(),
        q.limit,
        q.cursor.as_deref(),
    ))
}

/// A `Claim` for Python.
pub fn claim_to_py<'py>(py: Python<'py>, c: &Claim<'_>) -> PyResult<Bound<'py, PyAny>> {
    classes(py)?.claim.bind(py).call1((c.owner, c.limit, c.lease, c.now, PyList::new(py, c.plan_hashes)?))
}
