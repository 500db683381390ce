//! Wiring only: config, clients, then the HTTP server.

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), shared::http::ServeError> {
    // Measured from the process start, for the cold-start time /health/detailed reports.
    let started = std::time::Instant::now();
    shared::http::run_function(
        move |config, sdk| async move { health::app(&config, &sdk, started) },
    )
    .await
}
