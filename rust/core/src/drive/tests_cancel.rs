//! Cancellation wins over a step's outcome, step timeouts and budgets, and failure summaries.

use serde_json::{json, Value};

use super::tests::{completions, plan, plan_with, policy, seq, step, Did, World};
use super::*;
use crate::codec::{decode_header, Outcome, Record};
use crate::instance::Task;
use crate::store::{ListQuery, Store};

/// Drives until the first `Run` and takes its tasks back (a driver that is running them).
fn first_run(w: &mut World, d: &mut Driving<Value>) -> Vec<Task<Value>> {
    loop {
        match d.next(w.now, &mut w.host, &|_| true) {
            Next::Run(tasks) => return tasks,
            Next::Commit => {
                let p = d.commit().unwrap().clone();
                w.store.commit(&p.as_commit(&w.id, None)).unwrap();
                if let Some(tasks) = d.committed() {
                    return tasks;
                }
            }
            other => panic!("{other:?}"),
        }
    }
}

fn returned(v: Value) -> Attempt<Value> {
    let payload = serde_json::to_vec(&v).unwrap();
    Attempt::Returned { value: v, payload }
}

#[test]
fn a_cancel_requested_while_a_step_runs_wins_over_its_value() {
    for mode in [Mode::Sequential, Mode::Concurrent] {
        let mut w = World::new(plan(seq(vec![step(0), step(1)]), 2), mode);
        let mut d = w.start(json!(1), true);
        let tasks = first_run(&mut w, &mut d);
        assert_eq!(tasks.len(), 1);
        d.request_cancel("changed my mind");
        assert!(d.cancelling());
        for t in tasks {
            d.settle(t, returned(json!(3)), w.now + 1.0, &mut w.host);
        }
        w.now += 1.0;
        let d = w.run_to_end(d);
        assert_eq!(d.inst.status(), Status::Cancelled, "{mode:?}");
        assert_eq!(d.inst.output(), None);
        let log = w.log();
        assert!(completions(&log).is_empty(), "{mode:?}: the value was recorded: {log:?}");
        assert!(log.contains(&Record::Decision { key: "!cancel".into(), value: "changed my mind".into() }));
        assert_eq!(w.meta().status, Status::Cancelled);
        assert!(w.executions.is_empty(), "{mode:?}: step 1 ran after the cancel");
    }
}

#[test]
fn a_cancel_with_compensation_runs_it_instead_of_taking_the_value() {
    let p = plan_with(seq(vec![step(0), step(1)]), 3, None, None, None, Some(2));
    let mut w = World::new(p, Mode::Sequential);
    let mut d = w.start(json!(1), true);
    let tasks = first_run(&mut w, &mut d);
    d.request_cancel("stop");
    for t in tasks {
        d.settle(t, returned(json!(3)), w.now + 1.0, &mut w.host);
    }
    let mark = w.trace.len();
    let d = w.run_to_end(d);
    assert_eq!(d.inst.status(), Status::Cancelled);
    let ran: Vec<&Did> = w.trace[mark..].iter().filter(|t| matches!(t, Did::Ran(_))).collect();
    assert_eq!(ran, vec![&Did::Ran(vec![("cancel".into(), 1)])], "only the compensation runs");
    // the compensation got the reason; step 0's value is not recorded, the compensation's is
    let done = completions(&w.log());
    assert_eq!(done.keys().collect::<Vec<_>>(), vec!["cancel"]);
    assert_eq!(w.meta().status, Status::Cancelled);
}

#[test]
fn a_cancel_overtakes_tasks_out_in_a_concurrent_wave() {
    let root = crate::plan::NodeSpec::Parallel { children: vec![step(1), step(1), step(1)] };
    let mut w = World::new(plan(root, 2), Mode::Concurrent);
    let mut d = w.start(json!(1), true);
    let tasks = first_run(&mut w, &mut d);
    assert_eq!(tasks.len(), 3);
    let mut tasks = tasks.into_iter();
    d.settle(tasks.next().unwrap(), returned(json!(3)), w.now, &mut w.host); // before the cancel
    d.request_cancel("enough");
    d.settle(tasks.next().unwrap(), returned(json!(3)), w.now, &mut w.host);
    d.settle(tasks.next().unwrap(), Attempt::Stopped, w.now, &mut w.host);
    let Did::Committed(records, Status::Cancelled) = w.one(&mut d) else { panic!("{:?}", w.trace) };
    // the one settled before the cancel is recorded, in the same commit as the cancel
    assert_eq!(completions(&records).len(), 1, "{records:?}");
    assert_eq!(w.one(&mut d), Did::Done);
}

