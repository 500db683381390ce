//! OpenAI chat completions (`POST /v1/chat/completions`), or any endpoint that speaks it.

use std::time::Duration;

use async_trait::async_trait;
use serde_json::json;

use super::{ApiKey, Completion, Endpoint, Prompt, Provider, ProviderError};

pub struct OpenAi(Endpoint);

impl OpenAi {
    pub fn new(base: String, key: ApiKey, timeout: Duration) -> Self {
        Self(Endpoint::new(base, key, timeout))
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
        let auth = format!("Bearer {}", self.0.key.expose());
        let v = self
            .0
            .post("/v1/chat/completions", &[("authorization", auth)], &body)
            .await?;
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
