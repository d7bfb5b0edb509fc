//! Leases: claim, extend, release (each inside the caller's write transaction, so that two
//! connections, in one process or two, never lease one instance at once).

use std::sync::LazyLock;

use rusqlite::types::Value;
use rusqlite::{params, Connection, OptionalExtension};

use super::read::sql_limit;
use super::rows::{raw_meta, INSTANCE_COLUMNS, META_WIDTH};
use super::Res;
use crate::error::CoreError;
use crate::store::{check_lease, claim_order, Claim, InstanceMeta};

/// The three kinds of claimable instance of one plan (the rules of [`crate::store::claimable`]),
/// each read in claim order (`COALESCE(due_at, updated_at)`, then `seq`) from an index:
/// `?1` = plan hash, `?2` = now, `?3` = limit (the first two).
///
/// The indexes are chosen for the commits' sake: a commit that suspends or resumes an instance
/// updates only the status and due-time indexes it updated before leases existed. So the
/// suspended ones are read from the due-time index of every plan (the one `due` reads), skipping other plans' due
/// instances (a backlog only of plans no worker claims).
pub(super) static CLAIM_SQL: LazyLock<[String; 3]> = LazyLock::new(|| {
    [
        // pending, no lease
        format!(
            "SELECT {INSTANCE_COLUMNS}, seq FROM instances INDEXED BY instances_claim_pending
             WHERE status = 'pending' AND owner IS NULL AND plan_hash = ?1
             ORDER BY COALESCE(due_at, updated_at), seq LIMIT ?3"
        ),
        // suspended and due, no lease (due_at is set, so it is the claim order)
        format!(
            "SELECT {INSTANCE_COLUMNS}, seq FROM instances INDEXED BY instances_waiting_due_at
             WHERE status IN ('pending', 'suspended') AND status = 'suspended' AND due_at IS NOT NULL AND due_at <= ?2 AND owner IS NULL AND plan_hash = ?1
             ORDER BY due_at, seq LIMIT ?3"
        ),
        // an expired lease, whatever the (unfinished) status; all of them (few: only what
        // workers held when they stopped), sorted by the caller on the current `updated_at`
        // (the column's may be older: see `rows`)
        format!(
            "SELECT {INSTANCE_COLUMNS}, seq FROM instances INDEXED BY instances_claim_leased
             WHERE owner IS NOT NULL AND plan_hash = ?1 AND (lease_until IS NULL OR lease_until <= ?2)
               AND status NOT IN ('completed', 'failed', 'cancelled')"
        ),
    ]
});

pub(super) fn claim(conn: &Connection, label: &str, c: &Claim<'_>) -> Res<Vec<InstanceMeta>> {
    let mut hits: Vec<(InstanceMeta, i64)> = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for hash in c.plan_hashes {
        if !seen.insert(hash.as_str()) {
            continue;
        }
        let args = [Value::Text(hash.clone()), Value::Real(c.now), Value::Integer(sql_limit(Some(c.limit)))];
        for (i, sql) in CLAIM_SQL.iter().enumerate() {
            let mut stmt = conn.prepare_cached(sql)?;
            let args = &args[..if i < 2 { 3 } else { 2 }];
            let rows = stmt.query_map(rusqlite::params_from_iter(args.iter()), |r| {
                Ok((raw_meta(r)?, r.get::<_, i64>(META_WIDTH)?))
            })?;
            for row in rows {
                let (raw, seq) = row?;
                hits.push((raw.parse(label)?, seq));
            }
        }
    }
    hits.sort_by(|a, b| claim_order(&a.0).total_cmp(&claim_order(&b.0)).then(a.1.cmp(&b.1)));
    hits.truncate(c.limit);
    let until = c.now + c.lease;
    let mut update = conn.prepare_cached("UPDATE instances SET owner = ?2, lease_until = ?3 WHERE id = ?1")?;
    let mut out = Vec::with_capacity(hits.len());
    for (mut m, _) in hits {
        update.execute(params![m.id, c.owner, until])?;
        m.owner = Some(c.owner.to_string());
        m.lease_until = Some(until);
        out.push(m);
    }
    Ok(out)
}

/// The holder and expiry of an instance's lease; `UnknownInstance` if there is no such instance.
fn lease_of(conn: &Connection, id: &str) -> Res<(Option<String>, Option<f64>)> {
    conn.prepare_cached("SELECT owner, lease_until FROM instances WHERE id = ?1")?
        .query_row([id], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?
        .ok_or_else(|| CoreError::UnknownInstance(id.to_string()).into())
}

pub(super) fn extend(conn: &Connection, id: &str, owner: &str, lease: f64, now: f64) -> Res<f64> {
    let (holder, until) = lease_of(conn, id)?;
    check_lease(id, Some(owner), holder.as_deref(), until, now)?;
    let until = now + lease;
    conn.prepare_cached("UPDATE instances SET lease_until = ?2 WHERE id = ?1")?.execute(params![id, until])?;
    Ok(until)
}

pub(super) fn release(conn: &Connection, id: &str, owner: &str) -> Res<bool> {
    let (holder, _) = lease_of(conn, id)?;
    if holder.as_deref() != Some(owner) {
        return Ok(false);
    }
    conn.prepare_cached("UPDATE instances SET owner = NULL, lease_until = NULL WHERE id = ?1")?.execute([id])?;
    Ok(true)
}