#[test]
fn a_cancel_found_after_the_end_changes_nothing() {
    let mut w = World::new(plan(step(0), 1), Mode::Sequential);
    let d = w.start(json!(1), true);
    let mut d = w.run_to_end(d);
    d.request_cancel("late");
    assert!(!d.cancelling());
    assert_eq!(w.one(&mut d), Did::Done);
    assert_eq!(w.meta().status, Status::Completed);
}

#[test]
fn overran_counts_an_attempt_past_its_steps_timeout_and_nothing_else() {
    let p = plan_with(seq(vec![step(0), step(1)]), 2, None, Some(5.0), None, None);
    let mut w = World::new(p, Mode::Sequential);
    let mut d = w.start(json!(1), true);
    let tasks = first_run(&mut w, &mut d);
    let t = &tasks[0];
    assert_eq!(t.started_at, w.now);
    assert_eq!(d.overran(t, w.now + 4.0), None);
    assert_eq!(d.overran(t, w.now + 5.0), None, "exactly the timeout is in time");
    let msg = d.overran(t, w.now + 6.0).expect("past its timeout");
    assert!(msg.contains("\"s0\"") && msg.contains("6.000s") && msg.contains("5s"), "{msg}");

    // a step without a timeout never overruns
    let mut w = World::new(plan(step(0), 1), Mode::Sequential);
    let mut d = w.start(json!(1), true);
    let tasks = first_run(&mut w, &mut d);
    assert_eq!(d.overran(&tasks[0], w.now + 1e6), None);
}

#[test]
fn an_attempt_that_overran_is_a_step_timeout_whatever_it_returned() {
    let p = plan_with(step(0), 1, policy(2, 1.0), Some(5.0), None, None);
    let mut w = World::new(p, Mode::Sequential);
    w.took = 6.0; // every attempt overruns: the retry too
    let d = w.start(json!(1), true);
    let d = w.run_to_end(d);
    assert_eq!(d.inst.status(), Status::Failed);
    let e = d.inst.error().unwrap();
    assert_eq!((e.failure.error_type.as_str(), e.attempts), ("StepTimeout", 2));
    assert!(completions(&w.log()).is_empty(), "no value of an overrun attempt is recorded");
    let failed =
        w.log().iter().filter(|r| matches!(r, Record::Step(s) if matches!(s.outcome, Outcome::Failed { .. }))).count();
    assert_eq!(failed, 2);
}

#[test]
fn budget_is_the_step_timeout_capped_by_the_workflow_deadline() {
    // step timeout 5, workflow timeout 100 from the creation (at w.now)
    let p = plan_with(seq(vec![step(0), step(1)]), 2, None, Some(5.0), Some(100.0), None);
    let mut w = World::new(p, Mode::Sequential);
    let created = w.now;
    let mut d = w.start(json!(1), true);
    let tasks = first_run(&mut w, &mut d);
    let t = &tasks[0];
    assert_eq!(d.budget(t, created), Some(5.0));
    assert_eq!(d.budget(t, created + 97.0), Some(3.0));
    assert_eq!(d.budget(t, created + 150.0), Some(0.0), "past the deadline: nothing left");

    // no step timeout: the time left until the workflow's deadline
    let p = plan_with(step(0), 1, None, None, Some(100.0), None);
    let mut w = World::new(p, Mode::Sequential);
    let mut d = w.start(json!(1), true);
    let tasks = first_run(&mut w, &mut d);
    assert_eq!(d.budget(&tasks[0], created + 40.0), Some(60.0));

    // neither: no budget; only the step's timeout: that
    let mut w = World::new(plan(step(0), 1), Mode::Sequential);
    let mut d = w.start(json!(1), true);
    let tasks = first_run(&mut w, &mut d);
    assert_eq!(d.budget(&tasks[0], created), None);
    let mut w = World::new(plan_with(step(0), 1, None, Some(7.0), None, None), Mode::Sequential);
    let mut d = w.start(json!(1), true);
    let tasks = first_run(&mut w, &mut d);
    assert_eq!(d.budget(&tasks[0], created + 1e6), Some(7.0));
}

