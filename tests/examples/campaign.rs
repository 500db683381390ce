//! The fault campaign: many executions of every step kind through the local runner while Lambda
//! and DynamoDB misbehave as they do on AWS, then an audit from the events table and from what the
//! local peers counted. Run with `scripts/campaign [executions]` (default 500); it prints what it
//! injected and every violation found, and exits non-zero if there was one.
//!
//! Faults: stream handlers killed mid-batch (the future dropped at a random point, the batch
//! retried, as when a Lambda invocation dies), batches delivered twice and stale batches delivered
//! again out of order, forced `TransactionConflict`s on hot items (budgets, execution streams),
//! 429 and 5xx storms from the LLM provider, 503s from the HTTP service, and a step that always
//! throws.
//!
//! Audit: every execution ended, with the status its workflow implies; no HTTP call was made more
//! often than the attempts recorded for its step instance (a redelivered batch never repeats a
//! side effect); the tenant's budget spent exactly the usage recorded in the events, with nothing
//! left reserved.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use serde_json::{json, Value};
use wfe_local::endpoint::{endpoint_url, sdk_config};
use wfe_local::esm::Handler;
use wfe_local::runner;

const TENANT: &str = "campaign";

/// A cheap, seedable source of randomness (splitmix64), so a run can be repeated.
#[derive(Clone)]
struct Dice(Arc<AtomicU64>);

impl Dice {
    fn new(seed: u64) -> Self {
        Self(Arc::new(AtomicU64::new(seed)))
    }

    fn next(&self) -> u64 {
        let mut z = self
            .0
            .fetch_add(0x9E37_79B9_7F4A_7C15, Ordering::Relaxed)
            .wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn chance(&self, p: f64) -> bool {
        (self.next() % 1_000_000) as f64 / 1_000_000.0 < p
    }
}

#[derive(Default)]
struct Counters {
    counts: Mutex<BTreeMap<&'static str, u64>>,
}

impl Counters {
    fn add(&self, what: &'static str) {
        *self.counts.lock().unwrap().entry(what).or_default() += 1;
    }

    fn get(&self, what: &str) -> u64 {
        self.counts.lock().unwrap().get(what).copied().unwrap_or(0)
    }
}

/// The HTTP service and the LLM provider the steps call.
#[derive(Clone)]
struct Peers {
    dice: Dice,
    faults: Arc<Counters>,
    /// Calls per `Idempotency-Key`.
    calls: Arc<Mutex<HashMap<String, u64>>>,
}

async fn work(State(p): State<Peers>, headers: HeaderMap) -> impl IntoResponse {
    let key = headers
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("none")
        .to_owned();
    *p.calls.lock().unwrap().entry(key).or_default() += 1;
    if p.dice.chance(0.05) {
        p.faults.add("http 503 answered");
        return (StatusCode::SERVICE_UNAVAILABLE, "busy").into_response();
    }
    axum::Json(json!({"ok": true})).into_response()
}

async fn always_fails(State(p): State<Peers>) -> impl IntoResponse {
    p.faults.add("step that always throws");
    (StatusCode::INTERNAL_SERVER_ERROR, "always")
}

async fn chat(State(p): State<Peers>) -> impl IntoResponse {
    if p.dice.chance(0.15) {
        p.faults.add("provider 429 answered");
        return (
            StatusCode::TOO_MANY_REQUESTS,
            [("retry-after", "0")],
            r#"{"error": {"message": "Rate limit reached"}}"#,
        )
            .into_response();
    }
    if p.dice.chance(0.1) {
        p.faults.add("provider 5xx answered");
        return (
            StatusCode::BAD_GATEWAY,
            r#"{"error": {"message": "upstream"}}"#,
        )
            .into_response();
    }
    axum::Json(json!({
        "id": "c", "object": "chat.completion", "model": "gpt-4o-mini",
        "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": "ok"}}],
        "usage": {"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18}
    }))
    .into_response()
}

