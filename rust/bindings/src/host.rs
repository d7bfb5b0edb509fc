//! The core's `Host` for Python values: conditions, routers and codec hooks are Python callables.

use std::collections::HashMap;

use pyo3::prelude::*;
use pyo3::types::{PyList, PyString, PyTuple};
use tideflow_core::instance::{Failure, Host};

use crate::errors::describe_exception;
use crate::json;
use crate::workflow::Compiled;

/// A Python exception as a core failure record.
pub fn failure(py: Python<'_>, err: &PyErr) -> Failure {
    let (error_type, message, traceback) = describe_exception(py, err);
    Failure { error_type, message, traceback }
}

/// Encodes a value through an optional typed encoder, then to JSON bytes.
pub fn encode_value(
    py: Python<'_>,
    encoder: Option<&Py<PyAny>>,
    fallback: &Bound<'_, PyAny>,
    value: &Bound<'_, PyAny>,
) -> PyResult<Vec<u8>> {
    match encoder {
        Some(enc) => {
            let native = enc.bind(py).call1((value,))?;
            json::to_bytes(py, &native, Some(fallback))
        }
        None => json::to_bytes(py, value, Some(fallback)),
    }
}

/// Decodes JSON bytes through an optional typed decoder.
pub fn decode_value<'py>(py: Python<'py>, decoder: Option<&Py<PyAny>>, payload: &[u8]) -> PyResult<Bound<'py, PyAny>> {
    let native = json::decode(py, payload)?;
    match decoder {
        Some(dec) => dec.bind(py).call1((native,)),
        None => Ok(native),
    }
}

/// Evaluates the workflow's pure functions for the state machine.
pub struct PyHost<'a, 'py> {
    pub py: Python<'py>,
    pub wf: &'a Compiled,
    pub fallback: &'a Bound<'py, PyAny>,
    /// Signal payloads read from the inbox, by sequence number.
    pub inbox: &'a HashMap<u64, Vec<u8>>,
}

impl PyHost<'_, '_> {
    fn call(&self, f: u32, v: &Py<PyAny>) -> Result<Bound<'_, PyAny>, Failure> {
        self.wf.fns[f as usize].bind(self.py).call1((v.bind(self.py),)).map_err(|e| failure(self.py, &e))
    }
}

fn type_error(msg: String) -> Failure {
    Failure::new("TypeError", msg)
}

/// The label of a value for a transition table: a str, or an Enum member's str value (or name).
fn label_of(v: &Bound<'_, PyAny>) -> Option<String> {
    if let Ok(s) = v.cast::<PyString>() {
        return s.to_str().ok().map(str::to_owned);
    }
    let value = v.getattr("value").ok()?;
    if let Ok(s) = value.cast::<PyString>() {
        return s.to_str().ok().map(str::to_owned);
    }
    v.getattr("name").ok()?.extract::<String>().ok()
}

impl Host<Py<PyAny>> for PyHost<'_, '_> {
    fn condition(&mut self, f: u32, v: &Py<PyAny>) -> Result<bool, Failure> {
        let r = self.call(f, v)?;
        r.is_truthy().map_err(|e| failure(self.py, &e))
    }

    fn route(&mut self, f: u32, v: &Py<PyAny>) -> Result<String, Failure> {
        let r = self.call(f, v)?;
        label_of(&r).ok_or_else(|| {
            let tn = r.get_type().name().map(|n| n.to_string()).unwrap_or_default();
            type_error(format!("router {} must return a state name (str), got {tn}", self.wf.plan.fns[f as usize]))
        })
    }

    fn label(&mut self, v: &Py<PyAny>) -> Result<String, Failure> {
        let b = v.bind(self.py);
        label_of(b).ok_or_else(|| {
            let tn = b.get_type().name().map(|n| n.to_string()).unwrap_or_default();
            type_error(format!("a state with a transition table must output a str label (or an Enum), got {tn}"))
        })
    }

    fn tuple(&mut self, items: Vec<Py<PyAny>>) -> Py<PyAny> {
        PyTuple::new(self.py, items).map(|t| t.into_any().unbind()).unwrap_or_else(|_| self.py.None())
    }

    fn list(&mut self, items: Vec<Py<PyAny>>) -> Py<PyAny> {
        PyList::new(self.py, items).map(|t| t.into_any().unbind()).unwrap_or_else(|_| self.py.None())
    }

    fn items(&mut self, v: &Py<PyAny>) -> Result<Vec<Py<PyAny>>, Failure> {
        let b = v.bind(self.py);
        if b.cast::<PyString>().is_ok() || b.is_instance_of::<pyo3::types::PyDict>() {
            let tn = b.get_type().name().map(|n| n.to_string()).unwrap_or_default();
            return Err(type_error(format!("map needs a list (or another sequence) as input, got {tn}")));
        }
        let iter = b.try_iter().map_err(|_| {
            let tn = b.get_type().name().map(|n| n.to_string()).unwrap_or_default();
            type_error(format!("map needs a list (or another sequence) as input, got {tn}"))
        })?;
        iter.map(|x| x.map(Bound::unbind).map_err(|e| failure(self.py, &e))).collect()
    }

    fn decode(&mut self, step: u32, payload: &[u8]) -> Result<Py<PyAny>, Failure> {
        let entry = &self.wf.steps[step as usize];
        decode_value(self.py, entry.decode.as_ref(), payload).map(Bound::unbind).map_err(|e| {
            let mut f = failure(self.py, &e);
            f.message = format!(
                "the stored output of step {:?} no longer decodes into its return type: {}",
                self.wf.plan.steps[step as usize].name, f.message
            );
            f
        })
    }

    fn encode_output(&mut self, v: &Py<PyAny>) -> Result<Vec<u8>, Failure> {
        json::to_bytes(self.py, v.bind(self.py), Some(self.fallback)).map_err(|e| failure(self.py, &e))
    }

    fn signal(&mut self, wait: u32, seq: u64) -> Result<Py<PyAny>, Failure> {
        let payload = self
            .inbox
            .get(&seq)
            .ok_or_else(|| Failure::new("CorruptCheckpoint", format!("signal #{seq} is not in the inbox")))?;
        let decoder = self.wf.waits.get(wait as usize).and_then(Option::as_ref);
        decode_value(self.py, decoder, payload).map(Bound::unbind).map_err(|e| {
            let mut f = failure(self.py, &e);
            f.message = format!("the payload of signal #{seq} does not decode into the wait's type: {}", f.message);
            f
        })
    }

    fn text(&mut self, s: &str) -> Py<PyAny> {
        PyString::new(self.py, s).into_any().unbind()
    }
}
