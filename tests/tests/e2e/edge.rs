//! The edge through the local runner: auth, HTTP conventions, rate limiting, health, OpenAPI.

use std::time::Duration;

use aws_sdk_dynamodb::types::AttributeValue;
use serde_json::{json, Value};
use shared::auth::Claims;

use crate::support::{problem, App};

fn tenant() -> String {
    format!("t{}", uuid::Uuid::new_v4().simple())
}

#[tokio::test]
async fn login_then_me_with_the_standard_headers() {
    let app = App::start("login", &[]).await;
    let t = tenant();
    let (name, password) = app.user(&t, &["user"]).await;
    let r = app.login(&name, &password).await;
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["expires_in"], 3600);
    let access = body["access_token"].as_str().unwrap();

    let me = app
        .http
        .get(app.url("/auth/me"))
        .bearer_auth(access)
        .header("x-correlation-id", "corr-42")
        .send()
        .await
        .unwrap();
    assert_eq!(me.status(), 200);
    let headers = me.headers().clone();
    assert_eq!(headers["x-correlation-id"], "corr-42");
    assert!(headers.contains_key("x-request-id"));
    for h in [
        "x-ratelimit-limit",
        "x-ratelimit-remaining",
        "x-ratelimit-reset",
    ] {
        assert!(headers.contains_key(h), "missing {h}");
    }
    let me: Value = me.json().await.unwrap();
    assert_eq!(me["username"], name.as_str());
    assert_eq!(me["tenant"], t.as_str());
    assert!(
        me.get("password_hash").is_none(),
        "the hash never leaves the store"
    );
}

#[tokio::test]
async fn wrong_password_and_unknown_user_get_the_same_401() {
    let app = App::start("badlogin", &[]).await;
    let (name, _) = app.user(&tenant(), &[]).await;
    let wrong = problem(app.login(&name, "not-the-password").await, 401).await;
    let unknown = problem(app.login("nobody-here", "whatever-password").await, 401).await;
    assert_eq!(wrong["detail"], unknown["detail"]);
}

async fn refresh(app: &App, token: &str) -> reqwest::Response {
    app.http
        .post(app.url("/auth/refresh"))
        .json(&json!({"refresh_token": token}))
        .send()
        .await
        .unwrap()
}

