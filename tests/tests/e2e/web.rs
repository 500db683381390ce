//! The runner's web origin (`wfe_local::web`): the build's files, client-side routes answered
//! with `index.html`, the REST API under `/api`, and `/graphql` passed to the gateway, with the
//! seed's "GraphQL gateway unreachable" problem when it is down.

use axum::routing::{get, post};
use axum::Router;
use serde_json::{json, Value};

async fn serve(app: Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    base
}

fn dist() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("wfe-web-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(dir.join("assets")).unwrap();
    std::fs::write(dir.join("index.html"), "<!doctype html><div id=root></div>").unwrap();
    std::fs::write(dir.join("assets/app.js"), "console.log(1)").unwrap();
    dir
}

#[tokio::test]
async fn serves_the_app_the_api_under_api_and_graphql_through_the_gateway() {
    // A gateway that echoes what it was given (headers it should and should not get).
    let gateway = serve(
        Router::new().route(
            "/graphql",
            post(|headers: axum::http::HeaderMap, body: String| async move {
                axum::Json(json!({
                    "data": {
                        "authorization": headers.get("authorization").and_then(|v| v.to_str().ok()),
                        "cookie": headers.get("cookie").and_then(|v| v.to_str().ok()),
                        "body": body,
                    }
                }))
            })
            .get(|q: axum::extract::RawQuery| async move {
                axum::Json(json!({"data": {"query": q.0}}))
            }),
        ),
    )
    .await;
    let api = Router::new().route("/health", get(|| async { "api ok" }));
    let dir = dist();
    let base = serve(wfe_local::web::web_app(&dir, api, &gateway)).await;
    let http = reqwest::Client::new();

    let page = http
        .get(format!("{base}/executions/abc"))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
    assert!(
        page.text().await.unwrap().contains("id=root"),
        "client routes get index.html"
    );
    let asset = http
        .get(format!("{base}/assets/app.js"))
        .send()
        .await
        .unwrap();
    assert_eq!(asset.text().await.unwrap(), "console.log(1)");
    let gone = http
        .get(format!("{base}/assets/removed-by-a-rebuild.js"))
        .send()
        .await
        .unwrap();
    assert_eq!(gone.status(), 404, "a missing bundle is not the app's page");
    let index = http.get(format!("{base}/")).send().await.unwrap();
    assert_eq!(index.headers()["cache-control"], "no-cache");
    let escape = http
        .get(format!("{base}/..%2f..%2fetc%2fpasswd"))
        .send()
        .await
        .unwrap();
    assert!(
        !escape.text().await.unwrap().contains("root:"),
        "no path escapes the build"
    );

    let health = http.get(format!("{base}/api/health")).send().await.unwrap();
    assert_eq!(health.text().await.unwrap(), "api ok");

    let answer: Value = http
        .post(format!("{base}/graphql"))
        .header("authorization", "Bearer t0k")
        .header("cookie", "session=secret")
        .header("content-type", "application/json")
        .body(r#"{"query":"{ me { id } }"}"#)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(answer["data"]["authorization"], "Bearer t0k");
    assert_eq!(
        answer["data"]["cookie"],
        Value::Null,
        "cookies stay at the origin"
    );
    assert_eq!(answer["data"]["body"], r#"{"query":"{ me { id } }"}"#);
    let get_query: Value = http
        .get(format!("{base}/graphql?query=%7Bme%7Bid%7D%7D"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(get_query["data"]["query"], "query=%7Bme%7Bid%7D%7D");

    let big = http
        .post(format!("{base}/graphql"))
        .body(vec![b'x'; 2 << 20])
        .send()
        .await
        .unwrap();
    assert_eq!(big.status(), 413);
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn a_stopped_gateway_is_a_502_problem_naming_its_port() {
    // A port nothing listens on: bind, note it, close.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let dir = dist();
    let base = serve(wfe_local::web::web_app(
        &dir,
        Router::new(),
        &format!("http://127.0.0.1:{port}"),
    ))
    .await;
    let res = reqwest::Client::new()
        .post(format!("{base}/graphql"))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 502);
    assert_eq!(
        res.headers()["content-type"],
        "application/problem+json",
        "a problem, not the gateway's page"
    );
    let body: Value = res.json().await.unwrap();
    assert_eq!(
        body["detail"],
        format!(
            "GraphQL gateway unreachable: ensure the graphql-gateway service is running on port {port}"
        )
    );
    let _ = std::fs::remove_dir_all(dir);
}
