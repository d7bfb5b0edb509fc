//! `tideflow._core`: the thin PyO3 layer over tideflow-core. This file only registers classes;
//! each class lives in its own module and errors map in one place (`errors.rs`).

use pyo3::prelude::*;

mod async_run;
mod backend;
mod cancels;
mod checked;
mod clock;
mod context;
mod convert;
mod driver;
mod engine;
mod errors;
mod history;
mod host;
mod inbox;
mod json;
mod native_store;
mod observe;
mod open;
mod pystore;
mod registry;
mod remote;
mod reopen;
mod workflow;

/// Decodes JSON bytes into JSON-native Python values (used for stored payloads).
#[pyfunction]
fn decode_json<'py>(py: Python<'py>, data: &[u8]) -> PyResult<Bound<'py, PyAny>> {
    json::decode(py, data)
}

/// Encodes a JSON-native value (with an optional fallback for other types) to JSON bytes.
#[pyfunction]
#[pyo3(signature = (value, fallback=None))]
fn encode_json(py: Python<'_>, value: &Bound<'_, PyAny>, fallback: Option<&Bound<'_, PyAny>>) -> PyResult<Vec<u8>> {
    json::to_bytes(py, value, fallback)
}

#[pymodule]
fn _core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<context::Context>()?;
    m.add_class::<clock::VirtualClock>()?;
    m.add_class::<workflow::PyPlan>()?;
    m.add_class::<workflow::Compiled>()?;
    m.add_class::<engine::Engine>()?;
    m.add_class::<async_run::AsyncRun>()?;
    m.add_class::<native_store::NativeStore>()?;
    m.add_class::<remote::RemoteStep>()?;
    m.add_function(wrap_pyfunction!(remote::task_header, m)?)?;
    m.add_function(wrap_pyfunction!(remote::task_fields, m)?)?;
    m.add_function(wrap_pyfunction!(remote::inbox_entries, m)?)?;
    m.add_function(wrap_pyfunction!(remote::internal_signal, m)?)?;
    m.add_function(wrap_pyfunction!(decode_json, m)?)?;
    m.add_function(wrap_pyfunction!(encode_json, m)?)?;
    m.add("FORMAT_VERSION", tideflow_core::codec::FORMAT)?;
    Ok(())
}
