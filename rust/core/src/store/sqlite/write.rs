//! The writes: create, commit, signal, delete, purge (each inside the caller's transaction).

use rusqlite::types::Value;
use rusqlite::{params, params_from_iter, Connection, ErrorCode, OptionalExtension};

use super::rows::{corrupt_status, pack};
use super::{placeholders, Res, FINISHED};
use crate::error::CoreError;
use crate::status::Status;
use crate::store::{check_lease, check_version, effective_due, finished_instance, Commit, InstanceMeta};

/// What [`apply`] reads of the instance row first: `?1` id.
pub(super) const COMMIT_READ_SQL: &str =
    "SELECT status, due_at, error, owner, lease_until FROM instances WHERE id = ?1";

/// The append of [`apply`], checking the version: `?1` id, `?2` new version, `?3` data,
/// `?4` packed, `?5` commit time, `?6` expected version.
pub(super) const COMMIT_APPEND_SQL: &str = "INSERT INTO records (instance_id, version, idx, data, packed, at)
     SELECT ?1, ?2, 0, ?3, ?4, ?5 WHERE EXISTS (SELECT 1 FROM records WHERE instance_id = ?1 AND version = ?6)";

/// The instance-row write of [`apply`], when a field the row keeps changes: `?1` id, `?2` status,
/// `?3` commit time, `?4` due time, `?5` header or NULL, `?6` version, `?7` error, `?8` whether
/// the lease goes.
pub(super) const COMMIT_UPDATE_SQL: &str =
    "UPDATE instances SET status = ?2, updated_at = ?3, due_at = ?4, header = COALESCE(?5, header), version = ?6,
         error = ?7, owner = CASE WHEN ?8 THEN NULL ELSE owner END,
         lease_until = CASE WHEN ?8 THEN NULL ELSE lease_until END
     WHERE id = ?1";

/// Appends the one log row of a commit (version `version`, see [`pack`]).
fn insert_log(conn: &Connection, id: &str, version: u64, records: &[Vec<u8>], at: f64) -> rusqlite::Result<usize> {
    let (data, packed) = pack(records);
    conn.prepare_cached(
        "INSERT INTO records (instance_id, version, idx, data, packed, at) VALUES (?1, ?2, 0, ?3, ?4, ?5)",
    )?
    .execute(params![id, version, data, packed, at])
}

/// Writes a new instance (version 1) unless one with its id exists; whether it wrote it.
pub(super) fn create(conn: &Connection, meta: &InstanceMeta, header: &[u8], records: &[Vec<u8>]) -> Res<bool> {
    let inserted = conn
        .prepare_cached(
            "INSERT INTO instances (id, workflow, plan_hash, status, version, created_at, updated_at, due_at,
                                    owner, lease_until, error, seq, header)
             VALUES (?1, ?2, ?3, ?4, 1, ?5, ?6, ?7, ?8, ?9, ?10,
                     (SELECT COALESCE(MAX(seq), 0) + 1 FROM instances), ?11)
             ON CONFLICT (id) DO NOTHING",
        )?
        .execute(params![
            meta.id,
            meta.workflow,
            meta.plan_hash,
            meta.status.as_str(),
            meta.created_at,
            meta.updated_at,
            meta.due_at,
            meta.owner,
            meta.lease_until,
            meta.error,
            header
        ])?;
    if inserted == 0 {
        return Ok(false);
    }
    insert_log(conn, &meta.id, 1, records, meta.updated_at)?;
    Ok(true)
}

/// Applies one commit, with the checks of the contract in its order (unknown instance, lease,
/// version) and its helpers, so that it decides exactly as the memory store does.
///
/// It reads the instance row (one lookup), then appends the commit's one log row, inserted only
/// if version `expected` exists (the primary key also rejects a second writer of the same
/// version; under the write lock there is none). The instance row is written only when a field
/// it keeps changes (status, due time, header, error, lease), so a step commit on a chain costs
/// one lookup and one INSERT.
pub(super) fn apply(conn: &Connection, c: &Commit<'_>) -> Res<()> {
    type Row = (String, Option<f64>, Option<String>, Option<String>, Option<f64>);
    let row: Option<Row> = conn
        .prepare_cached(COMMIT_READ_SQL)?
        .query_row([c.id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)))
        .optional()?;
    let Some((status, due_at, error, holder, until)) = row else {
        return Err(CoreError::UnknownInstance(c.id.to_string()).into());
    };
    check_lease(c.id, c.owner, holder.as_deref(), until, c.updated_at)?;
    let new = c.expected_version + 1;
    let (data, packed) = pack(c.records);
    let inserted = conn.prepare_cached(COMMIT_APPEND_SQL)?.execute(params![
        c.id,
        new,
        data,
        packed,
        c.updated_at,
        c.expected_version
    ]);
    let inserted = match inserted {
        Err(e) if e.sqlite_error_code() == Some(ErrorCode::ConstraintViolation) => 0,
        other => other?,
    };
    if inserted == 0 {
        return Err(conflict(conn, c)?.into());
    }
    let newest_signal = if c.status == Status::Suspended && c.due_at.is_none_or(|d| d > c.updated_at) {
        // (only a suspending commit's due time depends on the inbox, and only when it would be later)
        conn.prepare_cached("SELECT COALESCE(MAX(seq), 0) FROM signals WHERE instance_id = ?1")?
            .query_row([c.id], |r| r.get(0))?
    } else {
        0
    };
    let due = effective_due(c, newest_signal);
    let drop_lease = c.owner.is_none() || c.status.is_finished();
    let changed = status != c.status.as_str()
        || due_at != due
        || c.header.is_some()
        || error.as_deref() != c.error
        || (drop_lease && (holder.is_some() || until.is_some()));
    if changed {
        conn.prepare_cached(COMMIT_UPDATE_SQL)?.execute(params![
            c.id,
            c.status.as_str(),
            c.updated_at,
            due,
            c.header,
            new,
            c.error,
            drop_lease
        ])?;
    }
    Ok(())
}

