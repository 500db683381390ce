//! Cold start of every function beside a bare `lambda_http` hello-world: `scripts/bench coldstart`
//! (`-- --runs N`, default 10; `--json` for one line per function; `--no-build` to reuse the
//! binaries in `target/release`; `--env NAME=VALUE`, repeatable, to try a setting on every function;
//! `--only <logical id>` to start one function beside the hello-world).
//!
//! Every function of the template and the hello-world (`tests/hello-lambda`) are built in this run
//! with the release profile the artifacts ship with (for this host: Lambda's arm64 cannot run
//! here, so the ratios to the hello-world are what carries over, not the milliseconds). Each is
//! started `runs` times as Lambda starts it: its own binary with its template environment,
//! pointed at the Runtime API emulator (`wfe_local::runtime_api`) and at the local stack.
//! - init: process start to its first poll for work, which is where Lambda's "Init Duration" ends;
//! - memory at init and after one invocation: peak resident memory (VmHWM), what Lambda reports
//!   as "Max Memory Used";
//! - the first invocation: HTTP functions answer an authenticated API Gateway request on a listing
//!   route (the health function its detailed check), stream functions an empty batch, scheduled
//!   ones a scheduled event.

use std::collections::BTreeMap;
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use wfe_local::runtime_api::{self, RuntimeApi};
use wfe_local::template::Template;

const HELLO: &str = "hello-world";

struct Subject {
    name: String,
    binary: String,
    env: BTreeMap<String, String>,
    memory_mb: u64,
    event: Value,
}

