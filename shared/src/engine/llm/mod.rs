//! The `llm` step: providers behind one trait, chosen by the step's `provider`, with usage read
//! from each provider's answer and cost from the price table (state table, `PRICE` items seeded
//! by migration 0003), never from code.

mod anthropic;
mod bedrock;
pub mod key;
mod openai;
pub mod resilience;
pub mod tokens;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde_json::{json, Value};

use crate::domain::execution::{StepError, Usage};

/// What a step asks of a model (rendered by the orchestrator).
#[derive(Debug, Clone, PartialEq)]
pub struct Prompt {
    pub model: String,
    pub system: Option<String>,
    pub prompt: String,
    pub temperature: Option<f64>,
    pub max_tokens: u32,
    /// Ask for a JSON answer (the step validates it against its schema afterwards).
    pub json: bool,
}

/// Default `max_tokens` when a step gives none (Anthropic requires one).
pub const DEFAULT_MAX_TOKENS: u32 = 1024;

#[derive(Debug, Clone, PartialEq)]
pub struct Completion {
    pub text: String,
    pub input_tokens: u64,
    pub output_tokens: u64,
    /// Whether the provider said what the call used (else it is counted as its reservation).
    pub usage_reported: bool,
}

/// How a provider call failed, so the step's retry policy can decide.
#[derive(Debug, Clone, PartialEq)]
pub enum ProviderError {
    /// 429: retryable, after `retry_after` when the provider says.
    RateLimited {
        retry_after: Option<Duration>,
        message: String,
    },
    /// 5xx, timeouts, connection failures: retryable.
    Unavailable(String),
    /// 4xx other than 429 (bad request, auth): not retryable.
    Rejected(String),
    /// The answer could not be read.
    Malformed(String),
    /// The provider kept failing; calls are refused until a probe succeeds.
    CircuitOpen,
    /// The provider's API key could not be read (from Secrets Manager): no call went out, and
    /// the provider itself is not blamed (no in-call retry, no circuit count). `retryable` when
    /// the read may succeed later (timeouts, throttling), not for a missing secret or a refusal.
    KeyUnavailable { message: String, retryable: bool },
}

impl ProviderError {
    pub fn into_step_error(self, provider: &str) -> StepError {
        match self {
            Self::RateLimited { message, .. } => {
                StepError::new("RateLimited", format!("{provider}: {message}"), true)
            }
            Self::Unavailable(m) => {
                StepError::new("ProviderUnavailable", format!("{provider}: {m}"), true)
            }
            Self::Rejected(m) => {
                StepError::new("ProviderRejected", format!("{provider}: {m}"), false)
            }
            Self::Malformed(m) => {
                StepError::new("ProviderMalformed", format!("{provider}: {m}"), false)
            }
            Self::CircuitOpen => StepError::new(
                "CircuitOpen",
                format!("{provider} failed repeatedly; calls are paused until it recovers"),
                true,
            ),
            Self::KeyUnavailable { message, retryable } => StepError::new(
                "ProviderKeyUnavailable",
                format!("{provider}: {message}"),
                retryable,
            ),
        }
    }
}

#[async_trait]
pub trait Provider: Send + Sync {
    async fn complete(&self, prompt: &Prompt) -> Result<Completion, ProviderError>;
}

/// An API key: never printed.
#[derive(Clone)]
pub struct ApiKey(String);

impl ApiKey {
    pub fn new(key: String) -> Self {
        Self(key)
    }

    pub fn expose(&self) -> &str {
        &self.0
    }

    /// `text` with every occurrence of the key replaced.
    pub fn scrub(&self, text: &str) -> String {
        if self.0.is_empty() {
            return text.to_owned();
        }
        text.replace(&self.0, "[redacted]")
    }
}

impl std::fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ApiKey(<redacted>)")
    }
}

/// Classifies an HTTP answer of a provider.
pub(crate) fn status_error(
    status: reqwest::StatusCode,
    headers: &reqwest::header::HeaderMap,
    body: &str,
    key: &ApiKey,
) -> ProviderError {
    // Providers echo keys in auth errors; what we keep (events, logs) must never hold one.
    let body = key.scrub(body);
    let excerpt: String = body.chars().take(300).collect();
    let message = format!("HTTP {status}: {excerpt}");
    if status.as_u16() == 429 {
        let retry_after = headers
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        ProviderError::RateLimited {
            retry_after,
            message,
        }
    } else if status.is_server_error() {
        ProviderError::Unavailable(message)
    } else {
        ProviderError::Rejected(message)
    }
}

