//! OpenAI chat completions (`POST /v1/chat/completions`), or any endpoint that speaks it.

use std::time::Duration;

use async_trait::async_trait;
use serde_json::{json, Value};

use super::{status_error, transport_error, ApiKey, Completion, Prompt, Provider, ProviderError};

pub struct OpenAi {
    base: String,
    key: ApiKey,
    client: reqwest::Client,
}

impl OpenAi {
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
impl Provider for OpenAi {
    async fn complete(&self, p: &Prompt) -> Result<Completion, ProviderError> {
        let mut messages = Vec::new();
        if let Some(system) = &p.system {
            messages.push(json!({"role": "system", "content": system}));
        }
        messages.push(json!({"role": "user", "content": p.prompt}));
        let mut body = json!({"model": p.model, "messages": messages, "max_tokens": p.max_tokens});
        if let Some(t) = p.temperature {
            body["temperature"] = json!(t);
        }
        if p.json {
            body["response_format"] = json!({"type": "json_object"});
        }
        let response = self
            .client
            .post(format!("{}/v1/chat/completions", self.base))
            .bearer_auth(self.key.expose())
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
        let content = v["choices"][0]["message"]["content"]
            .as_str()
            .ok_or_else(|| ProviderError::Malformed("no choices[0].message.content".into()))?;
        Ok(Completion {
            text: content.to_owned(),
            input_tokens: v["usage"]["prompt_tokens"].as_u64().unwrap_or(0),
            output_tokens: v["usage"]["completion_tokens"].as_u64().unwrap_or(0),
        })
    }
}
