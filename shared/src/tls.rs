//! TLS for every outbound connection: rustls on ring.
//!
//! Why not the SDK's default client: it links aws-lc-rs (a second, larger crypto library beside
//! the ring our other clients could use) and reads every certificate of the system's store when
//! the first client is built, which was about half of a function's init (docs/PERFORMANCE.md,
//! cold start).
//!
//! AWS clients trust the roots AWS endpoints chain to (Amazon Trust Services: Amazon Root CA 1-4
//! and Starfield Services Root G2, compiled in), not the whole Mozilla set: five certificates to
//! read on the first request instead of 118 (most of an HTTP function's cold start went there),
//! and a smaller trust set for the calls that carry the function's credentials. They trust the
//! system's roots instead when those may not be AWS's own endpoints or an operator asks:
//! `SSL_CERT_FILE` or `SSL_CERT_DIR` set, an `https` endpoint override (`AWS_ENDPOINT_URL*`), a
//! region outside the `aws` and `aws-us-gov` partitions (China, ISO, European Sovereign Cloud);
//! always for an `https` `BEDROCK_ENDPOINT_URL` (a gateway) and the migrator's command line.
//!
//! Step, provider and MCP calls (reqwest) reach any host: they share one rustls configuration
//! with the Mozilla roots compiled in (`webpki-root-certs`), or the system's when `SSL_CERT_*`
//! is set.

use aws_smithy_http_client::tls::{self, rustls_provider::CryptoMode, TlsContext, TrustStore};
use aws_smithy_runtime_api::client::connector_metadata::ConnectorMetadata;
use aws_smithy_runtime_api::client::http::{
    HttpClient, HttpConnectorSettings, SharedHttpClient, SharedHttpConnector,
};
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;

/// Makes ring the process's rustls provider (reqwest uses it); idempotent.
pub fn install_crypto_provider() {
    // Err only when a provider is already installed, which is what this wants.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// A reqwest client builder on the process's one TLS configuration: every reqwest client of the
/// product starts here. (reqwest's own default builds a platform verifier per client, which
/// reads the whole system store each time: several milliseconds per client at start-up.)
pub fn reqwest_builder() -> reqwest::ClientBuilder {
    install_crypto_provider();
    let builder = reqwest::Client::builder();
    match client_config() {
        Some(config) => builder.tls_backend_preconfigured(config.clone()),
        None => builder,
    }
}

/// Built once per process, on first use.
fn client_config() -> Option<&'static rustls::ClientConfig> {
    static CONFIG: std::sync::OnceLock<Option<rustls::ClientConfig>> = std::sync::OnceLock::new();
    CONFIG
        .get_or_init(|| {
            let mut roots = rustls::RootCertStore::empty();
            if system_roots_wanted() {
                let found = rustls_native_certs::load_native_certs();
                for e in &found.errors {
                    tracing::warn!(error = %e, "reading the system's TLS roots");
                }
                roots.add_parsable_certificates(found.certs);
                if roots.is_empty() {
                    tracing::warn!("SSL_CERT_FILE/SSL_CERT_DIR held no usable roots; using the compiled-in ones");
                }
            }
            if roots.is_empty() {
                roots.add_parsable_certificates(
                    webpki_root_certs::TLS_SERVER_ROOT_CERTS.iter().cloned(),
                );
            }
            let config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
                rustls::crypto::ring::default_provider(),
            ))
            .with_safe_default_protocol_versions()
            .ok()?
            .with_root_certificates(roots)
            .with_no_client_auth();
            Some(config)
        })
        .as_ref()
}

/// `SSL_CERT_FILE` or `SSL_CERT_DIR` set: an operator wants the system's roots or their own.
fn system_roots_wanted() -> bool {
    ["SSL_CERT_FILE", "SSL_CERT_DIR"]
        .iter()
        .any(|v| std::env::var_os(v).is_some_and(|s| !s.is_empty()))
}

/// The HTTPS client every AWS SDK client of this process shares (one hyper client, so one
/// connection pool per timeout settings, however often this is called). Its roots follow the
/// environment ([`AwsTrust`]).
pub fn aws_https_client() -> SharedHttpClient {
    static CLIENT: std::sync::OnceLock<SharedHttpClient> = std::sync::OnceLock::new();
    install_crypto_provider();
    CLIENT
        .get_or_init(|| SharedHttpClient::new(BuiltOnFirstUse::new(None)))
        .clone()
}

/// Like [`aws_https_client`], trusting the system's roots whatever the environment says: for
/// an endpoint that may not be AWS's own (an `https` Bedrock gateway) and for the migrator's
/// command line, whose profile may name a region or endpoint this module cannot see.
pub fn aws_https_client_trusting_system_roots() -> SharedHttpClient {
    static CLIENT: std::sync::OnceLock<SharedHttpClient> = std::sync::OnceLock::new();
    install_crypto_provider();
    CLIENT
        .get_or_init(|| SharedHttpClient::new(BuiltOnFirstUse::new(Some(AwsTrust::System))))
        .clone()
}