/// A provider's HTTPS endpoint: base URL, key and a client built once per cold start.
pub(crate) struct Endpoint {
    base: String,
    pub(crate) key: key::KeyCell,
    client: reqwest::Client,
}

impl Endpoint {
    pub(crate) fn new(base: String, key: key::KeyCell, timeout: Duration) -> Self {
        let client = crate::tls::reqwest_builder()
            .timeout(timeout)
            .build()
            .expect("a TLS backend is compiled in");
        Self {
            base: base.trim_end_matches('/').to_owned(),
            key,
            client,
        }
    }

    /// POSTs `body` to `path` with the headers `auth` makes from the key (waiting for its first
    /// read if need be); the answer's JSON, or the classified failure.
    pub(crate) async fn post(
        &self,
        path: &str,
        auth: impl FnOnce(&ApiKey) -> Vec<(&'static str, String)>,
        body: &Value,
    ) -> Result<Value, ProviderError> {
        let key = self.key.get().await?;
        let headers = auth(&key);
        let mut request = self.client.post(format!("{}{path}", self.base)).json(body);
        for (name, value) in headers {
            request = request.header(name, value);
        }
        let response = request.send().await.map_err(|e| transport_error(&e))?;
        let status = response.status();
        let headers = response.headers().clone();
        let text = response.text().await.map_err(|e| transport_error(&e))?;
        if !status.is_success() {
            return Err(status_error(status, &headers, &text, &key));
        }
        serde_json::from_str(&text).map_err(|e| ProviderError::Malformed(format!("not JSON: {e}")))
    }
}

pub(crate) fn transport_error(e: &reqwest::Error) -> ProviderError {
    ProviderError::Unavailable(if e.is_timeout() {
        "timed out".into()
    } else {
        format!("request failed: {e}")
    })
}

/// Retry and circuit settings: `LLM_RETRY_ATTEMPTS` (3), `LLM_CIRCUIT_THRESHOLD` (5 failures in a
/// row), `LLM_CIRCUIT_COOLDOWN_SECS` (30).
fn resilience_policy(config: &crate::config::Config) -> Result<resilience::Policy, String> {
    let number = |name: &str, default: u64| -> Result<u64, String> {
        match config.value(name) {
            Some(v) => v
                .trim()
                .parse()
                .map_err(|_| format!("{name}: {v:?} is not a number")),
            None => Ok(default),
        }
    };
    let defaults = resilience::Policy::default();
    Ok(resilience::Policy {
        attempts: number("LLM_RETRY_ATTEMPTS", defaults.attempts as u64)?.max(1) as u32,
        threshold: number("LLM_CIRCUIT_THRESHOLD", defaults.threshold as u64)?.max(1) as u32,
        cooldown: Duration::from_secs(number(
            "LLM_CIRCUIT_COOLDOWN_SECS",
            defaults.cooldown.as_secs(),
        )?),
        ..defaults
    })
}

/// The configured providers and the price table.
#[derive(Clone, Default)]
pub struct Llm {
    providers: BTreeMap<String, Arc<dyn Provider>>,
    prices: Option<Prices>,
    budgets: Option<super::budget::Budgets>,
}

pub use super::prices::Prices;

fn cost((input_price, output_price): (f64, f64), input: u64, output: u64) -> f64 {
    (input as f64 * input_price + output as f64 * output_price) / 1_000_000.0
}

impl Llm {
    /// Providers from the configuration: `OPENAI_API_KEY` / `ANTHROPIC_API_KEY` (or the same with
    /// `_ARN`, read from Secrets Manager), `OPENAI_BASE_URL` / `ANTHROPIC_BASE_URL` for
    /// compatible endpoints. A provider without a key is not configured. Bedrock needs no key
    /// (the function's role signs its calls): `BEDROCK_ENABLED=true`, with `BEDROCK_REGION` and
    /// `BEDROCK_ENDPOINT_URL` to override where it is called.
    pub async fn from_config(
        config: &crate::config::Config,
        clients: &crate::aws::Clients,
        prices: Option<Prices>,
        budgets: Option<super::budget::Budgets>,
    ) -> Result<Self, String> {
        let sdk = clients.sdk();
        let timeout = Duration::from_secs(config.llm_timeout_secs().map_err(|e| e.to_string())?);
        let policy = resilience_policy(config)?;
        let mut llm = Llm {
            providers: BTreeMap::new(),
            prices,
            budgets,
        };
        // Keys from Secrets Manager are read in the background, both at once, from now on.
        let openai = config.provider_key("OPENAI", clients);
        let anthropic = config.provider_key("ANTHROPIC", clients);
        for key in openai.iter().chain(&anthropic) {
            key.prefetch();
        }
        if let Some(key) = openai {
            let base = config
                .value("OPENAI_BASE_URL")
                .unwrap_or_else(|| "https://api.openai.com".into());
            llm.providers.insert(
                "openai".into(),
                Arc::new(resilience::Resilient::new(
                    openai::OpenAi::new(base, key, timeout),
                    policy,
                )),
            );
        }
        if let Some(key) = anthropic {
            let base = config
                .value("ANTHROPIC_BASE_URL")
                .unwrap_or_else(|| "https://api.anthropic.com".into());
            llm.providers.insert(
                "anthropic".into(),
                Arc::new(resilience::Resilient::new(
                    anthropic::Anthropic::new(base, key, timeout),
                    policy,
                )),
            );
        }
        if config.flag("BEDROCK_ENABLED") {
            llm.providers.insert(
                "bedrock".into(),
                Arc::new(resilience::Resilient::new(
                    bedrock::Bedrock::new(
                        sdk,
                        config.value("BEDROCK_ENDPOINT_URL"),
                        config.value("BEDROCK_REGION"),
                        timeout,
                    ),
                    policy,
                )),
            );
        }
        Ok(llm)
    }

