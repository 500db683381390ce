//! A JSON body extractor whose rejections are problem+json naming what is wrong and where.

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::header;
use serde::de::DeserializeOwned;

use super::ApiError;

/// Like `axum::Json`, but a malformed body is a 400 naming the field (`user.email: missing field`),
/// a wrong content type is a 415 and an oversized body a 413, all as problem+json.
#[derive(Debug, Clone, Copy, Default)]
pub struct Json<T>(pub T);

impl<T, S> FromRequest<S> for Json<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let is_json = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .map(|v| {
                let v = v.trim();
                v == "application/json" || (v.starts_with("application/") && v.ends_with("+json"))
            })
            .unwrap_or(false);
        if !is_json {
            return Err(ApiError::new(
                axum::http::StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported-media-type",
                "Unsupported media type",
                "send the body as JSON with `Content-Type: application/json`",
            ));
        }
        parse(&read_body(req, state).await?).map(Json)
    }
}

/// The body's bytes, with 413 and unreadable bodies as problem+json.
async fn read_body<S: Send + Sync>(req: Request, state: &S) -> Result<Bytes, ApiError> {
    Bytes::from_request(req, state).await.map_err(|e| {
        if e.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(
                e.status(),
                "payload-too-large",
                "Payload too large",
                e.body_text(),
            )
        } else {
            ApiError::bad_request("unreadable-body", e.body_text())
        }
    })
}

fn media_type(req: &Request) -> String {
    req.headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase()
}

/// A JSON or YAML document (workflow definitions are written in either), as a JSON value.
#[derive(Debug, Clone)]
pub struct Document(pub serde_json::Value);

impl<S: Send + Sync> FromRequest<S> for Document {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let media = media_type(&req);
        let yaml = matches!(
            media.as_str(),
            "application/yaml" | "application/x-yaml" | "text/yaml"
        );
        if !yaml && media != "application/json" {
            return Err(ApiError::new(
                axum::http::StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported-media-type",
                "Unsupported media type",
                "send the document as `application/json` or `application/yaml`",
            ));
        }
        let bytes = read_body(req, state).await?;
        if yaml {
            let value: serde_json::Value = serde_norway::from_slice(&bytes).map_err(|e| {
                ApiError::bad_request("invalid-yaml", format!("the body is not valid YAML: {e}"))
            })?;
            checked_value(&value)?;
            Ok(Document(value))
        } else {
            parse(&bytes).map(Document)
        }
    }
}

/// A 422 when DynamoDB could not store the value (out-of-range numbers, deep nesting, empty
/// keys): refused at the edge instead of failing a write, or a stream, later.
pub fn checked_value(value: &serde_json::Value) -> Result<(), ApiError> {
    crate::domain::execution::plan::storable(value).map_err(|why| {
        ApiError::unprocessable(
            "unstorable-value",
            format!("the body cannot be stored: {why}"),
        )
    })
}

impl<T: serde::Serialize> axum::response::IntoResponse for Json<T> {
    fn into_response(self) -> axum::response::Response {
        axum::Json(self.0).into_response()
    }
}

/// Parses JSON (one document, nothing after it) with the path of the failing field in the
/// message. Values DynamoDB could not store are refused here, before anything is written.
pub fn parse<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let value: serde_json::Value = serde_json::from_slice(bytes).map_err(|e| {
        ApiError::bad_request("invalid-json", format!("the body is not valid JSON: {e}"))
    })?;
    checked_value(&value)?;
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if path == "." {
            ApiError::bad_request(
                "invalid-body",
                format!("the body does not match the expected shape: {inner}"),
            )
        } else {
            ApiError::bad_request("invalid-field", format!("field `{path}`: {inner}"))
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Deserialize)]
    #[allow(dead_code)]
    struct Login {
        username: String,
        password: String,
        options: Options,
    }

    #[derive(Debug, Deserialize)]
    #[allow(dead_code)]
    struct Options {
        remember: bool,
    }

    #[test]
    fn errors_name_the_field() {
        let e =
            parse::<Login>(br#"{"username": "a", "password": 5, "options": {"remember": true}}"#)
                .unwrap_err();
        assert_eq!(e.kind, "invalid-field");
        assert!(e.detail.contains("`password`"), "{}", e.detail);
        let e = parse::<Login>(
            br#"{"username": "a", "password": "p", "options": {"remember": "yes"}}"#,
        )
        .unwrap_err();
        assert!(e.detail.contains("`options.remember`"), "{}", e.detail);
        let e = parse::<Login>(br#"{"username": "a", "password": "p"}"#).unwrap_err();
        assert!(e.detail.contains("options"), "{}", e.detail);
        let e = parse::<Login>(br#"{"username": "a",,}"#).unwrap_err();
        assert_eq!(e.kind, "invalid-json");
    }
}
