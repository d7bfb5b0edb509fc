//! The store contract, version 2: what every store (memory, SQLite, and the Python ones) must do.
//!
//! A store keeps, per instance, a few indexed fields ([`InstanceMeta`]), one opaque header record,
//! an append-only log of opaque records (bytes written by [`crate::codec`]) and an inbox of signal
//! records. It never parses a record. Every change to an instance's state goes through
//! [`Store::commit`], which is atomic and fenced twice: by the version the writer last saw (a
//! stale writer gets [`CoreError::Conflict`]) and by the lease (a writer whose lease is gone gets
//! [`CoreError::LeaseLost`]); either way nothing changes.
//!
//! **Leases** (for workers): [`Store::claim`] hands up to `n` instances to an owner for a while;
//! [`Store::extend`] renews a lease (only its holder, only while it holds), [`Store::release`]
//! gives it back, and a commit that finishes an instance releases it. A lease is judged by one
//! clock: the store's own where it has one (a database server), else the `now` the engine passes
//! (memory and SQLite, which live in the engine's process). Claims, lease changes and signals do
//! not change the version: only commits do.

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
    /// The content hash of the plan the instance runs on (workers claim only plans they have).
    pub plan_hash: String,
    /// Lifecycle status.
    pub status: Status,
    /// 1 after the create, incremented by every commit (and by nothing else).
    pub version: u64,
    /// Seconds since the epoch.
    pub created_at: f64,
    /// Seconds since the epoch of the last commit.
    pub updated_at: f64,
    /// When a suspended instance next needs attention (a timer, a retry, a signal), if ever.
    pub due_at: Option<f64>,
    /// Who holds the lease, if anyone (a lease whose time passed still names its last holder).
    pub owner: Option<String>,
    /// Until when the owner's lease holds (seconds since the epoch, on the lease clock).
    pub lease_until: Option<f64>,
    /// A one-line summary of why a failed instance failed (for listings), else None.
    pub error: Option<String>,
}

impl InstanceMeta {
    /// Whether someone other than `owner` holds a live lease on the instance at `now`.
    pub fn leased_to_other(&self, owner: Option<&str>, now: f64) -> bool {
        match (&self.owner, self.lease_until) {
            (Some(o), Some(until)) => until > now && Some(o.as_str()) != owner,
            _ => false,
        }
    }
}

/// One instance as stored: indexed fields plus the opaque header record.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredInstance {
    /// Indexed fields.
    pub meta: InstanceMeta,
    /// The header record (codec bytes).
    pub header: Vec<u8>,
}

/// Everything a driver needs to resume an instance, read together ([`Store::load`]).
#[derive(Debug, Clone, PartialEq)]
pub struct Loaded {
    /// Indexed fields.
    pub meta: InstanceMeta,
    /// The header record.
    pub header: Vec<u8>,
    /// The log, in commit order.
    pub records: Vec<Vec<u8>>,
    /// The inbox: `(sequence number, record)` in arrival order.
    pub signals: Vec<(u64, Vec<u8>)>,
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
    /// Commit time (also the lease clock's `now` for stores without a clock of their own).
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
    /// The lease holder the writer is (a worker), or None (an engine driving in its own process).
    /// With an owner, the store requires that owner's live lease; without, it requires that no
    /// one else holds a live lease. A commit that finishes the instance releases the lease.
    pub owner: Option<&'a str>,
    /// The failure summary to index (with a `failed` status), else None.
    pub error: Option<&'a str>,
}

/// Filters for [`Store::list`].
#[derive(Debug, Clone, Default)]
pub struct ListQuery {
    /// Only these statuses (empty: any).
    pub statuses: Vec<Status>,
    /// Only this workflow.
    pub workflow: Option<String>,
    /// Only this plan hash.
    pub plan_hash: Option<String>,
    /// At most this many, most recently created first.
    pub limit: Option<usize>,
    /// Go on after this page ([`ListPage::cursor`] of the previous call).
    pub cursor: Option<String>,
}

/// One page of a listing.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ListPage {
    /// The instances, most recently created first.
    pub items: Vec<InstanceMeta>,
    /// Where the next page starts, when the limit cut this one short; None at the end.
    pub cursor: Option<String>,
}

/// How many instances of one workflow have one status ([`Store::counts`]).
#[derive(Debug, Clone, PartialEq)]
pub struct Count {
    /// The workflow name.
    pub workflow: String,
    /// The status.
    pub status: Status,
    /// How many.
    pub count: u64,
}

/// A request for work ([`Store::claim`]).
#[derive(Debug, Clone, Copy)]
pub struct Claim<'a> {
    /// Who claims (a worker id).
    pub owner: &'a str,
    /// At most this many instances.
    pub limit: usize,
    /// How long the lease lasts, in seconds.
    pub lease: f64,
    /// The engine's clock (the lease clock for stores without one of their own).
    pub now: f64,
    /// Only instances on these plans (empty: none).
    pub plan_hashes: &'a [String],
}

/// What [`Store::create`] found.
#[derive(Debug, Clone, PartialEq)]
#[allow(clippy::large_enum_variant)] // returned once per start, never stored
pub enum Created {
    /// A new instance was written.
    New,
    /// An instance with this id already existed; it is returned unchanged.
    Existing(StoredInstance),
}

