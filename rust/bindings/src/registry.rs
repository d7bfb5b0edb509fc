//! The workflows an engine has registered, by name and plan hash, and the errors that explain why
//! a stored instance's plan is not among them.

use std::collections::HashMap;
use std::sync::Mutex;

use pyo3::prelude::*;
use tideflow_core::codec::Header;
use tideflow_core::{plan_diff, CoreError};

use crate::errors::error;
use crate::workflow::Compiled;

/// Why a finished instance's output cannot be decoded with its types: `(error class, message)`.
pub type Untyped = (&'static str, String);

/// Registered plans: several versions of one workflow name may be registered at once.
#[derive(Default)]
pub struct Registry {
    workflows: Mutex<HashMap<String, Vec<Py<Compiled>>>>,
}

impl Registry {
    /// Registers a compiled workflow; the newest binding of a plan wins (same structure,
    /// possibly new callables).
    pub fn register(&self, wf: &Bound<'_, Compiled>) {
        let c = wf.get();
        let mut wfs = self.workflows.lock().unwrap_or_else(|e| e.into_inner());
        let versions = wfs.entry(c.plan.name.clone()).or_default();
        if let Some(pos) = versions.iter().position(|v| v.get().plan.hash == c.plan.hash) {
            if !versions[pos].is(wf) {
                versions[pos] = wf.clone().unbind();
            }
        } else {
            versions.push(wf.clone().unbind());
        }
    }

    /// The registered plan `hash` of `workflow`, if any.
    pub fn find(&self, py: Python<'_>, workflow: &str, hash: &str) -> Option<Py<Compiled>> {
        let wfs = self.workflows.lock().unwrap_or_else(|e| e.into_inner());
        wfs.get(workflow)?.iter().find(|c| c.get().plan.hash == hash).map(|c| c.clone_ref(py))
    }

    /// The hashes of every registered plan (for claims: workers take only plans they have).
    pub fn all_hashes(&self) -> Vec<String> {
        let wfs = self.workflows.lock().unwrap_or_else(|e| e.into_inner());
        wfs.values().flatten().map(|c| c.get().plan.hash.clone()).collect()
    }

    /// Whether any version of `workflow` is registered.
    pub fn knows(&self, workflow: &str) -> bool {
        let wfs = self.workflows.lock().unwrap_or_else(|e| e.into_inner());
        wfs.get(workflow).is_some_and(|v| !v.is_empty())
    }

    /// The `VersionMismatch` for a stored instance whose plan is not registered: it names both
    /// hashes and, from the outline kept in the header, where each registered plan differs.
    pub fn version_mismatch(&self, id: &str, header: &Header) -> CoreError {
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

    /// The registered plan instance `id` runs on, or the `UnknownWorkflow` / `VersionMismatch`
    /// that says why there is none.
    pub fn compiled_for(&self, py: Python<'_>, id: &str, header: &Header) -> PyResult<Py<Compiled>> {
        if let Some(wf) = self.find(py, &header.workflow, &header.plan_hash) {
            return Ok(wf);
        }
        if !self.knows(&header.workflow) {
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
        Err(crate::errors::core_error(py, self.version_mismatch(id, header)))
    }

    /// Why the output of finished instance `id` cannot be typed here (its plan is not
    /// registered), as the error that explains it; `None` when there is no output or its plan
    /// is registered.
    pub fn untyped(&self, py: Python<'_>, id: &str, header: &Header) -> Option<Untyped> {
        if header.output.is_none() || self.find(py, &header.workflow, &header.plan_hash).is_some() {
            return None;
        }
        if !self.knows(&header.workflow) {
            let msg = format!(
                "instance {id:?} ran workflow {:?}, which this engine has not registered, so its output \
                 is the stored JSON, not typed; register the workflow to decode it",
                header.workflow
            );
            return Some(("UnknownWorkflow", msg));
        }
        Some(("VersionMismatch", self.version_mismatch(id, header).to_string()))
    }
}
