//! `_core.Engine`: what every run of one `tideflow.Engine` shares (the store, the registered
//! workflows, the clock, the observer, the cancellation states of what it drives), and the
//! operations the Python `Engine` calls. Each operation composes the parts: store I/O through
//! `Backend`, decisions in the core's policy (`tideflow_core::drive`), rebuilding in `reopen`.

use std::sync::{Arc, Mutex};

use pyo3::prelude::*;
use tideflow_core::codec::decode_header;
use tideflow_core::drive::Mode;
use tideflow_core::store::memory::MemoryStore;
use tideflow_core::store::{Created, ListQuery, Loaded, Store};
use tideflow_core::Status;

use crate::backend::Backend;
use crate::cancels::Active;
use crate::checked;
use crate::clock::Clock;
use crate::driver::{Driver, Outcome};
use crate::errors::{error, IntoPy};
use crate::history::{Details, EventRow, WaitingRow};
use crate::host::encode_value;
use crate::inbox::{persist_cancel, persist_signal};
use crate::native_store::NativeStore;
use crate::observe::Observer;
use crate::open::prepare;
use crate::pystore::PyStore;
use crate::registry::{Registry, Untyped};
use crate::reopen::{finished_outcome, header_of, reopen};
use crate::workflow::Compiled;

/// The native engine state shared by every run of one `tideflow.Engine`.
#[pyclass(module = "tideflow._core", name = "Engine", frozen)]
pub struct Engine {
    pub backend: Backend,
    pub registry: Registry,
    pub clock: Clock,
    /// Encodes values the JSON codec does not know (`tideflow.codec.to_jsonable`).
    pub fallback: Py<PyAny>,
    /// Runs an async step's coroutine for the synchronous driver, within a budget.
    pub coro_runner: Py<PyAny>,
    pub observer: Observer,
    /// Cancellation states of the instances driven in this process.
    pub active: Active,
}

fn parse_statuses(py: Python<'_>, names: &[String]) -> PyResult<Vec<Status>> {
    names
        .iter()
        .map(|n| Status::parse(n).ok_or_else(|| error(py, "TideflowError", format!("unknown status {n:?}"))))
        .collect()
}

/// One listed instance: (id, workflow, status, created_at, updated_at, due_at, plan hash, error
/// summary).
pub type ListRow = (String, String, String, f64, f64, Option<f64>, String, Option<String>);

/// An instance's stored state as Python sees it: (id, workflow, status, output, error JSON,
/// created_at, updated_at, plan hash, untyped). `untyped` is `(error class, message)` when the
/// output is the stored JSON because the instance's plan is not registered here.
pub type InstanceInfo = (String, String, String, Py<PyAny>, Py<PyAny>, f64, f64, String, Option<Untyped>);

fn unknown(py: Python<'_>, id: &str) -> PyErr {
    error(py, "UnknownInstance", format!("no workflow instance with id {id:?}"))
}

impl Engine {
    /// Header, log and inbox of `id` (one store call), or `UnknownInstance`.
    pub fn load(&self, py: Python<'_>, id: &str) -> PyResult<Loaded> {
        self.backend.call(py, |s| s.load(id)).py_err(py)?.ok_or_else(|| unknown(py, id))
    }

    /// Drives `d` in this thread, then releases it; the observer is told how the run ended (and,
    /// with `announce`, that it started).
    fn drive(&self, py: Python<'_>, mut d: Driver, announce: bool) -> PyResult<Outcome> {
        let workflow = d.wf.get().plan.name.clone();
        if announce {
            self.observer.started(py, &d.id_str, &workflow)?;
        }
        let result = d.drive_sync(py, self).map(|()| d.outcome(py));
        let id = d.id_str.clone();
        drop(d);
        self.active.release(&id);
        let outcome = result?;
        {
            let status = Status::parse(&outcome.0).unwrap_or(Status::Running);
            self.observer.ended(py, &id, &workflow, status, &outcome.1, &outcome.2)?;
        }
        Ok(outcome)
    }

