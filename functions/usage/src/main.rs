//! Wiring only: config, clients, then the HTTP server.

use shared::config::Config;
use shared::http::{edge_layers, serve};

#[tokio::main]
async fn main() -> Result<(), shared::http::ServeError> {
    shared::telemetry::init();
    let config = Config::load().unwrap_or_else(|e| e.exit());
    let server = config.server().unwrap_or_else(|e| e.exit());
    let sdk = shared::aws::load_sdk_config().await;
    let app = usage::app(&config, &sdk).await.unwrap_or_else(|e| {
        eprintln!("Error: {e}");
        std::process::exit(1)
    });
    serve(
        edge_layers(app, &server.cors_origins),
        &server.host,
        server.port,
    )
    .await
}
