//! `wfe-local`: the product on one machine, against the local stack (moto).
//!
//!   wfe-local up       create the template's tables and secrets, apply migrations when
//!                      AUTO_MIGRATE=true, create the first admin when ADMIN_USERNAME and
//!                      ADMIN_PASSWORD are set, then serve every HTTP function on HOST:PORT
//!                      (127.0.0.1:8080) and the web app build, if any, on WEB_PORT (3000),
//!                      run the schedules and
//!                      deliver the DynamoDB streams to the stream functions, until Ctrl-C
//!   wfe-local tables   create the tables and secrets, then exit
//!   wfe-local env      print the environment a function gets locally, as `export` lines
//!   wfe-local rebuild [tenant]
//!                      rebuild the execution summaries (listings, statistics) from the events
//!   wfe-local failures [replay]
//!                      list what the stream mappings gave up on (their on-failure queue), or
//!                      deliver each such batch again and remove it once it succeeds
//!
//! The stack name (prefix of every table) is `STACK_NAME`, default `wfe-local`.

use std::collections::BTreeMap;

use shared::config::Config;
use wfe_local::endpoint::{endpoint_url, sdk_config};
use wfe_local::runner;

const USAGE: &str = "usage: wfe-local up | tables | env | rebuild [tenant] | failures [replay]";

#[tokio::main]
async fn main() {
    shared::telemetry::init();
    let config = Config::load().unwrap_or_else(|e| e.exit());
    let stack = std::env::var("STACK_NAME").unwrap_or_else(|_| "wfe-local".into());
    let command = std::env::args().nth(1).unwrap_or_else(|| "up".into());
    if !matches!(
        command.as_str(),
        "up" | "tables" | "env" | "rebuild" | "failures"
    ) {
        fail(USAGE);
    }
    let sdk = sdk_config().await;
    let template = runner::provision(&sdk, &stack)
        .await
        .unwrap_or_else(|e| fail(&e));
    match command.as_str() {
        "env" => {
            for (k, v) in template
                .function_env("MigratorFunction")
                .unwrap_or_else(|e| fail(&e.to_string()))
            {
                println!("export {k}={v}");
            }
            println!("export AWS_ENDPOINT_URL={}", endpoint_url());
            // moto takes any credentials; a shell without any would otherwise go looking for
            // instance credentials and fail.
            for (k, default) in [
                ("AWS_ACCESS_KEY_ID", "local"),
                ("AWS_SECRET_ACCESS_KEY", "local"),
                ("AWS_REGION", "us-east-1"),
            ] {
                let v = std::env::var(k).unwrap_or_else(|_| default.to_owned());
                println!("export {k}={v}");
            }
        }
        "rebuild" => {
            let tenant = std::env::args().nth(2);
            let tables = template.tables().unwrap_or_else(|e| fail(&e.to_string()));
            let env = template
                .function_env("OrchestratorFunction")
                .unwrap_or_else(|e| fail(&e.to_string()));
            let config = Config::from_sources(env.into_iter().collect(), None)
                .unwrap_or_else(|e| fail(&e.to_string()));
            let services =
                shared::engine::Services::new(&config, &sdk).unwrap_or_else(|e| fail(&e));
            let written = shared::engine::rebuild::rebuild_summaries(
                &aws_sdk_dynamodb::Client::new(&sdk),
                &tables.events,
                &services.repo,
                &services.projections,
                tenant.as_deref(),
            )
            .await
            .unwrap_or_else(|e| fail(&e));
            println!("rebuilt {written} execution summaries");
        }
        "failures" => {
            let replay = match std::env::args().nth(2).as_deref() {
                None | Some("list") => false,
                Some("replay") => true,
                Some(_) => fail(USAGE),
            };
            let env: BTreeMap<String, String> = std::env::vars().collect();
            let lines = runner::failures(&template, &sdk, &env, replay)
                .await
                .unwrap_or_else(|e| fail(&e));
            if lines.is_empty() {
                println!("no failed stream batches");
            }
            for line in lines {
                println!("{line}");
            }
        }
        "tables" => {
            tracing::info!(stack = %stack, endpoint = %endpoint_url(), "tables and secrets ready")
        }
        _ => up(config, template, sdk).await,
    }
}

