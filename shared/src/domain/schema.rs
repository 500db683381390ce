//! JSON Schema, the one place schemas are compiled and instances checked: a workflow's
//! `input_schema` and an `llm` step's `output_schema`.
//!
//! boon (drafts 4 to 2020-12; 2020-12 when `$schema` is absent). Two choices are deliberate:
//! - No loader: `$ref` resolves inside the schema and to the standard metaschemas only. A
//!   tenant's schema never reads a file of the host or fetches a URL.
//! - `pattern` runs on the `regex` crate, in time linear in the input; a pattern it cannot run
//!   (look-around, back-references) is refused when the schema is saved, not at run time.

use serde_json::Value;

/// A compiled schema.
pub struct Schema {
    schemas: boon::Schemas,
    index: boon::SchemaIndex,
}

/// Where an instance breaks a schema (a JSON pointer into the instance) and how.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    pub pointer: String,
    pub message: String,
}

/// The schema's name inside boon, and the base relative references resolve against (`.invalid`
/// is reserved: it names nothing, and nothing is ever fetched).
const BASE: &str = "https://schema.invalid/";
const LOCATION: &str = "https://schema.invalid/schema.json";

struct NoLoader;

impl boon::UrlLoader for NoLoader {
    fn load(&self, _url: &str) -> Result<Value, Box<dyn std::error::Error>> {
        Err("it is outside the schema: only references inside the schema are resolved".into())
    }
}

/// Patterns one schema may hold (`pattern` values and `patternProperties` keys): each compiles
/// to at most 512 KiB (the vendored boon's limit), so this bounds a schema's regex memory.
pub const MAX_PATTERNS: usize = 64;
/// Violations reported for one instance; the rest are counted in the last.
pub const MAX_VIOLATIONS: usize = 50;
/// Characters of one violation's message (an `enum` of thousands of values names them all).
const MAX_MESSAGE: usize = 500;

/// Compiles `schema`, or says why it is not a valid JSON Schema.
pub fn compile(schema: &Value) -> Result<Schema, String> {
    let patterns = count_patterns(schema);
    if patterns > MAX_PATTERNS {
        return Err(format!(
            "{patterns} patterns (`pattern` and `patternProperties`); at most {MAX_PATTERNS}"
        ));
    }
    let mut compiler = boon::Compiler::new();
    compiler.set_default_draft(boon::Draft::V2020_12);
    compiler.use_loader(Box::new(NoLoader));
    compiler
        .add_resource(LOCATION, schema.clone())
        .map_err(describe)?;
    let mut schemas = boon::Schemas::new();
    let index = compiler.compile(LOCATION, &mut schemas).map_err(describe)?;
    // boon finds `$ref` cycles, and runs out of its work budget, only when validating. A schema
    // where every instance does (as `null` does) is refused here, when it is saved, rather than
    // failing every start.
    if let Err(e) = schemas.validate(&Value::Null, index) {
        let unusable = |k: &boon::ErrorKind<'_, '_>| {
            matches!(
                k,
                boon::ErrorKind::RefCycle { .. } | boon::ErrorKind::WorkLimit
            )
        };
        if let Some(found) = first(&e, &unusable) {
            return Err(in_schema_terms(&found.kind.to_string()));
        }
    }
    Ok(Schema { schemas, index })
}

fn count_patterns(v: &Value) -> usize {
    match v {
        Value::Object(map) => map
            .iter()
            .map(|(k, v)| {
                let own = match (k.as_str(), v) {
                    ("pattern", Value::String(_)) => 1,
                    ("patternProperties", Value::Object(p)) => p.len(),
                    _ => 0,
                };
                own + count_patterns(v)
            })
            .sum(),
        Value::Array(items) => items.iter().map(count_patterns).sum(),
        _ => 0,
    }
}

fn first<'e, 's, 'v>(
    e: &'e boon::ValidationError<'s, 'v>,
    matches: &dyn Fn(&boon::ErrorKind<'s, 'v>) -> bool,
) -> Option<&'e boon::ValidationError<'s, 'v>> {
    if matches(&e.kind) {
        return Some(e);
    }
    e.causes.iter().find_map(|c| first(c, matches))
}

