//! `_core.NativeStore`: a native store (memory, or SQLite on one file) as a Python object with the
//! synchronous store protocol of `tideflow/stores/base.py`: the same operation names, the
//! NamedTuples in and out, errors mapped through `errors.rs`. `tideflow.stores.MemoryStore` and
//! `SQLiteStore` are its subclasses; an engine runs on the store it wraps (`shared`), so
//! `engine.store.claim(...)` and the engine see the same data.
//!
//! SQLite calls release the GIL (the arguments are owned by Rust first); memory calls are too
//! short for that to pay.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList, PyString, PyTuple};
use tideflow_core::drive::Pending;
use tideflow_core::store::memory::MemoryStore;
use tideflow_core::store::sqlite::{Durability, SqliteStore};
use tideflow_core::store::{Claim, Commit, Count, Created, InstanceMeta, ListPage, ListQuery, Store};
use tideflow_core::{CoreError, Status};

use crate::backend::Shared;
use crate::convert::meta_to_py;
use crate::convert::Check;
use crate::errors::{core_error, error};
use crate::pystore::classes;

/// A native store shared by this object and the engines that run on it.
#[pyclass(module = "tideflow._core", name = "NativeStore", subclass, frozen)]
pub struct NativeStore {
    store: Shared,
    /// Whether calls do file I/O (SQLite): the GIL is released around them.
    pub on_disk: bool,
    path: Option<String>,
    durability: Option<&'static str>,
    name: String,
}

impl NativeStore {
    /// The store, for an engine to run on.
    pub fn shared(&self) -> Shared {
        Arc::clone(&self.store)
    }

    /// Runs `f` on the locked store, with the GIL released for SQLite; errors mapped for Python.
    fn with<T: Send>(
        &self,
        py: Python<'_>,
        f: impl FnOnce(&mut dyn Store) -> Result<T, CoreError> + Send,
    ) -> PyResult<T> {
        self.store_call(py, f).map_err(|e| core_error(py, e))
    }

    /// Like `with`, but hands the core error back unmapped (for per-operation mappings).
    fn store_call<T: Send>(
        &self,
        py: Python<'_>,
        f: impl FnOnce(&mut dyn Store) -> Result<T, CoreError> + Send,
    ) -> Result<T, CoreError> {
        let run = || {
            let mut s = self.store.lock().unwrap_or_else(|e| e.into_inner());
            f(s.as_mut())
        };
        if self.on_disk {
            py.detach(run)
        } else {
            run()
        }
    }

    fn given(&self, method: &'static str) -> Check<'_> {
        Check { store: &self.name, method, given: true }
    }
}

/// A bad argument from Python: `InvalidArgument` with the checker's message.
fn bad_arg(py: Python<'_>, e: CoreError) -> PyErr {
    match e {
        CoreError::Store(m) => error(py, "InvalidArgument", m),
        other => core_error(py, other),
    }
}

/// A checked argument, or `InvalidArgument`.
fn arg<T>(py: Python<'_>, r: Result<T, CoreError>) -> PyResult<T> {
    r.map_err(|e| bad_arg(py, e))
}

fn status(py: Python<'_>, ck: &Check<'_>, v: &Bound<'_, PyAny>) -> PyResult<Status> {
    let s = ck.text("a status, a str,", v).map_err(|e| bad_arg(py, e))?;
    Status::parse(&s)
        .ok_or_else(|| bad_arg(py, ck.bad("a status (pending, running, suspended, completed, failed, cancelled)", v)))
}

fn statuses(py: Python<'_>, ck: &Check<'_>, v: &Bound<'_, PyAny>) -> PyResult<Vec<Status>> {
    if v.cast::<PyString>().is_ok() {
        return Err(bad_arg(py, ck.bad("a sequence of statuses", v)));
    }
    let items: Vec<Bound<'_, PyAny>> = match ck.items("a sequence of statuses", v) {
        Ok(items) => items,
        Err(_) => v.try_iter()?.collect::<PyResult<_>>()?,
    };
    items.iter().map(|s| status(py, ck, s)).collect()
}

fn texts(py: Python<'_>, ck: &Check<'_>, what: &str, v: &Bound<'_, PyAny>) -> PyResult<Vec<String>> {
    if v.cast::<PyString>().is_ok() {
        return Err(bad_arg(py, ck.bad(what, v)));
    }
    let items: Vec<Bound<'_, PyAny>> = match ck.items(what, v) {
        Ok(items) => items,
        Err(_) => v.try_iter()?.collect::<PyResult<_>>()?,
    };
    items.iter().map(|s| ck.text(what, s).map_err(|e| bad_arg(py, e))).collect()
}

