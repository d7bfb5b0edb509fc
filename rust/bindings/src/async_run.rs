//! `_core.AsyncRun`: the handle the asyncio driver uses. It hands out ready tasks and takes back
//! one completion per call, committing and returning the next ready tasks in the same crossing.

use std::collections::HashMap;
use std::sync::Mutex;

use pyo3::prelude::*;
use pyo3::types::{PyBool, PyList, PyTuple};
use tideflow_core::instance::Task;

use crate::driver::{Driver, Outcome};
use crate::engine::Engine;
use crate::errors::error;
use crate::workflow::Compiled;

struct State {
    driver: Option<Driver>,
    done: Option<Outcome>,
    /// Tasks handed out: the task, when it started, and the driver's epoch then.
    inflight: HashMap<u64, (Task<Py<PyAny>>, f64, u64)>,
    next_id: u64,
}

/// One instance driven from asyncio.
#[pyclass(module = "tideflow._core", name = "AsyncRun", frozen)]
pub struct AsyncRun {
    engine: Py<Engine>,
    state: Mutex<State>,
}

impl Drop for AsyncRun {
    fn drop(&mut self) {
        let st = self.state.get_mut().unwrap_or_else(|e| e.into_inner());
        if let Some(d) = st.driver.take() {
            let id = d.id_str.clone();
            // dropping the driver releases its Python references: that needs the GIL
            Python::attach(|_| drop(d));
            self.engine.get().release(&id);
        }
    }
}

impl AsyncRun {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Takes the tasks to start now and returns them as `(task_id, func, ctx, input, is_async,
    /// timeout)`: every ready async step (they run concurrently), up to and including the first
    /// sync one (sync steps run one at a time, so the ones after it stay ready, and uncharged,
    /// until it finished). What they start is committed, with anything recorded before, first.
    fn take_ready<'py>(&self, py: Python<'py>, st: &mut State) -> PyResult<Bound<'py, PyList>> {
        let out = PyList::empty(py);
        let engine = self.engine.get();
        let (taken, now) = loop {
            let Some(d) = st.driver.as_mut() else { return Ok(out) };
            let now = engine.clock.now(py)?;
            d.advance(py, engine, now);
            let wf = d.wf.clone_ref(py);
            let mut taken = Vec::new();
            while let Some(task) = d.first.take().or_else(|| d.inst.pop_ready(now)) {
                let sync = !wf.get().steps[task.step as usize].is_async;
                taken.push(task);
                if sync {
                    break;
                }
            }
            let epoch = d.epoch;
            d.commit(py, engine)?;
            if d.epoch == epoch {
                break (taken, now);
            } // reloaded from the store: those tasks were the old instance's; take again
        };
        let Some(d) = st.driver.as_mut() else { return Ok(out) };
        for task in taken {
            let wf = d.wf.get();
            let entry = &wf.steps[task.step as usize];
            st.next_id += 1;
            let ctx = d.context(py, &task)?;
            d.observe_start(py, engine, &task)?;
            let item = PyTuple::new(
                py,
                [
                    st.next_id.into_pyobject(py)?.into_any(),
                    entry.func.bind(py).clone(),
                    ctx.into_any(),
                    task.input.bind(py).clone(),
                    PyBool::new(py, entry.is_async).to_owned().into_any(),
                    d.timeout_of(entry.timeout, now).into_pyobject(py)?.into_any(),
                ],
            )?;
            out.append(item)?;
            st.inflight.insert(st.next_id, (task, now, d.epoch));
        }
        Ok(out)
    }

    fn settle<'py>(
        &self,
        py: Python<'py>,
        task_id: u64,
        result: PyResult<Bound<'py, PyAny>>,
        commit: bool,
    ) -> PyResult<Bound<'py, PyList>> {
        let mut guard = self.lock();
        let st = &mut *guard;
        let (task, started, epoch) = st
            .inflight
            .remove(&task_id)
            .ok_or_else(|| error(py, "TideflowError", format!("task {task_id} is not running")))?;
        let engine = self.engine.get();
        let d = st.driver.as_mut().ok_or_else(|| error(py, "TideflowError", "the run is finished"))?;
        if epoch == d.epoch && d.settled.is_none() {
            d.settle(py, engine, task, result, started)?;
        } // else the instance was reloaded meanwhile: this attempt's result is not its to take
        if !commit {
            return Ok(PyList::empty(py));
        }
        self.take_ready(py, st)
    }
}

