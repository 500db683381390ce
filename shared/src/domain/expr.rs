//! Templates and expressions (minijinja): `{{ input.topic }}`, `{{ steps.fetch.output.body }}`,
//! filters and defaults. The environment has no loader, no globals and no access to the process
//! environment: a template sees only the context it is given.
//!
//! Templates come from tenants and run on shared functions, so their work is bounded: every
//! render has fuel (instructions) and an output cap, the filters that can multiply a string's
//! size check the result's size first, and statements that bind values (`set`, `with`,
//! `namespace`) are refused, since chained bindings double a string per line. Intermediate
//! values go through steps instead, each of which is size-checked.

use std::collections::BTreeSet;
use std::sync::OnceLock;

use minijinja::value::{Kwargs, Rest};
use minijinja::{Environment, Error, ErrorKind, State, UndefinedBehavior, Value as JValue};
use serde_json::Value;

/// Instructions one render may execute: loops over a thousand items with a few filters each
/// fit; a nested loop over input-sized ranges does not.
pub const TEMPLATE_FUEL: u64 = 250_000;
/// The most text one render may produce, and the most a size-multiplying filter may return.
pub const MAX_RENDER_BYTES: usize = 350 * 1024;
/// Widths and precisions in `format`, and `tojson`'s indent, are at most this.
const MAX_PAD: usize = 1024;

/// Filters a template may use: minijinja's built-ins minus the HTML ones, plus the ones a
/// workflow needs (`tojson`, `fromjson`, `urlencode`, `b64encode`, `b64decode`).
pub const FILTERS: &[&str] = &[
    "abs",
    "attr",
    "b64decode",
    "b64encode",
    "batch",
    "bool",
    "capitalize",
    "count",
    "d",
    "default",
    "dictsort",
    "first",
    "float",
    "format",
    "fromjson",
    "groupby",
    "indent",
    "int",
    "items",
    "join",
    "last",
    "length",
    "lines",
    "list",
    "lower",
    "map",
    "max",
    "min",
    "reject",
    "rejectattr",
    "replace",
    "reverse",
    "round",
    "select",
    "selectattr",
    "slice",
    "sort",
    "split",
    "string",
    "sum",
    "title",
    "tojson",
    "trim",
    "unique",
    "upper",
    "urlencode",
    "chain",
    "zip",
];
/// Tests (`x is defined`).
pub const TESTS: &[&str] = &[
    "boolean",
    "defined",
    "divisibleby",
    "endingwith",
    "eq",
    "equalto",
    "even",
    "false",
    "float",
    "ge",
    "greaterthan",
    "gt",
    "in",
    "integer",
    "iterable",
    "le",
    "lessthan",
    "lower",
    "lt",
    "mapping",
    "ne",
    "none",
    "number",
    "odd",
    "sameas",
    "sequence",
    "startingwith",
    "string",
    "true",
    "undefined",
    "upper",
    "int",
];
/// Functions (`range(3)`, `dict(a=1)`).
pub const FUNCTIONS: &[&str] = &["range", "dict"];

fn env() -> &'static Environment<'static> {
    static ENV: OnceLock<Environment<'static>> = OnceLock::new();
    ENV.get_or_init(|| {
        let mut env = Environment::new();
        // A typo in a path is an error, not an empty string; `| default(...)` still works.
        env.set_undefined_behavior(UndefinedBehavior::Strict);
        env.set_auto_escape_callback(|_| minijinja::AutoEscape::None);
        env.set_fuel(Some(TEMPLATE_FUEL));
        for name in ["namespace", "debug", "lipsum", "cycler", "joiner"] {
            env.remove_global(name);
        }
        for name in ["safe", "escape", "e", "pprint"] {
            env.remove_filter(name);
        }
        env.add_filter("replace", replace);
        env.add_filter("indent", indent);
        env.add_filter("join", join);
        env.add_filter("format", format);
        env.add_filter("tojson", tojson);
        env.add_filter("slice", slice);
        env.add_filter("batch", batch);
        env.add_filter("fromjson", fromjson);
        env.add_filter("b64encode", b64encode);
        env.add_filter("b64decode", b64decode);
        env
    })
}