    pub fn with_provider(mut self, name: &str, provider: Arc<dyn Provider>) -> Self {
        self.providers.insert(name.to_owned(), provider);
        self
    }

    /// Runs a rendered `llm` request; the output is `{text, model, usage}` (and `json` in JSON
    /// mode). The usage comes back whenever the provider answered, even if the answer is refused.
    /// `attempt` names the step attempt (unique in the deployment): its budget reservation is
    /// recorded under it until settled.
    pub async fn call(
        &self,
        request: &Value,
        tenant: &str,
        attempt: &str,
        deadline: Option<tokio::time::Instant>,
    ) -> (Result<Value, StepError>, Option<Usage>) {
        match self.complete(request, tenant, attempt, deadline).await {
            Ok((completion, usage, schema)) => {
                (Self::shape(completion, usage.clone(), schema), Some(usage))
            }
            Err(e) => (Err(e), None),
        }
    }

    async fn complete(
        &self,
        request: &Value,
        tenant: &str,
        attempt: &str,
        deadline: Option<tokio::time::Instant>,
    ) -> Result<(Completion, Usage, Option<crate::domain::schema::Schema>), StepError> {
        let provider_name = request["provider"].as_str().unwrap_or_default();
        let Some(provider) = self.providers.get(provider_name) else {
            return Err(StepError::new(
                "ProviderNotConfigured",
                format!("no {provider_name} provider is configured in this deployment"),
                false,
            ));
        };
        let schema = request.get("output_schema").filter(|s| !s.is_null());
        // Compiled before the call: a schema that cannot be used fails the step before anything
        // is spent (one saved by an earlier version may not compile today).
        let compiled = schema
            .map(crate::domain::schema::compile)
            .transpose()
            .map_err(|e| {
                StepError::new(
                    "OutputSchemaMismatch",
                    format!("the step's output_schema is not valid: {e}"),
                    false,
                )
            })?;
        let prompt = Prompt {
            model: request["model"].as_str().unwrap_or_default().to_owned(),
            system: request["system"].as_str().map(str::to_owned),
            prompt: request["prompt"].as_str().unwrap_or_default().to_owned(),
            temperature: request["temperature"].as_f64(),
            max_tokens: request["max_tokens"]
                .as_u64()
                .map_or(DEFAULT_MAX_TOKENS, |n| n as u32),
            json: schema.is_some(),
        };
        let price = match &self.prices {
            Some(p) => p
                .price(tenant, provider_name, &prompt.model)
                .await
                .map_err(|e| StepError::new("PriceUnavailable", e, true))?,
            None => None,
        };
        // Reserve the most this call can cost before calling: over budget, nothing is spent.
        // Without a price the cost is unknown: refused where a USD budget applies.
        let (input_estimate, _) = tokens::input_tokens(provider_name, &prompt);
        let estimate_tokens = input_estimate + prompt.max_tokens as u64;
        let estimate_usd = price.map(|p| cost(p, input_estimate, prompt.max_tokens as u64));
        // The orchestrator names the execution, its workflow and its maximum in `budget`.
        let scope = &request["budget"];
        let who = super::budget::Spender {
            tenant,
            workflow_id: scope["workflow_id"].as_str(),
            execution_id: scope["execution_id"].as_str(),
            execution_max: super::budget::BudgetConfig {
                monthly_usd: scope["max_usd"].as_f64(),
                monthly_tokens: scope["max_tokens"].as_u64(),
            },
        };
        let reservation = match &self.budgets {
            Some(b) => b
                .reserve(
                    &who,
                    attempt,
                    chrono::Utc::now(),
                    estimate_usd,
                    estimate_tokens,
                )
                .await
                .map_err(|e| match e {
                    super::budget::BudgetError::Exceeded { .. } => {
                        StepError::new("BudgetExceeded", e.to_string(), false)
                    }
                    super::budget::BudgetError::Unpriced { scope } => StepError::new(
                        "ModelUnpriced",
                        format!(
                            "model {provider_name}/{} has no price, and {scope} has a USD budget: set its price (PUT /prices/{provider_name}/{}) or budget it in tokens",
                            prompt.model, prompt.model
                        ),
                        false,
                    ),
                    other => StepError::new("BudgetUnavailable", other.to_string(), true),
                })?,
            None => None,
        };
        // Cut off at the invocation's deadline, the reservation is still settled below (at zero:
        // no usage was reported) and the attempt recorded, rather than left to the sweep.
        let result = match deadline {
            Some(d) => match tokio::time::timeout_at(d, provider.complete(&prompt)).await {
                Ok(r) => r,
                Err(_) => {
                    if let (Some(b), Some(r)) = (&self.budgets, &reservation) {
                        if let Err(e) = b.settle(r, 0.0, 0).await {
                            tracing::error!(tenant, error = %e, "could not release a budget reservation");
                        }
                    }
                    return Err(super::worker::deadline_error());
                }
            },
            None => provider.complete(&prompt).await,
        };
        // An answer without usage counts as the most it could have cost (its reservation),
        // never as free.
        let result = result.map(|mut c| {
            if !c.usage_reported {
                tracing::warn!(provider = provider_name, model = %prompt.model, "the answer reported no usage; counted as its reservation");
                c.input_tokens = input_estimate;
                c.output_tokens = prompt.max_tokens as u64;
            }
            c
        });
        let spent = result.as_ref().map_or((0.0, 0), |c| {
            (
                price.map_or(0.0, |p| cost(p, c.input_tokens, c.output_tokens)),
                c.input_tokens + c.output_tokens,
            )
        });
        if let (Some(b), Some(r)) = (&self.budgets, &reservation) {
            if let Err(e) = b.settle(r, spent.0, spent.1).await {
                // The call happened: its result stands; the period's books are off by this call.
                tracing::error!(tenant, error = %e, "could not settle a budget reservation");
            }
        }
        let completion = result.map_err(|e| e.into_step_error(provider_name))?;
        let cost = spent.0;
        let usage = Usage {
            input_tokens: completion.input_tokens,
            output_tokens: completion.output_tokens,
            cost_usd: cost,
            model: Some(format!("{provider_name}/{}", prompt.model)),
        };
        let model = usage.model.clone().unwrap_or_default();
        for (name, value, unit) in [
            (
                "llm_tokens_total",
                (usage.input_tokens + usage.output_tokens) as f64,
                crate::telemetry::metrics::Unit::Count,
            ),
            (
                "llm_cost_usd_total",
                usage.cost_usd,
                crate::telemetry::metrics::Unit::None,
            ),
        ] {
            crate::telemetry::metrics::emit(
                name,
                value,
                unit,
                &[("tenant", tenant), ("model", &model)],
            );
        }
        Ok((completion, usage, compiled))
    }

