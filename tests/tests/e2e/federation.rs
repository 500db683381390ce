//! GraphQL end to end: the engine's subgraph behind the real Apollo gateway (node, from
//! infra/gateway, `npm ci` first) with a second subgraph that extends its entities, on the
//! local stack.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, BufReader};

use crate::support::App;

fn gateway_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../infra/gateway")
}

/// A node process that printed `listening on <url>`; killed when dropped.
struct Node {
    child: tokio::process::Child,
    url: String,
}

async fn node(script: &str, env: &[(&str, String)]) -> Node {
    let dir = gateway_dir();
    assert!(
        dir.join("node_modules/@apollo/gateway").exists(),
        "infra/gateway has no node_modules: run `npm ci --prefix infra/gateway` (scripts/test does)"
    );
    let mut cmd = tokio::process::Command::new("node");
    cmd.arg(script)
        .current_dir(&dir)
        .env("PORT", "0")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::inherit())
        .kill_on_drop(true);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("node runs");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let deadline = Instant::now() + Duration::from_secs(60);
    let url = loop {
        let line = tokio::time::timeout_at(deadline.into(), lines.next_line())
            .await
            .unwrap_or_else(|_| panic!("{script} did not start within 60 s"))
            .unwrap()
            .unwrap_or_else(|| panic!("{script} exited before listening"));
        if let Some(rest) = line.split("listening on ").nth(1) {
            break rest
                .split_whitespace()
                .next()
                .unwrap()
                .trim_end_matches('/')
                .to_owned();
        }
    };
    // Keep draining its output so the process never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    Node { child, url }
}

/// The engine's subgraph behind the gateway, with the notes subgraph beside it.
struct Federation {
    gateway: Node,
    _notes: Node,
}

impl Federation {
    async fn start(app: &App) -> Self {
        let notes = node("test/notes-subgraph.mjs", &[]).await;
        let extra = format!(
            "notes={}/graphql={}",
            notes.url,
            gateway_dir().join("test/notes.graphql").display()
        );
        let gateway = node(
            "src/gateway.mjs",
            &[
                ("ENGINE_GRAPHQL_URL", app.url("/graphql")),
                ("EXTRA_SUBGRAPHS", extra),
            ],
        )
        .await;
        Self {
            gateway,
            _notes: notes,
        }
    }
}

async fn gql(
    http: &reqwest::Client,
    url: &str,
    token: Option<&str>,
    query: &str,
    variables: Value,
) -> Value {
    let mut r = http
        .post(url)
        .json(&json!({"query": query, "variables": variables}));
    if let Some(t) = token {
        r = r.bearer_auth(t);
    }
    let r = r.send().await.unwrap();
    let status = r.status();
    let body: Value = r.json().await.unwrap();
    assert!(
        status == 200 || status == 400,
        "{url} answered {status}: {body}"
    );
    body
}

fn code(body: &Value) -> &str {
    body["errors"][0]["extensions"]["code"]
        .as_str()
        .unwrap_or_else(|| panic!("no error code in {body}"))
}

fn get_url(base: &str, query: &str) -> String {
    let mut url = url::Url::parse(base).unwrap();
    url.query_pairs_mut().append_pair("query", query);
    url.into()
}

async fn token(app: &App, tenant: &str, roles: &[&str]) -> (String, String) {
    let (name, password) = app.user(tenant, roles).await;
    (app.tokens(&name, &password).await.0, name)
}

