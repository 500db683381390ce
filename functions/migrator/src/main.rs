//! Wiring only: config, clients, then either the Lambda runtime or the command line.

use lambda_runtime::{service_fn, LambdaEvent};
use shared::config::Config;
use shared::migrate::Migrator;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), lambda_runtime::Error> {
    shared::telemetry::init();
    let config = Config::load().unwrap_or_else(|e| e.exit());
    let tables = config.tables().unwrap_or_else(|e| e.exit());
    let migrations = migrator::embedded()?;

    if std::env::var_os("AWS_LAMBDA_RUNTIME_API").is_none() {
        // An operator's machine: the full credential chain (profiles, assumed roles), and the
        // system's roots (a profile may name any region or endpoint).
        let sdk = aws_config::defaults(aws_config::BehaviorVersion::latest())
            .http_client(shared::tls::aws_https_client_trusting_system_roots())
            .load()
            .await;
        let runner = Migrator::new(shared::aws::dynamodb(&sdk), tables);
        let args: Vec<String> = std::env::args().skip(1).collect();
        std::process::exit(Box::pin(migrator::cli(&runner, &migrations, &args)).await);
    }
    let sdk = shared::aws::load_sdk_config();
    let runner = Migrator::new(shared::aws::dynamodb(&sdk), tables);
    let (runner, migrations) = (&runner, &migrations);
    lambda_runtime::run(service_fn(move |event: LambdaEvent<_>| async move {
        migrator::handle(runner, migrations, event.payload).await
    }))
    .await
}
