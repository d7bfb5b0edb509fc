//! The SQLite store: one database file in WAL mode, safe to share between threads and processes
//! (each with its own [`SqliteStore`]). Every [`Store`] call that writes is one `BEGIN IMMEDIATE`
//! transaction, so writers serialise on the file lock instead of deadlocking, and a crash leaves
//! either the whole commit or none of it.
//!
//! The schema is versioned: `tideflow_meta` holds an application marker and `schema_version`, the
//! file header carries [`APPLICATION_ID`] and `user_version`, and [`MIGRATIONS`] brings an older
//! file up to date inside one transaction when it is opened.

use std::fmt;
use std::path::Path;
use std::time::Duration;

use rusqlite::types::Value;
use rusqlite::{params, params_from_iter, Connection, ErrorCode, OpenFlags, OptionalExtension};

use super::{
    check_version, finished_instance, purge_selects, Commit, Created, InstanceMeta, ListQuery, Store, StoredInstance,
};
use crate::error::{CoreError, Result};
use crate::status::Status;

/// The `PRAGMA application_id` of every tideflow database ("TFLW").
pub const APPLICATION_ID: i32 = 0x5446_4C57;

/// The schema steps, in order: `(version reached, SQL)`. Append a step to change the schema; never
/// edit one that has shipped.
pub const MIGRATIONS: &[(u32, &str)] = &[(
    1,
    "CREATE TABLE tideflow_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
     CREATE TABLE instances (
         id TEXT PRIMARY KEY,
         workflow TEXT NOT NULL,
         status TEXT NOT NULL,
         version INTEGER NOT NULL,
         created_at REAL NOT NULL,
         updated_at REAL NOT NULL,
         due_at REAL,
         seq INTEGER NOT NULL,
         header BLOB NOT NULL
     );
     CREATE UNIQUE INDEX instances_seq ON instances (seq);
     CREATE INDEX instances_status_workflow ON instances (status, workflow);
     CREATE INDEX instances_due_at ON instances (due_at) WHERE due_at IS NOT NULL;
     CREATE INDEX instances_finished_updated_at ON instances (status, updated_at)
         WHERE status IN ('completed', 'failed', 'cancelled');
     CREATE TABLE records (
         instance_id TEXT NOT NULL,
         version INTEGER NOT NULL,
         idx INTEGER NOT NULL,
         data BLOB, -- NULL: the marker of a commit that carried no record
         PRIMARY KEY (instance_id, version, idx)
     ) WITHOUT ROWID;
     CREATE TABLE signals (
         instance_id TEXT NOT NULL,
         seq INTEGER NOT NULL,
         data BLOB NOT NULL,
         PRIMARY KEY (instance_id, seq)
     ) WITHOUT ROWID;",
)];

/// The schema version this code writes and understands (the last step of [`MIGRATIONS`]).
pub const SCHEMA_VERSION: u32 = MIGRATIONS[MIGRATIONS.len() - 1].0;

/// The condition of the partial `updated_at` index; a query repeats it verbatim to use the index.
const FINISHED: &str = "status IN ('completed', 'failed', 'cancelled')";

/// The value of the `application` key in `tideflow_meta`.
const MARKER: &str = "tideflow";

/// WAL pages between automatic checkpoints (SQLite's default is 1000). A checkpoint copies each
/// changed page once and syncs, so a longer interval amortises the hot pages (the instance row,
/// the tail of its log) over more commits: about 1.2x faster step commits for a WAL of up to ~16 MB.
const WAL_AUTOCHECKPOINT: i64 = 4000;

/// The size the WAL file is truncated back to after a checkpoint that let it grow beyond it.
const JOURNAL_SIZE_LIMIT: i64 = 64 * 1024 * 1024;

/// How long a call waits for another connection's write lock before failing.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// The indexed fields of an instance. Its version is the highest commit version in its log: every
/// commit appends at least one row (an empty marker when it carries no record), so a step commit
/// is a single INSERT and writes the instance row only when its status, due time or header changes.
/// (The `version` column of `instances` is the version of the row's last write, not the current one.)
const INSTANCE_COLUMNS: &str = "id, workflow, status,
     (SELECT MAX(r.version) FROM records r WHERE r.instance_id = instances.id),
     created_at, updated_at, due_at";

/// How hard a commit is pushed to disk before it returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Durability {
    /// `synchronous=NORMAL`: a commit survives a process crash; a power loss may lose the last few.
    #[default]
    Normal,
    /// `synchronous=FULL`: every commit is synced to disk before it returns.
    Full,
}

/// A [`Store`] kept in one SQLite database file.
pub struct SqliteStore {
    conn: Connection,
    label: String,
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

/// What [`inspect`] found in a file.
enum Found {
    /// No tables: a new file (or one an earlier open never finished setting up).
    Empty,
    /// A tideflow database at this schema version (never newer than [`SCHEMA_VERSION`]).
    Tideflow(u32),
}

/// An open `BEGIN IMMEDIATE` transaction, rolled back on drop unless committed.
struct WriteTxn<'c> {
    conn: &'c Connection,
    done: bool,
}

