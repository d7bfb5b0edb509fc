//! Steps that run on another worker than the one holding their instance (a fan-out's branches,
//! a step routed to a queue this worker does not serve). The holder hands the step out as a
//! *task*: a small stored instance of the reserved workflow `!task` whose header names the
//! parent, the position and the attempt. A worker that claims it rebuilds the parent from its
//! records ([`Instance::rebuild`] with the attempt still running) to find the step's input
//! exactly as the holder would have passed it, runs the step with the same context (instance
//! id, position, attempt, so the same idempotency key), and stores the attempt's *outcome* in
//! the task's header; the holder takes that outcome as if the step had run in its own process.
//!
//! An outcome is a tag byte and a body: `o` + the output payload as the step's codec wrote it,
//! `e` + `{"type", "message", "traceback", "retryable"}`, `s` + why the step was not run (the
//! parent no longer waits for it).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use pyo3::prelude::*;
use pyo3::types::{PyBool, PyBytes, PyList, PyString, PyTuple};
use tideflow_core::codec::{decode_signal, encode_header, encode_signal, Header, Signal};
use tideflow_core::drive::{sort_inbox, Attempt, Driving, Mode, Stored};
use tideflow_core::instance::{Failure, Instance, Task};

use crate::cancels::CancelState;
use crate::convert::Check;
use crate::driver::Driver;
use crate::engine::Engine;
use crate::errors::{error, IntoPy};
use crate::host::{decode_value, PyHost};
use crate::reopen::{decode_stored_input, header_of, records_of};

/// The outcome bytes of an attempt (see the module docs).
pub fn encode_outcome(attempt: &Attempt<Py<PyAny>>) -> Vec<u8> {
    match attempt {
        Attempt::Returned { payload, .. } => {
            let mut out = Vec::with_capacity(payload.len() + 1);
            out.push(b'o');
            out.extend_from_slice(payload);
            out
        }
        Attempt::Raised { failure, retryable } => {
            let mut out = vec![b'e'];
            let body = serde_json::json!({
                "type": failure.error_type, "message": failure.message,
                "traceback": failure.traceback, "retryable": retryable,
            });
            out.extend(serde_json::to_vec(&body).expect("json"));
            out
        }
        Attempt::Stopped => {
            let mut out = vec![b's'];
            out.extend_from_slice(b"the step stopped for its instance's cancellation");
            out
        }
    }
}

/// The attempt an outcome stands for, for step `step` of the holder's workflow (a returned
/// value is decoded with the step's codec, as a resume would).
pub fn decode_outcome(py: Python<'_>, d: &Driver, step: u32, outcome: &[u8]) -> PyResult<Attempt<Py<PyAny>>> {
    let bad = |why: &str| error(py, "CorruptCheckpoint", format!("a task outcome of instance {:?}: {why}", d.id_str));
    let (tag, body) = outcome.split_first().ok_or_else(|| bad("empty"))?;
    Ok(match tag {
        b'o' => {
            let entry = &d.wf.get().steps[step as usize];
            let value = decode_value(py, entry.decode.as_ref(), body)?.unbind();
            Attempt::Returned { value, payload: body.to_vec() }
        }
        b'e' => {
            let v: serde_json::Value = serde_json::from_slice(body).map_err(|e| bad(&e.to_string()))?;
            let text = |k: &str| v.get(k).and_then(|s| s.as_str()).unwrap_or("").to_string();
            let failure = Failure { error_type: text("type"), message: text("message"), traceback: text("traceback") };
            Attempt::Raised { failure, retryable: v.get("retryable").and_then(|b| b.as_bool()).unwrap_or(false) }
        }
        b's' => {
            let why = String::from_utf8_lossy(body);
            let step_name = &d.wf.get().plan.steps[step as usize].name;
            let msg = format!("the worker that took step {step_name:?} did not run it: {why}");
            Attempt::Raised { failure: Failure::new("StepInterrupted", msg), retryable: true }
        }
        _ => return Err(bad(&format!("unknown tag {tag}"))),
    })
}

