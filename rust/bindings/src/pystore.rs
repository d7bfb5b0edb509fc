//! A store written in Python (`tideflow.stores.base.Store`, or `AsyncStore` whose coroutines a
//! runner callable runs to completion), seen by the core as a [`Store`].
//!
//! Values cross as the typed NamedTuples of `base.py` (the classes are imported once); records
//! as `bytes`, which the Python side never parses. What the store returns is checked field by
//! field: a wrong type is a `StoreError` naming the store, the method and what came back. Its
//! exceptions are recognised by `isinstance`: `StoreConflict`, `LeaseLost`, `UnknownInstance`,
//! `SignalError` and `InvalidArgument` become the matching [`CoreError`]; anything else becomes
//! [`CoreError::Store`], with the Python exception kept as the `__cause__` of the `StoreError`
//! that reaches Python ([`take_cause`]).
//!
//! An `AsyncStore` may also offer a synchronous twin over the same data, its `blocking()`
//! method's `Store`: then the synchronous paths (`engine.run`, `signal`, `list`, ...) call the
//! twin, and only `run_async` awaits the coroutines. A store whose driver has a synchronous
//! client (redis-py, pymongo) avoids a hop to the runner's event loop on every call that way.
//!
//! A `PyStore` holds no lock: every method works from `&self` with the GIL, and
//! [`PyStore::clone_ref`] is a cheap handle, so a Python store driven from two threads cannot
//! deadlock on a lock held across a call into Python.

use std::cell::RefCell;
use std::sync::Arc;

use pyo3::call::PyCallArgs;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyBytes, PyList, PyString, PyType};
use tideflow_core::store::{
    Claim, Commit, Count, Created, InstanceMeta, ListPage, ListQuery, Loaded, Store, StoredInstance,
};
use tideflow_core::{CoreError, Status};

use crate::convert::{bytes_list, claim_to_py, commit_to_py, meta_to_py, names, query_to_py, shown, Check};

thread_local! {
    /// The Python exception behind the last `CoreError::Store` from a Python store, attached as
    /// the cause when the error reaches Python again (`errors::core_error`).
    static CAUSE: RefCell<Option<PyErr>> = const { RefCell::new(None) };
}

/// Takes the pending cause, if any.
pub fn take_cause() -> Option<PyErr> {
    CAUSE.with(|c| c.borrow_mut().take())
}

pub fn set_cause(e: Option<PyErr>) {
    CAUSE.with(|c| *c.borrow_mut() = e);
}

/// The operations of the protocol besides `describe` (synchronous in both protocols).
pub const OPERATIONS: [&str; 15] = [
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
];

/// The classes of `tideflow.stores.base` and `tideflow.errors` the adapter builds and recognises.
pub struct Classes {
    pub instance_meta: Py<PyType>,
    pub stored_instance: Py<PyType>,
    pub loaded: Py<PyType>,
    pub list_query: Py<PyType>,
    pub list_page: Py<PyType>,
    pub count: Py<PyType>,
    pub claim: Py<PyType>,
    pub commit: Py<PyType>,
    store_conflict: Py<PyType>,
    lease_lost: Py<PyType>,
    unknown_instance: Py<PyType>,
    signal_error: Py<PyType>,
    invalid_argument: Py<PyType>,
    store_error: Py<PyType>,
    iscoroutinefunction: Py<PyAny>,
}

static CLASSES: PyOnceLock<Classes> = PyOnceLock::new();

/// The classes, imported once.
pub fn classes(py: Python<'_>) -> PyResult<&Classes> {
    CLASSES.get_or_try_init(py, || {
        let base = py.import("tideflow.stores.base")?;
        let errors = py.import("tideflow.errors")?;
        let t = |m: &Bound<'_, PyModule>, n: &str| -> PyResult<Py<PyType>> {
            Ok(m.getattr(n)?.cast_into::<PyType>()?.unbind())
        };
        Ok(Classes {
            instance_meta: t(&base, "InstanceMeta")?,
            stored_instance: t(&base, "StoredInstance")?,
            loaded: t(&base, "Loaded")?,
            list_query: t(&base, "ListQuery")?,
            list_page: t(&base, "ListPage")?,
            count: t(&base, "Count")?,
            claim: t(&base, "Claim")?,
            commit: t(&base, "Commit")?,
            store_conflict: t(&errors, "StoreConflict")?,
            lease_lost: t(&errors, "LeaseLost")?,
            unknown_instance: t(&errors, "UnknownInstance")?,
            signal_error: t(&errors, "SignalError")?,
            invalid_argument: t(&errors, "InvalidArgument")?,
            store_error: t(&errors, "StoreError")?,
            iscoroutinefunction: py.import("inspect")?.getattr("iscoroutinefunction")?.unbind(),
        })
    })
}

