//! A provider's API key: from the environment (`<PROVIDER>_API_KEY`), or from Secrets Manager
//! (`<PROVIDER>_API_KEY_ARN`), read in the background from cold start on so that init does not
//! wait for the round trip; the first call that needs the key waits for that read.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{ApiKey, ProviderError};
use crate::telemetry::metrics::{emit, Unit};

/// How long one read of a key may take.
const READ_TIMEOUT: Duration = Duration::from_secs(5);
/// A failed read is the answer for this long after it ended, and to every caller that was
/// waiting for it: an outage costs one read per second per environment, not one per call.
const RETRY_AFTER: Duration = Duration::from_secs(1);

#[derive(Clone)]
pub struct KeyCell(Arc<Source>);

enum Source {
    Value(ApiKey),
    Secret {
        /// The variable that named the secret, for messages.
        variable: String,
        arn: String,
        secrets: aws_sdk_secretsmanager::Client,
        /// Held during a read: concurrent callers wait for it and share its result.
        state: tokio::sync::Mutex<State>,
    },
}

#[derive(Default)]
struct State {
    key: Option<ApiKey>,
    /// When the last failed read ended, and its error.
    failed: Option<(Instant, ProviderError)>,
}

impl KeyCell {
    pub fn value(key: ApiKey) -> Self {
        Self(Arc::new(Source::Value(key)))
    }

    /// A key read from the secret `arn` on first use; [`KeyCell::prefetch`] starts that read.
    pub fn secret(variable: String, arn: String, secrets: aws_sdk_secretsmanager::Client) -> Self {
        Self(Arc::new(Source::Secret {
            variable,
            arn,
            secrets,
            state: tokio::sync::Mutex::new(State::default()),
        }))
    }

    /// Starts reading the key now, in the background (at cold start: the read overlaps the
    /// runtime's first poll for work instead of lengthening init).
    pub fn prefetch(&self) {
        if matches!(*self.0, Source::Secret { .. }) {
            let cell = self.clone();
            tokio::spawn(async move {
                let _ = cell.get().await;
            });
        }
    }

    /// The key. One read at a time; a failed read is every caller's answer for a second, then
    /// the next caller reads again.
    pub async fn get(&self) -> Result<ApiKey, ProviderError> {
        let (variable, arn, secrets, state) = match &*self.0 {
            Source::Value(key) => return Ok(key.clone()),
            Source::Secret {
                variable,
                arn,
                secrets,
                state,
            } => (variable, arn, secrets, state),
        };
        let waiting_since = Instant::now();
        let mut state = state.lock().await;
        if let Some(key) = &state.key {
            return Ok(key.clone());
        }
        if let Some((ended, e)) = &state.failed {
            if *ended >= waiting_since || ended.elapsed() < RETRY_AFTER {
                return Err(e.clone());
            }
        }
        let started = Instant::now();
        match read(variable, arn, secrets).await {
            Ok(key) => {
                state.failed = None;
                state.key = Some(key.clone());
                Ok(key)
            }
            Err(e) => {
                emit(
                    "provider_key_reads_failed_total",
                    1.0,
                    Unit::Count,
                    &[("variable", variable.as_str())],
                );
                // A read that outlasted its timeout by far was frozen with its environment
                // (the one started at cold start): its failure says nothing about now.
                state.failed = (started.elapsed() <= READ_TIMEOUT * 3 / 2)
                    .then(|| (Instant::now(), e.clone()));
                Err(e)
            }
        }
    }
}

/// One read. What Secrets Manager says goes to the log only: it names the account, role and
/// secret, which are not the tenant's to see in a step's error.
async fn read(
    variable: &str,
    arn: &str,
    secrets: &aws_sdk_secretsmanager::Client,
) -> Result<ApiKey, ProviderError> {
    let unavailable = |retryable: bool| ProviderError::KeyUnavailable {
        message: format!("{variable} could not be read (the worker's log says why)"),
        retryable,
    };
    let answer = match tokio::time::timeout(
        READ_TIMEOUT,
        secrets.get_secret_value().secret_id(arn).send(),
    )
    .await
    {
        Err(_) => {
            tracing::warn!(variable, "reading a provider key timed out");
            return Err(unavailable(true));
        }
        Ok(answer) => answer,
    };
    match answer {
        Ok(out) => out.secret_string.map(ApiKey::new).ok_or_else(|| {
            tracing::error!(variable, "the provider key's secret has no string value");
            unavailable(false)
        }),
        Err(e) => {
            // Missing secret, no permission, undecryptable: only an operator can fix these.
            let permanent = e.as_service_error().is_some_and(|s| {
                s.is_resource_not_found_exception()
                    || s.is_decryption_failure()
                    || s.is_invalid_parameter_exception()
                    || s.is_invalid_request_exception()
                    || s.meta().code() == Some("AccessDeniedException")
            });
            tracing::error!(
                variable,
                error = %aws_sdk_secretsmanager::error::DisplayErrorContext(&e),
                "reading a provider key failed"
            );
            Err(unavailable(!permanent))
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;

    /// A Secrets Manager that answers every read after `delay` with ResourceNotFound.
    async fn slow_missing_secret(delay: Duration) -> (String, Arc<AtomicU32>) {
        let reads = Arc::new(AtomicU32::new(0));
        let counted = reads.clone();
        let app = axum::Router::new().fallback(move || {
            let counted = counted.clone();
            async move {
                counted.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(delay).await;
                (
                    axum::http::StatusCode::BAD_REQUEST,
                    [("content-type", "application/x-amz-json-1.1")],
                    r#"{"__type":"ResourceNotFoundException","message":"no such secret"}"#,
                )
            }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        (url, reads)
    }

    #[tokio::test]
    async fn callers_waiting_for_a_slow_failed_read_share_it() {
        let (url, reads) = slow_missing_secret(Duration::from_millis(1200)).await;
        let config = aws_sdk_secretsmanager::Config::builder()
            .behavior_version_latest()
            .region(aws_sdk_secretsmanager::config::Region::new("us-east-1"))
            .credentials_provider(aws_credential_types::Credentials::new(
                "a", "b", None, None, "test",
            ))
            .endpoint_url(url)
            .http_client(crate::tls::aws_https_client())
            .build();
        let cell = KeyCell::secret(
            "OPENAI_API_KEY_ARN".into(),
            "missing".into(),
            aws_sdk_secretsmanager::Client::from_conf(config),
        );
        // Five calls at once: one read, longer than the second a failure stands for.
        let results = futures::future::join_all((0..5).map(|_| cell.get())).await;
        assert_eq!(reads.load(Ordering::SeqCst), 1);
        for result in results {
            match result {
                Err(ProviderError::KeyUnavailable { message, retryable }) => {
                    assert!(!retryable, "a missing secret is for an operator to fix");
                    assert!(message.contains("OPENAI_API_KEY_ARN"), "{message}");
                    assert!(!message.contains("no such secret"), "{message}");
                }
                other => panic!("{other:?}"),
            }
        }
        // Within the second after it, the failure is the answer; no new read.
        assert!(cell.get().await.is_err());
        assert_eq!(reads.load(Ordering::SeqCst), 1);
    }
}
