//! Templates and expressions (minijinja): `{{ input.topic }}`, `{{ steps.fetch.output.body }}`,
//! filters and defaults. The environment has no loader, no globals and no access to the process
//! environment: a template sees only the context it is given.

use std::sync::OnceLock;

use minijinja::{Environment, UndefinedBehavior};
use serde_json::Value;

fn env() -> &'static Environment<'static> {
    static ENV: OnceLock<Environment<'static>> = OnceLock::new();
    ENV.get_or_init(|| {
        let mut env = Environment::new();
        // A typo in a path is an error, not an empty string; `| default(...)` still works.
        env.set_undefined_behavior(UndefinedBehavior::Strict);
        env.set_auto_escape_callback(|_| minijinja::AutoEscape::None);
        env
    })
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ExprError(pub String);

fn error(e: minijinja::Error) -> ExprError {
    let mut message = e.kind().to_string();
    if let Some(detail) = e.detail() {
        message = format!("{message}: {detail}");
    }
    ExprError(message)
}

/// Renders a text template.
pub fn render(template: &str, context: &Value) -> Result<String, ExprError> {
    env().render_str(template, context).map_err(error)
}

/// Evaluates an expression to a JSON value.
pub fn eval(expression: &str, context: &Value) -> Result<Value, ExprError> {
    let compiled = env().compile_expression(expression).map_err(error)?;
    let value = compiled.eval(context).map_err(error)?;
    if value.is_undefined() {
        return Err(ExprError(format!("`{expression}` is undefined")));
    }
    serde_json::to_value(&value).map_err(|e| ExprError(e.to_string()))
}

/// Evaluates an expression as a condition (Jinja truthiness).
pub fn truthy(expression: &str, context: &Value) -> Result<bool, ExprError> {
    let compiled = env().compile_expression(expression).map_err(error)?;
    Ok(compiled.eval(context).map_err(error)?.is_true())
}

/// A string that is exactly one `{{ expression }}` keeps the expression's JSON type.
fn single_expression(s: &str) -> Option<&str> {
    let inner = s.trim().strip_prefix("{{")?.strip_suffix("}}")?;
    (!inner.contains("{{") && !inner.contains("}}")).then_some(inner.trim())
}

/// Renders a JSON value whose strings are templates. A string that is one `{{ expr }}` becomes
/// the expression's value (an object stays an object); other strings render to text.
pub fn render_value(template: &Value, context: &Value) -> Result<Value, ExprError> {
    Ok(match template {
        Value::String(s) => match single_expression(s) {
            Some(expr) => eval(expr, context)?,
            None => Value::String(render(s, context)?),
        },
        Value::Array(items) => Value::Array(
            items
                .iter()
                .map(|v| render_value(v, context))
                .collect::<Result<_, _>>()?,
        ),
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| Ok((k.clone(), render_value(v, context)?)))
                .collect::<Result<_, ExprError>>()?,
        ),
        other => other.clone(),
    })
}

/// Evaluates a JSON mapping whose string leaves are expressions; other leaves are literals.
pub fn transform(mapping: &Value, context: &Value) -> Result<Value, ExprError> {
    Ok(match mapping {
        Value::String(expr) => eval(expr, context)?,
        Value::Array(items) => Value::Array(
            items
                .iter()
                .map(|v| transform(v, context))
                .collect::<Result<_, _>>()?,
        ),
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| Ok((k.clone(), transform(v, context)?)))
                .collect::<Result<_, ExprError>>()?,
        ),
        other => other.clone(),
    })
}

/// Checks a template compiles and returns the dotted variable paths it reads (`input.topic`).
pub fn template_variables(template: &str) -> Result<Vec<String>, ExprError> {
    let t = env().template_from_str(template).map_err(error)?;
    let mut vars: Vec<String> = t.undeclared_variables(true).into_iter().collect();
    vars.sort();
    Ok(vars)
}

/// Checks an expression compiles and returns the dotted variable paths it reads.
pub fn expression_variables(expression: &str) -> Result<Vec<String>, ExprError> {
    let e = env().compile_expression(expression).map_err(error)?;
    let mut vars: Vec<String> = e.undeclared_variables(true).into_iter().collect();
    vars.sort();
    Ok(vars)
}

/// The variables of every string template inside a JSON value, or the first compile error.
pub fn value_variables(template: &Value, as_expressions: bool) -> Result<Vec<String>, ExprError> {
    let mut out = Vec::new();
    match template {
        Value::String(s) if as_expressions => out.extend(expression_variables(s)?),
        Value::String(s) => out.extend(template_variables(s)?),
        Value::Array(items) => {
            for v in items {
                out.extend(value_variables(v, as_expressions)?);
            }
        }
        Value::Object(map) => {
            for v in map.values() {
                out.extend(value_variables(v, as_expressions)?);
            }
        }
        _ => {}
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn renders_paths_filters_and_defaults() {
        let ctx = json!({"input": {"topic": "rust", "n": 3}, "steps": {"fetch": {"output": {"body": "hi"}}}});
        assert_eq!(
            render(
                "{{ input.topic | upper }} {{ steps.fetch.output.body }}",
                &ctx
            )
            .unwrap(),
            "RUST hi"
        );
        assert_eq!(
            render("{{ input.missing | default('x') }}", &ctx).unwrap(),
            "x"
        );
        assert!(render("{{ input.missing }}", &ctx).is_err());
        assert_eq!(
            render_value(&json!({"n": "{{ input.n }}", "t": "n={{ input.n }}"}), &ctx).unwrap(),
            json!({"n": 3, "t": "n=3"})
        );
        assert!(truthy("input.n > 2", &ctx).unwrap());
        assert_eq!(
            transform(&json!({"c": "input.n * 2", "k": 1}), &ctx).unwrap(),
            json!({"c": 6, "k": 1})
        );
    }

    #[test]
    fn templates_cannot_read_the_environment() {
        std::env::set_var("WFE_EXPR_SECRET", "s3cret");
        let ctx = json!({});
        for t in ["{{ env.WFE_EXPR_SECRET }}", "{{ WFE_EXPR_SECRET }}"] {
            assert!(render(t, &ctx).is_err(), "{t}");
        }
    }

    #[test]
    fn reports_variables_and_syntax_errors() {
        assert_eq!(
            template_variables("{{ input.topic }} {{ steps.a.output | length }}").unwrap(),
            vec!["input.topic", "steps.a.output"]
        );
        assert!(template_variables("{{ input.topic ").is_err());
        assert!(expression_variables("input.x >").is_err());
    }
}
