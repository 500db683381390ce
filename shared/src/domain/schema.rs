//! JSON Schema, the one place schemas are compiled and instances checked: a workflow's
//! `input_schema` and an `llm` step's `output_schema`.
//!
//! boon (drafts 4 to 2020-12; 2020-12 when `$schema` is absent). Two choices are deliberate:
//! - No loader: `$ref` resolves inside the schema and to the standard metaschemas only. A
//!   tenant's schema never reads a file of the host or fetches a URL.
//! - `pattern` runs on the `regex` crate, in time linear in the input; a pattern it cannot run
//!   (look-around, back-references) is refused when the schema is saved, not at run time.
//!
//! Schemas come from tenants and are checked on functions every tenant shares, so the work one
//! can cause is bounded: structural limits here, before boon sees the schema; a work and depth
//! budget inside boon (vendored, `vendor/boon/PATCHES.md`); and both compiling and checking
//! run on a thread of their own with a stack no schema can exhaust within that depth.

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

/// Bytes of one schema (as compact JSON).
pub const MAX_SCHEMA_BYTES: usize = 100_000;
/// Patterns one schema may hold (`pattern` values and `patternProperties` keys). Each is at most
/// `boon::MAX_REGEX_LEN` bytes and compiles to a few automata of at most 1 MiB each (the
/// vendored boon's limit), so this bounds a schema's regex memory to a few tens of MiB.
pub const MAX_PATTERNS: usize = 16;
/// Resources and anchors (`$id`, draft 4's `id`, `$anchor`, `$dynamicAnchor`) one schema may
/// declare: boon resolves references by scanning them.
pub const MAX_IDS: usize = 256;
/// Bytes of one reference (`$ref`, `$dynamicRef`, `$recursiveRef`): boon walks its pointer
/// recursively, a frame per token.
pub const MAX_REF_BYTES: usize = 512;
/// The stack compiling and checking run on: `boon::DEPTH_LIMIT` nested evaluations take about
/// 2 MiB in a debug build (about 15 KiB a level), well under this. Reserved, not committed.
const STACK_BYTES: usize = 16 * 1024 * 1024;
/// Violations reported for one instance; the rest are counted in the last.
pub const MAX_VIOLATIONS: usize = 50;
/// Characters of one violation's message (an `enum` of thousands of values names them all).
const MAX_MESSAGE: usize = 500;

/// Runs `f` on a thread with [`STACK_BYTES`] of stack, borrowing what it needs.
fn with_stack<T: Send>(f: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|scope| {
        match std::thread::Builder::new()
            .name("json-schema".into())
            .stack_size(STACK_BYTES)
            .spawn_scoped(scope, f)
        {
            Ok(handle) => handle
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic)),
            // No thread to be had (the process is at its limit): a panic the caller's turn
            // catches, as for any other failure to allocate.
            Err(e) => panic!("no thread for JSON Schema work: {e}"),
        }
    })
}

/// Compiles `schema`, or says why it is not a valid JSON Schema.
pub fn compile(schema: &Value) -> Result<Schema, String> {
    limits(schema)?;
    with_stack(|| compile_bounded(schema))
}

/// Compiles `schema` and checks `instance` against it, on one thread (a start's input check).
pub fn check(schema: &Value, instance: &Value) -> Result<Vec<Violation>, String> {
    limits(schema)?;
    with_stack(|| compile_bounded(schema).map(|s| s.violations_here(instance)))
}

/// The structural limits, checked before boon sees the schema.
fn limits(schema: &Value) -> Result<(), String> {
    let bytes = serde_json::to_vec(schema).map_or(usize::MAX, |b| b.len());
    if bytes > MAX_SCHEMA_BYTES {
        return Err(format!(
            "the schema is {bytes} bytes; at most {MAX_SCHEMA_BYTES}"
        ));
    }
    let mut found = Counts::default();
    count(schema, &mut found);
    if found.patterns > MAX_PATTERNS {
        return Err(format!(
            "{} patterns (`pattern` and `patternProperties`); at most {MAX_PATTERNS}",
            found.patterns
        ));
    }
    if found.ids > MAX_IDS {
        return Err(format!(
            "{} `$id`, `id`, `$anchor` and `$dynamicAnchor`; at most {MAX_IDS}",
            found.ids
        ));
    }
    if let Some(long) = found.long_ref {
        return Err(format!(
            "a reference of {long} bytes; at most {MAX_REF_BYTES}"
        ));
    }
    Ok(())
}

