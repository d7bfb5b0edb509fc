//! Draws a plan as a Mermaid flowchart, so a definition can be looked at before it runs.

use std::fmt::Write;

use crate::plan::{Next, Node, NodeId, Plan};

/// Renders `plan` as `flowchart TD` text.
pub fn draw(plan: &Plan) -> String {
    let mut d = Drawer { plan, out: String::new(), counter: 0 };
    d.out.push_str("flowchart TD\n");
    let start = d.id();
    let _ = writeln!(d.out, "    {start}([start])");
    let (entry, exits) = d.node(plan.root);
    let end = d.id();
    let _ = writeln!(d.out, "    {end}([end])");
    d.edge(&start, &entry, None);
    for x in exits {
        d.edge(&x, &end, None);
    }
    d.out
}

struct Drawer<'a> {
    plan: &'a Plan,
    out: String,
    counter: usize,
}

fn escape(s: &str) -> String {
    s.replace('"', "#quot;")
}

impl Drawer<'_> {
    fn id(&mut self) -> String {
        self.counter += 1;
        format!("n{}", self.counter)
    }

    fn edge(&mut self, a: &str, b: &str, label: Option<&str>) {
        match label {
            Some(l) => {
                let _ = writeln!(self.out, "    {a} -->|\"{}\"| {b}", escape(l));
            }
            None => {
                let _ = writeln!(self.out, "    {a} --> {b}");
            }
        }
    }

    fn shape(&mut self, open: &str, text: &str, close: &str) -> String {
        let id = self.id();
        let _ = writeln!(self.out, "    {id}{open}\"{}\"{close}", escape(text));
        id
    }

    /// Draws a node; returns its entry id and the ids its control leaves from.
    fn node(&mut self, n: NodeId) -> (String, Vec<String>) {
        match self.plan.node(n).clone() {
            Node::Step { step } => {
                let name = self.plan.steps[step as usize].name.clone();
                let id = self.shape("[", &name, "]");
                (id.clone(), vec![id])
            }
            Node::Seq { children } => {
                let mut entry = None;
                let mut exits: Vec<String> = Vec::new();
                for c in children {
                    let (e, x) = self.node(c);
                    for p in &exits {
                        self.edge(p, &e, None);
                    }
                    entry.get_or_insert(e);
                    exits = x;
                }
                (entry.expect("validated: a sequence is never empty"), exits)
            }
            Node::Parallel { children } => {
                let fork = self.shape("{{", "parallel", "}}");
                let join = self.shape("{{", "join (tuple)", "}}");
                for c in children {
                    let (e, x) = self.node(c);
                    self.edge(&fork, &e, None);
                    for p in x {
                        self.edge(&p, &join, None);
                    }
                }
                (fork, vec![join])
            }
            Node::Map { body, concurrency } => {
                let label = if concurrency == u32::MAX {
                    "map: each item".to_string()
                } else {
                    format!("map: each item, {concurrency} at a time")
                };
                let fork = self.shape("{{", &label, "}}");
                let join = self.shape("{{", "join (list)", "}}");
                let (e, x) = self.node(body);
                self.edge(&fork, &e, None);
                for p in x {
                    self.edge(&p, &join, None);
                }
                (fork, vec![join])
            }
            Node::Branch { cond, then, otherwise } => {
                let name = self.plan.fns[cond as usize].clone();
                let d = self.shape("{", &name, "}");
                let (e, mut exits) = self.node(then);
                self.edge(&d, &e, Some("true"));
                match otherwise {
                    Some(o) => {
                        let (e2, x2) = self.node(o);
                        self.edge(&d, &e2, Some("false"));
                        exits.extend(x2);
                    }
                    None => {
                        let pass = self.shape("([", "pass", "])");
                        self.edge(&d, &pass, Some("false"));
                        exits.push(pass);
                    }
                }
                (d, exits)
            }
            Node::Loop { body, until, max_iterations } => {
                let (e, x) = self.node(body);
                let name = self.plan.fns[until as usize].clone();
                let check = self.shape("{", &format!("until {name} (max {max_iterations})"), "}");
                for p in x {
                    self.edge(&p, &check, None);
                }
                self.edge(&check, &e, Some("again"));
                (e, vec![check])
            }
            Node::States { start, states } => {
                let mut entries = Vec::new();
                let mut exits_of = Vec::new();
                for s in &states {
                    let (e, x) = self.node(s.body);
                    let _ = writeln!(self.out, "    %% state {}", s.name);
                    entries.push(e);
                    exits_of.push(x);
                }
                let mut ends = Vec::new();
                for (i, s) in states.iter().enumerate() {
                    let from = exits_of[i].clone();
                    match &s.next {
                        Next::End => ends.extend(from),
                        Next::Goto(t) => {
                            for p in &from {
                                self.edge(p, &entries[*t as usize], None);
                            }
                        }
                        Next::Labels(table) => {
                            for (label, t) in table {
                                for p in &from {
                                    self.edge(p, &entries[*t as usize], Some(label));
                                }
                            }
                        }
                        Next::Router { router, targets } => {
                            let name = self.plan.fns[*router as usize].clone();
                            let r = self.shape("{", &name, "}");
                            for p in &from {
                                self.edge(p, &r, None);
                            }
                            let ts: Vec<u32> = match targets {
                                Some(ts) => ts.clone(),
                                None => (0..states.len() as u32).collect(),
                            };
                            for t in ts {
                                let label = states[t as usize].name.clone();
                                self.edge(&r, &entries[t as usize], Some(&label));
                            }
                        }
                    }
                }
                (entries[start as usize].clone(), ends)
            }
            Node::Sub { body, .. } => self.node(body),
            Node::WaitSignal { name, timeout, on_timeout, .. } => {
                let text = match timeout {
                    Some(t) => format!("wait for signal {name} (timeout {t}s)"),
                    None => format!("wait for signal {name}"),
                };
                let id = self.shape("[/", &text, "/]");
                let mut exits = vec![id.clone()];
                if let Some(o) = on_timeout {
                    let (e, x) = self.node(o);
                    self.edge(&id, &e, Some("timeout"));
                    exits.extend(x);
                }
                (id, exits)
            }
            Node::Sleep { seconds, until } => {
                let text = match (seconds, until) {
                    (Some(s), _) => format!("sleep {s}s"),
                    (_, Some(u)) => format!("sleep until {u}"),
                    _ => "sleep".into(),
                };
                let id = self.shape("[/", &text, "/]");
                (id.clone(), vec![id])
            }
        }
    }
}
