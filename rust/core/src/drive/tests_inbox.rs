//! The last look at the inbox, wake-ups, persisted cancellations, and waiting: sleeping for a
//! retry in the thread, leaving sleeps and waits suspended in the store.

use serde_json::{json, Value};

use super::tests::{par, plan, plan_with, policy, seq, sleep, step, wait, Did, End, World};
use super::*;
use crate::codec::{encode_signal, Record, Signal};
use crate::store::Store;

/// Drives until the policy asks to read the inbox, then sends `name` first, then reads.
fn send_during_the_last_look(w: &mut World, d: &mut Driving<Value>, name: &str, payload: Value) {
    loop {
        let c = w.concurrent;
        match d.next(w.now, &mut w.host, &|s| c(s)) {
            Next::ReadInbox { after } => {
                w.send(name, &payload);
                let raw = w.store.signals(&w.id, after).unwrap();
                assert_eq!(raw.len(), 1);
                let arrived = d.take_inbox(&w.id, raw).unwrap();
                w.host.inbox.extend(arrived.payloads);
                return;
            }
            Next::Commit => {
                let p = d.commit().unwrap().clone();
                w.store.commit(&p.as_commit(&w.id, None)).unwrap();
                if let Some(tasks) = d.committed() {
                    for t in tasks {
                        w.run_and_settle(d, t);
                    }
                }
            }
            Next::Run(tasks) => {
                for t in tasks {
                    w.run_and_settle(d, t);
                }
            }
            other => panic!("{other:?} before any look at the inbox"),
        }
    }
}

fn cancel_signal(reason: &str) -> Vec<u8> {
    let payload = serde_json::to_vec(&json!(reason)).unwrap();
    encode_signal(&Signal { name: CANCEL_SIGNAL.into(), payload, sent_at: 0.0 })
}

#[test]
fn an_instance_waiting_for_a_signal_reads_the_inbox_once_before_waiting() {
    for mode in [Mode::Sequential, Mode::Concurrent] {
        let mut w = World::new(plan(seq(vec![step(0), wait("go", None, None)]), 1), mode);
        let mut d = w.start(json!(1), true);
        assert_eq!(w.drive(&mut d), End::Suspended(None));
        let tail: Vec<&Did> = w.trace.iter().rev().take(3).collect();
        assert_eq!(tail[0], &Did::Waited(None), "{mode:?}");
        assert_eq!(tail[1], &Did::Read { after: 0, found: 0 }, "{mode:?}");
        assert!(matches!(tail[2], Did::Committed(_, Status::Suspended)), "{mode:?}: {:?}", w.trace);
        assert_eq!(w.trace.iter().filter(|t| matches!(t, Did::Read { .. })).count(), 1);
        // asked again, it does not read again: one look per move
        assert_eq!(w.one(&mut d), Did::Waited(None));
        assert_eq!(w.meta().status, Status::Suspended);
        assert_eq!(w.meta().due_at, None);
    }
}

#[test]
fn a_signal_found_by_the_last_look_is_delivered() {
    for mode in [Mode::Sequential, Mode::Concurrent] {
        let mut w = World::new(plan(seq(vec![step(0), wait("go", None, None), step(1)]), 2), mode);
        let mut d = w.start(json!(1), true);
        send_during_the_last_look(&mut w, &mut d, "go", json!(40));
        let d = w.run_to_end(d);
        assert_eq!(d.inst.output(), Some(&json!(42)), "{mode:?}"); // 40 + 2
        assert!(w.log().contains(&Record::Decision { key: "1@".into(), value: "1".into() }));
        assert_eq!(w.meta().status, Status::Completed);
    }
}

#[test]
fn a_wake_up_reads_the_inbox_even_when_no_signal_is_awaited() {
    let mut w = World::new(plan(seq(vec![step(0), sleep(100.0), step(1)]), 2), Mode::Concurrent);
    let mut d = w.start(json!(1), true);
    let End::Suspended(Some(until)) = w.drive(&mut d) else { panic!("{:?}", w.trace) };
    assert!(!w.trace.iter().any(|t| matches!(t, Did::Read { .. })), "no look for a sleep: {:?}", w.trace);
    assert_eq!(w.one(&mut d), Did::Waited(Some(until)));
    w.send("unrelated", &json!(1));
    d.wake();
    assert_eq!(w.one(&mut d), Did::Read { after: 0, found: 1 });
    // a signal no wait takes changes nothing but the due time the store keeps
    let next = w.one(&mut d);
    assert!(matches!(next, Did::Committed(_, Status::Suspended) | Did::Waited(_)), "{next:?}");
    // read once per wake-up; after the next one only what is new
    while !matches!(w.one(&mut d), Did::Waited(_)) {}
    d.wake();
    assert_eq!(w.one(&mut d), Did::Read { after: 1, found: 0 });
    assert_eq!(w.one(&mut d), Did::Waited(Some(until)));
}

