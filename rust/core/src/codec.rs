//! The versioned checkpoint record format: the only code that reads or writes stored records.
//!
//! Every record is `b"TF"`, a format version byte, a kind byte, the body, then a CRC-32 of all the
//! preceding bytes (little endian). Body fields are varint-prefixed byte strings, varints, little
//! endian f64s and one-byte option flags. Stores keep records as opaque bytes; golden fixtures in
//! `tests/golden/` pin this layout, so a change to it must bump [`FORMAT`] and keep reading the old.
//!
//! Format 2 appended the plan's outline to the instance header (so that a `VersionMismatch` can say
//! what changed). It is the only change since format 1: headers are written as format 2, every
//! other kind is still written (and only read) as format 1, and format-1 headers still decode,
//! without an outline.

use crate::error::{CoreError, Result};
use crate::varint::{self, VarintError};

/// The newest record format version: what instance headers are written with.
pub const FORMAT: u8 = 2;
/// The format of the record kinds whose layout has not changed since format 1 (all but the header).
const FORMAT_1: u8 = 1;
const MAGIC: &[u8; 2] = b"TF";

const KIND_HEADER: u8 = 1;
const KIND_STEP: u8 = 2;
const KIND_DECISION: u8 = 3;
const KIND_ENQUEUED: u8 = 4;
const KIND_SIGNAL: u8 = 5;

/// A signal in an instance's inbox (stored apart from the log, in arrival order).
#[derive(Debug, Clone, PartialEq)]
pub struct Signal {
    /// The signal's name.
    pub name: String,
    /// The encoded payload.
    pub payload: Vec<u8>,
    /// When it was sent, seconds since the epoch.
    pub sent_at: f64,
}

/// Encodes an inbox signal.
pub fn encode_signal(s: &Signal) -> Vec<u8> {
    let mut w = Writer::new(KIND_SIGNAL, s.name.len() + s.payload.len() + 16);
    w.bytes(s.name.as_bytes());
    w.bytes(&s.payload);
    w.f64(s.sent_at);
    w.finish()
}

/// Decodes an inbox signal.
pub fn decode_signal(b: &[u8]) -> Result<Signal> {
    let (mut r, kind) = Reader::open(b)?;
    if kind != KIND_SIGNAL {
        return Err(corrupt(&format!("expected a signal, found record kind {kind}")));
    }
    let name = r.string()?;
    let payload = r.bytes()?.to_vec();
    let sent_at = r.f64()?;
    r.done()?;
    Ok(Signal { name, payload, sent_at })
}

/// The instance header: what was started, on which plan, and how it ended.
#[derive(Debug, Clone, PartialEq)]
pub struct Header {
    /// Workflow name.
    pub workflow: String,
    /// The workflow's version label, if any.
    pub version: Option<String>,
    /// The plan hash the instance is pinned to.
    pub plan_hash: String,
    /// The encoded workflow input.
    pub input: Vec<u8>,
    /// Creation time, seconds since the epoch.
    pub created_at: f64,
    /// The encoded output, once completed.
    pub output: Option<Vec<u8>>,
    /// The error record (JSON), once failed.
    pub error: Option<Vec<u8>>,
    /// The [outline](crate::outline) of the plan the instance was started on; `None` in headers
    /// written as format 1, before outlines were kept.
    pub outline: Option<Vec<u8>>,
}

/// How one attempt of a step ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// The step returned; the encoded output.
    Completed(Vec<u8>),
    /// The step raised; the error record (JSON) and when the next attempt is due, if any.
    Failed { error: Vec<u8>, retry_at: Option<f64> },
}

/// One finished attempt of one step at one position.
#[derive(Debug, Clone, PartialEq)]
pub struct StepRecord {
    /// The position key (stable across retries and resumes).
    pub key: String,
    /// The step's name.
    pub step: String,
    /// 1-based attempt number.
    pub attempt: u32,
    /// When the attempt started and finished, seconds since the epoch.
    pub started_at: f64,
    /// See `started_at`.
    pub finished_at: f64,
    /// Result of the attempt.
    pub outcome: Outcome,
    /// Tasks enqueued by the same commit: (position key, attempt).
    pub next: Vec<(String, u32)>,
}

/// A record of the instance's log.
#[derive(Debug, Clone, PartialEq)]
pub enum Record {
    /// A step attempt finished.
    Step(StepRecord),
    /// A condition, router or loop check was decided (the value is JSON text).
    Decision { key: String, value: String },
    /// Tasks were enqueued without a step finishing (start, resume).
    Enqueued(Vec<(String, u32)>),
}

