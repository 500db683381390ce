//! AWS client construction: once per cold start, from Lambda's environment.

use aws_credential_types::provider::error::CredentialsError;
use aws_credential_types::provider::{future, ProvideCredentials, SharedCredentialsProvider};
use aws_credential_types::Credentials;
use aws_smithy_types::retry::RetryConfig;
use aws_smithy_types::timeout::TimeoutConfig;
use aws_types::region::Region;
pub use aws_types::SdkConfig;

/// The SDK configuration every function runs with, read from the variables Lambda sets:
/// `AWS_REGION`, `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY` and `AWS_SESSION_TOKEN` (the
/// function role's credentials, valid for the environment's lifetime), plus `AWS_ENDPOINT_URL`,
/// which is how the local stack points every client at moto; also `AWS_USE_FIPS_ENDPOINT`,
/// `AWS_USE_DUALSTACK_ENDPOINT`, `AWS_RETRY_MODE`, `AWS_MAX_ATTEMPTS` and
/// `AWS_IGNORE_CONFIGURED_ENDPOINT_URLS` as the SDK reads them (per-service `AWS_ENDPOINT_URL_*`
/// are not read). Retries (standard, 3 attempts) and the 3.1 s connect timeout are the SDK's
/// defaults, set here explicitly.
///
/// Not aws-config's default chain: it links STS, SSO and profile parsing (about 400 KiB of every
/// artifact) and reads `~/.aws` at start-up, for sources a Lambda function never uses. Operator
/// commands that run outside Lambda: the migrator keeps the full chain; `auth create-admin` reads
/// the environment like the functions (the README says how to export credentials).
/// Every client shares one HTTPS client ([`crate::tls::aws_https_client`]).
pub fn load_sdk_config() -> SdkConfig {
    sdk_config_from(|name| std::env::var(name).ok().filter(|v| !v.is_empty()))
}

fn sdk_config_from(var: impl Fn(&str) -> Option<String>) -> SdkConfig {
    // Missing variables fail each call with a message saying so, not the start: a function's
    // own configuration errors (the seed's messages) come first, as with the default chain.
    let credentials = match (var("AWS_ACCESS_KEY_ID"), var("AWS_SECRET_ACCESS_KEY")) {
        (Some(key), Some(secret)) => SharedCredentialsProvider::new(Credentials::new(
            key,
            secret,
            var("AWS_SESSION_TOKEN"),
            None,
            "environment",
        )),
        _ => SharedCredentialsProvider::new(Missing),
    };
    let mut builder = SdkConfig::builder()
        .behavior_version(
            aws_smithy_runtime_api::client::behavior_version::BehaviorVersion::latest(),
        )
        .region(
            var("AWS_REGION")
                .or_else(|| var("AWS_DEFAULT_REGION"))
                .map(Region::new),
        )
        .credentials_provider(credentials)
        .retry_config(retry_config(&var))
        .use_fips(flag(&var, "AWS_USE_FIPS_ENDPOINT"))
        .use_dual_stack(flag(&var, "AWS_USE_DUALSTACK_ENDPOINT"))
        .timeout_config(
            TimeoutConfig::builder()
                .connect_timeout(std::time::Duration::from_millis(3100))
                .build(),
        )
        .http_client(crate::tls::aws_https_client());
    if let Some(url) = var("AWS_ENDPOINT_URL") {
        if !flag(&var, "AWS_IGNORE_CONFIGURED_ENDPOINT_URLS") {
            builder = builder.endpoint_url(url);
        }
    }
    builder.build()
}

fn flag(var: &impl Fn(&str) -> Option<String>, name: &str) -> bool {
    var(name).is_some_and(|v| v.eq_ignore_ascii_case("true"))
}

/// Standard (3 attempts) unless `AWS_RETRY_MODE=adaptive` or `AWS_MAX_ATTEMPTS` says otherwise.
fn retry_config(var: &impl Fn(&str) -> Option<String>) -> RetryConfig {
    let config = match var("AWS_RETRY_MODE").as_deref() {
        Some(mode) if mode.eq_ignore_ascii_case("adaptive") => RetryConfig::adaptive(),
        _ => RetryConfig::standard(),
    };
    match var("AWS_MAX_ATTEMPTS").and_then(|n| n.trim().parse::<u32>().ok()) {
        Some(n) if n > 0 => config.with_max_attempts(n),
        _ => config,
    }
}