/// A Python object implementing the store protocol.
pub struct PyStore {
    obj: Py<PyAny>,
    /// Runs an `AsyncStore`'s coroutine to completion (`runner(coro)`), for the synchronous paths.
    runner: Py<PyAny>,
    /// An `AsyncStore`'s synchronous twin (what its `blocking()` returned): the synchronous paths
    /// call it directly instead of running the coroutines through `runner`.
    blocking: Option<Py<PyAny>>,
    is_async: bool,
    name: Arc<str>,
}

impl PyStore {
    /// Wraps `obj`, checking that it implements the whole protocol, synchronously (`Store`) or
    /// asynchronously (`AsyncStore`: then `runner`, a callable taking a coroutine and returning
    /// its result, runs its operations on the synchronous paths).
    pub fn new(obj: Bound<'_, PyAny>, runner: Py<PyAny>) -> PyResult<PyStore> {
        let py = obj.py();
        let tn = obj.get_type().name().map(|n| n.to_string()).unwrap_or_else(|_| "?".into());
        let not_store = |why: String| crate::errors::error(py, "StoreError", format!("{tn} is not a store: {why}"));
        let callable = |m: &str| obj.getattr(m).is_ok_and(|a| a.is_callable());
        let missing: Vec<&str> = OPERATIONS.iter().copied().chain(["describe"]).filter(|m| !callable(m)).collect();
        if !missing.is_empty() {
            return Err(not_store(format!("it lacks {}", missing.join(", "))));
        }
        let iscoro = classes(py)?.iscoroutinefunction.bind(py);
        let mut sync_ops = Vec::new();
        for m in OPERATIONS {
            if !iscoro.call1((obj.getattr(m)?,))?.is_truthy()? {
                sync_ops.push(m);
            }
        }
        let is_async = match sync_ops.len() {
            0 => true,
            n if n == OPERATIONS.len() => false,
            _ => {
                return Err(not_store(format!(
                    "it mixes coroutine and plain methods ({} are not coroutine functions); an AsyncStore's \
                     operations are all `async def`, a Store's none",
                    sync_ops.join(", ")
                )))
            }
        };
        if iscoro.call1((obj.getattr("describe")?,))?.is_truthy()? {
            return Err(not_store("describe() must be a plain method, also on an AsyncStore".into()));
        }
        let blocking = if is_async && callable("blocking") {
            let twin = obj.call_method0("blocking")?;
            let tt = twin.get_type().name().map(|n| n.to_string()).unwrap_or_else(|_| "?".into());
            let lacks: Vec<&str> =
                OPERATIONS.iter().copied().filter(|m| !twin.getattr(*m).is_ok_and(|a| a.is_callable())).collect();
            if !lacks.is_empty() {
                return Err(not_store(format!("its blocking() returned a {tt}, which lacks {}", lacks.join(", "))));
            }
            for m in OPERATIONS {
                if iscoro.call1((twin.getattr(m)?,))?.is_truthy()? {
                    return Err(not_store(format!(
                        "its blocking() returned a {tt}, whose {m} is a coroutine function (a Store's are plain methods)"
                    )));
                }
            }
            Some(twin.unbind())
        } else {
            None
        };
        let described = obj.call_method0("describe")?;
        let name: String = match described.cast::<PyString>() {
            Ok(s) => s.to_str()?.to_string(),
            Err(_) => return Err(not_store(format!("describe() must return a str, got {}", shown(&described)))),
        };
        Ok(PyStore { obj: obj.unbind(), runner, blocking, is_async, name: name.into() })
    }

