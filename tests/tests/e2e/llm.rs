//! `llm` steps against local servers that speak OpenAI chat completions and Anthropic messages
//! (wire-compatible doubles: no provider is reachable here). They record what they receive, so
//! the tests assert model, messages, max tokens and auth headers; usage and cost must reach the
//! execution summary, priced from the price table (migration 0003).

use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::http::HeaderMap;
use axum::routing::post;
use serde_json::{json, Value};

use crate::support::App;
use crate::workflows::Client;

const OPENAI_KEY: &str = "sk-test-openai-0123456789";
const ANTHROPIC_KEY: &str = "sk-ant-test-0123456789";

#[derive(Clone, Default)]
pub struct Providers {
    pub seen: Arc<Mutex<Vec<(String, HeaderMap, Value)>>>,
    pub base: String,
}

async fn openai(
    State(p): State<Providers>,
    headers: HeaderMap,
    body: axum::Json<Value>,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let body = body.0;
    let calls = {
        let mut seen = p.seen.lock().unwrap();
        seen.push(("openai".into(), headers, body.clone()));
        seen.iter()
            .filter(|(_, _, b)| b["model"] == body["model"])
            .count()
    };
    // Models that script failures: one 429 with Retry-After, or a provider that is down.
    match body["model"].as_str() {
        Some("limited-once") if calls == 1 => {
            return (
                axum::http::StatusCode::TOO_MANY_REQUESTS,
                [("retry-after", "1")],
                r#"{"error": {"message": "Rate limit reached", "type": "requests"}}"#,
            )
                .into_response();
        }
        Some("bad-key") => {
            // As providers do: the auth error names the key it got.
            let got = body_key(&p, &body);
            return (
                axum::http::StatusCode::UNAUTHORIZED,
                format!(r#"{{"error": {{"message": "Incorrect API key provided: {got}", "code": "invalid_api_key"}}}}"#),
            )
                .into_response();
        }
        Some("down") => {
            return (
                axum::http::StatusCode::INTERNAL_SERVER_ERROR,
                r#"{"error": {"message": "The server had an error"}}"#,
            )
                .into_response();
        }
        _ => {}
    }
    let user = body["messages"].as_array().unwrap().last().unwrap()["content"]
        .as_str()
        .unwrap()
        .to_owned();
    if user == "slow" {
        // Long enough for a test to act while the call is in flight.
        tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    }
    if user == "hang" {
        // A call in flight when its worker dies.
        tokio::time::sleep(std::time::Duration::from_secs(120)).await;
    }
    let content = if body.get("response_format").is_some() {
        // Breaks a schema that wants a string `answer`.
        json!({"answer": 42}).to_string()
    } else {
        format!("echo: {user}")
    };
    // gpt-4.1-mini here always talks until its max_tokens (the budget test's worst case).
    let completion_tokens = if body["model"] == "gpt-4.1-mini" {
        body["max_tokens"].as_u64().unwrap()
    } else {
        5
    };
    if body["model"] == "no-usage" {
        // Some compatible servers leave usage out.
        return axum::Json(json!({
            "id": "chatcmpl-1", "object": "chat.completion", "model": body["model"],
            "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": content}}]
        }))
        .into_response();
    }
    axum::Json(json!({
        "id": "chatcmpl-1", "object": "chat.completion", "model": body["model"],
        "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": content}}],
        "usage": {"prompt_tokens": 12, "completion_tokens": completion_tokens, "total_tokens": 12 + completion_tokens}
    }))
    .into_response()
}

/// The bearer key of the newest request for this body's model.
fn body_key(p: &Providers, body: &Value) -> String {
    let seen = p.seen.lock().unwrap();
    let (_, headers, _) = seen
        .iter()
        .rev()
        .find(|(_, _, b)| b["model"] == body["model"])
        .unwrap();
    headers["authorization"]
        .to_str()
        .unwrap()
        .trim_start_matches("Bearer ")
        .to_owned()
}

async fn anthropic(
    State(p): State<Providers>,
    headers: HeaderMap,
    body: axum::Json<Value>,
) -> axum::Json<Value> {
    let body = body.0;
    p.seen
        .lock()
        .unwrap()
        .push(("anthropic".into(), headers, body.clone()));
    let user = body["messages"][0]["content"].as_str().unwrap().to_owned();
    axum::Json(json!({
        "id": "msg_1", "type": "message", "role": "assistant", "model": body["model"],
        "content": [{"type": "text", "text": format!("claude: {user}")}],
        "stop_reason": "end_turn",
        "usage": {"input_tokens": 1000, "output_tokens": 2000}
    }))
}

