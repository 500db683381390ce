//! The migrator: turns EventBridge events (the schedule or a `MigrationCommand`) and command-line
//! arguments into runs of [`shared::migrate::Migrator`] over the migrations built into the binary.

use aws_lambda_events::eventbridge::EventBridgeEvent;
use include_dir::{include_dir, Dir};
use serde::Deserialize;
use serde_json::Value;
use shared::migrate::{from_files, MigrateError, Migration, Migrator, Report};

static MIGRATIONS: Dir<'_> = include_dir!("$CARGO_MANIFEST_DIR/../../migrations");

/// `source` of the custom events this function accepts; `detail-type` must be [`DETAIL_TYPE`].
pub const SOURCE: &str = "wfe.migrator";
pub const DETAIL_TYPE: &str = "MigrationCommand";

/// What to do; the `detail` of a `MigrationCommand` event, e.g. `{"command": "down", "to": 3}`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(tag = "command", rename_all = "lowercase", deny_unknown_fields)]
pub enum Command {
    /// Apply pending migrations, all or up to `to`.
    Up {
        to: Option<u32>,
    },
    /// Revert applied migrations above `to` (0 reverts everything). No default: a revert is
    /// always asked for explicitly.
    Down {
        to: u32,
    },
    Status,
}

/// The migrations built into this binary, parsed and checked.
pub fn embedded() -> Result<Vec<Migration>, MigrateError> {
    let text = |f: Option<&include_dir::File<'_>>| {
        f.and_then(|f| f.contents_utf8())
            .unwrap_or_default()
            .to_owned()
    };
    from_files(MIGRATIONS.dirs().map(|d| {
        let folder = d.path().to_string_lossy().into_owned();
        (
            folder.clone(),
            text(d.get_file(format!("{folder}/up.yaml"))),
            text(d.get_file(format!("{folder}/down.yaml"))),
        )
    }))
}

/// The newest migration version built into this binary (what `/health/detailed` expects applied).
pub fn latest_version() -> u32 {
    embedded()
        .ok()
        .and_then(|ms| ms.last().map(|m| m.version))
        .unwrap_or(0)
}

/// Maps an EventBridge event to a command: the schedule, and the stack's own deploy finishing
/// (the template's rule matches only this stack's CREATE/UPDATE_COMPLETE), mean "up to latest".
pub fn command_from_event(event: &EventBridgeEvent<Value>) -> Result<Command, String> {
    if event.source == "aws.events" && event.detail_type == "Scheduled Event" {
        return Ok(Command::Up { to: None });
    }
    if event.source == "aws.cloudformation"
        && event.detail_type == "CloudFormation Stack Status Change"
    {
        return match event.detail["status-details"]["status"].as_str() {
            Some("CREATE_COMPLETE" | "UPDATE_COMPLETE") => Ok(Command::Up { to: None }),
            other => Err(format!(
                "a stack status change to {other:?} applies nothing (only CREATE_COMPLETE or UPDATE_COMPLETE)"
            )),
        };
    }
    if event.source == SOURCE && event.detail_type == DETAIL_TYPE {
        return serde_json::from_value(event.detail.clone()).map_err(|e| {
            format!(
                "invalid {DETAIL_TYPE} detail: {e}; expected {{\"command\": \"up\"|\"down\"|\"status\", \"to\": N}}"
            )
        });
    }
    Err(format!(
        "unsupported event (source {:?}, detail-type {:?}): send source {SOURCE:?} with detail-type {DETAIL_TYPE:?}",
        event.source, event.detail_type
    ))
}

/// Parses command-line arguments: `up [--to N]`, `down --to N`, `revert` (the latest one), `status`.
pub fn command_from_args(
    args: &[String],
    applied_latest: impl FnOnce() -> u32,
) -> Result<Command, String> {
    let to = |rest: &[String]| -> Result<Option<u32>, String> {
        match rest {
            [] => Ok(None),
            [flag, n] if flag == "--to" => n
                .parse()
                .map(Some)
                .map_err(|_| format!("--to needs a version number, got {n:?}")),
            other => Err(format!("unexpected arguments {other:?}")),
        }
    };
    match args {
        [cmd, rest @ ..] if cmd == "up" => Ok(Command::Up { to: to(rest)? }),
        [cmd, rest @ ..] if cmd == "down" => match to(rest)? {
            Some(to) => Ok(Command::Down { to }),
            None => Err("down needs --to N (use `revert` to undo only the latest)".into()),
        },
        [cmd] if cmd == "revert" => Ok(Command::Down {
            to: applied_latest().saturating_sub(1),
        }),
        [cmd] if cmd == "status" => Ok(Command::Status),
        _ => Err(USAGE.into()),
    }
}

pub const USAGE: &str = "usage: migrator up [--to N] | down --to N | revert | status";