#[test]
fn a_compensation_has_no_workflow_deadline_in_its_budget() {
    let p = plan_with(step(0), 2, None, None, Some(100.0), Some(1));
    let mut w = World::new(p, Mode::Sequential);
    let mut d = w.start(json!(1), true);
    let tasks = first_run(&mut w, &mut d);
    d.request_cancel("stop");
    for t in tasks {
        d.settle(t, Attempt::Stopped, w.now, &mut w.host);
    }
    let comp = first_run(&mut w, &mut d);
    assert_eq!(comp[0].key, "cancel");
    assert_eq!(d.budget(&comp[0], w.now + 99.0), None);
}

#[test]
fn summary_is_the_first_line_cut_on_a_char_boundary() {
    assert_eq!(summary("ValueError", "bad input"), "ValueError: bad input");
    assert_eq!(summary("ValueError", "first line\nsecond\nthird"), "ValueError: first line");
    assert_eq!(summary("KeyError", ""), "KeyError: ");
    let exact = "x".repeat(ERROR_SUMMARY_MAX - "E: ".len());
    assert_eq!(summary("E", &exact).len(), ERROR_SUMMARY_MAX, "exactly the limit is not cut");
    let long = summary("E", &"x".repeat(1000));
    assert_eq!(long.len(), ERROR_SUMMARY_MAX);
    assert!(long.ends_with("...") && long.starts_with("E: xxx"));
    for (t, unit) in [("Ex", "é"), ("E", "é"), ("E", "€"), ("Exy", "🦀"), ("E", "a🦀")] {
        let msg = unit.repeat(300);
        let s = summary(t, &msg);
        assert!(s.len() <= ERROR_SUMMARY_MAX && s.len() > ERROR_SUMMARY_MAX - 3 - 4, "{t} {unit}: {}", s.len());
        let body = s.strip_suffix("...").expect("marked as cut");
        assert!(format!("{t}: {msg}").starts_with(body), "{t} {unit}: a prefix of the whole");
    }
    // the cut happens after taking the first line
    assert_eq!(summary("E", &format!("short\n{}", "y".repeat(1000))), "E: short");
}

#[test]
fn a_failed_instances_final_commit_carries_its_summary_and_the_store_indexes_it() {
    let mut w = World::new(plan(seq(vec![step(0), step(1)]), 2), Mode::Sequential);
    let mut d = w.start(json!(1), true);
    let tasks = first_run(&mut w, &mut d);
    let long = format!("it broke: {}\ntraceback line", "é".repeat(300));
    for t in tasks {
        let failure = crate::instance::Failure::new("ValueError", long.clone());
        d.settle(t, Attempt::Raised { failure, retryable: false }, w.now + 1.0, &mut w.host);
    }
    let Next::Commit = d.next(w.now + 1.0, &mut w.host, &|_| false) else { panic!("a commit") };
    let pending = d.commit().unwrap().clone();
    assert_eq!(pending.status, Status::Failed);
    let expect = summary("ValueError", &long);
    assert!(expect.len() <= ERROR_SUMMARY_MAX && !expect.contains('\n'));
    assert_eq!(pending.error.as_deref(), Some(expect.as_str()));
    assert!(pending.header.is_some(), "the final commit replaces the header");
    w.store.commit(&pending.as_commit(&w.id, None)).unwrap();
    assert!(d.committed().is_none(), "nothing to run after the end");
    assert_eq!(w.meta().error.as_deref(), Some(expect.as_str()));
    let page = w.store.list(&ListQuery { statuses: vec![Status::Failed], ..ListQuery::default() }).unwrap();
    assert_eq!(page.items.len(), 1);
    assert_eq!(page.items[0].error.as_deref(), Some(expect.as_str()));
    let header = decode_header(&w.store.get(&w.id).unwrap().unwrap().header).unwrap();
    let err: Value = serde_json::from_slice(header.error.as_deref().unwrap()).unwrap();
    assert_eq!((err["kind"].as_str(), err["message"].as_str()), (Some("step"), Some(long.as_str())));
    assert!(matches!(d.next(w.now + 1.0, &mut w.host, &|_| false), Next::Done));

    // a completed or cancelled instance indexes no error
    let mut w = World::new(plan(step(0), 1), Mode::Sequential);
    let d = w.start(json!(1), true);
    w.run_to_end(d);
    assert_eq!(w.meta().error, None);
}