/// Bedrock Converse (`POST /model/{modelId}/converse`), refusing any request whose SigV4
/// signature does not verify with the test credentials' secret.
async fn bedrock(
    State(p): State<Providers>,
    axum::extract::Path(model): axum::extract::Path<String>,
    method: axum::http::Method,
    uri: axum::http::Uri,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let signed = match crate::sigv4::verify(
        method.as_str(),
        uri.path(),
        uri.query().unwrap_or_default(),
        &headers,
        &body,
        "local",
    ) {
        Ok(signed) => signed,
        Err(e) => {
            return (
                axum::http::StatusCode::FORBIDDEN,
                [("x-amzn-errortype", "InvalidSignatureException")],
                axum::Json(json!({"message": e})),
            )
                .into_response()
        }
    };
    let body: Value = serde_json::from_slice(&body).unwrap();
    let calls = {
        let mut seen = p.seen.lock().unwrap();
        seen.push((
            "bedrock".into(),
            headers,
            json!({"model": model, "body": body, "service": signed.service, "region": signed.region}),
        ));
        seen.iter().filter(|(_, _, b)| b["model"] == model).count()
    };
    if model == "throttled-once" && calls == 1 {
        return (
            axum::http::StatusCode::TOO_MANY_REQUESTS,
            [("x-amzn-errortype", "ThrottlingException")],
            axum::Json(json!({"message": "Too many requests, please wait before trying again."})),
        )
            .into_response();
    }
    let user = body["messages"][0]["content"][0]["text"]
        .as_str()
        .unwrap_or_default();
    axum::Json(json!({
        "output": {"message": {"role": "assistant", "content": [{"text": format!("nova: {user}")}]}},
        "stopReason": "end_turn",
        "usage": {"inputTokens": 100, "outputTokens": 40, "totalTokens": 140},
        "metrics": {"latencyMs": 7}
    }))
    .into_response()
}

impl Providers {
    pub async fn start() -> Self {
        let mut p = Providers::default();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        p.base = format!("http://{}", listener.local_addr().unwrap());
        let app = axum::Router::new()
            .route("/v1/chat/completions", post(openai))
            .route("/v1/messages", post(anthropic))
            .route("/model/{model}/converse", post(bedrock))
            .with_state(p.clone());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        p
    }
}

#[tokio::test]
async fn llm_steps_record_text_usage_and_cost_and_json_mode_checks_the_schema() {
    let providers = Providers::start().await;
    let app = App::start_engine(
        "llm",
        &[
            ("OPENAI_API_KEY", OPENAI_KEY),
            ("OPENAI_BASE_URL", &providers.base),
            ("ANTHROPIC_API_KEY", ANTHROPIC_KEY),
            ("ANTHROPIC_BASE_URL", &providers.base),
        ],
    )
    .await;
    let c = Client::new(&app, "t-llm").await;
    let wf = c
        .create(json!({"name": "ask", "start": "draft", "steps": {
            "draft": {"type": "llm", "provider": "openai", "model": "gpt-4o-mini", "system": "You are terse.",
                      "prompt": "Summarise {{ input.topic }}", "max_tokens": 64, "temperature": 0.2, "next": "review"},
            "review": {"type": "llm", "provider": "anthropic", "model": "claude-3-5-haiku-20241022",
                       "prompt": "Review: {{ steps.draft.output.text }}", "max_tokens": 128}},
            "outputs": {"draft": "{{ steps.draft.output.text }}", "review": "{{ steps.review.output.text }}"}}))
        .await;
    let id = c.start(&wf, json!({"topic": "event sourcing"})).await;
    let e = c.finished(&id).await;
    assert_eq!(e["status"], "succeeded", "{e:#}");
    assert_eq!(e["output"]["draft"], "echo: Summarise event sourcing");
    assert_eq!(
        e["output"]["review"],
        "claude: Review: echo: Summarise event sourcing"
    );
    assert_eq!(
        (e["input_tokens"].as_u64(), e["output_tokens"].as_u64()),
        (Some(1012), Some(2005))
    );
    // gpt-4o-mini 12 in / 5 out at 0.15 / 0.6 USD per Mtok; claude-3-5-haiku 1000 / 2000 at 0.8 / 4.0.
    let expected = (12.0 * 0.15 + 5.0 * 0.6 + 1000.0 * 0.8 + 2000.0 * 4.0) / 1e6;
    assert!(
        (e["cost_usd"].as_f64().unwrap() - expected).abs() < 1e-12,
        "{e:#}"
    );

    let seen = providers.seen.lock().unwrap().clone();
    let (_, h, body) = seen.iter().find(|(p, ..)| p == "openai").unwrap();
    assert_eq!(h["authorization"], format!("Bearer {OPENAI_KEY}").as_str());
    assert_eq!(body["model"], "gpt-4o-mini");
    assert_eq!(body["max_tokens"], 64);
    assert_eq!(
        body["messages"],
        json!([{"role": "system", "content": "You are terse."}, {"role": "user", "content": "Summarise event sourcing"}])
    );
    let (_, h, body) = seen.iter().find(|(p, ..)| p == "anthropic").unwrap();
    assert_eq!(h["x-api-key"], ANTHROPIC_KEY);
    assert_eq!(h["anthropic-version"], "2023-06-01");
    assert_eq!(body["model"], "claude-3-5-haiku-20241022");
    assert_eq!(body["max_tokens"], 128);

    // JSON mode: an answer that breaks the step's schema fails the step clearly.
    let json_wf = c
        .create(json!({"name": "json", "start": "extract", "steps": {
            "extract": {"type": "llm", "provider": "openai", "model": "gpt-4o-mini", "prompt": "Give me the answer",
                        "output_schema": {"type": "object", "required": ["answer"], "properties": {"answer": {"type": "string"}}}}}}))
        .await;
    let id = c.start(&json_wf, json!({})).await;
    let e = c.finished(&id).await;
    assert_eq!(e["status"], "failed", "{e:#}");
    assert_eq!(e["error"]["kind"], "OutputSchemaMismatch");
    assert!(
        e["error"]["message"].as_str().unwrap().contains("/answer"),
        "{e:#}"
    );
    // Tokens spent on the refused answer still count.
    assert_eq!(
        (e["input_tokens"].as_u64(), e["output_tokens"].as_u64()),
        (Some(12), Some(5))
    );
    assert!(e["cost_usd"].as_f64().unwrap() > 0.0);

    // A provider that is not configured fails the step without calling anything.
    let bedrock = c
        .create(json!({"name": "bedrock", "start": "x", "steps": {
            "x": {"type": "llm", "provider": "bedrock", "model": "amazon.nova-micro-v1:0", "prompt": "hi"}}}))
        .await;
    let id = c.start(&bedrock, json!({})).await;
    let e = c.finished(&id).await;
    assert_eq!(e["error"]["kind"], "ProviderNotConfigured", "{e:#}");
}

