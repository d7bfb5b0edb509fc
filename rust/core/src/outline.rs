//! The outline of a plan: its shape with every name in place (steps, conditions, routers, states,
//! labels, signals, sub-workflows), without what only tunes it (retry policies, timeouts).
//!
//! The outline is what identifies a plan. The plan hash is SHA-256 over the workflow name and the
//! outline's canonical bytes, so two plans have the same hash exactly when their outlines are
//! equal; nothing about how the host loaded its code (a module name, an address) is in it. Every
//! instance header keeps the outline bytes of the plan it started on, so that a process which
//! registered another plan of the same workflow can say where the two differ
//! ([`crate::plan_diff`]).
//!
//! Bytes: a format byte, a table of names (varint count, varint-prefixed UTF-8 strings, in order of
//! first use), then the nodes in pre-order, each a kind byte and its fields, names as indexes into
//! the table. A 10,000-step chain of one step is about 20 KB.

use std::collections::HashMap;

use sha2::{Digest, Sha256};

use crate::error::{CoreError, Result};
use crate::plan::{Next, Node, NodeId, Plan};
use crate::varint::{self, VarintError};

/// The outline byte format this build writes and reads.
const FORMAT: u8 = 1;
/// Nesting deeper than this in stored bytes is treated as corrupt (it bounds the decoder's stack).
const MAX_DEPTH: usize = 2048;

const STEP: u8 = 1;
const SEQ: u8 = 2;
const PARALLEL: u8 = 3;
const MAP: u8 = 4;
const BRANCH: u8 = 5;
const LOOP: u8 = 6;
const STATES: u8 = 7;
const SUB: u8 = 8;
const WAIT: u8 = 9;
const SLEEP: u8 = 10;

const END: u8 = 0;
const GOTO: u8 = 1;
const LABELS: u8 = 2;
const ROUTER: u8 = 3;

/// The shape of one node with its names, as decoded from outline bytes.
#[derive(Debug, Clone, PartialEq)]
pub enum Shape {
    /// A step, by name.
    Step(String),
    /// Children in order.
    Seq(Vec<Shape>),
    /// Static fan-out.
    Parallel(Vec<Shape>),
    /// Dynamic fan-out; `None` is unbounded concurrency.
    Map { concurrency: Option<u32>, body: Box<Shape> },
    /// A two-way choice by the condition named `cond`.
    Branch { cond: String, then: Box<Shape>, otherwise: Option<Box<Shape>> },
    /// A bounded loop until the function named `until` holds.
    Loop { until: String, max_iterations: u32, body: Box<Shape> },
    /// An explicit state machine.
    States { start: String, states: Vec<StateShape> },
    /// An inlined sub-workflow.
    Sub { workflow: String, body: Box<Shape> },
    /// A wait for signal `signal`, with the path taken on a timeout.
    Wait { signal: String, on_timeout: Option<Box<Shape>> },
    /// A durable sleep for a duration or until a moment.
    Sleep { seconds: Option<f64>, until: Option<f64> },
}

/// One state of a [`Shape::States`].
#[derive(Debug, Clone, PartialEq)]
pub struct StateShape {
    /// The state's name.
    pub name: String,
    /// Where it goes next.
    pub next: NextShape,
    /// What runs in it.
    pub body: Shape,
}

/// Where a state goes next, with state names instead of indexes.
#[derive(Debug, Clone, PartialEq)]
pub enum NextShape {
    /// The state machine ends.
    End,
    /// Always this state.
    Goto(String),
    /// The output picks the state by label.
    Labels(Vec<(String, String)>),
    /// The function named `router` picks it (among `targets`, when declared).
    Router { router: String, targets: Option<Vec<String>> },
}

/// The canonical outline bytes of `plan` (what its hash is computed over).
pub fn encode(plan: &Plan) -> Vec<u8> {
    let mut e = Encoder { plan, names: HashMap::new(), table: Vec::new(), body: Vec::new() };
    e.node(plan.root);
    let mut out = Vec::with_capacity(e.body.len() + 16 * e.table.len() + 8);
    out.push(FORMAT);
    varint::put(&mut out, e.table.len() as u64);
    for name in &e.table {
        varint::put(&mut out, name.len() as u64);
        out.extend_from_slice(name.as_bytes());
    }
    out.extend_from_slice(&e.body);
    out
}

/// The plan hash (32 hex digits) of workflow `name` with these outline bytes.
pub fn hash(name: &str, outline: &[u8]) -> String {
    let mut h = Sha256::new();
    h.update(b"tideflow plan outline\n");
    h.update((name.len() as u64).to_le_bytes());
    h.update(name.as_bytes());
    h.update(outline);
    h.finalize().iter().take(16).map(|b| format!("{b:02x}")).collect()
}

