//! What a run shows, read from the store without running anything: the history of an instance as
//! events, what a suspended instance waits for, and its stored input and times. The engine's
//! `history`, `waiting_for` and `details` methods call these.

use std::collections::HashMap;
use std::sync::Arc;

use pyo3::prelude::*;
use pyo3::types::PyDict;
use tideflow_core::history::{events, Event};
use tideflow_core::instance::inspect::waiting_for;
use tideflow_core::store::{Loaded, StoredInstance};

use crate::inbox::read_signals;
use crate::registry::Registry;
use crate::reopen::{decode_stored_input, header_of, records_of};

/// One history event: (kind, position, fields).
pub type EventRow = (String, String, Py<PyDict>);

/// One thing a suspended instance waits for: (kind, position, signal, step, until).
pub type WaitingRow = (String, String, Option<String>, Option<String>, Option<f64>);

/// An instance's stored input (decoded with its workflow's input type when that is registered)
/// and times: (input, created_at, updated_at, due_at).
pub type Details = (Py<PyAny>, f64, f64, Option<f64>);

/// "Type: message" of a stored error record.
pub fn failure_text(json: &[u8]) -> String {
    match serde_json::from_slice::<serde_json::Value>(json) {
        Ok(v) => format!(
            "{}: {}",
            v.get("type").and_then(|t| t.as_str()).unwrap_or("Error"),
            v.get("message").and_then(|t| t.as_str()).unwrap_or("")
        ),
        Err(_) => String::from_utf8_lossy(json).into_owned(),
    }
}

/// Every event of a loaded instance, in log order.
pub fn history_rows(py: Python<'_>, registry: &Registry, loaded: &Loaded) -> PyResult<Vec<EventRow>> {
    let id = &loaded.meta.id;
    let header = header_of(py, id, &loaded.header)?;
    let records = records_of(py, id, &loaded.records)?;
    let inbox = read_signals(py, id, &loaded.signals)?;
    let names: HashMap<u64, String> = inbox.arrivals.into_iter().collect();
    let wf = registry.find(py, &header.workflow, &header.plan_hash);
    let plan = wf.as_ref().map(|w| Arc::clone(&w.get().plan));
    let evs = events(plan.as_deref(), &records, &names, loaded.meta.status.is_finished());
    evs.into_iter().map(|e| row(py, e)).collect()
}

/// What a loaded instance waits for at `now` (nothing unless it is suspended).
pub fn waiting_rows(py: Python<'_>, registry: &Registry, loaded: &Loaded, now: f64) -> PyResult<Vec<WaitingRow>> {
    if loaded.meta.status.is_finished() {
        return Ok(Vec::new());
    }
    let id = &loaded.meta.id;
    let header = header_of(py, id, &loaded.header)?;
    let wf = registry.compiled_for(py, id, &header)?;
    let records = records_of(py, id, &loaded.records)?;
    let inbox = read_signals(py, id, &loaded.signals)?;
    let plan = Arc::clone(&wf.get().plan);
    let waits =
        waiting_for(id, plan, &header.input, header.created_at, now, &records, &inbox.payloads, &inbox.arrivals);
    Ok(waits.into_iter().map(|w| (w.kind.to_string(), w.key, w.signal, w.step, w.until)).collect())
}

/// The stored input and times of an instance.
pub fn details(py: Python<'_>, registry: &Registry, stored: &StoredInstance) -> PyResult<Details> {
    let id = &stored.meta.id;
    let header = header_of(py, id, &stored.header)?;
    let wf = registry.find(py, &header.workflow, &header.plan_hash);
    let dec = wf.as_ref().and_then(|w| w.get().input_decode.as_ref().map(|d| d.clone_ref(py)));
    let input = decode_stored_input(py, dec.as_ref(), id, &header)?;
    let m = &stored.meta;
    Ok((input.unbind(), m.created_at, m.updated_at, m.due_at))
}

fn row(py: Python<'_>, e: Event) -> PyResult<EventRow> {
    let d = PyDict::new(py);
    let (kind, key) = match e {
        Event::Step { key, step, attempt, started_at, finished_at, error, retry_at } => {
            d.set_item("step", step)?;
            d.set_item("attempt", attempt)?;
            d.set_item("status", if error.is_some() { "failed" } else { "completed" })?;
            d.set_item("started_at", started_at)?;
            d.set_item("finished_at", finished_at)?;
            d.set_item("error", error.as_deref().map(failure_text))?;
            d.set_item("retry_at", retry_at)?;
            ("step", key)
        }
        Event::Interrupted { key, step, attempt, retried } => {
            d.set_item("step", step)?;
            d.set_item("attempt", attempt)?;
            d.set_item("retried", retried)?;
            ("interrupted", key)
        }
        Event::Decision { kind, key, value, iteration } => {
            match kind {
                "route" => d.set_item("value", value)?,
                _ => d.set_item("value", value == "true")?,
            }
            d.set_item("iteration", iteration)?;
            (kind, key)
        }
        Event::Timer { key, until } => {
            d.set_item("until", until)?;
            ("timer", key)
        }
        Event::Signal { key, seq, name } => {
            d.set_item("signal", name)?;
            d.set_item("seq", seq)?;
            ("signal", key)
        }
        Event::SignalRejected { key, seq, name, reason } => {
            d.set_item("signal", name)?;
            d.set_item("seq", seq)?;
            d.set_item("reason", reason)?;
            ("signal_rejected", key)
        }
        Event::TimedOut { key } => ("timed_out", key),
        Event::Slept { key } => ("slept", key),
        Event::Cancelled { reason } => {
            d.set_item("reason", reason)?;
            ("cancelled", String::new())
        }
        Event::Other { key, value } => {
            d.set_item("value", value)?;
            ("other", key)
        }
    };
    Ok((kind.to_string(), key, d.unbind()))
}
