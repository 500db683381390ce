//! AWS client construction: once per cold start, endpoint and region from the environment.

pub use aws_config::SdkConfig;

/// Loads the SDK configuration the standard way: `AWS_REGION`, credentials chain, and
/// `AWS_ENDPOINT_URL` (plus per-service `AWS_ENDPOINT_URL_<SERVICE>`), which is how the local
/// stack points every client at moto.
pub async fn load_sdk_config() -> SdkConfig {
    aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await
}

pub fn dynamodb(config: &SdkConfig) -> aws_sdk_dynamodb::Client {
    aws_sdk_dynamodb::Client::new(config)
}

pub fn secretsmanager(config: &SdkConfig) -> aws_sdk_secretsmanager::Client {
    aws_sdk_secretsmanager::Client::new(config)
}