/// A compile error in the schema's own terms: what breaks the metaschema, pointer by pointer,
/// rather than boon's "not valid against metaschema".
fn describe(e: boon::CompileError) -> String {
    let text = match &e {
        boon::CompileError::ValidationError { src, .. }
            if first(src, &|k| matches!(k, boon::ErrorKind::WorkLimit)).is_some() =>
        {
            format!(
                "the schema is too large to check: {}",
                boon::ErrorKind::WorkLimit
            )
        }
        boon::CompileError::ValidationError { src, .. } => {
            let mut found = Vec::new();
            collect(src, &mut found);
            found
                .iter()
                .map(|v| format!("at {:?}: {}", v.pointer, v.message))
                .collect::<Vec<_>>()
                .join("; ")
        }
        other => format!("{other:#}"),
    };
    in_schema_terms(&text)
}

/// One line (boon's regex errors draw a caret under the pattern), naming the schema rather than
/// boon's address for it. Only for boon's own text, never for a message quoting the instance.
fn in_schema_terms(text: &str) -> String {
    let text = text.split_whitespace().collect::<Vec<_>>().join(" ");
    text.replace(&format!("{LOCATION}#"), "#")
        .replace(LOCATION, "the schema")
        .replace(BASE, "")
}

impl Schema {
    /// Every way `instance` breaks the schema (empty when it conforms), at most
    /// [`MAX_VIOLATIONS`].
    pub fn violations(&self, instance: &Value) -> Vec<Violation> {
        let mut out = Vec::new();
        if let Err(e) = self.schemas.validate(instance, self.index) {
            collect(&e, &mut out);
        }
        if out.len() > MAX_VIOLATIONS {
            let more = out.len() - (MAX_VIOLATIONS - 1);
            out.truncate(MAX_VIOLATIONS - 1);
            out.push(Violation {
                pointer: String::new(),
                message: format!("and {more} more problems"),
            });
        }
        out
    }
}

/// boon reports a tree (each `$ref` or `allOf` a node). Its leaves are the violations, except
/// where a node is the whole story: an `anyOf`/`oneOf` none of whose alternatives match is one
/// violation listing what each alternative wanted, and a property name that breaks
/// `propertyNames` names that property.
fn collect(e: &boon::ValidationError<'_, '_>, out: &mut Vec<Violation>) {
    use boon::ErrorKind as K;
    let pointer = e.instance_location.to_string();
    let message = match &e.kind {
        K::AnyOf | K::OneOf(None) => {
            let alternatives: Vec<String> = e
                .causes
                .iter()
                .map(|c| {
                    let mut inner = Vec::new();
                    collect(c, &mut inner);
                    inner
                        .into_iter()
                        .map(|v| relative(&pointer, v))
                        .collect::<Vec<_>>()
                        .join(", ")
                })
                .collect();
            format!("matches none of: {}", alternatives.join("; or "))
        }
        K::PropertyName { .. } => {
            let mut inner = Vec::new();
            for c in &e.causes {
                collect(c, &mut inner);
            }
            let why: Vec<String> = inner.into_iter().map(|v| v.message).collect();
            format!("{}: {}", e.kind, why.join(", "))
        }
        K::RefCycle { .. } => in_schema_terms(&e.kind.to_string()),
        _ if e.causes.is_empty() => e.kind.to_string(),
        _ => {
            for c in &e.causes {
                collect(c, out);
            }
            return;
        }
    };
    out.push(Violation {
        pointer,
        message: clip(message),
    });
}

/// An inner violation as part of its parent's message.
fn relative(parent: &str, v: Violation) -> String {
    match v.pointer.strip_prefix(parent) {
        Some("") => v.message,
        Some(rest) => format!("{rest}: {}", v.message),
        None => format!("{}: {}", v.pointer, v.message),
    }
}