struct Writer {
    buf: Vec<u8>,
}

impl Writer {
    fn new(kind: u8, cap: usize) -> Self {
        Writer::with_format(FORMAT_1, kind, cap)
    }
    fn with_format(format: u8, kind: u8, cap: usize) -> Self {
        let mut buf = Vec::with_capacity(cap + 16);
        buf.extend_from_slice(MAGIC);
        buf.push(format);
        buf.push(kind);
        Writer { buf }
    }
    fn varint(&mut self, v: u64) {
        varint::put(&mut self.buf, v);
    }
    fn bytes(&mut self, b: &[u8]) {
        self.varint(b.len() as u64);
        self.buf.extend_from_slice(b);
    }
    fn f64(&mut self, v: f64) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }
    fn opt_bytes(&mut self, b: Option<&[u8]>) {
        match b {
            None => self.buf.push(0),
            Some(b) => {
                self.buf.push(1);
                self.bytes(b);
            }
        }
    }
    fn opt_f64(&mut self, v: Option<f64>) {
        match v {
            None => self.buf.push(0),
            Some(v) => {
                self.buf.push(1);
                self.f64(v);
            }
        }
    }
    fn tasks(&mut self, t: &[(String, u32)]) {
        self.varint(t.len() as u64);
        for (k, a) in t {
            self.bytes(k.as_bytes());
            self.varint(*a as u64);
        }
    }
    fn finish(mut self) -> Vec<u8> {
        let crc = crc32fast::hash(&self.buf);
        self.buf.extend_from_slice(&crc.to_le_bytes());
        self.buf
    }
}

struct Reader<'a> {
    b: &'a [u8],
    pos: usize,
}

fn corrupt(what: &str) -> CoreError {
    CoreError::Corrupt(what.to_string())
}

impl<'a> Reader<'a> {
    /// Checks framing, format and checksum; returns the reader positioned on the body and the
    /// kind. Headers may be of format 1 or 2, every other kind only of format 1.
    fn open(b: &'a [u8]) -> Result<(Reader<'a>, u8)> {
        Reader::open_format(b).map(|(r, kind, _)| (r, kind))
    }
    /// [`Reader::open`], also returning the record's format.
    fn open_format(b: &'a [u8]) -> Result<(Reader<'a>, u8, u8)> {
        if b.len() < 8 {
            return Err(corrupt(&format!("record of {} bytes is truncated", b.len())));
        }
        if &b[..2] != MAGIC {
            return Err(corrupt("record does not start with the tideflow magic bytes"));
        }
        let supported = b[2] == FORMAT_1 || (b[2] == FORMAT && b[3] == KIND_HEADER);
        if !supported {
            return Err(corrupt(&format!(
                "record format {} (kind {}) is not supported by this version (which reads formats 1 to {FORMAT})",
                b[2], b[3]
            )));
        }
        let (body, tail) = b.split_at(b.len() - 4);
        let want = u32::from_le_bytes(tail.try_into().expect("4 bytes"));
        if crc32fast::hash(body) != want {
            return Err(corrupt("record checksum mismatch (truncated or corrupted)"));
        }
        Ok((Reader { b: body, pos: 4 }, b[3], b[2]))
    }
    fn byte(&mut self) -> Result<u8> {
        let v = *self.b.get(self.pos).ok_or_else(|| corrupt("record ends early"))?;
        self.pos += 1;
        Ok(v)
    }
    fn varint(&mut self) -> Result<u64> {
        varint::read(self.b, &mut self.pos).map_err(|e| match e {
            VarintError::EndsEarly => corrupt("record ends early"),
            VarintError::Overflows => corrupt("varint overflows"),
        })
    }
    fn bytes(&mut self) -> Result<&'a [u8]> {
        let n = self.varint()? as usize;
        let end = self
            .pos
            .checked_add(n)
            .filter(|e| *e <= self.b.len())
            .ok_or_else(|| corrupt("field runs past the end of the record"))?;
        let s = &self.b[self.pos..end];
        self.pos = end;
        Ok(s)
    }
    fn string(&mut self) -> Result<String> {
        String::from_utf8(self.bytes()?.to_vec()).map_err(|_| corrupt("text field is not UTF-8"))
    }
    fn f64(&mut self) -> Result<f64> {
        let end = self.pos + 8;
        if end > self.b.len() {
            return Err(corrupt("record ends early"));
        }
        let v = f64::from_le_bytes(self.b[self.pos..end].try_into().expect("8 bytes"));
        self.pos = end;
        Ok(v)
    }
    fn flag(&mut self) -> Result<bool> {
        match self.byte()? {
            0 => Ok(false),
            1 => Ok(true),
            x => Err(corrupt(&format!("bad option flag {x}"))),
        }
    }
    fn opt_bytes(&mut self) -> Result<Option<Vec<u8>>> {
        Ok(if self.flag()? { Some(self.bytes()?.to_vec()) } else { None })
    }
    fn opt_f64(&mut self) -> Result<Option<f64>> {
        Ok(if self.flag()? { Some(self.f64()?) } else { None })
    }
    fn tasks(&mut self) -> Result<Vec<(String, u32)>> {
        let n = self.varint()? as usize;
        if n > self.b.len() {
            return Err(corrupt("task count exceeds the record"));
        }
        let mut out = Vec::with_capacity(n);
        for _ in 0..n {
            let k = self.string()?;
            let a = u32::try_from(self.varint()?).map_err(|_| corrupt("attempt out of range"))?;
            out.push((k, a));
        }
        Ok(out)
    }
    fn done(self) -> Result<()> {
        if self.pos == self.b.len() {
            Ok(())
        } else {
            Err(corrupt("trailing bytes after the record body"))
        }
    }
}

