//! Walking the plan: entering nodes and finishing them, one event at a time.

use std::sync::Arc;

use super::timers::{Due, SLEPT};
use super::{child_key, Cont, ErrorInfo, Event, Failure, Frame, Host, Instance, Task, Waiter, CANCEL, ROOT};
use crate::codec::Record;
use crate::plan::{Next, Node, NodeId};
use crate::status::Status;

impl<V: Clone> Instance<V> {
    /// A decision recorded earlier (on resume), or a fresh one, recorded now.
    pub(super) fn decide(
        &mut self,
        key: String,
        ask: impl FnOnce(&mut dyn Host<V>) -> Result<String, Failure>,
        host: &mut dyn Host<V>,
    ) -> Result<String, (String, Failure)> {
        if let Some(v) = self.replay.as_ref().and_then(|r| r.decisions.get(&key)) {
            return Ok(v.clone());
        }
        match ask(host) {
            Ok(v) => {
                self.records.push(Record::Decision { key, value: v.clone() });
                Ok(v)
            }
            Err(f) => Err((key, f)),
        }
    }

    pub(super) fn enter(&mut self, node: NodeId, input: V, cont: Cont, key: String, host: &mut dyn Host<V>) {
        let plan = Arc::clone(&self.plan);
        match plan.node(node) {
            Node::Step { step } => self.enter_step(*step, input, cont, key, host),
            Node::Seq { children } => {
                let first = children[0];
                let f = self.alloc(Frame::Seq { node, idx: 0, key: key.clone(), cont });
                let k = child_key(&key, format_args!("0"));
                self.events.push_back(Event::Enter { node: first, input, cont: Cont { frame: f, slot: 0 }, key: k });
            }
            Node::Parallel { children } => {
                let n = children.len();
                let f = self.alloc(Frame::Par { results: vec![None; n], remaining: n as u32, cont });
                for (i, c) in children.iter().enumerate() {
                    let k = child_key(&key, format_args!("p{i}"));
                    self.events.push_back(Event::Enter {
                        node: *c,
                        input: input.clone(),
                        cont: Cont { frame: f, slot: i as u32 },
                        key: k,
                    });
                }
            }
            Node::Map { body, concurrency } => {
                let items = match host.items(&input) {
                    Ok(items) => items,
                    Err(f) => return self.fail_with("map", &key, f),
                };
                if items.is_empty() {
                    let v = host.list(Vec::new());
                    self.events.push_back(Event::Finish { cont, value: v });
                    return;
                }
                let n = items.len();
                let launch = (*concurrency as usize).min(n);
                let mut items: Vec<Option<V>> = items.into_iter().map(Some).collect();
                let first: Vec<V> = items[..launch].iter_mut().map(|x| x.take().expect("fresh")).collect();
                let f = self.alloc(Frame::Map {
                    node,
                    items,
                    results: vec![None; n],
                    next: launch as u32,
                    in_flight: launch as u32,
                    key: key.clone(),
                    cont,
                });
                for (i, v) in first.into_iter().enumerate() {
                    let k = child_key(&key, format_args!("m{i}"));
                    self.events.push_back(Event::Enter {
                        node: *body,
                        input: v,
                        cont: Cont { frame: f, slot: i as u32 },
                        key: k,
                    });
                }
            }
            Node::Branch { cond, then, otherwise } => {
                let (cond, then, otherwise) = (*cond, *then, *otherwise);
                let dkey = format!("{key}?");
                let decided = self.decide(dkey, |h| h.condition(cond, &input).map(|b| b.to_string()), host);
                match decided.as_deref() {
                    Ok("true") => {
                        let k = child_key(&key, format_args!("t"));
                        self.events.push_back(Event::Enter { node: then, input, cont, key: k });
                    }
                    Ok(_) => match otherwise {
                        Some(o) => {
                            let k = child_key(&key, format_args!("f"));
                            self.events.push_back(Event::Enter { node: o, input, cont, key: k });
                        }
                        None => self.events.push_back(Event::Finish { cont, value: input }),
                    },
                    Err((k, f)) => self.fail_with("condition", k, f.clone()),
                }
            }
            Node::Loop { body, .. } => {
                let body = *body;
                let f = self.alloc(Frame::Loop { node, iter: 0, key: key.clone(), cont });
                let k = child_key(&key, format_args!("i0"));
                self.events.push_back(Event::Enter { node: body, input, cont: Cont { frame: f, slot: 0 }, key: k });
            }
            Node::States { start, states } => {
                let start = *start;
                let f = self.alloc(Frame::States { node, cur: start, visits: vec![0; states.len()], key, cont });
                self.enter_state(f, start, input);
            }
            Node::Sub { body, .. } => {
                self.events.push_back(Event::Enter { node: *body, input, cont, key });
            }
            Node::Sleep { seconds, until } => {
                if self.replay.as_ref().is_some_and(|r| r.decisions.contains_key(&format!("{key}{SLEPT}"))) {
                    // the sleep ended before: what was recorded after it is replayed too
                    self.events.push_back(Event::Finish { cont, value: input });
                    return;
                }
                let due = self.due_at(&key, seconds.map(|s| self.now + s).or(*until).unwrap_or(self.now));
                self.push_timer(due, Due::Sleep { key, cont, value: input });
            }
            Node::WaitSignal { name, wait, timeout, .. } => {
                let (name, wait, timeout) = (name.clone(), *wait, *timeout);
                self.enter_wait(node, name, wait, timeout, input, cont, key, host);
            }
        }
    }