fn clip(mut message: String) -> String {
    if let Some((cut, _)) = message.char_indices().nth(MAX_MESSAGE) {
        message.truncate(cut);
        message.push_str("...");
    }
    message
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn violations_point_into_the_instance() {
        let s = compile(&json!({
            "type": "object",
            "required": ["who", "age"],
            "properties": {"who": {"type": "string"}, "tags": {"items": {"minLength": 2}}}
        }))
        .unwrap();
        assert!(s.violations(&json!({"who": "a", "age": 1})).is_empty());
        let v = s.violations(&json!({"who": 5, "tags": ["ok", "x"]}));
        let pointers: Vec<&str> = v.iter().map(|v| v.pointer.as_str()).collect();
        assert!(pointers.contains(&""), "{v:?}");
        assert!(pointers.contains(&"/who"), "{v:?}");
        assert!(pointers.contains(&"/tags/1"), "{v:?}");
        assert!(v.iter().any(|v| v.message.contains("age")), "{v:?}");
    }

    #[test]
    fn invalid_schemas_are_refused_with_a_reason() {
        let e = compile(&json!({"type": "strang"})).err().unwrap();
        assert!(
            e.starts_with("at \"/type\": matches none of: value must be one of"),
            "{e}"
        );
        let e = compile(&json!({"minLength": -1})).err().unwrap();
        assert_eq!(e, "at \"/minLength\": must be >=0, but got -1");
    }

    #[test]
    fn references_resolve_inside_the_schema_only() {
        let local = compile(&json!({
            "$defs": {"name": {"type": "string"}},
            "properties": {"who": {"$ref": "#/$defs/name"}}
        }))
        .unwrap();
        assert_eq!(local.violations(&json!({"who": 1}))[0].pointer, "/who");
        for outside in [
            "file:///etc/passwd",
            "https://example.com/s.json",
            "other.json",
        ] {
            let e = compile(&json!({"$ref": outside})).err().unwrap();
            assert!(e.contains("outside the schema"), "{outside}: {e}");
        }
        // The standard metaschemas are built in, not fetched.
        compile(&json!({"$schema": "http://json-schema.org/draft-07/schema#", "type": "string"}))
            .unwrap();
    }

    #[test]
    fn reference_cycles_are_refused_or_reported_never_followed() {
        for cyclic in [
            json!({"$ref": "#"}),
            json!({"$defs": {"a": {"allOf": [{"$ref": "#/$defs/b"}]}, "b": {"anyOf": [{"$ref": "#/$defs/a"}]}}, "$ref": "#/$defs/a"}),
            json!({"$dynamicAnchor": "x", "$dynamicRef": "#x"}),
        ] {
            let e = compile(&cyclic).err().unwrap();
            assert!(
                e.contains("reference cycle") && !e.contains("invalid"),
                "{e}"
            );
        }
        // Reached only through an object: a violation for such inputs, not a crash.
        let s = compile(&json!({"$defs": {"b": {"$ref": "#/$defs/b"}}, "properties": {"a": {"$ref": "#/$defs/b"}}})).unwrap();
        let v = s.violations(&json!({"a": 1}));
        assert!(
            v.iter().any(|v| v.message.contains("reference cycle")),
            "{v:?}"
        );
        assert!(s.violations(&json!({"b": 1})).is_empty());
    }

    #[test]
    fn patterns_run_in_linear_time_and_lookaround_is_refused() {
        // Catastrophic for a backtracking engine; linear here.
        let s = compile(&json!({"pattern": "^(a+)+$"})).unwrap();
        let hostile = Value::String(format!("{}!", "a".repeat(10_000)));
        assert_eq!(s.violations(&hostile).len(), 1);
        let e = compile(&json!({"pattern": "^(?!admin)"})).err().unwrap();
        assert!(e.contains("look-around") && !e.contains('\n'), "{e}");
    }

    /// `allOf` of two references to the next definition, `depth` deep: 2^depth evaluations.
    fn doubling(depth: usize) -> Value {
        let mut defs = serde_json::Map::new();
        for i in 0..depth {
            let next = format!("#/$defs/d{}", i + 1);
            defs.insert(
                format!("d{i}"),
                json!({"allOf": [{"$ref": next}, {"$ref": next}]}),
            );
        }
        defs.insert(format!("d{depth}"), json!({"type": "string"}));
        json!({"$defs": defs, "$ref": "#/$defs/d0"})
    }

    #[test]
    fn work_that_grows_without_bound_is_cut_off() {
        let e = compile(&doubling(40)).err().unwrap();
        assert!(e.contains("more than 200000 steps"), "{e}");
        // Hidden behind `null`, it passes the save-time check and is cut off at validation.
        let behind_null = |branch: Value| {
            let mut schema = doubling(40);
            schema.as_object_mut().unwrap().remove("$ref");
            schema["anyOf"] = json!([{"type": "null"}, branch]);
            compile(&schema).unwrap()
        };
        let s = behind_null(json!({"$ref": "#/$defs/d0"}));
        let v = s.violations(&json!({"a": 1}));
        assert_eq!(v.len(), 1, "{v:?}");
        assert!(v[0].message.contains("more than 200000 steps"), "{v:?}");
        // An exhausted branch under `not` does not pass for a valid one (a string is the
        // instance every path accepts, so all 2^40 are walked).
        let s = behind_null(json!({"not": {"$ref": "#/$defs/d0"}}));
        let v = s.violations(&json!("x"));
        assert!(v[0].message.contains("more than 200000 steps"), "{v:?}");
        // A modest schema is untouched.
        assert!(compile(&doubling(8))
            .unwrap()
            .violations(&json!("x"))
            .is_empty());
    }

    #[test]
    fn a_long_reference_chain_is_cut_off_not_a_stack_overflow() {
        let mut defs = serde_json::Map::new();
        for i in 0..3000 {
            defs.insert(
                format!("d{i}"),
                json!({"$ref": format!("#/$defs/d{}", i + 1)}),
            );
        }
        defs.insert("d3000".into(), json!({"type": "string"}));
        let chain = json!({"$defs": defs, "anyOf": [{"type": "null"}, {"$ref": "#/$defs/d0"}]});
        // On a thread with tokio's default worker stack, in whatever build the tests run.
        let found = std::thread::Builder::new()
            .stack_size(2 * 1024 * 1024)
            .spawn(move || compile(&chain).map(|s| s.violations(&json!(1))))
            .unwrap()
            .join()
            .unwrap()
            .unwrap();
        assert!(
            found[0].message.contains("nests deeper than 128"),
            "{found:?}"
        );
    }

    #[test]
    fn many_subschemas_compile_and_too_many_are_refused() {
        let many =
            |n: i64| json!({"allOf": (0..n).map(|i| json!({"minimum": i})).collect::<Vec<_>>()});
        let s = compile(&many(2_000)).unwrap();
        assert_eq!(s.violations(&json!(1_998)).len(), 1);
        // Checking it against its metaschema alone would take more than the budget.
        let e = compile(&many(20_000)).err().unwrap();
        assert!(e.starts_with("the schema is too large to check"), "{e}");
    }

    #[test]
    fn multiple_of_is_decimal() {
        let cents = compile(&json!({"multipleOf": 0.01})).unwrap();
        for ok in [json!(19.99), json!(0.07), json!(100), json!(-3.3), json!(0)] {
            assert!(cents.violations(&ok).is_empty(), "{ok}");
        }
        assert_eq!(cents.violations(&json!(0.075)).len(), 1);
        let s = compile(&json!({"multipleOf": 2.5})).unwrap();
        assert!(s.violations(&json!(10)).is_empty());
        assert_eq!(s.violations(&json!(11)).len(), 1);
        assert!(
            compile(&json!({"multipleOf": 3}))
                .unwrap()
                .violations(&json!(1e300))
                .len()
                <= 1
        );
    }

    #[test]
    fn patterns_are_bounded_and_refused_without_panicking() {
        // Parses, but names no Unicode class: refused with a reason in every build.
        let e = compile(&json!({"pattern": "\\p{Foo}"})).err().unwrap();
        assert!(e.contains("Foo") || e.contains("Unicode"), "{e}");
        // Compiles past the size limit.
        let e = compile(&json!({"pattern": "(a{1000}){100}"}))
            .err()
            .unwrap();
        assert!(e.contains("size limit"), "{e}");
        let many: serde_json::Map<String, Value> =
            (0..65).map(|i| (format!("^p{i}"), json!({}))).collect();
        let e = compile(&json!({"patternProperties": many})).err().unwrap();
        assert!(e.contains("at most 64"), "{e}");
    }

    #[test]
    fn alternatives_are_one_violation_and_reports_are_capped() {
        let s =
            compile(&json!({"properties": {"n": {"anyOf": [{"type": "string"}, {"minimum": 3}]}}}))
                .unwrap();
        let v = s.violations(&json!({"n": 1}));
        assert_eq!(v.len(), 1, "{v:?}");
        assert_eq!(v[0].pointer, "/n");
        assert!(
            v[0].message.contains("string") && v[0].message.contains(">=3"),
            "{v:?}"
        );
        let s = compile(&json!({"propertyNames": {"maxLength": 3}})).unwrap();
        let v = s.violations(&json!({"long one": 1}));
        assert!(v[0].message.contains("long one"), "{v:?}");
        let s = compile(&json!({"items": {"type": "string"}})).unwrap();
        let v = s.violations(&json!((0..200).collect::<Vec<_>>()));
        assert_eq!(v.len(), MAX_VIOLATIONS);
        assert_eq!(v[MAX_VIOLATIONS - 1].message, "and 151 more problems");
    }
}