#[tokio::test]
async fn bedrock_converse_calls_are_sigv4_signed_priced_and_retried_when_throttled() {
    let providers = Providers::start().await;
    let app = App::start_engine(
        "llm-bedrock",
        &[
            ("BEDROCK_ENABLED", "true"),
            ("BEDROCK_ENDPOINT_URL", &providers.base),
        ],
    )
    .await;
    let c = Client::new(&app, "t-bedrock").await;
    let wf = c
        .create(json!({"name": "nova", "start": "ask", "steps": {
            "ask": {"type": "llm", "provider": "bedrock", "model": "amazon.nova-micro-v1:0", "system": "Be brief.",
                    "prompt": "Name {{ input.n }} colours", "max_tokens": 50, "temperature": 0.5}}}))
        .await;
    let id = c.start(&wf, json!({"n": 3})).await;
    let e = c.finished(&id).await;
    assert_eq!(e["status"], "succeeded", "{e:#}");
    assert_eq!(e["output"]["text"], "nova: Name 3 colours", "{e:#}");
    assert_eq!(
        (e["input_tokens"].as_u64(), e["output_tokens"].as_u64()),
        (Some(100), Some(40))
    );
    // amazon.nova-micro-v1:0 at 0.035 / 0.14 USD per Mtok (migration 0003).
    let expected = (100.0 * 0.035 + 40.0 * 0.14) / 1e6;
    assert!(
        (e["cost_usd"].as_f64().unwrap() - expected).abs() < 1e-12,
        "{e:#}"
    );
    let seen = providers.seen.lock().unwrap().clone();
    let (_, headers, got) = seen.iter().find(|(p, ..)| p == "bedrock").unwrap();
    assert_eq!(got["model"], "amazon.nova-micro-v1:0");
    assert_eq!(
        (got["service"].as_str(), got["region"].as_str()),
        (Some("bedrock"), Some("us-east-1"))
    );
    assert!(headers["authorization"]
        .to_str()
        .unwrap()
        .starts_with("AWS4-HMAC-SHA256 Credential=local/"));
    let body = &got["body"];
    assert_eq!(
        body["messages"],
        json!([{"role": "user", "content": [{"text": "Name 3 colours"}]}])
    );
    assert_eq!(body["system"], json!([{"text": "Be brief."}]));
    assert_eq!(body["inferenceConfig"]["maxTokens"], 50);
    assert_eq!(body["inferenceConfig"]["temperature"], 0.5);

    // The double checks signatures for real: a forged one is refused.
    let forged = app
        .http
        .post(format!("{}/model/amazon.nova-micro-v1%3A0/converse", providers.base))
        .header("x-amz-date", "20261125T120000Z")
        .header(
            "authorization",
            "AWS4-HMAC-SHA256 Credential=local/20261125/us-east-1/bedrock/aws4_request, SignedHeaders=host;x-amz-date, Signature=00",
        )
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), 403);

    // ThrottlingException is retried within the attempt, then succeeds.
    let throttled = c
        .create(json!({"name": "throttled", "start": "ask", "steps": {
            "ask": {"type": "llm", "provider": "bedrock", "model": "throttled-once", "prompt": "hi"}}}))
        .await;
    let id = c.start(&throttled, json!({})).await;
    let e = c.finished(&id).await;
    assert_eq!(e["status"], "succeeded", "{e:#}");
    let calls = providers
        .seen
        .lock()
        .unwrap()
        .iter()
        .filter(|(_, _, b)| b["model"] == "throttled-once")
        .count();
    assert_eq!(calls, 2);
}