async fn refresh_ok(app: &App, token: &str) -> String {
    let r = refresh(app, token).await;
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    assert!(body["access_token"].is_string());
    body["refresh_token"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn refresh_rotates_and_reuse_revokes_the_family() {
    let app = App::start("refresh", &[]).await;
    let (name, password) = app.user(&tenant(), &[]).await;
    let (_, r1) = app.tokens(&name, &password).await;
    let (_, other_login) = app.tokens(&name, &password).await;
    let r2 = refresh_ok(&app, &r1).await;
    assert_ne!(r1, r2, "rotated");
    let r3 = refresh_ok(&app, &r2).await;

    let reuse = problem(refresh(&app, &r1).await, 401).await;
    assert!(
        reuse["detail"].as_str().unwrap().contains("already used"),
        "{reuse}"
    );
    problem(refresh(&app, &r3).await, 401).await; // the whole family is revoked
    refresh_ok(&app, &other_login).await; // another login is untouched
}

#[tokio::test]
async fn logout_revokes_the_refresh_token() {
    let app = App::start("logout", &[]).await;
    let (name, password) = app.user(&tenant(), &[]).await;
    let (_, refresh_token) = app.tokens(&name, &password).await;
    let r = app
        .http
        .post(app.url("/auth/logout"))
        .json(&json!({"refresh_token": refresh_token}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    problem(refresh(&app, &refresh_token).await, 401).await;
}

#[tokio::test]
async fn expired_tampered_none_and_wrong_key_tokens_get_401() {
    let app = App::start("tokens", &[]).await;
    let t = tenant();
    let (name, password) = app.user(&t, &[]).await;
    let (good, _) = app.tokens(&name, &password).await;
    let keys = app.keys().await;
    let now = chrono::Utc::now().timestamp();
    let claims = |exp: i64| Claims {
        ver: 0,
        sub: name.clone(),
        tenant: t.clone(),
        roles: vec!["user".into()],
        iat: now - 7200,
        exp,
        jti: "x".into(),
    };
    let expired = keys.issue(&claims(now - 10)).unwrap();
    let wrong_key = shared::auth::JwtKeys::new("another-key-another-key-another-key!", &[])
        .unwrap()
        .issue(&claims(now + 600))
        .unwrap();
    let mut parts: Vec<&str> = good.split('.').collect();
    let forged_payload = {
        use base64::Engine;
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let mut payload: Value = serde_json::from_slice(&b64.decode(parts[1]).unwrap()).unwrap();
        payload["roles"] = json!(["admin"]);
        b64.encode(payload.to_string())
    };
    parts[1] = &forged_payload;
    let tampered = parts.join(".");
    let none = {
        use base64::Engine;
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        format!(
            "{}.{}.",
            b64.encode(r#"{"alg":"none","typ":"JWT"}"#),
            good.split('.').nth(1).unwrap()
        )
    };
    for (what, token) in [
        ("expired", expired),
        ("wrong key", wrong_key),
        ("tampered", tampered),
        ("alg none", none),
        ("garbage", "not-a-jwt".into()),
    ] {
        let r = app
            .http
            .get(app.url("/auth/me"))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        let body = problem(r, 401).await;
        assert!(!body["detail"].as_str().unwrap().is_empty(), "{what}");
    }
    let r = app.http.get(app.url("/auth/me")).send().await.unwrap();
    problem(r, 401).await;
}

#[tokio::test]
async fn admin_manages_users_of_their_tenant_only() {
    let app = App::start("users", &[]).await;
    let t = tenant();
    let (admin, admin_pw) = app.user(&t, &["admin"]).await;
    let (plain, plain_pw) = app.user(&t, &["user"]).await;
    let (admin_token, _) = app.tokens(&admin, &admin_pw).await;
    let (plain_token, _) = app.tokens(&plain, &plain_pw).await;
    let new_user = json!({"username": format!("n{}", uuid::Uuid::new_v4().simple()), "password": "a-long-password-1"});

    let r = app
        .http
        .post(app.url("/auth/users"))
        .bearer_auth(&plain_token)
        .json(&new_user)
        .send()
        .await
        .unwrap();
    problem(r, 403).await;

    let r = app
        .http
        .post(app.url("/auth/users"))
        .bearer_auth(&admin_token)
        .json(&new_user)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let created: Value = r.json().await.unwrap();
    assert_eq!(created["tenant"], t.as_str());
    assert_eq!(created["roles"], json!(["user"]));
    let r = app
        .http
        .post(app.url("/auth/users"))
        .bearer_auth(&admin_token)
        .json(&new_user)
        .send()
        .await
        .unwrap();
    problem(r, 409).await;
    let weak = json!({"username": "weakling", "password": "short"});
    let r = app
        .http
        .post(app.url("/auth/users"))
        .bearer_auth(&admin_token)
        .json(&weak)
        .send()
        .await
        .unwrap();
    problem(r, 422).await;
    let elsewhere =
        json!({"username": "elsewhere", "password": "a-long-password-1", "tenant": tenant()});
    let r = app
        .http
        .post(app.url("/auth/users"))
        .bearer_auth(&admin_token)
        .json(&elsewhere)
        .send()
        .await
        .unwrap();
    problem(r, 403).await;

    let new_name = new_user["username"].as_str().unwrap();
    app.remember(new_name, &t);
    assert_eq!(app.login(new_name, "a-long-password-1").await.status(), 200);

    // Names are unique per tenant: another tenant may have the same name, and neither
    // tenant learns anything about the other's.
    let u = tenant();
    let (other_admin, other_pw) = app.user(&u, &["admin"]).await;
    let (other_token, _) = app.tokens(&other_admin, &other_pw).await;
    let get = |token: &str, name: &str| {
        app.http
            .get(app.url(&format!("/auth/users/{name}")))
            .bearer_auth(token.to_owned())
            .send()
    };
    problem(get(&other_token, new_name).await.unwrap(), 404).await;
    let same_name = json!({"username": new_name, "password": "another-password-2"});
    let r = app
        .http
        .post(app.url("/auth/users"))
        .bearer_auth(&other_token)
        .json(&same_name)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "the same name in another tenant");
    assert_eq!(
        app.login_in(&u, new_name, "another-password-2")
            .await
            .status(),
        200
    );
    problem(app.login_in(&u, new_name, "a-long-password-1").await, 401).await;
    assert_eq!(
        app.login_in(&t, new_name, "a-long-password-1")
            .await
            .status(),
        200
    );
    let theirs: Value = get(&other_token, new_name)
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(theirs["tenant"], u.as_str(), "{theirs}");

    let list: Value = app
        .http
        .get(app.url("/auth/users?limit=100"))
        .bearer_auth(&admin_token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let mut names: Vec<&str> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["username"].as_str().unwrap())
        .collect();
    names.sort();
    let mut expected = vec![admin.as_str(), plain.as_str(), new_name];
    expected.sort();
    assert_eq!(names, expected, "only this tenant's users");

    let r = app
        .http
        .patch(app.url(&format!("/auth/users/{new_name}")))
        .bearer_auth(&admin_token)
        .json(&json!({"disabled": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    problem(app.login(new_name, "a-long-password-1").await, 403).await;

    // Another tenant's admin sees none of it.
    let (other_admin, other_pw) = app.user(&tenant(), &["admin"]).await;
    let (other_token, _) = app.tokens(&other_admin, &other_pw).await;
    let r = app
        .http
        .get(app.url(&format!("/auth/users/{new_name}")))
        .bearer_auth(&other_token)
        .send()
        .await
        .unwrap();
    problem(r, 404).await;
    let r = app
        .http
        .patch(app.url(&format!("/auth/users/{plain}")))
        .bearer_auth(&other_token)
        .json(&json!({"disabled": true}))
        .send()
        .await
        .unwrap();
    problem(r, 404).await;
}

#[tokio::test]
async fn bad_requests_get_problem_json_that_says_what_is_wrong() {
    let app = App::start("badreq", &[]).await;
    let post = |body: &'static str, content_type: &'static str| {
        app.http
            .post(app.url("/auth/login"))
            .header("content-type", content_type)
            .body(body)
            .send()
    };
    for (body, says) in [
        (r#"{"username": "a", "password": 7}"#, "`password`"),
        (r#"{"username": "a""#, "not valid JSON"),
        (r#"{"username": "a"}"#, "password"),
    ] {
        let answer = problem(post(body, "application/json").await.unwrap(), 400).await;
        assert!(
            answer["detail"].as_str().unwrap().contains(says),
            "{answer}"
        );
    }
    problem(
        post("username=a", "application/x-www-form-urlencoded")
            .await
            .unwrap(),
        415,
    )
    .await;
    let big = format!(
        r#"{{"username": "{}", "password": "x"}}"#,
        "a".repeat(2 * 1024 * 1024)
    );
    let r = app
        .http
        .post(app.url("/auth/login"))
        .header("content-type", "application/json")
        .body(big)
        .send()
        .await
        .unwrap();
    problem(r, 413).await;
    let r = app
        .http
        .get(app.url("/no/such/route"))
        .send()
        .await
        .unwrap();
    problem(r, 404).await;
}

#[tokio::test]
async fn cors_allows_listed_origins_only() {
    let app = App::start("cors", &[]).await;
    let preflight = |origin: &'static str| {
        app.http
            .request(reqwest::Method::OPTIONS, app.url("/auth/login"))
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .header("access-control-request-headers", "content-type")
            .send()
    };
    let ok = preflight("http://localhost:5173").await.unwrap();
    assert_eq!(
        ok.headers()["access-control-allow-origin"],
        "http://localhost:5173"
    );
    assert_eq!(ok.headers()["access-control-allow-credentials"], "true");
    let refused = preflight("https://evil.example").await.unwrap();
    assert!(!refused
        .headers()
        .contains_key("access-control-allow-origin"));
}

#[tokio::test]
async fn rate_limit_answers_429_after_the_burst_and_recovers() {
    let app = App::start(
        "rate",
        &[
            ("RATE_LIMIT_REQUESTS", "3"),
            ("RATE_LIMIT_WINDOW_SECS", "2"),
        ],
    )
    .await;
    let (name, password) = app.user(&tenant(), &[]).await;
    // Anonymous requests count against the caller's IP; find the start of a fresh window first so
    // the burst is not split across two windows.
    let mut remaining = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let limited = loop {
        assert!(
            tokio::time::Instant::now() < deadline,
            "never limited: {remaining:?}"
        );
        let r = app.login(&name, &password).await;
        if r.status() == 429 {
            break r;
        }
        remaining.push(
            r.headers()["x-ratelimit-remaining"]
                .to_str()
                .unwrap()
                .to_owned(),
        );
    };
    assert!(
        remaining.len() >= 3 || remaining.last().map(String::as_str) == Some("0"),
        "{remaining:?}"
    );
    assert_eq!(limited.headers()["x-ratelimit-limit"], "3");
    assert_eq!(limited.headers()["x-ratelimit-remaining"], "0");
    let retry_after: u64 = limited.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=2).contains(&retry_after), "{retry_after}");
    problem(limited, 429).await;
    // Recovers once the window has passed (polled, not slept on).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let r = app.login(&name, &password).await;
        if r.status() == 200 {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "did not recover");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn health_and_openapi_match_the_template() {
    let app = App::start("health", &[]).await;
    let r = app.http.get(app.url("/health")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    // Anonymous, so limited per IP like any other anonymous request.
    for h in [
        "x-ratelimit-limit",
        "x-ratelimit-remaining",
        "x-ratelimit-reset",
    ] {
        assert!(r.headers().contains_key(h), "{h} on /health");
    }
    let r = app
        .http
        .get(app.url("/health/detailed"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["status"], "pass", "{body}");
    let names: Vec<&str> = body["checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["dynamodb", "secret", "migrations", "progress"]);

    let doc: Value = app
        .http
        .get(app.url("/openapi.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let mut documented: Vec<(String, String)> = doc["paths"]
        .as_object()
        .unwrap()
        .iter()
        .flat_map(|(path, ops)| {
            ops.as_object()
                .unwrap()
                .keys()
                .filter(|m| *m != "parameters")
                .map(move |m| (m.to_uppercase(), path.clone()))
        })
        .collect();
    documented.sort();
    let mut routed: Vec<(String, String)> = app
        .template
        .http_functions()
        .iter()
        .flat_map(|f| app.template.http_routes(f))
        .collect();
    routed.sort();
    // GraphQL is described by its SDL (infra/graphql/schema.graphql), not by OpenAPI.
    let rest: Vec<_> = routed
        .iter()
        .filter(|(_, path)| path != "/graphql")
        .cloned()
        .collect();
    assert_eq!(
        documented, rest,
        "OpenAPI documents exactly the template's REST routes"
    );
    // Every template route is served by the runner (no 404 "no such route", no 405).
    for (method, path) in routed {
        let url = app.url(&path.replace("{username}", "someone"));
        let r = app
            .http
            .request(method.parse().unwrap(), url)
            .send()
            .await
            .unwrap();
        assert_ne!(r.status(), 405, "{method} {path}");
        if r.status() == 404 {
            let body: Value = r.json().await.unwrap();
            assert_ne!(body["detail"], "no such route", "{method} {path}");
        }
    }
}

#[tokio::test]
async fn missing_jwt_secret_stops_start_up_with_the_seed_message() {
    let config = shared::config::Config::from_sources(
        [
            ("EVENTS_TABLE", "e"),
            ("STATE_TABLE", "s"),
            ("MIGRATIONS_TABLE", "m"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect(),
        None,
    )
    .unwrap();
    let sdk = wfe_local::endpoint::sdk_config().await;
    let Err(err) = auth::app(&config, &sdk).await else {
        panic!("must refuse to start")
    };
    assert_eq!(
        format!("Error: {err}"),
        "Error: Environment variable JWT_SECRET is required"
    );
}

#[tokio::test]
async fn health_detailed_fails_when_executions_stop_making_progress() {
    // No stream functions and no timer run here: nothing moves a started execution on.
    let app = App::start("health-progress", &[]).await;
    let c = crate::workflows::Client::new(&app, "t-health-progress").await;
    let wf = c
        .create(json!({"name": "idle", "start": "t", "steps": {"t": {"type": "template", "template": "x"}}}))
        .await;
    let id = c.start(&wf, json!({})).await;
    let detailed = || async {
        let r = app
            .http
            .get(app.url("/health/detailed"))
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.json::<Value>().await.unwrap())
    };
    assert_eq!(detailed().await.0, 200, "just started: not idle yet");
    // As if an hour had passed without progress (the default threshold is twice 900 s).
    aws_sdk_dynamodb::Client::new(&app.sdk)
        .update_item()
        .table_name(app.template.tables().unwrap().state)
        .key(
            "pk",
            aws_sdk_dynamodb::types::AttributeValue::S(format!("t-health-progress#EXEC#{id}")),
        )
        .key(
            "sk",
            aws_sdk_dynamodb::types::AttributeValue::S("SUMMARY".into()),
        )
        .update_expression("SET active_at = :old")
        .expression_attribute_values(
            ":old",
            aws_sdk_dynamodb::types::AttributeValue::N(
                (chrono::Utc::now().timestamp() - 3600).to_string(),
            ),
        )
        .send()
        .await
        .unwrap();
    let (status, body) = detailed().await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["failing"], json!(["progress"]), "{body}");
    let check = body["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "progress")
        .unwrap();
    let detail = check["detail"].as_str().unwrap();
    assert!(detail.contains("idle"), "{check}");
    assert!(
        !detail.contains(&id),
        "no execution ids to unauthenticated callers: {check}"
    );
}

/// Users created before names were per tenant (at `USER#<name>`) keep working after the upgrade:
/// login with or without the tenant, refresh, `/auth/me`, and their admin's changes.
#[tokio::test]
async fn users_from_before_per_tenant_names_keep_working() {
    let app = App::start("legacy-users", &[]).await;
    let t = tenant();
    let name = format!("old{}", uuid::Uuid::new_v4().simple());
    let password = "an-old-password-1";
    let user = shared::auth::User {
        username: name.clone(),
        user_id: uuid::Uuid::new_v4().to_string(),
        tenant: t.clone(),
        roles: vec!["user".into()],
        disabled: false,
        token_version: 0,
        created_at: "2026-01-01T00:00:00Z".into(),
        password_hash: shared::auth::password::hash(password).unwrap(),
    };
    let mut item: std::collections::HashMap<String, aws_sdk_dynamodb::types::AttributeValue> =
        serde_dynamo::to_item(&user).unwrap();
    use aws_sdk_dynamodb::types::AttributeValue as A;
    item.insert("pk".into(), A::S(format!("USER#{name}")));
    item.insert("sk".into(), A::S("PROFILE".into()));
    item.insert("gsi1pk".into(), A::S(format!("{t}#USERS")));
    item.insert("gsi1sk".into(), A::S(name.clone()));
    aws_sdk_dynamodb::Client::new(&app.sdk)
        .put_item()
        .table_name(app.template.tables().unwrap().state)
        .set_item(Some(item))
        .send()
        .await
        .unwrap();

    let old_client = app
        .http
        .post(app.url("/auth/login"))
        .json(&json!({"username": name, "password": password}))
        .send()
        .await
        .unwrap();
    assert_eq!(old_client.status(), 200, "a login without a tenant");
    app.remember(&name, &t);
    let (token, refresh) = app.tokens(&name, password).await;
    let me: Value = app
        .http
        .get(app.url("/auth/me"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(me["username"], name.as_str(), "{me}");
    refresh_ok(&app, &refresh).await;
    problem(app.login_in("t-another", &name, password).await, 401).await;

    // Its admin disables it, and the user's token stops working.
    let (admin, admin_pw) = app.user(&t, &["admin"]).await;
    let (admin_token, _) = app.tokens(&admin, &admin_pw).await;
    let r = app
        .http
        .patch(app.url(&format!("/auth/users/{name}")))
        .bearer_auth(&admin_token)
        .json(&json!({"disabled": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    problem(app.login(&name, password).await, 403).await;
    // And the name cannot be taken again in its tenant.
    let r = app
        .http
        .post(app.url("/auth/users"))
        .bearer_auth(&admin_token)
        .json(&json!({"username": name, "password": "a-long-password-2"}))
        .send()
        .await
        .unwrap();
    problem(r, 409).await;
}

/// A key rotation in Secrets Manager: environments started before it read the keys again when a
/// token names a key they do not know (rate-limited), so tokens signed with the new key are
/// accepted everywhere and those signed with the previous one still are.
#[tokio::test]
async fn after_a_key_rotation_running_functions_accept_the_new_key() {
    let app = App::start("jwt-rotation", &[]).await;
    let t = tenant();
    let (name, password) = app.user(&t, &["user"]).await;
    let (before, _) = app.tokens(&name, &password).await;
    let me = async |token: &str| app.get_as("/workflows", token).await;
    assert_eq!(me(&before).await.status(), 200);
    let claims = app.keys().await.verify(&before).unwrap();

    let arn = app.template.function_env("AuthFunction").unwrap()["JWT_SECRET_ARN"].clone();
    let rotated = format!(
        "rotated-{}-0123456789abcdef0123456789",
        uuid::Uuid::new_v4()
    );
    aws_sdk_secretsmanager::Client::new(&app.sdk)
        .put_secret_value()
        .secret_id(&arn)
        .secret_string(&rotated)
        .send()
        .await
        .unwrap();
    // What an auth function started after the rotation signs.
    let after = shared::auth::JwtKeys::new(&rotated, &[])
        .unwrap()
        .issue(&claims)
        .unwrap();
    let r = me(&after).await;
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    assert_eq!(
        me(&before).await.status(),
        200,
        "the previous key still verifies"
    );

    // A key that no rotation produced stays refused.
    let forged = shared::auth::JwtKeys::new("forged-0123456789abcdef0123456789abcdef", &[])
        .unwrap()
        .issue(&claims)
        .unwrap();
    problem(me(&forged).await, 401).await;
}

/// The JWT keys are read after init, in the background. While Secrets Manager cannot give
/// them (here: the secret does not exist yet), requests that need them answer 503 problem+json
/// and change nothing; once the secret can be read, the same running functions serve them,
/// without a restart.
#[tokio::test]
async fn jwt_keys_that_cannot_be_read_yet_answer_503_until_they_can() {
    let secret = format!("e2e-late-jwt-{}", uuid::Uuid::new_v4());
    let app = App::start("late-keys", &[("JWT_SECRET_ARN", &secret)]).await;
    let workflows = async |token: &str| app.get_as("/workflows", token).await;
    let t = tenant();
    let (name, password) = app.user(&t, &["user"]).await;
    let r = app.login(&name, &password).await;
    assert_eq!(r.headers()["retry-after"], "1");
    let body = problem(r, 503).await;
    assert!(
        body["detail"].as_str().unwrap().contains("signing keys"),
        "{body}"
    );
    // The refused login left no refresh family behind.
    let families = aws_sdk_dynamodb::Client::new(&app.sdk)
        .scan()
        .table_name(app.template.tables().unwrap().state)
        .filter_expression("sk = :family AND username = :user")
        .expression_attribute_values(":family", AttributeValue::S("FAMILY".into()))
        .expression_attribute_values(
            ":user",
            AttributeValue::S(shared::auth::user_ref(&t, &name)),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(families.count(), 0);
    let forged = shared::auth::JwtKeys::new("not-the-key-not-the-key-not-the-key!", &[])
        .unwrap()
        .issue(&Claims {
            sub: name.clone(),
            tenant: t.clone(),
            roles: vec!["user".into()],
            iat: chrono::Utc::now().timestamp(),
            exp: chrono::Utc::now().timestamp() + 600,
            jti: "j".into(),
            ver: 0,
        })
        .unwrap();
    let r = workflows(&forged).await;
    assert_eq!(r.headers()["retry-after"], "1");
    problem(r, 503).await;

    aws_sdk_secretsmanager::Client::new(&app.sdk)
        .create_secret()
        .name(&secret)
        .secret_string(format!("late-{}-0123456789abcdef", uuid::Uuid::new_v4()))
        .send()
        .await
        .unwrap();
    // Failed first reads are retried at most once a second.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let token = loop {
        let r = app.login(&name, &password).await;
        if r.status() == 200 {
            let body: Value = r.json().await.unwrap();
            break body["access_token"].as_str().unwrap().to_owned();
        }
        assert_eq!(r.status(), 503, "{}", r.text().await.unwrap());
        assert!(std::time::Instant::now() < deadline, "keys never read");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    // Each function reads the keys for itself (and this one's last failed read may be under a
    // second old): poll it too.
    loop {
        let r = workflows(&token).await;
        if r.status() == 200 {
            break;
        }
        assert_eq!(r.status(), 503, "{}", r.text().await.unwrap());
        assert!(std::time::Instant::now() < deadline, "keys never read");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let r = workflows(&forged).await;
    problem(r, 401).await;
}