struct Encoder<'a> {
    plan: &'a Plan,
    names: HashMap<&'a str, u64>,
    table: Vec<&'a str>,
    body: Vec<u8>,
}

impl<'a> Encoder<'a> {
    fn name(&mut self, s: &'a str) {
        let next = self.table.len() as u64;
        let i = *self.names.entry(s).or_insert(next);
        if i == next {
            self.table.push(s);
        }
        varint::put(&mut self.body, i);
    }

    fn kind(&mut self, k: u8) {
        self.body.push(k);
    }

    fn flag(&mut self, b: bool) {
        self.body.push(u8::from(b));
    }

    fn node(&mut self, id: NodeId) {
        let plan = self.plan;
        match plan.node(id) {
            Node::Step { step } => {
                self.kind(STEP);
                self.name(&plan.steps[*step as usize].name);
            }
            Node::Seq { children } | Node::Parallel { children } => {
                let k = if matches!(plan.node(id), Node::Seq { .. }) { SEQ } else { PARALLEL };
                self.kind(k);
                varint::put(&mut self.body, children.len() as u64);
                children.iter().for_each(|c| self.node(*c));
            }
            Node::Map { body, concurrency } => {
                self.kind(MAP);
                // validated >= 1, so 0 is free to stand for "unbounded" (stored as u32::MAX)
                varint::put(&mut self.body, if *concurrency == u32::MAX { 0 } else { u64::from(*concurrency) });
                self.node(*body);
            }
            Node::Branch { cond, then, otherwise } => {
                self.kind(BRANCH);
                self.name(&plan.fns[*cond as usize]);
                self.flag(otherwise.is_some());
                self.node(*then);
                if let Some(o) = otherwise {
                    self.node(*o);
                }
            }
            Node::Loop { body, until, max_iterations } => {
                self.kind(LOOP);
                self.name(&plan.fns[*until as usize]);
                varint::put(&mut self.body, u64::from(*max_iterations));
                self.node(*body);
            }
            Node::States { start, states } => {
                self.kind(STATES);
                self.name(&states[*start as usize].name);
                varint::put(&mut self.body, states.len() as u64);
                for s in states {
                    self.name(&s.name);
                    match &s.next {
                        Next::End => self.body.push(END),
                        Next::Goto(t) => {
                            self.body.push(GOTO);
                            self.name(&states[*t as usize].name);
                        }
                        Next::Labels(table) => {
                            self.body.push(LABELS);
                            varint::put(&mut self.body, table.len() as u64);
                            for (label, t) in table {
                                self.name(label);
                                self.name(&states[*t as usize].name);
                            }
                        }
                        Next::Router { router, targets } => {
                            self.body.push(ROUTER);
                            self.name(&plan.fns[*router as usize]);
                            self.flag(targets.is_some());
                            if let Some(ts) = targets {
                                varint::put(&mut self.body, ts.len() as u64);
                                ts.iter().for_each(|t| self.name(&states[*t as usize].name));
                            }
                        }
                    }
                    self.node(s.body);
                }
            }
            Node::Sub { workflow, body } => {
                self.kind(SUB);
                self.name(workflow);
                self.node(*body);
            }
            Node::WaitSignal { name, on_timeout, .. } => {
                self.kind(WAIT);
                self.name(name);
                self.flag(on_timeout.is_some());
                if let Some(o) = on_timeout {
                    self.node(*o);
                }
            }
            Node::Sleep { seconds, until } => {
                self.kind(SLEEP);
                let (tag, v) = match (seconds, until) {
                    (Some(s), _) => (0, *s),
                    (None, u) => (1, u.unwrap_or(0.0)),
                };
                self.body.push(tag);
                self.body.extend_from_slice(&v.to_le_bytes());
            }
        }
    }
}

fn corrupt(what: &str) -> CoreError {
    CoreError::Corrupt(format!("plan outline: {what}"))
}

/// Decodes outline bytes (as kept in an instance header) into the shape of the root node.
pub fn decode(b: &[u8]) -> Result<Shape> {
    let mut d = Decoder { b, pos: 0, names: Vec::new() };
    match d.byte()? {
        FORMAT => {}
        f => return Err(corrupt(&format!("format {f} is not supported (this build reads format {FORMAT})"))),
    }
    let n = d.varint()? as usize;
    if n > b.len() {
        return Err(corrupt("name count exceeds the outline"));
    }
    for _ in 0..n {
        let len = d.varint()? as usize;
        let raw = d.take(len)?;
        d.names.push(String::from_utf8(raw.to_vec()).map_err(|_| corrupt("a name is not UTF-8"))?);
    }
    let root = d.node(0)?;
    if d.pos != b.len() {
        return Err(corrupt("trailing bytes"));
    }
    Ok(root)
}

struct Decoder<'a> {
    b: &'a [u8],
    pos: usize,
    names: Vec<String>,
}