    pub(super) fn enter_step(&mut self, step: u32, input: V, cont: Cont, key: String, host: &mut dyn Host<V>) {
        let mut attempt = 1;
        let mut interrupted = 0;
        let mut due = None;
        if let Some(r) = &self.replay {
            if let Some(p) = r.completed.get(&key) {
                match host.decode(step, p) {
                    Ok(v) => self.events.push_back(Event::Finish { cont, value: v }),
                    Err(f) => {
                        let name = self.plan.steps[step as usize].name.clone();
                        self.fail_instance(ErrorInfo {
                            kind: "codec",
                            step: Some(name),
                            key: Some(key),
                            attempts: 0,
                            failure: f,
                        });
                    }
                }
                return;
            }
            let enq = r.enqueued.get(&key).copied().unwrap_or(0);
            let (failed, retry_at) = r.failed.get(&key).copied().unwrap_or((0, None));
            if enq > failed && r.running {
                // started and still running elsewhere (a rebuild by a worker that runs it)
                attempt = enq;
                interrupted = enq - failed - 1;
            } else if enq > failed {
                // started, never finished: the process died during attempt `enq`
                let budget = self.plan.retry(step).max_attempts.max(2);
                if enq >= budget {
                    return self.fail_interrupted(step, key, enq, budget);
                }
                attempt = enq + 1;
                interrupted = enq - failed;
            } else if failed > 0 {
                attempt = failed + 1;
                due = retry_at;
            }
        }
        let task = Task { step, key, attempt, input, started_at: 0.0, interrupted, cont };
        match due {
            Some(at) => {
                self.push_timer(at, Due::Retry(task));
            }
            None => self.ready.push_back(task),
        }
    }

    /// Fails the instance because step `step` at `key` was interrupted (its process died) during
    /// attempt `attempts`, which used up `budget`: a poison step is not retried forever.
    fn fail_interrupted(&mut self, step: u32, key: String, attempts: u32, budget: u32) {
        let name = self.plan.steps[step as usize].name.clone();
        let msg = format!(
            "the process running step '{name}' at position '{key}' died during its last attempt \
             (attempt {attempts}); interrupted attempts count against its retry budget of {budget} \
             (max_attempts, at least 2 after an interruption), so it is not run again"
        );
        self.fail_instance(ErrorInfo {
            kind: "interrupted",
            step: Some(name),
            key: Some(key),
            attempts,
            failure: Failure::new("StepInterrupted", msg),
        });
    }

    /// When a timer at `key` is due: as recorded (on resume) or `fresh`, recorded now.
    fn due_at(&mut self, key: &str, fresh: f64) -> f64 {
        let dkey = format!("{key}@due");
        if let Some(v) = self.replay.as_ref().and_then(|r| r.decisions.get(&dkey)) {
            if let Ok(t) = v.parse::<f64>() {
                return t;
            }
        }
        self.records.push(Record::Decision { key: dkey, value: format!("{fresh:?}") });
        fresh
    }