/// No credentials in the environment: every call fails saying which variables to set.
#[derive(Debug)]
struct Missing;

impl ProvideCredentials for Missing {
    fn provide_credentials<'a>(&'a self) -> future::ProvideCredentials<'a>
    where
        Self: 'a,
    {
        future::ProvideCredentials::ready(Err(CredentialsError::not_loaded(
            "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY are not set (Lambda sets them from the \
             function's role; outside Lambda, export them, for example with `aws configure \
             export-credentials --format env`)",
        )))
    }
}

/// The AWS clients of one function, each built once: constructing a client (its configuration
/// layers and runtime plugins) cost about 110 k instructions, and the stores of a function built
/// their own, up to six DynamoDB clients in one cold start (docs/PERFORMANCE.md, cold start).
/// Cloning shares the clients. Secrets Manager's is built when a store that needs it is built
/// (every function with an ARN for its JWT key), so the stream functions that need none skip its
/// endpoint tables. Sharing changes no behaviour: the SDK keeps retry quotas per service and
/// region for the whole process, not per client.
#[derive(Clone)]
pub struct Clients {
    sdk: SdkConfig,
    dynamodb: aws_sdk_dynamodb::Client,
    secrets: std::sync::Arc<std::sync::OnceLock<aws_sdk_secretsmanager::Client>>,
}

impl Clients {
    pub fn new(sdk: &SdkConfig) -> Self {
        Self {
            sdk: sdk.clone(),
            dynamodb: dynamodb(sdk),
            secrets: Default::default(),
        }
    }

    pub fn dynamodb(&self) -> aws_sdk_dynamodb::Client {
        self.dynamodb.clone()
    }

    pub fn secrets(&self) -> aws_sdk_secretsmanager::Client {
        self.secrets
            .get_or_init(|| secretsmanager(&self.sdk))
            .clone()
    }

    /// The configuration the clients were built from (for other services' clients).
    pub fn sdk(&self) -> &SdkConfig {
        &self.sdk
    }
}

pub fn dynamodb(config: &SdkConfig) -> aws_sdk_dynamodb::Client {
    aws_sdk_dynamodb::Client::new(config)
}

pub fn secretsmanager(config: &SdkConfig) -> aws_sdk_secretsmanager::Client {
    aws_sdk_secretsmanager::Client::new(config)
}

/// A strongly consistent GetItem decoded into `T`; `None` when there is no such item. Every
/// store reads single items this way.
pub async fn get_item<T: serde::de::DeserializeOwned>(
    client: &aws_sdk_dynamodb::Client,
    table: &str,
    key: std::collections::HashMap<String, aws_sdk_dynamodb::types::AttributeValue>,
) -> Result<Option<T>, String> {
    let out = client
        .get_item()
        .table_name(table)
        .set_key(Some(key))
        .consistent_read(true)
        .send()
        .await
        .map_err(|e| aws_sdk_dynamodb::error::DisplayErrorContext(e).to_string())?;
    out.item
        .map(|item| {
            serde_dynamo::from_item(item).map_err(|e| format!("unreadable item in {table}: {e}"))
        })
        .transpose()
}

/// Every item of one partition (optionally only sort keys starting with `sk_prefix`), all pages,
/// strongly consistent. For small partitions read whole: registries, price tables, a day's ledger.
pub async fn query_partition(
    client: &aws_sdk_dynamodb::Client,
    table: &str,
    pk: &str,
    sk_prefix: Option<&str>,
) -> Result<Vec<std::collections::HashMap<String, aws_sdk_dynamodb::types::AttributeValue>>, String>
{
    use aws_sdk_dynamodb::types::AttributeValue;
    let mut items = Vec::new();
    let mut start = None;
    loop {
        let mut query = client
            .query()
            .table_name(table)
            .consistent_read(true)
            .expression_attribute_values(":pk", AttributeValue::S(pk.to_owned()))
            .set_exclusive_start_key(start);
        query = match sk_prefix {
            Some(prefix) => query
                .key_condition_expression("pk = :pk AND begins_with(sk, :sk)")
                .expression_attribute_values(":sk", AttributeValue::S(prefix.to_owned())),
            None => query.key_condition_expression("pk = :pk"),
        };
        let page = query
            .send()
            .await
            .map_err(|e| aws_sdk_dynamodb::error::DisplayErrorContext(e).to_string())?;
        items.extend(page.items.unwrap_or_default());
        match page.last_evaluated_key {
            Some(k) if !k.is_empty() => start = Some(k),
            _ => return Ok(items),
        }
    }
}

