//! The local runner: the template's resources on moto, and its functions served the way API
//! Gateway and EventBridge would run them.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use aws_config::SdkConfig;
use axum::extract::{MatchedPath, Request};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::Router;
use serde_json::json;
use shared::config::Config;
use shared::migrate::Migrator;

use crate::endpoint::create_tables;
use crate::template::Template;

/// Creates the template's tables and secrets on the local stack; the returned template resolves
/// `!Ref` of a secret to its ARN.
pub async fn provision(sdk: &SdkConfig, stack: &str) -> Result<Template, String> {
    let mut template = Template::workspace(stack).map_err(|e| e.to_string())?;
    create_tables(&aws_sdk_dynamodb::Client::new(sdk), &template).await?;
    let secrets = aws_sdk_secretsmanager::Client::new(sdk);
    for id in template.resource_ids("AWS::SecretsManager::Secret") {
        let props = template.properties(&id).map_err(|e| e.to_string())?;
        let name = props["Name"].as_str().unwrap_or(&id).to_owned();
        let arn = ensure_secret(&secrets, &name).await?;
        template.set_physical(&id, arn);
    }
    Ok(template)
}

/// The template's SQS queue `id` on moto (created if missing).
pub async fn failure_queue(
    template: &Template,
    sdk: &SdkConfig,
    id: &str,
) -> Result<crate::failures::FailureQueue, String> {
    let props = template.properties(id).map_err(|e| e.to_string())?;
    let name = props["QueueName"].as_str().unwrap_or(id).to_owned();
    crate::failures::FailureQueue::ensure(sdk, &name).await
}