async fn start_peers(peers: Peers) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let app = axum::Router::new()
        .route("/work", axum::routing::post(work))
        .route("/fails", axum::routing::post(always_fails))
        .route("/v1/chat/completions", axum::routing::post(chat))
        .with_state(peers);
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    base
}

/// What Lambda can do to a stream function: kill it mid-batch (the batch is retried), deliver a
/// batch twice, or deliver an older batch again after newer ones.
fn faulty(function: &str, inner: Handler, dice: Dice, faults: Arc<Counters>) -> Handler {
    let function: &'static str = if function == "WorkerFunction" {
        "worker"
    } else {
        "orchestrator"
    };
    let past: Arc<Mutex<VecDeque<aws_lambda_events::dynamodb::Event>>> = Arc::default();
    Arc::new(move |event| {
        let (inner, dice, faults, past) =
            (inner.clone(), dice.clone(), faults.clone(), past.clone());
        Box::pin(async move {
            let stale = {
                let past = past.lock().unwrap();
                (!past.is_empty() && dice.chance(0.03))
                    .then(|| past[dice.next() as usize % past.len()].clone())
            };
            if let Some(old) = stale {
                faults.add(if function == "worker" {
                    "stale batch redelivered (worker)"
                } else {
                    "stale batch redelivered (orchestrator)"
                });
                let _ = inner(old).await;
            }
            {
                let mut past = past.lock().unwrap();
                past.push_back(event.clone());
                if past.len() > 20 {
                    past.pop_front();
                }
            }
            if dice.chance(0.04) {
                faults.add(if function == "worker" {
                    "handler killed mid-batch (worker)"
                } else {
                    "handler killed mid-batch (orchestrator)"
                });
                let after = Duration::from_millis(dice.next() % 40);
                return match tokio::time::timeout(after, inner(event)).await {
                    Ok(r) => r,
                    Err(_) => Err("killed".into()),
                };
            }
            let again = dice.chance(0.04).then(|| event.clone());
            let result = inner(event).await;
            if let Some(again) = again {
                faults.add(if function == "worker" {
                    "batch delivered twice (worker)"
                } else {
                    "batch delivered twice (orchestrator)"
                });
                return inner(again).await;
            }
            result
        })
    })
}

/// The workflows of the mix, each with the status it must end in.
fn workflows(peer: &str) -> Vec<(Value, &'static str)> {
    let retry = json!({"max_attempts": 8, "initial_interval_ms": 100, "max_interval_ms": 1000});
    let http = |next: Option<&str>| {
        let mut s = json!({"type": "http", "method": "POST", "url": format!("{peer}/work"), "body": {"e": "{{ execution.id }}"}, "retry": retry});
        if let Some(n) = next {
            s["next"] = json!(n);
        }
        s
    };
    vec![
        (
            json!({"name": "linear", "start": "a", "steps": {"a": http(Some("b")), "b": http(Some("c")),
                "c": {"type": "template", "template": "done"}}}),
            "succeeded",
        ),
        (
            json!({"name": "map", "start": "each", "steps": {
                "each": {"type": "map", "items": "input.xs", "concurrency": 3, "iterator": {"start": "call"}},
                "call": http(None)}}),
            "succeeded",
        ),
        (
            json!({"name": "parallel", "start": "both", "steps": {
                "both": {"type": "parallel", "join": "all", "branches": [{"start": "x"}, {"start": "y"}]},
                "x": http(None), "y": http(None)}}),
            "succeeded",
        ),
        (
            json!({"name": "llm", "start": "ask", "steps": {
                "ask": {"type": "llm", "provider": "openai", "model": "gpt-4o-mini", "prompt": "hi {{ execution.id }}",
                        "max_tokens": 16, "retry": retry, "next": "after"},
                "after": http(None)}}),
            "succeeded",
        ),
        (
            json!({"name": "wait", "start": "pause", "steps": {
                "pause": {"type": "wait", "seconds": 1, "next": "after"}, "after": http(None)}}),
            "succeeded",
        ),
        (
            json!({"name": "approval", "start": "ask", "steps": {
                "ask": {"type": "approval", "next": "after"}, "after": http(None)}}),
            "succeeded",
        ),
        (
            json!({"name": "throws", "start": "boom", "steps": {
                "boom": {"type": "http", "method": "POST", "url": format!("{peer}/fails"),
                         "retry": {"max_attempts": 2, "initial_interval_ms": 100}}}}),
            "failed",
        ),
    ]
}

