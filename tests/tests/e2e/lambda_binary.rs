//! Smoke test of the functions' binaries in Lambda mode (host builds by default; the deployable
//! `cargo lambda build` artifacts with `LAMBDA_ARTIFACTS`, see `build_artifacts`), with
//! `AWS_LAMBDA_RUNTIME_API` pointing at a wire-compatible Lambda Runtime API (the 2018-06-01 interface lambda_runtime polls). The health
//! function answers an API Gateway HTTP API event; the auth function without a JWT secret stops at
//! start-up with the seed's message.
//!
//! `cargo lambda watch` provides the same emulator, but stopping it in this sandbox (running as
//! root) took every process of the machine down with it, twice; see docs/adr/0004.

use std::process::Stdio;
use std::time::Duration;

use serde_json::{json, Value};
use wfe_local::runtime_api::{self, RuntimeApi};

use crate::support::App;

/// Where the smoke tests find each function's `bootstrap`.
///
/// By default the functions' own binaries, built for this host with the dev profile: they share
/// every dependency the test build already compiled, so this costs three links instead of a
/// cross-compiled release build competing with the e2e tests for the CPU (about 8 minutes of CI).
/// The Lambda-mode code path (lambda_runtime polling the Runtime API) is the same binary either way.
/// `LAMBDA_ARTIFACTS=<dir>` points the tests at `cargo lambda build --lambda-dir <dir>` output
/// instead (`<dir>/<function>/bootstrap`), as `scripts/test-lambda-artifacts` does.
struct Artifacts(std::path::PathBuf, bool);

impl Artifacts {
    fn bootstrap(&self, function: &str) -> std::path::PathBuf {
        if self.1 {
            self.0.join(function).join("bootstrap")
        } else {
            self.0.join(function)
        }
    }
}

async fn build_artifacts() -> &'static Artifacts {
    static BUILT: tokio::sync::OnceCell<Artifacts> = tokio::sync::OnceCell::const_new();
    BUILT
        .get_or_init(|| async {
            if let Some(dir) = std::env::var_os("LAMBDA_ARTIFACTS") {
                return Artifacts(dir.into(), true);
            }
            let root = wfe_local::workspace_root();
            let status = tokio::process::Command::new(env!("CARGO"))
                .args([
                    "build",
                    "--quiet",
                    "--locked",
                    "--bins",
                    "-p",
                    "health",
                    "-p",
                    "auth",
                    "-p",
                    "orchestrator",
                ])
                .current_dir(&root)
                .status()
                .await
                .expect("cargo runs");
            assert!(
                status.success(),
                "cargo build of the function binaries failed"
            );
            let target = std::env::var_os("CARGO_TARGET_DIR")
                .map(std::path::PathBuf::from)
                .unwrap_or_else(|| root.join("target"));
            Artifacts(target.join("debug"), false)
        })
        .await
}

#[tokio::test]
async fn auth_artifact_without_a_jwt_secret_stops_with_the_seed_message() {
    let artifacts = build_artifacts().await;
    let out = tokio::process::Command::new(artifacts.bootstrap("auth"))
        .env_clear()
        .env("EVENTS_TABLE", "e")
        .env("STATE_TABLE", "s")
        .env("MIGRATIONS_TABLE", "m")
        .env("AWS_REGION", "us-east-1")
        .env("AWS_ENDPOINT_URL", wfe_local::endpoint::endpoint_url())
        .env("AWS_LAMBDA_RUNTIME_API", "127.0.0.1:9")
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr
            .lines()
            .any(|l| l == "Error: Environment variable JWT_SECRET is required"),
        "{stderr}"
    );
}

#[tokio::test]
async fn health_artifact_answers_an_api_gateway_event_through_the_runtime_api() {
    let app = App::start("binary", &[]).await;
    let root = wfe_local::workspace_root();
    let artifacts = build_artifacts().await;

    let mut event: Value = serde_json::from_str(
        &std::fs::read_to_string(
            root.join("tests/fixtures/example-apigw-v2-request-no-authorizer.json"),
        )
        .unwrap(),
    )
    .unwrap();
    event["rawPath"] = json!("/health/detailed");
    event["requestContext"]["http"]["path"] = json!("/health/detailed");
    let (what, response) = invoke(
        &artifacts.bootstrap("health"),
        app.template.function_env("HealthFunction").unwrap(),
        event,
    )
    .await;
    assert_eq!(what, "invoke-1/response", "{response}");
    assert_eq!(response["statusCode"], 200, "{response}");
    assert_eq!(response["headers"]["x-request-id"], "LV7fzho-PHcEJPw=");
    let body: Value = serde_json::from_str(response["body"].as_str().unwrap()).unwrap();
    assert_eq!(body["status"], "pass", "{body}");
}

/// Runs a function's binary against a Runtime API that hands it `event` once; returns what it
/// reported (`<request id>/response` or `/error`) and the payload.
async fn invoke(
    bootstrap: &std::path::Path,
    env: std::collections::BTreeMap<String, String>,
    event: Value,
) -> (String, Value) {
    let mut api = RuntimeApi::start("smoke").await.unwrap();
    api.push(event).await;
    let mut child = tokio::process::Command::new(bootstrap)
        .env_clear()
        .envs(env)
        .envs(runtime_api::lambda_env(&api, "smoke", 256))
        .stdout(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let report = api
        .next_report(Duration::from_secs(60))
        .await
        .expect("the function answered within 60 s");
    let _ = child.kill().await;
    (report.what, report.payload)
}

#[tokio::test]
async fn orchestrator_artifact_handles_a_stream_batch_through_the_runtime_api() {
    let app = App::start("binary-stream", &[]).await;
    let artifacts = build_artifacts().await;
    let c = crate::workflows::Client::new(&app, "t-binary").await;
    let wf = c
        .create(json!({"name": "one", "start": "t", "steps": {"t": {"type": "template", "template": "hi {{ input.who }}"}}}))
        .await;
    let id = c.start(&wf, json!({"who": "lambda"})).await;
    let tables = app.template.tables().unwrap();
    let dynamodb = aws_sdk_dynamodb::Client::new(&app.sdk);
    let arn = wfe_local::streams::stream_arn(&dynamodb, &tables.events)
        .await
        .unwrap();
    let mut reader = wfe_local::streams::StreamReader::from_start(
        aws_sdk_dynamodbstreams::Client::new(&app.sdk),
        &arn,
    )
    .await
    .unwrap();
    let records = reader.poll(100).await.unwrap();
    assert_eq!(records.len(), 1, "ExecutionStarted");
    let (what, response) = invoke(
        &artifacts.bootstrap("orchestrator"),
        app.template.function_env("OrchestratorFunction").unwrap(),
        json!({"Records": records}),
    )
    .await;
    assert_eq!(what, "invoke-1/response", "{response}");
    assert_eq!(response["batchItemFailures"], json!([]), "{response}");
    let e = c.execution(&id).await;
    assert_eq!(e["status"], "succeeded", "{e:#}");
    assert_eq!(e["output"], "hi lambda");
}