fn too_large(what: &str, bytes: usize) -> Error {
    Error::new(
        ErrorKind::InvalidOperation,
        format!(
            "{what} would be {bytes} bytes, more than the {} KB a template may produce",
            MAX_RENDER_BYTES / 1024
        ),
    )
}

fn bounded(what: &str, bytes: usize) -> Result<(), Error> {
    if bytes > MAX_RENDER_BYTES {
        Err(too_large(what, bytes))
    } else {
        Ok(())
    }
}

/// `replace(old, new[, count])`, its result's size checked before it is built.
fn replace(value: String, from: String, to: String, count: Option<usize>) -> Result<String, Error> {
    let found = if from.is_empty() {
        value.chars().count() + 1
    } else {
        value.matches(from.as_str()).count()
    };
    let n = count.map_or(found, |c| c.min(found));
    bounded(
        "replace's result",
        (value.len() + n * to.len()).saturating_sub(n * from.len()),
    )?;
    Ok(value.replacen(from.as_str(), &to, n))
}

/// `indent(width=4, first=false, blank=false)`.
fn indent(
    value: String,
    width: Option<usize>,
    first: Option<bool>,
    blank: Option<bool>,
) -> Result<String, Error> {
    let width = width.unwrap_or(4);
    let lines = value.lines().count() + 1;
    if width > MAX_PAD {
        return Err(too_large("indent's width", width));
    }
    bounded("indent's result", value.len() + lines * width)?;
    let pad = " ".repeat(width);
    let mut out = String::with_capacity(value.len() + lines * width);
    for (i, line) in value.split('\n').enumerate() {
        if i > 0 {
            out.push('\n');
        }
        let wanted =
            (i > 0 || first.unwrap_or(false)) && (!line.is_empty() || blank.unwrap_or(false));
        if wanted {
            out.push_str(&pad);
        }
        out.push_str(line);
    }
    Ok(out)
}

/// `join(sep="")`, summing the parts' sizes as it goes.
fn join(value: &JValue, sep: Option<String>) -> Result<String, Error> {
    let sep = sep.unwrap_or_default();
    let mut out = String::new();
    for (i, item) in value.try_iter()?.enumerate() {
        if i > 0 {
            out.push_str(&sep);
        }
        match item.as_str() {
            Some(s) => out.push_str(s),
            None => out.push_str(&item.to_string()),
        }
        bounded("join's result", out.len())?;
    }
    Ok(out)
}

/// The most groups `slice` and `batch` may make or take (they allocate for the count first).
const MAX_GROUPS: usize = 10_000;

fn slice(
    state: &State,
    value: JValue,
    count: usize,
    fill: Option<JValue>,
) -> Result<JValue, Error> {
    if count > MAX_GROUPS {
        return Err(too_large("slice's count", count));
    }
    minijinja::filters::slice(state, value, count, fill)
}

fn batch(
    state: &State,
    value: JValue,
    count: usize,
    fill: Option<JValue>,
) -> Result<JValue, Error> {
    if count > MAX_GROUPS {
        return Err(too_large("batch's size", count));
    }
    minijinja::filters::batch(state, value, count, fill)
}

/// `"%-10s" | format(x)`, with widths and precisions bounded; keyed (`%(name)s`) and `*`
/// widths are refused.
fn format(state: &State, format_str: &JValue, args: Rest<JValue>) -> Result<JValue, Error> {
    let text = format_str.as_str().unwrap_or_default();
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            continue;
        }
        let mut spec = String::new();
        for n in chars.by_ref() {
            if n.is_ascii_alphabetic() || n == '%' {
                break;
            }
            spec.push(n);
        }
        if spec.starts_with('(') || spec.contains('*') {
            return Err(Error::new(
                ErrorKind::InvalidOperation,
                "format supports positional specs only (no `%(name)s`, no `*` widths)",
            ));
        }
        for number in spec.split(|c: char| !c.is_ascii_digit()) {
            if number.len() > 4 || number.parse::<usize>().is_ok_and(|n| n > MAX_PAD) {
                return Err(too_large(
                    "a format width",
                    number.parse().unwrap_or(usize::MAX),
                ));
            }
        }
    }
    minijinja::filters::format(state, format_str, args)
}

