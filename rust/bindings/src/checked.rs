//! Encoding a value so that what is stored decodes to the same value: a value with a type hint
//! must decode into that type, and one without must be plain JSON (it comes back as parsed).
//! Steps' outputs, workflow inputs and signal payloads all go through here before anything is
//! stored.

use pyo3::prelude::*;
use pyo3::types::{PyBool, PyFloat, PyInt, PyString};

use tideflow_core::plan::Node;

use crate::errors::error;
use crate::host::{decode_value, encode_value};
use crate::json::{self, NotNative, StrictError};
use crate::workflow::Compiled;

/// What a value is checked against before it is stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Check {
    /// No usable type hint: only plain JSON values (of exactly the JSON types) are taken.
    Untyped,
    /// A type hint: the stored form must decode into it. A value of exactly this scalar type
    /// (the common case) is taken without a call into Python.
    Typed(Option<Scalar>),
}

/// A scalar type hint whose values are checked natively.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scalar {
    Int,
    Float,
    Str,
    Bool,
    None,
}

impl Check {
    /// Parses the name `tideflow._compile` gives a hint: `untyped`, `typed`, or a scalar's name.
    pub fn parse(py: Python<'_>, s: &str) -> PyResult<Check> {
        Ok(match s {
            "untyped" => Check::Untyped,
            "typed" => Check::Typed(None),
            "int" => Check::Typed(Some(Scalar::Int)),
            "float" => Check::Typed(Some(Scalar::Float)),
            "str" => Check::Typed(Some(Scalar::Str)),
            "bool" => Check::Typed(Some(Scalar::Bool)),
            "None" => Check::Typed(Some(Scalar::None)),
            other => return Err(error(py, "DefinitionError", format!("unknown value check {other:?}"))),
        })
    }

    fn fast(self, v: &Bound<'_, PyAny>) -> bool {
        match self {
            Check::Typed(Some(Scalar::Int)) => v.is_exact_instance_of::<PyInt>(),
            Check::Typed(Some(Scalar::Float)) => v.is_exact_instance_of::<PyFloat>(),
            Check::Typed(Some(Scalar::Str)) => v.is_exact_instance_of::<PyString>(),
            Check::Typed(Some(Scalar::Bool)) => v.is_exact_instance_of::<PyBool>(),
            Check::Typed(Some(Scalar::None)) => v.is_none(),
            _ => false,
        }
    }
}

/// Why a value was not stored.
pub enum Refusal {
    /// Encoding it failed (the typed encoder or the JSON encoder raised).
    Encode(PyErr),
    /// Its stored form does not decode into its type hint (the decoder's error says where).
    Mismatch(PyErr),
    /// It has no type hint and is not plain JSON: `what` it is (`a tuple`, `a dict key of type
    /// int`), `at` where (` at [2]`, or empty), and a type hint that would restore it (`None`
    /// when none can, e.g. for dict keys that are not str).
    Untyped { what: String, at: String, hint: Option<String> },
}

/// What was stored, and the value to hand on.
pub struct Checked<'py> {
    /// The stored form.
    pub payload: Vec<u8>,
    /// The value as a resume decodes it from `payload`, when it had to be decoded to be checked
    /// (a typed value that is not exactly its scalar type): the engine hands this on instead of
    /// the live object, so that the next step receives the same value whether or not the process
    /// restarted in between (a tuple returned for `-> list[int]` goes on as a list, an `int` for
    /// `-> float` as a float). `None`: the live value is what a resume gives back.
    pub decoded: Option<Bound<'py, PyAny>>,
}

impl<'py> Checked<'py> {
    /// The value to hand on: the decoded one if there is one, else `live`.
    pub fn value(&self, live: &Bound<'py, PyAny>) -> Bound<'py, PyAny> {
        self.decoded.as_ref().unwrap_or(live).clone()
    }
}

/// Encodes `value` for the store and checks that what is stored decodes to the same value.
pub fn encode_checked<'py>(
    py: Python<'py>,
    encoder: Option<&Py<PyAny>>,
    decoder: Option<&Py<PyAny>>,
    check: Check,
    fallback: &Bound<'py, PyAny>,
    value: &Bound<'py, PyAny>,
) -> Result<Checked<'py>, Refusal> {
    if check == Check::Untyped {
        return strict(py, value).map(|payload| Checked { payload, decoded: None });
    }
    // without a typed encoder the value must be JSON-native as it is: the fallback would turn
    // bytes into a str that a `str` hint then accepts, although it is not the value returned
    let payload = match encoder {
        Some(_) => encode_value(py, encoder, fallback, value),
        None => json::to_bytes(py, value, None),
    }
    .map_err(Refusal::Mismatch)?;
    let mut decoded = None;
    if !check.fast(value) {
        if let Some(dec) = decoder {
            decoded = Some(decode_value(py, Some(dec), &payload).map_err(Refusal::Mismatch)?);
        }
    }
    Ok(Checked { payload, decoded })
}