#[derive(Default)]
struct Counts {
    patterns: usize,
    ids: usize,
    long_ref: Option<usize>,
}

/// Counts over every object of the schema (keywords and data alike: a count that includes an
/// `enum` value named `pattern` only errs towards refusing).
fn count(v: &Value, found: &mut Counts) {
    match v {
        Value::Object(map) => {
            for (k, v) in map {
                match (k.as_str(), v) {
                    ("pattern", Value::String(_)) => found.patterns += 1,
                    ("patternProperties", Value::Object(p)) => found.patterns += p.len(),
                    ("$id" | "$anchor" | "$dynamicAnchor", _) | ("id", Value::String(_)) => {
                        found.ids += 1
                    }
                    ("$ref" | "$dynamicRef" | "$recursiveRef", Value::String(r))
                        if r.len() > MAX_REF_BYTES =>
                    {
                        found.long_ref = Some(r.len())
                    }
                    _ => {}
                }
                count(v, found);
            }
        }
        Value::Array(items) => items.iter().for_each(|v| count(v, found)),
        _ => {}
    }
}

fn compile_bounded(schema: &Value) -> Result<Schema, String> {
    let mut compiler = boon::Compiler::new();
    compiler.set_default_draft(boon::Draft::V2020_12);
    compiler.use_loader(Box::new(NoLoader));
    compiler
        .add_resource(LOCATION, schema.clone())
        .map_err(describe)?;
    let mut schemas = boon::Schemas::new();
    let index = compiler.compile(LOCATION, &mut schemas).map_err(describe)?;
    // boon finds `$ref` cycles, and runs out of its work budget, only when validating. A schema
    // where `null` does (so most instances will) is refused here, when it is saved, rather than
    // failing starts.
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
                "the schema is too large to check: checking it against its metaschema takes \
                 more than {} steps",
                boon::WORK_LIMIT
            )
        }
        boon::CompileError::ValidationError { src, .. } => {
            let mut found = Found::default();
            collect(src, &mut found);
            found
                .list
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
        with_stack(|| self.violations_here(instance))
    }

    /// [`Schema::violations`] on the calling thread (already one with [`STACK_BYTES`]).
    fn violations_here(&self, instance: &Value) -> Vec<Violation> {
        let mut found = Found::default();
        if let Err(e) = self.schemas.validate(instance, self.index) {
            collect(&e, &mut found);
        }
        let mut out = found.list;
        if found.more > 0 {
            out.push(Violation {
                pointer: String::new(),
                message: format!("and {} more problems", found.more),
            });
        }
        out
    }
}

/// Violations found, the first [`MAX_VIOLATIONS`] - 1 in full and the rest only counted.
#[derive(Default)]
struct Found {
    list: Vec<Violation>,
    more: usize,
}

impl Found {
    fn push(&mut self, pointer: String, message: impl FnOnce() -> String) {
        if self.list.len() < MAX_VIOLATIONS - 1 {
            self.list.push(Violation {
                pointer,
                message: clip(message()),
            });
        } else {
            self.more += 1;
        }
    }
}

