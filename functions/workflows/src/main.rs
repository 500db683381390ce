//! Wiring only: config, clients, then the HTTP server.

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), shared::http::ServeError> {
    shared::http::run_function(|config, sdk| async move { workflows::app(&config, &sdk).await })
        .await
}