fn build_aws_https_client(trust: Option<AwsTrust>) -> SharedHttpClient {
    let builder = aws_smithy_http_client::Builder::new()
        .tls_provider(tls::Provider::Rustls(CryptoMode::Ring));
    let trust = trust.unwrap_or_else(|| aws_trust(crate::config::process_env()));
    let store = match trust {
        // The SDK reads the system's store (`SSL_CERT_FILE`/`SSL_CERT_DIR` first), once.
        AwsTrust::System => TrustStore::default(),
        AwsTrust::Amazon => TrustStore::empty()
            .with_native_roots(false)
            .with_pem_certificate(AWS_ROOTS_PEM),
    };
    match TlsContext::builder().with_trust_store(store).build() {
        Ok(context) => builder.tls_context(context).build_https(),
        Err(e) => {
            tracing::warn!(error = %e, "TLS context refused; the SDK's default trust store is used");
            builder.build_https()
        }
    }
}

/// Amazon Trust Services' roots, as published at amazontrust.com/repository (the test below
/// pins their SHA-256 fingerprints).
static AWS_ROOTS_PEM: &[u8] = include_bytes!("../certs/amazon-trust-services.pem");

/// The roots AWS clients trust.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AwsTrust {
    /// Amazon Trust Services' (compiled in).
    Amazon,
    /// The system's, or the operator's through `SSL_CERT_FILE`/`SSL_CERT_DIR`.
    System,
}

/// From the process's environment: the variables the SDK configuration is read from
/// (`shared::aws`).
fn aws_trust(vars: impl Iterator<Item = (String, String)>) -> AwsTrust {
    let vars: std::collections::HashMap<String, String> =
        vars.filter(|(_, v)| !v.is_empty()).collect();
    let var = |name: &str| vars.get(name).map(String::as_str);
    if var("SSL_CERT_FILE").is_some() || var("SSL_CERT_DIR").is_some() {
        return AwsTrust::System;
    }
    let ignored =
        var("AWS_IGNORE_CONFIGURED_ENDPOINT_URLS").is_some_and(|v| v.eq_ignore_ascii_case("true"));
    let https_override = vars
        .iter()
        .any(|(name, value)| name.starts_with("AWS_ENDPOINT_URL") && is_https(value));
    if https_override && !ignored {
        return AwsTrust::System;
    }
    match var("AWS_REGION").or_else(|| var("AWS_DEFAULT_REGION")) {
        Some(region) if !in_amazon_trust_partition(region) => AwsTrust::System,
        _ => AwsTrust::Amazon,
    }
}

/// An `https` URL, whatever the scheme's case.
pub(crate) fn is_https(url: &str) -> bool {
    url.get(..8)
        .is_some_and(|s| s.eq_ignore_ascii_case("https://"))
}

/// Regions of the `aws` and `aws-us-gov` partitions, whose endpoints chain to Amazon Trust
/// Services (the SDK's own partition pattern, `^(us|eu|ap|sa|ca|me|af|il|mx)-\w+-\d+$`, with
/// the ISO regions, which share its prefixes, left out).
fn in_amazon_trust_partition(region: &str) -> bool {
    let prefixes = [
        "us-", "eu-", "ap-", "sa-", "ca-", "me-", "af-", "il-", "mx-",
    ];
    prefixes.iter().any(|p| region.starts_with(p)) && !region.contains("-iso")
}

/// The SDK's hyper client, built on the first request rather than at start-up. As it comes, it
/// builds a TLS connector (parsing every root certificate) in `validate_base_client_config` and
/// throws it away, each time an SDK client is constructed: that was 87 % of an HTTP function's
/// init (callgrind). Here the roots are read once, by the first request.
#[derive(Debug)]
struct BuiltOnFirstUse {
    client: std::sync::Arc<std::sync::OnceLock<SharedHttpClient>>,
    /// `None`: decided from the environment when built.
    trust: Option<AwsTrust>,
}

impl BuiltOnFirstUse {
    fn new(trust: Option<AwsTrust>) -> Self {
        Self {
            client: Default::default(),
            trust,
        }
    }
}

impl HttpClient for BuiltOnFirstUse {
    fn http_connector(
        &self,
        settings: &HttpConnectorSettings,
        components: &RuntimeComponents,
    ) -> SharedHttpConnector {
        self.client
            .get_or_init(|| build_aws_https_client(self.trust))
            .http_connector(settings, components)
    }