/// Why [`batch_get`] gave up.
#[derive(Debug, thiserror::Error)]
pub enum BatchGetError {
    #[error("{0}")]
    Backend(String),
    /// DynamoDB kept leaving keys unprocessed (throttling) through every retry.
    #[error("{0}: keys stayed unprocessed after retries (throttled)")]
    Unprocessed(String),
}

/// The items at `keys` (any number; BatchGetItem takes 100 at a time), in no particular order;
/// missing ones are left out. Keys DynamoDB leaves unprocessed (throttling, or a response past
/// 16 MB) are asked again with back-off, a few times, before giving up.
pub async fn batch_get(
    client: &aws_sdk_dynamodb::Client,
    table: &str,
    keys: Vec<std::collections::HashMap<String, aws_sdk_dynamodb::types::AttributeValue>>,
    consistent: bool,
) -> Result<
    Vec<std::collections::HashMap<String, aws_sdk_dynamodb::types::AttributeValue>>,
    BatchGetError,
> {
    use aws_sdk_dynamodb::types::KeysAndAttributes;
    const ATTEMPTS: u32 = 8;
    let err = |e: &dyn std::error::Error| {
        BatchGetError::Backend(aws_sdk_dynamodb::error::DisplayErrorContext(e).to_string())
    };
    // DynamoDB refuses a request that names one key twice; a caller's duplicates are read once.
    let mut seen = std::collections::HashSet::new();
    let keys: Vec<_> = keys
        .into_iter()
        .filter(|key| {
            let mut parts: Vec<String> = key.iter().map(|(n, v)| format!("{n}={v:?}")).collect();
            parts.sort_unstable();
            seen.insert(parts.join("\u{0}"))
        })
        .collect();
    let mut found = Vec::with_capacity(keys.len());
    for chunk in keys.chunks(100) {
        let mut request = Some(
            KeysAndAttributes::builder()
                .set_keys(Some(chunk.to_vec()))
                .consistent_read(consistent)
                .build()
                .map_err(|e| err(&e))?,
        );
        let mut attempt = 0;
        while let Some(keys) = request.take() {
            if attempt > 0 {
                tokio::time::sleep(transact::pause(attempt)).await;
            }
            attempt += 1;
            let out = client
                .batch_get_item()
                .request_items(table, keys)
                .send()
                .await
                .map_err(|e| err(&e))?;
            found.extend(
                out.responses
                    .and_then(|mut r| r.remove(table))
                    .unwrap_or_default(),
            );
            request = out
                .unprocessed_keys
                .and_then(|mut u| u.remove(table))
                .filter(|k| !k.keys.is_empty());
            if request.is_some() && attempt >= ATTEMPTS {
                return Err(BatchGetError::Unprocessed(table.to_owned()));
            }
        }
    }
    Ok(found)
}

/// Pagination cursors: DynamoDB's `LastEvaluatedKey` as URL-safe base64 JSON. A cursor is only
/// accepted back for the listing it came from (same index partition), so it cannot be used to
/// page through another tenant's items.
pub mod cursor {
    use std::collections::HashMap;

    use aws_sdk_dynamodb::types::AttributeValue;
    use base64::Engine as _;

    pub const INVALID: &str = "`cursor` is not a cursor this listing returned";

    pub fn encode(key: HashMap<String, AttributeValue>) -> String {
        let json: serde_json::Value = serde_dynamo::from_item(key).unwrap_or_default();
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(json.to_string())
    }

    /// The start key in `cursor`, if its `partition_name` attribute is `partition`.
    pub fn decode(
        cursor: &str,
        partition_name: &str,
        partition: &str,
    ) -> Result<HashMap<String, AttributeValue>, &'static str> {
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(cursor)
            .map_err(|_| INVALID)?;
        let json: serde_json::Value = serde_json::from_slice(&bytes).map_err(|_| INVALID)?;
        if json.get(partition_name).and_then(|v| v.as_str()) != Some(partition) {
            return Err(INVALID);
        }
        serde_dynamo::to_item(json).map_err(|_| INVALID)
    }
}

