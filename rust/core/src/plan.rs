//! The plan IR: a workflow definition compiled to a validated graph of nodes with a content hash.
//!
//! A plan is data. It names steps and functions (conditions, routers) by index into tables the host
//! owns; it never holds code. It is built from a JSON spec (what the Python builder emits), checked
//! before anything runs, hashed for versioning, and drawn as Mermaid.

use std::collections::{HashMap, HashSet};

use serde::{Deserialize, Serialize};

use crate::error::{CoreError, Result};
use crate::retry::RetryPolicy;

/// Index of a node in [`Plan::nodes`].
pub type NodeId = u32;

/// A step as the plan knows it: a name and its options (the callable stays with the host).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepSpec {
    /// The step's name, shown in history and errors.
    pub name: String,
    /// Retry policy; absent means a single attempt.
    #[serde(default)]
    pub retry: Option<RetryPolicy>,
    /// Per-attempt timeout in seconds (enforced by the drivers).
    #[serde(default)]
    pub timeout: Option<f64>,
}

/// Where a state goes after its body completes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NextSpec {
    /// Always the named state.
    Goto(String),
    /// The state's output (a label) picks the next state from this table.
    Labels(Vec<(String, String)>),
    /// A router function of the output returns the next state's name.
    Router { router: u32, targets: Option<Vec<String>> },
}

/// One named state of an explicit state machine.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StateSpec {
    /// The state's unique name.
    pub name: String,
    /// What runs in this state.
    pub body: NodeSpec,
    /// Where to go afterwards; `None` ends the state machine.
    #[serde(default)]
    pub next: Option<NextSpec>,
}

/// The serialised form of a node, as the Python builder emits it and as `Plan::to_json` exports it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum NodeSpec {
    /// Run one step.
    Step { step: u32 },
    /// Run children one after another, each receiving the previous output.
    Seq { children: Vec<NodeSpec> },
    /// Run children on the same input; the output is the tuple of their outputs.
    Parallel { children: Vec<NodeSpec> },
    /// Run the body once per item of the input list; the output is the list of results, in order.
    Map { body: Box<NodeSpec>, concurrency: Option<u32> },
    /// A condition of the input picks `then` or `otherwise` (absent: pass the input through).
    Branch { cond: u32, then: Box<NodeSpec>, otherwise: Option<Box<NodeSpec>> },
    /// Repeat the body, feeding each output to the next iteration, until `until` holds.
    Loop { body: Box<NodeSpec>, until: u32, max_iterations: Option<u32> },
    /// An explicit state machine; cycles allowed.
    States { start: String, states: Vec<StateSpec> },
    /// A sub-workflow inlined at this position (named for drawing and history).
    Sub { workflow: String, body: Box<NodeSpec> },
    /// Suspend until signal `name` arrives; its payload (decoded by the host's wait `wait`) is the
    /// output. After `timeout` seconds, `on_timeout` runs on the input instead (absent: the
    /// instance fails with a timeout).
    WaitSignal { name: String, wait: u32, timeout: Option<f64>, on_timeout: Option<Box<NodeSpec>> },
    /// Suspend for `seconds`, or until the absolute time `until`; the input passes through.
    Sleep { seconds: Option<f64>, until: Option<f64> },
}

/// The whole definition as emitted by a builder: names, tables and the root node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlanSpec {
    /// The workflow's name.
    pub name: String,
    /// Optional user-facing version label.
    #[serde(default)]
    pub version: Option<String>,
    /// Steps referenced by index from `Step` nodes.
    pub steps: Vec<StepSpec>,
    /// Names of functions (conditions, routers) referenced by index.
    #[serde(default)]
    pub fns: Vec<String>,
    /// The root node.
    pub root: NodeSpec,
    /// Whole-workflow timeout in seconds.
    #[serde(default)]
    pub timeout: Option<f64>,
    /// The step run when an instance is cancelled (its input is the reason).
    #[serde(default)]
    pub compensation: Option<u32>,
}

/// Where a state goes next, resolved to state indices.
#[derive(Debug, Clone, PartialEq)]
pub enum Next {
    /// The state machine ends with this state's output.
    End,
    /// Always this state.
    Goto(u32),
    /// Label (from the output) to state index.
    Labels(Vec<(String, u32)>),
    /// A router function; `targets` (if declared) bounds where it may go.
    Router { router: u32, targets: Option<Vec<u32>> },
}

