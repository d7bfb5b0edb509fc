//! State-machine tests of time and the outside world: durable sleeps, signals, wait and workflow
//! timeouts, and cancellation, each also across a restart (resume from records).

use super::tests::{apply, fns, plan, policy, seq, step, TestHost};
use super::*;
use crate::plan::NodeSpec;
use crate::retry::RetryPolicy;
use serde_json::{json, Value};

fn wait(name: &str, timeout: Option<f64>, on_timeout: Option<NodeSpec>) -> NodeSpec {
    NodeSpec::WaitSignal { name: name.into(), wait: 0, timeout, on_timeout: on_timeout.map(Box::new) }
}

/// Runs every ready task with `fns` until nothing is ready (timers and waits stay pending).
fn settle(inst: &mut Instance<Value>, now: f64) {
    inst.fire_timers(now, &mut TestHost);
    while let Some(t) = inst.pop_ready(now) {
        let out = apply(&fns(4)[t.step as usize], &t.input);
        let payload = serde_json::to_vec(&out).unwrap();
        inst.complete(t, out, payload, now, &mut TestHost);
        inst.fire_timers(now, &mut TestHost);
    }
}

#[test]
fn sleep_is_a_timer_and_passes_its_input_through() {
    let p = plan(seq(vec![step(0), NodeSpec::Sleep { seconds: Some(3600.0), until: None }, step(1)]), 2, None);
    let mut inst = Instance::start("s", p.clone(), json!(1), 100.0, &mut TestHost);
    settle(&mut inst, 100.0);
    assert_eq!(inst.next_deadline(), Some(3700.0));
    assert_eq!(inst.next_retry(), None);
    let records = inst.take_records();
    assert!(records.contains(&Record::Decision { key: "1@due".into(), value: "3700.0".into() }));
    // a restart honours the remaining time: the recorded due time, not "now + 3600"
    let mut again = Instance::resume("s", p, json!(1), 100.0, 2000.0, &records, &mut TestHost);
    assert_eq!(again.next_deadline(), Some(3700.0));
    settle(&mut again, 3000.0);
    assert_eq!(again.status(), Status::Running);
    settle(&mut again, 3700.0);
    assert_eq!(again.output(), Some(&json!(5))); // 1*2+1 = 3 -> sleep -> 3+2 = 5
}

#[test]
fn a_signal_sent_before_its_wait_is_kept_and_each_is_consumed_once_in_order() {
    let p = plan(seq(vec![step(0), wait("go", None, None), wait("go", None, None)]), 1, None);
    let mut inst = Instance::start("w", p.clone(), json!(1), 0.0, &mut TestHost);
    inst.add_signals([(1, "go".to_string()), (2, "other".to_string())]);
    settle(&mut inst, 0.0);
    inst.deliver(0.0, &mut TestHost);
    assert!(inst.is_waiting(), "the first wait took signal 1, the second waits");
    inst.add_signals([(1, "go".to_string()), (3, "go".to_string())]); // 1 again: ignored
    inst.deliver(1.0, &mut TestHost);
    assert_eq!(inst.output(), Some(&json!(3000)));
    let consumed: Vec<Record> = inst
        .take_records()
        .into_iter()
        .filter(|r| matches!(r, Record::Decision { key, .. } if key.ends_with('@')))
        .collect();
    assert_eq!(
        consumed,
        vec![
            Record::Decision { key: "1@".into(), value: "1".into() },
            Record::Decision { key: "2@".into(), value: "3".into() },
        ]
    );
}

#[test]
fn replayed_waits_reuse_the_consumed_signal_and_never_take_it_twice() {
    let p = plan(seq(vec![wait("go", None, None), step(0), wait("go", None, None)]), 1, None);
    let mut inst = Instance::start("w", p.clone(), json!(0), 0.0, &mut TestHost);
    inst.add_signals([(5, "go".to_string())]);
    inst.deliver(0.0, &mut TestHost);
    let mut records = inst.take_records();
    let t = inst.pop_ready(0.0).unwrap(); // step 0 "running" when we crash
    assert_eq!(t.input, json!(5000));
    drop(inst);
    let mut again = Instance::resume("w", p, json!(0), 0.0, 1.0, &records, &mut TestHost);
    again.add_signals([(5, "go".to_string())]);
    again.deliver(1.0, &mut TestHost);
    settle(&mut again, 1.0);
    assert!(again.is_waiting(), "signal 5 was consumed by the first wait; the second still waits");
    records.extend(again.take_records());
    again.add_signals([(6, "go".to_string())]);
    again.deliver(2.0, &mut TestHost);
    assert_eq!(again.output(), Some(&json!(6000)));
}

