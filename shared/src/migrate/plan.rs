//! Pure decisions: given the migrations in this build and the ledger, what is the status and what
//! would `up` or `down` do. No I/O, so every rule is unit-tested here.

use serde::Serialize;

use super::{LedgerEntry, MigrateError, Migration};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum MigrationState {
    Applied,
    Pending,
    /// Applied, but the file changed since: runs stop until it is restored.
    Modified,
    /// Applied, but this build has no such migration.
    Missing,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StatusRow {
    pub version: u32,
    pub id: String,
    pub state: MigrationState,
    pub applied_at: Option<String>,
}

pub fn status(migrations: &[Migration], ledger: &[LedgerEntry]) -> Vec<StatusRow> {
    let mut rows: Vec<StatusRow> = migrations
        .iter()
        .map(|m| {
            let entry = ledger.iter().find(|e| e.version == m.version);
            StatusRow {
                version: m.version,
                id: m.id(),
                state: match entry {
                    None => MigrationState::Pending,
                    Some(e) if e.checksum != m.checksum => MigrationState::Modified,
                    Some(_) => MigrationState::Applied,
                },
                applied_at: entry.map(|e| e.applied_at.clone()),
            }
        })
        .collect();
    rows.extend(
        ledger
            .iter()
            .filter(|e| !migrations.iter().any(|m| m.version == e.version))
            .map(|e| StatusRow {
                version: e.version,
                id: e.id(),
                state: MigrationState::Missing,
                applied_at: Some(e.applied_at.clone()),
            }),
    );
    rows.sort_by_key(|r| r.version);
    rows
}

/// Every applied migration must be present and unchanged before anything else runs.
fn check_ledger(migrations: &[Migration], ledger: &[LedgerEntry]) -> Result<(), MigrateError> {
    for entry in ledger {
        match migrations.iter().find(|m| m.version == entry.version) {
            None => return Err(MigrateError::Missing { id: entry.id() }),
            Some(m) if m.checksum != entry.checksum => {
                return Err(MigrateError::Modified {
                    id: m.id(),
                    recorded: entry.checksum.clone(),
                    current: m.checksum.clone(),
                })
            }
            Some(_) => {}
        }
    }
    Ok(())
}

fn check_target(migrations: &[Migration], target: u32) -> Result<(), MigrateError> {
    if target == 0 || migrations.iter().any(|m| m.version == target) {
        Ok(())
    } else {
        Err(MigrateError::UnknownTarget(target))
    }
}

/// Pending migrations up to `target` (all when `None`), oldest first.
pub fn plan_up<'a>(
    migrations: &'a [Migration],
    ledger: &[LedgerEntry],
    target: Option<u32>,
) -> Result<Vec<&'a Migration>, MigrateError> {
    check_ledger(migrations, ledger)?;
    if let Some(t) = target {
        check_target(migrations, t)?;
    }
    Ok(migrations
        .iter()
        .filter(|m| target.is_none_or(|t| m.version <= t))
        .filter(|m| !ledger.iter().any(|e| e.version == m.version))
        .collect())
}

