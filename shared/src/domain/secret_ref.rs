//! References to a tenant's secrets: `${secret:NAME}` inside an http step's header values and
//! an mcp step's argument strings, e.g. `Authorization: "Bearer ${secret:crm_token}"`.
//!
//! A reference is only honoured where the definition itself wrote it: a string holding one is
//! never rendered as a template, and the planner lists where such strings are in the request
//! (`secret_refs`, JSON pointers). The worker resolves exactly those places at call time, so an
//! input or a step output that contains `${secret:...}` is sent as the text it is, and the value
//! itself is never in an event, a log or an API answer (the recorded request keeps the
//! reference, which is the redaction history shows).

use serde_json::Value;

const OPEN: &str = "${secret:";

/// A secret's name: 1-64 letters, digits, `-` or `_` (also the API's rule).
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

/// Whether `s` mentions a secret at all (well-formed or not).
pub fn mentions(s: &str) -> bool {
    s.contains(OPEN)
}

/// The pieces of `s`: literal text and secret names, in order.
enum Piece<'a> {
    Text(&'a str),
    Secret(&'a str),
}

fn pieces(s: &str) -> Result<Vec<Piece<'_>>, String> {
    let mut out = Vec::new();
    let mut rest = s;
    while let Some(at) = rest.find(OPEN) {
        out.push(Piece::Text(&rest[..at]));
        let after = &rest[at + OPEN.len()..];
        let end = after
            .find('}')
            .ok_or_else(|| "a `${secret:` reference is not closed with `}`".to_owned())?;
        let name = &after[..end];
        if !valid_name(name) {
            return Err(format!(
                "`${{secret:{name}}}`: a secret's name is 1-64 letters, digits, `-` or `_`"
            ));
        }
        out.push(Piece::Secret(name));
        rest = &after[end + 1..];
    }
    out.push(Piece::Text(rest));
    Ok(out)
}

/// The secrets a string names, checked: well-formed, and not mixed with template syntax (a
/// string that names a secret is sent as written, never rendered).
pub fn names(s: &str) -> Result<Vec<&str>, String> {
    if s.contains("{{") || s.contains("{%") {
        return Err(
            "a value that names a secret cannot also be a template; put the secret in a header or argument of its own"
                .to_owned(),
        );
    }
    Ok(pieces(s)?
        .into_iter()
        .filter_map(|p| match p {
            Piece::Secret(name) => Some(name),
            Piece::Text(_) => None,
        })
        .collect())
}

/// `s` with every reference replaced by its value from `lookup`.
pub fn substitute<'v>(
    s: &str,
    mut lookup: impl FnMut(&str) -> Option<&'v str>,
) -> Result<String, String> {
    let mut out = String::with_capacity(s.len());
    for piece in pieces(s)? {
        match piece {
            Piece::Text(t) => out.push_str(t),
            Piece::Secret(name) => out.push_str(
                lookup(name)
                    .ok_or_else(|| format!("secret `{name}` is not set for this tenant"))?,
            ),
        }
    }
    Ok(out)
}

/// The shortest value a secret may have: shorter ones would match ordinary text, and could not
/// be told apart in an answer.
pub const MIN_VALUE_CHARS: usize = 8;
/// Secrets shorter than this are not searched for in answers.
const MIN_REDACTED_LEN: usize = 4;

/// Replaces every occurrence of a resolved secret's value in `value`'s strings (and keys) with
/// `[secret:NAME]`: a server that echoes a header back must not put the secret into history.
/// A number equal to a secret is replaced too.
pub fn redact(value: &mut Value, secrets: &[(String, String)]) {
    match value {
        Value::String(s) => redact_text(s, secrets),
        Value::Number(n) => {
            let text = n.to_string();
            if let Some((name, _)) = secrets.iter().find(|(_, v)| *v == text) {
                *value = Value::String(format!("[secret:{name}]"));
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|v| redact(v, secrets)),
        Value::Object(map) => {
            let needs_key_change = map.keys().any(|k| {
                secrets
                    .iter()
                    .any(|(_, v)| long(v) && k.contains(v.as_str()))
            });
            if needs_key_change {
                let old = std::mem::take(map);
                for (mut k, v) in old {
                    redact_text(&mut k, secrets);
                    map.insert(k, v);
                }
            }
            map.values_mut().for_each(|v| redact(v, secrets));
        }
        _ => {}
    }
}

fn long(v: &str) -> bool {
    v.len() >= MIN_REDACTED_LEN
}

/// [`redact`] for one piece of text.
pub fn redact_text(text: &mut String, secrets: &[(String, String)]) {
    for (name, secret) in secrets {
        if long(secret) && text.contains(secret.as_str()) {
            *text = text.replace(secret.as_str(), &format!("[secret:{name}]"));
        }
    }
}

/// [`redact_text`] for an error message: errors quote the start of an answer, cut, so a
/// secret's beginning (at least [`MIN_VALUE_CHARS`] of it) at the end of the text, before an
/// optional `…`, is redacted too.
pub fn redact_error(text: &mut String, secrets: &[(String, String)]) {
    redact_text(text, secrets);
    for (name, secret) in secrets {
        let mark = format!("[secret:{name}]");
        let body_end = text.strip_suffix('…').map_or(text.len(), str::len);
        let cut = (MIN_VALUE_CHARS..secret.len())
            .rev()
            .filter(|n| secret.is_char_boundary(*n))
            .find(|n| text[..body_end].ends_with(&secret[..*n]));
        if let Some(n) = cut {
            text.replace_range(body_end - n..body_end, &mark);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn names_and_substitution() {
        assert_eq!(
            names("Bearer ${secret:a} ${secret:b_2}").unwrap(),
            ["a", "b_2"]
        );
        assert!(names("${secret:a} {{ input.x }}").is_err());
        assert!(names("${secret:a").is_err());
        assert!(names("${secret:a b}").is_err());
        let got = substitute("Bearer ${secret:a}!", |n| (n == "a").then_some("xyz")).unwrap();
        assert_eq!(got, "Bearer xyz!");
        assert!(substitute("${secret:missing}", |_| None).is_err());
    }

    #[test]
    fn redaction_reaches_keys_values_and_text() {
        let secrets = vec![("tok".to_owned(), "s3cr3t-value".to_owned())];
        let mut v = json!({"echo": {"authorization": "Bearer s3cr3t-value"},
                           "s3cr3t-value": [1, "x s3cr3t-value y"]});
        redact(&mut v, &secrets);
        let text = v.to_string();
        assert!(!text.contains("s3cr3t-value"), "{text}");
        assert!(text.contains("[secret:tok]"));

        // An excerpt cut in the middle of the secret.
        let mut cut = "401: bad token s3cr3t-va…".to_owned();
        redact_error(&mut cut, &secrets);
        assert_eq!(cut, "401: bad token [secret:tok]…");
        let mut cut = "401: bad token s3cr3t-v".to_owned();
        redact_error(&mut cut, &secrets);
        assert_eq!(cut, "401: bad token [secret:tok]");
    }
}
