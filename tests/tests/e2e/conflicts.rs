//! Budgets under DynamoDB's real transaction semantics, on the strict local stack: transactions
//! that overlap on a hot item are cancelled with `TransactionConflict` (here forced on the
//! budget's items), which is neither "over budget" nor "already settled".

use serde_json::{json, Value};

use crate::llm::Providers;
use crate::support::{App, ForcedConflicts};
use crate::workflows::Client;

const KEY: &str = "sk-test-conflicts";

/// Every HOLD# record still in the tenant's budget partition.
async fn holds(app: &App, tenant: &str) -> usize {
    shared::aws::query_partition(
        &aws_sdk_dynamodb::Client::new(&app.sdk),
        &app.template.tables().unwrap().state,
        &format!("{tenant}#BUDGET"),
        Some("HOLD#"),
    )
    .await
    .unwrap()
    .len()
}

/// The timer's sweep of stale reservations, run now with no grace period.
async fn sweep_now(app: &App) -> shared::engine::sweep::Swept {
    let tables = app.template.tables().unwrap();
    let repo = shared::executions::ExecutionRepo::new(std::sync::Arc::new(
        shared::events::DynamoEventStore::new(
            aws_sdk_dynamodb::Client::new(&app.sdk),
            shared::events::EventTables {
                events: tables.events.clone(),
                state: tables.state.clone(),
            },
            Default::default(),
        ),
    ));
    shared::engine::sweep::settle_stale_holds(
        &budgets(app),
        &repo,
        chrono::Utc::now() + chrono::Duration::seconds(2),
        chrono::Duration::zero(),
        std::time::Instant::now() + std::time::Duration::from_secs(30),
    )
    .await
    .unwrap()
}

fn budgets(app: &App) -> shared::engine::budget::Budgets {
    shared::engine::budget::Budgets::new(
        aws_sdk_dynamodb::Client::new(&app.sdk),
        app.template.tables().unwrap().state,
    )
}

async fn tenant_usage(app: &App, tenant: &str) -> shared::engine::budget::PeriodUsage {
    budgets(app)
        .usage(
            tenant,
            &shared::engine::budget::Scope::Tenant,
            chrono::Utc::now(),
        )
        .await
        .unwrap()
}

async fn engine_with_budget(purpose: &str, tenant: &str, tokens: u64) -> (Providers, App) {
    let providers = Providers::start().await;
    let app = App::start_engine(
        purpose,
        &[
            ("OPENAI_API_KEY", KEY),
            ("OPENAI_BASE_URL", &providers.base),
        ],
    )
    .await;
    budgets(&app)
        .set(
            tenant,
            &shared::engine::budget::Scope::Tenant,
            &shared::engine::budget::BudgetConfig {
                monthly_usd: Some(10.0),
                monthly_tokens: Some(tokens),
            },
            chrono::Utc::now(),
            (0.0, 0),
        )
        .await
        .unwrap();
    (providers, app)
}

