//! A provider's API key: from the environment (`<PROVIDER>_API_KEY`), or from Secrets Manager
//! (`<PROVIDER>_API_KEY_ARN`), read in the background from cold start on so that init does not
//! wait for the round trip; the first call that needs the key waits for that read.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{ApiKey, ProviderError};

/// How long one read of a key may take.
const READ_TIMEOUT: Duration = Duration::from_secs(5);
/// A failed read is the answer for this long to every caller (those waiting for it included),
/// so an outage costs one read per second per environment, not one per call.
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
    /// When the last failed read started, and its error.
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
        let mut state = state.lock().await;
        if let Some(key) = &state.key {
            return Ok(key.clone());
        }
        if let Some((at, e)) = &state.failed {
            if at.elapsed() < RETRY_AFTER {
                return Err(e.clone());
            }
        }
        // Stamped when the read starts: a read frozen with its environment and timed out on
        // thaw does not hold back the first call after it.
        let started = Instant::now();
        match read(variable, arn, secrets).await {
            Ok(key) => {
                state.failed = None;
                state.key = Some(key.clone());
                Ok(key)
            }
            Err(e) => {
                state.failed = Some((started, e.clone()));
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