    /// Creates instance `id` (or finds it: create-or-return is one store call) and returns a
    /// driver positioned to run it, or the stored result when it already finished.
    pub fn open(
        &self,
        py: Python<'_>,
        wf: &Bound<'_, Compiled>,
        id: &str,
        input: &Bound<'_, PyAny>,
        mode: Mode,
    ) -> PyResult<Result<Driver, Outcome>> {
        self.registry.register(wf);
        let name = &wf.get().plan.name;
        let prepared = match prepare(py, self, wf, id, input, Some(mode)) {
            Ok(p) => p,
            Err(e) => {
                // an input that does not encode: an existing instance never looks at it
                return match self.backend.call(py, |s| s.load(id)).py_err(py)? {
                    Some(loaded) => self.reopen_as(py, loaded, name, mode),
                    None => Err(e),
                };
            }
        };
        let p = &prepared;
        match self.backend.call(py, |s| s.create(&p.meta, &p.header_bytes, &p.records)).py_err(py)? {
            Created::New => Ok(Ok(prepared.into_driver(py, self, mode))),
            Created::Existing(stored) if stored.meta.status.is_finished() => {
                let loaded = Loaded { meta: stored.meta, header: stored.header, records: vec![], signals: vec![] };
                self.reopen_as(py, loaded, name, mode)
            }
            Created::Existing(_) => {
                let loaded = self.load(py, id)?;
                self.reopen_as(py, loaded, name, mode)
            }
        }
    }

    /// `reopen`, for a caller that asked for workflow `workflow`: an id taken by an instance of
    /// another workflow is an error, not that instance.
    pub fn reopen_as(
        &self,
        py: Python<'_>,
        loaded: Loaded,
        workflow: &str,
        mode: Mode,
    ) -> PyResult<Result<Driver, Outcome>> {
        if loaded.meta.workflow != workflow {
            return Err(error(
                py,
                "TideflowError",
                format!(
                    "instance id {:?} is taken by an instance of workflow {:?}, not {workflow:?}",
                    loaded.meta.id, loaded.meta.workflow
                ),
            ));
        }
        reopen(py, self, loaded, mode)
    }
}

#[pymethods]
impl Engine {
    /// A native engine on `store` (a `NativeStore`: memory or SQLite; None: a new memory store)
    /// or on `py_store`, a store written in Python (sync or async; the synchronous paths run an
    /// async store's coroutines with `store_runner`, else `coro_runner`).
    #[new]
    #[pyo3(signature = (fallback, coro_runner, clock=None, store=None, py_store=None, notify=None, store_runner=None))]
    #[allow(clippy::too_many_arguments)] // mirrors the Python constructor's keyword arguments
    fn new(
        py: Python<'_>,
        fallback: Py<PyAny>,
        coro_runner: Py<PyAny>,
        clock: Option<Bound<'_, PyAny>>,
        store: Option<Bound<'_, NativeStore>>,
        py_store: Option<Bound<'_, PyAny>>,
        notify: Option<Py<PyAny>>,
        store_runner: Option<Py<PyAny>>,
    ) -> PyResult<Self> {
        let backend = match (store, py_store) {
            (_, Some(obj)) => {
                let runner = store_runner.unwrap_or_else(|| coro_runner.clone_ref(py));
                Backend::Python(PyStore::new(obj, runner)?)
            }
            (Some(native), None) => Backend::Native { store: native.get().shared(), on_disk: native.get().on_disk },
            (None, None) => {
                let store: Box<dyn Store> = Box::new(MemoryStore::new());
                Backend::Native { store: Arc::new(Mutex::new(store)), on_disk: false }
            }
        };
        Ok(Engine {
            backend,
            registry: Registry::default(),
            clock: Clock::from_object(clock)?,
            fallback,
            coro_runner,
            observer: Observer::new(py, notify),
            active: Active::default(),
        })
    }

    /// Registers a compiled workflow (several versions of one name may be registered).
    fn register(&self, wf: &Bound<'_, Compiled>) {
        self.registry.register(wf);
    }

    /// Runs (or resumes, or returns the stored result of) instance `id` in this thread.
    fn run(&self, py: Python<'_>, wf: &Bound<'_, Compiled>, id: &str, input: &Bound<'_, PyAny>) -> PyResult<Outcome> {
        match self.open(py, wf, id, input, Mode::Sequential)? {
            Err(done) => Ok(done),
            Ok(d) => self.drive(py, d, true),
        }
    }