#[pymethods]
impl AsyncRun {
    /// Opens (creates, resumes, or finds finished) instance `id` for the asyncio driver.
    #[new]
    fn new(
        py: Python<'_>,
        engine: Py<Engine>,
        wf: &Bound<'_, Compiled>,
        id: &str,
        input: &Bound<'_, PyAny>,
    ) -> PyResult<Self> {
        let (driver, done) = match engine.get().open(py, wf, id, input)? {
            Ok(d) => (Some(d), None),
            Err(o) => (None, Some(o)),
        };
        Ok(AsyncRun { engine, state: Mutex::new(State { driver, done, inflight: HashMap::new(), next_id: 0 }) })
    }

    /// Ready tasks as `(task_id, func, ctx, input, is_async, timeout)` tuples (due timers
    /// included).
    fn ready<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        let mut st = self.lock();
        self.take_ready(py, &mut st)
    }

    /// Hands back a step's return value; unless `commit` is false (to group several completions
    /// into one transaction), takes the next tasks and commits them with it, and returns them.
    #[pyo3(signature = (task_id, output, commit=true))]
    fn complete<'py>(
        &self,
        py: Python<'py>,
        task_id: u64,
        output: Bound<'py, PyAny>,
        commit: bool,
    ) -> PyResult<Bound<'py, PyList>> {
        self.settle(py, task_id, Ok(output), commit)
    }

    /// Hands back a step's exception; the retry policy decides; returns the tasks now ready.
    #[pyo3(signature = (task_id, exc, commit=true))]
    fn fail<'py>(
        &self,
        py: Python<'py>,
        task_id: u64,
        exc: Bound<'py, PyAny>,
        commit: bool,
    ) -> PyResult<Bound<'py, PyList>> {
        let err = PyErr::from_value(exc);
        self.settle(py, task_id, Err(err), commit)
    }

    /// Reads new signals from the store, hands them to the waits, commits, and returns the tasks
    /// now ready.
    fn refresh<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        let mut st = self.lock();
        if let Some(d) = st.driver.as_mut() {
            d.refresh_signals(py, self.engine.get())?;
        }
        self.take_ready(py, &mut st)
    }

    /// Whether a cancellation is under way (only the compensation step still runs).
    #[getter]
    fn cancelling(&self) -> bool {
        self.lock().driver.as_ref().is_some_and(|d| d.inst.is_cancelling() || d.cancel.requested())
    }

    /// When the earliest pending timer (a retry, a sleep, a timeout) is due, if any.
    fn deadline(&self) -> Option<f64> {
        self.lock().driver.as_ref().filter(|d| d.settled.is_none()).and_then(|d| d.inst.next_deadline())
    }

    /// Whether the instance completed or failed (or was already finished when opened).
    #[getter]
    fn finished(&self) -> bool {
        let st = self.lock();
        st.done.is_some() || st.driver.as_ref().is_some_and(Driver::finished)
    }

    /// Commits anything pending and returns `(status, output, error JSON)`.
    fn outcome(&self, py: Python<'_>) -> PyResult<Outcome> {
        let mut st = self.lock();
        if let Some(o) = &st.done {
            return Ok((o.0.clone(), o.1.clone_ref(py), o.2.clone_ref(py)));
        }
        let d = st.driver.as_mut().ok_or_else(|| error(py, "TideflowError", "nothing to report"))?;
        d.commit(py, self.engine.get())?;
        Ok(d.outcome(py))
    }
}