    #[allow(clippy::too_many_arguments)]
    fn enter_wait(
        &mut self,
        node: NodeId,
        name: String,
        wait: u32,
        timeout: Option<f64>,
        input: V,
        cont: Cont,
        key: String,
        host: &mut dyn Host<V>,
    ) {
        let recorded = self
            .replay
            .as_ref()
            .map(|r| (r.decisions.get(&format!("{key}!")).cloned(), r.decisions.get(&format!("{key}@")).cloned()));
        let w = Waiter { key: key.clone(), name, wait, node, input, cont, timer: None };
        match recorded {
            Some((Some(_timed_out), _)) => return self.after_timeout(w.key, w.name, w.node, w.input, w.cont),
            Some((None, Some(seq))) => {
                let seq = seq.parse::<u64>().unwrap_or(0);
                return match host.signal(wait, seq) {
                    Ok(v) => self.events.push_back(Event::Finish { cont, value: v }),
                    Err(f) => self.fail_instance(ErrorInfo {
                        kind: "codec",
                        step: Some(format!("signal {:?}", w.name)),
                        key: Some(key),
                        attempts: 0,
                        failure: f,
                    }),
                };
            }
            _ => {}
        }
        let mut w = w;
        while let Some(seq) = self.take_signal(&w.name) {
            match self.consume(w, seq, host) {
                None => return, // it arrived before the wait: kept for it
                Some(rejected) => w = rejected,
            }
        }
        if let Some(t) = timeout {
            let due = self.due_at(&key, self.now + t);
            w.timer = Some(self.push_timer(due, Due::WaitTimeout { key }));
        }
        self.waits.push(w);
    }

    fn enter_state(&mut self, f: u32, state: u32, input: V) {
        let plan = Arc::clone(&self.plan);
        let Frame::States { node, cur, visits, key, .. } = &mut self.frames[f as usize] else {
            unreachable!("enter_state on a non-state frame")
        };
        let Node::States { states, .. } = plan.node(*node) else { unreachable!("states frame on a non-states node") };
        *cur = state;
        let visit = visits[state as usize];
        visits[state as usize] += 1;
        let s = &states[state as usize];
        let k = child_key(key, format_args!("{}#{visit}", s.name));
        self.events.push_back(Event::Enter { node: s.body, input, cont: Cont { frame: f, slot: state }, key: k });
    }