/// TransactWriteItems with DynamoDB's cancellation reasons told apart.
pub mod transact {
    use aws_sdk_dynamodb::error::{DisplayErrorContext, SdkError};
    use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
    use aws_sdk_dynamodb::types::TransactWriteItem;
    use std::time::Duration;

    /// How often a transaction cancelled only by conflicts is sent again, and the back-off cap.
    pub const CONFLICT_ATTEMPTS: u32 = 10;
    const MAX_PAUSE_MS: u64 = 1_000;

    /// Why a transaction was cancelled, item by item (`None` where that item was fine).
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct Cancelled {
        pub reasons: Vec<Option<String>>,
    }

    impl Cancelled {
        /// Item `i`'s condition did not hold.
        pub fn failed(&self, i: usize) -> bool {
            self.code(i) == Some("ConditionalCheckFailed")
        }

        pub fn any_failed(&self) -> bool {
            (0..self.reasons.len()).any(|i| self.failed(i))
        }

        /// Only overlapping transactions stood in the way: sending it again may succeed.
        pub fn only_conflicts(&self) -> bool {
            let codes: Vec<&str> = (0..self.reasons.len())
                .filter_map(|i| self.code(i))
                .collect();
            !codes.is_empty() && codes.iter().all(|c| *c == "TransactionConflict")
        }

        fn code(&self, i: usize) -> Option<&str> {
            self.reasons
                .get(i)
                .and_then(|r| r.as_deref())
                .filter(|c| *c != "None")
        }
    }

    #[derive(Debug, thiserror::Error)]
    pub enum TransactError {
        #[error("transaction cancelled: {0:?}")]
        Cancelled(Cancelled),
        #[error("{0}")]
        Other(String),
    }

    /// Sends the transaction; one that AWS cancelled only because another transaction held one of
    /// its items (`TransactionConflict`, which happens even when every condition holds) is sent
    /// again after a jittered, growing pause, up to `CONFLICT_ATTEMPTS` times. Any other
    /// cancellation comes back with its reasons, for the caller to tell a failed condition from
    /// a conflict that would not clear.
    pub async fn write(
        client: &aws_sdk_dynamodb::Client,
        items: Vec<TransactWriteItem>,
    ) -> Result<(), TransactError> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let sent = client
                .transact_write_items()
                .set_transact_items(Some(items.clone()))
                .send()
                .await;
            let cancelled = match sent {
                Ok(_) => return Ok(()),
                Err(e) => classify(e)?,
            };
            if !cancelled.only_conflicts() || attempt >= CONFLICT_ATTEMPTS {
                return Err(TransactError::Cancelled(cancelled));
            }
            tokio::time::sleep(pause(attempt)).await;
        }
    }

    /// Full jitter over an exponential ceiling (10 ms, 20 ms, ... capped): concurrent losers
    /// spread out instead of colliding again in lockstep.
    pub fn pause(attempt: u32) -> Duration {
        let ceiling = (10u64 << attempt.min(10)).min(MAX_PAUSE_MS);
        let random = uuid::Uuid::new_v4().as_u128() as u64;
        Duration::from_millis(1 + random % ceiling)
    }

    fn classify(
        e: SdkError<TransactWriteItemsError, aws_sdk_dynamodb::config::http::HttpResponse>,
    ) -> Result<Cancelled, TransactError> {
        let text = DisplayErrorContext(&e).to_string();
        match e {
            SdkError::ServiceError(service) => match service.into_err() {
                TransactWriteItemsError::TransactionCanceledException(cancel) => Ok(Cancelled {
                    reasons: cancel
                        .cancellation_reasons()
                        .iter()
                        .map(|r| r.code().map(str::to_owned))
                        .collect(),
                }),
                _ => Err(TransactError::Other(text)),
            },
            _ => Err(TransactError::Other(text)),
        }
    }
}

/// Secrets Manager writes shared by the stores that keep tenants' secrets (MCP tokens, tenant
/// secrets): errors are the SDK's error context, for logs only.
pub mod secrets {
    use aws_sdk_dynamodb::error::DisplayErrorContext;

