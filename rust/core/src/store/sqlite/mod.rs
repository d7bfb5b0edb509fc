//! The SQLite store: one database file in WAL mode, safe to share between threads and processes
//! (each with its own [`SqliteStore`]). Every [`Store`] call that writes is one `BEGIN IMMEDIATE`
//! transaction, so writers serialise on the file lock instead of deadlocking, and a crash leaves
//! either the whole commit or none of it.
//!
//! The schema is versioned: `tideflow_meta` holds an application marker and `schema_version`, the
//! file header carries [`APPLICATION_ID`] and `user_version`, and [`MIGRATIONS`] brings an older
//! file up to date inside one transaction when it is opened.

use std::ffi::{c_int, c_void};
use std::fmt;

use rusqlite::types::Value;
use rusqlite::{ffi, params, params_from_iter, Connection, ErrorCode, OptionalExtension};

use super::{
    check_version, finished_instance, purge_selects, Commit, Created, InstanceMeta, ListQuery, Store, StoredInstance,
};

mod open;
mod space;

use crate::error::{CoreError, Result};
use crate::status::Status;
pub use open::{Durability, APPLICATION_ID, MIGRATIONS, SCHEMA_VERSION};

/// The condition of the partial `updated_at` index; a query repeats it verbatim to use the index.
const FINISHED: &str = "status IN ('completed', 'failed', 'cancelled')";

/// The indexed fields of an instance. Its version is the highest commit version in its log: every
/// commit appends at least one row (an empty marker when it carries no record), so a step commit
/// is a single INSERT and writes the instance row only when its status, due time or header changes.
/// (The `version` column of `instances` is the version of the row's last write, not the current one.)
const INSTANCE_COLUMNS: &str = "id, workflow, status,
     (SELECT MAX(r.version) FROM records r WHERE r.instance_id = instances.id),
     created_at, updated_at, due_at";

/// A [`Store`] kept in one SQLite database file.
pub struct SqliteStore {
    pub(super) conn: Connection,
    pub(super) label: String,
    /// The open file's identity in this process's registry (see `open::held`).
    pub(super) held: Option<open::held::FileId>,
}

impl Drop for SqliteStore {
    fn drop(&mut self) {
        if let Some(key) = self.held.take() {
            open::held::remove(key);
        }
    }
}

impl fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqliteStore").field("path", &self.label).finish_non_exhaustive()
    }
}

/// Failures inside a store call, before they get the store's name attached.
enum Fail {
    Sql(rusqlite::Error),
    Core(CoreError),
    /// The database file was deleted or moved away while open ([`has_moved`]).
    Moved,
}

impl From<rusqlite::Error> for Fail {
    fn from(e: rusqlite::Error) -> Self {
        Fail::Sql(e)
    }
}

impl From<CoreError> for Fail {
    fn from(e: CoreError) -> Self {
        Fail::Core(e)
    }
}

type Res<T> = std::result::Result<T, Fail>;

/// An open `BEGIN IMMEDIATE` transaction, rolled back on drop unless committed.
pub(super) struct WriteTxn<'c> {
    conn: &'c Connection,
    done: bool,
}

impl<'c> WriteTxn<'c> {
    pub(super) fn begin(conn: &'c Connection) -> rusqlite::Result<Self> {
        conn.prepare_cached("BEGIN IMMEDIATE")?.execute([])?;
        Ok(WriteTxn { conn, done: false })
    }

    pub(super) fn commit(mut self) -> rusqlite::Result<()> {
        self.conn.prepare_cached("COMMIT")?.execute([])?;
        self.done = true;
        Ok(())
    }
}

impl Drop for WriteTxn<'_> {
    fn drop(&mut self) {
        if !self.done && !self.conn.is_autocommit() {
            // Nothing useful to do if the rollback itself fails: SQLite rolls back on close anyway.
            let _ = self.conn.execute_batch("ROLLBACK");
        }
    }
}

