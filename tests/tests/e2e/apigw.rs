//! API Gateway compatibility: real HTTP API (payload 2.0) and REST API (1.0) event JSON, turned
//! into requests by lambda_http exactly as under Lambda, through the functions' own routers: a
//! stage prefix, a base64 body, path parameters, and the gateway's request id.

use axum::Router;
use base64::Engine;
use serde_json::{json, Value};
use tower::ServiceExt;

use crate::support::App;

fn fixture(name: &str) -> Value {
    let path = wfe_local::workspace_root()
        .join("tests/fixtures")
        .join(name);
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// An HTTP API (v2) event for `method path` under stage `dev`, as API Gateway sends it.
fn v2(
    method: &str,
    path: &str,
    route: &str,
    params: Value,
    headers: Value,
    body: Option<&str>,
) -> String {
    let mut e = fixture("example-apigw-v2-request-no-authorizer.json");
    e["rawPath"] = json!(format!("/dev{path}"));
    e["routeKey"] = json!(format!("{method} {route}"));
    e["requestContext"]["routeKey"] = e["routeKey"].clone();
    e["requestContext"]["stage"] = json!("dev");
    e["requestContext"]["http"]["method"] = json!(method);
    e["requestContext"]["http"]["path"] = json!(format!("/dev{path}"));
    e["pathParameters"] = params;
    if let Some(h) = headers.as_object() {
        for (k, v) in h {
            e["headers"][k] = v.clone();
        }
    }
    if let Some(body) = body {
        e["body"] = json!(base64::engine::general_purpose::STANDARD.encode(body));
        e["isBase64Encoded"] = json!(true);
        e["headers"]["content-length"] = json!(body.len().to_string());
    }
    e.to_string()
}

/// A REST API (v1) event, stage `prod`, as API Gateway sends it.
fn v1(
    method: &str,
    path: &str,
    resource: &str,
    params: Value,
    headers: Value,
    body: Option<&str>,
) -> String {
    let mut e = fixture("example-apigw-request.json");
    e["httpMethod"] = json!(method);
    e["path"] = json!(path);
    e["resource"] = json!(resource);
    e["pathParameters"] = params;
    e["queryStringParameters"] = Value::Null;
    e["multiValueQueryStringParameters"] = Value::Null;
    e["requestContext"]["stage"] = json!("prod");
    e["requestContext"]["httpMethod"] = json!(method);
    e["requestContext"]["path"] = json!(format!("/prod{path}"));
    e["requestContext"]["resourcePath"] = json!(resource);
    e["requestContext"]["requestId"] = json!("rest-request-1");
    if let Some(h) = headers.as_object() {
        for (k, v) in h {
            e["headers"][k] = v.clone();
            e["multiValueHeaders"][k] = json!([v]);
        }
    }
    e["body"] = body.map_or(Value::Null, |b| json!(b));
    e["isBase64Encoded"] = json!(false);
    e.to_string()
}

async fn call(router: &Router, event: &str) -> (u16, axum::http::HeaderMap, Value) {
    let request = lambda_http::request::from_str(event).expect("lambda_http parses the event");
    let response = shared::http::gateway_service(router.clone())
        .oneshot(request)
        .await
        .unwrap();
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap();
    (
        status,
        headers,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

#[tokio::test]
async fn auth_and_health_answer_real_gateway_events() {
    let app = App::start("apigw", &[]).await;
    let tenant = format!("t{}", uuid::Uuid::new_v4().simple());
    let (admin, password) = app.user(&tenant, &["admin"]).await;
    let env: std::collections::BTreeMap<String, String> =
        [("RATE_LIMIT_REQUESTS".to_owned(), "1000".to_owned())]
            .into_iter()
            .collect();
    let config = wfe_local::runner::function_config(&app.template, "AuthFunction", &env).unwrap();
    let auth = shared::http::edge_layers(auth::app(&config, &app.sdk).await.unwrap(), &[]);
    let health_config =
        wfe_local::runner::function_config(&app.template, "HealthFunction", &env).unwrap();
    let health = shared::http::edge_layers(
        health::app(&health_config, &app.sdk, std::time::Instant::now()).unwrap(),
        &[],
    );
    let json_type = json!({"content-type": "application/json"});
    let login =
        format!(r#"{{"tenant": "{tenant}", "username": "{admin}", "password": "{password}"}}"#);

    // HTTP API (2.0): stage prefix and a base64 body.
    let (status, headers, body) = call(
        &auth,
        &v2(
            "POST",
            "/auth/login",
            "/auth/login",
            Value::Null,
            json_type.clone(),
            Some(&login),
        ),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        headers["x-request-id"], "LV7fzho-PHcEJPw=",
        "the gateway's request id"
    );
    assert!(headers.contains_key("x-ratelimit-limit"));
    let token = body["access_token"].as_str().unwrap().to_owned();

    // Path parameters.
    let bearer = json!({"authorization": format!("Bearer {token}")});
    let (status, _, body) = call(
        &auth,
        &v2(
            "GET",
            &format!("/auth/users/{admin}"),
            "/auth/users/{username}",
            json!({"username": admin}),
            bearer.clone(),
            None,
        ),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["username"], admin.as_str());

    // REST API (1.0): stage in requestContext, JSON body, bad input as problem+json.
    let (status, headers, body) = call(
        &auth,
        &v1(
            "POST",
            "/auth/login",
            "/auth/login",
            Value::Null,
            json_type.clone(),
            Some(&login),
        ),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(headers["x-request-id"], "rest-request-1");
    let (status, headers, body) = call(
        &auth,
        &v1(
            "POST",
            "/auth/login",
            "/auth/login",
            Value::Null,
            json_type,
            Some(r#"{"username": 1}"#),
        ),
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(headers["content-type"], "application/problem+json");
    assert_eq!(body["request_id"], "rest-request-1");
    let (status, _, body) = call(
        &auth,
        &v1(
            "GET",
            &format!("/auth/users/{admin}"),
            "/auth/users/{username}",
            json!({"username": admin}),
            bearer,
            None,
        ),
    )
    .await;
    assert_eq!(status, 200, "{body}");

    for event in [
        v2("GET", "/health", "/health", Value::Null, json!({}), None),
        v1(
            "GET",
            "/health/detailed",
            "/health/detailed",
            Value::Null,
            json!({}),
            None,
        ),
    ] {
        let (status, _, body) = call(&health, &event).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["status"], "pass");
    }
}