impl<'a> Decoder<'a> {
    fn byte(&mut self) -> Result<u8> {
        let v = *self.b.get(self.pos).ok_or_else(|| corrupt("ends early"))?;
        self.pos += 1;
        Ok(v)
    }
    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        let end = self.pos.checked_add(n).filter(|e| *e <= self.b.len()).ok_or_else(|| corrupt("ends early"))?;
        let s = &self.b[self.pos..end];
        self.pos = end;
        Ok(s)
    }
    fn varint(&mut self) -> Result<u64> {
        varint::read(self.b, &mut self.pos).map_err(|e| match e {
            VarintError::EndsEarly => corrupt("ends early"),
            VarintError::Overflows => corrupt("varint overflows"),
        })
    }
    fn u32(&mut self) -> Result<u32> {
        u32::try_from(self.varint()?).map_err(|_| corrupt("number out of range"))
    }
    fn name(&mut self) -> Result<String> {
        let i = self.varint()? as usize;
        self.names.get(i).cloned().ok_or_else(|| corrupt("name index out of range"))
    }
    fn flag(&mut self) -> Result<bool> {
        match self.byte()? {
            0 => Ok(false),
            1 => Ok(true),
            x => Err(corrupt(&format!("bad flag {x}"))),
        }
    }
    fn count(&mut self) -> Result<usize> {
        let n = self.varint()? as usize;
        if n > self.b.len() - self.pos {
            return Err(corrupt("count exceeds the outline"));
        }
        Ok(n)
    }
    fn boxed(&mut self, depth: usize) -> Result<Box<Shape>> {
        self.node(depth + 1).map(Box::new)
    }
    fn maybe(&mut self, present: bool, depth: usize) -> Result<Option<Box<Shape>>> {
        if present {
            self.boxed(depth).map(Some)
        } else {
            Ok(None)
        }
    }

    fn node(&mut self, depth: usize) -> Result<Shape> {
        if depth > MAX_DEPTH {
            return Err(corrupt("nested too deeply"));
        }
        Ok(match self.byte()? {
            STEP => Shape::Step(self.name()?),
            k @ (SEQ | PARALLEL) => {
                let n = self.count()?;
                let children = (0..n).map(|_| self.node(depth + 1)).collect::<Result<Vec<_>>>()?;
                if k == SEQ {
                    Shape::Seq(children)
                } else {
                    Shape::Parallel(children)
                }
            }
            MAP => {
                let c = self.u32()?;
                Shape::Map { concurrency: (c != 0).then_some(c), body: self.boxed(depth)? }
            }
            BRANCH => {
                let cond = self.name()?;
                let has_otherwise = self.flag()?;
                let then = self.boxed(depth)?;
                Shape::Branch { cond, then, otherwise: self.maybe(has_otherwise, depth)? }
            }
            LOOP => {
                let until = self.name()?;
                let max_iterations = self.u32()?;
                Shape::Loop { until, max_iterations, body: self.boxed(depth)? }
            }
            STATES => {
                let start = self.name()?;
                let n = self.count()?;
                let mut states = Vec::with_capacity(n);
                for _ in 0..n {
                    let name = self.name()?;
                    let next = match self.byte()? {
                        END => NextShape::End,
                        GOTO => NextShape::Goto(self.name()?),
                        LABELS => {
                            let n = self.count()?;
                            NextShape::Labels((0..n).map(|_| Ok((self.name()?, self.name()?))).collect::<Result<_>>()?)
                        }
                        ROUTER => {
                            let router = self.name()?;
                            let targets = if self.flag()? {
                                let n = self.count()?;
                                Some((0..n).map(|_| self.name()).collect::<Result<_>>()?)
                            } else {
                                None
                            };
                            NextShape::Router { router, targets }
                        }
                        x => return Err(corrupt(&format!("unknown transition kind {x}"))),
                    };
                    states.push(StateShape { name, next, body: self.node(depth + 1)? });
                }
                Shape::States { start, states }
            }
            SUB => Shape::Sub { workflow: self.name()?, body: self.boxed(depth)? },
            WAIT => {
                let signal = self.name()?;
                let has_path = self.flag()?;
                Shape::Wait { signal, on_timeout: self.maybe(has_path, depth)? }
            }
            SLEEP => {
                let tag = self.byte()?;
                let v = f64::from_le_bytes(self.take(8)?.try_into().expect("8 bytes"));
                match tag {
                    0 => Shape::Sleep { seconds: Some(v), until: None },
                    1 => Shape::Sleep { seconds: None, until: Some(v) },
                    x => return Err(corrupt(&format!("unknown sleep kind {x}"))),
                }
            }
            k => return Err(corrupt(&format!("unknown node kind {k}"))),
        })
    }
}
