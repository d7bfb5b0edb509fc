//! `_core.AsyncRun`: one instance driven from asyncio. The asyncio driver (`tideflow/_async.py`)
//! asks `next()` and executes what comes back, as `(kind, argument)`:
//!
//! - `RUN`, a list of `(task_id, func, ctx, input, is_async, budget)`: start them (the async ones
//!   together) and hand each result back with `complete` / `fail`;
//! - `WAIT`, a deadline or None: wait for a running task, a wake-up or the deadline, then `wake()`
//!   and ask again;
//! - `DONE`: the run ended; `outcome()` says how;
//! - for an `AsyncStore` only (a native or synchronous store is called here, in the same crossing):
//!   `CREATE` `(meta, header, records)`, `COMMIT` a `Commit`, `INBOX` the inbox number to read
//!   after, `LOAD` the instance id: await the store and hand the answer to `created`,
//!   `committed` / `conflicted`, `inbox` or `reloaded`.
//!
//! Handing a result back also answers the next `(kind, argument)`, so a sequential step costs one
//! crossing on a native store.

use std::collections::HashMap;
use std::sync::Mutex;

use pyo3::prelude::*;
use pyo3::types::{PyBool, PyBytes, PyList, PyTuple};
use tideflow_core::drive::{Mode, Next};
use tideflow_core::instance::Task;
use tideflow_core::Status;

use crate::convert::Check;
use crate::convert::{commit_to_py, meta_to_py};
use crate::driver::{Driver, Outcome};
use crate::engine::Engine;
use crate::errors::error;
use crate::errors::IntoPy;
use crate::open::{prepare, Prepared};
use crate::reopen::{finished_outcome, header_of};
use crate::workflow::Compiled;

const RUN: u8 = 0;
const WAIT: u8 = 1;
const DONE: u8 = 2;
const COMMIT: u8 = 3;
const INBOX: u8 = 4;
const LOAD: u8 = 5;
const CREATE: u8 = 6;

enum Phase {
    /// An `AsyncStore` is to create the instance.
    Creating(Box<Prepared>),
    /// An `AsyncStore` is to load the instance (it existed).
    Loading,
    Driving(Box<Driver>),
    Done(Outcome),
}

struct State {
    phase: Phase,
    /// Tasks handed out: the task and the driver's epoch then.
    inflight: HashMap<u64, (Task<Py<PyAny>>, u64)>,
    next_id: u64,
    /// Whether the observer was told the run started (it is then told how it ended).
    announced: bool,
}

/// One instance driven from asyncio.
#[pyclass(module = "tideflow._core", name = "AsyncRun", frozen)]
pub struct AsyncRun {
    engine: Py<Engine>,
    /// The store's name, for the errors about what it returned.
    store_name: String,
    id: String,
    workflow: String,
    /// The lease holder its commits are fenced by (a worker), or None.
    owner: Option<String>,
    /// Whether every step may run beside others (a worker's driver), not only async ones.
    spread: bool,
    state: Mutex<State>,
}

impl Drop for AsyncRun {
    fn drop(&mut self) {
        let st = self.state.get_mut().unwrap_or_else(|e| e.into_inner());
        let phase = std::mem::replace(&mut st.phase, Phase::Loading);
        let inflight = std::mem::take(&mut st.inflight);
        // dropping Python references needs the GIL
        Python::attach(|_| {
            drop(phase);
            drop(inflight);
        });
        self.engine.get().active.release(&self.id);
    }
}

type Answer<'py> = Bound<'py, PyTuple>;

fn answer<'py>(py: Python<'py>, kind: u8, arg: Bound<'py, PyAny>) -> PyResult<Answer<'py>> {
    PyTuple::new(py, [kind.into_pyobject(py)?.into_any(), arg])
}