async fn add_rule(http: &reqwest::Client, rule: Value) -> String {
    let r: Value = http
        .post(format!("{}/_strict/conflicts/rules", endpoint_url()))
        .json(&rule)
        .send()
        .await
        .expect("the strict local stack (scripts/moto_server.py)")
        .json()
        .await
        .unwrap();
    r["id"].as_str().unwrap().to_owned()
}

async fn remove_rule(http: &reqwest::Client, id: &str) -> u64 {
    let r: Value = http
        .delete(format!("{}/_strict/conflicts/rules/{id}", endpoint_url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    r["forced"].as_u64().unwrap_or(0)
}

#[tokio::main]
async fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .map(|a| a.parse().expect("usage: campaign [executions] [seed]"))
        .unwrap_or(500);
    let seed: u64 = std::env::args()
        .nth(2)
        .map(|a| a.parse().expect("usage: campaign [executions] [seed]"))
        .unwrap_or(7);
    let began = Instant::now();
    let dice = Dice::new(seed);
    let faults: Arc<Counters> = Arc::default();
    let peers = Peers {
        dice: dice.clone(),
        faults: faults.clone(),
        calls: Arc::default(),
    };
    let peer = start_peers(peers.clone()).await;

    let sdk = sdk_config().await;
    let stack = format!("campaign-{}", std::process::id());
    let template = runner::provision(&sdk, &stack).await.unwrap();
    runner::migrate(&sdk, &template).await.unwrap();
    let env: BTreeMap<String, String> = [
        ("HTTP_ALLOW_PRIVATE_NETWORKS", "true"),
        ("TIMER_PERIOD_MS", "200"),
        ("RATE_LIMIT_REQUESTS", "1000000"),
        ("OPENAI_API_KEY", "sk-campaign"),
        ("OPENAI_BASE_URL", peer.as_str()),
        ("LLM_CIRCUIT_THRESHOLD", "100000"),
        // The stalled-execution sweep looks at idle executions during the campaign too.
        ("STALL_SWEEP_AFTER_SECS", "60"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    let base = runner::serve_http(&template, &sdk, &env).await.unwrap();
    let _streams = runner::spawn_streams_with(&template, &sdk, &env, |function, handler| {
        faulty(function, handler, dice.clone(), faults.clone())
    })
    .await
    .unwrap();
    let _timer = runner::spawn_schedules(&template, &sdk, &env)
        .await
        .unwrap();

    let tables = template.tables().unwrap();
    let dynamodb = aws_sdk_dynamodb::Client::new(&sdk);
    let token = runner::user_token(&template, &sdk, &base, "campaign", TENANT)
        .await
        .unwrap();
    let http = reqwest::Client::new();
    let budgets = shared::engine::budget::Budgets::new(dynamodb.clone(), tables.state.clone());
    budgets
        .set(
            TENANT,
            &shared::engine::budget::Scope::Tenant,
            &shared::engine::budget::BudgetConfig {
                monthly_usd: Some(1000.0),
                monthly_tokens: Some(100_000_000),
            },
            chrono::Utc::now(),
            (0.0, 0),
        )
        .await
        .unwrap();

    let mut kinds = Vec::new();
    for (definition, expected) in workflows(&peer) {
        let r: Value = http
            .post(format!("{base}/workflows"))
            .bearer_auth(&token)
            .json(&definition)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let id = r["workflow"]["id"]
            .as_str()
            .expect("workflow created")
            .to_owned();
        kinds.push((
            id,
            definition["name"].as_str().unwrap().to_owned(),
            expected,
        ));
    }

    // Hot items conflict on purpose: the tenant's budget accounts and the execution streams.
    let budget_rule = add_rule(
        &http,
        json!({"table": tables.state, "key_contains": format!("{TENANT}#BUDGET"), "probability": 0.3, "seed": seed}),
    )
    .await;
    let stream_rule = add_rule(
        &http,
        json!({"table": tables.events, "key_contains": format!("{TENANT}#execution#"), "probability": 0.05, "seed": seed + 1}),
    )
    .await;

    // Start them all, a few at a time.
    let mut started: Vec<(String, &'static str, &'static str)> = Vec::new();
    for i in 0..n {
        let (wf, name, expected) = &kinds[i % kinds.len()];
        let r = http
            .post(format!("{base}/workflows/{wf}/executions"))
            .bearer_auth(&token)
            .header("Idempotency-Key", format!("campaign-{seed}-{i}"))
            .json(&json!({"input": {"xs": [1, 2, 3, 4, 5]}}))
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "start refused: {}", r.status());
        let body: Value = r.json().await.unwrap();
        let name: &'static str = Box::leak(name.clone().into_boxed_str());
        started.push((
            body["execution_id"].as_str().unwrap().to_owned(),
            name,
            expected,
        ));
    }

    // Drive approvals and wait for every execution to end.
    let services = shared::engine::Services::new(
        &runner::function_config(&template, "OrchestratorFunction", &env).unwrap(),
        &sdk,
    )
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(900);
    let mut pending: Vec<usize> = (0..started.len()).collect();
    let mut states: HashMap<usize, shared::domain::execution::ExecutionState> = HashMap::new();
    while !pending.is_empty() && Instant::now() < deadline {
        let mut still = Vec::new();
        for i in pending {
            let (id, _, _) = &started[i];
            let stream = shared::executions::stream_id(TENANT, id).unwrap();
            let state = services.repo.load(&stream).await.unwrap().state;
            if state.status.is_terminal() {
                states.insert(i, state);
                continue;
            }
            let awaiting = state
                .steps
                .iter()
                .any(|(_, s)| s.status == shared::domain::execution::StepStatus::AwaitingApproval);
            if awaiting {
                let _ = http
                    .post(format!("{base}/executions/{id}/approvals/ask"))
                    .bearer_auth(&token)
                    .json(&json!({"decision": "approve"}))
                    .send()
                    .await;
            }
            still.push(i);
        }
        pending = still;
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let forced_budget = remove_rule(&http, &budget_rule).await;
    let forced_stream = remove_rule(&http, &stream_rule).await;

    // The audit.
    let mut violations: Vec<String> = Vec::new();
    for i in &pending {
        violations.push(format!(
            "execution {} ({}) never ended",
            started[*i].0, started[*i].1
        ));
    }
    let mut by_status: BTreeMap<String, u64> = BTreeMap::new();
    let mut recorded_tokens = 0u64;
    let mut recorded_usd = 0.0f64;
    for (i, state) in &states {
        let (id, name, expected) = &started[*i];
        *by_status
            .entry(state.status.as_str().to_owned())
            .or_default() += 1;
        let wrong_error =
            *name == "throws" && state.error.as_ref().map(|e| e.kind.as_str()) != Some("HttpError");
        if state.status.as_str() != *expected || wrong_error {
            violations.push(format!(
                "execution {id} ({name}) ended {} instead of {expected}: {:?}",
                state.status.as_str(),
                state.error
            ));
        }
        recorded_tokens += state.usage.input_tokens + state.usage.output_tokens;
        recorded_usd += state.usage.cost_usd;
        // Each HTTP call to /work carries its step instance's key: never more calls than the
        // attempts the history records for that instance.
        let stream = shared::executions::stream_id(TENANT, id).unwrap();
        let history = services.repo.store().read_from(&stream, 1).await.unwrap();
        let mut attempts: HashMap<(String, u32), std::collections::BTreeSet<u32>> = HashMap::new();
        for e in &history {
            // Each attempt is scheduled once; http steps are claimed without an event.
            if let Ok(shared::domain::execution::ExecutionEvent::StepScheduled {
                key,
                epoch,
                attempt,
                kind,
                ..
            }) = shared::executions::repo::decode(e)
            {
                if kind != "http" {
                    continue;
                }
                attempts.entry((key, epoch)).or_default().insert(attempt);
            }
        }
        let calls = peers.calls.lock().unwrap();
        for ((key, epoch), tries) in &attempts {
            let idem = shared::engine::derived_id(&[stream.as_str(), key, &epoch.to_string()]);
            let made = calls.get(&idem).copied().unwrap_or(0);
            if made > tries.len() as u64 {
                violations.push(format!(
                    "execution {id} step {key}: {made} calls for {} attempts",
                    tries.len()
                ));
            }
        }
    }
    // Budgets: every reservation settled by its own worker (before any sweep); then whatever the
    // sweep would still find is settled, and the books compared with the events.
    let before_sweep = budgets
        .usage(
            TENANT,
            &shared::engine::budget::Scope::Tenant,
            chrono::Utc::now(),
        )
        .await
        .unwrap();
    if before_sweep.reserved_tokens != 0 {
        violations.push(format!(
            "{} tokens still reserved after every execution ended",
            before_sweep.reserved_tokens
        ));
    }
    let swept = shared::engine::sweep::settle_stale_holds(
        &budgets,
        &services.repo,
        chrono::Utc::now() + chrono::Duration::seconds(5),
        chrono::Duration::zero(),
        Instant::now() + Duration::from_secs(120),
    )
    .await
    .unwrap();
    let books = budgets
        .usage(
            TENANT,
            &shared::engine::budget::Scope::Tenant,
            chrono::Utc::now(),
        )
        .await
        .unwrap();
    if books.spent_tokens != recorded_tokens {
        violations.push(format!(
            "budget spent {} tokens; the executions recorded {recorded_tokens}",
            books.spent_tokens
        ));
    }
    if (books.spent_usd - recorded_usd).abs() > 1e-9 {
        violations.push(format!(
            "budget spent {} USD; the executions recorded {recorded_usd}",
            books.spent_usd
        ));
    }
    if books.reserved_tokens != 0 {
        violations.push(format!("{} tokens still reserved", books.reserved_tokens));
    }

    println!(
        "campaign: {n} executions, seed {seed}, {:.0} s",
        began.elapsed().as_secs_f64()
    );
    println!();
    println!("| outcome | executions |");
    println!("|---|---|");
    for (status, count) in &by_status {
        println!("| {status} | {count} |");
    }
    println!();
    println!("| fault injected | count |");
    println!("|---|---|");
    for (what, count) in faults.counts.lock().unwrap().iter() {
        println!("| {what} | {count} |");
    }
    println!("| TransactionConflict forced on budget items | {forced_budget} |");
    println!("| TransactionConflict forced on execution streams | {forced_stream} |");
    println!();
    println!(
        "budget: {} tokens spent = {recorded_tokens} recorded; {} reserved; sweep settled {} and released {} at the end",
        books.spent_tokens, books.reserved_tokens, swept.settled, swept.released
    );
    println!(
        "http calls: {}; stale+duplicate deliveries: {}",
        peers.calls.lock().unwrap().values().sum::<u64>(),
        faults.get("batch delivered twice (worker)")
            + faults.get("stale batch redelivered (worker)")
    );
    println!();
    if violations.is_empty() {
        println!("violations: 0");
    } else {
        println!("violations: {}", violations.len());
        for v in &violations {
            println!("- {v}");
        }
        std::process::exit(1);
    }
}
