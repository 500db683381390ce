//! The `http` step: one request, rendered by the orchestrator, sent here. Private, loopback and
//! link-local addresses (cloud metadata among them) are refused unless the deployment allows them;
//! the check runs on every resolved address, and redirects are not followed, so neither DNS nor a
//! redirect can lead the request somewhere it may not go.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use serde_json::{json, Map, Value};

use crate::domain::execution::StepError;

/// Response bodies larger than this fail the step instead of bloating the execution's history.
pub const MAX_RESPONSE_BYTES: usize = 256 * 1024;

#[derive(Clone)]
pub struct HttpExecutor {
    client: reqwest::Client,
    allow_private: bool,
}

/// Addresses a step may not reach unless private networks are allowed: every special-purpose
/// range of the IANA registries (private, shared, loopback, link-local, documentation,
/// benchmarking, multicast, reserved, unspecified, broadcast), and IPv6 forms that carry an IPv4
/// address (mapped, compatible, NAT64, 6to4, Teredo) are judged by that address.
pub fn is_private(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, c, _] = v4.octets();
            v4.is_private()
                || v4.is_loopback()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_multicast()
                || a == 0
                || (a == 100 && (64..128).contains(&b)) // shared address space (CGNAT)
                || (a == 192 && b == 0 && c == 0) // IETF protocol assignments
                || (a == 192 && b == 0 && c == 2) // TEST-NET-1
                || (a == 192 && b == 88 && c == 99) // 6to4 relay anycast
                || (a == 198 && (b == 18 || b == 19)) // benchmarking
                || (a == 198 && b == 51 && c == 100) // TEST-NET-2
                || (a == 203 && b == 0 && c == 113) // TEST-NET-3
                || a >= 240 // reserved
        }
        IpAddr::V6(v6) => {
            let s = v6.segments();
            let embedded = |hi: u16, lo: u16| {
                is_private(IpAddr::V4(std::net::Ipv4Addr::new(
                    (hi >> 8) as u8,
                    hi as u8,
                    (lo >> 8) as u8,
                    lo as u8,
                )))
            };
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_private(IpAddr::V4(v4));
            }
            // IPv4-compatible (deprecated, ::a.b.c.d): never a real destination.
            if s[..6].iter().all(|x| *x == 0) {
                return true;
            }
            // NAT64 (64:ff9b::/96) reaches the IPv4 address it embeds; the local-use prefix
            // (64:ff9b:1::/48) is private by definition.
            if s[0] == 0x64 && s[1] == 0xff9b {
                return s[2] == 1 || embedded(s[6], s[7]);
            }
            // 6to4 (2002::/16) embeds the IPv4 address of its relay.
            if s[0] == 0x2002 {
                return embedded(s[1], s[2]);
            }
            v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (s[0] & 0xfe00) == 0xfc00 // unique local
                || (s[0] & 0xffc0) == 0xfe80 // link-local
                || (s[0] & 0xffc0) == 0xfec0 // site-local (deprecated)
                || (s[0] == 0x100 && s[1..4].iter().all(|x| *x == 0)) // discard-only
                || (s[0] == 0x2001 && s[1] < 0x200) // IETF protocol assignments, Teredo included
                || (s[0] == 0x2001 && s[1] == 0xdb8) // documentation
                || (s[0] == 0x3fff && s[1] < 0x1000) // documentation (2024)
        }
    }
}

/// Resolves names and drops the addresses a step may not reach.
struct GuardedResolver {
    allow_private: bool,
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let allow_private = self.allow_private;
        Box::pin(async move {
            let host = name.as_str().to_owned();
            let found: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let allowed: Vec<SocketAddr> = found
                .into_iter()
                .filter(|a| allow_private || !is_private(a.ip()))
                .collect();
            if allowed.is_empty() {
                return Err(format!("{host} resolves only to private or link-local addresses, which steps may not call").into());
            }
            Ok(Box::new(allowed.into_iter()) as Addrs)
        })
    }
}

/// A client whose connections can only reach the addresses steps may call.
pub fn guarded_client(allow_private: bool) -> reqwest::ClientBuilder {
    crate::tls::reqwest_builder()
        // A proxy from the environment (HTTP_PROXY, ...) would resolve names itself, past the
        // guarded resolver: steps never go through one.
        .no_proxy()
        .dns_resolver(Arc::new(GuardedResolver { allow_private }))
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(Duration::from_secs(5))
        .user_agent(concat!("wfe-step/", env!("CARGO_PKG_VERSION")))
}

/// Parses a step's target URL: http(s) only, and a literal address (which skips DNS, so the
/// resolver never sees it) must be one steps may call.
pub fn checked_url(raw: &str, allow_private: bool) -> Result<reqwest::Url, StepError> {
    let url = reqwest::Url::parse(raw).map_err(|e| {
        error(
            "InvalidRequest",
            format!("{raw:?} is not a URL: {e}"),
            false,
        )
    })?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(error(
            "InvalidRequest",
            format!("scheme {} is not allowed; use http or https", url.scheme()),
            false,
        ));
    }
    let literal = match url.host() {
        Some(url::Host::Ipv4(ip)) => Some(IpAddr::V4(ip)),
        Some(url::Host::Ipv6(ip)) => Some(IpAddr::V6(ip)),
        _ => None,
    };
    if literal.is_some_and(|ip| !allow_private && is_private(ip)) {
        return Err(error(
            "AddressNotAllowed",
            format!(
                "{} is a private or link-local address, which steps may not call",
                url.host_str().unwrap_or_default()
            ),
            false,
        ));
    }
    Ok(url)
}

const IDEMPOTENCY_HEADER: &str = "Idempotency-Key";