/// The header of a task: `info` is its JSON description (parent, position, attempt), `output`
/// the outcome once it ran; `workflow` is `!task` (reserved: user names cannot start with `!`), or
/// another of the engine's own instance kinds (`!lease`).
#[pyfunction]
#[pyo3(signature = (plan_hash, info, created_at, output=None, workflow="!task"))]
pub fn task_header(
    plan_hash: &str,
    info: Vec<u8>,
    created_at: f64,
    output: Option<Vec<u8>>,
    workflow: &str,
) -> Vec<u8> {
    encode_header(&Header {
        workflow: workflow.to_string(),
        version: None,
        plan_hash: plan_hash.to_string(),
        input: info,
        created_at,
        output,
        error: None,
        outline: None,
    })
}

/// A task's `(info, outcome)` from its header (the outcome None until it ran).
#[pyfunction]
pub fn task_fields(py: Python<'_>, id: &str, header: &[u8]) -> PyResult<(Vec<u8>, Option<Vec<u8>>)> {
    let h = header_of(py, id, header)?;
    Ok((h.input, h.output))
}

/// `(seq, name, payload)` of inbox records (the reserved `!` names included, which drivers
/// skip); a record that does not decode is a `CorruptCheckpoint` naming it.
#[pyfunction]
pub fn inbox_entries<'py>(py: Python<'py>, id: &str, raw: Vec<(u64, Vec<u8>)>) -> PyResult<Bound<'py, PyList>> {
    let out = PyList::empty(py);
    for (seq, r) in raw {
        let s = decode_signal(&r)
            .map_err(|e| error(py, "CorruptCheckpoint", format!("instance {id:?}, signal #{seq}: {e}")))?;
        out.append((seq, s.name, PyBytes::new(py, &s.payload)))?;
    }
    Ok(out)
}

/// An inbox record for the engine itself (a reserved `!` name): e.g. a worker's note that a
/// task of the instance ran.
#[pyfunction]
pub fn internal_signal(name: &str, payload: Vec<u8>, now: f64) -> PyResult<Vec<u8>> {
    if !name.starts_with('!') {
        return Err(pyo3::exceptions::PyValueError::new_err("internal signal names start with '!'"));
    }
    Ok(encode_signal(&Signal { name: name.to_string(), payload, sent_at: now }))
}

/// One step of an instance held by another worker, rebuilt to be run here.
#[pyclass(module = "tideflow._core", name = "RemoteStep", frozen)]
pub struct RemoteStep {
    engine: Py<Engine>,
    state: Mutex<Option<(Driver, Task<Py<PyAny>>)>>,
}

#[pymethods]
impl RemoteStep {
    /// Rebuilds instance `loaded` (the parent, as its store's `load` returned it) and finds the
    /// step at position `key` whose run was handed out at attempt `base` (the first attempt of
    /// its current run: `attempt - interrupted`). Returns the `RemoteStep`, or a `str` saying why
    /// there is nothing to run (the parent finished, moved on, or no longer exists).
    #[staticmethod]
    fn open(
        py: Python<'_>,
        engine: Py<Engine>,
        loaded: &Bound<'_, PyAny>,
        key: &str,
        base: u32,
    ) -> PyResult<Py<PyAny>> {
        let e = engine.get();
        let check = Check { store: &e.backend.describe(), method: "load", given: false };
        let Some(loaded) = check.loaded(loaded).py_err(py)? else {
            return Ok(PyString::new(py, "its instance no longer exists").into_any().unbind());
        };
        if loaded.meta.status.is_finished() {
            let why = format!("its instance is {}", loaded.meta.status.as_str());
            return Ok(PyString::new(py, &why).into_any().unbind());
        }
        let id = loaded.meta.id.clone();
        let header = header_of(py, &id, &loaded.header)?;
        let wf = e.registry.compiled_for(py, &id, &header)?;
        let records = records_of(py, &id, &loaded.records)?;
        let compiled = wf.get();
        let input = decode_stored_input(py, compiled.input_decode.as_ref(), &id, &header)?;
        let now = e.clock.now(py)?;
        let mut inbox = sort_inbox(&id, loaded.signals, 0).py_err(py)?;
        let payloads: HashMap<u64, Vec<u8>> = std::mem::take(&mut inbox.payloads).into_iter().collect();
        let fallback = e.fallback.bind(py);
        let mut host = PyHost { py, wf: compiled, fallback, inbox: &payloads };
        let plan = Arc::clone(&compiled.plan);
        let mut inst =
            Instance::rebuild(&id, plan, input.clone().unbind(), header.created_at, now, &records, true, &mut host);
        let task = match inst.take_ready(key, now) {
            Some(t) if t.attempt - t.interrupted == base => t,
            Some(t) => {
                let why = format!("its instance runs attempt {} of it now, not {base}", t.attempt - t.interrupted);
                return Ok(PyString::new(py, &why).into_any().unbind());
            }
            None => {
                let why = "its instance no longer waits for this step (it finished, or moved on)";
                return Ok(PyString::new(py, why).into_any().unbind());
            }
        };
        let stored = Stored { version: loaded.meta.version, status: loaded.meta.status, due_at: loaded.meta.due_at };
        let core = Driving::new(inst, stored, header, Mode::Concurrent, 0, false);
        let d = Driver {
            core,
            wf,
            id: PyString::new(py, &id).unbind(),
            cancel: Arc::new(CancelState::default()),
            id_str: id,
            input: input.unbind(),
            inbox: payloads,
            epoch: 0,
            settled: None,
            owner: None,
            spread: true,
        };
        let step = RemoteStep { engine: engine.clone_ref(py), state: Mutex::new(Some((d, task))) };
        Ok(Bound::new(py, step)?.into_any().unbind())
    }

