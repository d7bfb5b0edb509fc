//! The size of a SQLite store on disk: purged instances give their space back, `compact` does it
//! for a file made before that, and the `-wal` stays bounded however many commits go through it.

use std::path::{Path, PathBuf};

use tideflow_core::store::sqlite::SqliteStore;
use tideflow_core::store::Store;
use tideflow_core::Status;

mod common;

use common::*;

fn size(path: &Path) -> u64 {
    std::fs::metadata(path).map_or(0, |m| m.len())
}

fn wal(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push("-wal");
    PathBuf::from(name)
}

/// A finished instance `id` with `commits` records of 900 bytes (about 1 MB per 1,000).
fn big_instance(s: &mut SqliteStore, id: &str, commits: u64) {
    s.create(&meta(id, "big", Status::Running, 0.0), b"h", &[]).unwrap();
    let record = [vec![7u8; 900]];
    for v in 1..commits {
        s.commit(&commit(id, v, Status::Running, 1.0, &record)).unwrap();
    }
    s.commit(&commit(id, commits, Status::Completed, 1.0, &record)).unwrap();
}

#[test]
fn purging_a_big_instance_shrinks_the_file() {
    let dir = TempDir::new("purge-shrinks");
    let path = dir.join("p.db");
    let mut s = open(&path);
    big_instance(&mut s, "small", 10);
    big_instance(&mut s, "big", 8_000);
    let full = size(&path) + size(&wal(&path));
    assert!(full > 7_000_000, "the big instance takes {full} bytes");
    assert_eq!(s.purge(2.0, &[Status::Completed]).unwrap(), 2);
    let db = size(&path);
    assert!(db < full / 20, "after the purge the file keeps {db} of {full} bytes");
    // what is left still works, and the space is reused
    big_instance(&mut s, "next", 10);
    assert_eq!(version(&mut s, "next"), 11);
}

#[test]
fn compact_shrinks_a_file_made_without_incremental_vacuum_and_keeps_its_data() {
    let dir = TempDir::new("compact-old");
    let path = dir.join("old.db");
    // A file as tideflow made it before auto_vacuum: the same schema with auto_vacuum=NONE.
    drop(open(&path));
    {
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.execute_batch("PRAGMA auto_vacuum = NONE; VACUUM").unwrap();
        assert_eq!(conn.query_row("PRAGMA auto_vacuum", [], |r| r.get::<_, i64>(0)).unwrap(), 0);
    }
    let mut s = open(&path);
    big_instance(&mut s, "keep", 5);
    big_instance(&mut s, "big", 8_000);
    assert_eq!(s.purge(2.0, &[Status::Completed]).unwrap(), 2);
    big_instance(&mut s, "kept", 5); // written after the purge, at a later updated_at
    let after_purge = size(&path) + size(&wal(&path));
    assert!(after_purge > 7_000_000, "without incremental vacuum the purge frees no disk: {after_purge}");
    s.compact().unwrap();
    let compacted = size(&path) + size(&wal(&path));
    assert!(compacted < after_purge / 20, "compact left {compacted} of {after_purge} bytes");
    assert_eq!(size(&wal(&path)), 0, "compact empties the -wal");
    assert_eq!(s.records("kept", 0).unwrap().len(), 5);
    let conn = rusqlite::Connection::open(&path).unwrap();
    assert_eq!(conn.query_row("PRAGMA auto_vacuum", [], |r| r.get::<_, i64>(0)).unwrap(), 2);
    drop(conn);
    // from now on a purge frees the pages itself
    big_instance(&mut s, "big2", 8_000);
    assert_eq!(s.purge(2.0, &[Status::Completed]).unwrap(), 2);
    assert!(size(&path) < after_purge / 20, "{} bytes after the second purge", size(&path));
    s.compact().unwrap(); // and compacting an incremental file works too
    assert_eq!(s.records("kept", 0).unwrap().len(), 0, "purged with the others");
}

#[test]
fn the_wal_stays_bounded_over_many_commits() {
    let dir = TempDir::new("wal-bound");
    let path = dir.join("w.db");
    let mut s = open(&path);
    s.create(&meta("w", "wal", Status::Running, 0.0), b"h", &[]).unwrap();
    let record = [vec![1u8; 2000]];
    let mut largest = 0;
    for v in 1..=6_000 {
        s.commit(&commit("w", v, Status::Running, 1.0, &record)).unwrap();
        largest = largest.max(size(&wal(&path)));
    }
    let written = size(&path);
    assert!(written > 12_000_000, "the commits reached the database file: {written} bytes");
    // 1,000 pages between checkpoints (4 KiB each, plus a 24-byte frame header), and the frames of
    // the commit that crossed the line (a record, its overflow page, a split's pages)
    assert!(largest <= 1_050 * (4096 + 24), "the -wal grew to {largest} bytes");
}