/// A generated value, as `GenerateSecretString` would make at deploy time: never a default.
async fn ensure_secret(
    client: &aws_sdk_secretsmanager::Client,
    name: &str,
) -> Result<String, String> {
    if let Ok(found) = client.describe_secret().secret_id(name).send().await {
        return found.arn.ok_or_else(|| format!("secret {name} has no ARN"));
    }
    let value = format!(
        "{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    );
    client
        .create_secret()
        .name(name)
        .secret_string(value)
        .send()
        .await
        .map_err(|e| {
            format!(
                "creating secret {name}: {}",
                aws_sdk_secretsmanager::error::DisplayErrorContext(e)
            )
        })?
        .arn
        .ok_or_else(|| format!("secret {name} has no ARN"))
}

/// Applies every pending migration (what `AUTO_MIGRATE=true` does at local start).
pub async fn migrate(
    sdk: &SdkConfig,
    template: &Template,
) -> Result<shared::migrate::Report, String> {
    let tables = template.tables().map_err(|e| e.to_string())?;
    let migrations = migrator::embedded().map_err(|e| e.to_string())?;
    Box::pin(Migrator::new(aws_sdk_dynamodb::Client::new(sdk), tables).up(&migrations, None))
        .await
        .map_err(|e| e.to_string())
}

/// A function's configuration: its template environment, overridden by `overrides` (the
/// runner's own environment, so a developer can set `RATE_LIMIT_REQUESTS`, `PORT`, ...).
pub fn function_config(
    template: &Template,
    function: &str,
    overrides: &BTreeMap<String, String>,
) -> Result<Config, String> {
    let mut env = template.function_env(function).map_err(|e| e.to_string())?;
    // moto has no working Bedrock: here it is on only with an endpoint that speaks Converse.
    if !overrides.contains_key("BEDROCK_ENDPOINT_URL") && env.contains_key("BEDROCK_ENABLED") {
        env.insert("BEDROCK_ENABLED".into(), "false".into());
    }
    env.extend(overrides.clone());
    Config::from_sources(env.into_iter().collect(), None).map_err(|e| e.to_string())
}

/// `sdk` naming the function in its User-Agent (`app/<logical id>`), as each Lambda function has
/// its own clients: the counting proxy attributes DynamoDB calls to functions by it.
pub fn function_sdk(sdk: &SdkConfig, id: &str) -> SdkConfig {
    match aws_config::AppName::new(id.to_owned()) {
        Ok(name) => sdk.to_builder().app_name(name).build(),
        Err(_) => sdk.clone(),
    }
}

async fn function_app(
    id: &str,
    config: &Config,
    sdk: &SdkConfig,
    started: Instant,
) -> Result<Router, String> {
    let sdk = &function_sdk(sdk, id);
    match id {
        "AuthFunction" => auth::app(config, sdk).await,
        "HealthFunction" => health::app(config, sdk, started),
        "WorkflowsFunction" => workflows::app(config, sdk).await,
        "ExecutionsFunction" => executions::app(config, sdk).await,
        "UsageFunction" => usage::app(config, sdk).await,
        "McpFunction" => mcp::app(config, sdk).await,
        "SecretsFunction" => secrets::app(config, sdk).await,
        "GraphqlFunction" => graphql::app(config, sdk).await,
        other => Err(format!("the local runner does not know how to run {other}")),
    }
}

/// Every HTTP function of the template on one router, each with its own configuration and its
/// own layers, plus the shared edge (request ids, CORS, metrics, 404) and a one-line log per call.
pub async fn http_app(
    template: &Template,
    sdk: &SdkConfig,
    overrides: &BTreeMap<String, String>,
) -> Result<Router, String> {
    let started = Instant::now();
    let mut router = Router::new();
    let mut cors = Vec::new();
    for id in template.http_functions() {
        let config = function_config(template, &id, overrides)?;
        cors = config.server().map_err(|e| e.to_string())?.cors_origins;
        let app = function_app(&id, &config, sdk, started)
            .await
            .map_err(|e| format!("{id}: {e}"))?;
        let name = id.clone();
        router = router.merge(app.layer(middleware::from_fn(move |req, next| {
            log_invocation(name.clone(), req, next)
        })));
    }
    Ok(shared::http::edge_layers(router, &cors))
}

/// One line per invocation: function, method, route, status, duration.
async fn log_invocation(function: String, req: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = req.method().clone();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_default();
    let response = next.run(req).await;
    tracing::info!(
        function = %function,
        method = %method,
        route = %route,
        status = response.status().as_u16(),
        ms = started.elapsed().as_millis() as u64,
        "invoke"
    );
    response
}

/// Serves `app` on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: tokio::net::TcpListener,
    app: Router,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown)
    .await
}

/// An EventBridge scheduled event, as a `Schedule` rule delivers it.
pub fn scheduled_event(stack: &str, function: &str) -> serde_json::Value {
    json!({
        "version": "0",
        "id": uuid::Uuid::new_v4().to_string(),
        "detail-type": "Scheduled Event",
        "source": "aws.events",
        "account": "123456789012",
        "time": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        "region": "us-east-1",
        "resources": [format!("arn:aws:events:us-east-1:123456789012:rule/{stack}-{function}-schedule")],
        "detail": {}
    })
}

/// What a scheduled function does on one tick; its result is logged.
type Tick = std::sync::Arc<
    dyn Fn() -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<String, String>> + Send>>
        + Send
        + Sync,
>;

