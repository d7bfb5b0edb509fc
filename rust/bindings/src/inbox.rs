//! An instance's inbox as the engine writes and reads it: the signals sent to it, and the
//! cancellation request that `cancel()` persists among them before it does anything else (so the
//! request survives a crash and reaches a driver in another process).

use std::collections::HashMap;

use pyo3::prelude::*;
use tideflow_core::codec::{decode_signal, encode_signal, Signal};
use tideflow_core::drive::{cancel_reason, CANCEL_SIGNAL};
use tideflow_core::CoreError;

use crate::engine::Engine;
use crate::errors::error;

/// What an inbox holds, as read (for inspection; drivers use `Driving::take_inbox`).
#[derive(Default)]
pub struct Inbox {
    /// Signal payloads by sequence number.
    pub payloads: HashMap<u64, Vec<u8>>,
    /// `(seq, name)` of those signals, in arrival order.
    pub arrivals: Vec<(u64, String)>,
    /// The reason of a cancellation request, if one was persisted.
    pub cancel: Option<String>,
}

/// Decodes inbox records of instance `id`.
pub fn read_signals(py: Python<'_>, id: &str, raw: &[(u64, Vec<u8>)]) -> PyResult<Inbox> {
    let mut inbox = Inbox::default();
    for (seq, r) in raw {
        let sig = decode_signal(r)
            .map_err(|e| error(py, "CorruptCheckpoint", format!("instance {id:?}, signal #{seq}: {e}")))?;
        if sig.name == CANCEL_SIGNAL {
            inbox.cancel.get_or_insert_with(|| cancel_reason(&sig.payload));
            continue;
        }
        inbox.payloads.insert(*seq, sig.payload);
        inbox.arrivals.push((*seq, sig.name));
    }
    Ok(inbox)
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
