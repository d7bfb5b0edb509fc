//! Bringing a stored instance back: loading it, finding the registered plan it runs on (or
//! saying why there is none), rebuilding a driver from its records, or the result of a finished one.

use std::sync::Arc;

use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyString};
use tideflow_core::codec::{decode_header, decode_record, Header, Record};
use tideflow_core::instance::Instance;
use tideflow_core::plan_diff;
use tideflow_core::store::StoredInstance;
use tideflow_core::{CoreError, Status};

use crate::driver::{Driver, Outcome};
use crate::engine::{Engine, Untyped};
use crate::errors::{error, IntoPy};
use crate::host::{decode_value, PyHost};
use crate::inbox::Inbox;
use crate::workflow::Compiled;

/// Decodes the stored input of instance `id` with `dec` (the workflow's input decoder, if any),
/// or the `CodecError` that says it no longer decodes.
pub(crate) fn decode_stored_input<'py>(
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

impl Engine {
    /// The `VersionMismatch` for a stored instance whose plan is not registered: it names both
    /// hashes and, from the outline kept in the header, where each registered plan differs.
    pub(crate) fn version_mismatch(&self, id: &str, header: &Header) -> CoreError {
        let wfs = self.workflows.lock().unwrap_or_else(|e| e.into_inner());
        let registered = wfs
            .get(&header.workflow)
            .map(|v| {
                v.iter()
                    .map(|c| {
                        let plan = &c.get().plan;
                        (plan.hash.clone(), plan_diff::explain(header.outline.as_deref(), plan))
                    })
                    .collect()
            })
            .unwrap_or_default();
        CoreError::VersionMismatch {
            instance: id.to_string(),
            workflow: header.workflow.clone(),
            stored: header.plan_hash.clone(),
            registered,
        }
    }

    pub(crate) fn load(&self, py: Python<'_>, id: &str) -> PyResult<(StoredInstance, Header)> {
        let stored = self.with_store(py, |s| s.get(id)).py_err(py)?;
        let stored =
            stored.ok_or_else(|| error(py, "UnknownInstance", format!("no workflow instance with id {id:?}")))?;
        let header = decode_header(&stored.header)
            .map_err(|e| error(py, "CorruptCheckpoint", format!("instance {id:?}: {e}")))?;
        Ok((stored, header))
    }

    /// The registered plan instance `id` runs on, or the `UnknownWorkflow` / `VersionMismatch`
    /// that says why there is none.
    pub(crate) fn compiled_for(&self, py: Python<'_>, id: &str, header: &Header) -> PyResult<Py<Compiled>> {
        let id = id.to_string();
        let Some(wf) = self.find(py, &header.workflow, &header.plan_hash) else {
            if self.registered_hashes(&header.workflow).is_empty() {
                return Err(error(
                    py,
                    "UnknownWorkflow",
                    format!(
                        "instance {id:?} runs workflow {:?}, which this engine has not registered; \
                         register it (engine.register(...)) before resuming",
                        header.workflow
                    ),
                ));
            }
            return Err(crate::errors::core_error(py, self.version_mismatch(&id, header)));
        };
        Ok(wf)
    }

    /// Rebuilds a driver for a stored, unfinished instance from its records.
    pub fn resume_driver(&self, py: Python<'_>, stored: StoredInstance, header: Header) -> PyResult<Driver> {
        let id = stored.meta.id.clone();
        let wf = self.compiled_for(py, &id, &header)?;
        let raw = self.with_store(py, |s| s.records(&id)).py_err(py)?;
        let records = raw
            .iter()
            .enumerate()
            .map(|(i, r)| {
                decode_record(r)
                    .map_err(|e| error(py, "CorruptCheckpoint", format!("instance {id:?}, record #{i}: {e}")))
            })
            .collect::<PyResult<Vec<Record>>>()?;
        let compiled = wf.get();
        let input = decode_stored_input(py, compiled.input_decode.as_ref(), &id, &header)?;
        let Inbox { payloads: inbox, arrivals, cancel } = self.read_inbox(py, &id, |_| false)?;
        let fallback = self.fallback.bind(py);
        let now = self.clock.now(py)?;
        let mut host = PyHost { py, wf: compiled, fallback, inbox: &inbox };
        let plan = Arc::clone(&compiled.plan);
        let mut inst = Instance::resume(&id, plan, input.clone().unbind(), header.created_at, now, &records, &mut host);
        if let (Status::Failed, Some(e)) = (inst.status(), inst.error().filter(|e| e.kind != "interrupted")) {
            // Rebuilding state failed (a stored output no longer decodes into its step's type):
            // raise and commit nothing, so the instance can resume once the code is fixed. (A
            // step interrupted past its retry budget fails the instance for good: committed.)
            let class = if e.kind == "codec" { "CodecError" } else { "CorruptCheckpoint" };
            return Err(error(
                py,
                class,
                format!("instance {id:?} cannot be resumed: {}: {}", e.failure.error_type, e.failure.message),
            ));
        }
        // new signals are the outside world's input, not rebuilt state: one that does not decode
        // into its wait's type is rejected (recorded, committed by the driver) and the wait goes on
        inst.add_signals(arrivals);
        let cancel_state = self.cancel_state(&id);
        if let Some(reason) = cancel {
            cancel_state.request(&reason);
        }
        // a stored cancellation is decided: the driver applies it first, and no signal still in
        // the inbox may complete the instance before it (its waits are dropped then)
        if !cancel_state.requested() {
            inst.deliver(now, &mut host);
        }
        Ok(Driver {
            inst,
            wf,
            id: PyString::new(py, &id).unbind(),
            cancel: cancel_state,
            id_str: id,
            input: input.unbind(),
            header,
            version: stored.meta.version,
            stored_status: stored.meta.status,
            stored_due: stored.meta.due_at,
            inbox,
            epoch: 0,
            settled: None,
            first: None,
        })
    }