    pub(super) fn finish(&mut self, cont: Cont, value: V, host: &mut dyn Host<V>) {
        if cont.frame == ROOT {
            return self.finish_root(value, host);
        }
        if cont.frame == CANCEL {
            self.status = Status::Cancelled; // the compensation step completed
            self.cancelling = false;
            return;
        }
        let plan = Arc::clone(&self.plan);
        let f = cont.frame;
        match &mut self.frames[f as usize] {
            Frame::Seq { node, idx, key, cont: parent } => {
                let Node::Seq { children } = plan.node(*node) else { unreachable!() };
                *idx += 1;
                if (*idx as usize) == children.len() {
                    let parent = *parent;
                    self.release(f);
                    self.events.push_back(Event::Finish { cont: parent, value });
                } else {
                    let i = *idx;
                    let k = child_key(key, format_args!("{i}"));
                    self.events.push_back(Event::Enter {
                        node: children[i as usize],
                        input: value,
                        cont: Cont { frame: f, slot: i },
                        key: k,
                    });
                }
            }
            Frame::Par { results, remaining, cont: parent } => {
                results[cont.slot as usize] = Some(value);
                *remaining -= 1;
                if *remaining == 0 {
                    let parent = *parent;
                    let items: Vec<V> = results.iter_mut().map(|r| r.take().expect("every branch finished")).collect();
                    self.release(f);
                    let v = host.tuple(items);
                    self.events.push_back(Event::Finish { cont: parent, value: v });
                }
            }
            Frame::Map { node, items, results, next, in_flight, key, cont: parent } => {
                results[cont.slot as usize] = Some(value);
                *in_flight -= 1;
                if (*next as usize) < items.len() {
                    let i = *next;
                    *next += 1;
                    *in_flight += 1;
                    let Node::Map { body, .. } = plan.node(*node) else { unreachable!() };
                    let v = items[i as usize].take().expect("not launched yet");
                    let k = child_key(key, format_args!("m{i}"));
                    self.events.push_back(Event::Enter {
                        node: *body,
                        input: v,
                        cont: Cont { frame: f, slot: i },
                        key: k,
                    });
                } else if *in_flight == 0 {
                    let parent = *parent;
                    let out: Vec<V> = results.iter_mut().map(|r| r.take().expect("every item finished")).collect();
                    self.release(f);
                    let v = host.list(out);
                    self.events.push_back(Event::Finish { cont: parent, value: v });
                }
            }
            Frame::Loop { node, iter, key, cont: parent } => {
                let Node::Loop { body, until, max_iterations } = plan.node(*node) else { unreachable!() };
                let (body, until, max) = (*body, *until, *max_iterations);
                let i = *iter;
                let key = key.clone();
                let parent = *parent;
                let dkey = child_key(&key, format_args!("u{i}?"));
                match self.decide(dkey, |h| h.condition(until, &value).map(|b| b.to_string()), host).as_deref() {
                    Ok("true") => {
                        self.release(f);
                        self.events.push_back(Event::Finish { cont: parent, value });
                    }
                    Ok(_) if i + 1 >= max => {
                        let msg = format!(
                            "loop at position {:?} ran max_iterations={max} times without its condition {} holding",
                            if key.is_empty() { "root" } else { &key },
                            plan.fns[until as usize]
                        );
                        self.fail_with("loop", &key, Failure::new("LoopLimitExceeded", msg));
                    }
                    Ok(_) => {
                        if let Frame::Loop { iter, .. } = &mut self.frames[f as usize] {
                            *iter = i + 1;
                        }
                        let k = child_key(&key, format_args!("i{}", i + 1));
                        self.events.push_back(Event::Enter {
                            node: body,
                            input: value,
                            cont: Cont { frame: f, slot: 0 },
                            key: k,
                        });
                    }
                    Err((k, e)) => self.fail_with("condition", k, e.clone()),
                }
            }
            Frame::States { node, cur, visits, key, cont: parent } => {
                let Node::States { states, .. } = plan.node(*node) else { unreachable!() };
                let st = &states[*cur as usize];
                let parent = *parent;
                let skey = child_key(key, format_args!("{}#{}", st.name, visits[*cur as usize] - 1));
                match &st.next {
                    Next::End => {
                        self.release(f);
                        self.events.push_back(Event::Finish { cont: parent, value });
                    }
                    Next::Goto(t) => self.enter_state(f, *t, value),
                    Next::Labels(table) => match host.label(&value) {
                        Ok(label) => match table.iter().find(|(l, _)| *l == label) {
                            Some((_, t)) => self.enter_state(f, *t, value),
                            None => {
                                let known: Vec<&str> = table.iter().map(|(l, _)| l.as_str()).collect();
                                let msg = format!(
                                    "state {:?} produced label {label:?}, which is not in its transitions [{}]",
                                    st.name,
                                    known.join(", ")
                                );
                                self.fail_with("definition", &skey, Failure::new("DefinitionError", msg));
                            }
                        },
                        Err(e) => self.fail_with("definition", &skey, e),
                    },
                    Next::Router { router, targets } => {
                        let router = *router;
                        let name = st.name.clone();
                        let dkey = format!("{skey}?");
                        match self.decide(dkey, |h| h.route(router, &value), host) {
                            Ok(target) => {
                                let found = states.iter().position(|s| s.name == target).map(|i| i as u32);
                                let allowed = match (found, targets) {
                                    (Some(i), Some(ts)) => ts.contains(&i),
                                    (Some(_), None) => true,
                                    (None, _) => false,
                                };
                                if allowed {
                                    self.enter_state(f, found.expect("allowed implies found"), value);
                                } else {
                                    let msg = format!(
                                        "router {} of state {name:?} returned {target:?}, which is not {}",
                                        plan.fns[router as usize],
                                        if found.is_some() {
                                            "among its declared targets"
                                        } else {
                                            "a state of this workflow"
                                        }
                                    );
                                    self.fail_with("definition", &skey, Failure::new("DefinitionError", msg));
                                }
                            }
                            Err((k, e)) => self.fail_with("router", &k, e),
                        }
                    }
                }
            }
            Frame::Free => unreachable!("finish on a freed frame"),
        }
    }

    fn finish_root(&mut self, value: V, host: &mut dyn Host<V>) {
        match host.encode_output(&value) {
            Ok(p) => {
                self.output_payload = Some(p);
                self.output = Some(value);
                self.status = Status::Completed;
                self.ready.clear();
                self.clear_pending();
            }
            Err(f) => self.fail_with("codec", "", f),
        }
    }
}