#[tokio::test]
async fn twenty_concurrent_llm_steps_on_one_budget_with_conflicts_forced() {
    let tenant = "t-conflicts";
    // Each call reserves 7 input tokens ("hello" in o200k_base plus OpenAI's framing) + 100
    // max_tokens = 107; the limit fits exactly twenty reservations held at once.
    let (_providers, app) = engine_with_budget("conflicts", tenant, 20 * 107).await;
    let c = Client::new(&app, tenant).await;
    let wf = c
        .create(json!({"name": "hot", "start": "ask", "steps": {
            "ask": {"type": "llm", "provider": "openai", "model": "gpt-4o", "prompt": "hello", "max_tokens": 100}}}))
        .await;
    // A budget transaction is sent again up to 10 times on conflicts before the step fails as
    // `BudgetUnavailable`: at 0.5 a run of 10 forced conflicts on one of the ~40 transactions
    // came up in about one run in 25; at 0.3 it is about one in 4,000, and still about a third
    // of the budget's transactions are refused at least once.
    let rule = ForcedConflicts::add(json!({
        "table": app.template.tables().unwrap().state,
        "key_contains": format!("{tenant}#BUDGET"),
        "probability": 0.3,
        "count": 60,
    }))
    .await;
    let ids = futures::future::join_all((0..20).map(|_| c.start(&wf, json!({})))).await;
    let finished: Vec<Value> = futures::future::join_all(ids.iter().map(|id| c.finished(id))).await;
    let counters = rule.remove().await;
    assert!(
        counters["forced"].as_u64().unwrap() > 0,
        "conflicts were forced: {counters}"
    );
    for e in &finished {
        assert_eq!(
            e["status"], "succeeded",
            "room remained for every call: {e:#}"
        );
    }
    let reported_tokens: u64 = finished
        .iter()
        .map(|e| e["input_tokens"].as_u64().unwrap() + e["output_tokens"].as_u64().unwrap())
        .sum();
    let reported_usd: f64 = finished
        .iter()
        .map(|e| e["cost_usd"].as_f64().unwrap())
        .sum();
    assert_eq!(reported_tokens, 20 * 17, "the double reports 12 in, 5 out");
    // A settlement may lose all its retries to the forced conflicts (the design leaves it to
    // the timer's sweep): the books are exact once the sweep ran.
    if holds(&app, tenant).await > 0 {
        let swept = sweep_now(&app).await;
        assert_eq!(swept.failed, 0, "{swept:?}");
    }
    let books = tenant_usage(&app, tenant).await;
    assert_eq!(books.spent_tokens, reported_tokens, "{books:?}");
    assert!((books.spent_usd - reported_usd).abs() < 1e-12, "{books:?}");
    assert_eq!(books.reserved_tokens, 0, "{books:?}");
    assert!(books.reserved_usd.abs() < 1e-12, "{books:?}");
    assert_eq!(
        books.available_tokens,
        Some((20 * 107 - reported_tokens) as i64)
    );
    assert_eq!(holds(&app, tenant).await, 0, "no reservation record left");
}

#[tokio::test]
async fn a_settlement_that_keeps_conflicting_is_settled_by_the_sweep_from_the_recorded_usage() {
    let tenant = "t-sweep";
    let (providers, app) = engine_with_budget("sweep", tenant, 100_000).await;
    let c = Client::new(&app, tenant).await;
    let wf = c
        .create(json!({"name": "slow", "start": "ask", "steps": {
            "ask": {"type": "llm", "provider": "openai", "model": "gpt-4o", "prompt": "slow", "max_tokens": 100}}}))
        .await;
    let id = c.start(&wf, json!({})).await;
    // Once the call is in flight (reserved), every transaction on the budget conflicts, more
    // often than the settlement retries.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while providers.seen.lock().unwrap().is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "the call never started"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let rule = ForcedConflicts::add(json!({
        "table": app.template.tables().unwrap().state,
        "key_contains": format!("{tenant}#BUDGET"),
        "count": shared::aws::transact::CONFLICT_ATTEMPTS,
    }))
    .await;
    let e = c.finished(&id).await;
    assert_eq!(e["status"], "succeeded", "the call's result stands: {e:#}");
    let counters = rule.remove().await;
    assert_eq!(
        counters["forced"].as_u64(),
        Some(shared::aws::transact::CONFLICT_ATTEMPTS as u64),
        "{counters}"
    );
    assert_eq!(holds(&app, tenant).await, 1, "the settlement did not land");
    let stuck = tenant_usage(&app, tenant).await;
    assert!(
        stuck.reserved_tokens > 0 && stuck.spent_tokens == 0,
        "{stuck:?}"
    );

    // The sweep (the timer's, run here with no grace period) settles it from the outcome.
    let swept = sweep_now(&app).await;
    assert_eq!((swept.settled, swept.released, swept.failed), (1, 0, 0));
    let books = tenant_usage(&app, tenant).await;
    assert_eq!(
        books.spent_tokens,
        e["input_tokens"].as_u64().unwrap() + e["output_tokens"].as_u64().unwrap()
    );
    assert!((books.spent_usd - e["cost_usd"].as_f64().unwrap()).abs() < 1e-12);
    assert_eq!((books.reserved_tokens, holds(&app, tenant).await), (0, 0));
    assert_eq!(sweep_now(&app).await, Default::default(), "settled once");
}