/// The conflict of a commit whose append matched nothing (its lease was fine).
fn conflict(conn: &Connection, c: &Commit<'_>) -> Res<CoreError> {
    let found: Option<u64> = conn
        .prepare_cached("SELECT MAX(version) FROM records WHERE instance_id = ?1")?
        .query_row([c.id], |r| r.get(0))?;
    check_version(c.id, c.expected_version, found.unwrap_or(0))?;
    Ok(CoreError::Store(format!("instance {:?}: commit matched no row", c.id)))
}

/// Appends a signal and marks the instance due at `now` (keeping an earlier due time).
pub(super) fn send_signal(conn: &Connection, label: &str, id: &str, record: &[u8], now: f64) -> Res<u64> {
    let status: Option<String> =
        conn.prepare_cached("SELECT status FROM instances WHERE id = ?1")?.query_row([id], |r| r.get(0)).optional()?;
    let status = status.ok_or_else(|| CoreError::UnknownInstance(id.to_string()))?;
    let status = Status::parse(&status).ok_or_else(|| corrupt_status(label, id, &status))?;
    if status.is_finished() {
        return Err(finished_instance(id, status).into());
    }
    let seq: u64 = conn
        .prepare_cached(
            "INSERT INTO signals (instance_id, seq, data)
             SELECT ?1, COALESCE(MAX(seq), 0) + 1, ?2 FROM signals WHERE instance_id = ?1
             RETURNING seq",
        )?
        .query_row(params![id, record], |r| r.get(0))?;
    conn.prepare_cached("UPDATE instances SET due_at = MIN(COALESCE(due_at, ?2), ?2) WHERE id = ?1")?
        .execute(params![id, now])?;
    Ok(seq)
}

/// Deletes an instance with its log and inbox; whether it existed.
pub(super) fn delete(conn: &Connection, id: &str) -> Res<bool> {
    conn.prepare_cached("DELETE FROM records WHERE instance_id = ?1")?.execute([id])?;
    conn.prepare_cached("DELETE FROM signals WHERE instance_id = ?1")?.execute([id])?;
    Ok(conn.prepare_cached("DELETE FROM instances WHERE id = ?1")?.execute([id])? > 0)
}

/// The three DELETEs of a purge over `n` statuses (bound as `?1` = before, then the statuses).
pub(super) fn purge_sql(n: usize) -> [String; 3] {
    // FINISHED is implied by the statuses, but spelled out so the partial index applies.
    let doomed = format!("{FINISHED} AND updated_at < ?1 AND status IN ({})", placeholders(n));
    [
        format!("DELETE FROM records WHERE instance_id IN (SELECT id FROM instances WHERE {doomed})"),
        format!("DELETE FROM signals WHERE instance_id IN (SELECT id FROM instances WHERE {doomed})"),
        format!("DELETE FROM instances WHERE {doomed}"),
    ]
}

/// Deletes the finished instances of `selected` statuses last updated before `before`.
pub(super) fn purge(conn: &Connection, before: f64, selected: &[&str]) -> Res<u64> {
    let [records_sql, signals_sql, instances_sql] = purge_sql(selected.len());
    let mut args: Vec<Value> = vec![Value::Real(before)];
    args.extend(selected.iter().map(|s| Value::Text((*s).into())));
    conn.prepare_cached(&records_sql)?.execute(params_from_iter(args.iter()))?;
    conn.prepare_cached(&signals_sql)?.execute(params_from_iter(args.iter()))?;
    Ok(conn.prepare_cached(&instances_sql)?.execute(params_from_iter(args.iter()))? as u64)
}
