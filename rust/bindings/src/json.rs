//! JSON payloads: JSON-native Python values to bytes and back, fast, with a Python fallback
//! (`tideflow.codec.to_jsonable`) for anything else, or a strict mode that refuses anything a
//! plain JSON parse would not give back unchanged. Never pickle.

use pyo3::prelude::*;
use pyo3::types::{PyBool, PyDict, PyFloat, PyInt, PyList, PyString, PyTuple};

use crate::errors::error;

const MAX_DEPTH: u32 = 256;

/// What the encoder does with a value that is not JSON-native.
#[derive(Clone, Copy)]
enum Mode<'a, 'py> {
    /// Hands it to this Python function once (which must return JSON-native data).
    Fallback(&'a Bound<'py, PyAny>),
    /// Raises a `CodecError`.
    Native,
    /// Reports where it is ([`NotNative`]); tuples count as not native too, since they come back
    /// as lists.
    Strict,
}

/// A value that [`to_bytes_strict`] refused: it would not come back from its JSON form as it is.
pub struct NotNative {
    /// Where it is inside the encoded value (`[2].name`; empty for the value itself).
    pub path: String,
    /// The refused object: a value, or a dict key that is not a str.
    pub value: Py<PyAny>,
    /// Whether `value` is a dict key.
    pub is_key: bool,
}

/// Why [`to_bytes_strict`] failed.
pub enum StrictError {
    /// A Python error (e.g. a non-finite float, a value nested too deeply).
    Py(PyErr),
    /// A value that is not JSON-native.
    NotNative(NotNative),
}

impl From<PyErr> for StrictError {
    fn from(e: PyErr) -> Self {
        StrictError::Py(e)
    }
}

/// Encodes `obj` as JSON into `out`. Values that are not JSON-native go through `fallback` once
/// (which must return JSON-native data); without a fallback they are a `CodecError`.
pub fn encode(
    py: Python<'_>,
    obj: &Bound<'_, PyAny>,
    fallback: Option<&Bound<'_, PyAny>>,
    out: &mut Vec<u8>,
) -> PyResult<()> {
    let mode = fallback.map_or(Mode::Native, Mode::Fallback);
    write(py, obj, mode, out, 0).map_err(|e| match e {
        StrictError::Py(e) => e,
        StrictError::NotNative(_) => unreachable!("only the strict mode reports values"),
    })
}

/// Encodes `obj` to a fresh buffer.
pub fn to_bytes(py: Python<'_>, obj: &Bound<'_, PyAny>, fallback: Option<&Bound<'_, PyAny>>) -> PyResult<Vec<u8>> {
    let mut out = Vec::with_capacity(32);
    encode(py, obj, fallback, &mut out)?;
    Ok(out)
}

/// Encodes `obj` only if parsing the JSON gives it back as it is: None, bool, int, float, str,
/// and lists and dicts (with str keys) of those, of exactly these types. Anything else (a tuple,
/// bytes, a datetime, an Enum member, a subclass of a JSON type...) is reported with its place.
pub fn to_bytes_strict(py: Python<'_>, obj: &Bound<'_, PyAny>) -> Result<Vec<u8>, StrictError> {
    let mut out = Vec::with_capacity(32);
    write(py, obj, Mode::Strict, &mut out, 0)?;
    Ok(out)
}

/// The path segment of dict key `k`, as the typed codec writes it (`.name` or `['a b']`).
fn key_segment(k: &str) -> String {
    let ident = k.chars().next().is_some_and(|c| c.is_alphabetic() || c == '_')
        && k.chars().all(|c| c.is_alphanumeric() || c == '_');
    if ident {
        format!(".{k}")
    } else {
        format!("[{k:?}]")
    }
}

/// Prefixes the path of a refused value with the segment of the container it was found in.
fn inside(e: StrictError, segment: impl FnOnce() -> String) -> StrictError {
    match e {
        StrictError::NotNative(mut n) => {
            n.path = segment() + &n.path;
            StrictError::NotNative(n)
        }
        other => other,
    }
}

fn not_native(obj: &Bound<'_, PyAny>, is_key: bool) -> StrictError {
    StrictError::NotNative(NotNative { path: String::new(), value: obj.clone().unbind(), is_key })
}