#[derive(Debug, Clone, Copy)]
struct Sample {
    init_ms: f64,
    init_kib: u64,
    first_ms: f64,
    peak_kib: u64,
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let json_out = args.iter().any(|a| a == "--json");
    let runs: usize = args
        .iter()
        .position(|a| a == "--runs")
        .and_then(|i| args.get(i + 1))
        .and_then(|n| n.parse().ok())
        .unwrap_or(10);
    let extra_env: Vec<(String, String)> = args
        .windows(2)
        .filter(|w| w[0] == "--env")
        .filter_map(|w| w[1].split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    let only = args
        .iter()
        .position(|a| a == "--only")
        .and_then(|i| args.get(i + 1))
        .cloned();
    let root = wfe_local::workspace_root();
    let template = Template::workspace("cold").expect("template");
    let functions: Vec<(String, String)> = template
        .resource_ids("AWS::Serverless::Function")
        .into_iter()
        .filter(|id| only.as_ref().is_none_or(|o| o == id))
        .filter_map(|id| template.function_binary(&id).map(|b| (id, b)))
        .collect();

    if !args.iter().any(|a| a == "--no-build") {
        let started = Instant::now();
        let mut cargo = std::process::Command::new(env!("CARGO"));
        cargo.args([
            "build",
            "--release",
            "--locked",
            "--bins",
            "-p",
            "hello-lambda",
        ]);
        for (_, binary) in &functions {
            cargo.args(["-p", binary]);
        }
        let status = cargo.current_dir(&root).status().expect("cargo runs");
        assert!(status.success(), "the release build failed");
        eprintln!(
            "release build of {} binaries: {:.0} s",
            functions.len() + 1,
            started.elapsed().as_secs_f64()
        );
    }
    let bin_dir = std::env::var_os("CARGO_TARGET_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| root.join("target"))
        .join("release");

    let sdk = wfe_local::endpoint::sdk_config().await;
    let stack = format!("cold{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    let template = wfe_local::runner::provision(&sdk, &stack)
        .await
        .expect("provision");
    wfe_local::runner::migrate(&sdk, &template)
        .await
        .expect("migrate");
    let token = admin_token(&template, &sdk, &format!("t-{stack}")).await;

    let mut subjects = vec![Subject {
        name: HELLO.into(),
        binary: "hello-lambda".into(),
        env: BTreeMap::new(),
        memory_mb: 128,
        event: http_event("GET", "/hello", &token),
    }];
    for (id, binary) in &functions {
        let mut env = template.function_env(id).expect("function env");
        env.extend(extra_env.iter().cloned());
        subjects.push(Subject {
            name: id.clone(),
            binary: binary.clone(),
            env,
            memory_mb: template.function_memory(id),
            event: first_event(&template, id, &token),
        });
    }

    let mut results: Vec<(String, Vec<Sample>)> = Vec::new();
    for subject in &subjects {
        let mut samples = Vec::new();
        for _ in 0..runs {
            match cold_start(&bin_dir.join(&subject.binary), subject).await {
                Ok(sample) => samples.push(sample),
                Err(e) => panic!("{}: {e}", subject.name),
            }
        }
        results.push((subject.name.clone(), samples));
    }
    report(&results, runs, json_out);
}

/// One cold start and one invocation of `subject`'s binary.
async fn cold_start(bootstrap: &std::path::Path, subject: &Subject) -> Result<Sample, String> {
    let mut api = RuntimeApi::start(&subject.name)
        .await
        .map_err(|e| e.to_string())?;
    let log = std::env::temp_dir().join(format!("coldstart-{}.log", subject.name));
    let stderr = std::fs::File::create(&log).map_err(|e| e.to_string())?;
    let started = Instant::now();
    let mut child = tokio::process::Command::new(bootstrap)
        .env_clear()
        .envs(&subject.env)
        .envs(runtime_api::lambda_env(
            &api,
            &subject.name,
            subject.memory_mb,
        ))
        .stdout(Stdio::null())
        .stderr(stderr)
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("{}: {e}", bootstrap.display()))?;
    let pid = child.id().ok_or("the process is gone")?;
    let failed = |what: &str| {
        let log = std::fs::read_to_string(&log).unwrap_or_default();
        format!("{what}; its log:\n{log}")
    };
    let Some(polled) = api.next_poll(Duration::from_secs(30)).await else {
        return Err(failed("no poll for work within 30 s"));
    };
    let (init_kib, _) = runtime_api::memory_kib(pid).ok_or("no /proc status")?;
    let sent = Instant::now();
    api.push(subject.event.clone()).await;
    let Some(answer) = api.next_report(Duration::from_secs(30)).await else {
        return Err(failed("no answer within 30 s"));
    };
    if !answer.what.ends_with("/response") || !answered_well(&answer.payload) {
        return Err(failed(&format!("{}: {}", answer.what, answer.payload)));
    }
    // Its next poll: the invocation is over, nothing of it is still running.
    api.next_poll(Duration::from_secs(30))
        .await
        .ok_or_else(|| failed("no poll after the invocation"))?;
    let (peak_kib, _) = runtime_api::memory_kib(pid).ok_or("no /proc status")?;
    let _ = child.kill().await;
    Ok(Sample {
        init_ms: (polled - started).as_secs_f64() * 1e3,
        init_kib,
        first_ms: (answer.at - sent).as_secs_f64() * 1e3,
        peak_kib,
    })
}

/// A 2xx from an HTTP function, no failed records from a stream function: a benchmark of a
/// function that refused its event would measure the wrong path.
fn answered_well(payload: &Value) -> bool {
    match payload.get("statusCode").and_then(Value::as_u64) {
        Some(status) => {
            (200..300).contains(&status)
                && !payload["body"]
                    .as_str()
                    .is_some_and(|b| b.contains("\"errors\""))
        }
        None => payload
            .get("batchItemFailures")
            .and_then(Value::as_array)
            .is_none_or(Vec::is_empty),
    }
}

/// The event Lambda would hand `id` first, by its trigger.
fn first_event(template: &Template, id: &str, token: &str) -> Value {
    let routes = template.http_routes(id);
    if !routes.is_empty() {
        if id == "HealthFunction" {
            return http_event("GET", "/health/detailed", token);
        }
        if id == "GraphqlFunction" {
            let mut event = http_event("POST", "/graphql", token);
            event["body"] =
                json!(json!({"query": "{ workflows(first: 5) { nodes { id } } }"}).to_string());
            event["headers"]["content-type"] = json!("application/json");
            return event;
        }
        let (_, path) = routes
            .iter()
            .find(|(method, path)| method == "GET" && !path.contains('{'))
            .unwrap_or(&routes[0]);
        return http_event("GET", path, token);
    }
    let kinds: Vec<&str> = template
        .raw_events(id)
        .into_iter()
        .flat_map(|events| events.values())
        .filter_map(|e| e.get("Type").and_then(Value::as_str))
        .collect();
    if kinds.contains(&"DynamoDB") {
        json!({"Records": []})
    } else {
        wfe_local::runner::scheduled_event(template.stack(), id)
    }
}

/// An API Gateway HTTP API (payload 2.0) request with a bearer token.
fn http_event(method: &str, path: &str, token: &str) -> Value {
    let root = wfe_local::workspace_root();
    let mut event: Value = serde_json::from_str(
        &std::fs::read_to_string(
            root.join("tests/fixtures/example-apigw-v2-request-no-authorizer.json"),
        )
        .expect("fixture"),
    )
    .expect("fixture JSON");
    event["rawPath"] = json!(path);
    event["rawQueryString"] = json!("");
    event["queryStringParameters"] = Value::Null;
    event["routeKey"] = json!(format!("{method} {path}"));
    event["requestContext"]["http"]["path"] = json!(path);
    event["requestContext"]["http"]["method"] = json!(method);
    event["headers"]["authorization"] = json!(format!("Bearer {token}"));
    event["body"] = Value::Null;
    event["isBase64Encoded"] = json!(false);
    event
}

/// An admin of a fresh tenant, with a token signed by the stack's JWT key.
async fn admin_token(template: &Template, sdk: &aws_config::SdkConfig, tenant: &str) -> String {
    let tables = template.tables().expect("tables");
    let store = shared::auth::AuthStore::new(aws_sdk_dynamodb::Client::new(sdk), tables.state);
    let password = format!("pw-{}", uuid::Uuid::new_v4().simple());
    auth::create(&store, "bench", &password, tenant, vec!["admin".into()])
        .await
        .expect("user");
    let user = store
        .user(tenant, "bench")
        .await
        .expect("user store")
        .expect("the user");
    let arn = template
        .function_env("AuthFunction")
        .expect("auth env")
        .get("JWT_SECRET_ARN")
        .cloned()
        .expect("JWT_SECRET_ARN");
    let secret = aws_sdk_secretsmanager::Client::new(sdk)
        .get_secret_value()
        .secret_id(arn)
        .send()
        .await
        .expect("the JWT secret")
        .secret_string
        .expect("a string secret");
    let keys = shared::auth::JwtKeys::new(&secret, &[]).expect("keys");
    let now = chrono::Utc::now().timestamp();
    keys.issue(&shared::auth::Claims {
        sub: "bench".into(),
        tenant: tenant.into(),
        roles: vec!["admin".into()],
        iat: now,
        exp: now + 3600,
        jti: uuid::Uuid::new_v4().to_string(),
        ver: user.token_version,
    })
    .expect("a signed token")
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn p90(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[(values.len() * 9 / 10).min(values.len() - 1)]
}

fn report(results: &[(String, Vec<Sample>)], runs: usize, json_out: bool) {
    let summary = |samples: &[Sample]| {
        let init: Vec<f64> = samples.iter().map(|s| s.init_ms).collect();
        (
            median(init.clone()),
            p90(init),
            median(samples.iter().map(|s| s.init_kib as f64 / 1024.0).collect()),
            median(samples.iter().map(|s| s.peak_kib as f64 / 1024.0).collect()),
            median(samples.iter().map(|s| s.first_ms).collect()),
        )
    };
    let hello = results
        .iter()
        .find(|(name, _)| name == HELLO)
        .map(|(_, s)| summary(s))
        .expect("the hello-world ran");
    println!("{runs} cold starts each; medians (init p90 beside); memory is peak resident (VmHWM)");
    println!("| function | init ms (p90) | init ÷ hello-world | memory at init MiB | memory after first invocation MiB | memory ÷ hello-world | first invocation ms |");
    println!("|---|---|---|---|---|---|---|");
    for (name, samples) in results {
        let (init, init_p90, init_mib, peak_mib, first) = summary(samples);
        if json_out {
            println!(
                "{}",
                json!({"function": name, "init_ms": init, "init_p90_ms": init_p90,
                    "init_ratio": init / hello.0, "memory_init_mib": init_mib,
                    "memory_peak_mib": peak_mib, "memory_ratio": peak_mib / hello.3,
                    "first_invocation_ms": first, "runs": samples.len()})
            );
        }
        println!(
            "| {name} | {init:.1} ({init_p90:.1}) | {:.1}x | {init_mib:.1} | {peak_mib:.1} | {:.1}x | {first:.1} |",
            init / hello.0,
            peak_mib / hello.3,
        );
    }
}