    /// Why the output of finished instance `id` cannot be typed here (its plan is not registered),
    /// as the error that explains it; `None` when there is no output or its plan is registered.
    pub(crate) fn untyped(&self, py: Python<'_>, id: &str, header: &Header) -> Option<Untyped> {
        if header.output.is_none() || self.find(py, &header.workflow, &header.plan_hash).is_some() {
            return None;
        }
        if self.registered_hashes(&header.workflow).is_empty() {
            let msg = format!(
                "instance {id:?} ran workflow {:?}, which this engine has not registered, so its output \
                 is the stored JSON, not typed; register the workflow to decode it",
                header.workflow
            );
            return Some(("UnknownWorkflow", msg));
        }
        Some(("VersionMismatch", self.version_mismatch(id, header).to_string()))
    }

    /// The result of a finished stored instance, decoded with its workflow's output type; when its
    /// plan is not registered, the stored JSON and why it is not typed.
    pub(crate) fn finished_outcome(
        &self,
        py: Python<'_>,
        stored: &StoredInstance,
        header: &Header,
    ) -> PyResult<(Outcome, Option<Untyped>)> {
        let untyped = self.untyped(py, &stored.meta.id, header);
        let output = match &header.output {
            Some(p) => {
                let dec = self.find(py, &header.workflow, &header.plan_hash);
                let dec = dec.as_ref().and_then(|w| w.get().output_decode.as_ref().map(|d| d.clone_ref(py)));
                decode_value(py, dec.as_ref(), p)
                    .map_err(|e| {
                        error(
                            py,
                            "CodecError",
                            format!(
                                "instance {:?} (workflow {:?}): its stored output no longer decodes \
                                 into the workflow's output type: {}",
                                stored.meta.id,
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
        Ok(((stored.meta.status.as_str().to_string(), output, err), untyped))
    }

    /// `reopen`, for a caller that asked for workflow `workflow`: an id taken by an instance of
    /// another workflow is an error, not that instance.
    pub(crate) fn reopen_as(
        &self,
        py: Python<'_>,
        stored: StoredInstance,
        workflow: &str,
    ) -> PyResult<Result<Driver, Outcome>> {
        if stored.meta.workflow != workflow {
            return Err(error(
                py,
                "TideflowError",
                format!(
                    "instance id {:?} is taken by an instance of workflow {:?}, not {workflow:?}",
                    stored.meta.id, stored.meta.workflow
                ),
            ));
        }
        self.reopen(py, stored)
    }

    /// Loads instance `id` again (another writer advanced it): a driver to go on from what is
    /// stored, or its stored result when it finished.
    pub fn reload(&self, py: Python<'_>, id: &str) -> PyResult<Result<Driver, Outcome>> {
        let (stored, _) = self.load(py, id)?;
        self.reopen(py, stored)
    }

    pub(crate) fn reopen(&self, py: Python<'_>, stored: StoredInstance) -> PyResult<Result<Driver, Outcome>> {
        let id = stored.meta.id.clone();
        let header = decode_header(&stored.header)
            .map_err(|e| error(py, "CorruptCheckpoint", format!("instance {id:?}: {e}")))?;
        if stored.meta.status.is_finished() {
            // running (or resuming) a finished instance returns its typed result, or says why not
            return match self.finished_outcome(py, &stored, &header)? {
                (_, Some((class, msg))) => Err(error(py, class, msg)),
                (done, None) => Ok(Err(done)),
            };
        }
        Ok(Ok(self.resume_driver(py, stored, header)?))
    }
}
