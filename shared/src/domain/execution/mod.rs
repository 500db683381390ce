//! Executions: events, state (`evolve`), the orchestrator (`plan`/`decide`) and the summary
//! projection, all pure.

pub mod events;
pub mod plan;
#[cfg(feature = "testkit")]
pub mod sim;
pub mod state;
pub mod step_detail;
pub mod summary;

pub use events::{ExecutionEvent, ParentRef, StepError, Task, TimerPurpose, Usage};
pub use plan::{decide, plan};
pub use state::{evolve, ExecutionState, ExecutionStatus, StepState, StepStatus};
pub use step_detail::{fold_step_details, step_details, StepDetail};
pub use summary::Summary;
