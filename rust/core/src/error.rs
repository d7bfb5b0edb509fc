//! The core's error type: one enum, mapped onto the Python exception tree in one place (bindings).

use std::fmt;

/// Everything the core can report; the bindings map each variant to one Python exception class.
#[derive(Debug, Clone, PartialEq)]
pub enum CoreError {
    /// The workflow definition is invalid (found before anything runs).
    Definition(String),
    /// A checkpoint record is truncated, corrupted, or of an unknown format.
    Corrupt(String),
    /// The store failed (I/O, locked, read-only, closed).
    Store(String),
    /// A commit was rejected because another writer advanced the instance first.
    Conflict { instance: String, expected: u64, found: u64 },
    /// A commit, extend or release by `owner` (None: an engine in its own process) found that it
    /// does not hold the instance's lease: it expired, or `holder` holds a live one.
    LeaseLost { instance: String, owner: Option<String>, holder: Option<String> },
    /// No instance with this id exists in the store.
    UnknownInstance(String),
    /// A stored instance pins a plan hash that is not registered: `registered` holds each
    /// registered plan's hash with how it differs from the stored one ([`crate::plan_diff::explain`]).
    VersionMismatch { instance: String, workflow: String, stored: String, registered: Vec<(String, String)> },
    /// The operation is not valid in the instance's current state.
    InvalidState(String),
}

impl fmt::Display for CoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CoreError::Definition(m) => write!(f, "{m}"),
            CoreError::Corrupt(m) => write!(f, "corrupt checkpoint: {m}"),
            CoreError::Store(m) => write!(f, "store error: {m}"),
            CoreError::Conflict { instance, expected, found } => write!(
                f,
                "instance {instance:?} was advanced by another writer (expected version {expected}, found {found})"
            ),
            CoreError::LeaseLost { instance, owner, holder } => {
                match owner {
                    Some(o) => write!(f, "worker {o:?} no longer holds the lease on instance {instance:?}")?,
                    None => write!(f, "instance {instance:?} is leased to a worker")?,
                }
                match holder {
                    Some(h) => write!(f, " ({h:?} holds it now)"),
                    None => write!(f, " (its lease expired)"),
                }
            }
            CoreError::UnknownInstance(id) => write!(f, "no workflow instance with id {id:?}"),
            CoreError::VersionMismatch { instance, workflow, stored, registered } => {
                write!(f, "instance {instance:?} was started on plan {stored} of workflow {workflow:?}; ")?;
                match registered.as_slice() {
                    [(hash, how)] => write!(f, "this process registered {hash}; {how}")?,
                    _ => {
                        let each: Vec<String> = registered.iter().map(|(h, how)| format!("{h} ({how})")).collect();
                        write!(f, "this process registered {} plans of it: {}", registered.len(), each.join(", "))?
                    }
                }
                write!(f, "; register the old version beside the new one to resume it or decode its output")
            }
            CoreError::InvalidState(m) => write!(f, "{m}"),
        }
    }
}

impl std::error::Error for CoreError {}

/// Shorthand for results carrying a [`CoreError`].
pub type Result<T, E = CoreError> = std::result::Result<T, E>;
