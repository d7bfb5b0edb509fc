//! A new instance, from a workflow and an input, before anything is stored (no I/O here): its
//! indexed fields, header and first records for the store's create-or-return, and the driver
//! that runs it once the create went through.

use std::collections::HashMap;
use std::sync::Arc;

use pyo3::prelude::*;
use pyo3::types::PyString;
use tideflow_core::codec::{encode_header, encode_record, Header};
use tideflow_core::drive::{take_wave, Driving, Mode, Stored};
use tideflow_core::instance::{Instance, Task};
use tideflow_core::store::InstanceMeta;
use tideflow_core::Status;

use crate::checked;
use crate::driver::Driver;
use crate::engine::Engine;
use crate::host::PyHost;
use crate::workflow::Compiled;

/// A new instance, ready to be created in the store.
pub struct Prepared {
    /// Its indexed fields (version 1).
    pub meta: InstanceMeta,
    /// Its header record.
    pub header_bytes: Vec<u8>,
    /// Its first records (decisions taken before the first step, and the first task's start).
    pub records: Vec<Vec<u8>>,
    header: Header,
    inst: Instance<Py<PyAny>>,
    first: Vec<Task<Py<PyAny>>>,
    input: Py<PyAny>,
    wf: Py<Compiled>,
}

/// Builds instance `id` of `wf` on `input`. `run`: None to only create it, for a later `resume`
/// or a worker to run (no task is taken, status `pending`); else its first tasks (as that mode
/// runs them) are taken now, so that the create records that they start (a step costs one commit
/// from the first on).
pub fn prepare(
    py: Python<'_>,
    engine: &Engine,
    wf: &Bound<'_, Compiled>,
    id: &str,
    input: &Bound<'_, PyAny>,
    run: Option<Mode>,
) -> PyResult<Prepared> {
    let compiled = wf.get();
    let fallback = engine.fallback.bind(py);
    // the input the first step receives is the one a resume decodes from what is stored
    let checked = checked::encode_input(py, compiled, fallback, input)?;
    let input = checked.value(input).unbind();
    let now = engine.clock.now(py)?;
    let header = Header {
        workflow: compiled.plan.name.clone(),
        version: compiled.plan.version.clone(),
        plan_hash: compiled.plan.hash.clone(),
        input: checked.payload,
        created_at: now,
        output: None,
        error: None,
        outline: Some(compiled.plan.outline.clone()),
    };
    let no_signals = HashMap::new();
    let mut host = PyHost { py, wf: compiled, fallback, inbox: &no_signals };
    let mut inst = Instance::start(id, Arc::clone(&compiled.plan), input.clone_ref(py), now, &mut host);
    let first = match run {
        None => Vec::new(),
        Some(mode) => take_wave(&mut inst, now, mode, &|s| compiled.steps[s as usize].is_async),
    };
    let pending = run.is_none();
    let records = inst.take_records().iter().map(encode_record).collect();
    let status = if pending { Status::Pending } else { Status::Running };
    let meta = InstanceMeta {
        id: id.to_string(),
        workflow: compiled.plan.name.clone(),
        plan_hash: compiled.plan.hash.clone(),
        status,
        version: 1,
        created_at: now,
        updated_at: now,
        due_at: pending.then_some(now),
        owner: None,
        lease_until: None,
        error: None,
    };
    let header_bytes = encode_header(&header);
    Ok(Prepared { meta, header_bytes, records, header, inst, first, input, wf: wf.clone().unbind() })
}

impl Prepared {
    /// The driver of the instance, once the store created it.
    pub fn into_driver(self, py: Python<'_>, engine: &Engine, mode: Mode) -> Driver {
        let stored = Stored { version: 1, status: self.meta.status, due_at: self.meta.due_at };
        let core =
            Driving::new(self.inst, stored, self.header, mode, 0, engine.observer.active()).with_first(self.first);
        let id = self.meta.id;
        Driver {
            core,
            wf: self.wf,
            id: PyString::new(py, &id).unbind(),
            cancel: engine.active.state(&id),
            id_str: id,
            input: self.input,
            inbox: HashMap::new(),
            epoch: 0,
            settled: None,
            owner: None,
            spread: false,
        }
    }
}