#[test]
fn a_wait_times_out_onto_its_escalation_path_or_fails() {
    let escalate = seq(vec![step(1)]);
    let p = plan(seq(vec![wait("ok", Some(10.0), Some(escalate))]), 2, None);
    let mut inst = Instance::start("t", p.clone(), json!(7), 0.0, &mut TestHost);
    assert_eq!(inst.next_deadline(), Some(10.0));
    settle(&mut inst, 9.0);
    assert!(inst.is_waiting());
    settle(&mut inst, 10.0);
    assert_eq!(inst.output(), Some(&json!(9))); // 7 + 2 on the escalation path
    let records = inst.take_records();
    assert!(records.contains(&Record::Decision { key: "0!".into(), value: "timeout".into() }));
    // a signal arriving after the timeout does not change the replayed outcome
    let mut again = Instance::resume("t", p, json!(7), 0.0, 20.0, &records, &mut TestHost);
    again.add_signals([(1, "ok".to_string())]);
    again.deliver(20.0, &mut TestHost);
    settle(&mut again, 20.0);
    assert_eq!(again.output(), Some(&json!(9)));

    let p = plan(seq(vec![wait("ok", Some(10.0), None)]), 1, None);
    let mut inst = Instance::start("t", p, json!(7), 0.0, &mut TestHost);
    settle(&mut inst, 10.0);
    let e = inst.error().unwrap();
    assert_eq!((inst.status(), e.kind, e.failure.error_type.as_str()), (Status::Failed, "timeout", "StepTimeout"));
}

#[test]
fn the_workflow_timeout_counts_from_creation() {
    let mut spec_plan = (*plan(seq(vec![wait("never", None, None)]), 1, None)).clone();
    spec_plan.timeout = Some(60.0);
    let p = Arc::new(spec_plan);
    let mut inst = Instance::start("x", p.clone(), json!(0), 1000.0, &mut TestHost);
    assert_eq!(inst.next_deadline(), Some(1060.0));
    let records = inst.take_records();
    let mut again = Instance::resume("x", p, json!(0), 1000.0, 1059.0, &records, &mut TestHost);
    settle(&mut again, 1060.0);
    assert_eq!(again.status(), Status::Failed);
    assert!(again.error().unwrap().failure.message.contains("timeout of 60s"));
}

#[test]
fn a_step_that_finishes_past_the_workflow_deadline_times_the_workflow_out() {
    let timed = |root: NodeSpec, n: usize, retry: Option<RetryPolicy>| {
        let mut p = (*plan(root, n, retry)).clone();
        p.timeout = Some(60.0);
        Arc::new(p)
    };
    // the last step completes late: recorded, but the workflow fails instead of completing
    let p = timed(seq(vec![step(0)]), 1, None);
    let mut inst = Instance::start("x", p, json!(1), 0.0, &mut TestHost);
    let t = inst.pop_ready(0.0).unwrap();
    inst.complete(t, json!(3), b"3".to_vec(), 100.0, &mut TestHost);
    assert_eq!(inst.status(), Status::Failed);
    assert_eq!(inst.error().unwrap().kind, "timeout");
    assert!(inst.take_records().iter().any(|r| matches!(r, Record::Step(s) if s.key == "0")));
    // a late failure is not retried: the workflow's timeout wins over the step's policy
    let p = timed(seq(vec![step(0)]), 1, policy(5));
    let mut inst = Instance::start("y", p, json!(1), 0.0, &mut TestHost);
    let t = inst.pop_ready(0.0).unwrap();
    assert_eq!(inst.fail(t, Failure::new("IOError", "late"), true, 61.0), None);
    assert_eq!((inst.status(), inst.error().unwrap().kind), (Status::Failed, "timeout"));
    // in time, the same step completes the workflow
    let p = timed(seq(vec![step(0)]), 1, None);
    let mut inst = Instance::start("z", p, json!(1), 0.0, &mut TestHost);
    assert_eq!(inst.workflow_deadline(), Some(60.0));
    let t = inst.pop_ready(0.0).unwrap();
    inst.complete(t, json!(3), b"3".to_vec(), 59.0, &mut TestHost);
    assert_eq!(inst.status(), Status::Completed);
    assert_eq!(inst.workflow_deadline(), None);
}

#[test]
fn cancel_runs_the_compensation_with_the_reason_and_survives_a_restart() {
    let mut comp = (*plan(seq(vec![step(0), wait("never", None, None)]), 2, None)).clone();
    comp.compensation = Some(1);
    let p = Arc::new(comp);
    let mut inst = Instance::start("c", p.clone(), json!(1), 0.0, &mut TestHost);
    settle(&mut inst, 0.0);
    inst.cancel("customer asked", 1.0, &mut TestHost);
    assert!(inst.is_cancelling());
    let t = inst.pop_ready(1.0).unwrap();
    let records = inst.take_records(); // committed as it starts
    assert_eq!((t.key.as_str(), t.input.clone()), ("cancel", json!("customer asked")));
    drop(inst); // crash while compensating
    let mut again = Instance::resume("c", p.clone(), json!(1), 0.0, 2.0, &records, &mut TestHost);
    let t = again.pop_ready(2.0).unwrap();
    assert_eq!((t.key.as_str(), t.attempt), ("cancel", 2));
    again.complete(t, json!("undone"), b"\"undone\"".to_vec(), 2.0, &mut TestHost);
    assert_eq!(again.status(), Status::Cancelled);

    let p = plan(seq(vec![wait("never", None, None)]), 1, None);
    let mut plain = Instance::start("d", p, json!(1), 0.0, &mut TestHost);
    plain.cancel("stop", 0.0, &mut TestHost);
    assert_eq!(plain.status(), Status::Cancelled);
    assert!(!plain.is_waiting());
}