async fn up(config: Config, template: wfe_local::template::Template, sdk: aws_config::SdkConfig) {
    if config.flag("AUTO_MIGRATE") {
        let report = runner::migrate(&sdk, &template)
            .await
            .unwrap_or_else(|e| fail(&e));
        print!("{}", migrator::render(&report));
    } else {
        tracing::info!(
            "AUTO_MIGRATE is not true: run `cargo run -p migrator -- up` to apply migrations"
        );
    }
    let overrides: BTreeMap<String, String> = std::env::vars().collect();
    if let (Ok(username), Ok(_)) = (
        std::env::var("ADMIN_USERNAME"),
        std::env::var("ADMIN_PASSWORD"),
    ) {
        let tenant = std::env::var("ADMIN_TENANT").unwrap_or_else(|_| "default".into());
        let tables = template.tables().unwrap_or_else(|e| fail(&e.to_string()));
        let store = shared::auth::AuthStore::new(aws_sdk_dynamodb::Client::new(&sdk), tables.state);
        if auth::cli::create_admin(
            &store,
            &["--username".into(), username, "--tenant".into(), tenant],
        )
        .await
            != 0
        {
            fail("could not create the admin");
        }
    }
    let app = runner::http_app(&template, &sdk, &overrides)
        .await
        .unwrap_or_else(|e| fail(&e));
    let server = config.server().unwrap_or_else(|e| e.exit());
    serve_web(&server.host, app.clone()).await;
    let _schedules = runner::spawn_schedules(&template, &sdk, &overrides)
        .await
        .unwrap_or_else(|e| fail(&e));
    let _streams = runner::spawn_streams(&template, &sdk, &overrides)
        .await
        .unwrap_or_else(|e| fail(&e));
    let listener = tokio::net::TcpListener::bind((server.host.as_str(), server.port))
        .await
        .unwrap_or_else(|e| {
            fail(&format!(
                "cannot listen on {}:{}: {e}",
                server.host, server.port
            ))
        });
    println!(
        "wfe-local: stack {} on {}; API on http://{}; Ctrl-C stops it",
        template.stack(),
        endpoint_url(),
        listener
            .local_addr()
            .map(|a| a.to_string())
            .unwrap_or_default()
    );
    let shutdown = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    runner::serve(listener, app, shutdown)
        .await
        .unwrap_or_else(|e| fail(&e.to_string()));
    println!("wfe-local: stopped");
}

/// The web app on `WEB_PORT` (default 3000, the seed's `cors_origins`), when `frontend/dist` (or
/// `WEB_DIR`) holds a build; `WEB_PORT=0` turns it off.
async fn serve_web(host: &str, api: axum::Router) {
    let port: u16 = std::env::var("WEB_PORT")
        .ok()
        .map(|p| {
            p.parse()
                .unwrap_or_else(|_| fail(&format!("WEB_PORT must be a port number, not {p}")))
        })
        .unwrap_or(3000);
    if port == 0 {
        return;
    }
    let dist = std::env::var_os("WEB_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| wfe_local::workspace_root().join("frontend/dist"));
    if !dist.join("index.html").exists() {
        tracing::info!(dir = %dist.display(), "no web app build: `npm run build --prefix frontend` makes one");
        return;
    }
    let gateway =
        std::env::var("GRAPHQL_GATEWAY_URL").unwrap_or_else(|_| "http://127.0.0.1:4000".into());
    // The API is the product; a taken web port (a dev server, say) is worth a warning, not a stop.
    let listener = match tokio::net::TcpListener::bind((host, port)).await {
        Ok(l) => l,
        Err(e) => {
            tracing::warn!(port, error = %e, "cannot serve the web app on this port (WEB_PORT); the API goes on");
            return;
        }
    };
    println!(
        "wfe-local: web app on http://{}",
        listener
            .local_addr()
            .map(|a| a.to_string())
            .unwrap_or_default()
    );
    let app = wfe_local::web::web_app(&dist, api, &gateway);
    tokio::spawn(async move {
        let shutdown = async {
            let _ = tokio::signal::ctrl_c().await;
        };
        if let Err(e) = runner::serve(listener, app, shutdown).await {
            tracing::error!(error = %e, "the web app server stopped");
        }
    });
}

fn fail(message: &str) -> ! {
    eprintln!("Error: {message}");
    std::process::exit(1)
}