impl<'c> WriteTxn<'c> {
    fn begin(conn: &'c Connection) -> rusqlite::Result<Self> {
        conn.prepare_cached("BEGIN IMMEDIATE")?.execute([])?;
        Ok(WriteTxn { conn, done: false })
    }

    fn commit(mut self) -> rusqlite::Result<()> {
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

/// Runs `f` inside one write transaction, committing only if it succeeds.
fn in_txn<T>(conn: &Connection, f: impl FnOnce(&Connection) -> Res<T>) -> Res<T> {
    let txn = WriteTxn::begin(conn)?;
    let out = f(conn)?;
    txn.commit()?;
    Ok(out)
}

fn open_err(path: &Path, e: impl fmt::Display) -> CoreError {
    CoreError::Store(format!("cannot open {}: {e}", path.display()))
}

/// Maps an error met while opening, recognising "not a database".
fn open_sql_err(path: &Path, e: rusqlite::Error) -> CoreError {
    match e.sqlite_error_code() {
        Some(ErrorCode::NotADatabase) => {
            CoreError::Store(format!("{} is not a tideflow database: {e}", path.display()))
        }
        _ => open_err(path, e),
    }
}

fn foreign(path: &Path, why: &str) -> CoreError {
    CoreError::Store(format!(
        "{} belongs to another application ({why}); refusing to use it as a tideflow database",
        path.display()
    ))
}

/// Classifies the file without writing to it.
fn inspect(conn: &Connection, path: &Path) -> Result<Found> {
    let sql = |e| open_sql_err(path, e);
    let app_id: i32 = conn.query_row("PRAGMA application_id", [], |r| r.get(0)).map_err(sql)?;
    let tables: i64 = conn.query_row("SELECT count(*) FROM sqlite_master", [], |r| r.get(0)).map_err(sql)?;
    if app_id != 0 && app_id != APPLICATION_ID {
        return Err(foreign(path, &format!("application_id {app_id:#010x}")));
    }
    if tables == 0 {
        return Ok(Found::Empty);
    }
    let has_meta: bool = conn
        .query_row("SELECT count(*) > 0 FROM sqlite_master WHERE type = 'table' AND name = 'tideflow_meta'", [], |r| {
            r.get(0)
        })
        .map_err(sql)?;
    if !has_meta {
        return Err(foreign(path, "it has tables but no tideflow_meta table"));
    }
    let meta = |key: &str| -> Result<Option<String>> {
        conn.query_row("SELECT CAST(value AS TEXT) FROM tideflow_meta WHERE key = ?1", [key], |r| r.get(0))
            .optional()
            .map_err(sql)
    };
    if meta("application")?.as_deref() != Some(MARKER) {
        return Err(foreign(path, "its tideflow_meta table has no tideflow marker"));
    }
    let raw = meta("schema_version")?;
    let version = raw.as_deref().and_then(|v| v.trim().parse::<u32>().ok()).ok_or_else(|| {
        CoreError::Store(format!("{} is a tideflow database with an invalid schema version ({raw:?})", path.display()))
    })?;
    if version > SCHEMA_VERSION {
        return Err(CoreError::Store(format!(
            "{}: schema version {version} is newer than this tideflow supports ({SCHEMA_VERSION}); upgrade tideflow",
            path.display()
        )));
    }
    Ok(Found::Tideflow(version))
}

/// Brings the file to [`SCHEMA_VERSION`] in one write transaction (re-inspecting under the lock,
/// since another process may have migrated it meanwhile).
fn migrate(conn: &Connection, path: &Path) -> Result<()> {
    let txn = WriteTxn::begin(conn).map_err(|e| open_sql_err(path, e))?;
    let from = match inspect(conn, path)? {
        Found::Empty => 0,
        Found::Tideflow(v) => v,
    };
    let sql = |e| open_sql_err(path, e);
    for (version, step) in MIGRATIONS.iter().filter(|(v, _)| *v > from) {
        conn.execute_batch(step)
            .map_err(|e| CoreError::Store(format!("{}: migration to schema {version} failed: {e}", path.display())))?;
    }
    conn.execute(
        "INSERT INTO tideflow_meta (key, value) VALUES ('application', ?1), ('schema_version', ?2)
         ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        params![MARKER, SCHEMA_VERSION.to_string()],
    )
    .map_err(sql)?;
    conn.pragma_update(None, "application_id", APPLICATION_ID).map_err(sql)?;
    conn.pragma_update(None, "user_version", SCHEMA_VERSION).map_err(sql)?;
    txn.commit().map_err(sql)
}

impl SqliteStore {
    /// Opens (creating if needed) the tideflow database at `path`, in WAL mode, migrating it to
    /// the current schema; fails with [`CoreError::Store`] naming the path if the file cannot be
    /// opened or written, is not a SQLite database, belongs to another application, or has a
    /// newer schema.
    pub fn open(path: &Path, durability: Durability) -> Result<SqliteStore> {
        // Touch the file through the OS first: a missing directory or a read-only file then
        // reports the OS's reason instead of SQLite's generic "unable to open database file".
        std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(|e| open_err(path, e))?;
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn = Connection::open_with_flags(path, flags).map_err(|e| open_sql_err(path, e))?;
        let sql = |e| open_sql_err(path, e);
        conn.busy_timeout(BUSY_TIMEOUT).map_err(sql)?;
        // Refuse foreign and newer files before changing anything in them (the journal mode
        // below is persistent).
        let found = inspect(&conn, path)?;
        let mode: String = conn.pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0)).map_err(sql)?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(open_err(path, format!("cannot switch to WAL mode (journal mode stays {mode:?})")));
        }
        let sync = match durability {
            Durability::Normal => "NORMAL",
            Durability::Full => "FULL",
        };
        conn.pragma_update(None, "synchronous", sync).map_err(sql)?;
        conn.pragma_update(None, "wal_autocheckpoint", WAL_AUTOCHECKPOINT).map_err(sql)?;
        conn.pragma_update(None, "journal_size_limit", JOURNAL_SIZE_LIMIT).map_err(sql)?;
        if !matches!(found, Found::Tideflow(SCHEMA_VERSION)) {
            migrate(&conn, path)?;
        }
        Ok(Self::wrap(conn, path))
    }

    /// Opens an existing, current tideflow database for reading only (inspection tools, or a
    /// file the process may not write); every write fails with [`CoreError::Store`].
    pub fn open_read_only(path: &Path) -> Result<SqliteStore> {
        std::fs::File::open(path).map_err(|e| open_err(path, e))?;
        let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn = Connection::open_with_flags(path, flags).map_err(|e| open_sql_err(path, e))?;
        conn.busy_timeout(BUSY_TIMEOUT).map_err(|e| open_sql_err(path, e))?;
        // SQLite cannot read a WAL database read-only when its -shm file is missing and cannot be
        // created (an unwritable directory); say so instead of only "attempt to write".
        let cantinit = conn.query_row("PRAGMA application_id", [], |_| Ok(())).err().and_then(|e| {
            (e.sqlite_error_code() == Some(ErrorCode::ReadOnly)).then(|| {
                open_err(path, format!("{e} (reading a WAL database needs its -shm file or a writable directory)"))
            })
        });
        if let Some(e) = cantinit {
            return Err(e);
        }
        match inspect(&conn, path)? {
            Found::Tideflow(SCHEMA_VERSION) => Ok(Self::wrap(conn, path)),
            Found::Empty => Err(CoreError::Store(format!(
                "{} is not a tideflow database: it is empty (open it read-write to create one)",
                path.display()
            ))),
            Found::Tideflow(v) => Err(CoreError::Store(format!(
                "{} has schema version {v}; open it read-write once to upgrade it to {SCHEMA_VERSION}",
                path.display()
            ))),
        }
    }

    fn wrap(conn: Connection, path: &Path) -> SqliteStore {
        // list/purge build a few SQL variants; keep them all cached next to the hot statements.
        conn.set_prepared_statement_cache_capacity(64);
        SqliteStore { conn, label: format!("sqlite:{}", path.display()) }
    }

    /// Attaches the store's name to a failure.
    fn fail(&self, what: &str, f: Fail) -> CoreError {
        match f {
            Fail::Core(e) => e,
            Fail::Sql(e) => CoreError::Store(format!("{}: {what} failed: {e}", self.label)),
        }
    }

    fn corrupt_status(&self, id: &str, status: &str) -> CoreError {
        CoreError::Corrupt(format!("{}: instance {id:?} has unknown status {status:?}", self.label))
    }
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
        let raw = Self::get_raw(&self.conn, id).map_err(|e| self.fail("get", e.into()))?;
        self.to_stored(raw)
    }

    fn records(&mut self, id: &str) -> Result<Vec<Vec<u8>>> {
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
        in_txn(&self.conn, |conn| {
            conn.prepare_cached(&records_sql)?.execute(params_from_iter(args.iter()))?;
            conn.prepare_cached(&signals_sql)?.execute(params_from_iter(args.iter()))?;
            let n = conn.prepare_cached(&instances_sql)?.execute(params_from_iter(args.iter()))?;
            Ok(n as u64)
        })
        .map_err(|f| self.fail("purge", f))
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
        let read = || -> rusqlite::Result<Vec<(u64, Vec<u8>)>> {
            self.conn
                .prepare_cached("SELECT seq, data FROM signals WHERE instance_id = ?1 ORDER BY seq")?
                .query_map([id], |r| Ok((r.get(0)?, r.get(1)?)))?
                .collect()
        };
        read().map_err(|e| self.fail("reading signals", e.into()))
    }

    fn due(&mut self, now: f64, limit: Option<usize>) -> Result<Vec<InstanceMeta>> {
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
