//! The migrator against moto: effects on real tables, idempotence, the lease lock, checksums,
//! revert, and the EventBridge entry point.

use std::path::Path;

use aws_lambda_events::eventbridge::EventBridgeEvent;
use aws_sdk_dynamodb::types::{AttributeValue, IndexStatus, TimeToLiveStatus};
use serde_json::{json, Value};
use shared::migrate::{load_dir, MigrateError, MigrationState, Migrator};

use crate::support::Stack;

fn migrations() -> Vec<shared::migrate::Migration> {
    migrator::embedded().expect("embedded migrations")
}

fn ids(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

async fn gsi1(stack: &Stack) -> Option<IndexStatus> {
    let out = stack
        .dynamodb
        .describe_table()
        .table_name(&stack.tables.state)
        .send()
        .await
        .unwrap();
    out.table()
        .unwrap()
        .global_secondary_indexes()
        .iter()
        .find(|g| g.index_name() == Some("gsi1"))
        .and_then(|g| g.index_status().cloned())
}

async fn ttl(stack: &Stack) -> Option<TimeToLiveStatus> {
    let out = stack
        .dynamodb
        .describe_time_to_live()
        .table_name(&stack.tables.state)
        .send()
        .await
        .unwrap();
    out.time_to_live_description()
        .and_then(|d| d.time_to_live_status().cloned())
}

async fn prices(stack: &Stack) -> usize {
    let out = stack
        .dynamodb
        .query()
        .table_name(&stack.tables.state)
        .key_condition_expression("pk = :p")
        .expression_attribute_values(":p", AttributeValue::S("PRICE".into()))
        .send()
        .await
        .unwrap();
    out.items().len()
}

fn states(report: &[shared::migrate::StatusRow]) -> Vec<(u32, MigrationState)> {
    report.iter().map(|r| (r.version, r.state)).collect()
}

#[tokio::test]
async fn up_applies_every_migration_then_is_a_no_op() {
    let stack = Stack::fresh("mig-up").await;
    let runner = Migrator::new(stack.dynamodb.clone(), stack.tables.clone());
    let ms = migrations();
    assert!(states(&runner.status(&ms).await.unwrap())
        .iter()
        .all(|(_, s)| *s == MigrationState::Pending));

    let first = runner.up(&ms, None).await.unwrap();
    assert_eq!(
        ids(&first.applied),
        [
            "0001_state_listing_index",
            "0002_state_ttl",
            "0003_model_prices",
            "0004_state_executions_index",
            "0005_state_holds_index",
            "0006_state_active_index",
            "0007_state_active_backfill",
            "0008_snapshot_prices",
            "0009_state_execution_listings_backfill",
            "0010_state_execution_listings",
            "0011_worker_decides"
        ]
    );
    assert_eq!(gsi1(&stack).await, Some(IndexStatus::Active));
    assert_eq!(ttl(&stack).await, Some(TimeToLiveStatus::Enabled));
    assert_eq!(prices(&stack).await, 14);
    assert!(first
        .status
        .iter()
        .all(|r| r.state == MigrationState::Applied && r.applied_at.is_some()));

    let second = runner.up(&ms, None).await.unwrap();
    assert!(
        second.applied.is_empty(),
        "second up is a no-op: {second:?}"
    );
    assert_eq!(runner.ledger().await.unwrap().len(), 11);
    assert_eq!(runner.current_lock().await.unwrap(), None, "lock released");
}

#[tokio::test]
async fn up_to_a_version_then_down_reverts_with_status_after_each() {
    let stack = Stack::fresh("mig-down").await;
    let runner = Migrator::new(stack.dynamodb.clone(), stack.tables.clone());
    let ms = migrations();

    let r = runner.up(&ms, Some(2)).await.unwrap();
    assert_eq!(
        ids(&r.applied),
        ["0001_state_listing_index", "0002_state_ttl"]
    );
    use MigrationState::*;
    assert_eq!(
        states(&r.status),
        [
            (1, Applied),
            (2, Applied),
            (3, Pending),
            (4, Pending),
            (5, Pending),
            (6, Pending),
            (7, Pending),
            (8, Pending),
            (9, Pending),
            (10, Pending),
            (11, Pending)
        ]
    );
    assert_eq!(prices(&stack).await, 0);

    runner.up(&ms, None).await.unwrap();
    let r = runner.down(&ms, 1).await.unwrap();
    assert_eq!(
        ids(&r.reverted),
        [
            "0011_worker_decides",
            "0010_state_execution_listings",
            "0009_state_execution_listings_backfill",
            "0008_snapshot_prices",
            "0007_state_active_backfill",
            "0006_state_active_index",
            "0005_state_holds_index",
            "0004_state_executions_index",
            "0003_model_prices",
            "0002_state_ttl"
        ]
    );
    assert_eq!(
        states(&r.status),
        [
            (1, Applied),
            (2, Pending),
            (3, Pending),
            (4, Pending),
            (5, Pending),
            (6, Pending),
            (7, Pending),
            (8, Pending),
            (9, Pending),
            (10, Pending),
            (11, Pending)
        ]
    );
    assert_eq!(prices(&stack).await, 0, "seeded prices removed");
    assert_eq!(ttl(&stack).await, Some(TimeToLiveStatus::Disabled));
    assert_eq!(gsi1(&stack).await, Some(IndexStatus::Active), "0001 stays");

    let r = runner.down(&ms, 0).await.unwrap();
    assert_eq!(ids(&r.reverted), ["0001_state_listing_index"]);
    assert_eq!(gsi1(&stack).await, None);
    assert_eq!(
        states(&r.status),
        [
            (1, Pending),
            (2, Pending),
            (3, Pending),
            (4, Pending),
            (5, Pending),
            (6, Pending),
            (7, Pending),
            (8, Pending),
            (9, Pending),
            (10, Pending),
            (11, Pending)
        ]
    );

    let err = runner.down(&ms, 12).await.unwrap_err();
    assert!(matches!(err, MigrateError::UnknownTarget(12)), "{err}");
}

#[tokio::test]
async fn concurrent_runs_never_both_apply() {
    let stack = Stack::fresh("mig-race").await;
    let ms = migrations();
    let runners: Vec<_> = (0..4)
        .map(|_| Migrator::new(stack.dynamodb.clone(), stack.tables.clone()))
        .collect();
    let results = futures::future::join_all(runners.iter().map(|r| r.up(&ms, None))).await;
    let mut applied: Vec<String> = Vec::new();
    for result in results {
        match result {
            Ok(report) => applied.extend(report.applied),
            Err(MigrateError::LockHeld { .. }) => {}
            Err(other) => panic!("unexpected failure: {other}"),
        }
    }
    applied.sort();
    assert_eq!(
        ids(&applied),
        [
            "0001_state_listing_index",
            "0002_state_ttl",
            "0003_model_prices",
            "0004_state_executions_index",
            "0005_state_holds_index",
            "0006_state_active_index",
            "0007_state_active_backfill",
            "0008_snapshot_prices",
            "0009_state_execution_listings_backfill",
            "0010_state_execution_listings",
            "0011_worker_decides"
        ],
        "each migration applied exactly once across all runs"
    );
    let ledger = runners[0].ledger().await.unwrap();
    assert_eq!(ledger.len(), 11);
}

#[tokio::test]
async fn a_held_lock_stops_a_run_until_its_lease_expires() {
    let stack = Stack::fresh("mig-lock").await;
    let ms = migrations();
    let runner = Migrator::new(stack.dynamodb.clone(), stack.tables.clone());
    let put_lock = |expires_at: i64| {
        stack
            .dynamodb
            .put_item()
            .table_name(&stack.tables.migrations)
            .item("pk", AttributeValue::S("LOCK".into()))
            .item("sk", AttributeValue::S("LOCK".into()))
            .item("owner", AttributeValue::S("crashed-run".into()))
            .item("command", AttributeValue::S("up".into()))
            .item("expires_at", AttributeValue::N(expires_at.to_string()))
            .send()
    };
    let now = chrono::Utc::now().timestamp();
    put_lock(now + 600).await.unwrap();
    let err = runner.up(&ms, None).await.unwrap_err();
    assert!(
        matches!(&err, MigrateError::LockHeld { owner, .. } if owner == "crashed-run"),
        "{err}"
    );
    assert!(runner.ledger().await.unwrap().is_empty(), "nothing applied");

    put_lock(now - 1).await.unwrap();
    let report = runner.up(&ms, None).await.unwrap();
    assert_eq!(report.applied.len(), 11, "an expired lease is taken over");
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

#[tokio::test]
async fn a_modified_applied_migration_is_refused_by_name() {
    let stack = Stack::fresh("mig-sum").await;
    let dir =
        std::env::temp_dir().join(format!("wfe-migrations-{}", uuid::Uuid::new_v4().simple()));
    copy_dir(&wfe_local::workspace_root().join("migrations"), &dir);
    let runner = Migrator::new(stack.dynamodb.clone(), stack.tables.clone());
    runner.up(&load_dir(&dir).unwrap(), None).await.unwrap();

    let up = dir.join("0002_state_ttl/up.yaml");
    let text = std::fs::read_to_string(&up).unwrap();
    std::fs::write(&up, text.replace("expires_at", "expiry")).unwrap();
    let changed = load_dir(&dir).unwrap();
    for result in [
        runner.up(&changed, None).await,
        runner.down(&changed, 0).await,
    ] {
        let err = result.unwrap_err();
        assert!(matches!(err, MigrateError::Modified { .. }), "{err}");
        assert!(err.to_string().contains("0002_state_ttl"), "{err}");
    }
    let rows = runner.status(&changed).await.unwrap();
    assert_eq!(rows[1].state, MigrationState::Modified);
    assert_eq!(
        ttl(&stack).await,
        Some(TimeToLiveStatus::Enabled),
        "nothing changed"
    );
    std::fs::remove_dir_all(&dir).ok();
}

fn event(json: Value) -> EventBridgeEvent<Value> {
    serde_json::from_value(json).unwrap()
}

#[tokio::test]
async fn eventbridge_schedule_and_commands_drive_the_handler() {
    let stack = Stack::fresh("mig-eb").await;
    let ms = migrations();
    let runner = Migrator::new(stack.dynamodb.clone(), stack.tables.clone());

    let fixture = std::fs::read_to_string(
        wfe_local::workspace_root().join("tests/fixtures/example-eventbridge-schedule.json"),
    )
    .unwrap();
    let scheduled = event(serde_json::from_str(&fixture).unwrap());
    let report = migrator::handle(&runner, &ms, scheduled).await.unwrap();
    assert_eq!(report.applied.len(), 11);

    let command = |detail: Value| {
        event(json!({
            "version": "0", "id": "1", "detail-type": migrator::DETAIL_TYPE,
            "source": migrator::SOURCE, "account": "123456789012",
            "time": "2026-11-25T00:00:00Z", "region": "us-east-1", "resources": [],
            "detail": detail
        }))
    };
    let report = migrator::handle(&runner, &ms, command(json!({"command": "down", "to": 2})))
        .await
        .unwrap();
    assert_eq!(
        ids(&report.reverted),
        [
            "0011_worker_decides",
            "0010_state_execution_listings",
            "0009_state_execution_listings_backfill",
            "0008_snapshot_prices",
            "0007_state_active_backfill",
            "0006_state_active_index",
            "0005_state_holds_index",
            "0004_state_executions_index",
            "0003_model_prices"
        ]
    );
    let report = migrator::handle(&runner, &ms, command(json!({"command": "status"})))
        .await
        .unwrap();
    use MigrationState::*;
    assert_eq!(
        states(&report.status),
        [
            (1, Applied),
            (2, Applied),
            (3, Pending),
            (4, Pending),
            (5, Pending),
            (6, Pending),
            (7, Pending),
            (8, Pending),
            (9, Pending),
            (10, Pending),
            (11, Pending)
        ]
    );
    let err = migrator::handle(&runner, &ms, command(json!({"command": "sideways"})))
        .await
        .unwrap_err();
    assert!(err.contains("invalid MigrationCommand detail"), "{err}");
}

#[tokio::test]
async fn executions_running_before_the_active_index_are_backfilled_for_the_sweep() {
    let stack = Stack::fresh("mig-backfill").await;
    let runner = Migrator::new(stack.dynamodb.clone(), stack.tables.clone());
    let ms = migrations();
    runner.up(&ms, Some(6)).await.unwrap();
    let put = |id: &str, status: &str, active: Option<&str>| {
        let mut req = stack
            .dynamodb
            .put_item()
            .table_name(&stack.tables.state)
            .item("pk", AttributeValue::S(format!("t-old#EXEC#{id}")))
            .item("sk", AttributeValue::S("SUMMARY".into()))
            .item("status", AttributeValue::S(status.into()))
            .item("version", AttributeValue::N("3".into()));
        if let Some(shard) = active {
            req = req
                .item("active_shard", AttributeValue::S(shard.into()))
                .item("active_at", AttributeValue::N("1796000000".into()));
        }
        req.send()
    };
    put("legacy", "running", None).await.unwrap();
    put("ended", "succeeded", None).await.unwrap();
    put("current", "running", Some("ACTIVE#3")).await.unwrap();

    let report = runner.up(&ms, None).await.unwrap();
    assert_eq!(
        ids(&report.applied),
        [
            "0007_state_active_backfill",
            "0008_snapshot_prices",
            "0009_state_execution_listings_backfill",
            "0010_state_execution_listings",
            "0011_worker_decides"
        ]
    );
    let get = async |id: &str| {
        stack
            .dynamodb
            .get_item()
            .table_name(&stack.tables.state)
            .key("pk", AttributeValue::S(format!("t-old#EXEC#{id}")))
            .key("sk", AttributeValue::S("SUMMARY".into()))
            .send()
            .await
            .unwrap()
            .item
            .unwrap()
    };
    let legacy = get("legacy").await;
    assert_eq!(legacy["active_shard"], AttributeValue::S("ACTIVE#0".into()));
    assert_eq!(legacy["active_at"], AttributeValue::N("0".into()));
    assert!(!get("ended").await.contains_key("active_shard"));
    let current = get("current").await;
    assert_eq!(
        current["active_shard"],
        AttributeValue::S("ACTIVE#3".into())
    );
    assert_eq!(current["active_at"], AttributeValue::N("1796000000".into()));
    // The sweep's index lists it, as idle since forever.
    let listed = stack
        .dynamodb
        .query()
        .table_name(&stack.tables.state)
        .index_name("active")
        .key_condition_expression("active_shard = :s AND active_at < :t")
        .expression_attribute_values(":s", AttributeValue::S("ACTIVE#0".into()))
        .expression_attribute_values(":t", AttributeValue::N("1".into()))
        .send()
        .await
        .unwrap();
    assert_eq!(listed.items().len(), 1);
    // Reverting it changes nothing, and applying it again is harmless.
    runner.down(&ms, 6).await.unwrap();
    runner.up(&ms, None).await.unwrap();
    assert_eq!(
        get("legacy").await["active_shard"],
        AttributeValue::S("ACTIVE#0".into())
    );
}

fn summary(
    id: &str,
    workflow: &str,
    started: &str,
    status: &str,
) -> shared::domain::execution::Summary {
    serde_json::from_value(json!({
        "execution_id": id, "workflow_id": workflow, "workflow_version": 1, "status": status,
        "current_steps": [], "awaiting_approval": [], "started_at": started,
        "input_tokens": 0, "output_tokens": 0, "cost_usd": 0.0, "steps_completed": 0,
        "version": 2
    }))
    .unwrap()
}

fn projections(stack: &Stack) -> shared::executions::Projections {
    // Looks for 0010's marker on every call, where a function trusts its answer for a minute.
    shared::executions::Projections::with_listing_check(
        stack.dynamodb.clone(),
        stack.tables.state.clone(),
        std::time::Duration::ZERO,
    )
}

fn listed(l: shared::executions::Listing<shared::domain::execution::Summary>) -> Vec<String> {
    l.items.into_iter().map(|s| s.execution_id).collect()
}

#[tokio::test]
async fn execution_listings_move_to_their_own_indexes_and_back() {
    let stack = Stack::fresh("mig-listings").await;
    let runner = Migrator::new(stack.dynamodb.clone(), stack.tables.clone());
    let ms = migrations();
    runner.up(&ms, Some(8)).await.unwrap();
    let projections = projections(&stack);
    let key = |id: &str| {
        std::collections::HashMap::from([
            (
                "pk".to_owned(),
                AttributeValue::S(format!("t-list#EXEC#{id}")),
            ),
            ("sk".to_owned(), AttributeValue::S("SUMMARY".into())),
        ])
    };
    let get = async |id: &str| {
        stack
            .dynamodb
            .get_item()
            .table_name(&stack.tables.state)
            .set_key(Some(key(id)))
            .send()
            .await
            .unwrap()
            .item
            .unwrap()
    };
    let list = async |status: Option<&str>, limit: u32, cursor: Option<&str>| {
        projections
            .list("t-list", None, status, limit, cursor)
            .await
            .unwrap()
    };
    // A summary the previous release wrote: only the gsi1/gsi2 keys.
    projections
        .replace_summary(
            "t-list",
            &summary("old", "wf-a", "2026-11-01T00:00:00Z", "succeeded"),
        )
        .await
        .unwrap();
    stack
        .dynamodb
        .update_item()
        .table_name(&stack.tables.state)
        .set_key(Some(key("old")))
        .update_expression("REMOVE wf_execs_pk, tenant_execs_pk, execs_sk")
        .send()
        .await
        .unwrap();
    // This release runs before its migrations: both key sets, listings from gsi1/gsi2.
    let mut mid = summary("mid", "wf-a", "2026-11-02T00:00:00Z", "running");
    projections.write_summary("t-list", &mid).await.unwrap();
    let written = get("mid").await;
    assert!(written.contains_key("gsi2pk") && written.contains_key("execs_sk"));
    assert_eq!(listed(list(None, 10, None).await), ["mid", "old"]);
    let first = list(None, 1, None).await;
    let cursor = first.next_cursor.clone().expect("a second page");
    assert_eq!(listed(first), ["mid"]);

    let report = runner.up(&ms, None).await.unwrap();
    assert_eq!(
        ids(&report.applied),
        [
            "0009_state_execution_listings_backfill",
            "0010_state_execution_listings",
            "0011_worker_decides"
        ]
    );
    assert_eq!(
        listed(list(None, 10, Some(&cursor)).await),
        ["old"],
        "a cursor from the previous indexes continues on the new ones"
    );
    projections
        .write_summary(
            "t-list",
            &summary("new", "wf-a", "2026-11-03T00:00:00Z", "running"),
        )
        .await
        .unwrap();
    assert!(
        !get("new").await.contains_key("gsi2pk"),
        "after 0010, summaries leave out the old keys"
    );
    mid.version += 1;
    projections.write_summary("t-list", &mid).await.unwrap();
    assert!(
        !get("mid").await.contains_key("gsi2pk"),
        "and drop them when rewritten"
    );

    assert_eq!(listed(list(None, 10, None).await), ["new", "mid", "old"]);
    let of_wf = projections
        .list("t-list", Some("wf-a"), None, 10, None)
        .await
        .unwrap();
    assert_eq!(listed(of_wf), ["new", "mid", "old"]);
    assert_eq!(
        listed(list(Some("succeeded"), 10, None).await),
        ["old"],
        "the status filter works on the index"
    );
    let page = list(None, 2, None).await;
    let cursor = page.next_cursor.clone().expect("a second page");
    assert_eq!(listed(page), ["new", "mid"]);
    assert_eq!(listed(list(None, 2, Some(&cursor)).await), ["old"]);
    let stats = projections.workflow_stats("t-list", "wf-a").await.unwrap();
    assert_eq!((stats.runs, stats.succeeded, stats.running), (3, 1, 2));

    let first = list(None, 1, None).await;
    let cursor = first.next_cursor.clone().expect("a second page");

    // Rolling back (README): 0010's down gives every summary its old keys back before the
    // indexes go, so the fallback lists them all, and a cursor of the new indexes continues ...
    runner.down(&ms, 9).await.unwrap();
    assert_eq!(listed(list(None, 10, None).await), ["new", "mid", "old"]);
    assert_eq!(listed(list(None, 10, Some(&cursor)).await), ["mid", "old"]);
    // ... summaries carry the old keys again ...
    mid.version += 1;
    projections.write_summary("t-list", &mid).await.unwrap();
    assert!(get("mid").await.contains_key("gsi2pk"));
    // ... and 0009's down gives them to any written without them in between.
    runner.down(&ms, 8).await.unwrap();
    assert_eq!(listed(list(None, 10, None).await), ["new", "mid", "old"]);
    let stats = projections.workflow_stats("t-list", "wf-a").await.unwrap();
    assert_eq!(stats.runs, 3, "statistics from gsi1");
    for (index, pk_name, pk) in [
        ("gsi2", "gsi2pk", "t-list#EXECS"),
        ("gsi1", "gsi1pk", "t-list#WF#wf-a#EXECS"),
    ] {
        let out = stack
            .dynamodb
            .query()
            .table_name(&stack.tables.state)
            .index_name(index)
            .key_condition_expression("#pk = :pk")
            .expression_attribute_names("#pk", pk_name)
            .expression_attribute_values(":pk", AttributeValue::S(pk.into()))
            .scan_index_forward(false)
            .send()
            .await
            .unwrap();
        let ids: Vec<_> = out
            .items()
            .iter()
            .map(|i| i["execution_id"].as_s().unwrap().clone())
            .collect();
        assert_eq!(ids, ["new", "mid", "old"], "{index}");
    }
}

/// Summaries carry their outputs: a page stops at a byte budget of them (1 MB; here 25 and a
/// half summaries, so the cut falls on the first entry of the second read slice), and the next
/// page goes on from there, each execution listed once.
#[tokio::test]
async fn listing_pages_stop_at_their_byte_budget() {
    let stack = Stack::fresh("mig-bigpage").await;
    Migrator::new(stack.dynamodb.clone(), stack.tables.clone())
        .up(&migrations(), None)
        .await
        .unwrap();
    let ids: Vec<String> = (0..27).map(|i| format!("big{i:02}")).collect();
    let summaries: Vec<_> = ids
        .iter()
        .enumerate()
        .map(|(i, id)| {
            let started = format!("2026-11-01T00:{i:02}:00Z");
            let mut s = summary(id, "wf-b", &started, "succeeded");
            s.output = Some(json!("x".repeat(10_000)));
            s
        })
        .collect();
    let size = serde_json::to_vec(&summaries[0]).unwrap().len();
    let projections = projections(&stack).with_page_bytes(25 * size + size / 2);
    for s in &summaries {
        projections.write_summary("t-big", s).await.unwrap();
    }
    let mut pages = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let page = projections
            .list("t-big", None, None, 100, cursor.as_deref())
            .await
            .unwrap();
        cursor = page.next_cursor.clone();
        pages.push(listed(page));
        if cursor.is_none() {
            break;
        }
    }
    assert_eq!(pages.iter().map(Vec::len).collect::<Vec<_>>(), [25, 2]);
    let newest_first: Vec<String> = ids.iter().rev().cloned().collect();
    assert_eq!(pages.concat(), newest_first);
}
