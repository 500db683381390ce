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

/// Compiles `schema`, or says why it is not a valid JSON Schema.
pub fn compile(schema: &Value) -> Result<Schema, String> {
    let mut compiler = boon::Compiler::new();
    compiler.set_default_draft(boon::Draft::V2020_12);
    compiler.use_loader(Box::new(NoLoader));
    compiler
        .add_resource(LOCATION, schema.clone())
        .map_err(describe)?;
    let mut schemas = boon::Schemas::new();
    let index = compiler.compile(LOCATION, &mut schemas).map_err(describe)?;
    // boon finds a `$ref` cycle only when validating; one that every instance reaches (as
    // `null` does) is refused here, when the definition is saved, rather than at every start.
    if let Err(e) = schemas.validate(&Value::Null, index) {
        if let Some(cycle) = first(&e, &|k| matches!(k, boon::ErrorKind::RefCycle { .. })) {
            return Err(in_schema_terms(&cycle.kind.to_string()));
        }
    }
    Ok(Schema { schemas, index })
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
        boon::CompileError::ValidationError { src, .. } => {
            let mut found = Vec::new();
            leaves(src, &mut found);
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
/// boon's address for it.
fn in_schema_terms(text: &str) -> String {
    let text = text.split_whitespace().collect::<Vec<_>>().join(" ");
    text.replace(&format!("{LOCATION}#"), "#")
        .replace(LOCATION, "the schema")
        .replace(BASE, "")
}

impl Schema {
    /// Every way `instance` breaks the schema (empty when it conforms).
    pub fn violations(&self, instance: &Value) -> Vec<Violation> {
        let mut out = Vec::new();
        if let Err(e) = self.schemas.validate(instance, self.index) {
            leaves(&e, &mut out);
        }
        out
    }
}

/// boon reports a tree (each `$ref`, `allOf` or `anyOf` a node); its leaves are the violations.
fn leaves(e: &boon::ValidationError<'_, '_>, out: &mut Vec<Violation>) {
    if e.causes.is_empty() {
        out.push(Violation {
            pointer: e.instance_location.to_string(),
            message: in_schema_terms(&e.kind.to_string()),
        });
    }
    for cause in &e.causes {
        leaves(cause, out);
    }
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
        assert!(e.starts_with("at \"/type\": value must be one of"), "{e}");
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
}
