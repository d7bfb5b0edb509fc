//! Opening a SQLite store: the schema and its migrations, and refusing files that are not ours.

use std::fmt;
use std::fs::File;
use std::io::Read;
use std::path::Path;
use std::time::{Duration, Instant};

use rusqlite::{params, Connection, ErrorCode, OpenFlags, OptionalExtension};

use super::space::{make_incremental, JOURNAL_SIZE_LIMIT, WAL_AUTOCHECKPOINT};
use super::{has_moved, Fail, SqliteStore, WriteTxn};
use crate::error::{CoreError, Result};

/// The `PRAGMA application_id` of every tideflow database ("TFLW").
pub const APPLICATION_ID: i32 = 0x5446_4C57;

/// The schema steps, in order: `(version reached, SQL)`. Append a step to change the schema; never
/// edit one that has shipped.
pub const MIGRATIONS: &[(u32, &str)] = &[
    (
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
    ),
    (
        2,
        // Contract v2: plan hashes (filled from the headers by `fill_plan_hashes`), leases and
        // failure summaries; log rows that pack a commit's records, with the commit time.
        "ALTER TABLE instances ADD COLUMN plan_hash TEXT NOT NULL DEFAULT '';
     ALTER TABLE instances ADD COLUMN owner TEXT;
     ALTER TABLE instances ADD COLUMN lease_until REAL;
     ALTER TABLE instances ADD COLUMN error TEXT;
     ALTER TABLE records ADD COLUMN packed INTEGER; -- NULL: data is one record (or a marker)
     ALTER TABLE records ADD COLUMN at REAL; -- the commit time (NULL in rows of schema 1)
     CREATE INDEX instances_claim_pending ON instances (plan_hash, COALESCE(due_at, updated_at), seq)
         WHERE status = 'pending' AND owner IS NULL;
     CREATE INDEX instances_claim_leased ON instances (plan_hash, lease_until) WHERE owner IS NOT NULL;
     CREATE INDEX instances_plan_hash_seq ON instances (plan_hash, seq);
     CREATE INDEX instances_workflow_seq ON instances (workflow, seq);
     DROP INDEX instances_due_at;
     CREATE INDEX instances_waiting_due_at ON instances (due_at, seq) WHERE status IN ('pending', 'suspended');",
    ),
];

/// The schema version this code writes and understands (the last step of [`MIGRATIONS`]).
pub const SCHEMA_VERSION: u32 = MIGRATIONS[MIGRATIONS.len() - 1].0;

/// The value of the `application` key in `tideflow_meta`.
const MARKER: &str = "tideflow";

/// How long a call waits for another connection's write lock before failing.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// How hard a commit is pushed to disk before it returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Durability {
    /// `synchronous=NORMAL`: a commit survives a process crash; a power loss may lose the last few.
    #[default]
    Normal,
    /// `synchronous=FULL`: every commit is synced to disk before it returns.
    Full,
}

/// The first 16 bytes of every SQLite database file.
const SQLITE_MAGIC: &[u8; 16] = b"SQLite format 3\0";

/// Refuses a non-empty file that does not start with [`SQLITE_MAGIC`]. SQLite itself takes a file
/// shorter than its header for an empty database and overwrites it; an empty file is a new one.
fn check_magic(file: &File, path: &Path) -> Result<()> {
    let mut head = Vec::with_capacity(SQLITE_MAGIC.len());
    file.take(SQLITE_MAGIC.len() as u64).read_to_end(&mut head).map_err(|e| open_err(path, e))?;
    if head.is_empty() || head == SQLITE_MAGIC {
        return Ok(());
    }
    Err(CoreError::Store(format!(
        "{} is not a tideflow database: file is not a database (it does not start with the SQLite header)",
        path.display()
    )))
}

