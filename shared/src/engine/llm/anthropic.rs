//! Anthropic messages (`POST /v1/messages`).

use std::time::Duration;

use async_trait::async_trait;
use serde_json::json;

use super::key::KeyCell;
use super::{Completion, Endpoint, Prompt, Provider, ProviderError};

/// The API version this client speaks.
pub const API_VERSION: &str = "2023-06-01";

pub struct Anthropic(Endpoint);

impl Anthropic {
    pub fn new(base: String, key: KeyCell, timeout: Duration) -> Self {
        Self(Endpoint::new(base, key, timeout))
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
        let headers = |key: &super::ApiKey| {
            vec![
                ("x-api-key", key.expose().to_owned()),
                ("anthropic-version", API_VERSION.to_owned()),
            ]
        };
        let v = self.0.post("/v1/messages", headers, &body).await?;
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
            usage_reported: v["usage"]["input_tokens"].is_u64()
                && v["usage"]["output_tokens"].is_u64(),
        })
    }
}
