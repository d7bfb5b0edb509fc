//! `_core.Engine`: the store, the clock and the registered workflows; starts, resumes and queries
//! instances. The Python `tideflow.Engine` wraps it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use pyo3::prelude::*;
use pyo3::types::PyString;
use tideflow_core::codec::{decode_header, encode_header, encode_record, Header};
use tideflow_core::instance::Instance;
use tideflow_core::store::memory::MemoryStore;
use tideflow_core::store::sqlite::{Durability, SqliteStore};
use tideflow_core::store::{Created, InstanceMeta, ListQuery, Store};
use tideflow_core::{CoreError, Status};

use crate::checked;
use crate::clock::Clock;
use crate::driver::{CancelState, Driver, Outcome};
use crate::errors::{error, IntoPy};
use crate::host::{encode_value, PyHost};
use crate::pystore::PyStore;
use crate::workflow::Compiled;

/// The native engine state shared by every run of one `tideflow.Engine`.
#[pyclass(module = "tideflow._core", name = "Engine", frozen)]
pub struct Engine {
    pub(crate) store: Mutex<Box<dyn Store>>,
    /// Whether store calls do I/O (the GIL is released around them).
    on_disk: bool,
    pub clock: Clock,
    pub fallback: Py<PyAny>,
    pub coro_runner: Py<PyAny>,
    pub(crate) workflows: Mutex<HashMap<String, Vec<Py<Compiled>>>>,
    /// Cancellation states of the instances driven in this process.
    active: Mutex<HashMap<String, Arc<CancelState>>>,
    /// `notify(event, *args)` of the observer, if there is one.
    pub notify: Option<Py<PyAny>>,
}

fn parse_statuses(py: Python<'_>, names: &[String]) -> PyResult<Vec<Status>> {
    names
        .iter()
        .map(|n| Status::parse(n).ok_or_else(|| error(py, "TideflowError", format!("unknown status {n:?}"))))
        .collect()
}

/// One listed instance: (id, workflow, status, created_at, updated_at).
pub type ListRow = (String, String, String, f64, f64);

/// An instance's stored state as Python sees it: (id, workflow, status, output, error JSON,
/// created_at, updated_at, plan hash, untyped). `untyped` is `(error class, message)` when the
/// output is the stored JSON because the instance's plan is not registered here.
pub type InstanceInfo = (String, String, String, Py<PyAny>, Py<PyAny>, f64, f64, String, Option<Untyped>);