#[tokio::test]
async fn through_the_gateway_queries_span_subgraphs_and_mutations_run_workflows() {
    let app = App::start_engine("gql-fed", &[]).await;
    let fed = Federation::start(&app).await;
    let url = format!("{}/graphql", fed.gateway.url);
    let (token, name) = token(&app, "t-gql-fed", &["admin"]).await;
    let http = &app.http;

    let created = gql(
        http,
        &url,
        Some(&token),
        "mutation($d: JSON!) { createWorkflow(definition: $d) { id name latestVersion } }",
        json!({"d": {"name": "fed-hello", "start": "ask", "steps": {
            "ask": {"type": "approval", "prompt": "ship {{ input.what }}?", "timeout_seconds": 3600, "next": "end"},
            "end": {"type": "succeed", "output": "shipped {{ input.what }}"}}}}),
    )
    .await;
    assert!(created["errors"].is_null(), "{created}");
    let wf = created["data"]["createWorkflow"]["id"]
        .as_str()
        .unwrap()
        .to_owned();

    // A query that spans both subgraphs: `note` and `noteCount` come from the notes subgraph.
    let body = gql(
        http,
        &url,
        Some(&token),
        "{ workflows { nodes { id name note } } me { id username noteCount } }",
        json!({}),
    )
    .await;
    assert!(body["errors"].is_null(), "{body}");
    assert_eq!(
        body["data"]["workflows"]["nodes"],
        json!([{"id": wf, "name": "fed-hello", "note": format!("note for {wf}")}])
    );
    assert_eq!(body["data"]["me"]["username"], name.as_str());
    assert_eq!(body["data"]["me"]["noteCount"], name.len());

    // The caller's Authorization is what reached the engine's subgraph (and only it: the notes
    // subgraph's `note` would say so if a token had reached it): without it, nothing.
    let anonymous = gql(
        http,
        &url,
        None,
        "{ workflows { nodes { id } } }",
        json!({}),
    )
    .await;
    assert_eq!(code(&anonymous), "UNAUTHENTICATED", "{anonymous}");
    assert!(anonymous["data"].is_null(), "{anonymous}");

    // Start through a mutation (idempotent with a key), decide the approval, watch it finish.
    let start = "mutation($w: ID!, $k: String) { startExecution(workflowId: $w, input: {what: \"v2\"}, idempotencyKey: $k) { executionId status replayed } }";
    let first = gql(
        http,
        &url,
        Some(&token),
        start,
        json!({"w": wf, "k": "k-1"}),
    )
    .await;
    assert!(first["errors"].is_null(), "{first}");
    let id = first["data"]["startExecution"]["executionId"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(first["data"]["startExecution"]["replayed"], false);
    let again = gql(
        http,
        &url,
        Some(&token),
        start,
        json!({"w": wf, "k": "k-1"}),
    )
    .await;
    assert_eq!(again["data"]["startExecution"]["executionId"], id.as_str());
    assert_eq!(again["data"]["startExecution"]["replayed"], true);

    let watch = "query($id: ID!) { execution(id: $id) { status awaitingApproval output workflow { name note } steps { key status durationMs } events(first: 50) { nodes { type } } } }";
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let e = gql(http, &url, Some(&token), watch, json!({"id": id})).await;
        if e["data"]["execution"]["awaitingApproval"] == json!(["ask"]) {
            assert_eq!(
                e["data"]["execution"]["workflow"]["note"],
                format!("note for {wf}")
            );
            break;
        }
        assert!(Instant::now() < deadline, "never awaited approval: {e}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let decided = gql(
        http,
        &url,
        Some(&token),
        "mutation($id: ID!) { approveStep(executionId: $id, step: \"ask\", comment: \"lgtm\") { accepted } }",
        json!({"id": id}),
    )
    .await;
    assert_eq!(
        decided["data"]["approveStep"]["accepted"], "ApprovalGranted",
        "{decided}"
    );
    let finished = loop {
        let e = gql(http, &url, Some(&token), watch, json!({"id": id})).await;
        if e["data"]["execution"]["status"] == "SUCCEEDED" {
            break e;
        }
        assert!(Instant::now() < deadline, "never finished: {e}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let e = &finished["data"]["execution"];
    assert_eq!(e["output"], "shipped v2", "{finished}");
    let types: Vec<&str> = e["events"]["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["type"].as_str().unwrap())
        .collect();
    assert!(types.contains(&"ApprovalGranted"), "{types:?}");
    assert_eq!(types.last(), Some(&"ExecutionSucceeded"), "{types:?}");

    // The same rule refuses on both faces: a second decision is a conflict.
    let late = gql(
        http,
        &url,
        Some(&token),
        "mutation($id: ID!) { rejectStep(executionId: $id, step: \"ask\") { accepted } }",
        json!({"id": id}),
    )
    .await;
    assert_eq!(code(&late), "CONFLICT", "{late}");

    // Bad input names what is wrong, with the pointer.
    let invalid = gql(
        http,
        &url,
        Some(&token),
        "mutation { createWorkflow(definition: {name: \"x\", start: \"nope\", steps: {}}) { id } }",
        json!({}),
    )
    .await;
    assert_eq!(code(&invalid), "BAD_USER_INPUT", "{invalid}");
    assert!(
        invalid["errors"][0]["extensions"]["problems"][0]["pointer"].is_string(),
        "{invalid}"
    );

    // Over-deep and over-costly queries are refused with their codes, through the gateway too,
    // and without the gateway's stack traces.
    let deep = "{ workflows(first: 1) { nodes { executions(first: 1) { nodes { workflow { executions(first: 1) { nodes { workflow { executions(first: 1) { nodes { workflow { id } } } } } } } } } } } }";
    let refused = gql(http, &url, Some(&token), deep, json!({})).await;
    assert_eq!(code(&refused), "MAX_DEPTH_LIMIT", "{refused}");
    assert!(
        refused["errors"][0]["extensions"]["stacktrace"].is_null(),
        "{refused}"
    );
    let costly = "{ workflows(first: 100) { nodes { executions(first: 100) { nodes { id steps { key } } } } } }";
    let refused = gql(http, &url, Some(&token), costly, json!({})).await;
    assert_eq!(code(&refused), "COST_ESTIMATED_TOO_EXPENSIVE", "{refused}");
    // The subgraph's own refusals reach the client with their codes, and no subgraph URL.
    let many: String = (0..31).map(|i| format!("a{i}: me {{ id }} ")).collect();
    let aliased = gql(
        http,
        &url,
        Some(&token),
        &format!("{{ {many} }}"),
        json!({}),
    )
    .await;
    assert_eq!(code(&aliased), "MAX_ALIASES_LIMIT", "{aliased}");
    assert!(!aliased.to_string().contains("127.0.0.1"), "{aliased}");
}

#[tokio::test]
async fn entities_are_tenant_scoped_and_introspection_is_off_while_service_answers() {
    let app = App::start_engine("gql-scope", &[]).await;
    let url = app.url("/graphql");
    let http = &app.http;
    let (owner, _) = token(&app, "t-gql-a", &[]).await;
    let (other, _) = token(&app, "t-gql-b", &["admin"]).await;
    let created = gql(
        http,
        &url,
        Some(&owner),
        "mutation($d: JSON!) { createWorkflow(definition: $d) { id } }",
        json!({"d": {"name": "mine", "start": "end", "steps": {"end": {"type": "succeed"}}}}),
    )
    .await;
    let wf = created["data"]["createWorkflow"]["id"]
        .as_str()
        .unwrap_or_else(|| panic!("{created}"))
        .to_owned();
    let started = gql(
        http,
        &url,
        Some(&owner),
        "mutation($w: ID!) { startExecution(workflowId: $w) { executionId } }",
        json!({"w": wf}),
    )
    .await;
    let ex = started["data"]["startExecution"]["executionId"]
        .as_str()
        .unwrap_or_else(|| panic!("{started}"))
        .to_owned();

    // What a gateway asks to resolve a reference: another tenant's ids resolve to null.
    let entities = "query($r: [_Any!]!) { _entities(representations: $r) { ... on Workflow { id name } ... on Execution { id } } }";
    let reps = json!({"r": [
        {"__typename": "Workflow", "id": wf},
        {"__typename": "Execution", "id": ex},
    ]});
    let theirs = gql(http, &url, Some(&other), entities, reps.clone()).await;
    assert!(theirs["errors"].is_null(), "{theirs}");
    assert_eq!(theirs["data"]["_entities"], json!([null, null]), "{theirs}");
    let mine = gql(http, &url, Some(&owner), entities, reps).await;
    assert_eq!(
        mine["data"]["_entities"],
        json!([{"id": wf, "name": "mine"}, {"id": ex}]),
        "{mine}"
    );
    let direct = gql(
        http,
        &url,
        Some(&other),
        "query($w: ID!, $e: ID!) { workflow(id: $w) { id } execution(id: $e) { id } }",
        json!({"w": wf, "e": ex}),
    )
    .await;
    assert_eq!(
        direct["data"],
        json!({"workflow": null, "execution": null}),
        "{direct}"
    );

    // A list of references is bounded: `_entities` takes any length.
    let flood: Vec<Value> = (0..101)
        .map(|i| json!({"__typename": "Workflow", "id": format!("w{i}")}))
        .collect();
    let flooded = gql(http, &url, Some(&owner), entities, json!({"r": flood})).await;
    let codes: Vec<&str> = flooded["errors"]
        .as_array()
        .unwrap_or_else(|| panic!("{flooded}"))
        .iter()
        .filter_map(|e| e["extensions"]["code"].as_str())
        .collect();
    assert!(codes.contains(&"MAX_ENTITIES_LIMIT"), "{flooded}");
    // At most 5 mutations per document (each is a write the rate limiter counts once).
    let six: String = (0..6)
        .map(|i| format!("m{i}: validateWorkflow(definition: {{}}) {{ valid }} "))
        .collect();
    let batch = gql(
        http,
        &url,
        Some(&owner),
        &format!("mutation {{ {six} }}"),
        json!({}),
    )
    .await;
    assert_eq!(code(&batch), "MAX_ROOT_FIELDS_LIMIT", "{batch}");

    // Introspection is off (the template's default); `_service` answers a signed-in caller
    // with the committed SDL, and nobody else.
    let intro = gql(
        http,
        &url,
        Some(&owner),
        "{ __schema { types { name } } }",
        json!({}),
    )
    .await;
    assert_eq!(code(&intro), "INTROSPECTION_DISABLED", "{intro}");
    let sdl = gql(http, &url, Some(&owner), "{ _service { sdl } }", json!({})).await;
    let committed = std::fs::read_to_string(
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../infra/graphql/schema.graphql"),
    )
    .unwrap();
    assert_eq!(
        sdl["data"]["_service"]["sdl"].as_str().map(str::trim_end),
        Some(committed.trim_end())
    );
    let anonymous = gql(http, &url, None, "{ _service { sdl } }", json!({})).await;
    assert_eq!(code(&anonymous), "UNAUTHENTICATED", "{anonymous}");

    // Aliases, GET mutations and unparsable documents are refused before anything runs.
    let many: String = (0..31).map(|i| format!("a{i}: me {{ id }} ")).collect();
    let aliased = gql(
        http,
        &url,
        Some(&owner),
        &format!("{{ {many} }}"),
        json!({}),
    )
    .await;
    assert_eq!(code(&aliased), "MAX_ALIASES_LIMIT", "{aliased}");
    let r = http
        .get(get_url(
            &url,
            "mutation { redriveExecution(id: \"x\") { accepted } }",
        ))
        .bearer_auth(&owner)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 405);
    let r = http
        .get(get_url(&url, "{ me { id } }"))
        .bearer_auth(&owner)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    assert!(body["data"]["me"]["id"].is_string(), "{body}");
    let broken = gql(http, &url, Some(&owner), "{ me { ", json!({})).await;
    assert_eq!(code(&broken), "GRAPHQL_PARSE_FAILED", "{broken}");
    let too_many = gql(
        http,
        &url,
        Some(&owner),
        "{ workflows(first: 500) { nodes { id } } }",
        json!({}),
    )
    .await;
    assert_eq!(code(&too_many), "BAD_USER_INPUT", "{too_many}");
    // Admin-only fields refuse others with FORBIDDEN.
    let users = gql(
        http,
        &url,
        Some(&owner),
        "{ users { nodes { id } } }",
        json!({}),
    )
    .await;
    assert_eq!(code(&users), "FORBIDDEN", "{users}");
}

#[tokio::test]
async fn health_reports_a_stopped_gateway_as_unreachable_with_its_port() {
    let engine = App::start("gql-health-engine", &[]).await;
    let fed = Federation::start(&engine).await;
    let r = engine
        .http
        .get(format!("{}/health", fed.gateway.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let gateway_url = fed.gateway.url.clone();
    let port = gateway_url.rsplit(':').next().unwrap().to_owned();
    let app = App::start("gql-health", &[("GRAPHQL_GATEWAY_URL", &gateway_url)]).await;
    let check = |body: &Value| {
        body["checks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == "gateway")
            .cloned()
            .unwrap_or_else(|| panic!("no gateway check in {body}"))
    };
    let body: Value = app
        .http
        .get(app.url("/health/detailed"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(check(&body)["status"], "pass", "{body}");

    let Federation { mut gateway, .. } = fed;
    gateway.child.kill().await.unwrap();
    let asked = Instant::now();
    let r = app
        .http
        .get(app.url("/health/detailed"))
        .send()
        .await
        .unwrap();
    assert!(asked.elapsed() < Duration::from_secs(5), "health hung");
    assert_eq!(r.status(), 503);
    let body: Value = r.json().await.unwrap();
    let gateway_check = check(&body);
    assert_eq!(gateway_check["status"], "fail");
    let detail = gateway_check["detail"].as_str().unwrap();
    assert!(
        detail.starts_with("GraphQL gateway unreachable")
            && detail.contains(&format!("port {port}")),
        "{detail}"
    );
}

#[tokio::test]
async fn money_and_tools_follow_the_same_rules_as_rest() {
    let app = App::start_engine("gql-money", &[("MCP_TIMEOUT", "5")]).await;
    let url = app.url("/graphql");
    let http = &app.http;
    let (admin, _) = token(&app, "t-gql-money", &["admin"]).await;
    let (member, _) = token(&app, "t-gql-money", &[]).await;

    // Budgets: admins only, bounded exactly as `PUT /budgets` is, and the same view as REST.
    let set = "mutation($usd: Float, $tokens: Long) { setBudget(monthlyUsd: $usd, monthlyTokens: $tokens) { period monthlyUsd monthlyTokens spentUsd availableUsd availableTokens } }";
    let refused = gql(http, &url, Some(&member), set, json!({"usd": 5.0})).await;
    assert_eq!(code(&refused), "FORBIDDEN", "{refused}");
    let too_much = gql(http, &url, Some(&admin), set, json!({"usd": 2e9})).await;
    assert_eq!(code(&too_much), "BAD_USER_INPUT", "{too_much}");
    let rest = http
        .put(app.url("/budgets"))
        .bearer_auth(&admin)
        .json(&json!({"monthly_usd": 2e9}))
        .send()
        .await
        .unwrap();
    let rest = crate::support::problem(rest, 422).await;
    assert_eq!(
        rest["detail"], too_much["errors"][0]["message"],
        "one rule, one wording"
    );
    // Above 2^31 tokens: a Long, which a 32-bit Int could not carry through a gateway.
    let ok = gql(
        http,
        &url,
        Some(&admin),
        set,
        json!({"usd": 5.0, "tokens": 5_000_000_000u64}),
    )
    .await;
    assert!(ok["errors"].is_null(), "{ok}");
    let budget = &ok["data"]["setBudget"];
    assert_eq!(budget["monthlyUsd"], 5.0);
    assert_eq!(budget["monthlyTokens"], 5_000_000_000u64);
    assert_eq!(budget["availableTokens"], 5_000_000_000u64);
    let read: Value = http
        .get(app.url("/budgets"))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(read["monthly_usd"], 5.0, "{read}");
    let again = gql(
        http,
        &url,
        Some(&admin),
        "{ budgets { monthlyUsd spentUsd reservedUsd } }",
        json!({}),
    )
    .await;
    assert_eq!(again["data"]["budgets"]["monthlyUsd"], 5.0, "{again}");
    // A limit left out stays; `null` clears it.
    let partial = gql(
        http,
        &url,
        Some(&admin),
        "mutation { setBudget(monthlyUsd: 7.5) { monthlyUsd monthlyTokens } }",
        json!({}),
    )
    .await;
    assert_eq!(
        partial["data"]["setBudget"],
        json!({"monthlyUsd": 7.5, "monthlyTokens": 5_000_000_000u64}),
        "{partial}"
    );
    let cleared = gql(
        http,
        &url,
        Some(&admin),
        "mutation { setBudget(monthlyTokens: null) { monthlyUsd monthlyTokens } }",
        json!({}),
    )
    .await;
    assert_eq!(
        cleared["data"]["setBudget"],
        json!({"monthlyUsd": 7.5, "monthlyTokens": null}),
        "{cleared}"
    );
    // A member's view of a workflow leaves its budget null, with FORBIDDEN, and the rest whole.
    let created = gql(
        http,
        &url,
        Some(&admin),
        "mutation($d: JSON!) { createWorkflow(definition: $d) { id } }",
        json!({"d": {"name": "priced", "start": "end", "steps": {"end": {"type": "succeed"}}}}),
    )
    .await;
    assert!(created["errors"].is_null(), "{created}");
    let seen = gql(
        http,
        &url,
        Some(&member),
        "{ workflows { nodes { name budget { monthlyUsd } } } }",
        json!({}),
    )
    .await;
    let node = &seen["data"]["workflows"]["nodes"][0];
    assert_eq!(node["name"], "priced", "{seen}");
    assert!(node["budget"].is_null(), "{seen}");
    assert_eq!(code(&seen), "FORBIDDEN", "{seen}");

    // Usage and prices: anyone of the tenant; a bad range is refused as REST refuses it.
    let usage = gql(
        http,
        &url,
        Some(&member),
        "{ usage(groupBy: MODEL) { from to groupBy groups { key } total { steps costUsd } } }",
        json!({}),
    )
    .await;
    assert!(usage["errors"].is_null(), "{usage}");
    assert_eq!(usage["data"]["usage"]["groupBy"], "MODEL");
    assert_eq!(usage["data"]["usage"]["total"]["steps"], 0);
    let backwards = gql(
        http,
        &url,
        Some(&member),
        "{ usage(from: \"2026-11-20\", to: \"2026-11-01\") { from } }",
        json!({}),
    )
    .await;
    assert_eq!(code(&backwards), "BAD_USER_INPUT", "{backwards}");
    let prices = gql(
        http,
        &url,
        Some(&member),
        "{ prices { provider model inputUsdPerMtok source } }",
        json!({}),
    )
    .await;
    let listed = prices["data"]["prices"].as_array().unwrap();
    assert!(
        listed
            .iter()
            .any(|p| p["model"] == "gpt-4o-mini" && p["source"] == "global"),
        "{prices}"
    );

    // MCP servers and their tools, asked of the server itself.
    let mcp_token = "mcp-token-gql-1";
    let (server_url, _) = crate::mcp::start_server(mcp_token).await;
    let r = http
        .put(app.url("/mcp/servers/orders"))
        .bearer_auth(&admin)
        .json(&json!({"url": server_url, "token": mcp_token}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let servers = gql(
        http,
        &url,
        Some(&member),
        "{ mcpServers { name auth tools } }",
        json!({}),
    )
    .await;
    assert!(servers["errors"].is_null(), "{servers}");
    let server = &servers["data"]["mcpServers"][0];
    assert_eq!(server["name"], "orders");
    assert_eq!(server["auth"], "bearer");
    let tools: Vec<&str> = server["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert!(tools.contains(&"lookup_order"), "{tools:?}");
}
