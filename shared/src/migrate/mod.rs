//! Versioned migrations for the DynamoDB tables, the serverless form of the seed's
//! `diesel migration run / revert / status`.
//!
//! A migration is a folder `NNNN_name/` with `up.yaml` and `down.yaml`, each a list of operations
//! ([`Op`]). The ledger in the migrations table records what was applied with its checksum; a
//! lease lock in the same table keeps two runs from interleaving.

mod ledger;
mod ops;
mod plan;
mod source;

pub use ledger::{LedgerEntry, Lock, Migrator};
pub use ops::{KeyAttr, KeyType, Op, Projection, TableRef};
pub use plan::{plan_down, plan_up, status, MigrationState, StatusRow};
pub use source::{from_files, load_dir, Migration};

use serde::Serialize;

#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    #[error("migration {id} was changed after it was applied (recorded checksum {recorded}, now {current}): restore the applied file and put the change in a new migration")]
    Modified {
        id: String,
        recorded: String,
        current: String,
    },
    #[error("migration {id} is applied but is not in this build: deploy a build that contains it, or revert it from one that does")]
    Missing { id: String },
    #[error("another migration run ({owner}, `{command}`) holds the lock until {expires_at}; wait for it to finish or for the lease to expire")]
    LockHeld {
        owner: String,
        command: String,
        expires_at: String,
    },
    #[error("this run lost the migration lock (lease expired or taken over); stopped before the next step")]
    LockLost,
    #[error("there is no migration with version {0}")]
    UnknownTarget(u32),
    #[error("migration file {file}: {reason}")]
    Parse { file: String, reason: String },
    #[error("migration {id}, step {step} ({op}) failed: {reason}")]
    Op {
        id: String,
        step: usize,
        op: String,
        reason: String,
    },
    #[error("migrations table access failed: {0}")]
    Backend(String),
}

/// What a run did, and the status afterwards; returned by the Lambda and printed by the CLI.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub command: String,
    pub applied: Vec<String>,
    pub reverted: Vec<String>,
    pub status: Vec<StatusRow>,
}

impl Report {
    fn with_status(mut self, status: Vec<StatusRow>) -> Self {
        self.status = status;
        self
    }
}