/// boon reports a tree (each `$ref` or `allOf` a node). Its leaves are the violations, except
/// where a node is the whole story: an `anyOf`/`oneOf` none of whose alternatives match, or a
/// `contains` no item matches, is one violation saying what each alternative wanted, and a
/// property name that breaks `propertyNames` names that property.
fn collect(e: &boon::ValidationError<'_, '_>, out: &mut Found) {
    use boon::ErrorKind as K;
    let pointer = e.instance_location.to_string();
    let inner = |c: &boon::ValidationError<'_, '_>, parent: &str| {
        let mut inner = Found::default();
        collect(c, &mut inner);
        let mut parts: Vec<String> = inner
            .list
            .into_iter()
            .map(|v| relative(parent, v))
            .collect();
        if inner.more > 0 {
            parts.push(format!("{} more", inner.more));
        }
        parts.join(", ")
    };
    match &e.kind {
        K::AnyOf | K::OneOf(None) => out.push(pointer.clone(), || {
            let alternatives: Vec<String> = e.causes.iter().map(|c| inner(c, &pointer)).collect();
            format!("matches none of: {}", alternatives.join("; or "))
        }),
        K::Contains | K::MinContains { .. } => out.push(pointer, || e.kind.to_string()),
        K::PropertyName { .. } => out.push(pointer, || {
            let why: Vec<String> = e.causes.iter().map(|c| inner(c, "")).collect();
            format!("{}: {}", e.kind, why.join(", "))
        }),
        K::RefCycle { .. } => out.push(pointer, || in_schema_terms(&e.kind.to_string())),
        _ if e.causes.is_empty() => out.push(pointer, || e.kind.to_string()),
        _ => {
            for c in &e.causes {
                collect(c, out);
            }
        }
    }
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
        message.shrink_to_fit();
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
        assert!(e.contains("more than 500000 steps"), "{e}");
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
        assert!(v[0].message.contains("more than 500000 steps"), "{v:?}");
        // An exhausted branch under `not` does not pass for a valid one (a string is the
        // instance every path accepts, so all 2^40 are walked).
        let s = behind_null(json!({"not": {"$ref": "#/$defs/d0"}}));
        let v = s.violations(&json!("x"));
        assert!(v[0].message.contains("more than 500000 steps"), "{v:?}");
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
        let e = compile(&many(20_000)).err().unwrap();
        assert!(e.contains("at most 100000"), "{e}");
        // Just under the size limit, a wide schema is within the budget of its metaschema check.
        let wide = json!({"properties": (0..1_900).map(|i| (format!("{i}"), json!({"anyOf": [{"type": "string"}, {"minimum": 1}]}))).collect::<serde_json::Map<_, _>>()});
        compile(&wide).unwrap();
    }

    #[test]
    fn multiple_of_is_decimal() {
        // Integers are exact beyond f64's 2^53.
        let even = compile(&json!({"multipleOf": 2})).unwrap();
        assert_eq!(even.violations(&json!(9_007_199_254_740_993u64)).len(), 1);
        assert!(even.violations(&json!(9_007_199_254_740_994u64)).is_empty());
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
            (0..17).map(|i| (format!("^p{i}"), json!({}))).collect();
        let e = compile(&json!({"patternProperties": many})).err().unwrap();
        assert!(e.contains("at most 16"), "{e}");
        let e = compile(&json!({"pattern": "\\d".repeat(600)}))
            .err()
            .unwrap();
        assert!(e.starts_with("at \"/pattern\""), "{e}");
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

    #[test]
    fn deep_nesting_of_every_kind_is_cut_off_not_a_stack_overflow() {
        // Each level a different definition, through allOf, items and properties in turn.
        let mut defs = serde_json::Map::new();
        for i in 0..400 {
            let next = json!({"$ref": format!("#/$defs/d{}", i + 1)});
            let level = match i % 3 {
                0 => json!({"allOf": [next]}),
                1 => json!({"items": next}),
                _ => json!({"properties": {"a": next}}),
            };
            defs.insert(format!("d{i}"), level);
        }
        defs.insert("d400".into(), json!({"type": "string"}));
        let schema = json!({"$defs": defs, "$ref": "#/$defs/d0"});
        let mut deep = json!("x");
        for i in 0..24 {
            deep = if i % 2 == 0 {
                json!([deep])
            } else {
                json!({"a": deep})
            };
        }
        // The caller's stack does not matter: boon runs on a thread of its own.
        let found = std::thread::Builder::new()
            .stack_size(256 * 1024)
            .spawn(move || compile(&schema).map(|s| s.violations(&deep)))
            .unwrap()
            .join()
            .unwrap()
            .unwrap();
        assert!(
            found.is_empty() || found[0].message.contains("nests deeper"),
            "{found:?}"
        );
    }

    #[test]
    fn nested_validations_share_the_budget() {
        // `propertyNames` checks each name as an instance of its own; its work counts against the
        // same budget, and its exhaustion is not hidden by `not`.
        let mut schema = doubling(40);
        schema.as_object_mut().unwrap().remove("$ref");
        schema["anyOf"] =
            json!([{"type": "null"}, {"not": {"propertyNames": {"$ref": "#/$defs/d0"}}}]);
        let s = compile(&schema).unwrap();
        let v = s.violations(&json!({"a": 1, "b": 2}));
        assert!(v[0].message.contains("more than 500000 steps"), "{v:?}");
    }

    #[test]
    fn work_is_charged_by_the_size_of_what_is_looked_at() {
        // 1,000 alternatives that each walk every key of a 50,000-key object.
        let schema = json!({"anyOf": vec![json!({"additionalProperties": false}); 1000]});
        let s = compile(&schema).unwrap();
        let big: serde_json::Map<String, Value> =
            (0..50_000).map(|i| (format!("k{i}"), json!(1))).collect();
        let v = s.violations(&Value::Object(big));
        assert!(v[0].message.contains("more than 500000 steps"), "{v:?}");
    }

    #[test]
    fn schemas_past_the_structural_limits_are_refused() {
        let long = format!("#/{}", "not/".repeat(200));
        let e = compile(&json!({"$ref": long})).err().unwrap();
        assert!(e.contains("at most 512"), "{e}");
        let ids: Vec<Value> = (0..257)
            .map(|i| json!({"$anchor": format!("a{i}")}))
            .collect();
        let e = compile(&json!({"allOf": ids})).err().unwrap();
        assert!(e.contains("at most 256"), "{e}");
        let e = compile(&json!({"description": "x".repeat(MAX_SCHEMA_BYTES)}))
            .err()
            .unwrap();
        assert!(e.contains("at most 100000"), "{e}");
    }

    #[test]
    fn one_spelling_per_index_and_compiles_are_bounded() {
        let e = compile(&json!({"allOf": [{"type": "string"}], "not": {"$ref": "#/allOf/00"}}))
            .err()
            .unwrap();
        assert!(e.contains("not found"), "{e}");
        compile(&json!({"allOf": [{"type": "string"}], "not": {"$ref": "#/allOf/0"}})).unwrap();
        // Small subschemas, many of them: at most 10,000 are compiled.
        let e = compile(&json!({"prefixItems": vec![json!({}); 12_000]}))
            .err()
            .unwrap();
        assert!(e.contains("more than 10000 subschemas"), "{e}");
    }

    #[test]
    fn realistic_patterns_compile() {
        for p in [
            "^[\\p{L}\\p{M} '-]+$",
            "^[a-zA-Z0-9._%+-]+@[a-zA-Z0-9.-]+\\.[a-zA-Z]{2,}$",
            "^\\d{4}-\\d{2}-\\d{2}$",
            "^(AT|BE|BG|CY|CZ|DE|DK|EE|EL|ES|FI|FR|HR|HU|IE|IT|LT|LU|LV|MT|NL|PL|PT|RO|SE|SI|SK)[0-9A-Z]{2,12}$",
        ] {
            let s = compile(&json!({"pattern": p})).unwrap_or_else(|e| panic!("{p}: {e}"));
            let _ = s.violations(&json!("x"));
        }
        // A large class repeated by count compiles past the limit: say so (`maxLength` with `+`
        // is the way to write it).
        let e = compile(&json!({"pattern": "^[\\p{L}\\p{M}]{1,100}$"}))
            .err()
            .unwrap();
        assert!(e.contains("size limit"), "{e}");
    }

    #[test]
    fn required_names_are_charged() {
        let names: Vec<String> = (0..10_000).map(|i| format!("n{i}")).collect();
        let s = compile(&json!({"items": {"required": names}})).unwrap();
        let v = s.violations(&Value::Array(vec![json!({}); 1000]));
        assert!(v[0].message.contains("more than 500000 steps"), "{v:?}");
    }
}
