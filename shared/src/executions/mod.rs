//! The I/O shell around the execution domain: the event-store repository and the read models.

pub mod projection;
pub mod repo;
pub mod usage;

pub use projection::{Listing, Projections, TimerRow, WorkflowStats};
pub use repo::{stream_id, Cause, ExecutionRepo, Loaded, RepoError};