fn records(py: Python<'_>, ck: &Check<'_>, v: &Bound<'_, PyAny>) -> PyResult<Vec<Vec<u8>>> {
    if v.cast::<PyBytes>().is_ok() || v.cast::<PyString>().is_ok() {
        return Err(bad_arg(py, ck.bad("a sequence of bytes records", v)));
    }
    let items: Vec<Bound<'_, PyAny>> = match ck.items("a sequence of bytes records", v) {
        Ok(items) => items,
        Err(_) => v.try_iter()?.collect::<PyResult<_>>()?,
    };
    items.iter().map(|r| ck.bytes("a record, bytes,", r).map_err(|e| bad_arg(py, e))).collect()
}

fn stored_to_py<'py>(py: Python<'py>, meta: &InstanceMeta, header: &[u8]) -> PyResult<Bound<'py, PyAny>> {
    classes(py)?.stored_instance.bind(py).call1((meta_to_py(py, meta)?, PyBytes::new(py, header)))
}

fn metas_to_py<'py>(py: Python<'py>, metas: &[InstanceMeta]) -> PyResult<Bound<'py, PyList>> {
    PyList::new(py, metas.iter().map(|m| meta_to_py(py, m)).collect::<PyResult<Vec<_>>>()?)
}

/// A commit's fields, owned (so that SQLite can run it with the GIL released): the policy's
/// `Pending` with the instance and the writer.
struct OwnedCommit {
    id: String,
    owner: Option<String>,
    pending: Pending,
}

impl OwnedCommit {
    fn from_py(py: Python<'_>, ck: &Check<'_>, v: &Bound<'_, PyAny>) -> PyResult<OwnedCommit> {
        let f = arg(py, ck.fields("a Commit", &classes(py)?.commit, 10, v))?;
        Ok(OwnedCommit {
            id: arg(py, ck.text("Commit.id, a str,", &f[0]))?,
            owner: arg(py, ck.opt_text("Commit.owner, a str or None,", &f[8]))?,
            pending: Pending {
                expected_version: arg(py, ck.uint("Commit.expected_version, an int,", &f[1]))?,
                status: status(py, ck, &f[2])?,
                updated_at: arg(py, ck.float("Commit.updated_at, a float,", &f[3]))?,
                due_at: arg(py, ck.opt_float("Commit.due_at, a float or None,", &f[4]))?,
                header: if f[5].is_none() {
                    None
                } else {
                    Some(arg(py, ck.bytes("Commit.header, bytes or None,", &f[5]))?)
                },
                records: records(py, ck, &f[6])?,
                signals_seen: arg(py, ck.uint("Commit.signals_seen, an int,", &f[7]))?,
                error: arg(py, ck.opt_text("Commit.error, a str or None,", &f[9]))?,
            },
        })
    }

    fn borrow(&self) -> Commit<'_> {
        self.pending.as_commit(&self.id, self.owner.as_deref())
    }
}

fn meta_from_arg(py: Python<'_>, ck: &Check<'_>, v: &Bound<'_, PyAny>) -> PyResult<InstanceMeta> {
    ck.meta(v).map_err(|e| bad_arg(py, e))
}

#[pymethods]
impl NativeStore {
    /// A new in-memory store (`path` None), or the SQLite store on the file at `path`
    /// (`durability` "normal" or "full"), opened now.
    #[new]
    #[pyo3(signature = (path=None, durability="normal"))]
    fn new(py: Python<'_>, path: Option<String>, durability: &str) -> PyResult<Self> {
        let Some(path) = path else {
            let store: Box<dyn Store> = Box::new(MemoryStore::new());
            let name = store.describe();
            return Ok(NativeStore {
                store: Arc::new(Mutex::new(store)),
                on_disk: false,
                path: None,
                durability: None,
                name,
            });
        };
        let (durability, label) = match durability {
            "normal" => (Durability::Normal, "normal"),
            "full" => (Durability::Full, "full"),
            other => {
                return Err(error(py, "StoreError", format!("durability must be 'normal' or 'full', got {other:?}")))
            }
        };
        let file = PathBuf::from(&path);
        let opened = py.detach(|| SqliteStore::open(&file, durability)).map_err(|e| core_error(py, e))?;
        let store: Box<dyn Store> = Box::new(opened);
        let name = store.describe();
        Ok(NativeStore {
            store: Arc::new(Mutex::new(store)),
            on_disk: true,
            path: Some(path),
            durability: Some(label),
            name,
        })
    }

