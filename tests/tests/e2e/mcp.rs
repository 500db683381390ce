//! `mcp` steps against a real MCP server (rmcp, the official Rust SDK) over streamable HTTP,
//! behind a bearer-token check. The registry API keeps the token secret; the worker's pooled
//! session is reused across executions; tool errors, unknown servers and slow tools fail the
//! step with their own kinds; tenants cannot reach each other's servers.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use rmcp::handler::server::{router::tool::ToolRouter, wrapper::Parameters};
use rmcp::model::{CallToolResult, ContentBlock, ServerCapabilities, ServerConfig};
use rmcp::transport::streamable_http_server::{
    session::local::LocalSessionManager, StreamableHttpServerConfig, StreamableHttpService,
};
use rmcp::{schemars, tool, tool_handler, tool_router, ServerHandler};
use serde_json::{json, Value};

use crate::support::App;
use crate::workflows::Client;

#[derive(Debug, serde::Deserialize, schemars::JsonSchema)]
struct Order {
    /// The order's id, like `A-17`.
    order_id: String,
}

#[derive(Clone)]
struct Orders {
    tool_router: ToolRouter<Self>,
}

#[tool_router]
impl Orders {
    #[tool(description = "Looks up an order's status")]
    fn lookup_order(&self, Parameters(Order { order_id }): Parameters<Order>) -> CallToolResult {
        CallToolResult::structured(json!({"order_id": order_id, "status": "shipped", "items": 3}))
    }

    #[tool(description = "Refunds an order")]
    fn refund(&self, Parameters(Order { order_id }): Parameters<Order>) -> CallToolResult {
        CallToolResult::error(vec![ContentBlock::text(format!(
            "refunds are closed for order {order_id}"
        ))])
    }

    #[tool(description = "Takes its time")]
    async fn slow(&self) -> String {
        tokio::time::sleep(std::time::Duration::from_secs(30)).await;
        "done".into()
    }
}

#[tool_handler(router = self.tool_router)]
impl ServerHandler for Orders {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
    }
}

/// What the server saw: requests opening a session (no `Mcp-Session-Id`) and bearer tokens.
#[derive(Clone, Default)]
pub(crate) struct Seen {
    token: Arc<Mutex<String>>,
    sessions_opened: Arc<AtomicUsize>,
    bearers: Arc<Mutex<Vec<String>>>,
}

