//! Bringing a stored instance back from what the store returned (no I/O here): finding the
//! registered plan it runs on (or saying why there is none), rebuilding a driver from its records
//! and inbox, or the result of a finished one.

use std::collections::HashMap;
use std::sync::Arc;

use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyString};
use tideflow_core::codec::{decode_header, decode_record, Header, Record};
use tideflow_core::drive::{sort_inbox, Driving, Mode, Stored};
use tideflow_core::instance::Instance;
use tideflow_core::store::{InstanceMeta, Loaded};
use tideflow_core::Status;

use crate::driver::{Driver, Outcome};
use crate::engine::Engine;
use crate::errors::{error, IntoPy};
use crate::host::{decode_value, PyHost};
use crate::registry::{Registry, Untyped};

/// The header record of instance `id`, decoded (or the `CorruptCheckpoint` naming it).
pub fn header_of(py: Python<'_>, id: &str, bytes: &[u8]) -> PyResult<Header> {
    decode_header(bytes).map_err(|e| error(py, "CorruptCheckpoint", format!("instance {id:?}: {e}")))
}

/// The log records of instance `id`, decoded (or the `CorruptCheckpoint` naming the first bad one).
pub fn records_of(py: Python<'_>, id: &str, raw: &[Vec<u8>]) -> PyResult<Vec<Record>> {
    raw.iter()
        .enumerate()
        .map(|(i, r)| {
            decode_record(r).map_err(|e| error(py, "CorruptCheckpoint", format!("instance {id:?}, record #{i}: {e}")))
        })
        .collect()
}

/// Decodes the stored input of instance `id` with `dec` (the workflow's input decoder, if any),
/// or the `CodecError` that says it no longer decodes.
pub fn decode_stored_input<'py>(
    py: Python<'py>,
    dec: Option<&Py<PyAny>>,
    id: &str,
    header: &Header,
) -> PyResult<Bound<'py, PyAny>> {
    decode_value(py, dec, &header.input).map_err(|e| {
        error(
            py,
            "CodecError",
            format!(
                "instance {id:?} (workflow {:?}): its stored input no longer decodes into the \
                 workflow's input type: {}",
                header.workflow,
                e.value(py)
            ),
        )
    })
}

/// The result of a finished stored instance, decoded with its workflow's output type; when its
/// plan is not registered, the stored JSON and why it is not typed.
pub fn finished_outcome(
    py: Python<'_>,
    registry: &Registry,
    meta: &InstanceMeta,
    header: &Header,
) -> PyResult<(Outcome, Option<Untyped>)> {
    let untyped = registry.untyped(py, &meta.id, header);
    let output = match &header.output {
        Some(p) => {
            let wf = registry.find(py, &header.workflow, &header.plan_hash);
            let dec = wf.as_ref().and_then(|w| w.get().output_decode.as_ref().map(|d| d.clone_ref(py)));
            decode_value(py, dec.as_ref(), p)
                .map_err(|e| {
                    error(
                        py,
                        "CodecError",
                        format!(
                            "instance {:?} (workflow {:?}): its stored output no longer decodes into the \
                             workflow's output type: {}",
                            meta.id,
                            header.workflow,
                            e.value(py)
                        ),
                    )
                })?
                .unbind()
        }
        None => py.None(),
    };
    let err = match &header.error {
        Some(e) => PyBytes::new(py, e).into_any().unbind(),
        None => py.None(),
    };
    Ok(((meta.status.as_str().to_string(), output, err), untyped))
}

/// A driver for a loaded instance, or its stored result when it finished (running or resuming a
/// finished instance returns its typed result, or says why it cannot be typed).
pub fn reopen(py: Python<'_>, engine: &Engine, loaded: Loaded, mode: Mode) -> PyResult<Result<Driver, Outcome>> {
    let header = header_of(py, &loaded.meta.id, &loaded.header)?;
    if loaded.meta.status.is_finished() {
        return match finished_outcome(py, &engine.registry, &loaded.meta, &header)? {
            (_, Some((class, msg))) => Err(error(py, class, msg)),
            (done, None) => Ok(Err(done)),
        };
    }
    Ok(Ok(resume(py, engine, loaded, header, mode)?))
}

/// Rebuilds a driver for a loaded, unfinished instance from its records and inbox.
pub fn resume(py: Python<'_>, engine: &Engine, loaded: Loaded, header: Header, mode: Mode) -> PyResult<Driver> {
    let Loaded { meta, records, signals, .. } = loaded;
    let id = meta.id.clone();
    let wf = engine.registry.compiled_for(py, &id, &header)?;
    let records = records_of(py, &id, &records)?;
    let compiled = wf.get();
    let input = decode_stored_input(py, compiled.input_decode.as_ref(), &id, &header)?;
    let fallback = engine.fallback.bind(py);
    let now = engine.clock.now(py)?;
    // the inbox is read once: its payloads serve the replay (signals consumed before are decoded
    // again), its arrivals go to the driver below
    let mut inbox = sort_inbox(&id, signals, 0).py_err(py)?;
    let payloads: HashMap<u64, Vec<u8>> = std::mem::take(&mut inbox.payloads).into_iter().collect();
    let mut host = PyHost { py, wf: compiled, fallback, inbox: &payloads };
    let plan = Arc::clone(&compiled.plan);
    let inst = Instance::resume(&id, plan, input.clone().unbind(), header.created_at, now, &records, &mut host);
    if let (Status::Failed, Some(e)) = (inst.status(), inst.error().filter(|e| e.kind != "interrupted")) {
        // Rebuilding state failed (a stored output no longer decodes into its step's type):
        // raise and commit nothing, so the instance can resume once the code is fixed. (A step
        // interrupted past its retry budget fails the instance for good: committed.)
        let class = if e.kind == "codec" { "CodecError" } else { "CorruptCheckpoint" };
        return Err(error(
            py,
            class,
            format!("instance {id:?} cannot be resumed: {}: {}", e.failure.error_type, e.failure.message),
        ));
    }
    let stored = Stored { version: meta.version, status: meta.status, due_at: meta.due_at };
    let core = Driving::new(inst, stored, header, mode, 0, engine.observer.active());
    let mut d = Driver {
        core,
        wf,
        id: PyString::new(py, &id).unbind(),
        cancel: engine.active.state(&id),
        id_str: id,
        input: input.unbind(),
        inbox: payloads,
        epoch: 0,
        settled: None,
        owner: None,
        spread: false,
    };
    // new signals are the outside world's input, not rebuilt state: one that does not decode
    // into its wait's type is rejected (recorded, committed by the driver) and the wait goes on;
    // a stored cancellation is applied before any of them is delivered
    if let Some(reason) = d.core.accept(inbox).cancel {
        d.cancel.request(&reason);
    }
    Ok(d)
}