    /// Releases what an interrupted attempt still holds on the budgets (see `Budgets::release`).
    pub async fn release(&self, tenant: &str, attempt: &str) -> Result<bool, String> {
        match &self.budgets {
            Some(b) => b.release(tenant, attempt).await.map_err(|e| e.to_string()),
            None => Ok(false),
        }
    }

    fn shape(
        completion: Completion,
        usage: Usage,
        schema: Option<crate::domain::schema::Schema>,
    ) -> Result<Value, StepError> {
        let mut output = json!({"text": completion.text, "usage": usage});
        if let Some(schema) = schema {
            let parsed: Value = serde_json::from_str(completion.text.trim()).map_err(|e| {
                StepError::new(
                    "OutputSchemaMismatch",
                    format!("the answer is not JSON: {e}"),
                    false,
                )
            })?;
            let problems: Vec<String> = schema
                .violations(&parsed)
                .into_iter()
                .map(|v| format!("{}: {}", v.pointer, v.message))
                .collect();
            if !problems.is_empty() {
                return Err(StepError::new(
                    "OutputSchemaMismatch",
                    format!(
                        "the answer does not match output_schema: {}",
                        problems.join("; ")
                    ),
                    false,
                ));
            }
            output["json"] = parsed;
        }
        Ok(output)
    }
}
