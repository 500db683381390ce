//! Fixtures: stacks of tables created from the SAM template on moto.

use std::sync::atomic::{AtomicU32, Ordering};

use aws_config::SdkConfig;
use shared::config::Tables;
use wfe_local::endpoint::{create_tables, sdk_config};
use wfe_local::template::Template;

/// A set of the template's tables under one stack name.
pub struct Stack {
    pub sdk: SdkConfig,
    pub dynamodb: aws_sdk_dynamodb::Client,
    pub tables: Tables,
}

impl Stack {
    /// The tables shared by tests that isolate themselves by tenant; one set per test process.
    pub async fn shared() -> Self {
        Self::named(&format!("e2e-shared-{}", std::process::id())).await
    }

    /// Fresh, empty tables for tests that need a table to themselves (ledgers, streams).
    pub async fn fresh(purpose: &str) -> Self {
        static N: AtomicU32 = AtomicU32::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        Self::named(&format!("e2e-{purpose}-{}-{n}", std::process::id())).await
    }

    /// A reader of the events table's stream, from its start.
    pub async fn events_stream(&self) -> wfe_local::streams::StreamReader {
        let arn = wfe_local::streams::stream_arn(&self.dynamodb, &self.tables.events)
            .await
            .expect("events table has a stream");
        wfe_local::streams::StreamReader::from_start(
            aws_sdk_dynamodbstreams::Client::new(&self.sdk),
            &arn,
        )
        .await
        .expect("stream reader")
    }

    async fn named(stack: &str) -> Self {
        let sdk = sdk_config().await;
        let dynamodb = aws_sdk_dynamodb::Client::new(&sdk);
        let template = Template::workspace(stack).expect("template");
        create_tables(&dynamodb, &template).await.expect("tables");
        Self {
            tables: template.tables().expect("tables from template"),
            sdk,
            dynamodb,
        }
    }
}

/// The HTTP functions of the template served by the local runner on a random port, over a fresh
/// stack (tables, secret, migrations) of their own.
pub struct App {
    pub base: String,
    pub http: reqwest::Client,
    pub template: wfe_local::template::Template,
    pub sdk: SdkConfig,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    /// Each user's tenant, so that tests log in by name (a login names both).
    tenants: std::sync::Mutex<std::collections::HashMap<String, String>>,
}

impl App {
    pub async fn start(purpose: &str, overrides: &[(&str, &str)]) -> Self {
        static N: AtomicU32 = AtomicU32::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let stack = format!("e2e-{purpose}-{}-{n}", std::process::id());
        let sdk = sdk_config().await;
        Self::start_on(sdk, &stack, overrides).await
    }

    pub async fn start_on(sdk: SdkConfig, stack: &str, overrides: &[(&str, &str)]) -> Self {
        use wfe_local::runner;
        let template = runner::provision(&sdk, stack).await.expect("provision");
        runner::migrate(&sdk, &template).await.expect("migrate");
        let mut env: std::collections::BTreeMap<String, String> = [
            ("RATE_LIMIT_REQUESTS", "100000"),
            ("CORS_ORIGINS", "http://localhost:5173"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        env.extend(
            overrides
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string())),
        );
        let app = runner::http_app(&template, &sdk, &env).await.expect("app");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(runner::serve(listener, app, async {
            let _ = stopped.await;
        }));
        Self {
            base,
            http: reqwest::Client::new(),
            template,
            sdk,
            stop: Some(stop),
            tasks: Vec::new(),
            tenants: Default::default(),
        }
    }

    /// The whole product: HTTP functions plus the stream functions (orchestrator, worker) and
    /// the timer, as the local runner runs them. `http` steps may call loopback test servers.
    pub async fn start_engine(purpose: &str, overrides: &[(&str, &str)]) -> Self {
        let mut all = vec![
            ("HTTP_ALLOW_PRIVATE_NETWORKS", "true"),
            ("TIMER_PERIOD_MS", "200"),
        ];
        all.extend_from_slice(overrides);
        let mut app = Self::start(purpose, &all).await;
        let env: std::collections::BTreeMap<String, String> = all
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .chain([("RATE_LIMIT_REQUESTS".to_owned(), "100000".to_owned())])
            .collect();
        let mut tasks = wfe_local::runner::spawn_streams(&app.template, &app.sdk, &env)
            .await
            .expect("stream functions");
        tasks.extend(
            wfe_local::runner::spawn_schedules(&app.template, &app.sdk, &env)
                .await
                .expect("scheduled functions"),
        );
        app.tasks = tasks;
        app
    }