#[test]
fn a_persisted_cancel_request_found_in_the_inbox_cancels() {
    // woken while sleeping
    let mut w = World::new(plan(seq(vec![step(0), sleep(100.0), step(1)]), 2), Mode::Concurrent);
    let mut d = w.start(json!(1), true);
    assert!(matches!(w.drive(&mut d), End::Suspended(Some(_))));
    w.store.send_signal(&w.id, &cancel_signal("bye"), w.now).unwrap();
    d.wake();
    assert_eq!(w.one(&mut d), Did::Read { after: 0, found: 1 });
    assert!(d.cancelling());
    assert!(matches!(w.one(&mut d), Did::Committed(_, Status::Cancelled)));
    assert_eq!(w.one(&mut d), Did::Done);
    assert!(w.log().contains(&Record::Decision { key: "!cancel".into(), value: "bye".into() }));
    assert_eq!(w.meta().status, Status::Cancelled);

    // found by the last look before waiting for a signal
    let mut w = World::new(plan(seq(vec![step(0), wait("go", None, None)]), 1), Mode::Sequential);
    let mut d = w.start(json!(1), true);
    let c = w.concurrent;
    loop {
        match d.next(w.now, &mut w.host, &|s| c(s)) {
            Next::ReadInbox { after } => {
                w.store.send_signal(&w.id, &cancel_signal("late"), w.now).unwrap();
                let raw = w.store.signals(&w.id, after).unwrap();
                let arrived = d.take_inbox(&w.id, raw).unwrap();
                assert_eq!(arrived.cancel.as_deref(), Some("late"));
                assert!(arrived.payloads.is_empty(), "a cancel request is not a signal for the host");
                break;
            }
            Next::Commit => {
                let p = d.commit().unwrap().clone();
                w.store.commit(&p.as_commit(&w.id, None)).unwrap();
                assert!(d.committed().is_none());
            }
            Next::Run(ts) => ts.into_iter().for_each(|t| w.run_and_settle(&mut d, t)),
            other => panic!("{other:?}"),
        }
    }
    let d = w.run_to_end(d);
    assert_eq!(d.inst.status(), Status::Cancelled);

    // found in the inbox of a suspended instance when it is loaded
    let mut w = World::new(plan(seq(vec![step(0), sleep(100.0), step(1)]), 2), Mode::Sequential);
    let mut d = w.start(json!(1), true);
    assert!(matches!(w.drive(&mut d), End::Suspended(Some(_))));
    drop(d);
    w.store.send_signal(&w.id, &cancel_signal("from elsewhere"), w.now).unwrap();
    let d = w.load();
    assert!(d.cancelling());
    let d = w.run_to_end(d);
    assert_eq!(d.inst.status(), Status::Cancelled);
    assert!(!w.executions.contains_key("2"), "the step after the sleep never ran");
}

#[test]
fn a_sequential_driver_sleeps_for_a_retry_a_concurrent_one_waits() {
    for mode in [Mode::Sequential, Mode::Concurrent] {
        let p = plan_with(seq(vec![step(0), step(1)]), 2, policy(3, 5.0), None, None, None);
        let mut w = World::new(p, mode);
        w.fails.insert("1".into(), 1);
        let mut d = w.start(json!(1), true);
        let end = w.drive(&mut d);
        let failed_at = 1000.0 + 2.0;
        match mode {
            Mode::Sequential => {
                assert_eq!(end, End::Done);
                assert!(w.trace.contains(&Did::Slept(failed_at + 5.0)), "{:?}", w.trace);
            }
            Mode::Concurrent => {
                assert_eq!(end, End::Suspended(Some(failed_at + 5.0)));
                assert!(!w.trace.iter().any(|t| matches!(t, Did::Slept(_))));
                w.run_to_end(d);
            }
        }
        assert_eq!(w.meta().status, Status::Completed, "{mode:?}");
        assert_eq!(w.executions["1"], 2);
    }
}