impl AsyncRun {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn driving(&self, py: Python<'_>, st: &mut State, mut d: Driver) -> PyResult<()> {
        d.owner = self.owner.clone();
        d.spread = self.spread;
        if !st.announced {
            self.engine.get().observer.started(py, &self.id, &self.workflow)?;
            st.announced = true;
        }
        st.phase = Phase::Driving(Box::new(d));
        Ok(())
    }

    fn opened(&self, py: Python<'_>, st: &mut State, opened: Result<Driver, Outcome>) -> PyResult<()> {
        match opened {
            Ok(d) => self.driving(py, st, d),
            Err(done) => {
                st.phase = Phase::Done(done);
                Ok(())
            }
        }
    }

    /// The policy's next answer, with store I/O done here unless the store is an `AsyncStore`.
    fn next_answer<'py>(&self, py: Python<'py>, st: &mut State) -> PyResult<Answer<'py>> {
        let engine = self.engine.get();
        let d = match &mut st.phase {
            Phase::Creating(p) => {
                let records = PyList::new(py, p.records.iter().map(|r| PyBytes::new(py, r)))?;
                let args = (meta_to_py(py, &p.meta)?, PyBytes::new(py, &p.header_bytes), records);
                return answer(py, CREATE, args.into_pyobject(py)?.into_any());
            }
            Phase::Loading => return answer(py, LOAD, self.id.as_str().into_pyobject(py)?.into_any()),
            Phase::Done(_) => return answer(py, DONE, py.None().into_bound(py)),
            Phase::Driving(d) => d,
        };
        let next = if engine.backend.is_async() {
            if d.settled.is_some() {
                Next::Done
            } else {
                d.next(py, engine, true)?
            }
        } else {
            d.advance(py, engine, true)?
        };
        match next {
            Next::Run(tasks) => self.run_answer(py, st, tasks),
            Next::Wait { until } => answer(py, WAIT, until.into_pyobject(py)?.into_any()),
            Next::Sleep { until } => answer(py, WAIT, Some(until).into_pyobject(py)?.into_any()),
            Next::Done => answer(py, DONE, py.None().into_bound(py)),
            Next::Commit => {
                let pending = d.core.commit().expect("the policy asked for a commit");
                let commit = commit_to_py(py, &pending.as_commit(&d.id_str, d.owner.as_deref()))?;
                answer(py, COMMIT, commit)
            }
            Next::ReadInbox { after } => answer(py, INBOX, after.into_pyobject(py)?.into_any()),
        }
    }

    /// `RUN` with `tasks`, handed out (noted in flight with the driver's epoch).
    fn run_answer<'py>(&self, py: Python<'py>, st: &mut State, tasks: Vec<Task<Py<PyAny>>>) -> PyResult<Answer<'py>> {
        let engine = self.engine.get();
        let Phase::Driving(d) = &mut st.phase else { return answer(py, DONE, py.None().into_bound(py)) };
        let out = PyList::empty(py);
        let now = engine.clock.now(py)?;
        for task in tasks {
            let entry = &d.wf.get().steps[task.step as usize];
            st.next_id += 1;
            let item = PyTuple::new(
                py,
                [
                    st.next_id.into_pyobject(py)?.into_any(),
                    entry.func.bind(py).clone(),
                    d.context(py, &task)?.into_any(),
                    task.input.bind(py).clone(),
                    PyBool::new(py, entry.is_async).to_owned().into_any(),
                    d.core.budget(&task, now).into_pyobject(py)?.into_any(),
                ],
            )?;
            out.append(item)?;
            st.inflight.insert(st.next_id, (task, d.epoch));
        }
        answer(py, RUN, out.into_any())
    }

    /// The checks of what the `AsyncStore`'s `method` returned (the same as for a sync store).
    fn check(&self, method: &'static str) -> Check<'_> {
        Check { store: &self.store_name, method, given: false }
    }

    fn driver<'a>(&self, py: Python<'_>, st: &'a mut State) -> PyResult<&'a mut Driver> {
        match &mut st.phase {
            Phase::Driving(d) => Ok(d),
            _ => Err(error(py, "TideflowError", format!("instance {:?} is not being driven", self.id))),
        }
    }

    fn settle<'py>(
        &self,
        py: Python<'py>,
        task_id: u64,
        result: PyResult<Bound<'py, PyAny>>,
        advance: bool,
    ) -> PyResult<Option<Answer<'py>>> {
        let mut guard = self.lock();
        let st = &mut *guard;
        let (task, epoch) = st
            .inflight
            .remove(&task_id)
            .ok_or_else(|| error(py, "TideflowError", format!("task {task_id} is not running")))?;
        if let Phase::Driving(d) = &mut st.phase {
            if epoch == d.epoch && d.settled.is_none() {
                d.settle(py, self.engine.get(), task, result)?;
            } // else the instance was reloaded meanwhile: this attempt's result is not its to take
        }
        if !advance {
            return Ok(None);
        }
        self.next_answer(py, st).map(Some)
    }
}

