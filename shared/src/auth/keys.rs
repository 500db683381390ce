//! The JWT keys: from Secrets Manager (`JWT_SECRET_ARN`: the current version signs,
//! AWSPREVIOUS still verifies, so a rotation never logs anyone out) or from `JWT_SECRET` (plus
//! `JWT_SECRET_PREVIOUS` for a manual rotation). Secrets Manager is read in the background from
//! cold start on (`JwtKeys::pending`), and again after a rotation (`JwtKeys::verify_fresh`).

use aws_sdk_secretsmanager::Client;

use super::JwtKeys;
use crate::config::JwtKeySource;

/// Keys from the environment now (a bad one fails the start); keys from Secrets Manager pending.
pub fn load(source: &JwtKeySource, clients: &crate::aws::Clients) -> Result<JwtKeys, String> {
    match source {
        JwtKeySource::Secret(current) => JwtKeys::new(current, &previous_from_env()),
        JwtKeySource::SecretsManager { .. } => {
            Ok(JwtKeys::pending(source.clone(), clients.secrets()))
        }
    }
}

fn previous_from_env() -> Vec<String> {
    std::env::var("JWT_SECRET_PREVIOUS")
        .into_iter()
        .filter(|s| !s.is_empty())
        .collect()
}

/// The current key and those still accepted, as the source holds them now. `strict`: a failed
/// read of the previous version is an error (a re-read keeps the keys it has), where on the
/// first read it counts as none (a token signed with it makes the function read again).
pub(super) async fn read(
    source: &JwtKeySource,
    secrets: &Client,
    strict: bool,
) -> Result<(String, Vec<String>), String> {
    match source {
        JwtKeySource::Secret(secret) => Ok((secret.clone(), previous_from_env())),
        JwtKeySource::SecretsManager { arn } => {
            // Both versions at once: one round trip, not two.
            let (current, previous) = tokio::join!(
                secrets.get_secret_value().secret_id(arn).send(),
                secrets
                    .get_secret_value()
                    .secret_id(arn)
                    .version_stage("AWSPREVIOUS")
                    .send(),
            );
            let current = current
                .map_err(|e| {
                    format!(
                        "reading secret {arn}: {}",
                        aws_sdk_secretsmanager::error::DisplayErrorContext(e)
                    )
                })?
                .secret_string
                .ok_or_else(|| format!("secret {arn} has no string value"))?;
            // No previous version (never rotated) is the usual case, not an error.
            let previous = match previous {
                Ok(o) => o.secret_string,
                Err(e)
                    if !strict
                        || e.as_service_error()
                            .is_some_and(|e| e.is_resource_not_found_exception()) =>
                {
                    None
                }
                Err(e) => {
                    return Err(format!(
                        "reading the previous version of secret {arn}: {}",
                        aws_sdk_secretsmanager::error::DisplayErrorContext(e)
                    ))
                }
            };
            Ok((current, previous.into_iter().collect()))
        }
    }
}