/// Whether the database file was deleted, renamed, or replaced by another file since the
/// connection opened it: once that happens SQLite (in WAL mode) keeps committing into the orphaned
/// file, and everything written is lost when the store closes.
///
/// This is SQLite's `SQLITE_FCNTL_HAS_MOVED`: one `stat(2)` of the path SQLite opened (made
/// absolute at open, so a later `chdir` does not matter), compared with the inode of the open
/// file. A VFS without the file control (not the unix one) reports nothing; the check is then
/// skipped.
///
/// The cost is one path lookup in the kernel: 1.5–2.0 µs on the loaded 2-core VM this was measured
/// on (where a no-op syscall costs 0.2–0.35 µs and a step commit 43–72 µs, so about 3% of a commit;
/// `timing_moved_check` in `tests/sqlite_files.rs`). That is above the ~1 µs the step path aims
/// for there, and it is paid anyway, on every write transaction and every read: checking only
/// every N commits or every T ms would leave a window in which commits "succeed" into a file that
/// no longer has a name, which is the loss this check exists to prevent.
pub fn has_moved(conn: &Connection) -> bool {
    let mut moved: c_int = 0;
    // SAFETY: the handle is live for the borrow of `conn`, which is not used concurrently (the
    // store is `&mut` or single-threaded); "main" is a NUL-terminated schema name; for this
    // opcode SQLite writes one int through the pointer, which points to `moved`.
    let rc = unsafe {
        ffi::sqlite3_file_control(
            conn.handle(),
            c"main".as_ptr(),
            ffi::SQLITE_FCNTL_HAS_MOVED,
            (&mut moved as *mut c_int).cast::<c_void>(),
        )
    };
    rc == ffi::SQLITE_OK && moved != 0
}

/// Runs `f` inside one write transaction, committing only if it succeeds.
fn in_txn<T>(conn: &Connection, f: impl FnOnce(&Connection) -> Res<T>) -> Res<T> {
    let txn = WriteTxn::begin(conn)?;
    let out = f(conn)?;
    // Checked last, under the write lock and just before COMMIT, so that a file deleted or
    // replaced at any time up to here rolls the transaction back instead of committing it to
    // the orphan.
    if has_moved(conn) {
        return Err(Fail::Moved);
    }
    txn.commit()?;
    Ok(out)
}

/// Applies one commit inside the caller's transaction.
///
/// The version check and the append are one statement: the commit's rows carry version
/// `expected + 1`, inserted only if version `expected` exists; the primary key rejects a second
/// writer of the same version. The instance row is written only when the status, the due time or
/// the header changes, so a step commit on a chain costs one INSERT, like a raw one.
fn apply(conn: &Connection, c: &Commit<'_>) -> Res<()> {
    let new = c.expected_version + 1;
    // (the due-time rule of `effective_due`: a suspending commit that has not seen every signal
    // leaves the instance due now)
    conn.prepare_cached(
        "UPDATE instances SET status = ?1, updated_at = ?2, header = COALESCE(?4, header), version = ?6,
             due_at = CASE WHEN ?1 = 'suspended'
                             AND EXISTS (SELECT 1 FROM signals WHERE instance_id = ?5 AND seq > ?7)
                           THEN MIN(COALESCE(?3, ?2), ?2) ELSE ?3 END
         WHERE id = ?5 AND (status IS NOT ?1 OR due_at IS NOT ?3 OR ?4 IS NOT NULL)",
    )?
    .execute(params![c.status.as_str(), c.updated_at, c.due_at, c.header, c.id, new, c.signals_seen])?;
    let mut rows = c.records.iter().map(Vec::as_slice);
    let first: Option<&[u8]> = rows.next(); // None: a marker row keeps the version dense
    let inserted = conn
        .prepare_cached(
            "INSERT INTO records (instance_id, version, idx, data)
             SELECT ?1, ?2, 0, ?3
             WHERE EXISTS (SELECT 1 FROM records WHERE instance_id = ?1 AND version = ?4)",
        )?
        .execute(params![c.id, new, first, c.expected_version]);
    let inserted = match inserted {
        Err(e) if e.sqlite_error_code() == Some(ErrorCode::ConstraintViolation) => 0,
        other => other?,
    };
    if inserted == 0 {
        let found: Option<Option<u64>> = conn
            .prepare_cached(
                "SELECT (SELECT MAX(version) FROM records WHERE instance_id = ?1) FROM instances WHERE id = ?1",
            )?
            .query_row([c.id], |r| r.get(0))
            .optional()?;
        let found = found.ok_or_else(|| CoreError::UnknownInstance(c.id.to_string()))?.unwrap_or(0);
        check_version(c.id, c.expected_version, found)?;
        return Err(CoreError::Store(format!("instance {:?}: commit matched no row", c.id)).into());
    }
    let mut insert =
        conn.prepare_cached("INSERT INTO records (instance_id, version, idx, data) VALUES (?1, ?2, ?3, ?4)")?;
    for (i, r) in rows.enumerate() {
        insert.execute(params![c.id, new, i as i64 + 1, r])?;
    }
    Ok(())
}

