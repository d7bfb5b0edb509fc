//! The store contract: what every store (memory, SQLite, and the Python ones) must do.
//!
//! A store keeps, per instance, a few indexed fields ([`InstanceMeta`]), one opaque header record
//! and an append-only log of opaque records (bytes written by [`crate::codec`]). It never parses a
//! record. Every change to an instance goes through [`Store::commit`], which is atomic and carries
//! the version the writer last saw, so a stale writer is rejected with [`CoreError::Conflict`].

pub mod memory;
pub mod sqlite;

use crate::error::{CoreError, Result};
use crate::status::Status;

/// The fields a store indexes for one instance.
#[derive(Debug, Clone, PartialEq)]
pub struct InstanceMeta {
    /// The instance id (unique).
    pub id: String,
    /// The workflow name.
    pub workflow: String,
    /// Lifecycle status.
    pub status: Status,
    /// Incremented by every commit; starts at 1.
    pub version: u64,
    /// Seconds since the epoch.
    pub created_at: f64,
    /// Seconds since the epoch of the last commit.
    pub updated_at: f64,
    /// When a suspended instance next needs attention (a timer, a retry), if ever.
    pub due_at: Option<f64>,
}

/// One instance as stored: indexed fields plus the opaque header record.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredInstance {
    /// Indexed fields.
    pub meta: InstanceMeta,
    /// The header record (codec bytes).
    pub header: Vec<u8>,
}

/// One atomic step boundary.
#[derive(Debug, Clone, Copy)]
pub struct Commit<'a> {
    /// The instance.
    pub id: &'a str,
    /// The version the writer loaded or last committed; the store rejects any other.
    pub expected_version: u64,
    /// The new status.
    pub status: Status,
    /// Commit time.
    pub updated_at: f64,
    /// The new due time.
    pub due_at: Option<f64>,
    /// A replacement header (when the instance finishes), else keep the stored one.
    pub header: Option<&'a [u8]>,
    /// Records appended to the log, in order.
    pub records: &'a [Vec<u8>],
    /// The highest inbox sequence number the writer had seen. When the commit suspends the
    /// instance and its inbox holds a later signal, the store keeps the instance due at
    /// `updated_at` instead of `due_at`, so that a signal sent meanwhile is never left unnoticed.
    pub signals_seen: u64,
}

/// Filters for [`Store::list`].
#[derive(Debug, Clone, Default)]
pub struct ListQuery {
    /// Only these statuses (empty: any).
    pub statuses: Vec<Status>,
    /// Only this workflow.
    pub workflow: Option<String>,
    /// At most this many, most recently created first.
    pub limit: Option<usize>,
}

/// What [`Store::create`] found.
#[derive(Debug, Clone, PartialEq)]
pub enum Created {
    /// A new instance was written.
    New,
    /// An instance with this id already existed; it is returned unchanged.
    Existing(StoredInstance),
}

/// The store contract. Implementations are synchronous; the GIL is released around their calls.
pub trait Store: Send {
    /// Creates an instance with its header and first records, unless the id exists (idempotent).
    fn create(&mut self, meta: &InstanceMeta, header: &[u8], records: &[Vec<u8>]) -> Result<Created>;
    /// Applies one step boundary atomically, or fails with `Conflict` / `UnknownInstance`.
    fn commit(&mut self, commit: &Commit<'_>) -> Result<()>;
    /// Several commits (of different instances) in one transaction where the store can.
    fn commit_many(&mut self, commits: &[Commit<'_>]) -> Result<()> {
        commits.iter().try_for_each(|c| self.commit(c))
    }
    /// The instance's indexed fields and header, if it exists.
    fn get(&mut self, id: &str) -> Result<Option<StoredInstance>>;
    /// The instance's log records in commit order (empty if it does not exist).
    fn records(&mut self, id: &str) -> Result<Vec<Vec<u8>>>;
    /// Instances matching the query, most recently created first.
    fn list(&mut self, query: &ListQuery) -> Result<Vec<InstanceMeta>>;
    /// Deletes an instance and its log; whether it existed.
    fn delete(&mut self, id: &str) -> Result<bool>;
    /// Deletes finished instances last updated before `before` whose status is in `statuses`
    /// (empty: any finished status); how many were deleted.
    fn purge(&mut self, before: f64, statuses: &[Status]) -> Result<u64>;
    /// Gives the space of deleted instances back to the file system, where the store keeps a
    /// file that does not shrink by itself (SQLite); a no-op by default.
    fn compact(&mut self) -> Result<()> {
        Ok(())
    }
    /// Appends a signal record to the instance's inbox in its own transaction and marks the
    /// instance due at `now`; returns its sequence number (1, 2, ... per instance). Fails with
    /// `UnknownInstance`, or `InvalidState` when the instance is finished.
    fn send_signal(&mut self, id: &str, record: &[u8], now: f64) -> Result<u64>;
    /// The instance's inbox: `(sequence number, record)` in arrival order.
    fn signals(&mut self, id: &str) -> Result<Vec<(u64, Vec<u8>)>>;
    /// Suspended instances due at or before `now` (a timer, or a signal), oldest due first.
    fn due(&mut self, now: f64, limit: Option<usize>) -> Result<Vec<InstanceMeta>>;
    /// A short name for messages ("memory", "sqlite:/path").
    fn describe(&self) -> String;
}

/// The message of the error for a signal to a finished instance.
pub fn finished_instance(id: &str, status: Status) -> CoreError {
    CoreError::InvalidState(format!("instance {id:?} is {} and takes no more signals", status.as_str()))
}

/// The due time a commit leaves: `updated_at` when it suspends while a signal it has not seen
/// waits in the inbox, else its own `due_at`.
pub fn effective_due(c: &Commit<'_>, newest_signal: u64) -> Option<f64> {
    if c.status == Status::Suspended && newest_signal > c.signals_seen {
        Some(c.due_at.map_or(c.updated_at, |d| d.min(c.updated_at)))
    } else {
        c.due_at
    }
}

/// The version check every store applies the same way.
pub fn check_version(id: &str, expected: u64, found: u64) -> Result<()> {
    if expected == found {
        Ok(())
    } else {
        Err(CoreError::Conflict { instance: id.to_string(), expected, found })
    }
}

/// Whether `status` is selected by a purge over `statuses` (empty: any finished status).
pub fn purge_selects(status: Status, statuses: &[Status]) -> bool {
    status.is_finished() && (statuses.is_empty() || statuses.contains(&status))
}