/// Applied migrations above `target`, newest first; `target = 0` reverts everything.
pub fn plan_down<'a>(
    migrations: &'a [Migration],
    ledger: &[LedgerEntry],
    target: u32,
) -> Result<Vec<&'a Migration>, MigrateError> {
    check_ledger(migrations, ledger)?;
    check_target(migrations, target)?;
    let mut out: Vec<&Migration> = migrations
        .iter()
        .filter(|m| m.version > target)
        .filter(|m| ledger.iter().any(|e| e.version == m.version))
        .collect();
    out.reverse();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn migration(version: u32, body: &str) -> Migration {
        let up = format!("- op: enable_ttl\n  table: state\n  attribute: {body}\n");
        let down = format!("- op: disable_ttl\n  table: state\n  attribute: {body}\n");
        Migration::parse(&format!("{version:04}_m{version}"), &up, &down).unwrap()
    }

    fn applied(m: &Migration) -> LedgerEntry {
        LedgerEntry {
            version: m.version,
            name: m.name.clone(),
            checksum: m.checksum.clone(),
            applied_at: "2026-11-25T00:00:00Z".into(),
            applied_by: "test".into(),
        }
    }

    #[test]
    fn up_applies_pending_in_order_and_respects_target() {
        let ms = [migration(1, "a"), migration(2, "b"), migration(3, "c")];
        let ledger = vec![applied(&ms[0])];
        let all: Vec<u32> = plan_up(&ms, &ledger, None)
            .unwrap()
            .iter()
            .map(|m| m.version)
            .collect();
        assert_eq!(all, [2, 3]);
        let to2: Vec<u32> = plan_up(&ms, &ledger, Some(2))
            .unwrap()
            .iter()
            .map(|m| m.version)
            .collect();
        assert_eq!(to2, [2]);
        assert!(matches!(
            plan_up(&ms, &ledger, Some(9)),
            Err(MigrateError::UnknownTarget(9))
        ));
    }

    #[test]
    fn up_when_everything_is_applied_does_nothing() {
        let ms = [migration(1, "a"), migration(2, "b")];
        let ledger: Vec<_> = ms.iter().map(applied).collect();
        assert!(plan_up(&ms, &ledger, None).unwrap().is_empty());
    }

    #[test]
    fn down_reverts_newest_first_to_target() {
        let ms = [migration(1, "a"), migration(2, "b"), migration(3, "c")];
        let ledger: Vec<_> = ms.iter().map(applied).collect();
        let down: Vec<u32> = plan_down(&ms, &ledger, 1)
            .unwrap()
            .iter()
            .map(|m| m.version)
            .collect();
        assert_eq!(down, [3, 2]);
        let all: Vec<u32> = plan_down(&ms, &ledger, 0)
            .unwrap()
            .iter()
            .map(|m| m.version)
            .collect();
        assert_eq!(all, [3, 2, 1]);
    }

    #[test]
    fn modified_applied_migration_stops_every_run_naming_it() {
        let ms = [migration(1, "a"), migration(2, "b")];
        let mut ledger: Vec<_> = ms.iter().map(applied).collect();
        ledger[1].checksum = "0".repeat(64);
        let err = plan_up(&ms, &ledger, None).unwrap_err();
        assert!(err.to_string().contains("0002_m2"), "{err}");
        assert!(matches!(
            plan_down(&ms, &ledger, 0),
            Err(MigrateError::Modified { .. })
        ));
        let rows = status(&ms, &ledger);
        assert_eq!(rows[1].state, MigrationState::Modified);
    }

    #[test]
    fn applied_but_missing_is_reported() {
        let ms = [migration(1, "a"), migration(2, "b")];
        let ledger: Vec<_> = ms.iter().map(applied).collect();
        let err = plan_up(&ms[..1], &ledger, None).unwrap_err();
        assert!(
            err.to_string()
                .contains("0002_m2 is applied but is not in this build"),
            "{err}"
        );
        let rows = status(&ms[..1], &ledger);
        assert_eq!(rows[1].state, MigrationState::Missing);
    }

    #[test]
    fn status_lists_applied_and_pending() {
        let ms = [migration(1, "a"), migration(2, "b")];
        let rows = status(&ms, &[applied(&ms[0])]);
        let states: Vec<_> = rows.iter().map(|r| r.state).collect();
        assert_eq!(states, [MigrationState::Applied, MigrationState::Pending]);
    }

    #[test]
    fn parse_rejects_bad_files_with_the_file_name() {
        let err = Migration::parse("0001_x", "- op: drop_table\n", "[]").unwrap_err();
        assert!(err.to_string().contains("0001_x/up.yaml"), "{err}");
        let err = Migration::parse("x_y", "[]", "[]").unwrap_err();
        assert!(err.to_string().contains("x_y"), "{err}");
        let err = Migration::parse(
            "0001_x",
            "- op: put_items\n  table: state\n  items: [{a: 1}]\n",
            "[]",
        )
        .unwrap_err();
        assert!(err.to_string().contains("no key attribute"), "{err}");
    }

    #[test]
    fn checksum_covers_both_files() {
        let a = Migration::parse("0001_x", "[]", "[]").unwrap();
        let b = Migration::parse("0001_x", "[]", "[] # changed").unwrap();
        assert_ne!(a.checksum, b.checksum);
    }
}