    /// Another handle on the same store (no lock is shared: each call takes the GIL).
    pub fn clone_ref(&self, py: Python<'_>) -> PyStore {
        PyStore {
            obj: self.obj.clone_ref(py),
            runner: self.runner.clone_ref(py),
            blocking: self.blocking.as_ref().map(|b| b.clone_ref(py)),
            is_async: self.is_async,
            name: Arc::clone(&self.name),
        }
    }

    /// Whether the store is an `AsyncStore` (the asyncio driver awaits its calls itself).
    pub fn is_async(&self) -> bool {
        self.is_async
    }

    /// The store object.
    pub fn object(&self) -> &Py<PyAny> {
        &self.obj
    }

    /// Calls operation `method`, running its coroutine for an `AsyncStore`; `id` is the instance
    /// the call is about (for the `UnknownInstance` it may raise).
    fn call<'py, A>(
        &self,
        py: Python<'py>,
        method: &'static str,
        args: A,
        id: Option<&str>,
    ) -> Result<Bound<'py, PyAny>, CoreError>
    where
        A: PyCallArgs<'py>,
    {
        let run = || -> PyResult<Bound<'py, PyAny>> {
            if let Some(twin) = &self.blocking {
                return twin.bind(py).call_method1(method, args);
            }
            let r = self.obj.bind(py).call_method1(method, args)?;
            if self.is_async {
                self.runner.bind(py).call1((r,))
            } else {
                Ok(r)
            }
        };
        run().map_err(|e| store_error(py, &self.name, method, e, id))
    }

    fn check<'a>(&'a self, method: &'static str) -> Check<'a> {
        Check { store: &self.name, method, given: false }
    }
}

/// Maps an exception raised by store `name` in `method` onto the core's errors.
pub fn store_error(py: Python<'_>, name: &str, method: &str, e: PyErr, id: Option<&str>) -> CoreError {
    let v = e.value(py);
    let text = v.str().map(|s| s.to_string()).unwrap_or_default();
    let Ok(c) = classes(py) else {
        set_cause(Some(e));
        return CoreError::Store(format!("{name}: {method}() failed: {text}"));
    };
    let is = |t: &Py<PyType>| v.is_instance(t.bind(py)).unwrap_or(false);
    let attr_s = |n: &str| v.getattr(n).ok().and_then(|a| a.extract::<Option<String>>().ok()).flatten();
    let attr_u = |n: &str| v.getattr(n).ok().and_then(|a| a.extract::<u64>().ok()).unwrap_or(0);
    let instance = || attr_s("instance_id").or_else(|| id.map(str::to_string)).unwrap_or_default();
    if is(&c.store_conflict) {
        return CoreError::Conflict { instance: instance(), expected: attr_u("expected"), found: attr_u("found") };
    }
    if is(&c.lease_lost) {
        return CoreError::LeaseLost { instance: instance(), owner: attr_s("owner"), holder: attr_s("holder") };
    }
    if is(&c.unknown_instance) {
        return CoreError::UnknownInstance(id.map(str::to_string).unwrap_or(text));
    }
    if is(&c.signal_error) || is(&c.invalid_argument) {
        return CoreError::InvalidState(text);
    }
    if is(&c.store_error) {
        // The store already said which store and what failed (the server stores do): keep its
        // message as it is, and the exception as the cause.
        set_cause(Some(e));
        return CoreError::Store(text);
    }
    let class = v.get_type().name().map(|n| n.to_string()).unwrap_or_else(|_| "Exception".into());
    set_cause(Some(e));
    CoreError::Store(format!("{name}: {method}() raised {class}: {text}"))
}

/// A Python conversion failure (building an argument) as a store error.
fn arg_error(py: Python<'_>, name: &str, method: &str, e: PyErr) -> CoreError {
    store_error(py, name, method, e, None)
}

impl Store for PyStore {
    fn create(&mut self, meta: &InstanceMeta, header: &[u8], records: &[Vec<u8>]) -> Result<Created, CoreError> {
        Python::attach(|py| {
            let args =
                (|| Ok::<_, PyErr>((meta_to_py(py, meta)?, PyBytes::new(py, header), bytes_list(py, records)?)))()
                    .map_err(|e| arg_error(py, &self.name, "create", e))?;
            let r = self.call(py, "create", args, Some(&meta.id))?;
            Ok(match self.check("create").stored(&r)? {
                None => Created::New,
                Some(s) => Created::Existing(s),
            })
        })
    }

