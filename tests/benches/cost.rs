//! What a step costs on AWS, from measurement: `scripts/bench cost` runs workflows of each kind of
//! step through the local runner (REST, the stream mappings, the timer) with a metering proxy
//! between the functions and moto. Every DynamoDB call is priced in request units by AWS's rules
//! (`wfe_local::capacity`, item sizes read from the store before and after each write), every
//! stream-function invocation is timed, and both are priced with the dated on-demand prices in
//! `docs/cost/aws-prices.json`, beside Step Functions Standard and Lambda durable functions.
//!
//! Options (after `--`): `--json` prints one JSON object per scenario as well.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use wfe_local::endpoint::{endpoint_url, sdk_config, sdk_config_for, workspace_root};
use wfe_local::meter::Usage;
use wfe_local::runner;

struct Scenario {
    kind: &'static str,
    name: String,
    definition: Value,
    input: Value,
    /// Steps of this scenario's kind the execution runs (what the cost is divided by).
    steps: u64,
    /// Step Functions state transitions and durable-function operations for the same workflow.
    transitions: u64,
    operations: u64,
}

fn linear(kind: &'static str, n: usize, step: impl Fn(usize) -> Value) -> Scenario {
    let mut steps = serde_json::Map::new();
    for i in 0..n {
        let mut s = step(i);
        if i + 1 < n {
            s["next"] = json!(format!("s{}", i + 1));
        }
        steps.insert(format!("s{i}"), s);
    }
    Scenario {
        kind,
        name: format!("linear, {n} {kind} steps"),
        definition: json!({"name": format!("cost-{kind}"), "start": "s0", "steps": steps}),
        input: json!({}),
        steps: n as u64,
        transitions: n as u64,
        operations: n as u64,
    }
}

fn scenarios(peer: &str) -> Vec<Scenario> {
    let items = 50;
    vec![
        linear(
            "http",
            20,
            |i| json!({"type": "http", "method": "POST", "url": format!("{peer}/echo"), "body": {"i": i}}),
        ),
        Scenario {
            kind: "map item (http)",
            name: format!("map, {items} items, concurrency 10"),
            definition: json!({"name": "cost-map", "start": "each", "steps": {
                "each": {"type": "map", "items": "input.items", "concurrency": 10, "iterator": {"start": "call"}},
                "call": {"type": "http", "method": "POST", "url": format!("{peer}/echo"), "body": {"i": "{{ item }}"}}}}),
            input: json!({"items": (0..items).collect::<Vec<_>>()}),
            steps: items,
            // The Map state itself, then one Task state per item.
            transitions: items + 1,
            operations: items + 1,
        },
        linear(
            "llm",
            10,
            |_| json!({"type": "llm", "provider": "openai", "model": "gpt-4o-mini", "prompt": "step {{ execution.id }}", "max_tokens": 16}),
        ),
        linear("wait", 5, |_| json!({"type": "wait", "seconds": 1})),
        linear("approval", 5, |_| json!({"type": "approval"})),
    ]
}

/// Invocations and their summed wall time, by function.
type Invocations = Arc<Mutex<BTreeMap<String, (u64, Duration)>>>;

fn timed(
    name: &str,
    handler: wfe_local::esm::Handler,
    tally: Invocations,
) -> wfe_local::esm::Handler {
    let name = name.to_owned();
    Arc::new(move |event| {
        let (handler, tally, name) = (handler.clone(), tally.clone(), name.clone());
        Box::pin(async move {
            let started = Instant::now();
            let out = handler(event).await;
            let mut t = tally.lock().unwrap();
            let e = t.entry(name).or_default();
            e.0 += 1;
            e.1 += started.elapsed();
            out
        })
    })
}

fn memory_mb(template: &wfe_local::template::Template, id: &str) -> f64 {
    template.function_memory(id) as f64
}

