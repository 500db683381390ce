//! Validation of a definition: every problem at once, each with the JSON pointer of the field that
//! causes it (unknown step, cycle, unreachable step, bad template, missing input, ...).

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;
use serde_json::Value;

use super::definition::{escape, Definition, Step, StepKind, LLM_PROVIDERS};
use super::{expr, secret_ref};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Problem {
    pub pointer: String,
    pub message: String,
}

/// The context roots a template may read.
const ROOTS: [&str; 6] = ["input", "steps", "item", "index", "error", "execution"];
const METHODS: [&str; 7] = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"];
pub const MAX_CONCURRENCY: u32 = 100;
pub const MAX_ATTEMPTS: u32 = 20;
pub const MAX_STEPS: usize = 200;
/// Branches of one parallel step.
pub const MAX_BRANCHES: usize = 50;
/// The longest a wait, a timeout or an `until` may reach ahead: a year. Past it nothing is
/// durable in practice, and unbounded values overflow the clock.
pub const MAX_DURATION_SECS: u64 = 366 * 24 * 3600;
/// A definition is stored in one DynamoDB item (400 KB), and every execution's first event holds
/// it together with the input; these leave room for both.
pub const MAX_DEFINITION_BYTES: usize = 200 * 1024;
pub const MAX_INPUT_BYTES: usize = 128 * 1024;

/// The problem with an input too large to store, if it is.
pub fn input_size_problem(input: &Value) -> Option<String> {
    let size = serde_json::to_vec(input).map_or(usize::MAX, |v| v.len());
    (size > MAX_INPUT_BYTES).then(|| {
        format!(
            "the input is {size} bytes; an execution's input may be at most {MAX_INPUT_BYTES} bytes (it is stored with the definition in one 400 KB DynamoDB item)"
        )
    })
}

/// The longest pause between two attempts of a step: a day.
pub const MAX_RETRY_INTERVAL_MS: u64 = 86_400_000;

/// Which graph a step belongs to: the top level, or a nested graph of a parallel or map step.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Scope {
    Top,
    Nested { owner: String, index: usize },
}

struct Checker<'a> {
    def: &'a Definition,
    problems: Vec<Problem>,
}

impl Checker<'_> {
    fn add(&mut self, pointer: impl Into<String>, message: impl Into<String>) {
        self.problems.push(Problem {
            pointer: pointer.into(),
            message: message.into(),
        });
    }

    fn step_ref(&mut self, pointer: String, target: &str) -> bool {
        if self.def.steps.contains_key(target) {
            return true;
        }
        self.add(pointer, format!("unknown step `{target}`"));
        false
    }
}

fn step_ptr(id: &str) -> String {
    format!("/steps/{}", escape(id))
}

/// Every edge inside a graph: `next`, condition targets and catch targets, with their pointers.
fn edges(id: &str, step: &Step) -> Vec<(String, String)> {
    let base = step_ptr(id);
    let mut out = Vec::new();
    if let Some(next) = &step.next {
        out.push((format!("{base}/next"), next.clone()));
    }
    if let StepKind::Condition { branches, default } = &step.kind {
        for (i, b) in branches.iter().enumerate() {
            out.push((format!("{base}/branches/{i}/next"), b.next.clone()));
        }
        out.push((format!("{base}/default"), default.clone()));
    }
    for (i, c) in step.catch.iter().enumerate() {
        out.push((format!("{base}/catch/{i}/next"), c.next.clone()));
    }
    out
}