#[pymethods]
impl AsyncRun {
    /// Opens instance `id` of `wf` on `input` for the asyncio driver: created, resumed, or found
    /// finished (on an `AsyncStore`, the first answers ask the driver to create or load it).
    #[new]
    fn new(
        py: Python<'_>,
        engine: Py<Engine>,
        wf: &Bound<'_, Compiled>,
        id: &str,
        input: &Bound<'_, PyAny>,
    ) -> PyResult<Self> {
        let e = engine.get();
        let workflow = wf.get().plan.name.clone();
        let run = AsyncRun {
            id: id.to_string(),
            workflow,
            owner: None,
            spread: false,
            state: Mutex::new(State { phase: Phase::Loading, inflight: HashMap::new(), next_id: 0, announced: false }),
            store_name: e.backend.describe(),
            engine: engine.clone_ref(py),
        };
        {
            let mut st = run.lock();
            if e.backend.is_async() {
                e.registry.register(wf);
                st.phase = Phase::Creating(Box::new(prepare(py, e, wf, id, input, Some(Mode::Concurrent))?));
            } else {
                let opened = e.open(py, wf, id, input, Mode::Concurrent)?;
                run.opened(py, &mut st, opened)?;
            }
        }
        Ok(run)
    }

    /// Drives stored instance `id` of `workflow` (as a claim returned it) for a worker whose
    /// commits are fenced by its lease as `owner`; with `spread`, every step may run beside
    /// others (sync ones in threads, or on other workers). On an `AsyncStore` the first answer
    /// asks the driver to load it.
    #[staticmethod]
    #[pyo3(signature = (engine, id, workflow, owner, spread=true))]
    fn claimed(
        py: Python<'_>,
        engine: Py<Engine>,
        id: &str,
        workflow: &str,
        owner: &str,
        spread: bool,
    ) -> PyResult<Self> {
        let e = engine.get();
        let run = AsyncRun {
            id: id.to_string(),
            workflow: workflow.to_string(),
            owner: Some(owner.to_string()),
            spread,
            state: Mutex::new(State { phase: Phase::Loading, inflight: HashMap::new(), next_id: 0, announced: false }),
            store_name: e.backend.describe(),
            engine: engine.clone_ref(py),
        };
        if !e.backend.is_async() {
            let loaded = e.load(py, id)?;
            let opened = e.reopen_as(py, loaded, workflow, Mode::Concurrent)?;
            let mut st = run.lock();
            run.opened(py, &mut st, opened)?;
        }
        Ok(run)
    }

    /// `(step index, key, attempt, interrupted)` of a task handed out and not settled yet.
    fn task_info(&self, py: Python<'_>, task_id: u64) -> PyResult<(u32, String, u32, u32)> {
        let st = self.lock();
        let (task, _) = st
            .inflight
            .get(&task_id)
            .ok_or_else(|| error(py, "TideflowError", format!("task {task_id} is not running")))?;
        Ok((task.step, task.key.clone(), task.attempt, task.interrupted))
    }