type MetaRow = (String, String, String, u64, f64, f64, Option<f64>);

fn meta_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<MetaRow> {
    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?, r.get(6)?))
}

impl SqliteStore {
    fn to_meta(&self, row: MetaRow) -> Result<InstanceMeta> {
        let (id, workflow, status, version, created_at, updated_at, due_at) = row;
        let status = Status::parse(&status).ok_or_else(|| self.corrupt_status(&id, &status))?;
        Ok(InstanceMeta { id, workflow, status, version, created_at, updated_at, due_at })
    }

    fn get_raw(conn: &Connection, id: &str) -> rusqlite::Result<Option<(MetaRow, Vec<u8>)>> {
        conn.prepare_cached(&format!("SELECT {INSTANCE_COLUMNS}, header FROM instances WHERE id = ?1"))?
            .query_row([id], |r| Ok((meta_row(r)?, r.get(7)?)))
            .optional()
    }

    fn to_stored(&self, raw: Option<(MetaRow, Vec<u8>)>) -> Result<Option<StoredInstance>> {
        raw.map(|(row, header)| Ok(StoredInstance { meta: self.to_meta(row)?, header })).transpose()
    }
}

/// `?, ?, ...` with `n` placeholders.
fn placeholders(n: usize) -> String {
    vec!["?"; n].join(", ")
}

/// The two DELETEs of a purge over `n` statuses (bound as `?1` = before, then the statuses).
fn purge_sql(n: usize) -> [String; 3] {
    // FINISHED is implied by the statuses, but spelled out so the partial index applies.
    let doomed = format!("{FINISHED} AND updated_at < ?1 AND status IN ({})", placeholders(n));
    [
        format!("DELETE FROM records WHERE instance_id IN (SELECT id FROM instances WHERE {doomed})"),
        format!("DELETE FROM signals WHERE instance_id IN (SELECT id FROM instances WHERE {doomed})"),
        format!("DELETE FROM instances WHERE {doomed}"),
    ]
}

