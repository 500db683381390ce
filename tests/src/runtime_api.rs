//! A wire-compatible Lambda Runtime API (the 2018-06-01 interface `lambda_runtime` polls), so a
//! function's own binary can be run the way Lambda runs it: the smoke tests hand it one event, the
//! cold-start benchmark times its init (process start to its first `GET .../invocation/next`, which
//! is where Lambda's "Init Duration" ends) and reads its memory.
//!
//! One emulator per process: a poll held open by a killed process must not take the next event.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::routing::{get, post};
use axum::Router;
use serde_json::Value;
use tokio::sync::{mpsc, Mutex, Notify};

/// What the function reported for an invocation (or for its init).
#[derive(Debug, Clone)]
pub struct Report {
    /// `<request id>/response`, `<request id>/error` or `init/error`.
    pub what: String,
    pub payload: Value,
    pub at: Instant,
}

#[derive(Clone)]
struct Shared {
    queue: Arc<Mutex<VecDeque<(String, Value)>>>,
    pushed: Arc<Notify>,
    polls: mpsc::UnboundedSender<Instant>,
    reports: mpsc::UnboundedSender<Report>,
    function_arn: String,
}

pub struct RuntimeApi {
    addr: SocketAddr,
    shared: Shared,
    polls: mpsc::UnboundedReceiver<Instant>,
    reports: mpsc::UnboundedReceiver<Report>,
    next_id: u64,
    server: tokio::task::JoinHandle<()>,
}

impl RuntimeApi {
    /// Listens on a free loopback port; `function` names the ARN handed with each event.
    pub async fn start(function: &str) -> std::io::Result<Self> {
        let (poll_tx, polls) = mpsc::unbounded_channel();
        let (report_tx, reports) = mpsc::unbounded_channel();
        let shared = Shared {
            queue: Arc::default(),
            pushed: Arc::default(),
            polls: poll_tx,
            reports: report_tx,
            function_arn: format!("arn:aws:lambda:us-east-1:123456789012:function:{function}"),
        };
        let api = Router::new()
            .route("/2018-06-01/runtime/invocation/next", get(next))
            .route("/2018-06-01/runtime/invocation/{id}/{kind}", post(report))
            .route("/2018-06-01/runtime/init/error", post(init_error))
            .with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, api).await;
        });
        Ok(Self {
            addr,
            shared,
            polls,
            reports,
            next_id: 0,
            server,
        })
    }

    /// The value for `AWS_LAMBDA_RUNTIME_API`.
    pub fn address(&self) -> String {
        self.addr.to_string()
    }

    /// Queues an event; returns the request id it will be handed with.
    pub async fn push(&mut self, event: Value) -> String {
        self.next_id += 1;
        let id = format!("invoke-{}", self.next_id);
        self.shared
            .queue
            .lock()
            .await
            .push_back((id.clone(), event));
        self.shared.pushed.notify_one();
        id
    }

    /// When the function next asked for work (its init is over at the first such poll).
    pub async fn next_poll(&mut self, within: Duration) -> Option<Instant> {
        tokio::time::timeout(within, self.polls.recv())
            .await
            .ok()
            .flatten()
    }

    /// The next response or error the function reported.
    pub async fn next_report(&mut self, within: Duration) -> Option<Report> {
        tokio::time::timeout(within, self.reports.recv())
            .await
            .ok()
            .flatten()
    }
}

impl Drop for RuntimeApi {
    fn drop(&mut self) {
        self.server.abort();
    }
}

async fn next(State(rt): State<Shared>) -> (HeaderMap, String) {
    let _ = rt.polls.send(Instant::now());
    // No work: hold the poll open, as Lambda does between invocations.
    let (id, event) = loop {
        let notified = rt.pushed.notified();
        if let Some(item) = rt.queue.lock().await.pop_front() {
            break item;
        }
        notified.await;
    };
    let mut headers = HeaderMap::new();
    let deadline = chrono::Utc::now().timestamp_millis() + 30_000;
    for (name, value) in [
        ("lambda-runtime-aws-request-id", id),
        ("lambda-runtime-deadline-ms", deadline.to_string()),
        (
            "lambda-runtime-invoked-function-arn",
            rt.function_arn.clone(),
        ),
        (
            "lambda-runtime-trace-id",
            "Root=1-5e9f0c65-1de4d666d4dd26aced652b6c".to_owned(),
        ),
    ] {
        if let Ok(value) = value.parse() {
            headers.insert(name, value);
        }
    }
    (headers, event.to_string())
}

async fn report(
    State(rt): State<Shared>,
    Path((id, kind)): Path<(String, String)>,
    body: String,
) -> &'static str {
    let _ = rt.reports.send(Report {
        what: format!("{id}/{kind}"),
        payload: serde_json::from_str(&body).unwrap_or(Value::String(body)),
        at: Instant::now(),
    });
    "{}"
}

async fn init_error(State(rt): State<Shared>, body: String) -> &'static str {
    let _ = rt.reports.send(Report {
        what: "init/error".into(),
        payload: Value::String(body),
        at: Instant::now(),
    });
    "{}"
}

/// The environment Lambda gives every function, beside its own variables, plus the local stack's
/// endpoint and throwaway credentials (no metrics lines in the output).
pub fn lambda_env(api: &RuntimeApi, function: &str, memory_mb: u64) -> Vec<(String, String)> {
    [
        ("AWS_LAMBDA_RUNTIME_API", api.address()),
        ("AWS_LAMBDA_FUNCTION_NAME", function.to_owned()),
        ("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", memory_mb.to_string()),
        ("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST".to_owned()),
        ("AWS_ENDPOINT_URL", crate::endpoint::endpoint_url()),
        ("AWS_REGION", "us-east-1".to_owned()),
        ("AWS_ACCESS_KEY_ID", "local".to_owned()),
        ("AWS_SECRET_ACCESS_KEY", "local".to_owned()),
        ("METRICS", "off".to_owned()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect()
}

/// Peak and current resident memory of a process, from `/proc/<pid>/status` (Linux), in KiB:
/// what Lambda reports as "Max Memory Used" is the peak.
pub fn memory_kib(pid: u32) -> Option<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|n| n.parse::<u64>().ok())
    };
    Some((field("VmHWM:")?, field("VmRSS:")?))
}
