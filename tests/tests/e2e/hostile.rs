//! The hostile-input suite (issue 11): what one tenant can send to hurt the functions everyone
//! shares. Each case gets a clear 4xx or a clearly failed step, and another tenant's executions
//! finish while the hostile ones run.

use serde_json::{json, Value};

use crate::support::App;
use crate::workflows::Client;

fn pointers(body: &Value) -> Vec<(String, String)> {
    body["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["pointer"].as_str().unwrap().to_owned(),
                e["message"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

#[tokio::test]
async fn templates_are_checked_before_saving_and_bounded_when_they_run() {
    let app = App::start_engine("hostile-templates", &[]).await;
    let evil = Client::new(&app, "t-hostile-evil").await;
    let good = Client::new(&app, "t-hostile-good").await;

    // Refused before anything runs: every problem at once, unknown step types included.
    let body = evil
        .refused(
            reqwest::Method::POST,
            "/workflows",
            Some(json!({"name": "bad", "start": "a", "steps": {
                "a": {"type": "template", "template": "{{ input.x | shout }}", "next": "b"},
                "b": {"type": "template", "template": "{% set s = input.x ~ input.x %}{{ s }}", "next": "c"},
                "c": {"type": "teleport"},
                "d": {"type": "http", "url": 3}}})),
            422,
        )
        .await;
    let found = pointers(&body);
    assert!(
        found.iter().any(|(p, _)| p == "/steps/c")
            && found.iter().any(|(p, _)| p.starts_with("/steps/d")),
        "parse problems of two steps at once: {body:#}"
    );
    assert!(
        found
            .iter()
            .any(|(p, m)| p == "/steps/a/template" && m.starts_with("unknown filter `shout`")),
        "and the readable steps' problems in the same answer: {body:#}"
    );
    assert!(
        !found.iter().any(|(_, m)| m.contains("unknown step `c`")),
        "no echo of the unreadable step: {body:#}"
    );
    let body = evil
        .refused(
            reqwest::Method::POST,
            "/workflows",
            Some(json!({"name": "bad", "start": "a", "steps": {
                "a": {"type": "template", "template": "{{ input.x | shout }}", "next": "b"},
                "b": {"type": "template", "template": "{% set s = input.x ~ input.x %}{{ s }}"}}})),
            422,
        )
        .await;
    let found = pointers(&body);
    assert!(
        found
            .iter()
            .any(|(p, m)| p == "/steps/a/template" && m.starts_with("unknown filter `shout`")),
        "{body:#}"
    );
    assert!(
        found
            .iter()
            .any(|(p, m)| p == "/steps/b/template" && m.contains("{% set %}")),
        "{body:#}"
    );

    // Valid, but the input makes it explode: the step fails at once with a clear error.
    let bomb = evil
        .create(json!({"name": "bomb", "start": "t", "steps": {
            "t": {"type": "template", "template": "{% for i in range(input.n) %}{% for j in range(input.n) %}{{ input.s }}{% endfor %}{% endfor %}"}}}))
        .await;
    let fine = good
        .create(json!({"name": "fine", "start": "t", "steps": {
            "t": {"type": "template", "template": "ok {{ input.n }}"}}}))
        .await;
    let bombs: Vec<String> = {
        let mut ids = Vec::new();
        for _ in 0..3 {
            ids.push(
                evil.start(&bomb, json!({"n": 100000, "s": "x".repeat(64 * 1024)}))
                    .await,
            );
        }
        ids
    };
    let fines: Vec<String> = {
        let mut ids = Vec::new();
        for n in 0..3 {
            ids.push(good.start(&fine, json!({"n": n})).await);
        }
        ids
    };
    for id in &fines {
        let e = good.finished(id).await;
        assert_eq!(e["status"], "succeeded", "{e:#}");
    }
    for id in &bombs {
        let e = evil.finished(id).await;
        assert_eq!(e["status"], "failed", "{e:#}");
        assert_eq!(e["error"]["kind"], "TemplateError", "{e:#}");
        let message = e["error"]["message"].as_str().unwrap();
        assert!(
            message.contains("larger than 350 KB") || message.contains("out of fuel"),
            "{message}"
        );
    }
}

/// Every execution of `workflow` for this client's tenant, once none is running any more.
async fn settled(c: &Client<'_>, workflow: &str) -> Vec<Value> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let listed: Value = c
            .get_json(&format!("/executions?workflow_id={workflow}&limit=100"))
            .await;
        let items = listed["items"].as_array().unwrap().clone();
        if items.iter().all(|e| e["status"] != "running") {
            return items;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{workflow}: still running: {listed:#}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn subworkflow_families_are_bounded_and_stop_as_a_whole() {
    let app = App::start_engine(
        "hostile-family",
        &[
            ("SUBWORKFLOW_MAX_DEPTH", "3"),
            ("SUBWORKFLOW_MAX_DESCENDANTS", "6"),
        ],
    )
    .await;
    let c = Client::new(&app, "t-hostile-family").await;

    // A workflow that calls itself stops at the depth limit: the root and three generations.
    c.create(
        json!({"id": "deep", "name": "deep", "start": "again", "steps": {
        "again": {"type": "subworkflow", "workflow_id": "deep"}}}),
    )
    .await;
    let root = c.start("deep", json!({})).await;
    let e = c.finished(&root).await;
    assert_eq!(e["status"], "failed", "{e:#}");
    let kind = e["error"]["kind"].as_str().unwrap();
    assert!(kind.ends_with("SubworkflowTooDeep"), "{e:#}");
    assert_eq!(settled(&c, "deep").await.len(), 4);

    // A map that fans out past the family's cap fails, and the children it did start are
    // cancelled with it instead of waiting on their approvals for ever.
    c.create(
        json!({"id": "leaf", "name": "leaf", "start": "ask", "steps": {
        "ask": {"type": "approval"}}}),
    )
    .await;
    c.create(json!({"id": "wide", "name": "wide", "start": "each", "steps": {
        "each": {"type": "map", "items": "input.items", "concurrency": 8, "iterator": {"start": "call"}},
        "call": {"type": "subworkflow", "workflow_id": "leaf"}}}))
        .await;
    let wide = c
        .start("wide", json!({"items": [1, 2, 3, 4, 5, 6, 7, 8]}))
        .await;
    let e = c.finished(&wide).await;
    assert_eq!(e["status"], "failed", "{e:#}");
    assert!(
        e["error"]["message"]
            .as_str()
            .unwrap()
            .contains("subworkflow executions"),
        "{e:#}"
    );
    let leaves = settled(&c, "leaf").await;
    assert!(leaves.len() <= 6, "{leaves:#?}");
    assert!(
        leaves.iter().all(|l| l["status"] == "cancelled"),
        "{leaves:#?}"
    );

    // Cancelling the root of a two-level family cancels everyone in it, at every depth.
    c.create(
        json!({"id": "mid", "name": "mid", "start": "each", "steps": {
        "each": {"type": "map", "items": "[1, 2]", "iterator": {"start": "call"}},
        "call": {"type": "subworkflow", "workflow_id": "leaf2"}}}),
    )
    .await;
    c.create(
        json!({"id": "leaf2", "name": "leaf2", "start": "ask", "steps": {
        "ask": {"type": "approval"}}}),
    )
    .await;
    c.create(
        json!({"id": "tree", "name": "tree", "start": "each", "steps": {
        "each": {"type": "map", "items": "[1, 2]", "iterator": {"start": "call"}},
        "call": {"type": "subworkflow", "workflow_id": "mid"}}}),
    )
    .await;
    let tree = c.start("tree", json!({})).await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let listed: Value = c.get_json("/executions?workflow_id=leaf2").await;
        if listed["items"].as_array().unwrap().len() == 4 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{listed:#}");
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    let r = c
        .send(
            reqwest::Method::POST,
            &format!("/executions/{tree}/cancel"),
            None,
        )
        .await;
    assert_eq!(r.status(), 202);
    for workflow in ["mid", "leaf2"] {
        let all = settled(&c, workflow).await;
        assert!(
            all.iter().all(|e| e["status"] == "cancelled"),
            "{workflow}: {all:#?}"
        );
    }

    // A child whose step timed out (and was caught) is cancelled, not left waiting.
    c.create(
        json!({"id": "leaf3", "name": "leaf3", "start": "ask", "steps": {
        "ask": {"type": "approval"}}}),
    )
    .await;
    c.create(
        json!({"id": "hasty", "name": "hasty", "start": "call", "steps": {
        "call": {"type": "subworkflow", "workflow_id": "leaf3", "timeout_seconds": 1,
                 "catch": [{"errors": ["Timeout"], "next": "done"}]},
        "done": {"type": "succeed"}}}),
    )
    .await;
    let hasty = c.start("hasty", json!({})).await;
    let e = c.finished(&hasty).await;
    assert_eq!(e["status"], "succeeded", "{e:#}");
    let leaf3 = settled(&c, "leaf3").await;
    assert_eq!(leaf3.len(), 1, "{leaf3:#?}");
    assert_eq!(leaf3[0]["status"], "cancelled", "{leaf3:#?}");

    // An archived workflow starts no children, and a new version of it stays archived.
    let r = c
        .send(reqwest::Method::DELETE, "/workflows/leaf2", None)
        .await;
    assert!(r.status().is_success(), "{}", r.status());
    let again = c.start("mid", json!({})).await;
    let e = c.finished(&again).await;
    assert_eq!(e["status"], "failed", "{e:#}");
    assert!(
        e["error"]["message"].as_str().unwrap().contains("archived"),
        "{e:#}"
    );
    let r = app
        .http
        .put(app.url("/workflows/leaf2"))
        .bearer_auth(&c.token)
        .header("if-match", "1")
        .json(&json!({"name": "leaf2", "start": "ask", "steps": {"ask": {"type": "approval"}}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let w: Value = c.get_json("/workflows/leaf2").await;
    assert_eq!(w["workflow"]["status"], "archived", "{w:#}");
    assert_eq!(w["workflow"]["latest_version"], 2, "{w:#}");
    // Restoring is its own, explicit act.
    let r = c
        .send(reqwest::Method::POST, "/workflows/leaf2/restore", None)
        .await;
    assert_eq!(r.status(), 200);
    let w: Value = c.get_json("/workflows/leaf2").await;
    assert_eq!(w["workflow"]["status"], "active", "{w:#}");
    c.refused(reqwest::Method::POST, "/workflows/nope/restore", None, 404)
        .await;
}

#[tokio::test]
async fn access_tokens_stop_working_when_the_user_is_disabled_changed_or_logs_out() {
    let app = App::start("hostile-revoke", &[("TOKEN_REVOCATION_CACHE_SECS", "0")]).await;
    let tenant = "t-hostile-revoke";
    let (admin, password) = app.user(tenant, &["admin"]).await;
    let (token, _) = app.tokens(&admin, &password).await;
    let admin = Client { app: &app, token };
    let works = async |token: &str| app.get_as("/workflows", token).await.status().as_u16();

    let (disabled, pw) = app.user(tenant, &["user"]).await;
    let (token, _) = app.tokens(&disabled, &pw).await;
    assert_eq!(works(&token).await, 200);
    let r = admin
        .send(
            reqwest::Method::PATCH,
            &format!("/auth/users/{disabled}"),
            Some(json!({"disabled": true})),
        )
        .await;
    assert_eq!(r.status(), 200);
    assert_eq!(
        works(&token).await,
        401,
        "a disabled user's token stops working"
    );

    let (changed, pw) = app.user(tenant, &["admin"]).await;
    let (token, _) = app.tokens(&changed, &pw).await;
    assert_eq!(works(&token).await, 200);
    let r = admin
        .send(
            reqwest::Method::PATCH,
            &format!("/auth/users/{changed}"),
            Some(json!({"roles": ["user"]})),
        )
        .await;
    assert_eq!(r.status(), 200);
    assert_eq!(
        works(&token).await,
        401,
        "a token with the old roles stops working"
    );
    let (fresh, _) = app.tokens(&changed, &pw).await;
    assert_eq!(works(&fresh).await, 200, "a new login works");

    let (leaving, pw) = app.user(tenant, &["user"]).await;
    let (token, refresh) = app.tokens(&leaving, &pw).await;
    assert_eq!(works(&token).await, 200);
    let r = app
        .http
        .post(app.url("/auth/logout"))
        .json(&json!({"refresh_token": refresh}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let r = app
        .http
        .get(app.url("/workflows"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401, "logged out");
    let body: Value = r.json().await.unwrap();
    assert!(
        body["detail"].as_str().unwrap().contains("revoked"),
        "{body}"
    );
}

#[tokio::test]
async fn approvals_take_an_approver_role_that_starting_does_not_give() {
    let app = App::start_engine("hostile-approve", &[]).await;
    let tenant = "t-hostile-approve";
    let as_user = async |roles: &[&str]| {
        let (name, password) = app.user(tenant, roles).await;
        let (token, _) = app.tokens(&name, &password).await;
        Client { app: &app, token }
    };
    let starter = as_user(&["user"]).await;
    let approver = as_user(&["user", "approver"]).await;
    let finance = as_user(&["finance"]).await;
    let decide = async |c: &Client<'_>, id: &str| {
        c.send(
            reqwest::Method::POST,
            &format!("/executions/{id}/approvals/ask"),
            Some(json!({"decision": "approve"})),
        )
        .await
        .status()
        .as_u16()
    };
    let waiting = async |c: &Client<'_>, wf: &str| {
        let id = c.start(wf, json!({})).await;
        c.until(&id, "an approval request", |e| {
            e["awaiting_approval"] == json!(["ask"])
        })
        .await;
        id
    };

    let plain = starter
        .create(json!({"name": "plain", "start": "ask", "steps": {"ask": {"type": "approval"}}}))
        .await;
    let id = waiting(&starter, &plain).await;
    assert_eq!(
        decide(&starter, &id).await,
        403,
        "starting is not approving"
    );
    assert_eq!(decide(&finance, &id).await, 403);
    assert_eq!(decide(&approver, &id).await, 202);

    let gated = starter
        .create(
            json!({"name": "gated", "approvers": ["finance"], "start": "ask",
            "steps": {"ask": {"type": "approval"}}}),
        )
        .await;
    let id = waiting(&starter, &gated).await;
    assert_eq!(
        decide(&approver, &id).await,
        403,
        "this workflow names its own approvers"
    );
    assert_eq!(decide(&finance, &id).await, 202);
    let e = starter.finished(&id).await;
    assert_eq!(e["status"], "succeeded", "{e:#}");
}

async fn put_secret(c: &Client<'_>, name: &str, body: Value) -> reqwest::Response {
    c.send(
        reqwest::Method::PUT,
        &format!("/secrets/{name}"),
        Some(body),
    )
    .await
}

/// What the echo server saw: the headers of every call.
type Seen = std::sync::Arc<std::sync::Mutex<Vec<(String, String)>>>;

/// A server that answers with the headers it got, as some real services do in error pages.
async fn start_echo() -> (String, Seen) {
    let seen: Seen = Default::default();
    let record = seen.clone();
    let app = axum::Router::new().route(
        "/echo",
        axum::routing::any(move |headers: axum::http::HeaderMap| {
            let record = record.clone();
            async move {
                let got: Vec<(String, String)> = ["authorization", "x-input"]
                    .iter()
                    .filter_map(|h| {
                        Some((h.to_string(), headers.get(*h)?.to_str().ok()?.to_owned()))
                    })
                    .collect();
                record.lock().unwrap().extend(got.clone());
                axum::Json(json!({"you_sent": got.into_iter().collect::<std::collections::BTreeMap<_, _>>()}))
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/echo", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, seen)
}

#[tokio::test]
async fn tenant_secrets_reach_the_call_and_never_history_logs_or_answers() {
    let logs = crate::support::captured_logs();
    let app = App::start_engine("hostile-secrets", &[]).await;
    let (echo, seen) = start_echo().await;
    let member = Client::new(&app, "t-secrets").await;
    let (admin, password) = app.user("t-secrets", &["admin"]).await;
    let admin = Client {
        app: &app,
        token: app.tokens(&admin, &password).await.0,
    };
    let other = Client::new(&app, "t-secrets-other").await;
    let secret = format!("crm-{}", uuid::Uuid::new_v4().simple());

    // The API: admins set values; nobody reads one back.
    crate::support::problem(
        put_secret(&member, "crm", json!({"value": secret})).await,
        403,
    )
    .await;
    crate::support::problem(
        put_secret(&admin, "no/slash", json!({"value": "x"})).await,
        404,
    )
    .await;
    crate::support::problem(put_secret(&admin, "a.b", json!({"value": "x"})).await, 422).await;
    crate::support::problem(put_secret(&admin, "crm", json!({"value": ""})).await, 422).await;
    let r = put_secret(
        &admin,
        "crm",
        json!({"value": "first-value", "description": "CRM API", "hosts": ["127.0.0.1"]}),
    )
    .await;
    assert_eq!(r.status(), 201);
    let r = put_secret(&admin, "crm", json!({"value": secret})).await;
    assert_eq!(r.status(), 200);
    let shown: Value = r.json().await.unwrap();
    assert_eq!(shown["version"], 2, "{shown}");
    assert_eq!(shown["hosts"], json!(["127.0.0.1"]), "kept: {shown}");
    assert_eq!(shown["description"], "CRM API", "{shown}");
    assert_eq!(shown["reference"], "${secret:crm}");
    let listing = member.get_json("/secrets").await;
    assert_eq!(listing["secrets"][0]["name"], "crm", "{listing}");
    for answer in [listing, member.get_json("/secrets/crm").await, shown] {
        assert!(!answer.to_string().contains(&secret), "{answer}");
        assert!(!answer.to_string().contains("first-value"), "{answer}");
    }
    other
        .refused(reqwest::Method::GET, "/secrets/crm", None, 404)
        .await;

    // Where a secret may be named, and how.
    let body = admin
        .refused(
            reqwest::Method::POST,
            "/workflows",
            Some(json!({"name": "bad", "start": "a", "steps": {
                "a": {"type": "http", "url": format!("{echo}?k=${{secret:crm}}"),
                      "headers": {"Authorization": "Bearer ${secret:crm} {{ input.x }}",
                                  "X-Other": "${secret:bad name}",
                                  "Host": "attacker-app.example"}}}})),
            422,
        )
        .await;
    let found = pointers(&body);
    for pointer in [
        "/steps/a/url",
        "/steps/a/headers/Authorization",
        "/steps/a/headers/X-Other",
        "/steps/a/headers/Host",
    ] {
        assert!(
            found.iter().any(|(p, _)| p == pointer),
            "{pointer}: {body:#}"
        );
    }

    // A call with the secret: the server gets it; an input naming a secret is sent as text;
    // the echoed value is redacted before anything is recorded.
    let def = json!({"name": "crm call", "start": "call", "steps": {
        "call": {"type": "http", "method": "POST", "url": echo,
                 "headers": {"Authorization": "Bearer ${secret:crm}", "X-Input": "{{ input.x }}"}}},
        "outputs": {"echo": "{{ steps.call.output.body }}"}});
    let wf = member.create(def.clone()).await;
    let id = member.start(&wf, json!({"x": "${secret:crm}"})).await;
    let e = member.finished(&id).await;
    assert_eq!(e["status"], "succeeded", "{e:#}");
    {
        let seen = seen.lock().unwrap();
        assert!(
            seen.contains(&("authorization".into(), format!("Bearer {secret}"))),
            "{seen:?}"
        );
        assert!(
            seen.contains(&("x-input".into(), "${secret:crm}".into())),
            "{seen:?}"
        );
    }
    assert_eq!(
        e["output"]["echo"]["you_sent"]["authorization"], "Bearer [secret:crm]",
        "{e:#}"
    );
    let history = serde_json::to_string(&member.history(&id).await).unwrap();
    assert!(!history.contains(&secret), "{history}");
    assert!(
        history.contains("Bearer ${secret:crm}"),
        "history shows the reference"
    );
    assert!(!e.to_string().contains(&secret));

    // A member's workflow cannot send it anywhere its admin did not list.
    let elsewhere = member
        .create(json!({"name": "exfiltrate", "start": "call", "steps": {
            "call": {"type": "http", "url": echo.replace("127.0.0.1", "localhost"),
                     "headers": {"X-Input": "${secret:crm}"}}}}))
        .await;
    let calls_before = seen.lock().unwrap().len();
    let id = member.start(&elsewhere, json!({})).await;
    let e = member.finished(&id).await;
    assert_eq!(e["error"]["kind"], "SecretNotAllowed", "{e:#}");
    assert_eq!(seen.lock().unwrap().len(), calls_before, "nothing was sent");

    // Another tenant's workflow naming the same secret gets none.
    let theirs = other.create(def).await;
    let id = other.start(&theirs, json!({"x": "1"})).await;
    let e = other.finished(&id).await;
    assert_eq!(e["status"], "failed", "{e:#}");
    assert_eq!(e["error"]["kind"], "SecretNotFound", "{e:#}");

    // Deleting: metadata and value go; the name is free again.
    let r = admin
        .send(reqwest::Method::DELETE, "/secrets/crm", None)
        .await;
    assert_eq!(r.status(), 204);
    member
        .refused(reqwest::Method::GET, "/secrets/crm", None, 404)
        .await;

    let logs = String::from_utf8_lossy(&logs.lock().unwrap()).to_string();
    assert!(!logs.contains(&secret), "a secret reached the logs");
}

/// Every route that takes an id, called by another tenant's admin with this tenant's ids: 404
/// each time (never 403, which would say the id exists), and nothing of this tenant changes.
#[tokio::test]
async fn another_tenants_ids_are_not_found_on_every_route() {
    use reqwest::Method as M;
    let app = App::start_engine("hostile-ids", &[]).await;
    let admin_of = async |tenant: &str| {
        let (name, password) = app.user(tenant, &["admin", "user", "approver"]).await;
        let token = app.tokens(&name, &password).await.0;
        (Client { app: &app, token }, name)
    };
    let (owner, owner_name) = admin_of("t-ids-owner").await;
    let (stranger, _) = admin_of("t-ids-stranger").await;

    let wf = owner
        .create(json!({"name": "mine", "start": "ask", "steps": {"ask": {"type": "approval"}}}))
        .await;
    let id = owner.start(&wf, json!({})).await;
    owner
        .until(&id, "an approval request", |e| {
            e["awaiting_approval"] == json!(["ask"])
        })
        .await;
    assert_eq!(
        put_secret(
            &owner,
            "mine",
            json!({"value": "owner-secret-value", "hosts": ["example.com"]})
        )
        .await
        .status(),
        201
    );
    let r = owner
        .send(
            M::PUT,
            "/mcp/servers/mine",
            Some(json!({"url": "http://127.0.0.1:9/mcp"})),
        )
        .await;
    assert_eq!(r.status(), 201);

    let def = json!({"name": "theirs", "start": "a", "steps": {"a": {"type": "succeed"}}});
    let calls: Vec<(M, String, Option<Value>)> = vec![
        (M::GET, format!("/workflows/{wf}"), None),
        (M::PUT, format!("/workflows/{wf}"), Some(def)),
        (M::DELETE, format!("/workflows/{wf}"), None),
        (M::POST, format!("/workflows/{wf}/restore"), None),
        (M::GET, format!("/workflows/{wf}/versions/1"), None),
        (
            M::POST,
            format!("/workflows/{wf}/executions"),
            Some(json!({"input": {}})),
        ),
        (M::GET, format!("/executions/{id}"), None),
        (M::GET, format!("/executions/{id}/events"), None),
        (M::POST, format!("/executions/{id}/cancel"), None),
        (
            M::POST,
            format!("/executions/{id}/approvals/ask"),
            Some(json!({"decision": "reject"})),
        ),
        (M::POST, format!("/executions/{id}/redrive"), None),
        (M::GET, format!("/budgets/workflows/{wf}"), None),
        (
            M::PUT,
            format!("/budgets/workflows/{wf}"),
            Some(json!({"monthly_tokens": 1})),
        ),
        (M::GET, "/mcp/servers/mine".into(), None),
        (M::DELETE, "/mcp/servers/mine".into(), None),
        (M::GET, "/mcp/servers/mine/tools".into(), None),
        (M::GET, "/secrets/mine".into(), None),
        (M::DELETE, "/secrets/mine".into(), None),
        (M::GET, format!("/auth/users/{owner_name}"), None),
        (
            M::PATCH,
            format!("/auth/users/{owner_name}"),
            Some(json!({"disabled": true})),
        ),
    ];
    for (method, path, body) in calls {
        let r = stranger.send(method.clone(), &path, body).await;
        let status = r.status().as_u16();
        let text = r.text().await.unwrap();
        assert_eq!(status, 404, "{method} {path}: {text}");
        assert!(
            !text.contains("owner-secret-value"),
            "{method} {path}: {text}"
        );
    }

    // Listings show none of it.
    for path in [
        "/workflows",
        "/executions",
        "/secrets",
        "/mcp/servers",
        "/auth/users",
    ] {
        let listing = stranger.get_json(path).await.to_string();
        assert!(
            !listing.contains(&wf) && !listing.contains(&id) && !listing.contains("mine"),
            "{path}: {listing}"
        );
    }

    // And nothing changed for the owner.
    let w = owner.get_json(&format!("/workflows/{wf}")).await;
    assert_eq!(w["workflow"]["status"], "active", "{w:#}");
    assert_eq!(w["workflow"]["latest_version"], 1, "{w:#}");
    let e = owner.execution(&id).await;
    assert_eq!(e["status"], "running", "{e:#}");
    assert_eq!(e["awaiting_approval"], json!(["ask"]), "{e:#}");
    assert_eq!(owner.get_json("/secrets/mine").await["version"], 1);
    assert_eq!(owner.get_json("/mcp/servers/mine").await["name"], "mine");
    let me = owner.get_json("/auth/me").await;
    assert_eq!(me["disabled"], false, "{me}");
}