#[tokio::test]
async fn rate_limits_are_retried_after_retry_after_and_the_circuit_opens_on_an_outage() {
    let providers = Providers::start().await;
    let app = App::start_engine(
        "llm-circuit",
        &[
            ("OPENAI_API_KEY", OPENAI_KEY),
            ("OPENAI_BASE_URL", &providers.base),
            ("LLM_RETRY_ATTEMPTS", "2"),
            ("LLM_CIRCUIT_THRESHOLD", "2"),
            ("LLM_CIRCUIT_COOLDOWN_SECS", "600"),
        ],
    )
    .await;
    let c = Client::new(&app, "t-circuit").await;
    let one = |model: &str| {
        json!({"name": model, "start": "ask", "steps": {
        "ask": {"type": "llm", "provider": "openai", "model": model, "prompt": "hello"}}})
    };
    let calls = |model: &str| {
        providers
            .seen
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, _, b)| b["model"] == model)
            .count()
    };

    // A 429 with Retry-After: 1 is waited out and retried within the attempt.
    let limited = c.create(one("limited-once")).await;
    let id = c.start(&limited, json!({})).await;
    let e = c.finished(&id).await;
    assert_eq!(e["status"], "succeeded", "{e:#}");
    assert_eq!(e["output"]["text"], "echo: hello", "{e:#}");
    assert_eq!(e["output"]["usage"]["output_tokens"], 5);
    assert_eq!(calls("limited-once"), 2);

    // An outage: two failures open the circuit; the next execution fails fast without a call.
    let down = c.create(one("down")).await;
    let first = c.start(&down, json!({})).await;
    let e = c.finished(&first).await;
    assert_eq!(e["error"]["kind"], "ProviderUnavailable", "{e:#}");
    assert_eq!(calls("down"), 2);
    let second = c.start(&down, json!({})).await;
    let e = c.finished(&second).await;
    assert_eq!(e["error"]["kind"], "CircuitOpen", "{e:#}");
    assert_eq!(calls("down"), 2, "no call while the circuit is open");
}

#[tokio::test]
async fn a_provider_key_never_reaches_logs_events_or_the_api() {
    let logs = crate::support::captured_logs();
    let providers = Providers::start().await;
    let app = App::start_engine(
        "llm-secret",
        &[
            ("OPENAI_API_KEY", OPENAI_KEY),
            ("OPENAI_BASE_URL", &providers.base),
        ],
    )
    .await;
    let c = Client::new(&app, "t-secret").await;
    let wf = c
        .create(json!({"name": "leak", "start": "ask", "steps": {
            "ask": {"type": "llm", "provider": "openai", "model": "bad-key", "prompt": "hello"}}}))
        .await;
    let id = c.start(&wf, json!({})).await;
    let e = c.finished(&id).await;
    assert_eq!(e["error"]["kind"], "ProviderRejected", "{e:#}");
    assert!(
        e["error"]["message"]
            .as_str()
            .unwrap()
            .contains("Incorrect API key provided: [redacted]"),
        "{e:#}"
    );
    let history = serde_json::to_string(&c.history(&id).await).unwrap();
    let logs = String::from_utf8(logs.lock().unwrap().clone()).unwrap();
    // The capture works: this execution's turns are in it.
    assert!(
        logs.contains(&id),
        "the captured logs hold this execution's lines"
    );
    for (what, text) in [
        ("logs", &logs),
        ("history", &history),
        ("summary", &e.to_string()),
    ] {
        assert!(!text.contains(OPENAI_KEY), "the key is in the {what}");
    }
}

/// A key named by `*_API_KEY_ARN` is read after init, in the background. A step that needs it
/// while the secret does not exist fails at once (`ProviderKeyUnavailable`, not retried, the
/// variable named); once the secret exists, the same running worker reads it and calls with it,
/// without a restart.
#[tokio::test]
async fn a_provider_key_from_secrets_manager_is_read_after_init_and_again_after_a_failed_read() {
    let providers = Providers::start().await;
    let secret = format!("e2e-openai-key-{}", uuid::Uuid::new_v4());
    let app = App::start_engine(
        "llm-key-arn",
        &[
            ("OPENAI_API_KEY_ARN", &secret),
            ("OPENAI_BASE_URL", &providers.base),
        ],
    )
    .await;
    let c = Client::new(&app, "t-key-arn").await;
    let wf = c
        .create(json!({"name": "ask", "start": "ask", "steps": {
            "ask": {"type": "llm", "provider": "openai", "model": "gpt-4o-mini", "prompt": "hello",
                    "retry": {"max_attempts": 3, "initial_interval_ms": 100}}}}))
        .await;
    let id = c.start(&wf, json!({})).await;
    let e = c.finished(&id).await;
    // A missing secret is for an operator to fix: not retried. The step says which variable,
    // and nothing of what Secrets Manager said (account, role, ARN).
    assert_eq!(e["error"]["kind"], "ProviderKeyUnavailable", "{e:#}");
    assert_eq!(e["error"]["retryable"], false, "{e:#}");
    let message = e["error"]["message"].as_str().unwrap();
    assert!(message.contains("OPENAI_API_KEY_ARN"), "{e:#}");
    assert!(!message.contains(&secret), "{e:#}");
    assert!(
        providers.seen.lock().unwrap().is_empty(),
        "no call without a key"
    );

    let key = format!("sk-from-secrets-manager-{}", uuid::Uuid::new_v4().simple());
    aws_sdk_secretsmanager::Client::new(&app.sdk)
        .create_secret()
        .name(&secret)
        .secret_string(&key)
        .send()
        .await
        .unwrap();
    // A failed read stands for a second: executions started before then still fail.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let id = c.start(&wf, json!({})).await;
        let e = c.finished(&id).await;
        if e["status"] == "succeeded" {
            break;
        }
        assert_eq!(e["error"]["kind"], "ProviderKeyUnavailable", "{e:#}");
        assert!(
            std::time::Instant::now() < deadline,
            "the key was never read"
        );
    }
    let seen = providers.seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].1["authorization"], format!("Bearer {key}").as_str());
}

