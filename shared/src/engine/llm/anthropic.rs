//! Anthropic messages (`POST /v1/messages`).

use std::time::Duration;

use async_trait::async_trait;
use serde_json::{json, Value};

use super::{status_error, transport_error, ApiKey, Completion, Prompt, Provider, ProviderError};

/// The API version this client speaks.
pub const API_VERSION: &str = "2023-06-01";

pub struct Anthropic {
    base: String,
    key: ApiKey,
    client: reqwest::Client,
}

impl Anthropic {
    pub fn new(base: String, key: ApiKey, timeout: Duration) -> Self {
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .build()
            .expect("a TLS backend is compiled in");
        Self {
            base: base.trim_end_matches('/').to_owned(),
            key,
            client,
        }
    }
}

#[async_trait]
impl Provider for Anthropic {
    async fn complete(&self, p: &Prompt) -> Result<Completion, ProviderError> {
        let mut body = json!({
            "model": p.model,
            "max_tokens": p.max_tokens,
            "messages": [{"role": "user", "content": p.prompt}],
        });
        let mut system = p.system.clone().unwrap_or_default();
        if p.json {
            // Anthropic has no JSON mode flag; the instruction asks for JSON only.
            system = format!("{system}\nAnswer with one JSON value only, no prose.")
                .trim()
                .to_owned();
        }
        if !system.is_empty() {
            body["system"] = json!(system);
        }
        if let Some(t) = p.temperature {
            body["temperature"] = json!(t);
        }
        let response = self
            .client
            .post(format!("{}/v1/messages", self.base))
            .header("x-api-key", self.key.expose())
            .header("anthropic-version", API_VERSION)
            .json(&body)
            .send()
            .await
            .map_err(|e| transport_error(&e))?;
        let status = response.status();
        let headers = response.headers().clone();
        let text = response.text().await.map_err(|e| transport_error(&e))?;
        if !status.is_success() {
            return Err(status_error(status, &headers, &text, &self.key));
        }
        let v: Value = serde_json::from_str(&text)
            .map_err(|e| ProviderError::Malformed(format!("not JSON: {e}")))?;
        let content: String = v["content"]
            .as_array()
            .ok_or_else(|| ProviderError::Malformed("no content".into()))?
            .iter()
            .filter(|b| b["type"] == "text")
            .filter_map(|b| b["text"].as_str())
            .collect();
        Ok(Completion {
            text: content,
            input_tokens: v["usage"]["input_tokens"].as_u64().unwrap_or(0),
            output_tokens: v["usage"]["output_tokens"].as_u64().unwrap_or(0),
        })
    }
}