/// Checks a definition; an empty list means it is valid.
pub fn validate(def: &Definition) -> Vec<Problem> {
    let mut c = Checker {
        def,
        problems: Vec::new(),
    };
    if let Some(roles) = &def.approvers {
        if roles.is_empty() {
            c.add(
                "/approvers",
                "name at least one role, or leave `approvers` out",
            );
        }
        for (n, role) in roles.iter().enumerate() {
            let ok = (2..=32).contains(&role.len())
                && role.bytes().all(|b| {
                    b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_'
                });
            if !ok {
                c.add(
                    format!("/approvers/{n}"),
                    "a role is 2-32 lower-case letters, digits, '-' or '_'",
                );
            }
        }
    }
    if def.name.trim().is_empty() {
        c.add("/name", "a workflow needs a name");
    }
    if let Some(id) = &def.id {
        if !valid_id(id) {
            c.add("/id", "an id is 1-64 letters, digits, `-` or `_`");
        }
    }
    if def.steps.is_empty() {
        c.add("/steps", "a workflow needs at least one step");
    }
    if def.steps.len() > MAX_STEPS {
        c.add("/steps", format!("at most {MAX_STEPS} steps are allowed"));
    }
    let size = serde_json::to_vec(def).map_or(usize::MAX, |v| v.len());
    if size > MAX_DEFINITION_BYTES {
        c.add(
            "",
            format!(
                "the definition is {size} bytes; a definition may be at most {MAX_DEFINITION_BYTES} bytes (it is stored in one 400 KB DynamoDB item)"
            ),
        );
    }
    for id in def.steps.keys() {
        if !valid_id(id) {
            c.add(
                step_ptr(id),
                "a step name is 1-64 letters, digits, `-` or `_`",
            );
        }
    }
    if let Some(budget) = &def.budget {
        if budget.max_usd.is_none() && budget.max_tokens.is_none() {
            c.add("/budget", "a budget sets `max_usd`, `max_tokens` or both");
        }
        if budget.max_usd.is_some_and(|v| !(v.is_finite() && v >= 0.0)) {
            c.add("/budget/max_usd", "`max_usd` is a non-negative number");
        }
    }
    let input_props = input_properties(&mut c);
    let scopes = check_graphs(&mut c);
    for (id, step) in &def.steps {
        check_step(&mut c, id, step, scopes.get(id), &input_props);
    }
    if let Some(outputs) = &def.outputs {
        check_template_value(
            &mut c,
            "/outputs".into(),
            outputs,
            false,
            None,
            &input_props,
        );
    }
    c.problems
}

/// Headers a step may not set: `Host` would send the request (and any secret in it) to another
/// site behind the same address than the URL names; the others belong to the connection.
pub fn is_reserved_header(name: &str) -> bool {
    const RESERVED: &[&str] = &[
        "host",
        "connection",
        "keep-alive",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "content-length",
    ];
    RESERVED.iter().any(|r| r.eq_ignore_ascii_case(name.trim()))
}

/// Every string under `value` that names a secret must name it well (see [`secret_ref`]).
fn secret_names(c: &mut Checker, at: &str, value: &Value) {
    match value {
        Value::String(s) if secret_ref::mentions(s) => {
            if let Err(e) = secret_ref::names(s) {
                c.add(at.to_owned(), e);
            }
        }
        Value::Array(items) => {
            for (i, v) in items.iter().enumerate() {
                secret_names(c, &format!("{at}/{i}"), v);
            }
        }
        Value::Object(map) => {
            for (k, v) in map {
                secret_names(c, &format!("{at}/{}", escape(k)), v);
            }
        }
        _ => {}
    }
}

/// Secrets go into headers and MCP arguments only: a URL or body is recorded as sent.
fn secrets_not_here(c: &mut Checker, at: &str, value: &Value) {
    let mentions = match value {
        Value::String(s) => secret_ref::mentions(s),
        other => secret_ref::mentions(&other.to_string()),
    };
    if mentions {
        c.add(
            at.to_owned(),
            "`${secret:...}` may be used in an http step's headers and an mcp step's arguments only",
        );
    }
}

fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id
            .chars()
            .all(|ch| ch.is_ascii_alphanumeric() || ch == '-' || ch == '_')
}

/// The input schema's declared properties, when it declares them (then templates may only read
/// those); also checks the schema itself compiles.
fn input_properties(c: &mut Checker<'_>) -> Option<BTreeSet<String>> {
    let schema = c.def.input_schema.as_ref()?;
    if let Err(e) = super::schema::compile(schema) {
        c.add("/input_schema", format!("not a valid JSON Schema: {e}"));
        return None;
    }
    schema
        .get("properties")
        .and_then(Value::as_object)
        .map(|p| p.keys().cloned().collect())
}

