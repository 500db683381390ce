//! OpenAI chat completions (`POST /v1/chat/completions`), or any endpoint that speaks it.

use std::time::Duration;

use async_trait::async_trait;
use serde_json::json;

use super::key::KeyCell;
use super::{Completion, Endpoint, Prompt, Provider, ProviderError};

pub struct OpenAi(Endpoint);

impl OpenAi {
    pub fn new(base: String, key: KeyCell, timeout: Duration) -> Self {
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
        // Reasoning models (o1, o3, o4, gpt-5) refuse `max_tokens` and take
        // `max_completion_tokens`, which covers their hidden reasoning tokens too.
        let limit_field = if needs_max_completion_tokens(&p.model) {
            "max_completion_tokens"
        } else {
            "max_tokens"
        };
        let mut body = json!({"model": p.model, "messages": messages});
        body[limit_field] = json!(p.max_tokens);
        if let Some(t) = p.temperature {
            body["temperature"] = json!(t);
        }
        if p.json {
            body["response_format"] = json!({"type": "json_object"});
        }
        let auth =
            |key: &super::ApiKey| vec![("authorization", format!("Bearer {}", key.expose()))];
        let v = self.0.post("/v1/chat/completions", auth, &body).await?;
        let content = v["choices"][0]["message"]["content"]
            .as_str()
            .ok_or_else(|| ProviderError::Malformed("no choices[0].message.content".into()))?;
        let (input, output) = (
            v["usage"]["prompt_tokens"].as_u64(),
            v["usage"]["completion_tokens"].as_u64(),
        );
        Ok(Completion {
            text: content.to_owned(),
            input_tokens: input.unwrap_or(0),
            output_tokens: output.unwrap_or(0),
            usage_reported: input.is_some() && output.is_some(),
        })
    }
}

/// OpenAI's reasoning families, by name (a dated snapshot or a fine-tune of one included).
pub fn needs_max_completion_tokens(model: &str) -> bool {
    let base = model.strip_prefix("ft:").unwrap_or(model);
    ["o1", "o3", "o4", "gpt-5"].iter().any(|family| {
        base == *family
            || base
                .strip_prefix(family)
                .is_some_and(|rest| rest.starts_with(['-', ':', '.']))
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn reasoning_models_get_max_completion_tokens() {
        for m in [
            "o1",
            "o1-mini",
            "o3-2025-04-16",
            "o4-mini",
            "gpt-5",
            "gpt-5-mini",
            "ft:o4-mini:acme",
        ] {
            assert!(super::needs_max_completion_tokens(m), "{m}");
        }
        for m in ["gpt-4o", "gpt-4.1-mini", "gpt-50x", "o10", "omni"] {
            assert!(!super::needs_max_completion_tokens(m), "{m}");
        }
    }
}