/// A resolved state.
#[derive(Debug, Clone, PartialEq)]
pub struct State {
    /// Unique name.
    pub name: String,
    /// The node run in this state.
    pub body: NodeId,
    /// The transition.
    pub next: Next,
}

/// A node of the compiled plan; children are referenced by [`NodeId`].
#[derive(Debug, Clone, PartialEq)]
pub enum Node {
    /// Run step `step`.
    Step { step: u32 },
    /// Children in order.
    Seq { children: Vec<NodeId> },
    /// Static fan-out, fan-in as a tuple.
    Parallel { children: Vec<NodeId> },
    /// Dynamic fan-out over a list, at most `concurrency` at once.
    Map { body: NodeId, concurrency: u32 },
    /// Two-way choice on a condition.
    Branch { cond: u32, then: NodeId, otherwise: Option<NodeId> },
    /// Bounded loop.
    Loop { body: NodeId, until: u32, max_iterations: u32 },
    /// Explicit state machine.
    States { start: u32, states: Vec<State> },
    /// Inlined sub-workflow.
    Sub { workflow: String, body: NodeId },
    /// Wait for a signal.
    WaitSignal { name: String, wait: u32, timeout: Option<f64>, on_timeout: Option<NodeId> },
    /// Durable sleep.
    Sleep { seconds: Option<f64>, until: Option<f64> },
}

/// A validated, hashed plan.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The workflow's name.
    pub name: String,
    /// Optional version label.
    pub version: Option<String>,
    /// Step table.
    pub steps: Vec<StepSpec>,
    /// Function-name table.
    pub fns: Vec<String>,
    /// Node arena.
    pub nodes: Vec<Node>,
    /// The root node.
    pub root: NodeId,
    /// Whole-workflow timeout in seconds.
    pub timeout: Option<f64>,
    /// The compensation step run on cancel, if any.
    pub compensation: Option<u32>,
    /// Content hash of the outline (hex), pinned by every instance started on this plan.
    pub hash: String,
    /// The plan's [outline](crate::outline) bytes: what the hash is computed over, and what every
    /// instance header keeps so that a changed plan can be explained.
    pub outline: Vec<u8>,
    spec: PlanSpec,
}

impl Plan {
    /// Parses a JSON spec, validates it and computes its hash.
    pub fn from_json(json: &str) -> Result<Plan> {
        let spec: PlanSpec =
            serde_json::from_str(json).map_err(|e| CoreError::Definition(format!("malformed plan spec: {e}")))?;
        Plan::from_spec(spec)
    }

    /// Validates a spec and compiles it into the node arena.
    pub fn from_spec(spec: PlanSpec) -> Result<Plan> {
        if spec.name.is_empty() {
            return Err(CoreError::Definition("a workflow needs a non-empty name".into()));
        }
        for s in &spec.steps {
            if let Some(r) = &s.retry {
                r.validate().map_err(|m| {
                    CoreError::Definition(format!("step {:?} has an invalid retry policy: {m}", s.name))
                })?;
            }
            check_duration(s.timeout, &format!("timeout of step {:?}", s.name))?;
        }
        check_duration(spec.timeout, &format!("timeout of workflow {:?}", spec.name))?;
        if let Some(c) = spec.compensation {
            if (c as usize) >= spec.steps.len() {
                return Err(CoreError::Definition(format!("the compensation step #{c} is not in the plan")));
            }
        }
        let mut b = Builder { spec: &spec, nodes: Vec::new() };
        let root = b.node(&spec.root, &spec.name)?;
        let nodes = b.nodes;
        let mut plan = Plan {
            name: spec.name.clone(),
            version: spec.version.clone(),
            steps: spec.steps.clone(),
            fns: spec.fns.clone(),
            nodes,
            root,
            timeout: spec.timeout,
            compensation: spec.compensation,
            hash: String::new(),
            outline: Vec::new(),
            spec,
        };
        plan.outline = crate::outline::encode(&plan);
        plan.hash = crate::outline::hash(&plan.name, &plan.outline);
        Ok(plan)
    }

    /// The node with this id.
    #[inline]
    pub fn node(&self, id: NodeId) -> &Node {
        &self.nodes[id as usize]
    }

    /// The spec as JSON (for export and inspection).
    pub fn to_json(&self) -> String {
        serde_json::to_string(&self.spec).expect("a plan spec always serialises")
    }