/// Assigns every step to its graph, reporting unknown targets, steps shared by two graphs,
/// unreachable steps and cycles.
fn check_graphs(c: &mut Checker<'_>) -> BTreeMap<String, Scope> {
    let def = c.def;
    let mut scopes: BTreeMap<String, Scope> = BTreeMap::new();
    let mut roots = vec![("/start".to_owned(), def.start.clone(), Scope::Top)];
    for (id, step) in &def.steps {
        let field = match step.kind {
            StepKind::Map { .. } => "iterator",
            _ => "branches",
        };
        for (i, g) in step.kind.graphs().into_iter().enumerate() {
            let pointer = match step.kind {
                StepKind::Map { .. } => format!("{}/{field}/start", step_ptr(id)),
                _ => format!("{}/{field}/{i}/start", step_ptr(id)),
            };
            let scope = Scope::Nested {
                owner: id.clone(),
                index: i,
            };
            roots.push((pointer, g.start.clone(), scope));
        }
    }
    for (pointer, start, scope) in roots {
        if !c.step_ref(pointer, &start) {
            continue;
        }
        let mut todo = vec![start];
        while let Some(id) = todo.pop() {
            match scopes.get(&id) {
                Some(s) if *s == scope => continue,
                Some(other) => {
                    c.add(
                        step_ptr(&id),
                        format!(
                            "step `{id}` is reached from two graphs ({} and {}); each branch and iterator needs its own steps",
                            describe(other),
                            describe(&scope)
                        ),
                    );
                    continue;
                }
                None => {}
            }
            scopes.insert(id.clone(), scope.clone());
            for (_, target) in edges(&id, &def.steps[&id]) {
                if def.steps.contains_key(&target) {
                    todo.push(target);
                }
            }
        }
    }
    for (id, step) in &def.steps {
        for (ptr, target) in edges(id, step) {
            c.step_ref(ptr, &target);
        }
    }
    for id in def.steps.keys() {
        if !scopes.contains_key(id) {
            c.add(
                step_ptr(id),
                format!("unreachable step `{id}`: no graph leads to it"),
            );
        }
    }
    check_cycles(c);
    scopes
}

fn describe(scope: &Scope) -> String {
    match scope {
        Scope::Top => "the top level".into(),
        Scope::Nested { owner, index } => format!("`{owner}` graph {index}"),
    }
}

/// Depth-first search for a back edge; a nested graph's steps are reached only through its
/// owner, which is not an edge, so a map iterating is not a cycle.
fn check_cycles(c: &mut Checker<'_>) {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        Open,
        Done,
    }
    let def = c.def;
    let mut marks: BTreeMap<&str, Mark> = BTreeMap::new();
    let mut found = Vec::new();
    for root in def.steps.keys() {
        if marks.contains_key(root.as_str()) {
            continue;
        }
        // (step, index of the next edge to follow)
        let mut path: Vec<(&str, usize)> = vec![(root, 0)];
        marks.insert(root, Mark::Open);
        while let Some((id, i)) = path.last().copied() {
            let out = edges(id, &def.steps[id]);
            match out.get(i) {
                None => {
                    marks.insert(id, Mark::Done);
                    path.pop();
                }
                Some((ptr, target)) => {
                    path.last_mut().unwrap().1 += 1;
                    let Some((target, _)) = def.steps.get_key_value(target) else {
                        continue;
                    };
                    match marks.get(target.as_str()) {
                        Some(Mark::Open) => {
                            let from = path.iter().position(|(s, _)| *s == target).unwrap_or(0);
                            let cycle: Vec<&str> = path[from..]
                                .iter()
                                .map(|(s, _)| *s)
                                .chain([target.as_str()])
                                .collect();
                            found.push((ptr.clone(), cycle.join(" → ")));
                        }
                        Some(Mark::Done) => {}
                        None => {
                            marks.insert(target, Mark::Open);
                            path.push((target, 0));
                        }
                    }
                }
            }
        }
    }
    for (ptr, cycle) in found {
        c.add(
            ptr,
            format!("cycle: {cycle}; use a map step to repeat work"),
        );
    }
}