#[tokio::main]
async fn main() {
    let json_out = std::env::args().any(|a| a == "--json");
    let prices: Value = serde_json::from_str(
        &std::fs::read_to_string(workspace_root().join("docs/cost/aws-prices.json")).unwrap(),
    )
    .unwrap();
    let p = |path: &str| prices.pointer(path).and_then(Value::as_f64).unwrap();
    let (wru_usd, rru_usd) = (
        p("/dynamodb/usd_per_million_write_request_units") / 1e6,
        p("/dynamodb/usd_per_million_read_request_units") / 1e6,
    );
    let (req_usd, gbs_usd) = (
        p("/lambda/usd_per_million_requests") / 1e6,
        p("/lambda/usd_per_gb_second_arm64"),
    );
    let ddb_ms = p("/model/dynamodb_ms_per_call");
    let sfn = p("/anchors/step_functions_standard_usd_per_million_state_transitions");
    let durable = p("/anchors/lambda_durable_functions_usd_per_million_operations");

    let (proxy_url, _counts, ledger) = wfe_local::proxy::start_metered(endpoint_url()).await;
    let peer = wfe_local::proxy::start_peer().await;
    let sdk = sdk_config_for(&proxy_url).await;
    let direct = sdk_config().await;
    let stack = format!("bench-cost-{}", std::process::id());
    let template = runner::provision(&direct, &stack).await.unwrap();
    runner::migrate(&direct, &template).await.unwrap();
    let env = runner::bench_env(&peer);
    let base = runner::serve_http(&template, &sdk, &env).await.unwrap();
    let invocations: Invocations = Default::default();
    let tally = invocations.clone();
    let _streams = runner::spawn_streams_with(&template, &sdk, &env, move |name, h| {
        timed(name, h, tally.clone())
    })
    .await
    .unwrap();
    let _timer = runner::spawn_schedules(&template, &sdk, &env)
        .await
        .unwrap();

    let token = runner::user_token(&template, &direct, &base, "cost", "bench-cost")
        .await
        .unwrap();
    runner::bench_budget(&template, &direct, "bench-cost")
        .await
        .unwrap();
    let repo = shared::engine::Services::new(
        &runner::function_config(&template, "OrchestratorFunction", &env).unwrap(),
        &direct,
    )
    .unwrap()
    .repo;
    let http = reqwest::Client::new();
    let executions_mb = memory_mb(&template, "ExecutionsFunction");

    println!(
        "prices as of {} ({}); Lambda duration modelled at {ddb_ms} ms per DynamoDB call",
        prices["as_of"].as_str().unwrap_or("?"),
        prices["region"].as_str().unwrap_or("?")
    );
    println!();
    println!("| scenario | per step: write requests | WRU (table + index) | read requests | RRU | Lambda invocations | DynamoDB $/M steps | Lambda $/M steps | total $/M steps | Step Functions Standard $/M | durable functions ops $/M |");
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    for s in scenarios(&peer) {
        let wf: Value = http
            .post(format!("{base}/workflows"))
            .bearer_auth(&token)
            .json(&s.definition)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let wf = wf["workflow"]["id"].as_str().unwrap().to_owned();
        quiet(&ledger).await;
        ledger.lock().unwrap().clear();
        invocations.lock().unwrap().clear();
        // REST invocations (start, approvals), timed by the caller.
        let mut api = (0u64, Duration::ZERO);

        let started = Instant::now();
        let r = http
            .post(format!("{base}/workflows/{wf}/executions"))
            .bearer_auth(&token)
            .json(&json!({"input": s.input}));
        let t = Instant::now();
        let r: Value = r.send().await.unwrap().json().await.unwrap();
        api = (api.0 + 1, api.1 + t.elapsed());
        let id = r["execution_id"].as_str().unwrap().to_owned();
        let stream = shared::executions::stream_id("bench-cost", &id).unwrap();
        let deadline = Instant::now() + Duration::from_secs(600);
        loop {
            let state = repo.load(&stream).await.unwrap().state;
            if state.status.is_terminal() {
                assert_eq!(state.status.as_str(), "succeeded", "{:?}", state.error);
                break;
            }
            for (key, step) in &state.steps {
                if step.status == shared::domain::execution::StepStatus::AwaitingApproval {
                    let t = Instant::now();
                    let r = http
                        .post(format!("{base}/executions/{id}/approvals/{key}"))
                        .bearer_auth(&token)
                        .json(&json!({"decision": "approve"}))
                        .send()
                        .await
                        .unwrap();
                    api = (api.0 + 1, api.1 + t.elapsed());
                    assert!(
                        r.status().is_success() || r.status() == 409,
                        "{}",
                        r.status()
                    );
                }
            }
            assert!(Instant::now() < deadline, "{} did not finish", s.name);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let wall = started.elapsed();
        // The last turns (read models of the final events) land after the status is terminal.
        quiet(&ledger).await;

        let by_function = ledger.lock().unwrap().clone();
        let inv = invocations.lock().unwrap().clone();
        let n = s.steps as f64;
        let mut ddb = Usage::default();
        let mut lambda_requests = api.0 as f64;
        // Lambda GB-seconds, modelled: own time plus a DynamoDB latency per call.
        let mut gb_s = 0.0;
        for (function, usage) in &by_function {
            // The timer's polls are a fixed cost per month (a schedule), not per step: only the
            // writes it makes when a wait is due count here.
            if function == "TimerFunction" || function == "MigratorFunction" {
                ddb.write_requests += usage.write_requests;
                ddb.wru += usage.wru;
                ddb.index_wru += usage.index_wru;
                continue;
            }
            ddb.add(usage);
        }
        for (function, (count, wall)) in &inv {
            let usage = by_function.get(function).cloned().unwrap_or_default();
            let calls: u64 = usage.calls.values().sum();
            let own_ms = (wall.as_millis() as f64 - usage.ms as f64).max(0.0);
            let ms = own_ms + calls as f64 * ddb_ms;
            gb_s += ms / 1000.0 * memory_mb(&template, function) / 1024.0;
            lambda_requests += *count as f64;
        }
        {
            let usage = by_function
                .get("ExecutionsFunction")
                .cloned()
                .unwrap_or_default();
            let calls: u64 = usage.calls.values().sum();
            let own_ms = (api.1.as_millis() as f64 - usage.ms as f64).max(0.0);
            gb_s += (own_ms + calls as f64 * ddb_ms) / 1000.0 * executions_mb / 1024.0;
        }
        let ddb_usd = (ddb.wru + ddb.index_wru) * wru_usd + ddb.rru * rru_usd;
        let lambda_usd = lambda_requests * req_usd + gb_s * gbs_usd;
        let per_m = |usd: f64| usd / n * 1e6;
        println!(
            "| {} ({:.1} s) | {:.2} | {:.2} ({:.2} + {:.2}) | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} | **{:.2}** | {:.2} | {:.2} |",
            s.name,
            wall.as_secs_f64(),
            ddb.write_requests as f64 / n,
            (ddb.wru + ddb.index_wru) / n,
            ddb.wru / n,
            ddb.index_wru / n,
            ddb.read_requests as f64 / n,
            ddb.rru / n,
            lambda_requests / n,
            per_m(ddb_usd),
            per_m(lambda_usd),
            per_m(ddb_usd + lambda_usd),
            s.transitions as f64 / n * sfn,
            s.operations as f64 / n * durable,
        );
        if json_out {
            println!(
                "{}",
                json!({"scenario": s.name, "kind": s.kind, "steps": s.steps, "by_function": by_function,
                       "invocations": inv.iter().map(|(k, (c, w))| (k.clone(), json!({"count": c, "ms": w.as_millis() as u64}))).collect::<BTreeMap<_, _>>(),
                       "api": {"count": api.0, "ms": api.1.as_millis() as u64}})
            );
        }
    }
    idle_cost(&template, &sdk, &env, &ledger, &prices).await;
}

/// What the deployment costs with no work at all: the timer's schedule (the only thing that
/// runs when idle), measured as 20 ticks of its handler through the meter, priced per month at
/// the template's rate (one minute; 43,200 ticks a month).
async fn idle_cost(
    template: &wfe_local::template::Template,
    sdk: &aws_config::SdkConfig,
    env: &BTreeMap<String, String>,
    ledger: &wfe_local::meter::Ledger,
    prices: &Value,
) {
    const TICKS: u32 = 20;
    const TICKS_PER_MONTH: f64 = 43_200.0;
    let p = |path: &str| prices.pointer(path).and_then(Value::as_f64).unwrap();
    let config = runner::function_config(template, "TimerFunction", env).unwrap();
    let probe = timer::Handler::new(&config, &runner::function_sdk(sdk, "TimerProbe")).unwrap();
    let started = Instant::now();
    for _ in 0..TICKS {
        probe.handle(Duration::from_secs(60)).await.unwrap();
    }
    let wall_ms = started.elapsed().as_secs_f64() * 1000.0 / f64::from(TICKS);
    let usage = ledger
        .lock()
        .unwrap()
        .get("TimerProbe")
        .cloned()
        .unwrap_or_default();
    let per_tick = |x: f64| x / f64::from(TICKS);
    let calls = per_tick(usage.calls.values().sum::<u64>() as f64);
    let rru = per_tick(usage.rru);
    let own_ms = (wall_ms - per_tick(usage.ms as f64)).max(0.0);
    let ms = own_ms + calls * p("/model/dynamodb_ms_per_call");
    let gb_s = ms / 1000.0 * memory_mb(template, "TimerFunction") / 1024.0;
    let month = TICKS_PER_MONTH
        * (rru * p("/dynamodb/usd_per_million_read_request_units") / 1e6
            + p("/lambda/usd_per_million_requests") / 1e6
            + gb_s * p("/lambda/usd_per_gb_second_arm64"));
    println!();
    println!(
        "idle: one timer tick makes {calls:.0} DynamoDB calls ({rru:.1} RRU, {:?}); at one tick a minute that is ${month:.3} a month",
        usage.calls
    );
}

/// Waits until no function has made a DynamoDB call for a second (the timer's polls aside).
async fn quiet(ledger: &wfe_local::meter::Ledger) {
    let calls = || -> u64 {
        ledger
            .lock()
            .unwrap()
            .iter()
            .filter(|(f, _)| f.as_str() != "TimerFunction" && f.as_str() != "MigratorFunction")
            .map(|(_, u)| u.calls.values().sum::<u64>())
            .sum()
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut last = (calls(), Instant::now());
    while Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let now = calls();
        if now != last.0 {
            last = (now, Instant::now());
        } else if last.1.elapsed() >= Duration::from_secs(1) {
            return;
        }
    }
}