    fn commit(&mut self, c: &Commit<'_>) -> Result<(), CoreError> {
        Python::attach(|py| {
            let arg = commit_to_py(py, c).map_err(|e| arg_error(py, &self.name, "commit", e))?;
            let r = self.call(py, "commit", (arg,), Some(c.id))?;
            if r.is_none() {
                Ok(())
            } else {
                Err(self.check("commit").bad("None", &r))
            }
        })
    }

    fn get(&mut self, id: &str) -> Result<Option<StoredInstance>, CoreError> {
        Python::attach(|py| self.check("get").stored(&self.call(py, "get", (id,), Some(id))?))
    }

    fn load(&mut self, id: &str) -> Result<Option<Loaded>, CoreError> {
        Python::attach(|py| self.check("load").loaded(&self.call(py, "load", (id,), Some(id))?))
    }

    fn records(&mut self, id: &str, after: u64) -> Result<Vec<Vec<u8>>, CoreError> {
        Python::attach(|py| self.check("records").records(&self.call(py, "records", (id, after), Some(id))?))
    }

    fn list(&mut self, q: &ListQuery) -> Result<ListPage, CoreError> {
        Python::attach(|py| {
            let arg = query_to_py(py, q).map_err(|e| arg_error(py, &self.name, "list", e))?;
            self.check("list").page(&self.call(py, "list", (arg,), None)?)
        })
    }

    fn counts(&mut self) -> Result<Vec<Count>, CoreError> {
        Python::attach(|py| self.check("counts").counts(&self.call(py, "counts", (), None)?))
    }

    fn delete(&mut self, id: &str) -> Result<bool, CoreError> {
        Python::attach(|py| self.check("delete").boolean("a bool", &self.call(py, "delete", (id,), Some(id))?))
    }

    fn purge(&mut self, before: f64, statuses: &[Status]) -> Result<u64, CoreError> {
        Python::attach(|py| {
            let statuses = PyList::new(py, names(statuses)).map_err(|e| arg_error(py, &self.name, "purge", e))?;
            self.check("purge").uint("an int", &self.call(py, "purge", (before, statuses), None)?)
        })
    }

    fn send_signal(&mut self, id: &str, record: &[u8], now: f64) -> Result<u64, CoreError> {
        Python::attach(|py| {
            let r = self.call(py, "send_signal", (id, PyBytes::new(py, record), now), Some(id))?;
            self.check("send_signal").uint("an int", &r)
        })
    }

    fn signals(&mut self, id: &str, after: u64) -> Result<Vec<(u64, Vec<u8>)>, CoreError> {
        Python::attach(|py| self.check("signals").signals(&self.call(py, "signals", (id, after), Some(id))?))
    }

    fn due(&mut self, now: f64, limit: Option<usize>) -> Result<Vec<InstanceMeta>, CoreError> {
        Python::attach(|py| self.check("due").metas(&self.call(py, "due", (now, limit), None)?))
    }

    fn claim(&mut self, c: &Claim<'_>) -> Result<Vec<InstanceMeta>, CoreError> {
        Python::attach(|py| {
            let arg = claim_to_py(py, c).map_err(|e| arg_error(py, &self.name, "claim", e))?;
            self.check("claim").metas(&self.call(py, "claim", (arg,), None)?)
        })
    }

    fn extend(&mut self, id: &str, owner: &str, lease: f64, now: f64) -> Result<f64, CoreError> {
        Python::attach(|py| {
            self.check("extend").float("a float", &self.call(py, "extend", (id, owner, lease, now), Some(id))?)
        })
    }

    fn release(&mut self, id: &str, owner: &str) -> Result<bool, CoreError> {
        Python::attach(|py| self.check("release").boolean("a bool", &self.call(py, "release", (id, owner), Some(id))?))
    }

    fn describe(&self) -> String {
        self.name.to_string()
    }
}
