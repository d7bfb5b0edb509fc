//! An instance's inbox as a driver reads it: signals, and the cancellation request that
//! `cancel()` persists among them (kept apart: it is not a signal).

use crate::codec::decode_signal;
use crate::error::{CoreError, Result};

/// The inbox name of a persisted cancellation request; signal names starting with `!` are
/// reserved.
pub const CANCEL_SIGNAL: &str = "!cancel";

/// An inbox as read from the store, decoded ([`sort_inbox`]).
#[derive(Debug, Default)]
pub struct Inbox {
    /// `(seq, payload)` of the signals, in arrival order.
    pub payloads: Vec<(u64, Vec<u8>)>,
    /// `(seq, name)` of the same signals.
    pub arrivals: Vec<(u64, String)>,
    /// The reason of a persisted cancellation request, if one was found (the first one).
    pub cancel: Option<String>,
    /// The highest sequence number read (a cancellation request's included).
    pub newest: u64,
    /// When the earliest of them was sent: sending one made the instance due then.
    pub earliest: Option<f64>,
    /// The highest sequence number of a record for the engine itself (a reserved `!` name other
    /// than the cancellation request, e.g. a worker's note that a step ran elsewhere): skipped,
    /// never a signal, but seen.
    pub internal: u64,
}

/// Decodes the inbox records of instance `id` numbered above `after`: signals, and a persisted
/// cancellation request (not a signal: it is kept apart). A record that does not decode is a
/// `Corrupt` error naming it.
pub fn sort_inbox(id: &str, raw: Vec<(u64, Vec<u8>)>, after: u64) -> Result<Inbox> {
    let mut out = Inbox { newest: after, ..Inbox::default() };
    for (seq, r) in raw.into_iter().filter(|(seq, _)| *seq > after) {
        let sig = decode_signal(&r).map_err(|e| CoreError::Corrupt(format!("instance {id:?}, signal #{seq}: {e}")))?;
        out.newest = out.newest.max(seq);
        out.earliest = Some(out.earliest.map_or(sig.sent_at, |e| e.min(sig.sent_at)));
        if sig.name == CANCEL_SIGNAL {
            out.cancel.get_or_insert_with(|| cancel_reason(&sig.payload));
            continue;
        }
        if sig.name.starts_with('!') {
            // for the engine, not a signal (users cannot send `!` names)
            out.internal = out.internal.max(seq);
            continue;
        }
        out.arrivals.push((seq, sig.name));
        out.payloads.push((seq, sig.payload));
    }
    Ok(out)
}

/// The reason carried by a cancellation request's payload (a JSON string).
pub fn cancel_reason(payload: &[u8]) -> String {
    match serde_json::from_slice::<serde_json::Value>(payload) {
        Ok(serde_json::Value::String(s)) => s,
        _ => String::from_utf8_lossy(payload).into_owned(),
    }
}
