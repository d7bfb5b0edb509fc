//! JSON payloads: JSON-native Python values to bytes and back, fast, with a Python fallback
//! (`tideflow.codec.to_jsonable`) for anything else. Never pickle.

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyDict, PyFloat, PyInt, PyList, PyString, PyTuple};
use serde_json::Value;

use crate::errors::error;

const MAX_DEPTH: u32 = 256;

/// Encodes `obj` as JSON into `out`. Values that are not JSON-native go through `fallback` once
/// (which must return JSON-native data); without a fallback they are a `CodecError`.
pub fn encode(
    py: Python<'_>,
    obj: &Bound<'_, PyAny>,
    fallback: Option<&Bound<'_, PyAny>>,
    out: &mut Vec<u8>,
) -> PyResult<()> {
    write(py, obj, fallback, out, 0)
}

/// Encodes `obj` to a fresh buffer.
pub fn to_bytes(py: Python<'_>, obj: &Bound<'_, PyAny>, fallback: Option<&Bound<'_, PyAny>>) -> PyResult<Vec<u8>> {
    let mut out = Vec::with_capacity(32);
    encode(py, obj, fallback, &mut out)?;
    Ok(out)
}

fn write(
    py: Python<'_>,
    obj: &Bound<'_, PyAny>,
    fallback: Option<&Bound<'_, PyAny>>,
    out: &mut Vec<u8>,
    depth: u32,
) -> PyResult<()> {
    if depth > MAX_DEPTH {
        return Err(error(py, "CodecError", "value is nested too deeply (or contains itself)"));
    }
    if obj.is_none() {
        out.extend_from_slice(b"null");
    } else if let Ok(s) = obj.cast_exact::<PyString>() {
        write_str(s.to_str()?, out);
    } else if let Ok(b) = obj.cast_exact::<PyBool>() {
        out.extend_from_slice(if b.is_true() { b"true" } else { b"false" });
    } else if let Ok(i) = obj.cast_exact::<PyInt>() {
        match i.extract::<i64>() {
            Ok(v) => out.extend_from_slice(itoa::Buffer::new().format(v).as_bytes()),
            Err(_) => out.extend_from_slice(i.str()?.to_str()?.as_bytes()),
        }
    } else if let Ok(f) = obj.cast_exact::<PyFloat>() {
        let v = f.value();
        if !v.is_finite() {
            return Err(error(py, "CodecError", format!("cannot encode the float {v} as JSON")));
        }
        out.extend_from_slice(ryu::Buffer::new().format_finite(v).as_bytes());
    } else if let Ok(l) = obj.cast_exact::<PyList>() {
        out.push(b'[');
        for (i, item) in l.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            write(py, &item, fallback, out, depth + 1)?;
        }
        out.push(b']');
    } else if let Ok(t) = obj.cast_exact::<PyTuple>() {
        out.push(b'[');
        for (i, item) in t.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            write(py, &item, fallback, out, depth + 1)?;
        }
        out.push(b']');
    } else if let Ok(d) = obj.cast_exact::<PyDict>() {
        out.push(b'{');
        for (i, (k, v)) in d.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            let Ok(k) = k.cast_exact::<PyString>() else {
                let tn = k.get_type().name()?.to_string();
                return Err(error(py, "CodecError", format!("dict keys must be str to encode as JSON, got {tn}")));
            };
            write_str(k.to_str()?, out);
            out.push(b':');
            write(py, &v, fallback, out, depth + 1)?;
        }
        out.push(b'}');
    } else if let Some(fb) = fallback {
        let native = fb.call1((obj,))?;
        write(py, &native, None, out, depth + 1)?;
    } else {
        let tn = obj.get_type().qualname()?.to_string();
        return Err(error(py, "CodecError", format!("cannot encode a value of type {tn} as JSON")));
    }
    Ok(())
}

fn write_str(s: &str, out: &mut Vec<u8>) {
    out.push(b'"');
    let bytes = s.as_bytes();
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let esc: Option<&[u8]> = match b {
            b'"' => Some(b"\\\""),
            b'\\' => Some(b"\\\\"),
            b'\n' => Some(b"\\n"),
            b'\r' => Some(b"\\r"),
            b'\t' => Some(b"\\t"),
            0..=0x1f => None,
            _ => continue,
        };
        out.extend_from_slice(&bytes[start..i]);
        match esc {
            Some(e) => out.extend_from_slice(e),
            None => {
                const HEX: &[u8; 16] = b"0123456789abcdef";
                out.extend_from_slice(b"\\u00");
                out.push(HEX[(b >> 4) as usize]);
                out.push(HEX[(b & 0xf) as usize]);
            }
        }
        start = i + 1;
    }
    out.extend_from_slice(&bytes[start..]);
    out.push(b'"');
}

/// Parses JSON bytes into JSON-native Python values (int, float, str, bool, None, list, dict).
pub fn decode<'py>(py: Python<'py>, bytes: &[u8]) -> PyResult<Bound<'py, PyAny>> {
    let v: Value = serde_json::from_slice(bytes)
        .map_err(|e| error(py, "CodecError", format!("stored payload is not valid JSON: {e}")))?;
    to_py(py, &v)
}

fn to_py<'py>(py: Python<'py>, v: &Value) -> PyResult<Bound<'py, PyAny>> {
    Ok(match v {
        Value::Null => py.None().into_bound(py),
        Value::Bool(b) => PyBool::new(py, *b).to_owned().into_any(),
        Value::Number(n) => {
            let s = n.as_str();
            if s.contains(['.', 'e', 'E']) {
                let f: f64 = s.parse().map_err(|_| PyValueError::new_err(format!("bad JSON number {s}")))?;
                PyFloat::new(py, f).into_any()
            } else if let Ok(i) = s.parse::<i64>() {
                i.into_pyobject(py)?.into_any()
            } else {
                py.get_type::<PyInt>().call1((s,))?
            }
        }
        Value::String(s) => PyString::new(py, s).into_any(),
        Value::Array(xs) => {
            let items = xs.iter().map(|x| to_py(py, x)).collect::<PyResult<Vec<_>>>()?;
            PyList::new(py, items)?.into_any()
        }
        Value::Object(m) => {
            let d = PyDict::new(py);
            for (k, x) in m {
                d.set_item(k, to_py(py, x)?)?;
            }
            d.into_any()
        }
    })
}