fn write(
    py: Python<'_>,
    obj: &Bound<'_, PyAny>,
    mode: Mode<'_, '_>,
    out: &mut Vec<u8>,
    depth: u32,
) -> Result<(), StrictError> {
    if depth > MAX_DEPTH {
        return Err(error(py, "CodecError", "value is nested too deeply (or contains itself)").into());
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
            Err(_) => {
                let text = without_digit_limit(py, || i.str().map(Bound::unbind))?;
                out.extend_from_slice(text.bind(py).to_str()?.as_bytes())
            }
        }
    } else if let Ok(f) = obj.cast_exact::<PyFloat>() {
        let v = f.value();
        if !v.is_finite() {
            return Err(error(py, "CodecError", format!("cannot encode the float {v} as JSON")).into());
        }
        out.extend_from_slice(ryu::Buffer::new().format_finite(v).as_bytes());
    } else if let Ok(l) = obj.cast_exact::<PyList>() {
        out.push(b'[');
        for (i, item) in l.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            write(py, &item, mode, out, depth + 1).map_err(|e| inside(e, || format!("[{i}]")))?;
        }
        out.push(b']');
    } else if let (Ok(t), false) = (obj.cast_exact::<PyTuple>(), matches!(mode, Mode::Strict)) {
        out.push(b'[');
        for (i, item) in t.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            write(py, &item, mode, out, depth + 1)?;
        }
        out.push(b']');
    } else if let Ok(d) = obj.cast_exact::<PyDict>() {
        out.push(b'{');
        for (i, (k, v)) in d.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            let Ok(k) = k.cast_exact::<PyString>() else {
                if matches!(mode, Mode::Strict) {
                    return Err(not_native(&k, true));
                }
                let tn = k.get_type().name()?.to_string();
                let msg = format!("dict keys must be str to encode as JSON, got {tn}");
                return Err(error(py, "CodecError", msg).into());
            };
            let key = k.to_str()?;
            write_str(key, out);
            out.push(b':');
            write(py, &v, mode, out, depth + 1).map_err(|e| inside(e, || key_segment(key)))?;
        }
        out.push(b'}');
    } else if let Mode::Fallback(fb) = mode {
        let native = fb.call1((obj,))?;
        write(py, &native, Mode::Native, out, depth + 1)?;
    } else if let Mode::Strict = mode {
        return Err(not_native(obj, false));
    } else {
        let tn = obj.get_type().qualname()?.to_string();
        return Err(error(py, "CodecError", format!("cannot encode a value of type {tn} as JSON")).into());
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

/// Parses JSON bytes into JSON-native Python values (int of any size, float, str, bool, None,
/// list, dict with its key order).
pub fn decode<'py>(py: Python<'py>, bytes: &[u8]) -> PyResult<Bound<'py, PyAny>> {
    let mut p = Parser { b: bytes, i: 0, py };
    let v = p.value(0)?;
    p.ws();
    if p.i != p.b.len() {
        return Err(p.err("trailing characters after the value"));
    }
    Ok(v)
}

struct Parser<'a, 'py> {
    b: &'a [u8],
    i: usize,
    py: Python<'py>,
}

