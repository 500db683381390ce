//! A provider's API key: from the environment (`<PROVIDER>_API_KEY`), or from Secrets Manager
//! (`<PROVIDER>_API_KEY_ARN`), read in the background from cold start on so that init does not
//! wait for the round trip; the first call that needs the key waits for that read.

use std::sync::Arc;
use std::time::Duration;

use super::{ApiKey, ProviderError};

/// How long one read of a key may take; a call that finds the read failed fails retryably
/// (the step's retry policy tries again, and the next call reads again).
const READ_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Clone)]
pub struct KeyCell(Arc<Source>);

enum Source {
    Value(ApiKey),
    Secret {
        /// The variable that named the secret, for messages.
        variable: String,
        arn: String,
        secrets: aws_sdk_secretsmanager::Client,
        key: tokio::sync::OnceCell<ApiKey>,
    },
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
            key: tokio::sync::OnceCell::new(),
        }))
    }

    /// Starts reading the key now, in the background (at cold start: the read overlaps the
    /// runtime's first poll for work instead of lengthening init).
    pub fn prefetch(&self) {
        if matches!(*self.0, Source::Secret { .. }) {
            let cell = self.clone();
            tokio::spawn(async move {
                if let Err(e) = cell.get().await {
                    tracing::warn!(error = ?e, "provider key not read yet; calls will try again");
                }
            });
        }
    }

    /// The key; concurrent callers share one read, and a failed read is tried again by the next.
    pub async fn get(&self) -> Result<ApiKey, ProviderError> {
        match &*self.0 {
            Source::Value(key) => Ok(key.clone()),
            Source::Secret {
                variable,
                arn,
                secrets,
                key,
            } => key
                .get_or_try_init(|| async {
                    let read = tokio::time::timeout(
                        READ_TIMEOUT,
                        secrets.get_secret_value().secret_id(arn).send(),
                    )
                    .await
                    .map_err(|_| {
                        ProviderError::Unavailable(format!("reading {variable}: timed out"))
                    })?
                    .map_err(|e| {
                        ProviderError::Unavailable(format!(
                            "reading {variable}: {}",
                            aws_sdk_secretsmanager::error::DisplayErrorContext(e)
                        ))
                    })?;
                    read.secret_string.map(ApiKey::new).ok_or_else(|| {
                        ProviderError::Unavailable(format!("{variable} has no string value"))
                    })
                })
                .await
                .cloned(),
        }
    }
}