    /// `GET path` with `token` as the bearer.
    pub async fn get_as(&self, path: &str, token: &str) -> reqwest::Response {
        self.http
            .get(self.url(path))
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub fn store(&self) -> shared::auth::AuthStore {
        shared::auth::AuthStore::new(
            aws_sdk_dynamodb::Client::new(&self.sdk),
            self.template.tables().unwrap().state,
        )
    }

    /// Every stored event of `stream`, read straight from the events table.
    pub async fn events(&self, stream: &shared::events::StreamId) -> Vec<shared::events::Envelope> {
        let tables = self.template.tables().unwrap();
        let store = shared::events::DynamoEventStore::new(
            aws_sdk_dynamodb::Client::new(&self.sdk),
            shared::events::EventTables {
                events: tables.events,
                state: tables.state,
            },
            Default::default(),
        );
        shared::events::EventStore::read_from(&store, stream, 1)
            .await
            .unwrap()
    }

    /// A user created straight in the store (the operator's path), with a unique name.
    pub async fn user(&self, tenant: &str, roles: &[&str]) -> (String, String) {
        let name = format!("u{}", uuid::Uuid::new_v4().simple());
        let password = format!("pw-{}", uuid::Uuid::new_v4().simple());
        auth::create(
            &self.store(),
            &name,
            &password,
            tenant,
            roles.iter().map(|r| r.to_string()).collect(),
        )
        .await
        .unwrap();
        self.remember(&name, tenant);
        (name, password)
    }

    /// Notes a user's tenant (for users created through the API).
    pub fn remember(&self, name: &str, tenant: &str) {
        self.tenants
            .lock()
            .unwrap()
            .insert(name.to_owned(), tenant.to_owned());
    }

    /// Logs in as `name` in the tenant it was created in (an unknown name in a tenant of none).
    pub async fn login(&self, name: &str, password: &str) -> reqwest::Response {
        let tenant = self.tenants.lock().unwrap().get(name).cloned();
        let tenant = tenant.unwrap_or_else(|| "t-no-such-tenant".to_owned());
        self.login_in(&tenant, name, password).await
    }

    pub async fn login_in(&self, tenant: &str, name: &str, password: &str) -> reqwest::Response {
        self.http
            .post(self.url("/auth/login"))
            .json(&serde_json::json!({"tenant": tenant, "username": name, "password": password}))
            .send()
            .await
            .unwrap()
    }

    /// Logs in and returns (access token, refresh token).
    pub async fn tokens(&self, name: &str, password: &str) -> (String, String) {
        let r = self.login(name, password).await;
        assert_eq!(r.status(), 200);
        let body: serde_json::Value = r.json().await.unwrap();
        (
            body["access_token"].as_str().unwrap().to_owned(),
            body["refresh_token"].as_str().unwrap().to_owned(),
        )
    }

    /// The JWT keys the deployment signs with (read from its secret), to forge test tokens.
    pub async fn keys(&self) -> shared::auth::JwtKeys {
        let env = self.template.function_env("AuthFunction").unwrap();
        let secret = aws_sdk_secretsmanager::Client::new(&self.sdk)
            .get_secret_value()
            .secret_id(&env["JWT_SECRET_ARN"])
            .send()
            .await
            .unwrap()
            .secret_string
            .unwrap();
        shared::auth::JwtKeys::new(&secret, &[]).unwrap()
    }
}

impl Drop for App {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// Asserts a problem+json answer with `status` and returns its body.
pub async fn problem(response: reqwest::Response, status: u16) -> serde_json::Value {
    assert_eq!(response.status().as_u16(), status, "status");
    assert_eq!(
        response.headers()["content-type"].to_str().unwrap(),
        "application/problem+json"
    );
    assert!(response.headers().contains_key("x-request-id"));
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["status"], status);
    assert!(body["type"].as_str().unwrap().starts_with("https://"));
    assert!(body["title"].is_string() && body["detail"].is_string());
    assert!(body["request_id"].is_string(), "{body}");
    body
}

/// Log lines written by everything in this test process, as JSON the way the functions log in
/// production (for tests that scan logs for secrets). Installed once, as the process's subscriber.
pub fn captured_logs() -> std::sync::Arc<std::sync::Mutex<Vec<u8>>> {
    static LOGS: std::sync::OnceLock<std::sync::Arc<std::sync::Mutex<Vec<u8>>>> =
        std::sync::OnceLock::new();
    LOGS.get_or_init(|| {
        let buffer = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = buffer.clone();
        tracing_subscriber::fmt()
            .json()
            .flatten_event(true)
            .with_env_filter(tracing_subscriber::EnvFilter::new(
                "info,shared=debug,worker=debug,orchestrator=debug",
            ))
            .with_writer(move || Sink(sink.clone()))
            .try_init()
            .expect("no other subscriber in the test process");
        buffer
    })
    .clone()
}

struct Sink(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Sink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// One forced-conflict rule of the strict local stack (`scripts/moto_server.py`): transactions
/// touching a matching key are cancelled with `TransactionConflict`, as AWS cancels transactions
/// that overlap on a hot item. Rules of concurrent tests coexist; each removes its own.
pub struct ForcedConflicts {
    url: String,
    http: reqwest::Client,
}

impl ForcedConflicts {
    /// `rule`: `{"table", "key_contains", "probability", "count", "hold_ms"}`.
    pub async fn add(rule: serde_json::Value) -> Self {
        let http = reqwest::Client::new();
        let base = wfe_local::endpoint::endpoint_url();
        let r = http
            .post(format!("{base}/_strict/conflicts/rules"))
            .json(&rule)
            .send()
            .await
            .expect("the strict local stack answers");
        assert_eq!(r.status(), 200, "rule refused: {}", r.text().await.unwrap());
        let body: serde_json::Value = r.json().await.unwrap();
        let id = body["id"]
            .as_str()
            .map_or_else(|| body["id"].to_string(), str::to_owned);
        Self {
            url: format!("{base}/_strict/conflicts/rules/{id}"),
            http,
        }
    }

    /// Removes the rule and returns its final counters.
    pub async fn remove(self) -> serde_json::Value {
        self.http
            .delete(&self.url)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }
}