impl<'py> Parser<'_, 'py> {
    fn err(&self, what: &str) -> PyErr {
        error(self.py, "CodecError", format!("stored payload is not valid JSON: {what} at byte {}", self.i))
    }

    fn ws(&mut self) {
        while let Some(b' ' | b'\n' | b'\r' | b'\t') = self.b.get(self.i) {
            self.i += 1;
        }
    }

    fn eat(&mut self, lit: &[u8]) -> PyResult<()> {
        if self.b[self.i..].starts_with(lit) {
            self.i += lit.len();
            Ok(())
        } else {
            Err(self.err("unexpected token"))
        }
    }

    fn value(&mut self, depth: u32) -> PyResult<Bound<'py, PyAny>> {
        if depth > MAX_DEPTH {
            return Err(self.err("nesting too deep"));
        }
        self.ws();
        let py = self.py;
        match self.b.get(self.i) {
            None => Err(self.err("unexpected end")),
            Some(b'n') => self.eat(b"null").map(|()| py.None().into_bound(py)),
            Some(b't') => self.eat(b"true").map(|()| PyBool::new(py, true).to_owned().into_any()),
            Some(b'f') => self.eat(b"false").map(|()| PyBool::new(py, false).to_owned().into_any()),
            Some(b'"') => Ok(PyString::new(py, &self.string()?).into_any()),
            Some(b'[') => {
                self.i += 1;
                let list = PyList::empty(py);
                self.ws();
                if self.b.get(self.i) == Some(&b']') {
                    self.i += 1;
                    return Ok(list.into_any());
                }
                loop {
                    list.append(self.value(depth + 1)?)?;
                    self.ws();
                    match self.b.get(self.i) {
                        Some(b',') => self.i += 1,
                        Some(b']') => {
                            self.i += 1;
                            return Ok(list.into_any());
                        }
                        _ => return Err(self.err("expected ',' or ']'")),
                    }
                }
            }
            Some(b'{') => {
                self.i += 1;
                let dict = PyDict::new(py);
                self.ws();
                if self.b.get(self.i) == Some(&b'}') {
                    self.i += 1;
                    return Ok(dict.into_any());
                }
                loop {
                    self.ws();
                    if self.b.get(self.i) != Some(&b'"') {
                        return Err(self.err("expected a string key"));
                    }
                    let k = self.string()?;
                    self.ws();
                    self.eat(b":")?;
                    let v = self.value(depth + 1)?;
                    dict.set_item(k, v)?;
                    self.ws();
                    match self.b.get(self.i) {
                        Some(b',') => self.i += 1,
                        Some(b'}') => {
                            self.i += 1;
                            return Ok(dict.into_any());
                        }
                        _ => return Err(self.err("expected ',' or '}'")),
                    }
                }
            }
            Some(b'-' | b'0'..=b'9') => self.number(),
            Some(_) => Err(self.err("unexpected character")),
        }
    }

    fn number(&mut self) -> PyResult<Bound<'py, PyAny>> {
        let start = self.i;
        let mut float = false;
        while let Some(&c) = self.b.get(self.i) {
            match c {
                b'0'..=b'9' | b'-' | b'+' => {}
                b'.' | b'e' | b'E' => float = true,
                _ => break,
            }
            self.i += 1;
        }
        let text = std::str::from_utf8(&self.b[start..self.i]).map_err(|_| self.err("bad number"))?;
        let py = self.py;
        if float {
            let f: f64 = text.parse().map_err(|_| self.err("bad number"))?;
            return Ok(PyFloat::new(py, f).into_any());
        }
        if let Ok(i) = text.parse::<i64>() {
            return Ok(i.into_pyobject(py)?.into_any());
        }
        if text.is_empty() || text == "-" || !text.trim_start_matches('-').bytes().all(|c| c.is_ascii_digit()) {
            return Err(self.err("bad number"));
        }
        // beyond 64 bits: Python ints have no limit, and neither has the codec
        without_digit_limit(py, || py.get_type::<PyInt>().call1((text,)).map(Bound::unbind)).map(|i| i.into_bound(py))
    }

    fn string(&mut self) -> PyResult<String> {
        self.i += 1; // the opening quote
        let mut out = String::new();
        loop {
            let start = self.i;
            while let Some(&c) = self.b.get(self.i) {
                if c == b'"' || c == b'\\' || c < 0x20 {
                    break;
                }
                self.i += 1;
            }
            out.push_str(std::str::from_utf8(&self.b[start..self.i]).map_err(|_| self.err("invalid UTF-8"))?);
            match self.b.get(self.i) {
                Some(b'"') => {
                    self.i += 1;
                    return Ok(out);
                }
                Some(b'\\') => {
                    self.i += 1;
                    let c = *self.b.get(self.i).ok_or_else(|| self.err("unexpected end"))?;
                    self.i += 1;
                    match c {
                        b'"' => out.push('"'),
                        b'\\' => out.push('\\'),
                        b'/' => out.push('/'),
                        b'b' => out.push('\u{8}'),
                        b'f' => out.push('\u{c}'),
                        b'n' => out.push('\n'),
                        b'r' => out.push('\r'),
                        b't' => out.push('\t'),
                        b'u' => {
                            let hi = self.hex4()?;
                            let code = if (0xD800..0xDC00).contains(&hi) {
                                self.eat(b"\\u")?;
                                let lo = self.hex4()?;
                                if !(0xDC00..0xE000).contains(&lo) {
                                    return Err(self.err("unpaired surrogate"));
                                }
                                0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00)
                            } else {
                                hi
                            };
                            out.push(char::from_u32(code).ok_or_else(|| self.err("bad \\u escape"))?);
                        }
                        _ => return Err(self.err("bad escape")),
                    }
                }
                _ => return Err(self.err("unterminated string")),
            }
        }
    }

    fn hex4(&mut self) -> PyResult<u32> {
        let s = self.b.get(self.i..self.i + 4).ok_or_else(|| self.err("short \\u escape"))?;
        let s = std::str::from_utf8(s).map_err(|_| self.err("bad \\u escape"))?;
        let v = u32::from_str_radix(s, 16).map_err(|_| self.err("bad \\u escape"))?;
        self.i += 4;
        Ok(v)
    }
}

/// Runs `f` (an int <-> decimal text conversion); if Python refuses it for its limit on the
/// digits of such conversions (`sys.set_int_max_str_digits`, 4300 by default), runs it again with
/// the limit lifted, so that an integer of any size round-trips as the docs promise (the limit
/// guards parsers of untrusted text; the JSON read here is the engine's own). Ints under the
/// limit pay nothing extra. The GIL is held throughout, so no other thread sees the change.
fn without_digit_limit<T>(py: Python<'_>, f: impl Fn() -> PyResult<T>) -> PyResult<T> {
    match f() {
        Err(e) if e.is_instance_of::<pyo3::exceptions::PyValueError>(py) => {
            let sys = py.import("sys")?;
            let Ok(get) = sys.getattr("get_int_max_str_digits") else {
                return Err(e); // a Python without the limit: the error is another one
            };
            let limit = get.call0()?;
            sys.call_method1("set_int_max_str_digits", (0,))?;
            let result = f();
            sys.call_method1("set_int_max_str_digits", (limit,))?;
            result
        }
        other => other,
    }
}
