//! The writes: create, commit, signal, delete, purge (each inside the caller's transaction).

use rusqlite::types::Value;
use rusqlite::{params, params_from_iter, Connection, ErrorCode, OptionalExtension};

use super::rows::{corrupt_status, pack};
use super::{placeholders, Res, FINISHED};
use crate::error::CoreError;
use crate::status::Status;
use crate::store::{check_lease, check_version, finished_instance, Commit, InstanceMeta};

/// The append of [`apply`]: `?1` id, `?2` new version, `?3` data, `?4` packed, `?5` now, `?6`
/// expected version, `?7` owner.
pub(super) const COMMIT_APPEND_SQL: &str = "INSERT INTO records (instance_id, version, idx, data, packed, at)
             SELECT ?1, ?2, 0, ?3, ?4, ?5
             WHERE EXISTS (SELECT 1 FROM records WHERE instance_id = ?1 AND version = ?6)
               AND EXISTS (SELECT 1 FROM instances WHERE id = ?1 AND CASE WHEN ?7 IS NULL
                               THEN owner IS NULL OR lease_until IS NULL OR lease_until <= ?5
                               ELSE owner = ?7 AND lease_until > ?5 END)";

/// The instance-row write of [`apply`] (see there).
pub(super) const COMMIT_UPDATE_SQL: &str =
    "UPDATE instances SET status = ?1, updated_at = ?2, header = COALESCE(?4, header), version = ?6,
             due_at = due.t, error = ?8,
             owner = CASE WHEN ?9 THEN NULL ELSE owner END,
             lease_until = CASE WHEN ?9 THEN NULL ELSE lease_until END
         FROM (SELECT CASE WHEN ?1 = 'suspended'
                             AND EXISTS (SELECT 1 FROM signals WHERE instance_id = ?5 AND seq > ?7)
                           THEN MIN(COALESCE(?3, ?2), ?2) ELSE ?3 END AS t) AS due
         WHERE id = ?5
           AND (status IS NOT ?1 OR due_at IS NOT due.t OR ?4 IS NOT NULL OR error IS NOT ?8
                OR (?9 AND (owner IS NOT NULL OR lease_until IS NOT NULL)))";

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

/// Applies one commit.
///
/// The checks and the append are one statement: the commit's log row (version `expected + 1`)
/// is inserted only if version `expected` exists and the lease allows the writer (the rule of
/// [`check_lease`], judged at `updated_at`); the primary key rejects a second writer of the same
/// version. Only when that fails is anything read, to say why. The instance row is then written
/// only when a field it keeps changes, so a step commit on a chain costs one INSERT.
pub(super) fn apply(conn: &Connection, c: &Commit<'_>) -> Res<()> {
    let new = c.expected_version + 1;
    let (data, packed) = pack(c.records);
    let inserted = conn.prepare_cached(COMMIT_APPEND_SQL)?.execute(params![
        c.id,
        new,
        data,
        packed,
        c.updated_at,
        c.expected_version,
        c.owner
    ]);
    let inserted = match inserted {
        Err(e) if e.sqlite_error_code() == Some(ErrorCode::ConstraintViolation) => 0,
        other => other?,
    };
    if inserted == 0 {
        return Err(why_rejected(conn, c)?.into());
    }
    // `?9`: whether the lease goes (an owner-less or a finishing commit leaves none behind).
    // The due time is `effective_due`: a suspending commit that has not seen every signal leaves
    // the instance due now.
    conn.prepare_cached(COMMIT_UPDATE_SQL)?.execute(params![
        c.status.as_str(),
        c.updated_at,
        c.due_at,
        c.header,
        c.id,
        new,
        c.signals_seen,
        c.error,
        c.owner.is_none() || c.status.is_finished(),
    ])?;
    Ok(())
}

/// Why a commit's append matched nothing: the error of the first check that fails, in the order
/// the contract gives (unknown instance, lease, version).
fn why_rejected(conn: &Connection, c: &Commit<'_>) -> Res<CoreError> {
    type Found = (Option<String>, Option<f64>, Option<u64>);
    let found: Option<Found> = conn
        .prepare_cached(
            "SELECT owner, lease_until, (SELECT MAX(version) FROM records WHERE instance_id = ?1)
             FROM instances WHERE id = ?1",
        )?
        .query_row([c.id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .optional()?;
    let Some((holder, until, version)) = found else { return Ok(CoreError::UnknownInstance(c.id.to_string())) };
    check_lease(c.id, c.owner, holder.as_deref(), until, c.updated_at)?;
    check_version(c.id, c.expected_version, version.unwrap_or(0))?;
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