    fn connector_metadata(&self) -> Option<ConnectorMetadata> {
        // What the hyper client says of itself (the user agent), without building it.
        Some(ConnectorMetadata::new(
            "hyper",
            Some(std::borrow::Cow::Borrowed("1.x")),
        ))
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn aws_clients_trust_the_five_amazon_trust_services_roots() {
        use rustls::pki_types::{pem::PemObject, CertificateDer};
        use sha2::Digest as _;
        let certs: Vec<CertificateDer> = CertificateDer::pem_slice_iter(super::AWS_ROOTS_PEM)
            .collect::<Result<_, _>>()
            .unwrap();
        let fingerprints: Vec<String> = certs
            .iter()
            .map(|c| hex::encode(sha2::Sha256::digest(c.as_ref())))
            .collect();
        // Amazon Root CA 1-4 and Starfield Services Root Certificate Authority - G2, as
        // amazontrust.com/repository lists them.
        assert_eq!(
            fingerprints,
            [
                "8ecde6884f3d87b1125ba31ac3fcb13d7016de7f57cc904fe1cb97c6ae98196e",
                "1ba5b2aa8c65401a82960118f80bec4f62304d83cec4713a19c39c011ea46db4",
                "18ce6cfe7bf14e60b2e347b8dfe868cb31d02ebb3ada271569f50343b46db3a4",
                "e35d28419ed02025cfa69038cd623962458da5c695fbdea3c22b0bfb25897092",
                "568d6905a2c88708a4b3025190edcfedb1974a606a13c6e5290fcb2ae63edab5",
            ]
        );
        let mut roots = rustls::RootCertStore::empty();
        assert_eq!(roots.add_parsable_certificates(certs), (5, 0));
    }

    #[test]
    fn aws_clients_trust_the_system_roots_where_aws_endpoints_are_not_expected() {
        use super::{aws_trust, AwsTrust::*};
        let trust = |vars: &[(&str, &str)]| {
            aws_trust(vars.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())))
        };
        assert_eq!(trust(&[("AWS_REGION", "us-east-1")]), Amazon);
        assert_eq!(trust(&[("AWS_REGION", "us-gov-west-1")]), Amazon);
        assert_eq!(trust(&[("AWS_DEFAULT_REGION", "eu-central-2")]), Amazon);
        assert_eq!(trust(&[]), Amazon);
        // The local stack: plain HTTP, no roots read at all.
        let local = [
            ("AWS_REGION", "us-east-1"),
            ("AWS_ENDPOINT_URL", "http://127.0.0.1:4566"),
        ];
        assert_eq!(trust(&local), Amazon);
        assert_eq!(trust(&[("AWS_REGION", "cn-north-1")]), System);
        assert_eq!(trust(&[("AWS_REGION", "us-iso-east-1")]), System);
        assert_eq!(trust(&[("AWS_REGION", "us-isob-east-1")]), System);
        assert_eq!(trust(&[("AWS_REGION", "eusc-de-east-1")]), System);
        assert_eq!(trust(&[("AWS_REGION", "eu-isoe-west-1")]), System);
        assert_eq!(trust(&[("AWS_REGION", "us-isof-south-1")]), System);
        // AWS_REGION first, as the SDK configuration reads them.
        let both = [
            ("AWS_REGION", "cn-northwest-1"),
            ("AWS_DEFAULT_REGION", "us-east-1"),
        ];
        assert_eq!(trust(&both), System);
        let both = [
            ("AWS_REGION", "us-east-1"),
            ("AWS_DEFAULT_REGION", "cn-northwest-1"),
        ];
        assert_eq!(trust(&both), Amazon);
        assert_eq!(trust(&[("SSL_CERT_FILE", "/etc/pki/ca.pem")]), System);
        assert_eq!(trust(&[("SSL_CERT_DIR", "/etc/ssl/certs")]), System);
        assert_eq!(trust(&[("SSL_CERT_DIR", "")]), Amazon);
        let proxy = [("AWS_ENDPOINT_URL", "HTTPS://dynamodb.internal.example")];
        assert_eq!(trust(&proxy), System);
        let one_service = [("AWS_ENDPOINT_URL_DYNAMODB", "https://ddb.internal.example")];
        assert_eq!(trust(&one_service), System);
        let ignored = [
            ("AWS_ENDPOINT_URL", "https://dynamodb.internal.example"),
            ("AWS_IGNORE_CONFIGURED_ENDPOINT_URLS", "TRUE"),
        ];
        assert_eq!(trust(&ignored), Amazon);
    }

    #[tokio::test]
    async fn sdk_clients_build_the_https_client_on_their_first_request_only() {
        let built = std::sync::Arc::new(std::sync::OnceLock::new());
        let app = axum::Router::new().fallback(|| async {
            (
                [("content-type", "application/x-amz-json-1.0")],
                r#"{"TableNames":[]}"#,
            )
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        let config = aws_sdk_dynamodb::Config::builder()
            .behavior_version_latest()
            .region(aws_sdk_dynamodb::config::Region::new("us-east-1"))
            .credentials_provider(aws_credential_types::Credentials::new(
                "a", "b", None, None, "test",
            ))
            .endpoint_url(url)
            .http_client(aws_smithy_runtime_api::client::http::SharedHttpClient::new(
                super::BuiltOnFirstUse {
                    client: built.clone(),
                    trust: None,
                },
            ))
            .build();
        let client = aws_sdk_dynamodb::Client::from_conf(config);
        let _another = client.clone();
        assert!(built.get().is_none(), "constructing clients builds nothing");
        client.list_tables().send().await.unwrap();
        assert!(built.get().is_some(), "the first request builds it");
    }
}