/// What [`inspect`] found in a file.
enum Found {
    /// No tables: a new file (or one an earlier open never finished setting up).
    Empty,
    /// A tideflow database at this schema version (never newer than [`SCHEMA_VERSION`]).
    Tideflow(u32),
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
    if from < 2 {
        fill_plan_hashes(conn).map_err(|e| {
            CoreError::Store(format!("{}: migration to schema 2 failed filling plan hashes: {e}", path.display()))
        })?;
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

/// Copies each instance's plan hash out of its header record (which SQL cannot read) into the
/// `plan_hash` column that schema 2 adds. A header that does not decode leaves it empty: such an
/// instance is never claimed, and loading it reports the corruption where it belongs.
fn fill_plan_hashes(conn: &Connection) -> rusqlite::Result<()> {
    let mut read = conn.prepare("SELECT id, header FROM instances")?;
    let mut update = conn.prepare("UPDATE instances SET plan_hash = ?2 WHERE id = ?1")?;
    let mut rows = read.query([])?;
    while let Some(row) = rows.next()? {
        let (id, header): (String, Vec<u8>) = (row.get(0)?, row.get(1)?);
        if let Ok(h) = crate::codec::decode_header(&header) {
            update.execute(params![id, h.plan_hash])?;
        }
    }
    Ok(())
}

/// Puts the file in WAL mode (persistent: a no-op once any connection has done it).
///
/// On a file still in rollback mode (a new one), the switch reads the header under a shared lock
/// and then upgrades to a write lock to set the WAL flag in it. SQLite does not call the busy
/// handler for that upgrade (a lock upgrade inside a transaction could deadlock): when another
/// connection is switching the same file at that moment, it returns `SQLITE_BUSY` at once,
/// whatever `busy_timeout` says. So the switch is retried here, up to the same [`BUSY_TIMEOUT`];
/// the failed attempt has dropped its shared lock, which lets the other connection finish, and
/// the retry then finds the file in WAL mode already.
fn switch_to_wal(conn: &Connection, path: &Path) -> Result<()> {
    let deadline = Instant::now() + BUSY_TIMEOUT;
    let mut pause = Duration::from_micros(500);
    loop {
        match conn.pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get::<_, String>(0)) {
            Ok(mode) if mode.eq_ignore_ascii_case("wal") => return Ok(()),
            Ok(mode) => {
                return Err(open_err(path, format!("cannot switch to WAL mode (journal mode stays {mode:?})")));
            }
            Err(e) if e.sqlite_error_code() == Some(ErrorCode::DatabaseBusy) && Instant::now() < deadline => {
                std::thread::sleep(pause);
                pause = (pause * 2).min(Duration::from_millis(20));
            }
            Err(e) => return Err(open_sql_err(path, e)),
        }
    }
}

impl SqliteStore {
    /// Opens (creating if needed) the tideflow database at `path`, in WAL mode, migrating it to
    /// the current schema; fails with [`CoreError::Store`] naming the path if the file cannot be
    /// opened or written, is not a SQLite database, belongs to another application, or has a
    /// newer schema.
    pub fn open(path: &Path, durability: Durability) -> Result<SqliteStore> {
        // Touch the file through the OS first: a missing directory or a read-only file then
        // reports the OS's reason instead of SQLite's generic "unable to open database file".
        // Closing that descriptor drops every POSIX lock this process holds on the file, so it is
        // skipped when another store of this process already has the file open (it is ours then).
        if !held::contains(path) {
            let file = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(path)
                .map_err(|e| open_err(path, e))?;
            check_magic(&file, path)?;
            drop(file);
        }
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn = Connection::open_with_flags(path, flags).map_err(|e| open_sql_err(path, e))?;
        let sql = |e| open_sql_err(path, e);
        conn.busy_timeout(BUSY_TIMEOUT).map_err(sql)?;
        // Refuse foreign and newer files before changing anything in them (the journal mode
        // below is persistent).
        let found = inspect(&conn, path)?;
        if matches!(found, Found::Empty) {
            make_incremental(&conn).map_err(sql)?; // (see `space`)
        }
        switch_to_wal(&conn, path)?;
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
        if !held::contains(path) {
            check_magic(&File::open(path).map_err(|e| open_err(path, e))?, path)?;
        }
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

    pub(super) fn wrap(conn: Connection, path: &Path) -> SqliteStore {
        // list/purge build a few SQL variants; keep them all cached next to the hot statements.
        conn.set_prepared_statement_cache_capacity(64);
        SqliteStore { conn, label: format!("sqlite:{}", path.display()), held: held::add(path) }
    }

    /// Attaches the store's name to a failure.
    pub(super) fn fail(&self, what: &str, f: Fail) -> CoreError {
        match f {
            Fail::Core(e) => e,
            Fail::Sql(e) => CoreError::Store(format!("{}: {what} failed: {e}", self.label)),
            Fail::Moved => CoreError::Store(format!(
                "{}: {what} failed: the database file was deleted or moved away while the store had it open, \
                 so nothing is written to it (it would be lost); put the file back or open the store again",
                self.label
            )),
        }
    }

    /// Fails a read with [`Fail::Moved`] when the file is gone (see [`has_moved`]): it would
    /// answer from data that no longer has a name.
    pub(super) fn check_in_place(&self, what: &str) -> Result<()> {
        if has_moved(&self.conn) {
            return Err(self.fail(what, Fail::Moved));
        }
        Ok(())
    }
}

/// The database files (by device and inode) that stores of this process hold open, so that
/// opening another store on one of them never opens and closes a descriptor of its own on it.
pub(super) mod held {
    use std::collections::BTreeMap;
    use std::os::unix::fs::MetadataExt;
    use std::path::Path;
    use std::sync::{Mutex, MutexGuard};

    /// A file's identity: (device, inode).
    pub type FileId = (u64, u64);

    /// How many stores of this process hold each file open.
    static HELD: Mutex<BTreeMap<FileId, usize>> = Mutex::new(BTreeMap::new());

    fn held() -> MutexGuard<'static, BTreeMap<FileId, usize>> {
        HELD.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn id(path: &Path) -> Option<FileId> {
        std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino()))
    }

    /// Whether a store of this process holds the file at `path` open.
    pub fn contains(path: &Path) -> bool {
        id(path).is_some_and(|key| held().contains_key(&key))
    }

    /// Records that a store holds the file at `path` open; its identity, for [`remove`].
    pub fn add(path: &Path) -> Option<FileId> {
        let key = id(path)?;
        *held().entry(key).or_default() += 1;
        Some(key)
    }

    /// Records that a store let go of a file.
    pub fn remove(key: FileId) {
        let mut held = held();
        if let Some(n) = held.get_mut(&key) {
            *n -= 1;
            if *n == 0 {
                held.remove(&key);
            }
        }
    }
}
