//! Two rules of the policy that its first tests missed, found by a later review: a wait entered
//! when a timer fires gets its own last look, and reading a signal corrects the due time it set.

use serde_json::json;

use super::tests::{par, plan, seq, sleep, step, wait, Did, End, World};
use super::*;

/// "A last look before suspending": a wait entered because a timer fired (here the timeout
/// path of another wait) is left waiting without a look, because `looked` is reset only by
/// `settle` and `take_inbox`, not when a timer moves the instance. The asyncio driver calls
/// `wake()` after idling, but not when the deadline passes while a task is still out
/// (`_settle_some`): then a signal sent meanwhile waits until that task ends.
#[test]
fn a_wait_entered_when_a_timer_fires_gets_its_own_last_look() {
    let root = par(vec![wait("a", Some(10.0), Some(wait("b", None, None))), step(1)]);
    let mut w = World::new(plan(root, 2), Mode::Concurrent);
    let mut d = w.start(json!(1), true);
    assert_eq!(w.one(&mut d), Did::Ran(vec![("p1".into(), 1)])); // step 1 stays out
    assert_eq!(w.one(&mut d), Did::Read { after: 0, found: 0 });
    assert_eq!(w.one(&mut d), Did::Waited(Some(1010.0)));
    w.send("b", &json!(7)); // from another process: no wake-up here
    w.now = 1010.0; // the deadline passes, the task still runs
    assert!(matches!(w.one(&mut d), Did::Committed(..)), "wait a timed out: {:?}", w.trace);
    let next = w.one(&mut d);
    assert_eq!(next, Did::Read { after: 0, found: 1 }, "wait b is left waiting without a look");
}

/// The store's due time after a woken driver reads a signal no wait takes: `send_signal` made
/// the instance due at once, and a resume corrects that (`a_resume_corrects_the_due_time_...`),
/// but a driver that keeps the instance (concurrent, woken) compares with the due time it last
/// committed, sees no change, and commits nothing: the store keeps listing the instance as due
/// (`Store::due`) while this driver holds it, until its next commit.
#[test]
fn a_woken_driver_corrects_the_due_time_a_signal_no_wait_takes_set() {
    let mut w = World::new(plan(seq(vec![step(0), sleep(100.0), step(1)]), 2), Mode::Concurrent);
    let mut d = w.start(json!(1), true);
    let End::Suspended(Some(until)) = w.drive(&mut d) else { panic!("{:?}", w.trace) };
    w.send("unrelated", &json!(1));
    d.wake();
    assert_eq!(w.one(&mut d), Did::Read { after: 0, found: 1 });
    while !matches!(w.one(&mut d), Did::Waited(_)) {}
    assert_eq!(w.meta().due_at, Some(until), "still due at the signal's time, not the sleep's end");
}