/// Encodes `value` as plain JSON, or says why it is not (see [`json::to_bytes_strict`]).
fn strict(py: Python<'_>, value: &Bound<'_, PyAny>) -> Result<Vec<u8>, Refusal> {
    json::to_bytes_strict(py, value).map_err(|e| match e {
        StrictError::Py(e) => Refusal::Encode(e),
        StrictError::NotNative(n) => untyped(py, value, n),
    })
}

/// Describes a refused untyped value, with a hint for the whole value that would restore it.
fn untyped(py: Python<'_>, root: &Bound<'_, PyAny>, n: NotNative) -> Refusal {
    let bad = n.value.bind(py);
    let qual = bad.get_type().qualname().map(|t| t.to_string()).unwrap_or_else(|_| "?".into());
    let tn = qual.rsplit("<locals>.").next().unwrap_or(&qual).to_string();
    let at = if n.path.is_empty() { String::new() } else { format!(" at ${}", n.path) };
    if n.is_key {
        return Refusal::Untyped { what: format!("a dict key of type {tn}"), at, hint: None };
    }
    let acronym = tn.chars().all(|c| c.is_ascii_uppercase());
    let vowel = tn.starts_with(['a', 'e', 'i', 'o', 'u', 'A', 'E', 'I', 'O', 'U']);
    let article = if vowel && !acronym { "an" } else { "a" };
    let hint =
        py.import("tideflow.codec").and_then(|m| m.getattr("suggest_hint")?.call1((root,))?.extract::<String>()).ok();
    Refusal::Untyped { what: format!("{article} {tn}"), at, hint }
}

/// How a refusal is put for one kind of value.
pub struct Wording<'a> {
    /// What held the value, with its verb: `step "load" returned`, `the input of workflow "w" is`.
    pub subject: &'a str,
    /// The type hint it was checked against, for a mismatch.
    pub type_name: &'a str,
    /// What is missing for an untyped value: `without a return type hint`.
    pub without: &'a str,
    /// Where to put a hint: `annotate the step`.
    pub annotate: &'a str,
    /// How the hint is written there: `-> `, `value: `, `type=`.
    pub prefix: &'a str,
}

impl Refusal {
    /// The refusal as an error of class `class`, put in `w`'s words.
    pub fn into_error(self, py: Python<'_>, class: &str, w: &Wording<'_>) -> PyErr {
        let Wording { subject, type_name, without, annotate, prefix } = w;
        let msg = match self {
            Refusal::Encode(e) => format!("{subject} a value that cannot be encoded: {}", e.value(py)),
            Refusal::Mismatch(e) => {
                format!("{subject} a value that does not fit {type_name}: {}", e.value(py))
            }
            Refusal::Untyped { what, at, hint: Some(hint) } => format!(
                "{subject} {what}{at} {without}; {annotate} ({prefix}{hint}) so that the value can be \
                 restored after a restart"
            ),
            Refusal::Untyped { what, at, hint: None } => {
                format!("{subject} {what}{at}, which JSON cannot keep (its object keys are str): use str keys")
            }
        };
        error(py, class, msg)
    }
}

/// Encodes a new instance's input, checked against its first step's input hint.
pub fn encode_input<'py>(
    py: Python<'py>,
    wf: &Compiled,
    fallback: &Bound<'py, PyAny>,
    input: &Bound<'py, PyAny>,
) -> PyResult<Checked<'py>> {
    let (enc, dec) = (wf.input_encode.as_ref(), wf.input_decode.as_ref());
    encode_checked(py, enc, dec, wf.input_check, fallback, input).map_err(|r| {
        let subject = format!("the input of workflow {:?} is", wf.plan.name);
        let type_name = format!("the input type {} of its first step", wf.input_hint);
        let wording = Wording {
            subject: &subject,
            type_name: &type_name,
            without: "but its first step has no type hint for its input",
            annotate: "annotate that parameter",
            prefix: "value: ",
        };
        r.into_error(py, "CodecError", &wording)
    })
}

/// Checks a signal's payload against every wait for `name` in `wf`'s plan: its stored form
/// (`bytes`) must decode into a typed wait's type, and be plain JSON for an untyped one.
pub fn check_signal(
    py: Python<'_>,
    wf: &Compiled,
    name: &str,
    payload: &Bound<'_, PyAny>,
    bytes: &[u8],
) -> PyResult<()> {
    for node in &wf.plan.nodes {
        let Node::WaitSignal { name: n, wait, .. } = node else { continue };
        if n != name {
            continue;
        }
        let refusal = match wf.waits.get(*wait as usize).and_then(Option::as_ref) {
            Some(dec) => decode_value(py, Some(dec), bytes).err().map(Refusal::Mismatch),
            None => strict(py, payload).err(),
        };
        if let Some(r) = refusal {
            let subject = format!("the payload of signal {name:?} is");
            let wording = Wording {
                subject: &subject,
                type_name: "the type of its wait",
                without: "but its wait has no type",
                annotate: "give wait_signal a type",
                prefix: "type=",
            };
            return Err(r.into_error(py, "SignalError", &wording));
        }
    }
    Ok(())
}