    /// Creates instance `id` as pending and runs nothing (a later `resume`, `run_due`,
    /// `recover` or a worker runs it); an existing id returns its stored state unchanged.
    /// Returns the instance's status.
    fn start(&self, py: Python<'_>, wf: &Bound<'_, Compiled>, id: &str, input: &Bound<'_, PyAny>) -> PyResult<String> {
        self.registry.register(wf);
        let p = prepare(py, self, wf, id, input, None)?;
        match self.backend.call(py, |s| s.create(&p.meta, &p.header_bytes, &p.records)).py_err(py)? {
            Created::New => Ok(Status::Pending.as_str().to_string()),
            Created::Existing(stored) if stored.meta.workflow != p.meta.workflow => Err(error(
                py,
                "TideflowError",
                format!(
                    "instance id {id:?} is taken by an instance of workflow {:?}, not {:?}",
                    stored.meta.workflow, p.meta.workflow
                ),
            )),
            Created::Existing(stored) => Ok(stored.meta.status.as_str().to_string()),
        }
    }

    /// Resumes stored instance `id` in this thread (until it finishes or suspends); a finished
    /// instance returns its stored result. Returns the outcome, the workflow and the plan hash.
    fn resume(&self, py: Python<'_>, id: &str) -> PyResult<(Outcome, String, String)> {
        let loaded = self.load(py, id)?;
        let (workflow, plan_hash) = (loaded.meta.workflow.clone(), loaded.meta.plan_hash.clone());
        let outcome = match reopen(py, self, loaded, Mode::Sequential)? {
            Err(done) => done,
            Ok(d) => self.drive(py, d, true)?,
        };
        Ok((outcome, workflow, plan_hash))
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
        let stored = self.backend.call(py, |s| s.get(id)).py_err(py)?;
        if let Some(header) = stored.and_then(|st| decode_header(&st.header).ok()) {
            if let Some(wf) = self.registry.find(py, &header.workflow, &header.plan_hash) {
                checked::check_signal(py, wf.get(), name, payload, &bytes)?;
            }
        }
        persist_signal(py, self, id, name, bytes)
    }

    /// Cancels instance `id` with `reason`. An instance driven in this process is told (its
    /// driver stops at the next step boundary, and `ctx.cancelled` turns true); otherwise it is
    /// cancelled here, running its compensation step in this thread. Returns the outcome, or
    /// None when another driver in this process will finish the cancellation.
    fn cancel(&self, py: Python<'_>, id: &str, reason: &str) -> PyResult<Option<Outcome>> {
        let loaded = self.load(py, id)?;
        let header = header_of(py, id, &loaded.header)?;
        let status = loaded.meta.status;
        if status.is_finished() {
            if status == Status::Cancelled {
                return Ok(Some(finished_outcome(py, &self.registry, &loaded.meta, &header)?.0));
            }
            return Err(error(py, "TideflowError", format!("instance {id:?} is already {}", status.as_str())));
        }
        // persisted first: a crash from here on cannot lose the request, and a driver in another
        // process finds it in the inbox
        persist_cancel(py, self, id, reason)?;
        if let Some(state) = self.active.driven(id) {
            state.request(reason);
            return Ok(None);
        }
        if self.registry.find(py, &header.workflow, &header.plan_hash).is_none() {
            // this process cannot run the instance's plan (its workflow, or that version of it, is
            // not registered here): the stored request is the success; whichever process drives
            // the instance next applies it
            return Ok(Some((status.as_str().to_string(), py.None(), py.None())));
        }
        let d = crate::reopen::resume(py, self, loaded, header, Mode::Sequential)?;
        d.cancel.request(reason);
        self.drive(py, d, false).map(Some)
    }

    /// Ids of the instances due now (pending ones, suspended ones whose timer or signal is
    /// ready), oldest due first.
    #[pyo3(signature = (limit=None))]
    fn due(&self, py: Python<'_>, limit: Option<usize>) -> PyResult<Vec<String>> {
        let now = self.clock.now(py)?;
        let metas = self.backend.call(py, |s| s.due(now, limit)).py_err(py)?;
        // the engine's own instances (a worker's tasks: `!task`) are for workers, not resumed
        Ok(metas.into_iter().filter(|m| !m.workflow.starts_with('!')).map(|m| m.id).collect())
    }