    /// The retry policy of step `step` (a single attempt when none was given).
    pub fn retry(&self, step: u32) -> RetryPolicy {
        self.steps[step as usize].retry.clone().unwrap_or_default()
    }

    /// Draws the plan as a Mermaid flowchart.
    pub fn to_mermaid(&self) -> String {
        crate::mermaid::draw(self)
    }
}

fn check_duration(d: Option<f64>, what: &str) -> Result<()> {
    match d {
        Some(v) if !v.is_finite() || v < 0.0 => {
            Err(CoreError::Definition(format!("{what} must be a finite number of seconds >= 0, got {v}")))
        }
        _ => Ok(()),
    }
}

struct Builder<'a> {
    spec: &'a PlanSpec,
    nodes: Vec<Node>,
}

impl Builder<'_> {
    fn push(&mut self, n: Node) -> NodeId {
        self.nodes.push(n);
        (self.nodes.len() - 1) as NodeId
    }

    fn fn_index(&self, f: u32, what: &str) -> Result<u32> {
        if (f as usize) < self.spec.fns.len() {
            Ok(f)
        } else {
            Err(CoreError::Definition(format!("{what} refers to function #{f}, which is not in the plan")))
        }
    }

    fn node(&mut self, spec: &NodeSpec, wf: &str) -> Result<NodeId> {
        let node = match spec {
            NodeSpec::Step { step } => {
                if (*step as usize) >= self.spec.steps.len() {
                    return Err(CoreError::Definition(format!(
                        "workflow {wf:?} refers to step #{step}, which is not in the plan"
                    )));
                }
                Node::Step { step: *step }
            }
            NodeSpec::Seq { children } => {
                if children.is_empty() {
                    return Err(CoreError::Definition(format!("workflow {wf:?} has no steps")));
                }
                let ids = children.iter().map(|c| self.node(c, wf)).collect::<Result<Vec<_>>>()?;
                Node::Seq { children: ids }
            }
            NodeSpec::Parallel { children } => {
                if children.is_empty() {
                    return Err(CoreError::Definition(format!("a parallel block in workflow {wf:?} has no branches")));
                }
                let ids = children.iter().map(|c| self.node(c, wf)).collect::<Result<Vec<_>>>()?;
                Node::Parallel { children: ids }
            }
            NodeSpec::Map { body, concurrency } => {
                let c = concurrency.unwrap_or(u32::MAX);
                if c == 0 {
                    return Err(CoreError::Definition(format!(
                        "a map in workflow {wf:?} has concurrency 0; it must be at least 1"
                    )));
                }
                let body = self.node(body, wf)?;
                Node::Map { body, concurrency: c }
            }
            NodeSpec::Branch { cond, then, otherwise } => {
                let cond = self.fn_index(*cond, "a branch")?;
                let then = self.node(then, wf)?;
                let otherwise = match otherwise {
                    Some(o) => Some(self.node(o, wf)?),
                    None => None,
                };
                Node::Branch { cond, then, otherwise }
            }
            NodeSpec::Loop { body, until, max_iterations } => {
                let until = self.fn_index(*until, "a loop")?;
                let max = match max_iterations {
                    None => {
                        return Err(CoreError::Definition(format!(
                            "a loop in workflow {wf:?} has no bound: give it max_iterations"
                        )))
                    }
                    Some(0) => {
                        return Err(CoreError::Definition(format!(
                            "a loop in workflow {wf:?} has max_iterations 0; it must be at least 1"
                        )))
                    }
                    Some(m) => *m,
                };
                let body = self.node(body, wf)?;
                Node::Loop { body, until, max_iterations: max }
            }
            NodeSpec::States { start, states } => self.states(start, states, wf)?,
            NodeSpec::Sub { workflow, body } => {
                let body = self.node(body, workflow)?;
                Node::Sub { workflow: workflow.clone(), body }
            }
            NodeSpec::WaitSignal { name, wait, timeout, on_timeout } => {
                if name.is_empty() {
                    return Err(CoreError::Definition(format!("a wait in workflow {wf:?} has an empty signal name")));
                }
                check_duration(*timeout, &format!("timeout of the wait for signal {name:?}"))?;
                if on_timeout.is_some() && timeout.is_none() {
                    return Err(CoreError::Definition(format!(
                        "the wait for signal {name:?} has an on_timeout path but no timeout"
                    )));
                }
                let on_timeout = match on_timeout {
                    Some(n) => Some(self.node(n, wf)?),
                    None => None,
                };
                Node::WaitSignal { name: name.clone(), wait: *wait, timeout: *timeout, on_timeout }
            }
            NodeSpec::Sleep { seconds, until } => {
                if seconds.is_some() == until.is_some() {
                    return Err(CoreError::Definition(format!(
                        "a sleep in workflow {wf:?} needs exactly one of a duration or a deadline"
                    )));
                }
                check_duration(*seconds, "a sleep duration")?;
                if until.is_some_and(|u| !u.is_finite()) {
                    return Err(CoreError::Definition("a sleep deadline must be a finite time".into()));
                }
                Node::Sleep { seconds: *seconds, until: *until }
            }
        };
        Ok(self.push(node))
    }

    fn states(&mut self, start: &str, states: &[StateSpec], wf: &str) -> Result<Node> {
        if states.is_empty() {
            return Err(CoreError::Definition(format!("workflow {wf:?} has no states")));
        }
        let mut index: HashMap<&str, u32> = HashMap::new();
        for (i, s) in states.iter().enumerate() {
            if s.name.is_empty() || s.name.contains(['.', '#', '?']) {
                return Err(CoreError::Definition(format!(
                    "state name {:?} in workflow {wf:?} must be non-empty and contain no '.', '#' or '?'",
                    s.name
                )));
            }
            if index.insert(s.name.as_str(), i as u32).is_some() {
                return Err(CoreError::Definition(format!("workflow {wf:?} defines state {:?} twice", s.name)));
            }
        }
        let lookup = |from: &str, to: &str| -> Result<u32> {
            index.get(to).copied().ok_or_else(|| {
                CoreError::Definition(format!("state {from:?} of workflow {wf:?} goes to unknown state {to:?}"))
            })
        };
        let start_ix = *index
            .get(start)
            .ok_or_else(|| CoreError::Definition(format!("workflow {wf:?} starts at unknown state {start:?}")))?;
        let mut resolved = Vec::with_capacity(states.len());
        for s in states {
            let next = match &s.next {
                None => Next::End,
                Some(NextSpec::Goto(t)) => Next::Goto(lookup(&s.name, t)?),
                Some(NextSpec::Labels(table)) => {
                    if table.is_empty() {
                        return Err(CoreError::Definition(format!(
                            "state {:?} of workflow {wf:?} has an empty transition table",
                            s.name
                        )));
                    }
                    let mut out = Vec::with_capacity(table.len());
                    for (label, t) in table {
                        out.push((label.clone(), lookup(&s.name, t)?));
                    }
                    Next::Labels(out)
                }
                Some(NextSpec::Router { router, targets }) => {
                    let router = self.fn_index(*router, "a router")?;
                    let targets = match targets {
                        None => None,
                        Some(ts) => Some(ts.iter().map(|t| lookup(&s.name, t)).collect::<Result<Vec<_>>>()?),
                    };
                    Next::Router { router, targets }
                }
            };
            let body = self.node(&s.body, wf)?;
            resolved.push(State { name: s.name.clone(), body, next });
        }
        // reachability from the start state
        let mut seen: HashSet<u32> = HashSet::new();
        let mut stack = vec![start_ix];
        while let Some(i) = stack.pop() {
            if !seen.insert(i) {
                continue;
            }
            match &resolved[i as usize].next {
                Next::End => {}
                Next::Goto(t) => stack.push(*t),
                Next::Labels(table) => stack.extend(table.iter().map(|(_, t)| *t)),
                Next::Router { targets: Some(ts), .. } => stack.extend(ts.iter().copied()),
                Next::Router { targets: None, .. } => stack.extend(0..resolved.len() as u32),
            }
        }
        let unreachable: Vec<&str> = resolved
            .iter()
            .enumerate()
            .filter(|(i, _)| !seen.contains(&(*i as u32)))
            .map(|(_, s)| s.name.as_str())
            .collect();
        if !unreachable.is_empty() {
            return Err(CoreError::Definition(format!(
                "workflow {wf:?} has states that cannot be reached from {start:?}: {}",
                unreachable.join(", ")
            )));
        }
        Ok(Node::States { start: start_ix, states: resolved })
    }
}