    /// The SQLite file's path, or None in memory.
    #[getter]
    fn path(&self) -> Option<String> {
        self.path.clone()
    }

    /// "normal" or "full" for SQLite, None in memory.
    #[getter]
    fn durability(&self) -> Option<&'static str> {
        self.durability
    }

    /// Whether the store keeps its data in a file (SQLite).
    #[getter(on_disk)]
    fn is_on_disk(&self) -> bool {
        self.on_disk
    }

    /// See `Store.create`.
    fn create<'py>(
        &self,
        py: Python<'py>,
        meta: &Bound<'py, PyAny>,
        header: &Bound<'py, PyAny>,
        records: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let ck = self.given("create");
        let meta = meta_from_arg(py, &ck, meta)?;
        let header = ck.bytes("a header, bytes,", header).map_err(|e| bad_arg(py, e))?;
        let records = self::records(py, &ck, records)?;
        match self.with(py, |s| s.create(&meta, &header, &records))? {
            Created::New => Ok(py.None().into_bound(py)),
            Created::Existing(st) => stored_to_py(py, &st.meta, &st.header),
        }
    }

    /// See `Store.commit`.
    fn commit(&self, py: Python<'_>, commit: &Bound<'_, PyAny>) -> PyResult<()> {
        let c = OwnedCommit::from_py(py, &self.given("commit"), commit)?;
        self.with(py, |s| s.commit(&c.borrow()))
    }

    /// See `Store.get`.
    fn get<'py>(&self, py: Python<'py>, id: &str) -> PyResult<Bound<'py, PyAny>> {
        match self.with(py, |s| s.get(id))? {
            None => Ok(py.None().into_bound(py)),
            Some(st) => stored_to_py(py, &st.meta, &st.header),
        }
    }

    /// See `Store.load`.
    fn load<'py>(&self, py: Python<'py>, id: &str) -> PyResult<Bound<'py, PyAny>> {
        let Some(l) = self.with(py, |s| s.load(id))? else { return Ok(py.None().into_bound(py)) };
        let records = PyList::new(py, l.records.iter().map(|r| PyBytes::new(py, r)))?;
        let signals = PyList::new(
            py,
            l.signals
                .iter()
                .map(|(n, r)| PyTuple::new(py, [n.into_pyobject(py)?.into_any(), PyBytes::new(py, r).into_any()]))
                .collect::<PyResult<Vec<_>>>()?,
        )?;
        classes(py)?.loaded.bind(py).call1((meta_to_py(py, &l.meta)?, PyBytes::new(py, &l.header), records, signals))
    }

    /// See `Store.records`.
    fn records<'py>(&self, py: Python<'py>, id: &str, after: u64) -> PyResult<Bound<'py, PyList>> {
        let got = self.with(py, |s| s.records(id, after))?;
        PyList::new(py, got.iter().map(|r| PyBytes::new(py, r)))
    }

    /// See `Store.signals`.
    fn signals<'py>(&self, py: Python<'py>, id: &str, after: u64) -> PyResult<Bound<'py, PyList>> {
        let got = self.with(py, |s| s.signals(id, after))?;
        let pairs = got
            .iter()
            .map(|(n, r)| PyTuple::new(py, [n.into_pyobject(py)?.into_any(), PyBytes::new(py, r).into_any()]))
            .collect::<PyResult<Vec<_>>>()?;
        PyList::new(py, pairs)
    }

    /// See `Store.list`; an invalid cursor raises `InvalidArgument`.
    fn list<'py>(&self, py: Python<'py>, query: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
        let ck = self.given("list");
        let f = arg(py, ck.fields("a ListQuery", &classes(py)?.list_query, 5, query))?;
        let q = ListQuery {
            statuses: statuses(py, &ck, &f[0])?,
            workflow: arg(py, ck.opt_text("ListQuery.workflow, a str or None,", &f[1]))?,
            plan_hash: arg(py, ck.opt_text("ListQuery.plan_hash, a str or None,", &f[2]))?,
            limit: if f[3].is_none() {
                None
            } else {
                Some(arg(py, ck.uint("ListQuery.limit, an int or None,", &f[3]))? as usize)
            },
            cursor: arg(py, ck.opt_text("ListQuery.cursor, a str or None,", &f[4]))?,
        };
        let page: ListPage = match self.store_call(py, |s| s.list(&q)) {
            Ok(p) => p,
            Err(CoreError::InvalidState(m)) => return Err(error(py, "InvalidArgument", m)), // the cursor
            Err(e) => return Err(core_error(py, e)),
        };
        classes(py)?.list_page.bind(py).call1((metas_to_py(py, &page.items)?, page.cursor))
    }

    /// See `Store.counts`.
    fn counts<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        let got: Vec<Count> = self.with(py, |s| s.counts())?;
        let cls = &classes(py)?.count;
        let items = got
            .iter()
            .map(|c| cls.bind(py).call1((c.workflow.as_str(), c.status.as_str(), c.count)))
            .collect::<PyResult<Vec<_>>>()?;
        PyList::new(py, items)
    }

    /// See `Store.delete`.
    fn delete(&self, py: Python<'_>, id: &str) -> PyResult<bool> {
        self.with(py, |s| s.delete(id))
    }

    /// See `Store.purge`.
    fn purge(&self, py: Python<'_>, before: f64, statuses: &Bound<'_, PyAny>) -> PyResult<u64> {
        let statuses = self::statuses(py, &self.given("purge"), statuses)?;
        self.with(py, |s| s.purge(before, &statuses))
    }

    /// Gives the space of deleted instances back to the file system (SQLite; a no-op in memory).
    fn compact(&self, py: Python<'_>) -> PyResult<()> {
        self.with(py, |s| s.compact())
    }

    /// See `Store.send_signal`; a finished instance raises `SignalError`.
    fn send_signal(&self, py: Python<'_>, id: &str, record: &Bound<'_, PyAny>, now: f64) -> PyResult<u64> {
        let record = self.given("send_signal").bytes("a signal record, bytes,", record).map_err(|e| bad_arg(py, e))?;
        match self.store_call(py, |s| s.send_signal(id, &record, now)) {
            Ok(n) => Ok(n),
            Err(CoreError::InvalidState(m)) => Err(error(py, "SignalError", m)),
            Err(e) => Err(core_error(py, e)),
        }
    }

    /// See `Store.due`.
    #[pyo3(signature = (now, limit=None))]
    fn due<'py>(&self, py: Python<'py>, now: f64, limit: Option<usize>) -> PyResult<Bound<'py, PyList>> {
        let got = self.with(py, |s| s.due(now, limit))?;
        metas_to_py(py, &got)
    }

    /// See `Store.claim`.
    fn claim<'py>(&self, py: Python<'py>, claim: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyList>> {
        let ck = self.given("claim");
        let f = arg(py, ck.fields("a Claim", &classes(py)?.claim, 5, claim))?;
        let owner = arg(py, ck.text("Claim.owner, a str,", &f[0]))?;
        let limit = arg(py, ck.uint("Claim.limit, an int,", &f[1]))? as usize;
        let lease = arg(py, ck.float("Claim.lease, a float,", &f[2]))?;
        let now = arg(py, ck.float("Claim.now, a float,", &f[3]))?;
        let plans = texts(py, &ck, "Claim.plan_hashes, a sequence of str,", &f[4])?;
        let got = self.with(py, |s| s.claim(&Claim { owner: &owner, limit, lease, now, plan_hashes: &plans }))?;
        metas_to_py(py, &got)
    }

    /// See `Store.extend`.
    fn extend(&self, py: Python<'_>, id: &str, owner: &str, lease: f64, now: f64) -> PyResult<f64> {
        self.with(py, |s| s.extend(id, owner, lease, now))
    }

    /// See `Store.release`.
    fn release(&self, py: Python<'_>, id: &str, owner: &str) -> PyResult<bool> {
        self.with(py, |s| s.release(id, owner))
    }

    /// See `Store.describe`: "memory" or "sqlite:<path>".
    fn describe(&self) -> String {
        self.name.clone()
    }

    fn __repr__(slf: &Bound<'_, Self>) -> PyResult<String> {
        let me = slf.get();
        let cls = slf.get_type().name()?.to_string();
        Ok(match (&me.path, me.durability) {
            (Some(p), Some(d)) => format!("{cls}({p:?}, durability={d:?})"),
            _ => format!("{cls}()"),
        })
    }
}