/// Why a finished instance's output cannot be decoded with its types: `(error class, message)`.
pub type Untyped = (&'static str, String);

impl Engine {
    /// Runs `f` on the store; for a disk store the GIL is released meanwhile (the inputs are
    /// owned by Rust by then), for the memory store it is not worth the switch.
    pub fn with_store<T: Send>(
        &self,
        py: Python<'_>,
        f: impl FnOnce(&mut dyn Store) -> Result<T, CoreError> + Send,
    ) -> Result<T, CoreError> {
        if self.on_disk {
            py.detach(|| {
                let mut s = self.store.lock().unwrap_or_else(|e| e.into_inner());
                f(s.as_mut())
            })
        } else {
            let mut s = self.store.lock().unwrap_or_else(|e| e.into_inner());
            f(s.as_mut())
        }
    }

    pub(crate) fn find(&self, py: Python<'_>, workflow: &str, hash: &str) -> Option<Py<Compiled>> {
        let wfs = self.workflows.lock().unwrap_or_else(|e| e.into_inner());
        wfs.get(workflow)?.iter().find(|c| c.get().plan.hash == hash).map(|c| c.clone_ref(py))
    }

    pub(crate) fn registered_hashes(&self, workflow: &str) -> Vec<String> {
        let wfs = self.workflows.lock().unwrap_or_else(|e| e.into_inner());
        wfs.get(workflow).map(|v| v.iter().map(|c| c.get().plan.hash.clone()).collect()).unwrap_or_default()
    }

    /// The cancellation state shared by everything driving `id` in this process.
    pub fn cancel_state(&self, id: &str) -> Arc<CancelState> {
        let mut active = self.active.lock().unwrap_or_else(|e| e.into_inner());
        Arc::clone(active.entry(id.to_string()).or_default())
    }

    /// Forgets the cancellation state of `id` once nothing drives it any more.
    pub fn release(&self, id: &str) {
        let mut active = self.active.lock().unwrap_or_else(|e| e.into_inner());
        if active.get(id).is_some_and(|c| Arc::strong_count(c) == 1) {
            active.remove(id);
        }
    }

    /// Drives a driver in this thread, then releases it.
    pub fn drive(&self, py: Python<'_>, mut d: Driver) -> PyResult<Outcome> {
        let id = d.id_str.clone();
        let result = d.drive_sync(py, self);
        let outcome = result.map(|()| d.outcome(py));
        drop(d);
        self.release(&id);
        outcome
    }

    /// Creates (or finds) the instance and returns a driver positioned to run it, or the stored
    /// result when it already finished.
    pub fn open(
        &self,
        py: Python<'_>,
        wf: &Bound<'_, Compiled>,
        id: &str,
        input: &Bound<'_, PyAny>,
    ) -> PyResult<Result<Driver, Outcome>> {
        self.register_one(wf);
        if let Some(stored) = self.with_store(py, |s| s.get(id)).py_err(py)? {
            return self.reopen_as(py, stored, &wf.get().plan.name);
        }
        let compiled = wf.get();
        let fallback = self.fallback.bind(py);
        // the input the first step receives is the one a resume decodes from what is stored
        let checked = checked::encode_input(py, compiled, fallback, input)?;
        let input = &checked.value(input);
        let payload = checked.payload;
        let now = self.clock.now(py)?;
        let header = Header {
            workflow: compiled.plan.name.clone(),
            version: compiled.plan.version.clone(),
            plan_hash: compiled.plan.hash.clone(),
            input: payload,
            created_at: now,
            output: None,
            error: None,
            outline: Some(compiled.plan.outline.clone()),
        };
        let no_signals = HashMap::new();
        let mut host = PyHost { py, wf: compiled, fallback, inbox: &no_signals };
        let mut inst = Instance::start(id, Arc::clone(&compiled.plan), input.clone().unbind(), now, &mut host);
        // the first task is taken now, so that the create records that it starts (a step costs
        // one commit from the first on); the driver runs it straight away
        let first = inst.pop_ready(now);
        let records: Vec<Vec<u8>> = inst.take_records().iter().map(encode_record).collect();
        let meta = InstanceMeta {
            id: id.to_string(),
            workflow: compiled.plan.name.clone(),
            status: Status::Running,
            version: 1,
            created_at: now,
            updated_at: now,
            due_at: None,
        };
        let header_bytes = encode_header(&header);
        match self.with_store(py, |s| s.create(&meta, &header_bytes, &records)).py_err(py)? {
            Created::New => Ok(Ok(Driver {
                inst,
                wf: wf.clone().unbind(),
                id: PyString::new(py, id).unbind(),
                id_str: id.to_string(),
                input: input.clone().unbind(),
                header,
                version: 1,
                stored_status: Status::Running,
                inbox: HashMap::new(),
                cancel: self.cancel_state(id),
                stored_due: None,
                epoch: 0,
                settled: None,
                first,
            })),
            Created::Existing(stored) => self.reopen_as(py, stored, &compiled.plan.name),
        }
    }

    fn register_one(&self, wf: &Bound<'_, Compiled>) {
        let c = wf.get();
        let mut wfs = self.workflows.lock().unwrap_or_else(|e| e.into_inner());
        let versions = wfs.entry(c.plan.name.clone()).or_default();
        if let Some(pos) = versions.iter().position(|v| v.get().plan.hash == c.plan.hash) {
            // the newest binding of a plan wins (same structure, possibly new callables)
            if !versions[pos].is(wf) {
                versions[pos] = wf.clone().unbind();
            }
        } else {
            versions.push(wf.clone().unbind());
        }
    }
}

#[pymethods]
impl Engine {
    /// A native engine: `store` is None (memory) or `("sqlite", path, "normal" | "full")`.
    #[new]
    #[pyo3(signature = (fallback, coro_runner, clock=None, store=None, py_store=None, notify=None))]
    #[allow(clippy::too_many_arguments)] // mirrors the Python constructor's keyword arguments
    fn new(
        py: Python<'_>,
        fallback: Py<PyAny>,
        coro_runner: Py<PyAny>,
        clock: Option<Bound<'_, PyAny>>,
        store: Option<(String, String, String)>,
        py_store: Option<Bound<'_, PyAny>>,
        notify: Option<Py<PyAny>>,
    ) -> PyResult<Self> {
        let (store, on_disk): (Box<dyn Store>, bool) = match (store, py_store) {
            (_, Some(obj)) => (Box::new(PyStore::new(obj)?), false),
            (None, None) => (Box::new(MemoryStore::new()), false),
            (Some((kind, path, durability)), None) if kind == "sqlite" => {
                let durability = match durability.as_str() {
                    "normal" => Durability::Normal,
                    "full" => Durability::Full,
                    other => {
                        return Err(error(
                            py,
                            "StoreError",
                            format!("durability must be 'normal' or 'full', got {other:?}"),
                        ))
                    }
                };
                let path = std::path::PathBuf::from(path);
                let s = py.detach(|| SqliteStore::open(&path, durability)).py_err(py)?;
                (Box::new(s), true)
            }
            (Some((kind, _, _)), None) => {
                return Err(error(py, "StoreError", format!("unknown native store kind {kind:?}")))
            }
        };
        Ok(Engine {
            store: Mutex::new(store),
            on_disk,
            clock: Clock::from_object(clock)?,
            fallback,
            coro_runner,
            workflows: Mutex::new(HashMap::new()),
            active: Mutex::new(HashMap::new()),
            notify: notify.filter(|n| !n.is_none(py)),
        })
    }

    /// Registers a compiled workflow (several versions of one name may be registered).
    fn register(&self, wf: &Bound<'_, Compiled>) {
        self.register_one(wf);
    }

    /// Runs (or resumes, or returns the stored result of) instance `id` in this thread.
    fn run(&self, py: Python<'_>, wf: &Bound<'_, Compiled>, id: &str, input: &Bound<'_, PyAny>) -> PyResult<Outcome> {
        match self.open(py, wf, id, input)? {
            Err(done) => Ok(done),
            Ok(d) => self.drive(py, d),
        }
    }

    /// Resumes stored instance `id` in this thread (until it finishes or suspends); a finished
    /// instance returns its stored result.
    fn resume(&self, py: Python<'_>, id: &str) -> PyResult<Outcome> {
        let (stored, _) = self.load(py, id)?;
        match self.reopen(py, stored)? {
            Err(done) => Ok(done),
            Ok(d) => self.drive(py, d),
        }
    }

    /// Persists a signal for instance `id` (before anything else) and marks it due; returns the
    /// signal's sequence number. Runs no step: whatever drives the instance picks it up.
    fn signal(&self, py: Python<'_>, id: &str, name: &str, payload: &Bound<'_, PyAny>) -> PyResult<u64> {
        if name.is_empty() {
            return Err(error(py, "SignalError", "a signal needs a non-empty name"));
        }
        if name.starts_with('!') {
            return Err(error(py, "SignalError", format!("signal names starting with '!' are reserved, got {name:?}")));
        }
        let bytes = encode_value(py, None, self.fallback.bind(py), payload).map_err(|e| {
            error(py, "SignalError", format!("the payload of signal {name:?} cannot be encoded: {}", e.value(py)))
        })?;
        // where this engine knows the instance's plan, a payload its wait cannot take is refused
        // here, before it is stored (elsewhere the instance rejects it and goes on waiting)
        let stored = self.with_store(py, |s| s.get(id)).py_err(py)?;
        if let Some(header) = stored.and_then(|st| decode_header(&st.header).ok()) {
            if let Some(wf) = self.find(py, &header.workflow, &header.plan_hash) {
                checked::check_signal(py, wf.get(), name, payload, &bytes)?;
            }
        }
        self.persist_signal(py, id, name, bytes)
    }

    /// Cancels instance `id` with `reason`. An instance driven in this process is told (its
    /// driver stops at the next step boundary, and `ctx.cancelled` turns true); otherwise it is
    /// cancelled here, running its compensation step in this thread. Returns the outcome, or
    /// None when another driver in this process will finish the cancellation.
    fn cancel(&self, py: Python<'_>, id: &str, reason: &str) -> PyResult<Option<Outcome>> {
        let (stored, header) = self.load(py, id)?;
        if stored.meta.status.is_finished() {
            if stored.meta.status == Status::Cancelled {
                return Ok(Some(self.finished_outcome(py, &stored, &header)?.0));
            }
            return Err(error(
                py,
                "TideflowError",
                format!("instance {id:?} is already {}", stored.meta.status.as_str()),
            ));
        }
        // persisted first: a crash from here on cannot lose the request, and a driver in another
        // process finds it in the inbox
        self.persist_cancel(py, id, reason)?;
        let driven = {
            let active = self.active.lock().unwrap_or_else(|e| e.into_inner());
            active.get(id).map(Arc::clone)
        };
        if let Some(state) = driven {
            state.request(reason);
            return Ok(None);
        }
        if self.find(py, &header.workflow, &header.plan_hash).is_none() {
            // this process cannot run the instance's plan (its workflow, or that version of it, is
            // not registered here): the stored request is the success; whichever process drives
            // the instance next applies it
            return Ok(Some((stored.meta.status.as_str().to_string(), py.None(), py.None())));
        }
        let d = self.resume_driver(py, stored, header)?;
        d.cancel.request(reason);
        self.drive(py, d).map(Some)
    }

    /// Ids of suspended instances due now (a timer or a signal), oldest due first.
    #[pyo3(signature = (limit=None))]
    fn due(&self, py: Python<'_>, limit: Option<usize>) -> PyResult<Vec<String>> {
        let now = self.clock.now(py)?;
        let metas = self.with_store(py, |s| s.due(now, limit)).py_err(py)?;
        Ok(metas.into_iter().map(|m| m.id).collect())
    }

    /// Instances matching the filters, newest first: `(id, workflow, status, created, updated)`.
    #[pyo3(signature = (statuses, workflow=None, limit=None))]
    fn list(
        &self,
        py: Python<'_>,
        statuses: Vec<String>,
        workflow: Option<String>,
        limit: Option<usize>,
    ) -> PyResult<Vec<ListRow>> {
        let statuses = parse_statuses(py, &statuses)?;
        let q = ListQuery { statuses, workflow, limit };
        let rows = self.with_store(py, |s| s.list(&q)).py_err(py)?;
        Ok(rows
            .into_iter()
            .map(|m| (m.id, m.workflow, m.status.as_str().to_string(), m.created_at, m.updated_at))
            .collect())
    }

    /// Deletes finished instances last updated before `before` (seconds since the epoch) whose
    /// status is in `statuses` (empty: any finished status); returns how many.
    fn purge(&self, py: Python<'_>, before: f64, statuses: Vec<String>) -> PyResult<u64> {
        let statuses = parse_statuses(py, &statuses)?;
        self.with_store(py, |s| s.purge(before, &statuses)).py_err(py)
    }

    /// Gives the space of deleted instances back to the file system (SQLite); a no-op elsewhere.
    fn compact(&self, py: Python<'_>) -> PyResult<()> {
        self.with_store(py, |s| s.compact()).py_err(py)
    }

    /// Deletes one instance and its history; whether it existed.
    fn delete(&self, py: Python<'_>, id: &str) -> PyResult<bool> {
        self.with_store(py, |s| s.delete(id)).py_err(py)
    }

    /// The stored state of instance `id`.
    fn get(&self, py: Python<'_>, id: &str) -> PyResult<InstanceInfo> {
        let (stored, header) = self.load(py, id)?;
        let ((status, output, err), untyped) = if stored.meta.status.is_finished() {
            self.finished_outcome(py, &stored, &header)?
        } else {
            ((stored.meta.status.as_str().to_string(), py.None(), py.None()), None)
        };
        Ok((
            id.to_string(),
            header.workflow,
            status,
            output,
            err,
            stored.meta.created_at,
            stored.meta.updated_at,
            header.plan_hash,
            untyped,
        ))
    }

    /// The history of instance `id`: one `(kind, position, fields)` per event, in log order
    /// (see `history.rs`).
    fn history(&self, py: Python<'_>, id: &str) -> PyResult<Vec<crate::history::EventRow>> {
        self.history_rows(py, id)
    }

    /// What suspended instance `id` waits for: `(kind, position, signal, step, until)` each.
    fn waiting_for(&self, py: Python<'_>, id: &str) -> PyResult<Vec<crate::history::WaitingRow>> {
        self.waiting_rows(py, id)
    }

    /// The stored input and times of instance `id`: `(input, created_at, updated_at, due_at)`.
    fn details(&self, py: Python<'_>, id: &str) -> PyResult<crate::history::Details> {
        self.details_of(py, id)
    }

    /// The current time on the engine's clock.
    fn now(&self, py: Python<'_>) -> PyResult<f64> {
        self.clock.now(py)
    }

    /// Waits on the engine's clock (the virtual clock advances instead).
    fn sleep(&self, py: Python<'_>, seconds: f64) -> PyResult<()> {
        self.clock.sleep(py, seconds)
    }

    /// Whether the clock is virtual.
    #[getter]
    fn virtual_clock(&self) -> bool {
        self.clock.is_virtual()
    }
}
