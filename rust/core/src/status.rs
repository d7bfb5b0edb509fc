//! The lifecycle of an instance: pending → running ⇄ suspended → completed | failed | cancelled.

/// Where an instance is in its lifecycle; stores index it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Status {
    /// Created, not yet picked up.
    Pending,
    /// A driver is advancing it.
    Running,
    /// Waiting on a signal, a timer or a retry.
    Suspended,
    /// Finished with an output.
    Completed,
    /// Finished with an error.
    Failed,
    /// Stopped on request.
    Cancelled,
}

impl Status {
    /// Every status, in lifecycle order.
    pub const ALL: [Status; 6] =
        [Status::Pending, Status::Running, Status::Suspended, Status::Completed, Status::Failed, Status::Cancelled];

    /// The lowercase name used in the API and stored by stores.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Pending => "pending",
            Status::Running => "running",
            Status::Suspended => "suspended",
            Status::Completed => "completed",
            Status::Failed => "failed",
            Status::Cancelled => "cancelled",
        }
    }

    /// Parses a lowercase name.
    pub fn parse(s: &str) -> Option<Status> {
        Status::ALL.into_iter().find(|st| st.as_str() == s)
    }

    /// Whether the instance can never move again.
    pub fn is_finished(self) -> bool {
        matches!(self, Status::Completed | Status::Failed | Status::Cancelled)
    }
}
