//! Amazon Bedrock through the Converse API (aws-sdk-bedrockruntime): SigV4 with the function's
//! role, no API key. The SDK's own retries are off: the resilience wrapper retries and keeps the
//! circuit, the same for every provider.

use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_bedrockruntime::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_bedrockruntime::operation::converse::ConverseError;
use aws_sdk_bedrockruntime::types::{
    ContentBlock, ConversationRole, ConverseOutput, InferenceConfiguration, Message,
    SystemContentBlock,
};

use super::{Completion, Prompt, Provider, ProviderError};

pub struct Bedrock {
    client: aws_sdk_bedrockruntime::Client,
}

impl Bedrock {
    /// `endpoint` replaces the regional endpoint (a compatible gateway, or a local double);
    /// `region` overrides the SDK's (models are not offered in every region).
    pub fn new(
        sdk: &crate::aws::SdkConfig,
        endpoint: Option<String>,
        region: Option<String>,
        timeout: Duration,
    ) -> Self {
        let mut config = aws_sdk_bedrockruntime::config::Builder::from(sdk)
            .retry_config(aws_sdk_bedrockruntime::config::retry::RetryConfig::disabled())
            .timeout_config(
                aws_sdk_bedrockruntime::config::timeout::TimeoutConfig::builder()
                    .operation_timeout(timeout)
                    .build(),
            );
        if let Some(url) = endpoint {
            // A gateway's certificate need not chain to Amazon's roots (shared::tls).
            if crate::tls::is_https(&url) {
                config = config.http_client(crate::tls::aws_https_client_trusting_system_roots());
            }
            config = config.endpoint_url(url);
        }
        if let Some(region) = region {
            config = config.region(aws_sdk_bedrockruntime::config::Region::new(region));
        }
        Self {
            client: aws_sdk_bedrockruntime::Client::from_conf(config.build()),
        }
    }
}

fn classify(
    e: SdkError<ConverseError, aws_sdk_bedrockruntime::config::http::HttpResponse>,
) -> ProviderError {
    match e {
        SdkError::ServiceError(service) => {
            let retry_after = service
                .raw()
                .headers()
                .get("retry-after")
                .and_then(|v| v.trim().parse::<u64>().ok())
                .map(Duration::from_secs);
            let err = service.into_err();
            let message = format!(
                "{}: {}",
                err.code().unwrap_or("error"),
                err.message().unwrap_or_default()
            );
            match err {
                ConverseError::ThrottlingException(_) => ProviderError::RateLimited {
                    retry_after,
                    message,
                },
                ConverseError::ServiceUnavailableException(_)
                | ConverseError::InternalServerException(_)
                | ConverseError::ModelNotReadyException(_)
                | ConverseError::ModelTimeoutException(_) => ProviderError::Unavailable(message),
                _ => ProviderError::Rejected(message),
            }
        }
        SdkError::TimeoutError(_) => ProviderError::Unavailable("timed out".into()),
        SdkError::DispatchFailure(d) => {
            ProviderError::Unavailable(format!("request failed: {d:?}"))
        }
        SdkError::ResponseError(_) => ProviderError::Malformed("unreadable answer".into()),
        other => ProviderError::Unavailable(
            aws_sdk_bedrockruntime::error::DisplayErrorContext(other).to_string(),
        ),
    }
}

#[async_trait]
impl Provider for Bedrock {
    async fn complete(&self, p: &Prompt) -> Result<Completion, ProviderError> {
        let message = Message::builder()
            .role(ConversationRole::User)
            .content(ContentBlock::Text(p.prompt.clone()))
            .build()
            .map_err(|e| ProviderError::Rejected(e.to_string()))?;
        let mut system = p.system.clone().unwrap_or_default();
        if p.json {
            // Converse has no JSON mode flag; the instruction asks for JSON only.
            system = format!("{system}\nAnswer with one JSON value only, no prose.")
                .trim()
                .to_owned();
        }
        let inference = InferenceConfiguration::builder()
            .max_tokens(i32::try_from(p.max_tokens).unwrap_or(i32::MAX))
            .set_temperature(p.temperature.map(|t| t as f32))
            .build();
        let mut request = self
            .client
            .converse()
            .model_id(&p.model)
            .messages(message)
            .inference_config(inference);
        if !system.is_empty() {
            request = request.system(SystemContentBlock::Text(system));
        }
        let out = request.send().await.map_err(classify)?;
        let text: String = match out.output {
            Some(ConverseOutput::Message(m)) => m
                .content
                .iter()
                .filter_map(|b| b.as_text().ok().cloned())
                .collect(),
            _ => return Err(ProviderError::Malformed("no message in the answer".into())),
        };
        let usage = out.usage;
        Ok(Completion {
            text,
            input_tokens: usage.as_ref().map_or(0, |u| u.input_tokens.max(0) as u64),
            output_tokens: usage.as_ref().map_or(0, |u| u.output_tokens.max(0) as u64),
            usage_reported: usage.is_some(),
        })
    }
}