    /// One page of the instances matching the filters, newest first, and the cursor of the next
    /// page (None at the end).
    #[pyo3(signature = (statuses, workflow=None, limit=None, cursor=None, plan_hash=None))]
    fn list(
        &self,
        py: Python<'_>,
        statuses: Vec<String>,
        workflow: Option<String>,
        limit: Option<usize>,
        cursor: Option<String>,
        plan_hash: Option<String>,
    ) -> PyResult<(Vec<ListRow>, Option<String>)> {
        let statuses = parse_statuses(py, &statuses)?;
        let q = ListQuery { statuses, workflow, plan_hash, limit, cursor };
        let page = self.backend.call(py, |s| s.list(&q)).py_err(py)?;
        let rows = page
            .items
            .into_iter()
            .map(|m| {
                let status = m.status.as_str().to_string();
                (m.id, m.workflow, status, m.created_at, m.updated_at, m.due_at, m.plan_hash, m.error)
            })
            .collect();
        Ok((rows, page.cursor))
    }

    /// How many instances there are per workflow and status: `(workflow, status, count)`.
    fn counts(&self, py: Python<'_>) -> PyResult<Vec<(String, String, u64)>> {
        let counts = self.backend.call(py, |s| s.counts()).py_err(py)?;
        Ok(counts.into_iter().map(|c| (c.workflow, c.status.as_str().to_string(), c.count)).collect())
    }

    /// Deletes finished instances last updated before `before` (seconds since the epoch) whose
    /// status is in `statuses` (empty: any finished status); returns how many.
    fn purge(&self, py: Python<'_>, before: f64, statuses: Vec<String>) -> PyResult<u64> {
        let statuses = parse_statuses(py, &statuses)?;
        self.backend.call(py, |s| s.purge(before, &statuses)).py_err(py)
    }

    /// Gives the space of deleted instances back to the file system (SQLite); a no-op elsewhere.
    fn compact(&self, py: Python<'_>) -> PyResult<()> {
        self.backend.call(py, |s| s.compact()).py_err(py)
    }

    /// Deletes one instance and its history; whether it existed.
    fn delete(&self, py: Python<'_>, id: &str) -> PyResult<bool> {
        self.backend.call(py, |s| s.delete(id)).py_err(py)
    }

    /// The stored state of instance `id`.
    fn get(&self, py: Python<'_>, id: &str) -> PyResult<InstanceInfo> {
        let stored = self.backend.call(py, |s| s.get(id)).py_err(py)?.ok_or_else(|| unknown(py, id))?;
        let header = header_of(py, id, &stored.header)?;
        let ((status, output, err), untyped) = if stored.meta.status.is_finished() {
            finished_outcome(py, &self.registry, &stored.meta, &header)?
        } else {
            ((stored.meta.status.as_str().to_string(), py.None(), py.None()), None)
        };
        let m = stored.meta;
        Ok((
            id.to_string(),
            header.workflow,
            status,
            output,
            err,
            m.created_at,
            m.updated_at,
            header.plan_hash,
            untyped,
        ))
    }

    /// The history of instance `id`: one `(kind, position, fields)` per event, in log order
    /// (see `history.rs`).
    fn history(&self, py: Python<'_>, id: &str) -> PyResult<Vec<EventRow>> {
        crate::history::history_rows(py, &self.registry, &self.load(py, id)?)
    }

    /// What suspended instance `id` waits for: `(kind, position, signal, step, until)` each.
    fn waiting_for(&self, py: Python<'_>, id: &str) -> PyResult<Vec<WaitingRow>> {
        let loaded = self.load(py, id)?;
        crate::history::waiting_rows(py, &self.registry, &loaded, self.clock.now(py)?)
    }

    /// The stored input and times of instance `id`: `(input, created_at, updated_at, due_at)`.
    fn details(&self, py: Python<'_>, id: &str) -> PyResult<Details> {
        let stored = self.backend.call(py, |s| s.get(id)).py_err(py)?.ok_or_else(|| unknown(py, id))?;
        crate::history::details(py, &self.registry, &stored)
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

    /// Whether the store is an `AsyncStore` (the asyncio driver awaits it).
    #[getter]
    fn async_store(&self) -> bool {
        self.backend.is_async()
    }

    /// Whether other processes may share the store (everything but memory).
    #[getter]
    fn shared_store(&self) -> bool {
        self.backend.shared_with_others()
    }
}