#[test]
fn a_sequential_driver_does_not_sleep_for_a_retry_due_after_another_timer() {
    // the retry is due at 1006, the sleep ends at 1002: the instance is left suspended
    let p = plan_with(par(vec![sleep(2.0), step(0)]), 1, policy(3, 5.0), None, None, None);
    let mut w = World::new(p, Mode::Sequential);
    w.fails.insert("p1".into(), 1);
    let mut d = w.start(json!(1), true);
    assert_eq!(w.drive(&mut d), End::Suspended(Some(1002.0)));
    assert!(!w.trace.iter().any(|t| matches!(t, Did::Slept(_))));
    let m = w.meta();
    assert_eq!((m.status, m.due_at), (Status::Suspended, Some(1002.0)));

    // a workflow deadline before the retry is another timer too
    let p = plan_with(seq(vec![step(0)]), 1, policy(3, 10.0), None, Some(5.0), None);
    let mut w = World::new(p, Mode::Sequential);
    w.fails.insert("0".into(), 1);
    let mut d = w.start(json!(1), true);
    assert_eq!(w.drive(&mut d), End::Suspended(Some(1005.0)));
    let d = w.run_to_end(d);
    assert_eq!(d.inst.status(), Status::Failed);
    assert_eq!(d.inst.error().unwrap().kind, "timeout");
}

#[test]
fn a_durable_sleep_in_sequential_mode_is_left_suspended_due_at_its_end() {
    let mut w = World::new(plan(seq(vec![step(0), sleep(3600.0), step(1)]), 2), Mode::Sequential);
    let mut d = w.start(json!(1), true);
    let end = 1001.0 + 3600.0; // step 0 took one second
    assert_eq!(w.drive(&mut d), End::Suspended(Some(end)));
    assert!(matches!(&w.trace[w.trace.len() - 2], Did::Committed(_, Status::Suspended)));
    let m = w.meta();
    assert_eq!((m.status, m.due_at), (Status::Suspended, Some(end)));
    assert!(w.store.due(end - 1.0, None).unwrap().is_empty());
    assert_eq!(w.store.due(end, None).unwrap().len(), 1);
    drop(d);
    // resumed when due (a new driver from the store), it goes on after the sleep
    w.now = end;
    let d = w.load();
    let d = w.run_to_end(d);
    assert_eq!(d.inst.output(), Some(&json!(5))); // 1*2+1 = 3; 3+2 = 5
    assert_eq!(w.executions["0"], 1);
}

#[test]
fn resuming_before_a_timer_is_due_commits_nothing() {
    let mut w = World::new(plan(seq(vec![step(0), sleep(3600.0), step(1)]), 2), Mode::Sequential);
    let mut d = w.start(json!(1), true);
    assert!(matches!(w.drive(&mut d), End::Suspended(Some(_))));
    let version = w.meta().version;
    w.now += 10.0;
    let mut d = w.load();
    assert!(matches!(w.drive(&mut d), End::Suspended(Some(_))));
    assert_eq!(w.meta().version, version, "an early resume that moves nothing commits nothing");
}

#[test]
fn a_resume_corrects_the_due_time_a_signal_no_wait_takes_set() {
    let mut w = World::new(plan(seq(vec![step(0), sleep(100.0), step(1)]), 2), Mode::Sequential);
    let mut d = w.start(json!(1), true);
    let End::Suspended(Some(until)) = w.drive(&mut d) else { panic!() };
    drop(d);
    w.send("unrelated", &json!(1));
    assert_eq!(w.meta().due_at, Some(w.now), "the signal made it due");
    let mut d = w.load();
    assert_eq!(w.drive(&mut d), End::Suspended(Some(until)));
    assert_eq!(w.meta().due_at, Some(until), "due at the sleep's end again");
}

#[test]
fn internal_notes_are_skipped_but_seen() {
    use crate::codec::{encode_signal, Signal};
    let note = |name: &str, seq: u64| {
        (seq, encode_signal(&Signal { name: name.into(), payload: b"x".to_vec(), sent_at: 1.0 }))
    };
    let inbox = super::sort_inbox("i", vec![note("!task", 1), note("go", 2), note("!task", 3)], 0).unwrap();
    assert_eq!(inbox.arrivals, vec![(2, "go".to_string())]);
    assert_eq!((inbox.internal, inbox.newest), (3, 3));
}
