//! How an instance's indexed fields and its log records are laid out in rows.
//!
//! **Versions.** An instance's version is the highest commit version in its log: every commit
//! appends exactly one row to `records` (an empty marker when it carries no record), so a step
//! commit is a single INSERT and writes the instance row only when a field the row keeps changes
//! (status, due time, header, error, lease). The `version` and `updated_at` columns of `instances`
//! are those of the row's last write; the current ones come from the log's last row, whose `at`
//! is the commit time (NULL in rows written by schema 1, which then falls back to the column).
//!
//! **Packing.** The records of one commit share one row: `data` holds the one record as is
//! (`packed` NULL), nothing (a marker: `data` NULL), or, for two or more, each record framed by
//! its length as a varint (`packed` = how many). Schema 1 wrote one row per record (`idx` 0, 1,
//! ...), never packed; those rows read back unchanged.

use rusqlite::Row;

use crate::error::{CoreError, Result};
use crate::status::Status;
use crate::store::InstanceMeta;
use crate::varint;

/// The indexed fields of an instance, in the order [`raw_meta`] reads them.
pub(super) const INSTANCE_COLUMNS: &str = "id, workflow, plan_hash, status,
     (SELECT MAX(r.version) FROM records r WHERE r.instance_id = instances.id),
     created_at,
     COALESCE((SELECT r.at FROM records r WHERE r.instance_id = instances.id ORDER BY r.version DESC LIMIT 1),
              updated_at),
     due_at, owner, lease_until, error";

/// How many columns [`INSTANCE_COLUMNS`] has (the next one is the caller's).
pub(super) const META_WIDTH: usize = 11;

/// An instance row as read, before its status is parsed.
pub(super) struct RawMeta {
    status: String,
    meta: InstanceMeta,
}

/// Reads the [`INSTANCE_COLUMNS`] of a row.
pub(super) fn raw_meta(r: &Row<'_>) -> rusqlite::Result<RawMeta> {
    Ok(RawMeta {
        status: r.get(3)?,
        meta: InstanceMeta {
            id: r.get(0)?,
            workflow: r.get(1)?,
            plan_hash: r.get(2)?,
            status: Status::Pending,
            version: r.get::<_, Option<u64>>(4)?.unwrap_or(0),
            created_at: r.get(5)?,
            updated_at: r.get(6)?,
            due_at: r.get(7)?,
            owner: r.get(8)?,
            lease_until: r.get(9)?,
            error: r.get(10)?,
        },
    })
}

impl RawMeta {
    /// The fields, with the status parsed; `label` names the store in the error.
    pub(super) fn parse(self, label: &str) -> Result<InstanceMeta> {
        let RawMeta { status, mut meta } = self;
        meta.status = Status::parse(&status).ok_or_else(|| corrupt_status(label, &meta.id, &status))?;
        Ok(meta)
    }
}

pub(super) fn corrupt_status(label: &str, id: &str, status: &str) -> CoreError {
    CoreError::Corrupt(format!("{label}: instance {id:?} has unknown status {status:?}"))
}

/// The `(data, packed)` of the one row that holds a commit's records.
pub(super) fn pack(records: &[Vec<u8>]) -> (Option<std::borrow::Cow<'_, [u8]>>, Option<i64>) {
    match records {
        [] => (None, None),
        [one] => (Some(one.as_slice().into()), None),
        many => {
            let len = many.iter().map(|r| r.len() + 2).sum();
            let mut out = Vec::with_capacity(len);
            for r in many {
                varint::put(&mut out, r.len() as u64);
                out.extend_from_slice(r);
            }
            (Some(out.into()), Some(many.len() as i64))
        }
    }
}

/// Appends the records of one row (see [`pack`]) to `out`.
pub(super) fn unpack(data: Option<Vec<u8>>, packed: Option<i64>, out: &mut Vec<Vec<u8>>) -> Result<()> {
    let (Some(data), Some(n)) = (data.as_deref(), packed) else {
        out.extend(data);
        return Ok(());
    };
    let bad = |why: &str| CoreError::Corrupt(format!("a packed log row {why}"));
    let mut pos = 0;
    for _ in 0..n {
        let len = varint::read(data, &mut pos).map_err(|_| bad("has a broken length"))?;
        let end = usize::try_from(len).ok().and_then(|l| pos.checked_add(l)).filter(|&e| e <= data.len());
        let end = end.ok_or_else(|| bad("is shorter than its lengths say"))?;
        out.push(data[pos..end].to_vec());
        pos = end;
    }
    if pos != data.len() {
        return Err(bad("has bytes after its last record"));
    }
    Ok(())
}

/// Reads `(data, packed)` from columns 0 and 1 of a row.
pub(super) fn log_row(r: &Row<'_>) -> rusqlite::Result<(Option<Vec<u8>>, Option<i64>)> {
    Ok((r.get(0)?, r.get(1)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packed_rows_round_trip() {
        let cases: Vec<Vec<Vec<u8>>> = vec![
            vec![],
            vec![vec![]],
            vec![b"a".to_vec()],
            vec![vec![], vec![]],
            vec![vec![7; 300], b"xy".to_vec(), vec![]],
        ];
        for recs in cases {
            let (data, packed) = pack(&recs);
            let mut out = Vec::new();
            unpack(data.map(|d| d.into_owned()), packed, &mut out).unwrap();
            if recs.is_empty() {
                assert!(out.is_empty());
            } else {
                assert_eq!(out, recs);
            }
        }
        assert!(unpack(Some(vec![5, 1]), Some(1), &mut Vec::new()).is_err());
        assert!(unpack(Some(vec![0, 0]), Some(1), &mut Vec::new()).is_err());
    }
}
