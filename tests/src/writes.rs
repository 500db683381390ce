//! Wakes the local stream mappings as soon as a DynamoDB write succeeds, so a record is handed to
//! its function when it is written rather than on the next timed poll (the mappings still poll on
//! a timer for writes made by other processes). Every SDK config of the local stack carries this
//! HTTP client; it only watches, it never changes a request or a response.

use std::sync::LazyLock;

use aws_config::SdkConfig;
use aws_smithy_runtime_api::client::http::{
    HttpClient, HttpConnector, HttpConnectorFuture, HttpConnectorSettings, SharedHttpClient,
    SharedHttpConnector,
};
use aws_smithy_runtime_api::client::orchestrator::HttpRequest;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use tokio::sync::watch;

/// Counts successful DynamoDB writes in this process; subscribers wake on every change.
static WRITES: LazyLock<watch::Sender<u64>> = LazyLock::new(|| watch::channel(0).0);

/// DynamoDB operations that can add a stream record.
const WRITE_OPS: [&str; 5] = [
    "PutItem",
    "UpdateItem",
    "DeleteItem",
    "TransactWriteItems",
    "BatchWriteItem",
];

/// A receiver that changes whenever a DynamoDB write made through [`wrap`]ped config succeeds.
pub fn subscribe() -> watch::Receiver<u64> {
    WRITES.subscribe()
}

/// `sdk` with its HTTP client wrapped so that successful DynamoDB writes wake [`subscribe`]rs.
pub fn wrap(sdk: SdkConfig) -> SdkConfig {
    let Some(inner) = sdk.http_client() else {
        return sdk;
    };
    sdk.to_builder()
        .http_client(SharedHttpClient::new(Watching { inner }))
        .build()
}

#[derive(Debug)]
struct Watching {
    inner: SharedHttpClient,
}

impl HttpClient for Watching {
    fn http_connector(
        &self,
        settings: &HttpConnectorSettings,
        components: &RuntimeComponents,
    ) -> SharedHttpConnector {
        SharedHttpConnector::new(WatchingConnector {
            inner: self.inner.http_connector(settings, components),
        })
    }
}

#[derive(Debug)]
struct WatchingConnector {
    inner: SharedHttpConnector,
}

impl HttpConnector for WatchingConnector {
    fn call(&self, request: HttpRequest) -> HttpConnectorFuture {
        let write = request
            .headers()
            .get("x-amz-target")
            .and_then(|t| t.strip_prefix("DynamoDB_20120810."))
            .is_some_and(|op| WRITE_OPS.contains(&op));
        let call = self.inner.call(request);
        if !write {
            return call;
        }
        HttpConnectorFuture::new(async move {
            let response = call.await;
            if response.as_ref().is_ok_and(|r| r.status().is_success()) {
                WRITES.send_modify(|n| *n = n.wrapping_add(1));
            }
            response
        })
    }
}