/// The scheduled functions of the template (migrator, timer), as ticks.
async fn scheduled_function(
    id: &str,
    template: &Template,
    sdk: &SdkConfig,
    overrides: &BTreeMap<String, String>,
) -> Result<Tick, String> {
    let sdk = &function_sdk(sdk, id);
    match id {
        "MigratorFunction" => {
            let tables = template.tables().map_err(|e| e.to_string())?;
            let migrations = std::sync::Arc::new(migrator::embedded().map_err(|e| e.to_string())?);
            let runner =
                std::sync::Arc::new(Migrator::new(aws_sdk_dynamodb::Client::new(sdk), tables));
            let stack = template.stack().to_owned();
            Ok(std::sync::Arc::new(move || {
                let (runner, migrations, stack) =
                    (runner.clone(), migrations.clone(), stack.clone());
                Box::pin(async move {
                    let event = serde_json::from_value(scheduled_event(&stack, "MigratorFunction"))
                        .map_err(|e| e.to_string())?;
                    migrator::handle(&runner, &migrations, event)
                        .await
                        .map(|r| format!("applied {:?}", r.applied))
                })
            }))
        }
        "TimerFunction" => {
            let config = function_config(template, id, overrides)?;
            let handler = std::sync::Arc::new(timer::Handler::new(&config, sdk)?);
            let timeout = function_timeout(template, id);
            Ok(std::sync::Arc::new(move || {
                let handler = handler.clone();
                // As Lambda would: the invocation has the function's template timeout.
                Box::pin(async move { handler.handle(timeout).await.map(|f| format!("{f:?}")) })
            }))
        }
        other => Err(format!(
            "the local runner does not know how to run scheduled function {other}"
        )),
    }
}

/// Runs every scheduled function on its template schedule (moto's EventBridge never fires
/// schedules). `TIMER_PERIOD_MS` in `overrides` shortens the timer function's period locally,
/// so waits and back-offs resolve in seconds rather than at the cloud's one-minute granularity.
pub async fn spawn_schedules(
    template: &Template,
    sdk: &SdkConfig,
    overrides: &BTreeMap<String, String>,
) -> Result<Vec<tokio::task::JoinHandle<()>>, String> {
    let mut tasks = Vec::new();
    for id in template.resource_ids("AWS::Serverless::Function") {
        let mut periods = template.schedules(&id).map_err(|e| e.to_string())?;
        if periods.is_empty() {
            continue;
        }
        if id == "TimerFunction" {
            if let Some(ms) = overrides
                .get("TIMER_PERIOD_MS")
                .and_then(|v| v.parse().ok())
            {
                periods = vec![Duration::from_millis(ms)];
            }
        }
        let tick = scheduled_function(&id, template, sdk, overrides).await?;
        for period in periods {
            let (tick, id) = (tick.clone(), id.clone());
            tasks.push(tokio::spawn(async move {
                let period = period.max(Duration::from_millis(50));
                let mut ticks =
                    tokio::time::interval_at(tokio::time::Instant::now() + period, period);
                ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    ticks.tick().await;
                    let started = Instant::now();
                    let outcome = tick().await;
                    tracing::debug!(
                        function = %id,
                        trigger = "schedule",
                        ms = started.elapsed().as_millis() as u64,
                        outcome = ?outcome,
                        "invoke"
                    );
                }
            }));
        }
    }
    Ok(tasks)
}

/// The handler of a stream function, by logical id, configured from its template environment.
async fn stream_handler(
    function: &str,
    template: &Template,
    sdk: &SdkConfig,
    overrides: &BTreeMap<String, String>,
) -> Result<crate::esm::Handler, String> {
    let config = function_config(template, function, overrides)?;
    let timeout = function_timeout(template, function);
    let sdk = &function_sdk(sdk, function);
    let handler: crate::esm::Handler = match function {
        "OrchestratorFunction" => {
            let h = std::sync::Arc::new(orchestrator::Handler::new(&config, sdk)?);
            std::sync::Arc::new(move |event| {
                let h = h.clone();
                Box::pin(async move { Ok(h.handle(event).await) })
            })
        }
        "WorkerFunction" => {
            let h = std::sync::Arc::new(worker::Handler::new(&config, sdk).await?);
            std::sync::Arc::new(move |event| {
                let h = h.clone();
                Box::pin(async move { Ok(h.handle(event, timeout).await) })
            })
        }
        other => {
            return Err(format!(
                "the local runner does not know how to run stream function {other}"
            ))
        }
    };
    // As Lambda does: an invocation that outlives the function's `Timeout` is cut off and its
    // batch fails as a whole (and is retried).
    Ok(std::sync::Arc::new(move |event| {
        let handler = handler.clone();
        Box::pin(async move {
            tokio::time::timeout(timeout, handler(event))
                .await
                .unwrap_or_else(|_| {
                    Err(format!(
                        "Task timed out after {} seconds",
                        timeout.as_secs()
                    ))
                })
        })
    }))
}