async fn bearer_only(State(seen): State<Seen>, request: Request, next: Next) -> Response {
    let bearer = request
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default()
        .to_owned();
    seen.bearers.lock().unwrap().push(bearer.clone());
    if bearer != *seen.token.lock().unwrap() {
        return (
            axum::http::StatusCode::UNAUTHORIZED,
            [("www-authenticate", r#"Bearer error="invalid_token""#)],
        )
            .into_response();
    }
    if request.method() == axum::http::Method::POST
        && !request.headers().contains_key("mcp-session-id")
    {
        seen.sessions_opened.fetch_add(1, Ordering::SeqCst);
    }
    next.run(request).await
}

pub(crate) async fn start_server(token: &str) -> (String, Seen) {
    let seen = Seen::default();
    *seen.token.lock().unwrap() = token.to_owned();
    let service: StreamableHttpService<Orders, LocalSessionManager> = StreamableHttpService::new(
        || {
            Ok(Orders {
                tool_router: Orders::tool_router(),
            })
        },
        Default::default(),
        StreamableHttpServerConfig::default().with_sse_keep_alive(None),
    );
    let app = axum::Router::new().nest_service("/mcp", service).layer(
        axum::middleware::from_fn_with_state(seen.clone(), bearer_only),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/mcp", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, seen)
}

#[tokio::test]
async fn mcp_tool_results_feed_the_next_step_over_a_reused_session() {
    let logs = crate::support::captured_logs();
    let token = "mcp-token-7f3a9c";
    let (url, seen) = start_server(token).await;
    let app = App::start_engine("mcp", &[("MCP_TIMEOUT", "2")]).await;
    let c = Client::new(&app, "t-mcp").await;
    let (admin, password) = app.user("t-mcp", &["admin"]).await;
    let (admin_token, _) = app.tokens(&admin, &password).await;
    let admin = Client {
        app: &app,
        token: admin_token,
    };

    // Registration: admins only; the token is kept, never shown.
    let put = |body: Value| {
        let admin = &admin;
        async move {
            admin
                .send(reqwest::Method::PUT, "/mcp/servers/orders", Some(body))
                .await
        }
    };
    let r = c
        .send(
            reqwest::Method::PUT,
            "/mcp/servers/orders",
            Some(json!({"url": url, "token": token})),
        )
        .await;
    crate::support::problem(r, 403).await;
    let p = crate::support::problem(put(json!({"url": "ftp://example.com/mcp"})).await, 422).await;
    assert!(p["detail"].as_str().unwrap().contains("scheme"), "{p}");
    let r = put(json!({"url": url, "token": token, "description": "order desk"})).await;
    assert_eq!(r.status(), 201);
    let registered: Value = r.json().await.unwrap();
    assert_eq!(registered["auth"], "bearer");
    let listing = c.get_json("/mcp/servers").await;
    assert_eq!(listing["servers"][0]["name"], "orders", "{listing}");
    assert!(!listing.to_string().contains(token), "{listing}");
    assert!(!registered.to_string().contains(token));

    // The tools, asked from the server itself, with their input schemas.
    let tools = c.get_json("/mcp/servers/orders/tools").await;
    let names: Vec<&str> = tools["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(names.len(), 3, "{tools}");
    for name in ["lookup_order", "refund", "slow"] {
        assert!(names.contains(&name), "{tools}");
    }
    let lookup = tools["tools"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "lookup_order")
        .unwrap();
    assert_eq!(
        lookup["input_schema"]["required"],
        json!(["order_id"]),
        "{lookup}"
    );

    // A tool result feeds the next step's template.
    let wf = c
        .create(json!({"name": "order status", "start": "lookup", "steps": {
            "lookup": {"type": "mcp", "server": "orders", "tool": "lookup_order",
                       "arguments": {"order_id": "{{ input.order }}"}, "next": "reply"},
            "reply": {"type": "template",
                      "template": "Order {{ steps.lookup.output.structured.order_id }} is {{ steps.lookup.output.structured.status }} ({{ steps.lookup.output.structured.items }} items)"}},
            "outputs": {"reply": "{{ steps.reply.output }}"}}))
        .await;
    let id = c.start(&wf, json!({"order": "A-17"})).await;
    let e = c.finished(&id).await;
    assert_eq!(e["status"], "succeeded", "{e:#}");
    assert_eq!(e["output"]["reply"], "Order A-17 is shipped (3 items)");
    let opened = seen.sessions_opened.load(Ordering::SeqCst);

    // The worker's session stays open for the next execution: no new handshake.
    let id = c.start(&wf, json!({"order": "B-2"})).await;
    let e = c.finished(&id).await;
    assert_eq!(
        e["output"]["reply"], "Order B-2 is shipped (3 items)",
        "{e:#}"
    );
    assert_eq!(seen.sessions_opened.load(Ordering::SeqCst), opened);
    assert!(seen.bearers.lock().unwrap().iter().all(|b| b == token));

    // A tool error is the step's error, with the tool's words; catch sees it.
    let refund = c
        .create(json!({"name": "refund", "start": "refund", "steps": {
            "refund": {"type": "mcp", "server": "orders", "tool": "refund",
                       "arguments": {"order_id": "{{ input.order }}"}}}}))
        .await;
    let id = c.start(&refund, json!({"order": "A-17"})).await;
    let e = c.finished(&id).await;
    assert_eq!(e["status"], "failed", "{e:#}");
    assert_eq!(e["error"]["kind"], "ToolError", "{e:#}");
    assert!(
        e["error"]["message"]
            .as_str()
            .unwrap()
            .contains("refunds are closed for order A-17"),
        "{e:#}"
    );

    // A tool slower than MCP_TIMEOUT fails the step as McpTimeout.
    let slow = c
        .create(json!({"name": "slow", "start": "s", "steps": {
            "s": {"type": "mcp", "server": "orders", "tool": "slow"}}}))
        .await;
    let id = c.start(&slow, json!({})).await;
    let e = c.finished(&id).await;
    assert_eq!(e["error"]["kind"], "McpTimeout", "{e:#}");

    // A new token: the registration's new revision makes the worker open a new session with it.
    let rotated = "mcp-token-rotated-51d2";
    *seen.token.lock().unwrap() = rotated.to_owned();
    assert_eq!(
        put(json!({"url": url, "token": rotated})).await.status(),
        200
    );
    let id = c.start(&wf, json!({"order": "C-3"})).await;
    let e = c.finished(&id).await;
    assert_eq!(
        e["output"]["reply"], "Order C-3 is shipped (3 items)",
        "{e:#}"
    );
    assert_eq!(seen.bearers.lock().unwrap().last().unwrap(), rotated);

    // A token the server refuses fails the step for good (a retry would send the same token).
    assert_eq!(
        put(json!({"url": url, "token": "mcp-token-wrong"}))
            .await
            .status(),
        200
    );
    let id = c.start(&wf, json!({"order": "D-4"})).await;
    let e = c.finished(&id).await;
    assert_eq!(e["error"]["kind"], "McpAuthFailed", "{e:#}");
    assert_eq!(
        put(json!({"url": url, "token": rotated})).await.status(),
        200
    );

    // The tokens never reach the logs or the history.
    let history = serde_json::to_string(&c.history(&id).await).unwrap();
    let logs = String::from_utf8(logs.lock().unwrap().clone()).unwrap();
    assert!(
        logs.contains(&id),
        "the captured logs hold this execution's lines"
    );
    for secret in [token, rotated, "mcp-token-wrong"] {
        assert!(!logs.contains(secret), "an MCP token is in the logs");
        assert!(!history.contains(secret), "an MCP token is in the history");
    }

    // Another tenant sees no server of this one, and cannot call it.
    let other = Client::new(&app, "t-mcp-other").await;
    crate::support::problem(
        other
            .send(reqwest::Method::GET, "/mcp/servers/orders", None)
            .await,
        404,
    )
    .await;
    assert_eq!(other.get_json("/mcp/servers").await["servers"], json!([]));
    let theirs = other
        .create(json!({"name": "borrow", "start": "x", "steps": {
            "x": {"type": "mcp", "server": "orders", "tool": "lookup_order", "arguments": {"order_id": "A-17"}}}}))
        .await;
    let id = other.start(&theirs, json!({})).await;
    let e = other.finished(&id).await;
    assert_eq!(e["error"]["kind"], "McpServerNotRegistered", "{e:#}");

    // Removal forgets the server (and its token).
    assert_eq!(
        admin
            .send(reqwest::Method::DELETE, "/mcp/servers/orders", None)
            .await
            .status(),
        204
    );
    crate::support::problem(
        c.send(reqwest::Method::GET, "/mcp/servers/orders/tools", None)
            .await,
        404,
    )
    .await;
}

#[tokio::test]
async fn mcp_arguments_can_name_tenant_secrets_which_never_reach_history() {
    let token = "mcp-token-secret-args";
    let (url, _seen) = start_server(token).await;
    let app = App::start_engine("mcp-secrets", &[("MCP_TIMEOUT", "2")]).await;
    let (admin, password) = app.user("t-mcp-secrets", &["admin", "user"]).await;
    let admin = Client {
        app: &app,
        token: app.tokens(&admin, &password).await.0,
    };
    let r = admin
        .send(
            reqwest::Method::PUT,
            "/mcp/servers/orders",
            Some(json!({"url": url, "token": token})),
        )
        .await;
    assert_eq!(r.status(), 201);
    let order = format!("ORD-{}", uuid::Uuid::new_v4().simple());
    let r = admin
        .send(
            reqwest::Method::PUT,
            "/secrets/vip_order",
            Some(json!({"value": order, "mcp_servers": ["orders"]})),
        )
        .await;
    assert_eq!(r.status(), 201);
    let wf = admin
        .create(json!({"name": "vip", "start": "lookup", "steps": {
            "lookup": {"type": "mcp", "server": "orders", "tool": "lookup_order",
                       "arguments": {"order_id": "${secret:vip_order}"}}},
            "outputs": {"order": "{{ steps.lookup.output.structured.order_id }}",
                        "status": "{{ steps.lookup.output.structured.status }}"}}))
        .await;
    let id = admin.start(&wf, json!({})).await;
    let e = admin.finished(&id).await;
    assert_eq!(e["status"], "succeeded", "{e:#}");
    // The tool got the value (it answered about that order), and echoed it: redacted.
    assert_eq!(e["output"]["status"], "shipped", "{e:#}");
    assert_eq!(e["output"]["order"], "[secret:vip_order]", "{e:#}");
    let history = serde_json::to_string(&admin.history(&id).await).unwrap();
    assert!(!history.contains(&order), "{history}");
}
