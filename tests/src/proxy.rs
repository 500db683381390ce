//! For benchmarks: a counting proxy between functions and moto (every DynamoDB call counted by
//! operation, `X-Amz-Target`, with its milliseconds under `ms:<operation>`), and a peer that answers
//! at once.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, Uri};
use axum::response::IntoResponse;

pub type Counts = Arc<Mutex<BTreeMap<String, u64>>>;

pub const READS: [&str; 5] = [
    "GetItem",
    "Query",
    "Scan",
    "BatchGetItem",
    "TransactGetItems",
];
pub const WRITES: [&str; 5] = [
    "PutItem",
    "UpdateItem",
    "DeleteItem",
    "TransactWriteItems",
    "BatchWriteItem",
];

#[derive(Clone)]
struct Proxy {
    upstream: String,
    client: reqwest::Client,
    counts: Counts,
    /// Prices each call in request units (the cost benchmark); off for the other benchmarks,
    /// whose timings it would distort.
    meter: Option<crate::meter::Meter>,
}

async fn forward(
    State(p): State<Proxy>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> impl IntoResponse {
    let target = headers
        .get("x-amz-target")
        .and_then(|v| v.to_str().ok())
        .map(|t| t.rsplit('.').next().unwrap_or(t).to_owned())
        .unwrap_or_else(|| "other".into());
    *p.counts.lock().unwrap().entry(target.clone()).or_default() += 1;
    let metered = match &p.meter {
        Some(m) => {
            let request: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
            let pending = m.before(&headers, &target, &request).await;
            Some((m, request, pending))
        }
        None => None,
    };
    let started = Instant::now();
    let mut req = p.client.request(
        method,
        format!(
            "{}{}",
            p.upstream,
            uri.path_and_query().map(|x| x.as_str()).unwrap_or("/")
        ),
    );
    for (k, v) in &headers {
        if k != "host" && k != "content-length" {
            req = req.header(k, v);
        }
    }
    let r = req.body(body).send().await.unwrap();
    let status = r.status();
    let mut out = HeaderMap::new();
    for (k, v) in r.headers() {
        if k != "content-length" && k != "transfer-encoding" {
            out.insert(k, v.clone());
        }
    }
    let bytes = r.bytes().await.unwrap();
    let ms = started.elapsed().as_millis() as u64;
    *p.counts
        .lock()
        .unwrap()
        .entry(format!("ms:{target}"))
        .or_default() += ms;
    if let Some((m, request, pending)) = metered {
        m.after(&headers, pending, &request, status.as_u16(), &bytes, ms)
            .await;
    }
    (status, out, bytes)
}

/// Starts a proxy to `upstream` on a free loopback port: its URL and the counts it keeps.
pub async fn start(upstream: String) -> (String, Counts) {
    start_with(upstream, None).await
}

/// [`start`], also pricing every call in request units by function (`crate::meter`).
pub async fn start_metered(upstream: String) -> (String, Counts, crate::meter::Ledger) {
    let meter = crate::meter::Meter::new(upstream.clone());
    let ledger = meter.ledger.clone();
    let (url, counts) = start_with(upstream, Some(meter)).await;
    (url, counts, ledger)
}

async fn start_with(upstream: String, meter: Option<crate::meter::Meter>) -> (String, Counts) {
    let counts: Counts = Default::default();
    let proxy = Proxy {
        upstream,
        client: reqwest::Client::new(),
        counts: counts.clone(),
        meter,
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        axum::serve(
            listener,
            axum::Router::new().fallback(forward).with_state(proxy),
        )
        .await
        .unwrap()
    });
    (url, counts)
}

/// Reads and writes among `counts`.
pub fn reads_writes(counts: &BTreeMap<String, u64>) -> (u64, u64) {
    let sum = |ops: &[&str]| {
        ops.iter()
            .map(|o| counts.get(*o).copied().unwrap_or(0))
            .sum::<u64>()
    };
    (sum(&READS), sum(&WRITES))
}

async fn echo(body: Bytes) -> Bytes {
    body
}

/// An OpenAI-compatible answer, at once: what remains of an `llm` step's time is the engine's.
async fn chat(axum::Json(body): axum::Json<serde_json::Value>) -> axum::Json<serde_json::Value> {
    axum::Json(serde_json::json!({
        "id": "c", "object": "chat.completion", "model": body["model"],
        "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": "ok"}}],
        "usage": {"prompt_tokens": 10, "completion_tokens": 2, "total_tokens": 12}
    }))
}

/// The peer benchmarks call: `POST /echo` answers its body, `POST /v1/chat/completions` answers
/// like OpenAI, both at once. Returns its base URL.
pub async fn start_peer() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        axum::serve(
            listener,
            axum::Router::new()
                .route("/echo", axum::routing::post(echo))
                .route("/v1/chat/completions", axum::routing::post(chat)),
        )
        .await
        .unwrap()
    });
    base
}