impl Store for SqliteStore {
    fn create(&mut self, meta: &InstanceMeta, header: &[u8], records: &[Vec<u8>]) -> Result<Created> {
        let existing = in_txn(&self.conn, |conn| {
            if let Some(raw) = Self::get_raw(conn, &meta.id)? {
                return Ok(Some(raw));
            }
            conn.prepare_cached(
                "INSERT INTO instances
                     (id, workflow, status, version, created_at, updated_at, due_at, seq, header)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, (SELECT COALESCE(MAX(seq), 0) + 1 FROM instances), ?8)",
            )?
            .execute(params![
                meta.id,
                meta.workflow,
                meta.status.as_str(),
                meta.version,
                meta.created_at,
                meta.updated_at,
                meta.due_at,
                header
            ])?;
            let mut insert =
                conn.prepare_cached("INSERT INTO records (instance_id, version, idx, data) VALUES (?1, ?2, ?3, ?4)")?;
            if records.is_empty() {
                insert.execute(params![meta.id, meta.version, 0, None::<&[u8]>])?;
            }
            for (i, r) in records.iter().enumerate() {
                insert.execute(params![meta.id, meta.version, i as i64, r])?;
            }
            Ok(None)
        })
        .map_err(|f| self.fail("create", f))?;
        Ok(match self.to_stored(existing)? {
            Some(stored) => Created::Existing(stored),
            None => Created::New,
        })
    }

    fn commit(&mut self, c: &Commit<'_>) -> Result<()> {
        in_txn(&self.conn, |conn| apply(conn, c)).map_err(|f| self.fail("commit", f))
    }

    fn commit_many(&mut self, commits: &[Commit<'_>]) -> Result<()> {
        if commits.is_empty() {
            return Ok(());
        }
        in_txn(&self.conn, |conn| commits.iter().try_for_each(|c| apply(conn, c))).map_err(|f| self.fail("commit", f))
    }

    fn get(&mut self, id: &str) -> Result<Option<StoredInstance>> {
        self.check_in_place("get")?;
        let raw = Self::get_raw(&self.conn, id).map_err(|e| self.fail("get", e.into()))?;
        self.to_stored(raw)
    }

    fn records(&mut self, id: &str) -> Result<Vec<Vec<u8>>> {
        self.check_in_place("reading records")?;
        let read = || -> rusqlite::Result<Vec<Vec<u8>>> {
            self.conn
                .prepare_cached(
                    "SELECT data FROM records WHERE instance_id = ?1 AND data IS NOT NULL ORDER BY version, idx",
                )?
                .query_map([id], |r| r.get(0))?
                .collect()
        };
        read().map_err(|e| self.fail("reading records", e.into()))
    }

    fn list(&mut self, q: &ListQuery) -> Result<Vec<InstanceMeta>> {
        self.check_in_place("list")?;
        // Deduplicate in lifecycle order so equal queries share one cached statement.
        let statuses: Vec<Status> = Status::ALL.into_iter().filter(|s| q.statuses.contains(s)).collect();
        let mut filters = Vec::new();
        let mut args: Vec<Value> = Vec::new();
        if !statuses.is_empty() {
            filters.push(format!("status IN ({})", placeholders(statuses.len())));
            args.extend(statuses.iter().map(|s| Value::Text(s.as_str().into())));
        }
        if let Some(w) = &q.workflow {
            filters.push("workflow = ?".into());
            args.push(Value::Text(w.clone()));
        }
        let limit = q.limit.map_or(-1, |n| i64::try_from(n).unwrap_or(i64::MAX));
        args.push(Value::Integer(limit));
        let filter = if filters.is_empty() { String::new() } else { format!("WHERE {}", filters.join(" AND ")) };
        let sql = format!("SELECT {INSTANCE_COLUMNS} FROM instances {filter} ORDER BY seq DESC LIMIT ?");
        let read = || -> rusqlite::Result<Vec<MetaRow>> {
            self.conn.prepare_cached(&sql)?.query_map(params_from_iter(args.iter()), meta_row)?.collect()
        };
        let rows = read().map_err(|e| self.fail("list", e.into()))?;
        rows.into_iter().map(|row| self.to_meta(row)).collect()
    }

    fn delete(&mut self, id: &str) -> Result<bool> {
        in_txn(&self.conn, |conn| {
            conn.prepare_cached("DELETE FROM records WHERE instance_id = ?1")?.execute([id])?;
            conn.prepare_cached("DELETE FROM signals WHERE instance_id = ?1")?.execute([id])?;
            Ok(conn.prepare_cached("DELETE FROM instances WHERE id = ?1")?.execute([id])? > 0)
        })
        .map_err(|f| self.fail("delete", f))
    }

    fn purge(&mut self, before: f64, statuses: &[Status]) -> Result<u64> {
        let selected: Vec<&str> =
            Status::ALL.into_iter().filter(|s| purge_selects(*s, statuses)).map(Status::as_str).collect();
        if selected.is_empty() {
            return Ok(0);
        }
        let [records_sql, signals_sql, instances_sql] = purge_sql(selected.len());
        let mut args: Vec<Value> = vec![Value::Real(before)];
        args.extend(selected.iter().map(|s| Value::Text((*s).into())));
        let n = in_txn(&self.conn, |conn| {
            conn.prepare_cached(&records_sql)?.execute(params_from_iter(args.iter()))?;
            conn.prepare_cached(&signals_sql)?.execute(params_from_iter(args.iter()))?;
            let n = conn.prepare_cached(&instances_sql)?.execute(params_from_iter(args.iter()))?;
            if n > 0 {
                space::free_pages(conn)?;
            }
            Ok(n as u64)
        })
        .map_err(|f| self.fail("purge", f))?;
        if n > 0 {
            // Best effort, after the purge committed: the file shrinks now instead of at the next
            // automatic checkpoint. A failure here changes nothing stored, so it is not reported.
            let _ = space::checkpoint(&self.conn, "PASSIVE");
        }
        Ok(n)
    }

    fn compact(&mut self) -> Result<()> {
        self.compact_file()
    }

    fn send_signal(&mut self, id: &str, record: &[u8], now: f64) -> Result<u64> {
        in_txn(&self.conn, |conn| {
            let status: Option<String> = conn
                .prepare_cached("SELECT status FROM instances WHERE id = ?1")?
                .query_row([id], |r| r.get(0))
                .optional()?;
            let status = status.ok_or_else(|| CoreError::UnknownInstance(id.to_string()))?;
            let status = Status::parse(&status).ok_or_else(|| self.corrupt_status(id, &status))?;
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
        })
        .map_err(|f| self.fail("signal", f))
    }

    fn signals(&mut self, id: &str) -> Result<Vec<(u64, Vec<u8>)>> {
        self.check_in_place("reading signals")?;
        let read = || -> rusqlite::Result<Vec<(u64, Vec<u8>)>> {
            self.conn
                .prepare_cached("SELECT seq, data FROM signals WHERE instance_id = ?1 ORDER BY seq")?
                .query_map([id], |r| Ok((r.get(0)?, r.get(1)?)))?
                .collect()
        };
        read().map_err(|e| self.fail("reading signals", e.into()))
    }

    fn due(&mut self, now: f64, limit: Option<usize>) -> Result<Vec<InstanceMeta>> {
        self.check_in_place("due")?;
        let limit = limit.map_or(-1, |n| i64::try_from(n).unwrap_or(i64::MAX));
        let sql = format!(
            "SELECT {INSTANCE_COLUMNS} FROM instances
             WHERE due_at IS NOT NULL AND due_at <= ?1 AND status = 'suspended' ORDER BY due_at LIMIT ?2"
        );
        let read = || -> rusqlite::Result<Vec<MetaRow>> {
            self.conn.prepare_cached(&sql)?.query_map(params![now, limit], meta_row)?.collect()
        };
        let rows = read().map_err(|e| self.fail("due", e.into()))?;
        rows.into_iter().map(|row| self.to_meta(row)).collect()
    }

    fn describe(&self) -> String {
        self.label.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stores_of_one_process_on_one_file_are_known_until_the_last_is_dropped() {
        let dir = std::env::temp_dir().join(format!("tideflow-held-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("held.db");
        assert!(!open::held::contains(&path));
        let a = SqliteStore::open(&path, Durability::Normal).unwrap();
        assert!(open::held::contains(&path));
        let b = SqliteStore::open(&path, Durability::Normal).unwrap(); // no descriptor of its own
        drop(a);
        assert!(open::held::contains(&path), "b still holds the file");
        drop(b);
        assert!(!open::held::contains(&path));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    fn plan(conn: &Connection, sql: &str) -> String {
        let sql = format!("EXPLAIN QUERY PLAN {sql}");
        let mut stmt = conn.prepare(&sql).unwrap();
        let nulls = vec![Value::Null; stmt.parameter_count()];
        let rows = stmt.query_map(params_from_iter(nulls), |r| r.get::<_, String>(3)).unwrap();
        rows.map(|r| r.unwrap()).collect::<Vec<_>>().join("; ")
    }

    #[test]
    fn queries_use_the_partial_indexes() {
        let conn = Connection::open_in_memory().unwrap();
        for (_, step) in MIGRATIONS {
            conn.execute_batch(step).unwrap();
        }
        for n in 1..=3 {
            for sql in purge_sql(n) {
                let p = plan(&conn, &sql);
                assert!(p.contains("instances_finished_updated_at (status=? AND updated_at<?)"), "{sql}: {p}");
            }
        }
        let due = plan(&conn, "SELECT id FROM instances WHERE due_at <= 5");
        assert!(due.contains("instances_due_at"), "{due}");
        let commit = plan(&conn, "UPDATE instances SET version = 2 WHERE id = 'x' AND version = 1");
        assert!(commit.contains("sqlite_autoindex_instances_1"), "{commit}");
        let append = plan(&conn, "SELECT 1 FROM records WHERE instance_id = 'x' AND version = 3");
        assert!(append.contains("PRIMARY KEY"), "{append}");
    }

    #[test]
    fn schema_version_is_the_last_migration() {
        assert!(MIGRATIONS.windows(2).all(|w| w[0].0 < w[1].0));
        assert_eq!(SCHEMA_VERSION, MIGRATIONS.last().map_or(0, |m| m.0));
    }
}
