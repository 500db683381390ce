//! Wiring only: config, clients, then the HTTP server. `--print-sdl` prints the subgraph's
//! schema (what a gateway composes) and exits.

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), shared::http::ServeError> {
    if std::env::args().nth(1).as_deref() == Some("--print-sdl") {
        print!("{}", graphql::sdl());
        return Ok(());
    }
    shared::http::run_function(|config, sdk| async move { graphql::app(&config, &sdk).await }).await
}
