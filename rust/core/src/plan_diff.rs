//! Where two plans of one workflow differ: what a `VersionMismatch` tells the user.
//!
//! Both sides are [outlines](crate::outline) (the stored one comes from the instance header), so
//! the answer names the first position where they differ and what each plan has there, for
//! example `at position 2: branch condition "is_big" (stored) vs branch condition "is_large"
//! (registered)`. Two outlines differ here exactly when their plan hashes differ.

use std::fmt;

use crate::outline::{self, NextShape, Shape, StateShape};
use crate::plan::Plan;

/// The first place where two outlines differ, with what each has there.
#[derive(Debug, Clone, PartialEq)]
pub struct Difference {
    /// The position, in the notation of position keys (`"2.t"`, `"3.p1"`; `m*`, `i*` and
    /// `<state>#*` stand for every map item, loop iteration and state visit; empty is the root).
    pub at: String,
    /// What the stored plan has there ("nothing" when it has no node there).
    pub stored: String,
    /// What the registered plan has there.
    pub registered: String,
}

impl fmt::Display for Difference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.at.is_empty() {
            write!(f, "at the root")?;
        } else {
            write!(f, "at position {}", self.at)?;
        }
        write!(f, ": {} (stored) vs {} (registered)", self.stored, self.registered)
    }
}

/// The first difference between the stored outline and the registered one, in pre-order (a node's
/// own kind and names before its children, children in order); `None` when they are equal.
pub fn diff(stored: &Shape, registered: &Shape) -> Option<Difference> {
    node("", Some(stored), Some(registered))
}

/// One sentence on how a registered plan differs from the plan an instance was started on, given
/// the outline bytes kept in the instance's header (`None`: a header written before outlines).
pub fn explain(stored: Option<&[u8]>, registered: &Plan) -> String {
    let Some(bytes) = stored else {
        return "the instance was started by an older tideflow build, which kept no outline of its plan \
                (and computed plan hashes another way), so the plans cannot be compared"
            .into();
    };
    let (theirs, ours) = match (outline::decode(bytes), outline::decode(&registered.outline)) {
        (Ok(t), Ok(o)) => (t, o),
        (Err(e), _) | (_, Err(e)) => return format!("the outlines cannot be compared ({e})"),
    };
    match diff(&theirs, &ours) {
        Some(d) => format!("they differ {d}"),
        None => "their outlines are the same (the stored hash was computed another way)".into(),
    }
}

fn key(parent: &str, seg: &str) -> String {
    if parent.is_empty() {
        seg.to_string()
    } else {
        format!("{parent}.{seg}")
    }
}

fn missing(at: &str, s: Option<String>, r: Option<String>) -> Option<Difference> {
    let nothing = || "nothing".to_string();
    Some(Difference { at: at.to_string(), stored: s.unwrap_or_else(nothing), registered: r.unwrap_or_else(nothing) })
}

fn node(at: &str, s: Option<&Shape>, r: Option<&Shape>) -> Option<Difference> {
    let (s, r) = match (s, r) {
        (None, None) => return None,
        (Some(s), Some(r)) => (s, r),
        (s, r) => return missing(at, s.map(describe), r.map(describe)),
    };
    let (ds, dr) = (describe(s), describe(r));
    if ds != dr {
        return Some(Difference { at: at.to_string(), stored: ds, registered: dr });
    }
    match (s, r) {
        (Shape::Seq(a), Shape::Seq(b)) => list(at, a, b, |i| i.to_string()),
        (Shape::Parallel(a), Shape::Parallel(b)) => list(at, a, b, |i| format!("p{i}")),
        (Shape::Map { body: a, .. }, Shape::Map { body: b, .. }) => node(&key(at, "m*"), Some(a), Some(b)),
        (Shape::Loop { body: a, .. }, Shape::Loop { body: b, .. }) => node(&key(at, "i*"), Some(a), Some(b)),
        (Shape::Sub { body: a, .. }, Shape::Sub { body: b, .. }) => node(at, Some(a), Some(b)),
        (Shape::Branch { then: t1, otherwise: o1, .. }, Shape::Branch { then: t2, otherwise: o2, .. }) => {
            node(&key(at, "t"), Some(t1), Some(t2)).or_else(|| node(&key(at, "f"), o1.as_deref(), o2.as_deref()))
        }
        (Shape::Wait { on_timeout: a, .. }, Shape::Wait { on_timeout: b, .. }) => {
            node(&key(at, "timeout"), a.as_deref(), b.as_deref())
        }
        (Shape::States { states: a, .. }, Shape::States { states: b, .. }) => states(at, a, b),
        _ => None, // a step or a sleep is described in full
    }
}

fn list(at: &str, a: &[Shape], b: &[Shape], seg: impl Fn(usize) -> String) -> Option<Difference> {
    (0..a.len().max(b.len())).find_map(|i| node(&key(at, &seg(i)), a.get(i), b.get(i)))
}

fn states(at: &str, a: &[StateShape], b: &[StateShape]) -> Option<Difference> {
    (0..a.len().max(b.len())).find_map(|i| {
        let (s, r) = (a.get(i), b.get(i));
        let name = s.or(r).map(|x| x.name.as_str()).unwrap_or_default();
        let pos = key(at, &format!("{name}#*"));
        let (ds, dr) = (s.map(describe_state), r.map(describe_state));
        match (s, r) {
            (Some(s), Some(r)) if ds == dr => node(&pos, Some(&s.body), Some(&r.body)),
            _ => missing(&pos, ds, dr),
        }
    })
}

/// A node's kind and own names, as a message shows them (children are compared on their own).
fn describe(s: &Shape) -> String {
    match s {
        Shape::Step(name) => format!("step {name:?}"),
        Shape::Seq(_) => "a sequence".into(),
        Shape::Parallel(_) => "a parallel block".into(),
        Shape::Map { concurrency: None, .. } => "a map".into(),
        Shape::Map { concurrency: Some(c), .. } => format!("a map of at most {c} at once"),
        Shape::Branch { cond, .. } => format!("branch condition {cond:?}"),
        Shape::Loop { until, max_iterations, .. } => {
            format!("loop until {until:?} (at most {max_iterations} iterations)")
        }
        Shape::States { start, .. } => format!("a state machine starting at {start:?}"),
        Shape::Sub { workflow, .. } => format!("sub-workflow {workflow:?}"),
        Shape::Wait { signal, .. } => format!("wait for signal {signal:?}"),
        Shape::Sleep { seconds: Some(s), .. } => format!("sleep of {s}s"),
        Shape::Sleep { until, .. } => format!("sleep until {}", until.unwrap_or(0.0)),
    }
}

fn describe_state(s: &StateShape) -> String {
    let name = &s.name;
    match &s.next {
        NextShape::End => format!("state {name:?} (final)"),
        NextShape::Goto(t) => format!("state {name:?} going to {t:?}"),
        NextShape::Labels(table) => {
            let labels: Vec<String> = table.iter().map(|(l, t)| format!("{l:?} -> {t:?}")).collect();
            format!("state {name:?} going by label ({})", labels.join(", "))
        }
        NextShape::Router { router, targets: None } => format!("state {name:?} going where router {router:?} says"),
        NextShape::Router { router, targets: Some(ts) } => {
            let ts: Vec<String> = ts.iter().map(|t| format!("{t:?}")).collect();
            format!("state {name:?} going where router {router:?} says (one of {})", ts.join(", "))
        }
    }
}

#[cfg(test)]
#[path = "plan_diff_tests.rs"]
mod tests;
