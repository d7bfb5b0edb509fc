//! Pins the checkpoint record format: the bytes in `tests/golden/` were written by format 1 and
//! must keep decoding to the same records, and encoding those records must give the same bytes.
//! Regenerate (only when bumping the format) with `TIDEFLOW_WRITE_GOLDEN=1 cargo test --test golden`.

use std::path::PathBuf;

use tideflow_core::codec::{
    decode_header, decode_record, encode_header, encode_record, Header, Outcome, Record, StepRecord,
};

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/golden")
}

fn fixtures() -> Vec<(&'static str, Vec<u8>)> {
    let header = Header {
        workflow: "checkout".into(),
        version: Some("2".into()),
        plan_hash: "0123456789abcdef0123456789abcdef".into(),
        input: br#"{"id":"order-42","total":"1499.70"}"#.to_vec(),
        created_at: 1_764_140_000.25,
        output: Some(br#""done""#.to_vec()),
        error: None,
    };
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
        ("header.bin", encode_header(&header)),
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
        assert_eq!(stored, bytes, "{name}: the encoder no longer writes format-1 bytes");
        if name == "header.bin" {
            assert_eq!(encode_header(&decode_header(&stored).expect("decodes")), stored);
        } else {
            assert_eq!(encode_record(&decode_record(&stored).expect("decodes")), stored);
        }
    }
}