/// The store contract. Implementations are synchronous; the GIL is released around native ones.
pub trait Store: Send {
    /// Creates an instance (version 1) with its header and first records, unless the id exists:
    /// then changes nothing and returns what is stored (create-or-return, one call).
    fn create(&mut self, meta: &InstanceMeta, header: &[u8], records: &[Vec<u8>]) -> Result<Created>;
    /// Applies one step boundary atomically, or fails with `UnknownInstance`, `LeaseLost` or
    /// `Conflict` (checked in that order) and changes nothing.
    fn commit(&mut self, commit: &Commit<'_>) -> Result<()>;
    /// The instance's indexed fields and header, if it exists.
    fn get(&mut self, id: &str) -> Result<Option<StoredInstance>>;
    /// Header, log and inbox together (one read where the store can), if the instance exists.
    fn load(&mut self, id: &str) -> Result<Option<Loaded>> {
        let Some(stored) = self.get(id)? else { return Ok(None) };
        let records = self.records(id, 0)?;
        let signals = self.signals(id, 0)?;
        Ok(Some(Loaded { meta: stored.meta, header: stored.header, records, signals }))
    }
    /// The log records of the commits after version `after` (0: the whole log), in commit order;
    /// empty if the instance does not exist.
    fn records(&mut self, id: &str, after: u64) -> Result<Vec<Vec<u8>>>;
    /// Instances matching the query, most recently created first, one page at a time.
    fn list(&mut self, query: &ListQuery) -> Result<ListPage>;
    /// How many instances there are per workflow and status (only the non-zero counts).
    fn counts(&mut self) -> Result<Vec<Count>>;
    /// Deletes an instance, its log and its inbox; whether it existed.
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
    /// instance due at `now` (keeping an earlier due time); returns its sequence number (1, 2, ...
    /// per instance). Does not change the version. Fails with `UnknownInstance`, or
    /// `InvalidState` when the instance is finished.
    fn send_signal(&mut self, id: &str, record: &[u8], now: f64) -> Result<u64>;
    /// The inbox signals numbered above `after` (0: all): `(sequence number, record)` in arrival
    /// order; empty if the instance does not exist.
    fn signals(&mut self, id: &str, after: u64) -> Result<Vec<(u64, Vec<u8>)>>;
    /// Pending instances, and suspended ones due at or before `now` (a timer, or a signal), that
    /// no one holds a live lease on, earliest due first (a pending instance is due from its
    /// creation).
    fn due(&mut self, now: f64, limit: Option<usize>) -> Result<Vec<InstanceMeta>>;
    /// Atomically leases up to `claim.limit` unfinished instances on the given plans to
    /// `claim.owner` until `now + lease`: those pending or suspended and due with no live lease,
    /// and those whose lease expired (whatever their status); earliest due (or, undue, last
    /// updated) first ([`claim_order`]).
    /// Two claimers never get the same instance. Returns them as leased.
    fn claim(&mut self, claim: &Claim<'_>) -> Result<Vec<InstanceMeta>>;
    /// Renews `owner`'s live lease on `id` to `now + lease`; returns the new expiry. Fails with
    /// `LeaseLost` when `owner` does not hold a live lease on it, `UnknownInstance` when there
    /// is no such instance.
    fn extend(&mut self, id: &str, owner: &str, lease: f64, now: f64) -> Result<f64>;
    /// Gives `owner`'s lease on `id` back (also one that expired, unless someone else claimed
    /// the instance since); whether `owner` held it. Fails with `UnknownInstance`.
    fn release(&mut self, id: &str, owner: &str) -> Result<bool>;
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

/// The lease check of a commit by `owner` (None: an engine in its own process) at `now`, against
/// the stored holder and expiry: the owner's lease must be live; without an owner, no one else's
/// may be.
pub fn check_lease(id: &str, owner: Option<&str>, holder: Option<&str>, until: Option<f64>, now: f64) -> Result<()> {
    let live = until.is_some_and(|u| u > now);
    let ok = match owner {
        Some(o) => holder == Some(o) && live,
        None => holder.is_none() || !live,
    };
    if ok {
        Ok(())
    } else {
        Err(CoreError::LeaseLost {
            instance: id.to_string(),
            owner: owner.map(str::to_string),
            holder: if live { holder.map(str::to_string) } else { None },
        })
    }
}

/// Whether an instance may be claimed at `now` by a claim over `plan_hashes`.
pub fn claimable(m: &InstanceMeta, now: f64, plan_hashes: &[String]) -> bool {
    if m.status.is_finished() || !plan_hashes.contains(&m.plan_hash) {
        return false;
    }
    match (&m.owner, m.lease_until) {
        (Some(_), Some(until)) => until <= now, // an expired lease: its holder is gone
        (Some(_), None) => true,
        (None, _) => {
            m.status == Status::Pending || (m.status == Status::Suspended && m.due_at.is_some_and(|d| d <= now))
        }
    }
}

/// The order claims and due lists take instances in: earliest due (or, undue, updated) first.
pub fn claim_order(m: &InstanceMeta) -> f64 {
    m.due_at.unwrap_or(m.updated_at)
}

/// Whether an instance is due at `now` ([`Store::due`]): pending, or suspended with a due time
/// passed, and no one holds a live lease on it.
pub fn is_due(m: &InstanceMeta, now: f64) -> bool {
    let waiting = m.status == Status::Pending || m.status == Status::Suspended;
    waiting && m.due_at.is_some_and(|d| d <= now) && !m.leased_to_other(None, now)
}

/// Whether `status` is selected by a purge over `statuses` (empty: any finished status).
pub fn purge_selects(status: Status, statuses: &[Status]) -> bool {
    status.is_finished() && (statuses.is_empty() || statuses.contains(&status))
}

/// The longest failure summary a store is asked to index, in bytes (longer ones are cut).
pub const ERROR_SUMMARY_MAX: usize = 200;