pub async fn run(
    migrator: &Migrator,
    migrations: &[Migration],
    command: &Command,
) -> Result<Report, MigrateError> {
    // Boxed: the run futures are deep, and callers nest them again inside the Lambda runtime.
    match command {
        Command::Up { to } => Box::pin(migrator.up(migrations, *to)).await,
        Command::Down { to } => Box::pin(migrator.down(migrations, *to)).await,
        Command::Status => Ok(Report {
            command: "status".into(),
            applied: vec![],
            reverted: vec![],
            status: migrator.status(migrations).await?,
        }),
    }
}

/// The Lambda handler: one event, one run; errors fail the invocation so EventBridge retries
/// and the failure shows in the function's error metric.
pub async fn handle(
    migrator: &Migrator,
    migrations: &[Migration],
    event: EventBridgeEvent<Value>,
) -> Result<Report, String> {
    let command = command_from_event(&event)?;
    tracing::info!(?command, "migration run");
    run(migrator, migrations, &command)
        .await
        .map_err(|e| e.to_string())
}

/// The command-line path: parses `args`, runs, prints; returns the process exit code.
pub async fn cli(migrator: &Migrator, migrations: &[Migration], args: &[String]) -> i32 {
    let latest = match migrator.ledger().await {
        Ok(ledger) => ledger.iter().map(|e| e.version).max().unwrap_or(0),
        Err(e) => {
            eprintln!("Error: {e}");
            return 1;
        }
    };
    let command = match command_from_args(args, || latest) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}\n{USAGE}");
            return 2;
        }
    };
    match run(migrator, migrations, &command).await {
        Ok(report) => {
            print!("{}", render(&report));
            0
        }
        Err(e) => {
            eprintln!("Error: {e}");
            1
        }
    }
}

/// Renders a report as the CLI's table.
pub fn render(report: &Report) -> String {
    let mut out = String::new();
    for id in &report.applied {
        out.push_str(&format!("applied   {id}\n"));
    }
    for id in &report.reverted {
        out.push_str(&format!("reverted  {id}\n"));
    }
    if report.applied.is_empty() && report.reverted.is_empty() && report.command != "status" {
        out.push_str("nothing to do\n");
    }
    for row in &report.status {
        let state = serde_json::to_value(row.state)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default();
        out.push_str(&format!(
            "{:<9} {:<40} {}\n",
            state,
            row.id,
            row.applied_at.as_deref().unwrap_or("-")
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_migrations_parse() {
        let ms = embedded().expect("embedded migrations are valid");
        assert!(!ms.is_empty());
        assert!(ms.windows(2).all(|w| w[0].version < w[1].version));
    }

    fn event(source: &str, detail_type: &str, detail: Value) -> EventBridgeEvent<Value> {
        serde_json::from_value(serde_json::json!({
            "source": source, "detail-type": detail_type, "detail": detail
        }))
        .unwrap()
    }

    #[test]
    fn events_map_to_commands() {
        let schedule = event("aws.events", "Scheduled Event", serde_json::json!({}));
        assert_eq!(command_from_event(&schedule), Ok(Command::Up { to: None }));
        let down = event(
            SOURCE,
            DETAIL_TYPE,
            serde_json::json!({"command": "down", "to": 2}),
        );
        assert_eq!(command_from_event(&down), Ok(Command::Down { to: 2 }));
        let down_without_target =
            event(SOURCE, DETAIL_TYPE, serde_json::json!({"command": "down"}));
        assert!(command_from_event(&down_without_target)
            .unwrap_err()
            .contains("to"));
        let deployed = |status: &str| {
            event(
                "aws.cloudformation",
                "CloudFormation Stack Status Change",
                serde_json::json!({"stack-id": "arn:aws:cloudformation:us-east-1:123456789012:stack/wfe/1",
                                   "status-details": {"status": status, "status-reason": ""}}),
            )
        };
        for status in ["CREATE_COMPLETE", "UPDATE_COMPLETE"] {
            assert_eq!(
                command_from_event(&deployed(status)),
                Ok(Command::Up { to: None })
            );
        }
        assert!(command_from_event(&deployed("UPDATE_ROLLBACK_IN_PROGRESS")).is_err());
        let other = event("aws.s3", "Object Created", serde_json::json!({}));
        assert!(command_from_event(&other)
            .unwrap_err()
            .contains("unsupported event"));
    }

    #[test]
    fn args_map_to_commands() {
        let args = |s: &str| s.split_whitespace().map(String::from).collect::<Vec<_>>();
        assert_eq!(
            command_from_args(&args("up"), || 0),
            Ok(Command::Up { to: None })
        );
        assert_eq!(
            command_from_args(&args("up --to 2"), || 0),
            Ok(Command::Up { to: Some(2) })
        );
        assert_eq!(
            command_from_args(&args("revert"), || 3),
            Ok(Command::Down { to: 2 })
        );
        assert!(command_from_args(&args("down"), || 3).is_err());
        assert!(command_from_args(&args("sideways"), || 3)
            .unwrap_err()
            .starts_with("usage"));
    }
}
