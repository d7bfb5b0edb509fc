//! Pins the checkpoint record format: the bytes in `tests/golden/` must keep decoding to the same
//! records, and encoding those records must give the same bytes. `header_outline.bin` is a format-2
//! header (with the plan's outline); the log records are still format 1. `header.bin` is the
//! format-1 header that older builds wrote: it must keep decoding (without an outline), and is
//! never rewritten. Regenerate the current fixtures (only when bumping the format) with
//! `TIDEFLOW_WRITE_GOLDEN=1 cargo test --test golden`.

use std::path::PathBuf;

use tideflow_core::codec::{
    decode_header, decode_record, encode_header, encode_record, Header, Outcome, Record, StepRecord,
};
use tideflow_core::outline;
use tideflow_core::plan::Plan;

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/golden")
}

/// The header stored in the format-1 fixture `header.bin`.
fn format_1_header() -> Header {
    Header {
        workflow: "checkout".into(),
        version: Some("2".into()),
        plan_hash: "0123456789abcdef0123456789abcdef".into(),
        input: br#"{"id":"order-42","total":"1499.70"}"#.to_vec(),
        created_at: 1_764_140_000.25,
        output: Some(br#""done""#.to_vec()),
        error: None,
        outline: None,
    }
}

/// A plan of three steps and a branch, as the Python builder would emit it.
fn checkout_plan() -> Plan {
    Plan::from_json(
        r#"{"name":"checkout","steps":[{"name":"reserve"},{"name":"charge"},{"name":"ship"}],
            "fns":["is_big"],"root":{"kind":"seq","children":[{"kind":"step","step":0},
            {"kind":"branch","cond":0,"then":{"kind":"step","step":1}},{"kind":"step","step":2}]}}"#,
    )
    .expect("valid plan")
}

fn fixtures() -> Vec<(&'static str, Vec<u8>)> {
    let plan = checkout_plan();
    let header = Header { plan_hash: plan.hash.clone(), outline: Some(plan.outline.clone()), ..format_1_header() };
    let done = Record::Step(StepRecord {
        key: "3.p1".into(),
        step: "update_ledger".into(),
        attempt: 1,
        started_at: 1_764_140_001.5,
        finished_at: 1_764_140_001.75,
        outcome: Outcome::Completed(br#"{"booked":true}"#.to_vec()),
        next: vec![("4".into(), 1)],
    });
    let failed = Record::Step(StepRecord {
        key: "0".into(),
        step: "reserve".into(),
        attempt: 2,
        started_at: 10.0,
        finished_at: 11.0,
        outcome: Outcome::Failed {
            error: br#"{"type":"TimeoutError","message":"slow","traceback":""}"#.to_vec(),
            retry_at: Some(13.0),
        },
        next: vec![],
    });
    let decision = Record::Decision { key: "2?".into(), value: "true".into() };
    let enqueued = Record::Enqueued(vec![("0".into(), 1), ("1.m0".into(), 3)]);
    vec![
        ("header_outline.bin", encode_header(&header)),
        ("step_completed.bin", encode_record(&done)),
        ("step_failed.bin", encode_record(&failed)),
        ("decision.bin", encode_record(&decision)),
        ("enqueued.bin", encode_record(&enqueued)),
    ]
}

#[test]
fn golden_records_are_stable() {
    let write = std::env::var_os("TIDEFLOW_WRITE_GOLDEN").is_some();
    for (name, bytes) in fixtures() {
        let path = dir().join(name);
        if write {
            std::fs::create_dir_all(dir()).expect("create tests/golden");
            std::fs::write(&path, &bytes).expect("write fixture");
        }
        let stored = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert_eq!(stored, bytes, "{name}: the encoder no longer writes the pinned bytes");
        if name.starts_with("header") {
            assert_eq!(encode_header(&decode_header(&stored).expect("decodes")), stored);
        } else {
            assert_eq!(encode_record(&decode_record(&stored).expect("decodes")), stored);
        }
    }
}

#[test]
fn format_1_headers_still_decode_without_an_outline() {
    let stored = std::fs::read(dir().join("header.bin")).expect("the format-1 fixture");
    assert_eq!(stored[2], 1, "header.bin is the format-1 header and is never rewritten");
    assert_eq!(decode_header(&stored).expect("decodes"), format_1_header());
    // written again (an instance finishing on a newer build) it becomes format 2
    assert_eq!(encode_header(&format_1_header())[2], 2);
}

#[test]
fn the_plan_hash_and_outline_are_pinned() {
    // the hash is part of what every stored instance pins: a change here strands them all
    let plan = checkout_plan();
    assert_eq!(plan.hash, PINNED_HASH, "the plan hash formula changed");
    let header = decode_header(&std::fs::read(dir().join("header_outline.bin")).expect("fixture")).expect("decodes");
    assert_eq!(header.outline.as_deref(), Some(&plan.outline[..]));
    assert_eq!(outline::hash(&header.workflow, header.outline.as_deref().unwrap()), header.plan_hash);
}

#[test]
fn only_headers_are_written_in_format_2() {
    assert_eq!(encode_header(&format_1_header())[2], 2);
    let mut rec = encode_record(&Record::Decision { key: "2?".into(), value: "true".into() });
    assert_eq!(rec[2], 1);
    rec[2] = 2; // a log record of format 2 does not exist: rejected, naming the format
    let e = decode_record(&rec).unwrap_err().to_string();
    assert!(e.contains("format 2 (kind 3) is not supported"), "{e}");
}

const PINNED_HASH: &str = "5234c3445c867dfc93dfadb6d8a3bcd0";