fn check_step(
    c: &mut Checker<'_>,
    id: &str,
    step: &Step,
    scope: Option<&Scope>,
    input: &Option<BTreeSet<String>>,
) {
    let base = step_ptr(id);
    let in_map = scope.is_some_and(|s| in_map_scope(c.def, s));
    let tv = |c: &mut Checker<'_>, field: &str, v: &Value, exprs: bool| {
        check_template_value(c, format!("{base}/{field}"), v, exprs, Some(in_map), input)
    };
    match &step.kind {
        StepKind::Template { template } => tv(c, "template", template, false),
        StepKind::Transform { mapping } => tv(c, "mapping", mapping, true),
        StepKind::Condition { branches, .. } => {
            if branches.is_empty() {
                c.add(
                    format!("{base}/branches"),
                    "a condition needs at least one branch",
                );
            }
            for (i, b) in branches.iter().enumerate() {
                tv(
                    c,
                    &format!("branches/{i}/when"),
                    &Value::String(b.when.clone()),
                    true,
                );
            }
            if step.next.is_some() {
                c.add(
                    format!("{base}/next"),
                    "a condition goes to its branches; remove `next`",
                );
            }
        }
        StepKind::Parallel { branches, .. } => {
            if branches.is_empty() {
                c.add(
                    format!("{base}/branches"),
                    "a parallel step needs at least one branch",
                );
            }
            if branches.len() > MAX_BRANCHES {
                c.add(
                    format!("{base}/branches"),
                    format!("a parallel step has at most {MAX_BRANCHES} branches"),
                );
            }
        }
        StepKind::Map {
            items, concurrency, ..
        } => {
            tv(c, "items", &Value::String(items.clone()), true);
            if !(1..=MAX_CONCURRENCY).contains(concurrency) {
                c.add(
                    format!("{base}/concurrency"),
                    format!("concurrency must be between 1 and {MAX_CONCURRENCY}"),
                );
            }
        }
        StepKind::Wait { seconds, until } => match (seconds, until) {
            (Some(s), None) => {
                if *s > MAX_DURATION_SECS {
                    c.add(
                        format!("{base}/seconds"),
                        format!("a wait may last at most {MAX_DURATION_SECS} seconds (366 days)"),
                    );
                }
            }
            (None, Some(until)) => tv(c, "until", &Value::String(until.clone()), false),
            _ => c.add(
                base.clone(),
                "a wait step needs exactly one of `seconds` or `until`",
            ),
        },
        StepKind::Approval { prompt } => {
            if let Some(p) = prompt {
                tv(c, "prompt", &Value::String(p.clone()), false);
            }
        }
        StepKind::Http {
            method,
            url,
            headers,
            body,
        } => {
            if !METHODS.contains(&method.to_ascii_uppercase().as_str()) {
                c.add(
                    format!("{base}/method"),
                    format!(
                        "unknown HTTP method `{method}`; use one of {}",
                        METHODS.join(", ")
                    ),
                );
            }
            if url.trim().is_empty() {
                c.add(format!("{base}/url"), "a URL is required");
            }
            tv(c, "url", &Value::String(url.clone()), false);
            secrets_not_here(c, &format!("{base}/url"), &Value::String(url.clone()));
            for (k, v) in headers {
                let at = format!("headers/{}", escape(k));
                if is_reserved_header(k) {
                    c.add(
                        format!("{base}/{at}"),
                        format!("the `{k}` header is set by the engine, not by a step"),
                    );
                }
                if secret_ref::mentions(v) {
                    secret_names(c, &format!("{base}/{at}"), &Value::String(v.clone()));
                } else {
                    tv(c, &at, &Value::String(v.clone()), false);
                }
            }
            if let Some(body) = body {
                tv(c, "body", body, false);
                secrets_not_here(c, &format!("{base}/body"), body);
            }
        }
        StepKind::Subworkflow {
            workflow_id,
            input: sub_input,
            ..
        } => {
            if !valid_id(workflow_id) {
                c.add(format!("{base}/workflow_id"), "not a workflow id");
            }
            if let Some(v) = sub_input {
                tv(c, "input", v, false);
            }
        }
        StepKind::Succeed { output } => {
            if let Some(v) = output {
                tv(c, "output", v, false);
            }
        }
        StepKind::Fail { error, .. } => {
            if error.trim().is_empty() {
                c.add(format!("{base}/error"), "a fail step names its error kind");
            }
        }
        StepKind::Mcp {
            server,
            tool,
            arguments,
        } => {
            if !valid_id(server) {
                c.add(
                    format!("{base}/server"),
                    "not a registered server name (letters, digits, `-` and `_`)",
                );
            }
            if tool.trim().is_empty() {
                c.add(format!("{base}/tool"), "a tool name is required");
            }
            match arguments {
                None => {}
                Some(v @ Value::Object(_)) => {
                    tv(c, "arguments", v, false);
                    secret_names(c, &format!("{base}/arguments"), v);
                }
                Some(_) => c.add(
                    format!("{base}/arguments"),
                    "arguments must be an object (the tool's named parameters)",
                ),
            }
        }
        StepKind::Llm(llm) => {
            if !LLM_PROVIDERS.contains(&llm.provider.as_str()) {
                c.add(
                    format!("{base}/provider"),
                    format!(
                        "unknown provider `{}`; use one of {}",
                        llm.provider,
                        LLM_PROVIDERS.join(", ")
                    ),
                );
            }
            if llm.model.trim().is_empty() {
                c.add(format!("{base}/model"), "a model is required");
            }
            if let Some(t) = llm.temperature {
                if !(0.0..=2.0).contains(&t) {
                    c.add(
                        format!("{base}/temperature"),
                        "temperature must be between 0 and 2",
                    );
                }
            }
            if llm.max_tokens == Some(0) {
                c.add(
                    format!("{base}/max_tokens"),
                    "max_tokens must be at least 1",
                );
            }
            if let Some(system) = &llm.system {
                tv(c, "system", &Value::String(system.clone()), false);
            }
            tv(c, "prompt", &Value::String(llm.prompt.clone()), false);
            if let Some(schema) = &llm.output_schema {
                if let Err(e) = super::schema::compile(schema) {
                    c.add(
                        format!("{base}/output_schema"),
                        format!("not a valid JSON Schema: {e}"),
                    );
                }
            }
        }
    }
    if matches!(step.kind, StepKind::Succeed { .. } | StepKind::Fail { .. }) && step.next.is_some()
    {
        c.add(
            format!("{base}/next"),
            format!("a {} step ends its graph; remove `next`", step.kind.name()),
        );
    }
    if let Some(retry) = &step.retry {
        if !step.kind.is_task() {
            c.add(
                format!("{base}/retry"),
                format!(
                    "only http, llm and subworkflow steps retry; a {} step cannot",
                    step.kind.name()
                ),
            );
        }
        if !(1..=MAX_ATTEMPTS).contains(&retry.max_attempts) {
            c.add(
                format!("{base}/retry/max_attempts"),
                format!("max_attempts must be between 1 and {MAX_ATTEMPTS}"),
            );
        }
        if !(retry.backoff_rate >= 1.0 && retry.backoff_rate <= 10.0) {
            c.add(
                format!("{base}/retry/backoff_rate"),
                "backoff_rate must be between 1 and 10",
            );
        }
        for (field, value) in [
            ("initial_interval_ms", Some(retry.initial_interval_ms)),
            ("max_interval_ms", retry.max_interval_ms),
        ] {
            if value.is_some_and(|v| v > MAX_RETRY_INTERVAL_MS) {
                c.add(
                    format!("{base}/retry/{field}"),
                    format!("{field} may be at most {MAX_RETRY_INTERVAL_MS} (a day)"),
                );
            }
        }
        if retry
            .max_interval_ms
            .is_some_and(|m| m < retry.initial_interval_ms)
        {
            c.add(
                format!("{base}/retry/max_interval_ms"),
                "max_interval_ms must not be below initial_interval_ms",
            );
        }
    }
    if step.timeout_seconds == Some(0) {
        c.add(
            format!("{base}/timeout_seconds"),
            "a timeout must be at least 1 second",
        );
    }
    if step.timeout_seconds.is_some_and(|t| t > MAX_DURATION_SECS) {
        c.add(
            format!("{base}/timeout_seconds"),
            format!("a timeout may be at most {MAX_DURATION_SECS} seconds (366 days)"),
        );
    }
}