#[tokio::test]
async fn ten_concurrent_executions_against_a_budget_that_fits_five() {
    let providers = Providers::start().await;
    let app = App::start_engine(
        "llm-budget",
        &[
            ("OPENAI_API_KEY", OPENAI_KEY),
            ("OPENAI_BASE_URL", &providers.base),
        ],
    )
    .await;
    let c = Client::new(&app, "t-budget").await;
    let (admin, password) = app.user("t-budget", &["admin"]).await;
    let (admin_token, _) = app.tokens(&admin, &password).await;
    // gpt-4.1-mini: 0.4 / 1.6 USD per Mtok. Estimate: "hello" is 1 token in o200k_base, plus 3 per
    // message and 3 for the answer = 7 input tokens,
    // plus max_tokens 1000 of output; the double answers 12 in and 1000 out.
    let estimate = (7.0 * 0.4 + 1000.0 * 1.6) / 1e6;
    let actual = (12.0 * 0.4 + 1000.0 * 1.6) / 1e6;
    let budget = 5.5 * estimate;
    let r = app
        .http
        .put(app.url("/budgets"))
        .bearer_auth(&admin_token)
        .json(&json!({"monthly_usd": budget}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // Not an admin: no budget changes.
    let r = c
        .send(
            reqwest::Method::PUT,
            "/budgets",
            Some(json!({"monthly_usd": 1e9})),
        )
        .await;
    crate::support::problem(r, 403).await;

    let wf = c
        .create(json!({"name": "spend", "start": "ask", "steps": {
            "ask": {"type": "llm", "provider": "openai", "model": "gpt-4.1-mini", "prompt": "hello", "max_tokens": 1000}}}))
        .await;
    let mut ids = Vec::new();
    for _ in 0..10 {
        ids.push(c.start(&wf, json!({})).await);
    }
    let mut kinds = Vec::new();
    for id in &ids {
        let e = c.finished(id).await;
        kinds.push(e["error"]["kind"].as_str().unwrap_or("none").to_owned());
    }
    assert_eq!(
        kinds.iter().filter(|k| *k == "none").count(),
        5,
        "{kinds:?}"
    );
    assert_eq!(
        kinds.iter().filter(|k| *k == "BudgetExceeded").count(),
        5,
        "{kinds:?}"
    );
    let calls = providers
        .seen
        .lock()
        .unwrap()
        .iter()
        .filter(|(_, _, b)| b["model"] == "gpt-4.1-mini")
        .count();
    assert_eq!(calls, 5, "refused steps never reached the provider");
    let admin = Client {
        app: &app,
        token: admin_token.clone(),
    };
    let b = admin.get_json("/budgets").await;
    let spent = b["spent_usd"].as_f64().unwrap();
    assert!((spent - 5.0 * actual).abs() < 1e-9, "{b:#}");
    assert!(
        spent <= budget,
        "spend {spent} never exceeds the budget {budget}"
    );
    assert!(
        b["reserved_usd"].as_f64().unwrap().abs() < 1e-9,
        "nothing left reserved: {b:#}"
    );

    // 5 spends of 1,604.8 µUSD against 8,839.6: 91 %, so the 50 % and 80 % alerts, once each.
    let period = shared::engine::budget::period(chrono::Utc::now());
    let stream = shared::events::StreamId::new("t-budget", "budget", &period).unwrap();
    let alerts = app.events(&stream).await;
    let crossed: Vec<u64> = alerts
        .iter()
        .map(|e| e.payload["threshold_percent"].as_u64().unwrap())
        .collect();
    assert_eq!(crossed, [50, 80], "{alerts:#?}");
    assert!(alerts
        .iter()
        .all(|e| e.event_type == "BudgetThresholdCrossed"));

    // The usage report: the five spends, by model and by workflow; bad queries are refused.
    // The ledger is a read model: poll until the orchestrator has recorded all five.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let model: Value = loop {
        let r: Value = c
            .send(reqwest::Method::GET, "/usage?group_by=model", None)
            .await
            .json()
            .await
            .unwrap();
        if r["total"]["steps"] == 5 {
            break r;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "usage never showed five steps: {r:#}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    assert_eq!(model["groups"].as_array().unwrap().len(), 1, "{model:#}");
    assert_eq!(model["groups"][0]["key"], "openai/gpt-4.1-mini");
    assert_eq!(model["groups"][0]["steps"], 5);
    assert_eq!(model["groups"][0]["output_tokens"], 5000);
    assert!(
        (model["total"]["cost_usd"].as_f64().unwrap() - spent).abs() < 1e-9,
        "{model:#}"
    );
    let by_wf: Value = c
        .send(reqwest::Method::GET, "/usage?group_by=workflow", None)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(by_wf["groups"][0]["key"], wf.as_str());
    for bad in [
        "/usage?group_by=colour",
        "/usage?from=yesterday",
        "/usage?from=2026-01-01&to=2025-01-01",
    ] {
        crate::support::problem(c.send(reqwest::Method::GET, bad, None).await, 400).await;
    }
}

#[tokio::test]
async fn workflow_budgets_and_execution_maximums_are_enforced_before_the_call() {
    let providers = Providers::start().await;
    let app = App::start_engine(
        "llm-scoped-budgets",
        &[
            ("OPENAI_API_KEY", OPENAI_KEY),
            ("OPENAI_BASE_URL", &providers.base),
        ],
    )
    .await;
    let c = Client::new(&app, "t-scoped").await;
    let (admin, password) = app.user("t-scoped", &["admin"]).await;
    let (admin_token, _) = app.tokens(&admin, &password).await;
    let admin = Client {
        app: &app,
        token: admin_token,
    };
    let calls = || {
        providers
            .seen
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, _, b)| b["model"] == "gpt-4.1-mini")
            .count()
    };
    // gpt-4.1-mini here answers 12 input tokens and all of max_tokens (1000): 1,012 per call.
    // A reservation holds 7 input tokens (counted with o200k_base) plus the 1,000 of output.
    let ask = |next: Option<&str>| {
        let mut step = json!({"type": "llm", "provider": "openai", "model": "gpt-4.1-mini",
                              "prompt": "hello", "max_tokens": 1000});
        if let Some(n) = next {
            step["next"] = json!(n);
        }
        step
    };

    // A definition's budget must make sense.
    let p = crate::support::problem(
        c.send(
            reqwest::Method::POST,
            "/workflows",
            Some(json!({"name": "bad", "start": "a", "budget": {"max_usd": -1}, "steps": {"a": ask(None)}})),
        )
        .await,
        422,
    )
    .await;
    assert_eq!(p["errors"][0]["pointer"], "/budget/max_usd", "{p}");

    // Per execution: 1,500 tokens fit the first call (1,012 spent) but not a second (488 left);
    // the catch path follows and the provider is not asked.
    let capped = c
        .create(json!({"name": "capped", "start": "first", "budget": {"max_tokens": 1500}, "steps": {
            "first": ask(Some("second")),
            "second": {"type": "llm", "provider": "openai", "model": "gpt-4.1-mini", "prompt": "hello",
                       "max_tokens": 1000, "catch": [{"errors": ["BudgetExceeded"], "next": "fallback"}]},
            "fallback": {"type": "template", "template": "{{ error.message }}"}},
            "outputs": {"why": "{{ steps.fallback.output }}"}}))
        .await;
    let id = c.start(&capped, json!({})).await;
    let e = c.finished(&id).await;
    assert_eq!(e["status"], "succeeded", "{e:#}");
    let why = e["output"]["why"].as_str().unwrap();
    assert!(
        why.contains("this execution's budget has 488 tokens left"),
        "{why}"
    );
    assert_eq!(calls(), 1);
    // Each execution has its own maximum.
    let id = c.start(&capped, json!({})).await;
    c.finished(&id).await;
    assert_eq!(calls(), 2);

    // Per workflow: a monthly limit on one workflow stops it, not the others.
    let limited = c
        .create(json!({"name": "limited", "start": "a", "steps": {"a": ask(None)}}))
        .await;
    let other = c
        .create(json!({"name": "other", "start": "a", "steps": {"a": ask(None)}}))
        .await;
    let path = format!("/budgets/workflows/{limited}");
    crate::support::problem(
        c.send(
            reqwest::Method::PUT,
            &path,
            Some(json!({"monthly_tokens": 1500})),
        )
        .await,
        403,
    )
    .await;
    let r = admin
        .send(
            reqwest::Method::PUT,
            &path,
            Some(json!({"monthly_tokens": 1500})),
        )
        .await;
    assert_eq!(r.status(), 200);
    let id = c.start(&limited, json!({})).await;
    assert_eq!(c.finished(&id).await["status"], "succeeded");
    let id = c.start(&limited, json!({})).await;
    let e = c.finished(&id).await;
    assert_eq!(e["error"]["kind"], "BudgetExceeded", "{e:#}");
    assert!(
        e["error"]["message"].as_str().unwrap().contains(&format!(
            "workflow {limited}'s monthly budget has 488 tokens left"
        )),
        "{e:#}"
    );
    assert_eq!(calls(), 3);
    let id = c.start(&other, json!({})).await;
    assert_eq!(c.finished(&id).await["status"], "succeeded");
    assert_eq!(calls(), 4);
    let view = admin.get_json(&path).await;
    assert_eq!(view["spent_tokens"], 1012, "{view}");
    assert_eq!(view["available_tokens"], 488, "{view}");
    assert_eq!(view["reserved_tokens"], 0, "{view}");

    // Another tenant's workflow is not found, and unknown ones neither.
    let (stranger, password) = app.user("t-scoped-other", &["admin"]).await;
    let (stranger_token, _) = app.tokens(&stranger, &password).await;
    let stranger = Client {
        app: &app,
        token: stranger_token,
    };
    crate::support::problem(stranger.send(reqwest::Method::GET, &path, None).await, 404).await;
    crate::support::problem(
        admin
            .send(reqwest::Method::GET, "/budgets/workflows/nope", None)
            .await,
        404,
    )
    .await;
}

#[tokio::test]
async fn a_tenants_own_model_price_prices_its_calls_and_no_one_elses() {
    let providers = Providers::start().await;
    let app = App::start_engine(
        "llm-prices",
        &[
            ("OPENAI_API_KEY", OPENAI_KEY),
            ("OPENAI_BASE_URL", &providers.base),
        ],
    )
    .await;
    let (admin, password) = app.user("t-price", &["admin"]).await;
    let (token, _) = app.tokens(&admin, &password).await;
    let admin = Client { app: &app, token };
    let member = Client::new(&app, "t-price").await;
    let neighbour = Client::new(&app, "t-price-neighbour").await;
    let def = json!({"name": "ask", "start": "ask", "steps": {
        "ask": {"type": "llm", "provider": "openai", "model": "gpt-4o-mini", "prompt": "hello", "max_tokens": 8}}});
    // The double answers 12 input and 5 output tokens.
    let list_price = (12.0 * 0.15 + 5.0 * 0.6) / 1e6;
    let path = "/prices/openai/gpt-4o-mini";

    // Admins only; bad prices and unknown providers are refused.
    crate::support::problem(
        member
            .send(
                reqwest::Method::PUT,
                path,
                Some(json!({"input_usd_per_mtok": 1, "output_usd_per_mtok": 1})),
            )
            .await,
        403,
    )
    .await;
    let p = crate::support::problem(
        admin
            .send(
                reqwest::Method::PUT,
                path,
                Some(json!({"input_usd_per_mtok": -1, "output_usd_per_mtok": 1})),
            )
            .await,
        422,
    )
    .await;
    assert!(
        p["detail"].as_str().unwrap().contains("input_usd_per_mtok"),
        "{p}"
    );
    crate::support::problem(
        admin
            .send(
                reqwest::Method::PUT,
                "/prices/acme/gpt-4o-mini",
                Some(json!({"input_usd_per_mtok": 1, "output_usd_per_mtok": 1})),
            )
            .await,
        422,
    )
    .await;

    let r = admin
        .send(
            reqwest::Method::PUT,
            path,
            Some(json!({"input_usd_per_mtok": 10.0, "output_usd_per_mtok": 20.0})),
        )
        .await;
    assert_eq!(r.status(), 200);
    let listed = member.get_json("/prices").await;
    let find = |listed: &Value, provider: &str, model: &str| {
        listed["prices"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["provider"] == provider && p["model"] == model)
            .cloned()
            .unwrap()
    };
    let own = find(&listed, "openai", "gpt-4o-mini");
    assert_eq!(
        (own["source"].as_str(), own["input_usd_per_mtok"].as_f64()),
        (Some("tenant"), Some(10.0))
    );
    assert_eq!(find(&listed, "openai", "gpt-4o")["source"], "global");
    let theirs = find(
        &neighbour.get_json("/prices").await,
        "openai",
        "gpt-4o-mini",
    );
    assert_eq!(theirs["source"], "global");

    // Paying less than list takes the operator's billing role, which no tenant can grant.
    let cheaper = json!({"input_usd_per_mtok": 0.01, "output_usd_per_mtok": 0.01});
    let p = crate::support::problem(
        admin
            .send(reqwest::Method::PUT, path, Some(cheaper.clone()))
            .await,
        403,
    )
    .await;
    assert_eq!(
        p["type"].as_str().map(|t| t.ends_with("price-below-list")),
        Some(true),
        "{p}"
    );
    // Not around the rule either: a snapshot's name is priced as its model's.
    crate::support::problem(
        admin
            .send(
                reqwest::Method::PUT,
                "/prices/openai/gpt-4o-mini-2024-07-18",
                Some(json!({"input_usd_per_mtok": 0, "output_usd_per_mtok": 0})),
            )
            .await,
        403,
    )
    .await;
    crate::support::problem(
        admin
            .send(
                reqwest::Method::PUT,
                path,
                Some(json!({"input_usd_per_mtok": 1.7e308, "output_usd_per_mtok": 1})),
            )
            .await,
        422,
    )
    .await;
    let r = admin
        .send(
            reqwest::Method::POST,
            "/auth/users",
            Some(json!({"username": "wannabe-billing", "password": "pw-0123456789-abc", "roles": ["billing"]})),
        )
        .await;
    crate::support::problem(r, 422).await;
    let (billing, password) = app.user("t-price-billing", &["admin", "billing"]).await;
    let (token, _) = app.tokens(&billing, &password).await;
    let billing = Client { app: &app, token };
    let r = billing
        .send(reqwest::Method::PUT, path, Some(cheaper))
        .await;
    assert_eq!(r.status(), 200);

    let own_price = (12.0 * 10.0 + 5.0 * 20.0) / 1e6;
    assert!((cost_of_a_run(&member, &def).await - own_price).abs() < 1e-12);
    assert!((cost_of_a_run(&neighbour, &def).await - list_price).abs() < 1e-12);

    // Removing it restores the list price.
    let r = admin.send(reqwest::Method::DELETE, path, None).await;
    assert_eq!(r.status(), 204);
    crate::support::problem(admin.send(reqwest::Method::DELETE, path, None).await, 404).await;
    assert!((cost_of_a_run(&member, &def).await - list_price).abs() < 1e-12);
}

/// Runs `def` once as `c` and returns the execution's cost.
async fn cost_of_a_run(c: &Client<'_>, def: &Value) -> f64 {
    let wf = c.create(def.clone()).await;
    let id = c.start(&wf, json!({})).await;
    let e = c.finished(&id).await;
    assert_eq!(e["status"], "succeeded", "{e:#}");
    e["cost_usd"].as_f64().unwrap()
}

#[tokio::test]
async fn money_is_never_counted_as_free() {
    let providers = Providers::start().await;
    let app = App::start_engine(
        "llm-money",
        &[
            ("OPENAI_API_KEY", OPENAI_KEY),
            ("OPENAI_BASE_URL", &providers.base),
        ],
    )
    .await;
    let tenant = "t-money";
    let (admin, password) = app.user(tenant, &["admin"]).await;
    let (token, _) = app.tokens(&admin, &password).await;
    let admin = Client { app: &app, token };
    let run = async |model: &str, max_tokens: u64| {
        let wf = admin
            .create(json!({"name": "ask", "start": "ask", "steps": {
                "ask": {"type": "llm", "provider": "openai", "model": model, "prompt": "hello", "max_tokens": max_tokens}}}))
            .await;
        let id = admin.start(&wf, json!({})).await;
        admin.finished(&id).await
    };

    // Before any budget: a dated snapshot is priced as its model, and reasoning models get
    // max_completion_tokens.
    let e = run("gpt-4o-2024-08-06", 8).await;
    assert_eq!(e["status"], "succeeded", "{e:#}");
    let expected = (12.0 * 2.5 + 5.0 * 10.0) / 1e6;
    assert!(
        (e["cost_usd"].as_f64().unwrap() - expected).abs() < 1e-12,
        "{e:#}"
    );
    let e = run("o3-mini", 8).await;
    assert_eq!(e["status"], "succeeded", "{e:#}");
    let sent = providers
        .seen
        .lock()
        .unwrap()
        .iter()
        .rev()
        .find(|(_, _, b)| b["model"] == "o3-mini")
        .map(|(_, _, b)| b.clone())
        .unwrap();
    assert_eq!(sent["max_completion_tokens"], 8, "{sent}");
    assert!(sent.get("max_tokens").is_none(), "{sent}");

    // A budget set now starts from what the month already spent (the usage ledger).
    let usage: Value = admin.get_json("/usage").await;
    let r = admin
        .send(
            reqwest::Method::PUT,
            "/budgets",
            Some(json!({"monthly_usd": 5.0, "monthly_tokens": 100000})),
        )
        .await;
    assert_eq!(r.status(), 200);
    let budget: Value = admin.get_json("/budgets").await;
    let ledger_tokens = usage["total"]["input_tokens"].as_u64().unwrap()
        + usage["total"]["output_tokens"].as_u64().unwrap();
    assert_eq!(
        budget["spent_tokens"], ledger_tokens,
        "{budget:#} vs {usage:#}"
    );
    assert_eq!(
        budget["available_tokens"],
        100000 - ledger_tokens,
        "{budget:#}"
    );

    // Under a USD budget, a model without a price is refused before the call.
    let calls_before = providers.seen.lock().unwrap().len();
    let e = run("unpriced-model", 8).await;
    assert_eq!(e["status"], "failed", "{e:#}");
    assert_eq!(e["error"]["kind"], "ModelUnpriced", "{e:#}");
    assert!(
        e["error"]["message"]
            .as_str()
            .unwrap()
            .contains("openai/unpriced-model"),
        "{e:#}"
    );
    assert_eq!(
        providers.seen.lock().unwrap().len(),
        calls_before,
        "no call made"
    );

    // An answer that reports no usage counts as its reservation, not as zero.
    let before: Value = admin.get_json("/budgets").await;
    admin
        .send(
            reqwest::Method::PUT,
            "/prices/openai/no-usage",
            Some(json!({"input_usd_per_mtok": 1.0, "output_usd_per_mtok": 1.0})),
        )
        .await;
    let e = run("no-usage", 50).await;
    assert_eq!(e["status"], "succeeded", "{e:#}");
    let tokens = e["input_tokens"].as_u64().unwrap() + e["output_tokens"].as_u64().unwrap();
    assert!(e["output_tokens"].as_u64().unwrap() == 50, "{e:#}");
    let after: Value = admin.get_json("/budgets").await;
    assert_eq!(
        after["spent_tokens"].as_u64().unwrap() - before["spent_tokens"].as_u64().unwrap(),
        tokens,
        "{after:#}"
    );
}
