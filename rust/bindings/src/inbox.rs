//! An instance's inbox as the engine writes and reads it: the signals sent to it, and the
//! cancellation request that `cancel()` persists among them before it does anything else (so the
//! request survives a crash and reaches a driver in another process).

use std::collections::HashMap;

use pyo3::prelude::*;
use tideflow_core::codec::{encode_signal, Signal};
use tideflow_core::drive::{sort_inbox, CANCEL_SIGNAL};
use tideflow_core::CoreError;

use crate::engine::Engine;
use crate::errors::{error, IntoPy};

/// What an inbox holds, as read (for inspection; drivers use `Driving::take_inbox`).
#[derive(Default)]
pub struct Inbox {
    /// Signal payloads by sequence number.
    pub payloads: HashMap<u64, Vec<u8>>,
    /// `(seq, name)` of those signals, in arrival order.
    pub arrivals: Vec<(u64, String)>,
}

/// Decodes inbox records of instance `id` (see `tideflow_core::drive::sort_inbox`).
pub fn read_signals(py: Python<'_>, id: &str, raw: &[(u64, Vec<u8>)]) -> PyResult<Inbox> {
    let sorted = sort_inbox(id, raw.to_vec(), 0).py_err(py)?;
    Ok(Inbox { payloads: sorted.payloads.into_iter().collect(), arrivals: sorted.arrivals })
}

/// Persists a signal record for `id` (its own transaction) and marks the instance due; its number.
pub fn persist_signal(py: Python<'_>, engine: &Engine, id: &str, name: &str, payload: Vec<u8>) -> PyResult<u64> {
    let now = engine.clock.now(py)?;
    let record = encode_signal(&Signal { name: name.to_string(), payload, sent_at: now });
    engine.backend.call(py, |s| s.send_signal(id, &record, now)).map_err(|e| match e {
        CoreError::UnknownInstance(_) => error(py, "SignalError", format!("no workflow instance with id {id:?}")),
        CoreError::InvalidState(m) => error(py, "SignalError", m),
        other => crate::errors::core_error(py, other),
    })
}

/// Persists a cancellation request for `id` with `reason`.
pub fn persist_cancel(py: Python<'_>, engine: &Engine, id: &str, reason: &str) -> PyResult<u64> {
    let payload = serde_json::to_vec(reason).map_err(|e| error(py, "TideflowError", e.to_string()))?;
    persist_signal(py, engine, id, CANCEL_SIGNAL, payload)
}