fn in_map_scope(def: &Definition, scope: &Scope) -> bool {
    // A step is inside a map when its graph, or any graph enclosing its owner, is a map iterator.
    let mut scope = scope.clone();
    for _ in 0..=def.steps.len() {
        let Scope::Nested { owner, .. } = &scope else {
            return false;
        };
        let Some(owner_step) = def.steps.get(owner) else {
            return false;
        };
        if matches!(owner_step.kind, StepKind::Map { .. }) {
            return true;
        }
        // The owner's own scope: find which graph leads to it.
        match owner_scope(def, owner) {
            Some(s) => scope = s,
            None => return false,
        }
    }
    false
}

fn owner_scope(def: &Definition, step: &str) -> Option<Scope> {
    for (id, s) in &def.steps {
        for (i, g) in s.kind.graphs().into_iter().enumerate() {
            if reaches(def, &g.start, step) {
                return Some(Scope::Nested {
                    owner: id.clone(),
                    index: i,
                });
            }
        }
    }
    reaches(def, &def.start, step).then_some(Scope::Top)
}

fn reaches(def: &Definition, from: &str, to: &str) -> bool {
    let mut seen = BTreeSet::new();
    let mut todo = vec![from.to_owned()];
    while let Some(id) = todo.pop() {
        if id == to {
            return true;
        }
        if !seen.insert(id.clone()) {
            continue;
        }
        if let Some(step) = def.steps.get(&id) {
            todo.extend(edges(&id, step).into_iter().map(|(_, t)| t));
        }
    }
    false
}

