//! Checks AWS Signature Version 4 the way AWS does, for local doubles of AWS services the
//! local stack has no useful emulation of (Bedrock): recompute the canonical request from what
//! arrived, sign it with the shared secret, compare.

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

/// What a valid signature said about itself.
#[derive(Debug, Clone, PartialEq)]
pub struct Signed {
    pub access_key: String,
    pub region: String,
    pub service: String,
    pub signed_headers: Vec<String>,
}

fn hmac(key: &[u8], data: &str) -> Vec<u8> {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("any key length");
    mac.update(data.as_bytes());
    mac.finalize().into_bytes().to_vec()
}

/// URI-encodes one path segment as SigV4 wants (unreserved characters kept).
fn encode(segment: &str) -> String {
    segment
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Verifies the request's `Authorization` header against `secret`.
pub fn verify(
    method: &str,
    path: &str,
    query: &str,
    headers: &axum::http::HeaderMap,
    body: &[u8],
    secret: &str,
) -> Result<Signed, String> {
    let auth = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .ok_or("no Authorization header")?;
    let rest = auth
        .strip_prefix("AWS4-HMAC-SHA256 ")
        .ok_or("not AWS4-HMAC-SHA256")?;
    let mut credential = "";
    let mut signed = "";
    let mut signature = "";
    for part in rest.split(',').map(str::trim) {
        if let Some(v) = part.strip_prefix("Credential=") {
            credential = v;
        } else if let Some(v) = part.strip_prefix("SignedHeaders=") {
            signed = v;
        } else if let Some(v) = part.strip_prefix("Signature=") {
            signature = v;
        }
    }
    let scope: Vec<&str> = credential.splitn(5, '/').collect();
    let [access_key, date, region, service, terminator] = scope[..] else {
        return Err(format!("bad credential scope {credential}"));
    };
    if terminator != "aws4_request" {
        return Err("bad scope terminator".into());
    }
    let amz_date = headers
        .get("x-amz-date")
        .and_then(|v| v.to_str().ok())
        .ok_or("no x-amz-date")?;
    if !amz_date.starts_with(date) {
        return Err("x-amz-date is not the scope's date".into());
    }
    let signed_headers: Vec<String> = signed.split(';').map(str::to_owned).collect();
    if !signed_headers.iter().any(|h| h == "host") {
        return Err("host is not signed".into());
    }
    let mut canonical_headers = String::new();
    for name in &signed_headers {
        let values: Vec<String> = headers
            .get_all(name.as_str())
            .iter()
            .map(|v| v.to_str().unwrap_or_default().trim().to_owned())
            .collect();
        canonical_headers.push_str(&format!("{name}:{}\n", values.join(",")));
    }
    // Every service but S3 signs the path encoded once more than it is sent.
    let canonical_path: String = path.split('/').map(encode).collect::<Vec<_>>().join("/");
    let payload_hash = hex::encode(Sha256::digest(body));
    if let Some(claimed) = headers.get("x-amz-content-sha256") {
        if claimed.to_str().unwrap_or_default() != payload_hash {
            return Err("x-amz-content-sha256 does not match the body".into());
        }
    }
    let canonical_request = format!(
        "{method}\n{canonical_path}\n{query}\n{canonical_headers}\n{signed}\n{payload_hash}"
    );
    let scope = format!("{date}/{region}/{service}/aws4_request");
    let string_to_sign = format!(
        "AWS4-HMAC-SHA256\n{amz_date}\n{scope}\n{}",
        hex::encode(Sha256::digest(canonical_request.as_bytes()))
    );
    let mut key = hmac(format!("AWS4{secret}").as_bytes(), date);
    for part in [region, service, "aws4_request"] {
        key = hmac(&key, part);
    }
    let expected = hex::encode(hmac(&key, &string_to_sign));
    if expected != signature {
        return Err("signature does not match".into());
    }
    Ok(Signed {
        access_key: access_key.to_owned(),
        region: region.to_owned(),
        service: service.to_owned(),
        signed_headers,
    })
}