    /// Sets the secret `name` to `value`, creating it the first time; returns its ARN.
    pub async fn put(
        client: &aws_sdk_secretsmanager::Client,
        name: &str,
        value: &str,
        description: &str,
    ) -> Result<String, String> {
        match client
            .put_secret_value()
            .secret_id(name)
            .secret_string(value)
            .send()
            .await
        {
            Ok(out) => return out.arn.ok_or_else(|| "no ARN".to_owned()),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|s| s.is_resource_not_found_exception()) => {}
            Err(e) => return Err(DisplayErrorContext(e).to_string()),
        }
        match client
            .create_secret()
            .name(name)
            .description(description)
            .secret_string(value)
            .send()
            .await
        {
            Ok(out) => out.arn.ok_or_else(|| "no ARN".to_owned()),
            // Another writer created it meanwhile: set the value on theirs.
            Err(e)
                if e.as_service_error()
                    .is_some_and(|s| s.is_resource_exists_exception()) =>
            {
                client
                    .put_secret_value()
                    .secret_id(name)
                    .secret_string(value)
                    .send()
                    .await
                    .map_err(|e| DisplayErrorContext(e).to_string())?
                    .arn
                    .ok_or_else(|| "no ARN".to_owned())
            }
            Err(e) => Err(DisplayErrorContext(e).to_string()),
        }
    }

    /// Deletes the secret `name` at once (no recovery window: a deleted tenant secret must
    /// not be readable); a missing one is not an error.
    pub async fn delete(client: &aws_sdk_secretsmanager::Client, name: &str) -> Result<(), String> {
        match client
            .delete_secret()
            .secret_id(name)
            .force_delete_without_recovery(true)
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|s| s.is_resource_not_found_exception()) =>
            {
                Ok(())
            }
            Err(e) => Err(DisplayErrorContext(e).to_string()),
        }
    }

    /// The secret's current value; `None` when there is no such secret.
    pub async fn get(
        client: &aws_sdk_secretsmanager::Client,
        id: &str,
    ) -> Result<Option<String>, String> {
        match client.get_secret_value().secret_id(id).send().await {
            Ok(out) => Ok(out.secret_string),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|s| s.is_resource_not_found_exception()) =>
            {
                Ok(None)
            }
            Err(e) => Err(DisplayErrorContext(e).to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env<'a>(vars: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |name| {
            vars.iter()
                .find(|(n, _)| *n == name)
                .map(|(_, v)| (*v).to_owned())
        }
    }

    #[test]
    fn reads_region_credentials_and_endpoint_from_the_environment() {
        let config = sdk_config_from(env(&[
            ("AWS_DEFAULT_REGION", "eu-west-1"),
            ("AWS_ACCESS_KEY_ID", "AKID"),
            ("AWS_SECRET_ACCESS_KEY", "secret"),
            ("AWS_ENDPOINT_URL", "http://127.0.0.1:4566"),
        ]));
        assert_eq!(config.region().map(|r| r.as_ref()), Some("eu-west-1"));
        assert_eq!(config.endpoint_url(), Some("http://127.0.0.1:4566"));
        assert_eq!(config.retry_config().map(|r| r.max_attempts()), Some(3));
        assert_eq!(config.use_fips(), Some(false));

        let config = sdk_config_from(env(&[
            ("AWS_REGION", "us-gov-west-1"),
            ("AWS_USE_FIPS_ENDPOINT", "true"),
            ("AWS_MAX_ATTEMPTS", "5"),
            ("AWS_ENDPOINT_URL", "http://127.0.0.1:4566"),
            ("AWS_IGNORE_CONFIGURED_ENDPOINT_URLS", "true"),
        ]));
        assert_eq!(config.use_fips(), Some(true));
        assert_eq!(config.retry_config().map(|r| r.max_attempts()), Some(5));
        assert_eq!(config.endpoint_url(), None);
    }

    #[tokio::test]
    async fn a_call_without_credentials_says_which_variables_to_set() {
        let config = sdk_config_from(env(&[("AWS_REGION", "us-east-1")]));
        let err = config
            .credentials_provider()
            .unwrap()
            .provide_credentials()
            .await
            .unwrap_err();
        let text = format!("{err:?}");
        assert!(text.contains("AWS_ACCESS_KEY_ID"), "{text}");
    }
}
