//! tideflow-core: the pure-Rust engine behind tideflow.
//!
//! No Python here: the plan IR ([`plan`]), the instance state machine ([`instance`]), retry
//! policies ([`retry`]), the checkpoint record format ([`codec`]) and the store contract with the
//! native stores ([`store`]). Time is always passed in, never read, so every transition is
//! deterministic and testable with `cargo test`.

pub mod codec;
pub mod drive;
pub mod error;
pub mod history;
pub mod instance;
pub mod mermaid;
pub mod outline;
pub mod plan;
pub mod plan_diff;
pub mod retry;
pub mod status;
pub mod store;
mod varint;

pub use error::{CoreError, Result};
pub use status::Status;
