//! Around every provider: retries of rate limits and outages within one step attempt (honouring
//! `Retry-After`), and a circuit breaker that stops calling a provider that keeps failing (it
//! opens after `threshold` failures in a row, fails fast while open, and lets one probe through
//! once the cool-down has passed: success closes it, failure opens it again).

use std::sync::Mutex;
use std::time::{Duration, Instant};

use async_trait::async_trait;

use super::{Completion, Prompt, Provider, ProviderError};

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Policy {
    /// Calls per step attempt, the first included.
    pub attempts: u32,
    pub initial_backoff: Duration,
    /// A `Retry-After` longer than this is not waited for: the step fails as rate limited and its
    /// own retry policy (with its timer) takes over.
    pub max_wait: Duration,
    pub threshold: u32,
    pub cooldown: Duration,
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            attempts: 3,
            initial_backoff: Duration::from_millis(500),
            max_wait: Duration::from_secs(20),
            threshold: 5,
            cooldown: Duration::from_secs(30),
        }
    }
}

#[derive(Debug, Default)]
struct Circuit {
    failures: u32,
    open_until: Option<Instant>,
    probing: bool,
}

pub struct Resilient<P> {
    inner: P,
    policy: Policy,
    circuit: Mutex<Circuit>,
}

impl<P: Provider> Resilient<P> {
    pub fn new(inner: P, policy: Policy) -> Self {
        Self {
            inner,
            policy,
            circuit: Mutex::new(Circuit::default()),
        }
    }

    /// May a call go out now? Open circuits refuse, except one probe after the cool-down.
    fn admit(&self) -> Result<(), ProviderError> {
        let mut c = self.circuit.lock().unwrap_or_else(|p| p.into_inner());
        match c.open_until {
            None => Ok(()),
            Some(until) if Instant::now() >= until && !c.probing => {
                c.probing = true;
                Ok(())
            }
            Some(_) => Err(ProviderError::CircuitOpen),
        }
    }

    fn record(&self, ok: bool) {
        let mut c = self.circuit.lock().unwrap_or_else(|p| p.into_inner());
        if ok {
            *c = Circuit::default();
            return;
        }
        c.failures += 1;
        c.probing = false;
        if c.failures >= self.policy.threshold || c.open_until.is_some() {
            c.open_until = Some(Instant::now() + self.policy.cooldown);
        }
    }
}

#[async_trait]
impl<P: Provider> Provider for Resilient<P> {
    async fn complete(&self, prompt: &Prompt) -> Result<Completion, ProviderError> {
        let mut backoff = self.policy.initial_backoff;
        let mut attempt = 1;
        loop {
            self.admit()?;
            let result = self.inner.complete(prompt).await;
            let wait = match &result {
                Ok(_) => {
                    self.record(true);
                    return result;
                }
                // The caller's fault: the provider is fine, and trying again will not help.
                Err(ProviderError::Rejected(_) | ProviderError::Malformed(_)) => {
                    self.record(true);
                    return result;
                }
                // Nothing reached the provider; the key's own gate paces reads. A probe this
                // admitted did not happen: let the next call probe.
                Err(ProviderError::KeyUnavailable { .. }) => {
                    self.circuit
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .probing = false;
                    return result;
                }
                Err(ProviderError::RateLimited { retry_after, .. }) => {
                    self.record(false);
                    retry_after.unwrap_or(backoff)
                }
                Err(_) => {
                    self.record(false);
                    backoff
                }
            };
            if attempt >= self.policy.attempts || wait > self.policy.max_wait {
                return result;
            }
            tokio::time::sleep(wait).await;
            attempt += 1;
            backoff *= 2;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::sync::Arc;

    use super::*;

    struct Scripted {
        calls: Arc<AtomicU32>,
        answers: Vec<Result<Completion, ProviderError>>,
    }

    #[async_trait]
    impl Provider for Scripted {
        async fn complete(&self, _: &Prompt) -> Result<Completion, ProviderError> {
            let n = self.calls.fetch_add(1, Ordering::SeqCst) as usize;
            self.answers[n.min(self.answers.len() - 1)].clone()
        }
    }

    fn prompt() -> Prompt {
        Prompt {
            model: "m".into(),
            system: None,
            prompt: "p".into(),
            temperature: None,
            max_tokens: 5,
            json: false,
        }
    }

    fn ok() -> Result<Completion, ProviderError> {
        Ok(Completion {
            text: "t".into(),
            input_tokens: 1,
            output_tokens: 1,
            usage_reported: true,
        })
    }

    fn quick() -> Policy {
        Policy {
            attempts: 3,
            initial_backoff: Duration::from_millis(1),
            max_wait: Duration::from_secs(2),
            threshold: 3,
            cooldown: Duration::from_millis(200),
        }
    }

    #[tokio::test]
    async fn retries_a_rate_limit_after_retry_after_then_succeeds() {
        let calls = Arc::new(AtomicU32::new(0));
        let limited = Err(ProviderError::RateLimited {
            retry_after: Some(Duration::from_millis(300)),
            message: "slow down".into(),
        });
        let p = Resilient::new(
            Scripted {
                calls: calls.clone(),
                answers: vec![limited, ok()],
            },
            quick(),
        );
        let started = Instant::now();
        assert!(p.complete(&prompt()).await.is_ok());
        assert!(
            started.elapsed() >= Duration::from_millis(300),
            "waited for Retry-After"
        );
        assert_eq!(calls.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_long_retry_after_is_left_to_the_step_retry_policy() {
        let calls = Arc::new(AtomicU32::new(0));
        let limited = Err(ProviderError::RateLimited {
            retry_after: Some(Duration::from_secs(60)),
            message: "later".into(),
        });
        let p = Resilient::new(
            Scripted {
                calls: calls.clone(),
                answers: vec![limited, ok()],
            },
            quick(),
        );
        assert!(matches!(
            p.complete(&prompt()).await,
            Err(ProviderError::RateLimited { .. })
        ));
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn the_circuit_opens_fails_fast_then_probes_and_closes() {
        let calls = Arc::new(AtomicU32::new(0));
        let down = Err(ProviderError::Unavailable("503".into()));
        let mut answers = vec![down.clone(); 4];
        answers.push(ok());
        let p = Resilient::new(
            Scripted {
                calls: calls.clone(),
                answers,
            },
            quick(),
        );
        // Three failures in a row (one step attempt's three calls) open it.
        assert!(p.complete(&prompt()).await.is_err());
        assert_eq!(calls.load(Ordering::SeqCst), 3);
        // Open: no call goes out.
        assert_eq!(
            p.complete(&prompt()).await.unwrap_err(),
            ProviderError::CircuitOpen
        );
        assert_eq!(calls.load(Ordering::SeqCst), 3);
        // After the cool-down one probe goes out; it fails, so the circuit opens again at once.
        tokio::time::sleep(Duration::from_millis(220)).await;
        assert!(p.complete(&prompt()).await.is_err());
        assert_eq!(calls.load(Ordering::SeqCst), 4, "exactly one probe");
        assert_eq!(
            p.complete(&prompt()).await.unwrap_err(),
            ProviderError::CircuitOpen
        );
        // The next probe succeeds and closes it.
        tokio::time::sleep(Duration::from_millis(220)).await;
        assert!(p.complete(&prompt()).await.is_ok());
        assert!(p.complete(&prompt()).await.is_ok());
        assert_eq!(calls.load(Ordering::SeqCst), 6);
    }
}
