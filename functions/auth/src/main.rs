//! Wiring only: config, clients, then the Lambda runtime (or the operator's `create-admin` command).

use shared::config::Config;
use shared::http::{edge_layers, serve};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), shared::http::ServeError> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let create_admin = args.first().map(String::as_str) == Some("create-admin");
    if !create_admin {
        shared::http::under_lambda()?;
    }
    shared::telemetry::init();
    let config = Config::load().unwrap_or_else(|e| e.exit());
    // Credentials from the environment here too (aws-config's chain would be 0.3 MB of this
    // function's artifact): an operator exports theirs first (README).
    let sdk = shared::aws::load_sdk_config();
    if create_admin {
        let tables = config.tables().unwrap_or_else(|e| e.exit());
        let store = shared::auth::AuthStore::new(shared::aws::dynamodb(&sdk), tables.state);
        std::process::exit(auth::cli::create_admin(&store, &args[1..]).await);
    }
    let server = config.server().unwrap_or_else(|e| e.exit());
    let app = auth::app(&config, &sdk).await.unwrap_or_else(|e| {
        eprintln!("Error: {e}");
        std::process::exit(1)
    });
    serve(edge_layers(app, &server.cors_origins)).await
}