fn error(kind: &str, message: impl Into<String>, retryable: bool) -> StepError {
    StepError::new(kind, message, retryable)
}

impl HttpExecutor {
    pub fn new(allow_private: bool, timeout: Duration) -> Self {
        let client = guarded_client(allow_private)
            .timeout(timeout)
            .build()
            .expect("a TLS backend is compiled in");
        Self {
            client,
            allow_private,
        }
    }

    /// Performs the rendered request `{method, url, headers, body}`. `idempotency_key` is sent as
    /// `Idempotency-Key` unless the step sets that header itself: it names the step instance, the
    /// same on every retry, so a service can drop a repeat that a crash forced on the engine.
    pub async fn call(
        &self,
        request: &Value,
        idempotency_key: Option<&str>,
    ) -> Result<Value, StepError> {
        let method = request["method"].as_str().unwrap_or("GET");
        let method = reqwest::Method::from_bytes(method.as_bytes())
            .map_err(|_| error("InvalidRequest", format!("unknown method {method}"), false))?;
        let raw_url = request["url"].as_str().unwrap_or_default();
        let url = checked_url(raw_url, self.allow_private)?;
        let mut builder = self.client.request(method, url.clone());
        let headers = request["headers"].as_object();
        if let Some(headers) = headers {
            for (k, v) in headers {
                if crate::domain::validate::is_reserved_header(k) {
                    return Err(error(
                        "InvalidRequest",
                        format!("the `{k}` header is set by the engine, not by a step"),
                        false,
                    ));
                }
                builder = builder.header(k, v.as_str().unwrap_or_default());
            }
        }
        let own_key =
            headers.is_some_and(|h| h.keys().any(|k| k.eq_ignore_ascii_case(IDEMPOTENCY_HEADER)));
        if let (Some(key), false) = (idempotency_key, own_key) {
            builder = builder.header(IDEMPOTENCY_HEADER, key);
        }
        match &request["body"] {
            Value::Null => {}
            Value::String(s) => builder = builder.body(s.clone()),
            other => builder = builder.json(other),
        }
        let mut response = builder.send().await.map_err(|e| classify(&e, &url))?;
        let status = response.status();
        let content_type = response
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(|e| classify(&e, &url))? {
            if body.len() + chunk.len() > MAX_RESPONSE_BYTES {
                return Err(error(
                    "ResponseTooLarge",
                    format!("the response is larger than {MAX_RESPONSE_BYTES} bytes"),
                    false,
                ));
            }
            body.extend_from_slice(&chunk);
        }
        let text = String::from_utf8_lossy(&body).into_owned();
        if !status.is_success() {
            let retryable = status.as_u16() == 429 || status.is_server_error();
            let excerpt: String = text.chars().take(200).collect();
            return Err(error(
                "HttpError",
                format!(
                    "{} answered {status}: {excerpt}",
                    url.host_str().unwrap_or_default()
                ),
                retryable,
            ));
        }
        let body = if content_type.contains("json") {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        } else {
            Value::String(text)
        };
        let mut headers = Map::new();
        headers.insert("content-type".into(), Value::String(content_type));
        Ok(json!({"status": status.as_u16(), "headers": headers, "body": body}))
    }
}

fn classify(e: &reqwest::Error, url: &reqwest::Url) -> StepError {
    let host = url.host_str().unwrap_or_default();
    if e.is_timeout() {
        return error("Timeout", format!("{host} did not answer in time"), true);
    }
    let mut chain = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        chain = format!("{chain}: {s}");
        source = s.source();
    }
    if chain.contains("which steps may not call") {
        return error("AddressNotAllowed", chain, false);
    }
    error("NetworkError", chain, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_and_link_local_addresses_are_recognised() {
        for ip in [
            "10.0.0.1",
            "172.16.5.4",
            "192.168.1.1",
            "127.0.0.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "::1",
            "fd00::1",
            "fe80::1",
            "::ffff:10.0.0.1",
            "::ffff:169.254.169.254",
            "::127.0.0.1",
            "64:ff9b::a9fe:a9fe",
            "64:ff9b:1::1",
            "2002:7f00:1::1",
            "2002:a9fe:a9fe::1",
            "2001::1",
            "2001:db8::1",
            "fec0::1",
            "ff02::1",
            "100::1",
            "192.0.0.8",
            "192.0.2.1",
            "198.18.0.1",
            "198.51.100.7",
            "203.0.113.9",
            "224.0.0.1",
            "239.255.255.250",
            "240.0.0.1",
            "255.255.255.255",
            "192.88.99.1",
        ] {
            assert!(is_private(ip.parse().unwrap()), "{ip}");
        }
        for ip in [
            "8.8.8.8",
            "1.1.1.1",
            "2606:4700::1111",
            "64:ff9b::808:808",
            "2002:808:808::1",
        ] {
            assert!(!is_private(ip.parse().unwrap()), "{ip}");
        }
    }

    #[tokio::test]
    async fn refuses_metadata_and_loopback_unless_allowed() {
        let guarded = HttpExecutor::new(false, Duration::from_secs(2));
        for url in [
            "http://169.254.169.254/latest/meta-data/",
            "http://127.0.0.1:9/",
            "http://localhost:9/",
        ] {
            let e = guarded
                .call(&json!({"method": "GET", "url": url}), None)
                .await
                .unwrap_err();
            assert_eq!(e.kind, "AddressNotAllowed", "{url}: {e:?}");
            assert!(!e.retryable);
        }
        let e = guarded
            .call(&json!({"method": "GET", "url": "file:///etc/passwd"}), None)
            .await
            .unwrap_err();
        assert_eq!(e.kind, "InvalidRequest");
    }
}
