//! Keeping the file small: how far the WAL may grow before its commits are copied into the
//! database file, and giving back to the file system the pages that purged instances leave free.
//!
//! A new file is made with `auto_vacuum=INCREMENTAL` (set before its first table: SQLite allows
//! it only then, or with a `VACUUM`), so `purge` can cut its free pages off the end of
//! the file in the same transaction. A file made before that keeps `auto_vacuum=NONE`, whose
//! free pages are only reused, until `compact` rewrites it once with a `VACUUM`, which
//! also switches it to `INCREMENTAL`.

use rusqlite::Connection;

use super::{in_txn, Fail, SqliteStore};
use crate::error::Result;

/// WAL pages between automatic checkpoints: SQLite's default, about 4 MB with 4 KiB pages. The
/// latest commits exist only in the `-wal` file until a checkpoint copies them into the database
/// file, so this bounds what deleting the `-wal` by hand would lose, and how large it grows.
pub(super) const WAL_AUTOCHECKPOINT: i64 = 1000;

/// The size a WAL file is cut back to when it restarts after a checkpoint. It grows past
/// [`WAL_AUTOCHECKPOINT`] only while a reader holds the checkpoint back; this keeps it from staying
/// that large afterwards.
pub(super) const JOURNAL_SIZE_LIMIT: i64 = 6 * 1024 * 1024;

/// The value of `PRAGMA auto_vacuum` for `INCREMENTAL`.
const INCREMENTAL: i64 = 2;

/// Sets `auto_vacuum=INCREMENTAL` on a connection to a file that has no tables yet; it takes
/// effect when the first write creates the file's header (the switch to WAL mode, in `open`).
pub(super) fn make_incremental(conn: &Connection) -> rusqlite::Result<()> {
    conn.pragma_update(None, "auto_vacuum", "INCREMENTAL")
}

/// Moves the free pages to the end of the file and cuts them off, inside the caller's write
/// transaction (the file shrinks on disk at the next checkpoint); a no-op in a file without
/// `auto_vacuum=INCREMENTAL`.
pub(super) fn free_pages(conn: &Connection) -> rusqlite::Result<()> {
    // The pragma frees one page per step of the statement: run it to the end.
    let mut stmt = conn.prepare_cached("PRAGMA incremental_vacuum")?;
    let mut rows = stmt.query([])?;
    while rows.next()?.is_some() {}
    Ok(())
}

/// Copies the WAL into the database file (`PASSIVE`: as far as readers allow, without waiting;
/// `TRUNCATE`: waiting for them up to the busy timeout, then emptying the `-wal`); whether it
/// got through the whole WAL.
pub(super) fn checkpoint(conn: &Connection, mode: &str) -> rusqlite::Result<bool> {
    let busy: i64 = conn.query_row(&format!("PRAGMA wal_checkpoint({mode})"), [], |r| r.get(0))?;
    Ok(busy == 0)
}

impl SqliteStore {
    /// Gives the free pages back to the file system: incrementally in a file that allows it,
    /// else by one `VACUUM` that rewrites the file (holding the write lock meanwhile, and
    /// needing as much free disk as the file takes) and leaves it incremental from then on.
    /// Then empties the `-wal` with a checkpoint, unless another connection is reading at that
    /// moment (the file then shrinks at a later checkpoint).
    pub(super) fn compact_file(&mut self) -> Result<()> {
        self.check_in_place("compact")?;
        let conn = &self.conn;
        let run = || -> std::result::Result<(), Fail> {
            let mode: i64 = conn.query_row("PRAGMA auto_vacuum", [], |r| r.get(0))?;
            if mode == INCREMENTAL {
                in_txn(conn, |c| Ok(free_pages(c)?))?;
            } else {
                make_incremental(conn)?;
                conn.execute_batch("VACUUM")?;
            }
            checkpoint(conn, "TRUNCATE")?;
            Ok(())
        };
        run().map_err(|f| self.fail("compact", f))
    }
}
