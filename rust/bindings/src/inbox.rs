//! An instance's inbox as the engine reads and writes it: the signals sent to it, and the
//! cancellation request that `cancel()` persists among them before it does anything else (so the
//! request survives a crash and reaches a driver in another process).

use std::collections::HashMap;

use pyo3::prelude::*;
use tideflow_core::codec::{decode_signal, encode_signal, Signal};
use tideflow_core::CoreError;

use crate::engine::Engine;
use crate::errors::{error, IntoPy};

/// The inbox name of a persisted cancellation request; signal names starting with `!` are
/// reserved.
pub const CANCEL_SIGNAL: &str = "!cancel";

/// What an inbox holds, as read.
#[derive(Default)]
pub struct Inbox {
    /// Signal payloads by sequence number.
    pub payloads: HashMap<u64, Vec<u8>>,
    /// `(seq, name)` of those signals, in arrival order.
    pub arrivals: Vec<(u64, String)>,
    /// The reason of a cancellation request, if one was persisted.
    pub cancel: Option<String>,
}

/// The reason carried by a cancellation request's payload (a JSON string).
fn cancel_reason(payload: &[u8]) -> String {
    match serde_json::from_slice::<serde_json::Value>(payload) {
        Ok(serde_json::Value::String(s)) => s,
        _ => String::from_utf8_lossy(payload).into_owned(),
    }
}

impl Engine {
    /// The inbox of `id`, leaving out the signals `known` says were read already.
    pub fn read_inbox(&self, py: Python<'_>, id: &str, known: impl Fn(u64) -> bool) -> PyResult<Inbox> {
        let raw = self.with_store(py, |s| s.signals(id)).py_err(py)?;
        let mut inbox = Inbox::default();
        for (seq, r) in raw.into_iter().filter(|(seq, _)| !known(*seq)) {
            let sig = decode_signal(&r)
                .map_err(|e| error(py, "CorruptCheckpoint", format!("instance {id:?}, signal #{seq}: {e}")))?;
            if sig.name == CANCEL_SIGNAL {
                inbox.cancel.get_or_insert_with(|| cancel_reason(&sig.payload));
                continue;
            }
            inbox.payloads.insert(seq, sig.payload);
            inbox.arrivals.push((seq, sig.name));
        }
        Ok(inbox)
    }

    /// Persists a signal record (its own transaction) and marks the instance due; its number.
    pub fn persist_signal(&self, py: Python<'_>, id: &str, name: &str, payload: Vec<u8>) -> PyResult<u64> {
        let now = self.clock.now(py)?;
        let record = encode_signal(&Signal { name: name.to_string(), payload, sent_at: now });
        self.with_store(py, |s| s.send_signal(id, &record, now)).map_err(|e| match e {
            CoreError::UnknownInstance(_) => error(py, "SignalError", format!("no workflow instance with id {id:?}")),
            CoreError::InvalidState(m) => error(py, "SignalError", m),
            other => crate::errors::core_error(py, other),
        })
    }

    /// Persists a cancellation request for `id` with `reason`.
    pub fn persist_cancel(&self, py: Python<'_>, id: &str, reason: &str) -> PyResult<u64> {
        let payload = serde_json::to_vec(reason).map_err(|e| error(py, "TideflowError", e.to_string()))?;
        self.persist_signal(py, id, CANCEL_SIGNAL, payload)
    }
}