/// Compiles every template in `value` and checks what it reads: known roots, known steps, declared
/// inputs, and `item`/`index` only inside a map iterator (`in_map` None: outputs, outside any).
fn check_template_value(
    c: &mut Checker<'_>,
    pointer: String,
    value: &Value,
    as_expressions: bool,
    in_map: Option<bool>,
    input: &Option<BTreeSet<String>>,
) {
    for problem in expr::value_problems(value, as_expressions) {
        c.add(pointer.clone(), problem);
    }
    let vars = match expr::value_variables(value, as_expressions) {
        Ok(vars) => vars,
        Err(e) => {
            let what = if as_expressions {
                "expression"
            } else {
                "template"
            };
            c.add(pointer, format!("bad {what}: {e}"));
            return;
        }
    };
    for var in vars {
        let mut parts = var.split('.');
        let root = parts.next().unwrap_or_default();
        let child = parts.next();
        if expr::FUNCTIONS.contains(&root) {
            continue; // `range(...)`: a call, checked with the filters
        }
        if !ROOTS.contains(&root) {
            c.add(
                pointer.clone(),
                format!(
                    "`{var}` is not available to templates; use one of {}",
                    ROOTS.join(", ")
                ),
            );
        } else if root == "steps" {
            if let Some(step) = child {
                if !c.def.steps.contains_key(step) {
                    c.add(pointer.clone(), format!("unknown step `{step}` in `{var}`"));
                }
            }
        } else if root == "input" {
            if let (Some(name), Some(declared)) = (child, input) {
                if !declared.contains(name) {
                    c.add(
                        pointer.clone(),
                        format!("missing input `{name}`: input_schema does not declare it"),
                    );
                }
            }
        } else if (root == "item" || root == "index") && in_map != Some(true) {
            c.add(
                pointer.clone(),
                format!("`{root}` exists only inside a map iterator"),
            );
        }
    }
}

/// Checks an execution input against the workflow's input schema; every violation, each with
/// the JSON pointer (under `/input`) of the value at fault.
/// Reads and validates a definition document: the definition, or every problem at once. When
/// some steps cannot be read, the rest is still validated (templates, references, limits), so
/// one answer lists the unreadable steps and the other problems together.
pub fn check(document: &Value) -> Result<Definition, Vec<Problem>> {
    if let Ok(def) = Definition::from_value(document.clone()) {
        let problems = validate(&def);
        return if problems.is_empty() {
            Ok(def)
        } else {
            Err(problems)
        };
    }
    let parse = Definition::parse_problems(document);
    let mut problems: Vec<Problem> = parse
        .iter()
        .map(|e| Problem {
            pointer: e.pointer.clone(),
            message: e.message.clone(),
        })
        .collect();
    // Validate what can be read: the steps that parse, under the same top level.
    let mut readable = document.clone();
    let mut dropped = Vec::new();
    if let Some(Value::Object(steps)) = readable.get_mut("steps") {
        steps.retain(|id, step| {
            let ok = serde_json::from_value::<Step>(step.clone()).is_ok();
            if !ok {
                dropped.push(id.clone());
            }
            ok
        });
    }
    if let Ok(partial) = Definition::from_value(readable) {
        // What only follows from leaving the unreadable steps out is not a problem of its own.
        let mentions_dropped = |p: &Problem| {
            dropped
                .iter()
                .any(|id| p.message.starts_with(&format!("unknown step `{id}`")))
                || p.message.starts_with("unreachable step")
                || (p.pointer == "/steps" && partial.steps.is_empty())
        };
        problems.extend(
            validate(&partial)
                .into_iter()
                .filter(|p| !mentions_dropped(p)),
        );
    }
    Err(problems)
}

pub fn validate_input(def: &Definition, input: &Value) -> Vec<Problem> {
    let Some(schema) = &def.input_schema else {
        return Vec::new();
    };
    match super::schema::check(schema, input) {
        Ok(violations) => violations
            .into_iter()
            .map(|v| Problem {
                pointer: format!("/input{}", v.pointer),
                message: v.message,
            })
            .collect(),
        Err(e) => vec![Problem {
            pointer: "/input_schema".into(),
            message: format!("the workflow's input schema is not valid: {e}"),
        }],
    }
}