    /// Hands back the outcome of a task that ran on another worker (see `remote.rs`); unless
    /// `advance` is false, answers what to do next.
    #[pyo3(signature = (task_id, outcome, advance=true))]
    fn remote<'py>(
        &self,
        py: Python<'py>,
        task_id: u64,
        outcome: &[u8],
        advance: bool,
    ) -> PyResult<Option<Answer<'py>>> {
        let mut guard = self.lock();
        let st = &mut *guard;
        let (task, epoch) = st
            .inflight
            .remove(&task_id)
            .ok_or_else(|| error(py, "TideflowError", format!("task {task_id} is not running")))?;
        if let Phase::Driving(d) = &mut st.phase {
            if epoch == d.epoch && d.settled.is_none() {
                let attempt = crate::remote::decode_outcome(py, d, task.step, outcome)?;
                d.settle_attempt(py, self.engine.get(), task, attempt)?;
            }
        }
        if !advance {
            return Ok(None);
        }
        self.next_answer(py, st).map(Some)
    }

    /// What to do next, as `(kind, argument)` (see the module docs).
    fn next<'py>(&self, py: Python<'py>) -> PyResult<Answer<'py>> {
        let mut st = self.lock();
        self.next_answer(py, &mut st)
    }

    /// Hands back a step's return value; unless `advance` is false (to group several completions
    /// into one commit), answers what to do next.
    #[pyo3(signature = (task_id, output, advance=true))]
    fn complete<'py>(
        &self,
        py: Python<'py>,
        task_id: u64,
        output: Bound<'py, PyAny>,
        advance: bool,
    ) -> PyResult<Option<Answer<'py>>> {
        self.settle(py, task_id, Ok(output), advance)
    }

    /// Hands back a step's exception (the retry policy decides); see `complete`.
    #[pyo3(signature = (task_id, exc, advance=true))]
    fn fail<'py>(
        &self,
        py: Python<'py>,
        task_id: u64,
        exc: Bound<'py, PyAny>,
        advance: bool,
    ) -> PyResult<Option<Answer<'py>>> {
        self.settle(py, task_id, Err(PyErr::from_value(exc)), advance)
    }

    /// The driver was woken (a signal or cancellation in this process, a timer, a poll): the
    /// inbox is read again at the next answer.
    fn wake(&self) {
        if let Phase::Driving(d) = &mut self.lock().phase {
            d.core.wake();
        }
    }

    /// The `AsyncStore` answered `CREATE`: None (created) or the instance already stored.
    fn created<'py>(&self, py: Python<'py>, existing: Bound<'py, PyAny>) -> PyResult<Answer<'py>> {
        let mut guard = self.lock();
        let st = &mut *guard;
        let Phase::Creating(_) = &st.phase else {
            return Err(error(py, "TideflowError", "created() without a create"));
        };
        let Phase::Creating(p) = std::mem::replace(&mut st.phase, Phase::Loading) else { unreachable!() };
        let engine = self.engine.get();
        match self.check("create").stored(&existing).py_err(py)? {
            None => {
                let d = p.into_driver(py, engine, Mode::Concurrent);
                self.driving(py, st, d)?;
            }
            Some(stored) if stored.meta.workflow != self.workflow => {
                return Err(error(
                    py,
                    "TideflowError",
                    format!(
                        "instance id {:?} is taken by an instance of workflow {:?}, not {:?}",
                        self.id, stored.meta.workflow, self.workflow
                    ),
                ))
            }
            Some(stored) if stored.meta.status.is_finished() => {
                let header = header_of(py, &self.id, &stored.header)?;
                match finished_outcome(py, &engine.registry, &stored.meta, &header)? {
                    (_, Some((class, msg))) => return Err(error(py, class, msg)),
                    (done, None) => st.phase = Phase::Done(done),
                }
            }
            Some(_) => {} // unfinished: load it (`Loading`)
        }
        self.next_answer(py, st)
    }

    /// The `AsyncStore` committed what `COMMIT` asked for.
    fn committed<'py>(&self, py: Python<'py>) -> PyResult<Answer<'py>> {
        let mut guard = self.lock();
        let st = &mut *guard;
        let tasks = self.driver(py, st)?.core.committed();
        match tasks {
            Some(tasks) => self.run_answer(py, st, tasks),
            None => self.next_answer(py, st),
        }
    }

    /// The `AsyncStore` rejected the commit with `StoreConflict`: another writer advanced the
    /// instance; answers `LOAD` (its state is reloaded, nothing of this driver's was written).
    fn conflicted<'py>(&self, py: Python<'py>) -> PyResult<Answer<'py>> {
        answer(py, LOAD, self.id.as_str().into_pyobject(py)?.into_any())
    }

    /// The `AsyncStore` answered `INBOX` with `(number, record)` pairs.
    fn inbox<'py>(&self, py: Python<'py>, signals: Bound<'py, PyAny>) -> PyResult<Answer<'py>> {
        let signals = self.check("signals").signals(&signals).py_err(py)?;
        let mut guard = self.lock();
        let st = &mut *guard;
        self.driver(py, st)?.take_inbox(py, signals)?;
        self.next_answer(py, st)
    }

    /// The `AsyncStore` answered `LOAD` with a `Loaded` (or None).
    fn reloaded<'py>(&self, py: Python<'py>, loaded: Bound<'py, PyAny>) -> PyResult<Answer<'py>> {
        let mut guard = self.lock();
        let st = &mut *guard;
        let loaded = self.check("load").loaded(&loaded).py_err(py)?;
        let engine = self.engine.get();
        match &mut st.phase {
            Phase::Driving(d) => d.reloaded(py, engine, loaded)?,
            Phase::Loading => {
                let loaded = loaded.ok_or_else(|| {
                    error(py, "UnknownInstance", format!("no workflow instance with id {:?}", self.id))
                })?;
                let opened = engine.reopen_as(py, loaded, &self.workflow, Mode::Concurrent)?;
                self.opened(py, st, opened)?;
            }
            _ => return Err(error(py, "TideflowError", "reloaded() without a load")),
        }
        self.next_answer(py, st)
    }

    /// Whether a cancellation is under way (only the compensation step still runs).
    #[getter]
    fn cancelling(&self) -> bool {
        match &self.lock().phase {
            Phase::Driving(d) => d.core.cancelling() || d.cancel.requested(),
            _ => false,
        }
    }

    /// When the earliest pending timer (a retry, a sleep, a timeout) is due, if any.
    fn deadline(&self) -> Option<f64> {
        match &self.lock().phase {
            Phase::Driving(d) if d.settled.is_none() => d.core.inst.next_deadline(),
            _ => None,
        }
    }

    /// Whether the instance completed, failed or was cancelled (or was finished when opened).
    #[getter]
    fn finished(&self) -> bool {
        match &self.lock().phase {
            Phase::Done(_) => true,
            Phase::Driving(d) => d.finished(),
            _ => false,
        }
    }

    /// How the run ended: `(status, output, error JSON)`; tells the observer.
    fn outcome(&self, py: Python<'_>) -> PyResult<Outcome> {
        let mut st = self.lock();
        let o = match &st.phase {
            Phase::Done(o) => (o.0.clone(), o.1.clone_ref(py), o.2.clone_ref(py)),
            Phase::Driving(d) => d.outcome(py),
            _ => return Err(error(py, "TideflowError", "nothing to report")),
        };
        if std::mem::take(&mut st.announced) {
            let status = Status::parse(&o.0).unwrap_or(Status::Running);
            self.engine.get().observer.ended(py, &self.id, &self.workflow, status, &o.1, &o.2)?;
        }
        Ok(o)
    }
}
