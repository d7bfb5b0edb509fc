//! State-machine tests of rejected signals: a payload that does not decode into its wait's type
//! is recorded as rejected (`<key>@r<seq>`), the wait goes on, and the rejected signal is never
//! offered again, also after a restart.

use super::tests::{plan, seq, step, Signals, TestHost};
use super::*;
use crate::plan::NodeSpec;
use serde_json::json;

/// The test host, except that the payloads of odd-numbered signals do not decode.
fn odd_signals_fail() -> Signals {
    Signals(|seq| {
        if seq % 2 == 1 {
            return Err(Failure::new("CodecError", format!("signal {seq} is odd")));
        }
        TestHost.signal(0, seq)
    })
}

fn wait(name: &str, timeout: Option<f64>) -> NodeSpec {
    NodeSpec::WaitSignal { name: name.into(), wait: 0, timeout, on_timeout: None }
}

#[test]
fn a_signal_that_does_not_decode_is_rejected_and_the_wait_goes_on() {
    let p = plan(seq(vec![wait("go", Some(10.0))]), 1, None);
    let mut inst = Instance::start("r", p.clone(), json!(0), 0.0, &mut odd_signals_fail());
    inst.add_signals([(1, "go".to_string())]);
    inst.deliver(1.0, &mut odd_signals_fail());
    assert!(inst.is_waiting(), "a rejected payload does not end the wait");
    assert_eq!(inst.status(), Status::Running);
    assert_eq!(inst.next_deadline(), Some(10.0), "the wait's timeout still holds");
    let records = inst.take_records();
    assert_eq!(
        records,
        vec![
            Record::Decision { key: "0@due".into(), value: "10.0".into() },
            Record::Decision { key: "0@r1".into(), value: "CodecError: signal 1 is odd".into() },
        ]
    );
    // after a restart the rejected signal counts as consumed: it is never offered again, even
    // to a host that would now decode it
    let mut again = Instance::resume("r", p, json!(0), 0.0, 2.0, &records, &mut TestHost);
    again.add_signals([(1, "go".to_string())]);
    again.deliver(2.0, &mut TestHost);
    assert!(again.is_waiting(), "signal 1 was rejected for good");
    assert!(again.take_records().is_empty());
    again.add_signals([(2, "go".to_string())]);
    again.deliver(3.0, &mut TestHost);
    assert_eq!(again.output(), Some(&json!(2000)));
}

#[test]
fn a_rejected_signal_that_arrived_before_its_wait_is_skipped_for_the_next() {
    let p = plan(seq(vec![step(0), wait("go", None)]), 1, None);
    let mut inst = Instance::start("r", p, json!(0), 0.0, &mut odd_signals_fail());
    inst.add_signals([(3, "go".to_string()), (4, "go".to_string())]);
    let t = inst.pop_ready(0.0).expect("step 0 is ready");
    inst.complete(t, json!(1), b"1".to_vec(), 0.0, &mut odd_signals_fail());
    assert_eq!(inst.output(), Some(&json!(4000)));
    let decisions: Vec<Record> =
        inst.take_records().into_iter().filter(|r| matches!(r, Record::Decision { .. })).collect();
    assert_eq!(
        decisions,
        vec![
            Record::Decision { key: "1@r3".into(), value: "CodecError: signal 3 is odd".into() },
            Record::Decision { key: "1@".into(), value: "4".into() },
        ]
    );
}
