//! The reads: an instance, its log and inbox, listings, counts and due instances.

use std::sync::LazyLock;

use rusqlite::types::Value;
use rusqlite::{params, params_from_iter, Connection, OptionalExtension};

use super::rows::{log_row, raw_meta, unpack, RawMeta, INSTANCE_COLUMNS, META_WIDTH};
use super::{placeholders, Res};
use crate::error::CoreError;
use crate::status::Status;
use crate::store::{Count, InstanceMeta, ListPage, ListQuery, StoredInstance};

/// `n` as an SQL `LIMIT` (-1: none).
pub(super) fn sql_limit(n: Option<usize>) -> i64 {
    n.map_or(-1, |n| i64::try_from(n).unwrap_or(i64::MAX))
}

pub(super) fn get(conn: &Connection, label: &str, id: &str) -> Res<Option<StoredInstance>> {
    let raw: Option<(RawMeta, Vec<u8>)> = conn
        .prepare_cached(&format!("SELECT {INSTANCE_COLUMNS}, header FROM instances WHERE id = ?1"))?
        .query_row([id], |r| Ok((raw_meta(r)?, r.get(META_WIDTH)?)))
        .optional()?;
    Ok(raw.map(|(raw, header)| raw.parse(label).map(|meta| StoredInstance { meta, header })).transpose()?)
}

pub(super) const RECORDS_SQL: &str =
    "SELECT data, packed FROM records WHERE instance_id = ?1 AND version > ?2 ORDER BY version, idx";

/// The records of the commits after version `after`, in commit order.
pub(super) fn records(conn: &Connection, id: &str, after: u64) -> Res<Vec<Vec<u8>>> {
    let mut stmt = conn.prepare_cached(RECORDS_SQL)?;
    let mut rows = stmt.query(params![id, after])?;
    let mut out = Vec::new();
    while let Some(r) = rows.next()? {
        let (data, packed) = log_row(r)?;
        unpack(data, packed, &mut out)?;
    }
    Ok(out)
}

/// The inbox signals numbered above `after`.
pub(super) fn signals(conn: &Connection, id: &str, after: u64) -> Res<Vec<(u64, Vec<u8>)>> {
    Ok(conn
        .prepare_cached("SELECT seq, data FROM signals WHERE instance_id = ?1 AND seq > ?2 ORDER BY seq")?
        .query_map(params![id, after], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<rusqlite::Result<_>>()?)
}

/// Runs the query `sql` over `args` and parses its [`INSTANCE_COLUMNS`] rows.
pub(super) fn metas(conn: &Connection, label: &str, sql: &str, args: &[Value]) -> Res<Vec<InstanceMeta>> {
    let raw: Vec<RawMeta> = conn
        .prepare_cached(sql)?
        .query_map(params_from_iter(args.iter()), raw_meta)?
        .collect::<rusqlite::Result<_>>()?;
    Ok(raw.into_iter().map(|r| r.parse(label)).collect::<crate::error::Result<_>>()?)
}

/// One page of a listing; the cursor is the creation `seq` of the page's last instance.
pub(super) fn list(conn: &Connection, label: &str, q: &ListQuery) -> Res<ListPage> {
    let before = match &q.cursor {
        None => i64::MAX,
        Some(c) => c
            .parse::<u64>()
            .map(|v| i64::try_from(v).unwrap_or(i64::MAX))
            .map_err(|_| CoreError::InvalidState(format!("invalid list cursor {c:?}")))?,
    };
    // Deduplicate in lifecycle order so equal queries share one cached statement.
    let statuses: Vec<Status> = Status::ALL.into_iter().filter(|s| q.statuses.contains(s)).collect();
    let mut filters = vec!["seq < ?".to_string()];
    let mut args: Vec<Value> = vec![Value::Integer(before)];
    if !statuses.is_empty() {
        filters.push(format!("status IN ({})", placeholders(statuses.len())));
        args.extend(statuses.iter().map(|s| Value::Text(s.as_str().into())));
    }
    if let Some(w) = &q.workflow {
        filters.push("workflow = ?".into());
        args.push(Value::Text(w.clone()));
    }
    if let Some(h) = &q.plan_hash {
        filters.push("plan_hash = ?".into());
        args.push(Value::Text(h.clone()));
    }
    // One more than asked for tells whether another page follows.
    args.push(Value::Integer(sql_limit(q.limit.map(|n| n.saturating_add(1)))));
    let sql = list_sql(&filters.join(" AND "));
    let mut stmt = conn.prepare_cached(&sql)?;
    let rows = stmt.query_map(params_from_iter(args.iter()), |r| Ok((raw_meta(r)?, r.get::<_, i64>(META_WIDTH)?)))?;
    let mut items = Vec::new();
    let mut seqs = Vec::new();
    for row in rows {
        let (raw, seq) = row?;
        items.push(raw.parse(label)?);
        seqs.push(seq);
    }
    let mut cursor = None;
    if let Some(n) = q.limit {
        if items.len() > n {
            items.truncate(n);
            // (the memory store's rule: a page cut to nothing has no cursor either)
            cursor = n.checked_sub(1).map(|last| seqs[last].to_string());
        }
    }
    Ok(ListPage { items, cursor })
}

/// The listing query over `filter` (the last placeholder is the limit).
pub(super) fn list_sql(filter: &str) -> String {
    format!("SELECT {INSTANCE_COLUMNS}, seq FROM instances WHERE {filter} ORDER BY seq DESC LIMIT ?")
}

pub(super) const COUNTS_SQL: &str = "SELECT workflow, status, count(*) FROM instances GROUP BY status, workflow";

pub(super) fn counts(conn: &Connection, label: &str) -> Res<Vec<Count>> {
    let rows: Vec<(String, String, u64)> = conn
        .prepare_cached(COUNTS_SQL)?
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
        .collect::<rusqlite::Result<_>>()?;
    let mut out = Vec::with_capacity(rows.len());
    for (workflow, status, count) in rows {
        let status = Status::parse(&status).ok_or_else(|| {
            CoreError::Corrupt(format!("{label}: workflow {workflow:?} has unknown status {status:?}"))
        })?;
        out.push(Count { workflow, status, count });
    }
    out.sort_by(|a, b| (a.workflow.as_str(), a.status as u8).cmp(&(b.workflow.as_str(), b.status as u8)));
    Ok(out)
}

pub(super) static DUE_SQL: LazyLock<String> = LazyLock::new(|| {
    // (the rule of `is_due`; the status term is the index's own, so that the index applies)
    format!(
        "SELECT {INSTANCE_COLUMNS} FROM instances INDEXED BY instances_waiting_due_at
         WHERE status IN ('pending', 'suspended') AND due_at IS NOT NULL AND due_at <= ?1
           AND (owner IS NULL OR lease_until IS NULL OR lease_until <= ?1)
         ORDER BY due_at, seq LIMIT ?2"
    )
});

pub(super) fn due(conn: &Connection, label: &str, now: f64, limit: Option<usize>) -> Res<Vec<InstanceMeta>> {
    metas(conn, label, &DUE_SQL, &[Value::Real(now), Value::Integer(sql_limit(limit))])
}