/// Starts one event-source mapping per `DynamoDB` event in the template.
pub async fn spawn_streams(
    template: &Template,
    sdk: &SdkConfig,
    overrides: &BTreeMap<String, String>,
) -> Result<Vec<tokio::task::JoinHandle<()>>, String> {
    spawn_streams_with(template, sdk, overrides, |_, handler| handler).await
}

/// [`spawn_streams`] with each function's handler passed through `wrap` (by logical id): fault
/// injection wraps the real handlers in what Lambda can do to them (kill, redeliver).
pub async fn spawn_streams_with(
    template: &Template,
    sdk: &SdkConfig,
    overrides: &BTreeMap<String, String>,
    wrap: impl Fn(&str, crate::esm::Handler) -> crate::esm::Handler,
) -> Result<Vec<tokio::task::JoinHandle<()>>, String> {
    let dynamodb = aws_sdk_dynamodb::Client::new(sdk);
    let mut tasks = Vec::new();
    for mapping in crate::esm::mappings(template) {
        let handler = wrap(
            &mapping.function,
            stream_handler(&mapping.function, template, sdk, overrides).await?,
        );
        let table = template
            .table_name(&mapping.table)
            .map_err(|e| e.to_string())?;
        let arn = crate::streams::stream_arn(&dynamodb, &table).await?;
        let reader = crate::streams::StreamReader::from_start(
            aws_sdk_dynamodbstreams::Client::new(sdk),
            &arn,
        )
        .await?;
        let mut delivery = crate::esm::Delivery::new(mapping.clone());
        if let Some(queue) = &mapping.on_failure {
            delivery = delivery.with_failures(
                failure_queue(template, sdk, queue).await?,
                &format!(
                    "arn:aws:lambda:us-east-1:123456789012:function:{}",
                    function_name(template, &mapping.function)?
                ),
                &arn,
            );
        }
        tasks.push(tokio::spawn(crate::esm::run(
            reader,
            delivery,
            handler,
            Duration::from_millis(250),
        )));
    }
    Ok(tasks)
}

/// A function's deployed name (`FunctionName`, resolved), as its ARN ends.
fn function_name(template: &Template, id: &str) -> Result<String, String> {
    Ok(
        template.properties(id).map_err(|e| e.to_string())?["FunctionName"]
            .as_str()
            .unwrap_or(id)
            .to_owned(),
    )
}

/// `wfe-local failures [replay]`: what the stream mappings gave up on (one JSON invocation record
/// per line), or, with `replay`, each such batch delivered again to its function and removed
/// from the queue when it succeeds.
pub async fn failures(
    template: &Template,
    sdk: &SdkConfig,
    overrides: &BTreeMap<String, String>,
    replay: bool,
) -> Result<Vec<String>, String> {
    let mut lines = Vec::new();
    for mapping in crate::esm::mappings(template) {
        let Some(queue_id) = mapping.on_failure.clone() else {
            continue;
        };
        let queue = failure_queue(template, sdk, &queue_id).await?;
        let name = function_name(template, &mapping.function)?;
        let mine: Vec<_> = queue
            .list()
            .await?
            .into_iter()
            .filter(|f| f.function() == name)
            .collect();
        if !replay {
            lines.extend(mine.iter().map(|f| f.record.to_string()));
            continue;
        }
        if mine.is_empty() {
            continue;
        }
        let handler = stream_handler(&mapping.function, template, sdk, overrides).await?;
        for failure in mine {
            let records = crate::failures::records_of(sdk, &failure).await?;
            let line =
                match crate::failures::replay(&queue, &failure, records, mapping.clone(), &handler)
                    .await
                {
                    Ok(n) => format!("{}: replayed {n} records", mapping.function),
                    Err(e) => format!("{}: {e}", mapping.function),
                };
            lines.push(line);
        }
    }
    Ok(lines)
}