fn tojson(value: &JValue, indent: Option<JValue>, kwargs: Kwargs) -> Result<JValue, Error> {
    let wide = indent
        .as_ref()
        .and_then(|i| usize::try_from(i.clone()).ok())
        .is_some_and(|n| n > 16);
    if wide {
        return Err(Error::new(
            ErrorKind::InvalidOperation,
            "tojson's indent is at most 16",
        ));
    }
    let out = minijinja::filters::tojson(value, indent, kwargs)?;
    bounded("tojson's result", out.as_str().map_or(0, str::len))?;
    Ok(out)
}

fn fromjson(value: String) -> Result<JValue, Error> {
    serde_json::from_str::<Value>(&value)
        .map(JValue::from_serialize)
        .map_err(|e| Error::new(ErrorKind::InvalidOperation, format!("fromjson: {e}")))
}

fn b64encode(value: String) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(value)
}

fn b64decode(value: String) -> Result<String, Error> {
    use base64::Engine as _;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(value.trim())
        .map_err(|e| Error::new(ErrorKind::InvalidOperation, format!("b64decode: {e}")))?;
    String::from_utf8(bytes).map_err(|_| {
        Error::new(
            ErrorKind::InvalidOperation,
            "b64decode: the text is not UTF-8",
        )
    })
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ExprError(pub String);

fn error(e: minijinja::Error) -> ExprError {
    if e.kind() == ErrorKind::OutOfFuel {
        return ExprError(format!(
            "the template ran out of fuel: it may execute at most {TEMPLATE_FUEL} instructions"
        ));
    }
    if e.kind() == ErrorKind::WriteFailure {
        return ExprError(format!(
            "the template's output is larger than {} KB",
            MAX_RENDER_BYTES / 1024
        ));
    }
    let mut message = e.kind().to_string();
    if let Some(detail) = e.detail() {
        message = format!("{message}: {detail}");
    }
    ExprError(message)
}

/// Takes rendered text up to the cap, then refuses the rest (which stops the render).
struct Capped(Vec<u8>);

impl std::io::Write for Capped {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.0.len() + buf.len() > MAX_RENDER_BYTES {
            return Err(std::io::Error::other("template output cap"));
        }
        self.0.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The filters, tests and functions a template calls, and the statements it uses that bind
/// values; each one not allowed is a problem (as `what name`).
pub fn template_problems(template: &str, as_expression: bool) -> Result<Vec<String>, ExprError> {
    let source = if as_expression {
        format!("{{{{ {template} }}}}")
    } else {
        template.to_owned()
    };
    let mut problems = BTreeSet::new();
    let tokens =
        minijinja::machinery::tokenize(&source, false, Default::default(), Default::default());
    let mut after_block_start = false;
    for token in tokens {
        let (token, _) = token.map_err(error)?;
        if after_block_start {
            if let minijinja::machinery::Token::Ident(
                name @ ("set" | "with" | "macro" | "call" | "include" | "import" | "from"
                | "extends" | "block" | "filter"),
            ) = token
            {
                problems.insert(format!(
                    "`{{% {name} %}}` is not available in templates: compute the value in a transform step"
                ));
            }
        }
        after_block_start = matches!(token, minijinja::machinery::Token::BlockStart);
    }
    let compiled = env().template_from_str(&source).map_err(error)?;
    let instructions = &minijinja::machinery::get_compiled_template(&compiled).instructions;
    let mut i = 0;
    while let Some(instruction) = instructions.get(i) {
        use minijinja::machinery::Instruction as I;
        match instruction {
            I::ApplyFilter(name, ..) if !FILTERS.contains(name) => {
                problems.insert(format!(
                    "unknown filter `{name}`; available: {}",
                    FILTERS.join(", ")
                ));
            }
            I::PerformTest(name, ..) if !TESTS.contains(name) => {
                problems.insert(format!(
                    "unknown test `{name}`; available: {}",
                    TESTS.join(", ")
                ));
            }
            I::CallFunction(name, ..) if !FUNCTIONS.contains(name) => {
                problems.insert(format!(
                    "unknown function `{name}`; available: {}",
                    FUNCTIONS.join(", ")
                ));
            }
            _ => {}
        }
        i += 1;
    }
    Ok(problems.into_iter().collect())
}

/// A template context converted once: every template of a step is evaluated against the same
/// one, where converting a JSON context on each call copied every step's output again.
pub type Context = JValue;

/// The context of `value` (a JSON value, or a struct borrowing the parts).
pub fn context<T: serde::Serialize + ?Sized>(value: &T) -> Context {
    JValue::from_serialize(value)
}

/// Renders a text template, within its fuel and output cap. `context` is a [`Context`] or
/// anything serializable (converted on each call).
pub fn render<C: serde::Serialize + ?Sized>(
    template: &str,
    context: &C,
) -> Result<String, ExprError> {
    let compiled = env().template_from_str(template).map_err(error)?;
    let mut out = Capped(Vec::new());
    compiled
        .render_captured_to(context, &mut out)
        .map_err(error)?;
    String::from_utf8(out.0).map_err(|e| ExprError(e.to_string()))
}

/// Evaluates an expression to a JSON value.
pub fn eval<C: serde::Serialize + ?Sized>(
    expression: &str,
    context: &C,
) -> Result<Value, ExprError> {
    let compiled = env().compile_expression(expression).map_err(error)?;
    let value = compiled.eval(context).map_err(error)?;
    if value.is_undefined() {
        return Err(ExprError(format!("`{expression}` is undefined")));
    }
    // Serializing walks the value again (a lazily repeated sequence is only built here), so it
    // is paid for too.
    let (json, exhausted) =
        minijinja::machinery::with_fuel(TEMPLATE_FUEL, || serde_json::to_value(&value));
    if exhausted {
        return Err(error(Error::from(ErrorKind::OutOfFuel)));
    }
    json.map_err(|e| ExprError(e.to_string()))
}

/// Evaluates an expression as a condition (Jinja truthiness).
pub fn truthy<C: serde::Serialize + ?Sized>(
    expression: &str,
    context: &C,
) -> Result<bool, ExprError> {
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
pub fn render_value<C: serde::Serialize + ?Sized>(
    template: &Value,
    context: &C,
) -> Result<Value, ExprError> {
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
pub fn transform<C: serde::Serialize + ?Sized>(
    mapping: &Value,
    context: &C,
) -> Result<Value, ExprError> {
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

/// The problems (unknown filters, tests and functions, binding statements) of every string
/// template inside a JSON value.
pub fn value_problems(template: &Value, as_expressions: bool) -> Vec<String> {
    match template {
        Value::String(s) => template_problems(s, as_expressions).unwrap_or_default(),
        Value::Array(items) => items
            .iter()
            .flat_map(|v| value_problems(v, as_expressions))
            .collect(),
        Value::Object(map) => map
            .values()
            .flat_map(|v| value_problems(v, as_expressions))
            .collect(),
        _ => Vec::new(),
    }
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
    fn runaway_templates_stop_quickly_with_a_clear_error() {
        let ctx = json!({"input": {"n": 100000, "s": "x".repeat(100 * 1024)}});
        let started = std::time::Instant::now();
        let e = render(
            "{% for i in range(input.n) %}{% for j in range(input.n) %}.{% endfor %}{% endfor %}",
            &ctx,
        )
        .unwrap_err();
        assert!(
            e.0.contains("out of fuel") || e.0.contains("larger than"),
            "{e}"
        );
        let e = render("{% for i in range(100) %}{{ input.s }}{% endfor %}", &ctx).unwrap_err();
        assert!(e.0.contains("output is larger than 350 KB"), "{e}");
        let e = render("{{ input.s | replace('x', input.s) }}", &ctx).unwrap_err();
        assert!(e.0.contains("replace's result would be"), "{e}");
        let e = render("{{ '%999999999s' | format('a') }}", &ctx).unwrap_err();
        assert!(e.0.contains("format width"), "{e}");
        let e = render("{{ '%(a)999999999s' | format(dict(a=1)) }}", &ctx).unwrap_err();
        assert!(e.0.contains("positional"), "{e}");
        let e = render("{{ [1] | slice(1000000000000) }}", &ctx).unwrap_err();
        assert!(e.0.contains("slice's count"), "{e}");
        let e = render("{{ [1] | batch(1000000000000) }}", &ctx).unwrap_err();
        assert!(e.0.contains("batch's size"), "{e}");
        let e = render("{{ input.s | indent(5000) }}", &ctx).unwrap_err();
        assert!(e.0.contains("indent's width"), "{e}");
        assert!(started.elapsed() < std::time::Duration::from_secs(5));
    }

    #[test]
    fn the_filters_people_expect_are_there() {
        let ctx = json!({"input": {"q": "a b&c", "o": {"k": [1, 2]}, "j": "{\"x\": 1}"}});
        assert_eq!(
            render("{{ input.q | urlencode }}", &ctx).unwrap(),
            "a%20b%26c"
        );
        assert_eq!(
            render("{{ input.o | tojson }}", &ctx).unwrap(),
            r#"{"k":[1,2]}"#
        );
        assert_eq!(eval("(input.j | fromjson).x", &ctx).unwrap(), json!(1));
        assert_eq!(render("{{ 'hi' | b64encode }}", &ctx).unwrap(), "aGk=");
        assert_eq!(render("{{ 'aGk=' | b64decode }}", &ctx).unwrap(), "hi");
        assert_eq!(
            render("{{ 'a-b' | replace('-', '+') }}", &ctx).unwrap(),
            "a+b"
        );
        assert_eq!(render("{{ ['a', 1] | join(',') }}", &ctx).unwrap(), "a,1");
        assert_eq!(render("{{ 'a\nb' | indent(2) }}", &ctx).unwrap(), "a\n  b");
        assert_eq!(render("{{ '%-3s|' | format('a') }}", &ctx).unwrap(), "a  |");
    }

    #[test]
    fn unknown_filters_and_binding_statements_are_problems() {
        assert!(template_problems("{{ input.x | upper | tojson }}", false)
            .unwrap()
            .is_empty());
        let p = template_problems(
            "{{ input.x | shout }} {{ input.y is weird }} {{ lipsum() }}",
            false,
        )
        .unwrap();
        assert_eq!(p.len(), 3, "{p:?}");
        assert!(
            p.iter().any(|m| m.starts_with("unknown filter `shout`")),
            "{p:?}"
        );
        assert!(
            p.iter().any(|m| m.starts_with("unknown test `weird`")),
            "{p:?}"
        );
        assert!(
            p.iter().any(|m| m.starts_with("unknown function `lipsum`")),
            "{p:?}"
        );
        let p = template_problems("{% set a = input.s ~ input.s %}{{ a }}", false).unwrap();
        assert!(p[0].contains("{% set %}"), "{p:?}");
        let p = template_problems("input.x | nope", true).unwrap();
        assert!(p[0].starts_with("unknown filter `nope`"), "{p:?}");
        // Everything listed is really there.
        for f in FILTERS {
            let r = render(&format!("{{{{ 'x' | {f} }}}}"), &json!({}));
            assert!(
                r.as_ref()
                    .map_or_else(|e| !e.0.contains("unknown filter"), |_| true),
                "{f}: {r:?}"
            );
        }
        for t in TESTS {
            let r = render(&format!("{{{{ 1 is {t} }}}}"), &json!({}));
            assert!(
                r.as_ref()
                    .map_or_else(|e| !e.0.contains("unknown test"), |_| true),
                "{t}: {r:?}"
            );
        }
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
