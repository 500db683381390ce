//! TLS for every outbound connection: rustls on ring.
//!
//! Why not the SDK's default client: it links aws-lc-rs (a second, larger crypto library beside
//! the ring our other clients could use) and reads every certificate of the system's store when
//! the first client is built, which was about half of a function's init (docs/PERFORMANCE.md,
//! cold start). AWS clients trust the Mozilla roots compiled in (`webpki-root-certs`), unless
//! `SSL_CERT_FILE` or `SSL_CERT_DIR` is set, which means an operator wants the system's or their
//! own. Step, provider and MCP calls (reqwest) share one rustls configuration with the same roots.

use aws_smithy_http_client::tls::{self, rustls_provider::CryptoMode, TlsContext, TrustStore};
use aws_smithy_runtime_api::client::connector_metadata::ConnectorMetadata;
use aws_smithy_runtime_api::client::http::{
    HttpClient, HttpConnectorSettings, SharedHttpClient, SharedHttpConnector,
};
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use base64::Engine as _;

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
/// connection pool per timeout settings, however often this is called).
pub fn aws_https_client() -> SharedHttpClient {
    static CLIENT: std::sync::OnceLock<SharedHttpClient> = std::sync::OnceLock::new();
    install_crypto_provider();
    CLIENT
        .get_or_init(|| SharedHttpClient::new(BuiltOnFirstUse(Default::default())))
        .clone()
}

fn build_aws_https_client() -> SharedHttpClient {
    let builder = aws_smithy_http_client::Builder::new()
        .tls_provider(tls::Provider::Rustls(CryptoMode::Ring));
    let trust = if system_roots_wanted() {
        TrustStore::default()
    } else {
        TrustStore::empty()
            .with_native_roots(false)
            .with_pem_certificate(compiled_in_roots_pem())
    };
    match TlsContext::builder().with_trust_store(trust).build() {
        Ok(context) => builder.tls_context(context).build_https(),
        Err(e) => {
            tracing::warn!(error = %e, "TLS context refused; the SDK's default trust store is used");
            builder.build_https()
        }
    }
}

/// The SDK's hyper client, built on the first request rather than at start-up. As it comes, it
/// builds a TLS connector (parsing every root certificate) in `validate_base_client_config` and
/// throws it away, each time an SDK client is constructed: that was 87 % of an HTTP function's
/// init (callgrind). Here the roots are encoded and parsed once, by the first request, per
/// timeout settings.
#[derive(Debug)]
struct BuiltOnFirstUse(std::sync::Arc<std::sync::OnceLock<SharedHttpClient>>);

impl HttpClient for BuiltOnFirstUse {
    fn http_connector(
        &self,
        settings: &HttpConnectorSettings,
        components: &RuntimeComponents,
    ) -> SharedHttpConnector {
        self.0
            .get_or_init(build_aws_https_client)
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

/// The compiled-in roots as one PEM document (the form the SDK's trust store takes).
fn compiled_in_roots_pem() -> Vec<u8> {
    let engine = base64::engine::general_purpose::STANDARD;
    let mut pem = String::with_capacity(webpki_root_certs::TLS_SERVER_ROOT_CERTS.len() * 2_200);
    for cert in webpki_root_certs::TLS_SERVER_ROOT_CERTS {
        pem.push_str("-----BEGIN CERTIFICATE-----\n");
        let encoded = engine.encode(cert.as_ref());
        for line in encoded.as_bytes().chunks(64) {
            pem.push_str(std::str::from_utf8(line).unwrap_or_default());
            pem.push('\n');
        }
        pem.push_str("-----END CERTIFICATE-----\n");
    }
    pem.into_bytes()
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_compiled_in_roots_are_all_readable_certificates() {
        use rustls::pki_types::{pem::PemObject, CertificateDer};
        let pem = super::compiled_in_roots_pem();
        let certs: Vec<CertificateDer> = CertificateDer::pem_slice_iter(&pem)
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(certs.len(), webpki_root_certs::TLS_SERVER_ROOT_CERTS.len());
        let mut roots = rustls::RootCertStore::empty();
        let (valid, invalid) = roots.add_parsable_certificates(certs);
        assert_eq!(invalid, 0);
        assert!(valid > 100, "{valid}");
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
                super::BuiltOnFirstUse(built.clone()),
            ))
            .build();
        let client = aws_sdk_dynamodb::Client::from_conf(config);
        let _another = client.clone();
        assert!(built.get().is_none(), "constructing clients builds nothing");
        client.list_tables().send().await.unwrap();
        assert!(built.get().is_some(), "the first request builds it");
    }
}
