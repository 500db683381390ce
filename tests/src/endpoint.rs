//! The AWS endpoint of the local stack (moto) and the tables on it. Everything here refuses to
//! talk to anything but a loopback address, so no test or local run can touch a real account.

use std::path::PathBuf;

use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_credential_types::Credentials;
use aws_sdk_dynamodb::error::DisplayErrorContext;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, GlobalSecondaryIndex, KeySchemaElement, KeyType, Projection,
    ProjectionType, ScalarAttributeType, StreamSpecification, StreamViewType,
};
use aws_sdk_dynamodb::Client;
use serde_json::Value as Json;

use crate::template::Template;

/// The workspace root (where `Cargo.toml`, `infra/` and `migrations/` are).
pub fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(PathBuf::from)
        .unwrap_or_default()
}

/// `AWS_ENDPOINT_URL`, or moto's default address on `MOTO_PORT` (4566).
pub fn endpoint_url() -> String {
    std::env::var("AWS_ENDPOINT_URL").unwrap_or_else(|_| {
        let port = std::env::var("MOTO_PORT").unwrap_or_else(|_| "4566".into());
        format!("http://127.0.0.1:{port}")
    })
}

/// Accepts only `http(s)://127.x.x.x`, `localhost` or `[::1]` endpoints.
pub fn require_loopback(url: &str) -> Result<(), String> {
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))
        .ok_or_else(|| format!("endpoint {url:?} is not an http(s) URL"))?;
    let authority = rest.split('/').next().unwrap_or_default();
    let host = if let Some(v6) = authority.strip_prefix('[') {
        v6.split(']').next().unwrap_or_default()
    } else {
        authority.split(':').next().unwrap_or_default()
    };
    let loopback = host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    if loopback {
        Ok(())
    } else {
        Err(format!(
            "refusing to use AWS endpoint {url:?}: the local stack and the tests only talk to a loopback address"
        ))
    }
}

/// SDK config for the local stack: loopback endpoint, fixed region, throwaway credentials.
pub async fn sdk_config() -> SdkConfig {
    sdk_config_for(&endpoint_url()).await
}

/// SDK config for a given loopback endpoint (e.g. a second moto, or a proxy in front of one).
pub async fn sdk_config_for(url: &str) -> SdkConfig {
    if let Err(e) = require_loopback(url) {
        panic!("{e}");
    }
    let region = std::env::var("AWS_REGION").unwrap_or_else(|_| "us-east-1".into());
    let sdk = aws_config::defaults(BehaviorVersion::latest())
        .endpoint_url(url)
        .region(Region::new(region))
        .credentials_provider(Credentials::new("local", "local", None, None, "wfe-local"))
        .http_client(shared::tls::aws_https_client())
        .load()
        .await;
    crate::writes::wrap(sdk)
}

/// Creates every table of the template that does not exist yet; returns their physical names.
pub async fn create_tables(client: &Client, template: &Template) -> Result<Vec<String>, String> {
    let mut names = Vec::new();
    for id in template.table_ids() {
        let props = template.properties(&id).map_err(|e| e.to_string())?;
        let name = template.table_name(&id).map_err(|e| e.to_string())?;
        create_table(client, &name, &props).await?;
        names.push(name);
    }
    Ok(names)
}

fn key_schema(keys: &Json) -> Result<Vec<KeySchemaElement>, String> {
    keys.as_array()
        .ok_or("KeySchema must be a list")?
        .iter()
        .map(|k| {
            KeySchemaElement::builder()
                .attribute_name(k["AttributeName"].as_str().unwrap_or_default())
                .key_type(KeyType::from(k["KeyType"].as_str().unwrap_or_default()))
                .build()
                .map_err(|e| e.to_string())
        })
        .collect()
}

async fn create_table(client: &Client, name: &str, props: &Json) -> Result<(), String> {
    let mut req = client
        .create_table()
        .table_name(name)
        .set_key_schema(Some(key_schema(&props["KeySchema"])?))
        .billing_mode(BillingMode::from(
            props["BillingMode"].as_str().unwrap_or("PAY_PER_REQUEST"),
        ));
    for def in props["AttributeDefinitions"]
        .as_array()
        .into_iter()
        .flatten()
    {
        req = req.attribute_definitions(
            AttributeDefinition::builder()
                .attribute_name(def["AttributeName"].as_str().unwrap_or_default())
                .attribute_type(ScalarAttributeType::from(
                    def["AttributeType"].as_str().unwrap_or_default(),
                ))
                .build()
                .map_err(|e| e.to_string())?,
        );
    }
    if let Some(view) = props
        .pointer("/StreamSpecification/StreamViewType")
        .and_then(Json::as_str)
    {
        req = req.stream_specification(
            StreamSpecification::builder()
                .stream_enabled(true)
                .stream_view_type(StreamViewType::from(view))
                .build()
                .map_err(|e| e.to_string())?,
        );
    }
    for gsi in props["GlobalSecondaryIndexes"]
        .as_array()
        .into_iter()
        .flatten()
    {
        req = req.global_secondary_indexes(
            GlobalSecondaryIndex::builder()
                .index_name(gsi["IndexName"].as_str().unwrap_or_default())
                .set_key_schema(Some(key_schema(&gsi["KeySchema"])?))
                .projection(
                    Projection::builder()
                        .projection_type(ProjectionType::from(
                            gsi.pointer("/Projection/ProjectionType")
                                .and_then(Json::as_str)
                                .unwrap_or("ALL"),
                        ))
                        .build(),
                )
                .build()
                .map_err(|e| e.to_string())?,
        );
    }
    match req.send().await {
        Ok(_) => Ok(()),
        Err(e)
            if e.as_service_error()
                .is_some_and(|s| s.is_resource_in_use_exception()) =>
        {
            Ok(())
        }
        Err(e) => Err(format!(
            "creating table {name}: {}",
            DisplayErrorContext(&e)
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::require_loopback;

    #[test]
    fn only_loopback_endpoints_are_accepted() {
        for ok in [
            "http://127.0.0.1:4566",
            "http://localhost:4566/",
            "http://[::1]:4566",
            "http://127.0.0.2",
        ] {
            assert!(require_loopback(ok).is_ok(), "{ok}");
        }
        for bad in [
            "https://dynamodb.us-east-1.amazonaws.com",
            "http://10.0.0.1:4566",
            "http://localhost.evil.com",
            "ftp://127.0.0.1",
        ] {
            assert!(require_loopback(bad).is_err(), "{bad}");
        }
    }
}
