//! The SQLite store: one database file in WAL mode, safe to share between threads and processes
//! (each with its own [`SqliteStore`]). Every [`Store`] call that writes is one `BEGIN IMMEDIATE`
//! transaction, so writers serialise on the file lock instead of deadlocking, and a crash leaves
//! either the whole commit or none of it.
//!
//! The schema is versioned: `tideflow_meta` holds an application marker and `schema_version`, the
//! file header carries [`APPLICATION_ID`] and `user_version`, and [`MIGRATIONS`] brings an older
//! file up to date inside one transaction when it is opened (schema 2, contract v2, also fills
//! each instance's plan hash from its header, in Rust, in that transaction).
//!
//! Leases are judged by the engine's clock (the `now` of each call, a commit's `updated_at`), as
//! in the memory store: SQLite has no clock of its own to offer. A claim is one write
//! transaction, so two connections, in one process or two, never lease one instance at once.
//!
//! Files: `open` (opening, the schema, refusing foreign files), `rows` (how fields and records
//! are laid out in rows, records packed one row per commit), `write` (create, commit, signal,
//! delete, purge), `read` (get, load, incremental reads, paged lists, counts, due), `lease`
//! (claim, extend, release), `space` (keeping the file small).

use std::ffi::{c_int, c_void};
use std::fmt;

use rusqlite::{ffi, Connection};

use super::{
    purge_selects, Claim, Commit, Count, Created, InstanceMeta, ListPage, ListQuery, Loaded, Store, StoredInstance,
};

mod lease;
mod open;
mod read;
mod rows;
mod space;
mod write;

use crate::error::{CoreError, Result};
use crate::status::Status;
pub use open::{Durability, APPLICATION_ID, MIGRATIONS, SCHEMA_VERSION};

/// The condition of the partial `updated_at` index; a query repeats it verbatim to use the index.
const FINISHED: &str = "status IN ('completed', 'failed', 'cancelled')";

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
    let out = match f(conn) {
        // A refusal (a conflict, a lost lease) read from a file that has no name any more would
        // mislead: the file's absence is the news.
        Err(Fail::Core(_)) if has_moved(conn) => return Err(Fail::Moved),
        other => other?,
    };
    // Checked last, under the write lock and just before COMMIT, so that a file deleted or
    // replaced at any time up to here rolls the transaction back instead of committing it to
    // the orphan.
    if has_moved(conn) {
        return Err(Fail::Moved);
    }
    txn.commit()?;
    Ok(out)
}

/// Runs `f` inside one read transaction (one snapshot of the file).
fn in_read<T>(conn: &Connection, f: impl FnOnce(&Connection) -> Res<T>) -> Res<T> {
    conn.prepare_cached("BEGIN")?.execute([])?;
    let out = f(conn);
    // A read-only transaction: ending it cannot fail in a way that matters to what was read.
    let _ = conn.prepare_cached("COMMIT").and_then(|mut s| s.execute([]));
    out
}

/// `?, ?, ...` with `n` placeholders.
fn placeholders(n: usize) -> String {
    vec!["?"; n].join(", ")
}

impl SqliteStore {
    /// Runs a read after checking that the file is still in place.
    fn read<T>(&self, what: &str, f: impl FnOnce(&Connection, &str) -> Res<T>) -> Result<T> {
        self.check_in_place(what)?;
        f(&self.conn, &self.label).map_err(|e| self.fail(what, e))
    }

    /// Runs a write transaction.
    fn write<T>(&self, what: &str, f: impl FnOnce(&Connection, &str) -> Res<T>) -> Result<T> {
        in_txn(&self.conn, |conn| f(conn, &self.label)).map_err(|e| self.fail(what, e))
    }
}

impl Store for SqliteStore {
    fn create(&mut self, meta: &InstanceMeta, header: &[u8], records: &[Vec<u8>]) -> Result<Created> {
        let existing = self.write("create", |conn, label| {
            if write::create(conn, meta, header, records)? {
                Ok(None)
            } else {
                read::get(conn, label, &meta.id)
            }
        })?;
        Ok(existing.map_or(Created::New, Created::Existing))
    }

    fn commit(&mut self, c: &Commit<'_>) -> Result<()> {
        self.write("commit", |conn, _| write::apply(conn, c))
    }

    fn get(&mut self, id: &str) -> Result<Option<StoredInstance>> {
        self.read("get", |conn, label| read::get(conn, label, id))
    }

    fn load(&mut self, id: &str) -> Result<Option<Loaded>> {
        self.read("load", |conn, label| {
            in_read(conn, |conn| {
                let Some(stored) = read::get(conn, label, id)? else { return Ok(None) };
                let records = read::records(conn, id, 0)?;
                let signals = read::signals(conn, id, 0)?;
                Ok(Some(Loaded { meta: stored.meta, header: stored.header, records, signals }))
            })
        })
    }

    fn records(&mut self, id: &str, after: u64) -> Result<Vec<Vec<u8>>> {
        self.read("reading records", |conn, _| read::records(conn, id, after))
    }

    fn list(&mut self, q: &ListQuery) -> Result<ListPage> {
        self.read("list", |conn, label| read::list(conn, label, q))
    }

    fn counts(&mut self) -> Result<Vec<Count>> {
        self.read("counts", read::counts)
    }

    fn delete(&mut self, id: &str) -> Result<bool> {
        self.write("delete", |conn, _| write::delete(conn, id))
    }

    fn purge(&mut self, before: f64, statuses: &[Status]) -> Result<u64> {
        let selected: Vec<&str> =
            Status::ALL.into_iter().filter(|s| purge_selects(*s, statuses)).map(Status::as_str).collect();
        if selected.is_empty() {
            return Ok(0);
        }
        let n = self.write("purge", |conn, _| {
            let n = write::purge(conn, before, &selected)?;
            if n > 0 {
                space::free_pages(conn)?;
            }
            Ok(n)
        })?;
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
        self.write("signal", |conn, label| write::send_signal(conn, label, id, record, now))
    }

    fn signals(&mut self, id: &str, after: u64) -> Result<Vec<(u64, Vec<u8>)>> {
        self.read("reading signals", |conn, _| read::signals(conn, id, after))
    }

    fn due(&mut self, now: f64, limit: Option<usize>) -> Result<Vec<InstanceMeta>> {
        self.read("due", |conn, label| read::due(conn, label, now, limit))
    }

    fn claim(&mut self, c: &Claim<'_>) -> Result<Vec<InstanceMeta>> {
        if c.limit == 0 || c.plan_hashes.is_empty() {
            return Ok(Vec::new());
        }
        self.write("claim", |conn, label| lease::claim(conn, label, c))
    }

    fn extend(&mut self, id: &str, owner: &str, lease: f64, now: f64) -> Result<f64> {
        self.write("extend", |conn, _| lease::extend(conn, id, owner, lease, now))
    }

    fn release(&mut self, id: &str, owner: &str) -> Result<bool> {
        self.write("release", |conn, _| lease::release(conn, id, owner))
    }

    fn describe(&self) -> String {
        self.label.clone()
    }
}

#[cfg(test)]
mod tests;