    /// `(func, ctx, input, is_async, budget)`: what to call, as the holder would have.
    fn call<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyTuple>> {
        let st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let (d, task) = st.as_ref().ok_or_else(|| error(py, "TideflowError", "the step already ran"))?;
        let entry = &d.wf.get().steps[task.step as usize];
        let now = self.engine.get().clock.now(py)?;
        PyTuple::new(
            py,
            [
                entry.func.bind(py).clone(),
                d.context(py, task)?.into_any(),
                task.input.bind(py).clone(),
                PyBool::new(py, entry.is_async).to_owned().into_any(),
                d.core.budget(task, now).into_pyobject(py)?.into_any(),
            ],
        )
    }

    /// The outcome bytes of the attempt that returned `output`.
    fn complete(&self, py: Python<'_>, output: Bound<'_, PyAny>) -> PyResult<Vec<u8>> {
        self.finish(py, Ok(output))
    }

    /// The outcome bytes of the attempt that raised `exc` (the step's retry policy judges it).
    fn fail(&self, py: Python<'_>, exc: Bound<'_, PyAny>) -> PyResult<Vec<u8>> {
        self.finish(py, Err(PyErr::from_value(exc)))
    }

    /// How many runs of this step a task allows before it counts as poison (a run that kills
    /// its worker, again and again): its retry budget, and at least 2, as for a step
    /// interrupted in its holder's process.
    #[getter]
    fn max_runs(&self) -> u32 {
        let st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        st.as_ref().map_or(2, |(d, t)| d.core.inst.plan().retry(t.step).max_attempts.max(2))
    }

    /// The outcome of a step whose task was started `runs` times and never finished: the
    /// workers running it died each time, so it is not run again (a `StepInterrupted`
    /// failure, not retried).
    fn interrupted(&self, runs: u32) -> Vec<u8> {
        let st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let name = st.as_ref().map_or(String::new(), |(d, t)| d.core.inst.plan().steps[t.step as usize].name.clone());
        let key = st.as_ref().map_or(String::new(), |(_, t)| t.key.clone());
        let msg = format!(
            "the workers running step '{name}' at position '{key}' died {runs} times while it ran \
             (a poison step); a task is run at most max(max_attempts, 2) times, so it is not run again"
        );
        encode_outcome(&Attempt::Raised { failure: Failure::new("StepInterrupted", msg), retryable: false })
    }

    /// Cancels the step's context (`ctx.cancelled` turns true), e.g. when its instance is
    /// cancelled while it runs.
    fn cancel(&self, reason: &str) {
        if let Some((d, _)) = self.state.lock().unwrap_or_else(|e| e.into_inner()).as_ref() {
            d.cancel.request(reason);
        }
    }
}

impl RemoteStep {
    fn finish(&self, py: Python<'_>, result: PyResult<Bound<'_, PyAny>>) -> PyResult<Vec<u8>> {
        let taken = self.state.lock().unwrap_or_else(|e| e.into_inner()).take();
        let (d, task) = taken.ok_or_else(|| error(py, "TideflowError", "the step already ran"))?;
        let engine = self.engine.get();
        let now = engine.clock.now(py)?;
        let attempt = d.attempt_of(py, engine, &task, result, now)?;
        Ok(encode_outcome(&attempt))
    }
}