/// Encodes an instance header.
pub fn encode_header(h: &Header) -> Vec<u8> {
    let extra = h.output.as_ref().map_or(0, Vec::len) + h.outline.as_ref().map_or(0, Vec::len);
    let mut w = Writer::with_format(FORMAT, KIND_HEADER, h.input.len() + extra + 64);
    w.bytes(h.workflow.as_bytes());
    w.opt_bytes(h.version.as_deref().map(str::as_bytes));
    w.bytes(h.plan_hash.as_bytes());
    w.bytes(&h.input);
    w.f64(h.created_at);
    w.opt_bytes(h.output.as_deref());
    w.opt_bytes(h.error.as_deref());
    w.opt_bytes(h.outline.as_deref()); // format 2
    w.finish()
}

/// Decodes an instance header.
pub fn decode_header(b: &[u8]) -> Result<Header> {
    let (mut r, kind, format) = Reader::open_format(b)?;
    if kind != KIND_HEADER {
        return Err(corrupt(&format!("expected an instance header, found record kind {kind}")));
    }
    let workflow = r.string()?;
    let version =
        r.opt_bytes()?.map(|v| String::from_utf8(v).map_err(|_| corrupt("version is not UTF-8"))).transpose()?;
    let plan_hash = r.string()?;
    let input = r.bytes()?.to_vec();
    let created_at = r.f64()?;
    let output = r.opt_bytes()?;
    let error = r.opt_bytes()?;
    let outline = if format >= 2 { r.opt_bytes()? } else { None };
    r.done()?;
    Ok(Header { workflow, version, plan_hash, input, created_at, output, error, outline })
}

/// Encodes one log record.
pub fn encode_record(rec: &Record) -> Vec<u8> {
    match rec {
        Record::Step(s) => {
            let payload = match &s.outcome {
                Outcome::Completed(p) => p.len(),
                Outcome::Failed { error, .. } => error.len(),
            };
            let mut w = Writer::new(KIND_STEP, payload + s.key.len() + s.step.len() + 40);
            w.bytes(s.key.as_bytes());
            w.bytes(s.step.as_bytes());
            w.varint(s.attempt as u64);
            w.f64(s.started_at);
            w.f64(s.finished_at);
            match &s.outcome {
                Outcome::Completed(p) => {
                    w.buf.push(0);
                    w.bytes(p);
                }
                Outcome::Failed { error, retry_at } => {
                    w.buf.push(1);
                    w.bytes(error);
                    w.opt_f64(*retry_at);
                }
            }
            w.tasks(&s.next);
            w.finish()
        }
        Record::Decision { key, value } => {
            let mut w = Writer::new(KIND_DECISION, key.len() + value.len() + 4);
            w.bytes(key.as_bytes());
            w.bytes(value.as_bytes());
            w.finish()
        }
        Record::Enqueued(tasks) => {
            let mut w = Writer::new(KIND_ENQUEUED, tasks.len() * 8);
            w.tasks(tasks);
            w.finish()
        }
    }
}

