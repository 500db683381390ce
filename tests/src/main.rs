//! `wfe-local`: the product on one machine, against the local stack (moto).
//!
//!   wfe-local up       create the template's tables, apply migrations when AUTO_MIGRATE=true,
//!                      then stay up until Ctrl-C
//!   wfe-local tables   create the tables and exit
//!   wfe-local env      print the environment a function gets locally, as `export` lines
//!
//! The stack name (prefix of every table) is `STACK_NAME`, default `wfe-local`.

use shared::config::Config;
use shared::migrate::Migrator;
use wfe_local::endpoint::{create_tables, endpoint_url, sdk_config};
use wfe_local::template::Template;

const USAGE: &str = "usage: wfe-local up | tables | env";

#[tokio::main]
async fn main() {
    shared::telemetry::init();
    let config = Config::load().unwrap_or_else(|e| e.exit());
    let stack = std::env::var("STACK_NAME").unwrap_or_else(|_| "wfe-local".into());
    let template = Template::workspace(&stack).unwrap_or_else(|e| fail(&e.to_string()));
    let command = std::env::args().nth(1).unwrap_or_else(|| "up".into());
    match command.as_str() {
        "env" => {
            let env = template
                .function_env("MigratorFunction")
                .unwrap_or_else(|e| fail(&e.to_string()));
            for (k, v) in env {
                println!("export {k}={v}");
            }
            println!("export AWS_ENDPOINT_URL={}", endpoint_url());
        }
        "tables" | "up" => {
            let sdk = sdk_config().await;
            let dynamodb = aws_sdk_dynamodb::Client::new(&sdk);
            let names = create_tables(&dynamodb, &template)
                .await
                .unwrap_or_else(|e| fail(&e));
            tracing::info!(stack = %stack, tables = ?names, endpoint = %endpoint_url(), "tables ready");
            if command == "tables" {
                return;
            }
            if config.flag("AUTO_MIGRATE") {
                let tables = template.tables().unwrap_or_else(|e| fail(&e.to_string()));
                let migrations = migrator::embedded().unwrap_or_else(|e| fail(&e.to_string()));
                let report =
                    Box::pin(Migrator::new(dynamodb.clone(), tables).up(&migrations, None))
                        .await
                        .unwrap_or_else(|e| fail(&e.to_string()));
                print!("{}", migrator::render(&report));
            } else {
                tracing::info!("AUTO_MIGRATE is not true: run `cargo run -p migrator -- up` to apply migrations");
            }
            println!(
                "wfe-local: stack {stack} is up on {}; Ctrl-C stops it",
                endpoint_url()
            );
            let _ = tokio::signal::ctrl_c().await;
            println!("wfe-local: stopped");
        }
        _ => fail(USAGE),
    }
}

fn fail(message: &str) -> ! {
    eprintln!("Error: {message}");
    std::process::exit(1)
}