/// A function's `Timeout` (its own, else the template's `Globals`, else Lambda's 3 s default).
pub fn function_timeout(template: &Template, id: &str) -> Duration {
    let own = template
        .properties(id)
        .ok()
        .and_then(|p| p["Timeout"].as_u64());
    Duration::from_secs(own.or_else(|| template.global_timeout()).unwrap_or(3))
}

/// Every HTTP function served on a free loopback port until the process ends (benchmarks and the
/// fault campaign); returns the base URL.
pub async fn serve_http(
    template: &Template,
    sdk: &SdkConfig,
    overrides: &BTreeMap<String, String>,
) -> Result<String, String> {
    let app = http_app(template, sdk, overrides).await?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| e.to_string())?;
    let base = format!(
        "http://{}",
        listener.local_addr().map_err(|e| e.to_string())?
    );
    tokio::spawn(serve(listener, app, std::future::pending()));
    Ok(base)
}

/// A user created straight in the store (the operator's path) and logged in through the auth
/// function at `base`: its access token.
pub async fn user_token(
    template: &Template,
    sdk: &SdkConfig,
    base: &str,
    username: &str,
    tenant: &str,
) -> Result<String, String> {
    let tables = template.tables().map_err(|e| e.to_string())?;
    let store = shared::auth::AuthStore::new(aws_sdk_dynamodb::Client::new(sdk), tables.state);
    let password = format!("pw-{}", uuid::Uuid::new_v4().simple());
    // A member who also decides approvals (the campaign and the benches approve).
    auth::create(
        &store,
        username,
        &password,
        tenant,
        vec!["user".into(), "approver".into()],
    )
    .await
    .map_err(|e| e.to_string())?;
    let login: serde_json::Value = reqwest::Client::new()
        .post(format!("{base}/auth/login"))
        .json(&serde_json::json!({"tenant": tenant, "username": username, "password": password}))
        .send()
        .await
        .map_err(|e| e.to_string())?
        .json()
        .await
        .map_err(|e| e.to_string())?;
    login["access_token"]
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| format!("login refused: {login}"))
}

/// The environment the end-to-end benchmarks run the functions with: private addresses allowed
/// (the peer is local), the timer every 200 ms, no rate limit in the way, OpenAI at `peer`.
pub fn bench_env(peer: &str) -> BTreeMap<String, String> {
    [
        ("HTTP_ALLOW_PRIVATE_NETWORKS", "true"),
        ("TIMER_PERIOD_MS", "200"),
        ("RATE_LIMIT_REQUESTS", "100000"),
        ("OPENAI_API_KEY", "sk-bench"),
        ("OPENAI_BASE_URL", peer),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect()
}

/// A $1,000 monthly budget for `tenant`: benchmarks run `llm` steps priced and under a budget,
/// as a careful operator would.
pub async fn bench_budget(
    template: &Template,
    sdk: &SdkConfig,
    tenant: &str,
) -> Result<(), String> {
    let tables = template.tables().map_err(|e| e.to_string())?;
    shared::engine::budget::Budgets::new(aws_sdk_dynamodb::Client::new(sdk), tables.state)
        .set(
            tenant,
            &shared::engine::budget::Scope::Tenant,
            &shared::engine::budget::BudgetConfig {
                monthly_usd: Some(1000.0),
                monthly_tokens: None,
            },
            chrono::Utc::now(),
            (0.0, 0),
        )
        .await
        .map(|_| ())
        .map_err(|e| e.to_string())
}