/// Decodes one log record.
pub fn decode_record(b: &[u8]) -> Result<Record> {
    let (mut r, kind) = Reader::open(b)?;
    let rec = match kind {
        KIND_STEP => {
            let key = r.string()?;
            let step = r.string()?;
            let attempt = u32::try_from(r.varint()?).map_err(|_| corrupt("attempt out of range"))?;
            let started_at = r.f64()?;
            let finished_at = r.f64()?;
            let outcome = match r.byte()? {
                0 => Outcome::Completed(r.bytes()?.to_vec()),
                1 => {
                    let error = r.bytes()?.to_vec();
                    let retry_at = r.opt_f64()?;
                    Outcome::Failed { error, retry_at }
                }
                x => return Err(corrupt(&format!("unknown step outcome {x}"))),
            };
            let next = r.tasks()?;
            Record::Step(StepRecord { key, step, attempt, started_at, finished_at, outcome, next })
        }
        KIND_DECISION => {
            let key = r.string()?;
            let value = r.string()?;
            Record::Decision { key, value }
        }
        KIND_ENQUEUED => Record::Enqueued(r.tasks()?),
        KIND_HEADER => return Err(corrupt("found an instance header where a log record was expected")),
        KIND_SIGNAL => return Err(corrupt("found a signal where a log record was expected")),
        k => return Err(corrupt(&format!("unknown record kind {k}"))),
    };
    r.done()?;
    Ok(rec)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn step(key: &str) -> Record {
        Record::Step(StepRecord {
            key: key.into(),
            step: "reserve".into(),
            attempt: 2,
            started_at: 1.5,
            finished_at: 2.25,
            outcome: Outcome::Completed(b"{\"a\":1}".to_vec()),
            next: vec![("1".into(), 1)],
        })
    }

    #[test]
    fn header_round_trip() {
        let h = Header {
            workflow: "checkout".into(),
            version: Some("2".into()),
            plan_hash: "abcd".into(),
            input: b"[1,2]".to_vec(),
            created_at: 10.0,
            output: None,
            error: Some(b"{}".to_vec()),
            outline: Some(vec![1, 0, 2, 0]),
        };
        assert_eq!(decode_header(&encode_header(&h)).unwrap(), h);
        let without = Header { outline: None, ..h };
        assert_eq!(decode_header(&encode_header(&without)).unwrap(), without);
    }

    #[test]
    fn every_truncation_is_detected() {
        let b = encode_record(&step("0.1"));
        for n in 0..b.len() {
            assert!(matches!(decode_record(&b[..n]), Err(CoreError::Corrupt(_))), "prefix {n}");
        }
    }

    #[test]
    fn every_flipped_bit_is_detected() {
        let b = encode_record(&step("3"));
        for i in 0..b.len() {
            for bit in 0..8 {
                let mut c = b.clone();
                c[i] ^= 1 << bit;
                assert!(decode_record(&c).is_err(), "byte {i} bit {bit}");
            }
        }
    }

    #[test]
    fn header_is_not_a_record() {
        let h = Header {
            workflow: "w".into(),
            version: None,
            plan_hash: "h".into(),
            input: vec![],
            created_at: 0.0,
            output: None,
            error: None,
            outline: None,
        };
        assert!(decode_record(&encode_header(&h)).is_err());
        assert!(decode_header(&encode_record(&step("0"))).is_err());
    }

    proptest! {
        #[test]
        fn records_round_trip(key in ".{0,12}", name in ".{0,12}", attempt in 1u32..1000,
                              payload in proptest::collection::vec(any::<u8>(), 0..64),
                              failed in any::<bool>(), retry in proptest::option::of(0.0f64..1e9),
                              next in proptest::collection::vec((".{0,6}", 1u32..9), 0..4)) {
            let outcome = if failed { Outcome::Failed { error: payload.clone(), retry_at: retry } } else { Outcome::Completed(payload.clone()) };
            let rec = Record::Step(StepRecord { key, step: name, attempt, started_at: 1.0, finished_at: 2.0, outcome, next });
            prop_assert_eq!(decode_record(&encode_record(&rec)).unwrap(), rec);
            let d = Record::Decision { key: "k?".into(), value: "true".into() };
            prop_assert_eq!(decode_record(&encode_record(&d)).unwrap(), d);
        }
    }
}
