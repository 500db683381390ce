//! `/health/detailed` while DynamoDB is unreachable, and after it is back. The outage is made by a
//! TCP proxy in front of moto that stops and starts listening on the same port: to the function it
//! is exactly moto going away and coming back, and moto keeps its tables meanwhile.

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::Value;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

use crate::support::App;

/// Forwards every connection on `addr` to `upstream` until stopped (which also drops live ones).
struct Proxy {
    addr: SocketAddr,
    upstream: SocketAddr,
    task: Option<JoinHandle<()>>,
}

impl Proxy {
    async fn start(upstream: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut proxy = Self {
            addr,
            upstream,
            task: None,
        };
        proxy.task = Some(Self::serve(listener, upstream));
        proxy
    }

    fn serve(listener: TcpListener, upstream: SocketAddr) -> JoinHandle<()> {
        tokio::spawn(async move {
            let mut connections = tokio::task::JoinSet::new();
            while let Ok((mut inbound, _)) = listener.accept().await {
                connections.spawn(async move {
                    if let Ok(mut outbound) = TcpStream::connect(upstream).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
            }
        })
    }

    fn stop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort(); // drops the listener and, with the JoinSet, every open connection
        }
    }

    async fn restart(&mut self) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        let listener = loop {
            match TcpListener::bind(self.addr).await {
                Ok(l) => break l,
                Err(e) => {
                    assert!(
                        tokio::time::Instant::now() < deadline,
                        "cannot rebind {}: {e}",
                        self.addr
                    );
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        };
        self.task = Some(Self::serve(listener, self.upstream));
    }
}

async fn detailed(app: &App) -> (u16, Value) {
    let r = app
        .http
        .get(app.url("/health/detailed"))
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap())
}

#[tokio::test]
async fn health_detailed_names_dynamodb_while_it_is_down_and_passes_when_back() {
    let moto: SocketAddr = wfe_local::endpoint::endpoint_url()
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .parse()
        .expect("AWS_ENDPOINT_URL is host:port on loopback");
    let mut proxy = Proxy::start(moto).await;
    let sdk = wfe_local::endpoint::sdk_config_for(&format!("http://{}", proxy.addr)).await;
    let stack = format!("e2e-outage-{}", std::process::id());
    let app = App::start_on(sdk, &stack, &[]).await;
    assert_eq!(detailed(&app).await.0, 200);

    proxy.stop();
    let (status, body) = detailed(&app).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["status"], "fail");
    let failing: Vec<&str> = body["failing"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert!(failing.contains(&"dynamodb"), "{body}");
    let dynamodb = body["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "dynamodb")
        .unwrap();
    let detail = dynamodb["detail"].as_str().unwrap();
    assert!(detail.contains("table"), "{dynamodb}");
    // Anonymous callers learn that something is wrong, not AWS's error text or the names.
    for leak in [stack.as_str(), "dispatch", "Error", "arn:"] {
        assert!(!body.to_string().contains(leak), "{leak} in {body}");
    }

    proxy.restart().await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let (status, body) = detailed(&app).await;
        if status == 200 {
            assert_eq!(body["status"], "pass");
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "still failing: {body}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
