//! The pure engine driven by a simulated worker and clock: every control-flow feature, and the
//! canned histories in tests/fixtures/histories replayed (stored histories must keep their meaning).

use chrono::Duration;
use serde_json::{json, Value};
use shared::domain::execution::sim::{t0, Simulation as Run};
use shared::domain::execution::{
    evolve, plan, ExecutionEvent as E, ExecutionState, StepError, Summary,
};
use shared::domain::{validate, Definition};

fn echo(_: &str, request: &Value, _: u32) -> Result<Value, StepError> {
    Ok(json!({"status": 200, "body": request["body"].clone()}))
}

#[test]
fn linear_workflow_renders_templates_and_outputs() {
    let mut run = Run::start(
        json!({"name": "linear", "start": "greet", "input_schema": {"type": "object", "properties": {"topic": {"type": "string"}}},
            "steps": {
                "greet": {"type": "template", "template": "Hello {{ input.topic | upper }}", "next": "call"},
                "call": {"type": "http", "method": "post", "url": "http://example.test/echo", "body": {"text": "{{ steps.greet.output }}"}, "next": "shape"},
                "shape": {"type": "transform", "mapping": {"echoed": "steps.call.output.body.text", "len": "steps.greet.output | length"}}
            },
            "outputs": {"result": "{{ steps.shape.output }}"}}),
        json!({"topic": "rust"}),
    );
    assert_eq!(run.tasks()[0].4["method"], "POST");
    assert_eq!(run.work(echo), 1);
    assert_eq!(run.status(), "succeeded");
    assert_eq!(
        run.state.output,
        Some(json!({"result": {"echoed": "Hello RUST", "len": 10}}))
    );
}

/// Printing a whole context entry renders its keys in name order (the text of a rendered body
/// or prompt must not change between releases: signatures, idempotency hashes, prompt caches).
#[test]
fn whole_context_entries_render_with_keys_in_name_order() {
    let run = Run::start(
        json!({"name": "order", "start": "a", "steps": {
            "a": {"type": "template", "template": "x", "next": "b"},
            "b": {"type": "template", "template": "{{ steps.a | tojson }} {{ execution | tojson }}"}}}),
        json!({}),
    );
    let rendered = run.state.output.clone().unwrap();
    let text = rendered.as_str().unwrap();
    assert!(
        text.starts_with(r#"{"error":null,"output":"x","status":"succeeded"} {"id":"#),
        "{text}"
    );
    assert!(text.contains(r#","workflow_id":"#), "{text}");
}

#[test]
fn condition_routes_both_ways() {
    for (score, expected) in [(0.9, "high"), (0.1, "low")] {
        let run = Run::start(
            json!({"name": "c", "start": "route", "steps": {
                "route": {"type": "condition", "branches": [{"when": "input.score >= 0.5", "next": "high"}], "default": "low"},
                "high": {"type": "succeed", "output": "high"},
                "low": {"type": "succeed", "output": "low"}}}),
            json!({"score": score}),
        );
        assert_eq!(run.state.output, Some(json!(expected)));
    }
}

#[test]
fn parallel_branches_join_on_all_and_any() {
    let def = |join: &str| {
        json!({"name": "p", "start": "both", "steps": {
        "both": {"type": "parallel", "join": join, "branches": [{"start": "a"}, {"start": "b1"}], "next": "after"},
        "a": {"type": "http", "url": "http://x.test/a", "body": "a"},
        "b1": {"type": "template", "template": "b", "next": "b2"},
        "b2": {"type": "http", "url": "http://x.test/b", "body": "{{ steps.b1.output }}2"},
        "after": {"type": "transform", "mapping": "steps.both.output"}}})
    };
    let mut run = Run::start(def("all"), json!({}));
    assert_eq!(run.tasks().len(), 2);
    run.work(echo);
    assert_eq!(run.status(), "succeeded");
    assert_eq!(run.state.output.as_ref().unwrap()[1]["body"], "b2");
    let mut any = Run::start(def("any"), json!({}));
    any.work(|step, r, _| {
        if step == "a" {
            Ok(json!("first"))
        } else {
            echo(step, r, 1)
        }
    });
    assert_eq!(any.status(), "succeeded");
    assert_eq!(any.state.output.as_ref().unwrap()["branch"], 0);
}

#[test]
fn map_keeps_order_and_bounds_concurrency() {
    let items: Vec<u32> = (0..100).collect();
    let mut run = Run::start(
        json!({"name": "m", "start": "each", "steps": {
            "each": {"type": "map", "items": "input.items", "concurrency": 10, "iterator": {"start": "double"}},
            "double": {"type": "http", "url": "http://x.test/{{ index }}", "body": "{{ item * 2 }}"}}}),
        json!({"items": items}),
    );
    let mut rounds = 0;
    loop {
        let open = run.tasks().len();
        if open == 0 {
            break;
        }
        assert!(open <= 10, "{open} tasks in flight");
        run.work(echo);
        rounds += 1;
    }
    assert_eq!(rounds, 10);
    assert_eq!(run.status(), "succeeded");
    let out = run.state.output.unwrap();
    let bodies: Vec<i64> = out
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["body"].as_i64().unwrap())
        .collect();
    assert_eq!(bodies, (0..100).map(|i| i * 2).collect::<Vec<_>>());
}

fn flaky(catch: bool) -> Value {
    let mut step = json!({"type": "http", "url": "http://x.test", "retry": {"max_attempts": 3, "initial_interval_ms": 1000, "backoff_rate": 2.0, "errors": ["HttpError"]}, "next": "done"});
    if catch {
        step["catch"] = json!([{"errors": ["HttpError"], "next": "fallback"}]);
    }
    let mut def = json!({"name": "r", "start": "call", "steps": {
        "call": step,
        "done": {"type": "succeed", "output": "{{ steps.call.output.body }}"}}});
    if catch {
        def["steps"]["fallback"] =
            json!({"type": "succeed", "output": "fallback after {{ error.kind }}"});
    }
    def
}

fn fail_until(n: u32) -> impl Fn(&str, &Value, u32) -> Result<Value, StepError> {
    move |_, _, attempt| {
        if attempt <= n {
            Err(StepError::new("HttpError", "503", true))
        } else {
            Ok(json!({"body": "ok"}))
        }
    }
}

#[test]
fn retry_with_backoff_then_success() {
    let mut run = Run::start(flaky(false), json!({}));
    run.work(fail_until(2));
    assert_eq!(run.tasks().len(), 0, "waits for the back-off");
    run.advance(Duration::milliseconds(999));
    assert_eq!(run.tasks().len(), 0, "not before 1 s");
    run.advance(Duration::milliseconds(1));
    run.work(fail_until(2));
    run.advance(Duration::milliseconds(1999));
    assert_eq!(run.tasks().len(), 0, "second delay is 2 s");
    run.advance(Duration::milliseconds(1));
    run.work(fail_until(2));
    assert_eq!(run.status(), "succeeded");
    assert_eq!(run.state.output, Some(json!("ok")));
}

#[test]
fn retries_exhausted_then_catch_or_failure() {
    for catch in [true, false] {
        let mut run = Run::start(flaky(catch), json!({}));
        for _ in 0..3 {
            run.work(fail_until(9));
            run.advance(Duration::seconds(10));
        }
        if catch {
            assert_eq!(run.status(), "succeeded");
            assert_eq!(run.state.output, Some(json!("fallback after HttpError")));
        } else {
            assert_eq!(run.status(), "failed");
            assert_eq!(run.state.error.as_ref().unwrap().kind, "HttpError");
            assert_eq!(run.state.failed_step.as_deref(), Some("call"));
        }
    }
}

#[test]
fn non_retryable_errors_are_not_retried() {
    let mut run = Run::start(flaky(false), json!({}));
    run.work(|_, _, _| Err(StepError::new("HttpError", "404", false)));
    assert_eq!(run.status(), "failed");
}

#[test]
fn wait_resumes_on_its_timer() {
    let mut run = Run::start(
        json!({"name": "w", "start": "nap", "steps": {"nap": {"type": "wait", "seconds": 5, "next": "end"}, "end": {"type": "succeed", "output": "woke"}}}),
        json!({}),
    );
    run.advance(Duration::seconds(4));
    assert_eq!(run.status(), "running");
    run.advance(Duration::seconds(1));
    assert_eq!(run.state.output, Some(json!("woke")));
}

fn approval() -> Value {
    json!({"name": "a", "start": "ask", "steps": {"ask": {"type": "approval", "prompt": "ok {{ input.x }}?", "timeout_seconds": 60, "next": "end"}, "end": {"type": "succeed", "output": "{{ steps.ask.output.by }}"}}})
}

#[test]
fn approval_grant_reject_and_timeout() {
    let mut run = Run::start(approval(), json!({"x": 1}));
    assert!(
        matches!(&run.history[1], E::ApprovalRequested { prompt: Some(p), .. } if p == "ok 1?")
    );
    run.apply(vec![E::ApprovalGranted {
        key: "ask".into(),
        by: "ann".into(),
        comment: None,
    }]);
    run.turn();
    assert_eq!(run.state.output, Some(json!("ann")));

    let mut run = Run::start(approval(), json!({"x": 1}));
    run.apply(vec![E::ApprovalRejected {
        key: "ask".into(),
        by: "bob".into(),
        comment: Some("no".into()),
    }]);
    run.turn();
    assert_eq!(run.status(), "failed");
    assert_eq!(run.state.error.as_ref().unwrap().kind, "ApprovalRejected");

    let mut run = Run::start(approval(), json!({"x": 1}));
    run.advance(Duration::seconds(60));
    assert_eq!(run.state.error.as_ref().unwrap().kind, "ApprovalTimedOut");
}

#[test]
fn cancel_stops_scheduling_and_late_results_are_ignored() {
    let mut run = Run::start(flaky(false), json!({}));
    run.apply(vec![E::ExecutionCancelled {
        by: "ann".into(),
        reason: None,
    }]);
    let before = run.history.len();
    run.work(echo);
    assert_eq!(run.status(), "cancelled");
    assert!(plan(&run.state, run.now).is_empty());
    assert_eq!(
        run.history.len(),
        before + 1,
        "only the late worker's outcome was recorded (an http step has no started event)"
    );
}

#[test]
fn redrive_reruns_only_the_failed_step() {
    let mut run = Run::start(
        json!({"name": "d", "start": "one", "steps": {
            "one": {"type": "http", "url": "http://x.test/1", "next": "two"},
            "two": {"type": "http", "url": "http://x.test/2", "next": "end"},
            "end": {"type": "succeed", "output": "{{ steps.one.output }}{{ steps.two.output }}"}}}),
        json!({}),
    );
    run.work(|_, _, _| Ok(json!("a")));
    run.work(|_, _, _| Err(StepError::new("HttpError", "500", false)));
    assert_eq!(run.status(), "failed");
    run.apply(vec![E::ExecutionRedriven {
        by: "ann".into(),
        reset_unfinished: true,
    }]);
    run.turn();
    let tasks = run.tasks();
    assert_eq!(tasks.len(), 1);
    assert_eq!(tasks[0].1, "two");
    assert_eq!(tasks[0].2, 1, "a new epoch");
    run.work(|_, _, _| Ok(json!("b")));
    assert_eq!(run.state.output, Some(json!("ab")));
    let scheduled_one = run
        .types()
        .iter()
        .zip(&run.history)
        .filter(|(_, e)| matches!(e, E::StepScheduled { step, .. } if step == "one"))
        .count();
    assert_eq!(
        scheduled_one, 1,
        "the step that succeeded did not run again"
    );
}

#[test]
fn timeout_fails_the_attempt_and_a_late_result_is_ignored() {
    let mut run = Run::start(
        json!({"name": "t", "start": "slow", "steps": {"slow": {"type": "http", "url": "http://x.test", "timeout_seconds": 2}}}),
        json!({}),
    );
    run.advance(Duration::seconds(2));
    assert_eq!(run.status(), "failed");
    assert_eq!(run.state.error.as_ref().unwrap().kind, "Timeout");
}

#[test]
fn template_errors_fail_the_step_clearly() {
    let run = Run::start(
        json!({"name": "x", "start": "t", "steps": {"t": {"type": "template", "template": "{{ input.nope.deeper }}"}}}),
        json!({}),
    );
    assert_eq!(run.status(), "failed");
    assert_eq!(run.state.error.as_ref().unwrap().kind, "TemplateError");
}

#[test]
fn validation_reports_every_problem_with_pointers() {
    let def = Definition::from_value(json!({"name": "bad", "start": "a",
        "input_schema": {"type": "object", "properties": {"topic": {"type": "string"}}},
        "steps": {
            "a": {"type": "template", "template": "{{ input.missing }} {{ steps.ghost.output }}", "next": "b"},
            "b": {"type": "template", "template": "{{ oops", "next": "c"},
            "c": {"type": "http", "url": "http://x", "next": "a"},
            "d": {"type": "succeed"},
            "e": {"type": "wait"},
            "f": {"type": "llm", "provider": "acme", "model": "m", "prompt": "p", "next": "nowhere"}
        }})).unwrap();
    let problems = validate(&def);
    let has = |ptr: &str, needle: &str| {
        problems
            .iter()
            .any(|p| p.pointer == ptr && p.message.contains(needle))
    };
    assert!(
        has("/steps/a/template", "missing input `missing`"),
        "{problems:#?}"
    );
    assert!(
        has("/steps/a/template", "unknown step `ghost`"),
        "{problems:#?}"
    );
    assert!(has("/steps/b/template", "bad template"), "{problems:#?}");
    assert!(
        problems.iter().any(|p| p.message.starts_with("cycle:")),
        "{problems:#?}"
    );
    assert!(has("/steps/d", "unreachable"), "{problems:#?}");
    assert!(has("/steps/e", "exactly one"), "{problems:#?}");
    assert!(
        has("/steps/f/provider", "unknown provider"),
        "{problems:#?}"
    );
    assert!(
        has("/steps/f/next", "unknown step `nowhere`"),
        "{problems:#?}"
    );
}

#[test]
fn parse_errors_name_the_field() {
    let e = Definition::from_value(
        json!({"name": "x", "start": "a", "steps": {"a": {"type": "http", "url": 3}}}),
    )
    .unwrap_err();
    assert_eq!(e.pointer, "/steps/a");
    let e = Definition::from_value(
        json!({"name": "x", "start": "a", "steps": {"a": {"type": "teleport"}}}),
    )
    .unwrap_err();
    assert!(e.message.contains("teleport"), "{e}");
    let yaml = b"name: y\nstart: a\nsteps:\n  a:\n    type: succeed\n";
    assert!(Definition::parse(yaml, Some("application/yaml")).is_ok());
}

/// Canned histories: recorded runs replayed through today's `evolve`. When a change alters how a
/// stored history reads, this fails; regenerate only for a deliberate change (`UPDATE_FIXTURES=1`).
#[test]
fn canned_histories_replay() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/histories");
    let scenarios: Vec<(&str, Run)> = vec![
        ("linear", {
            let mut r = Run::start(
                json!({"name": "linear", "start": "greet", "steps": {
                "greet": {"type": "template", "template": "Hello {{ input.topic }}", "next": "call"},
                "call": {"type": "http", "url": "http://x.test", "body": "{{ steps.greet.output }}"}}}),
                json!({"topic": "t"}),
            );
            r.work(echo);
            r
        }),
        ("retry-then-catch", {
            let mut r = Run::start(flaky(true), json!({}));
            for _ in 0..3 {
                r.work(fail_until(9));
                r.advance(Duration::seconds(10));
            }
            r
        }),
        ("redrive", {
            let mut r = Run::start(flaky(false), json!({}));
            r.work(|_, _, _| Err(StepError::new("Fatal", "x", false)));
            r.apply(vec![E::ExecutionRedriven {
                by: "ann".into(),
                reset_unfinished: true,
            }]);
            r.turn();
            r.work(|_, _, _| Ok(json!({"body": "ok"})));
            r
        }),
    ];
    for (name, run) in scenarios {
        let path = dir.join(format!("{name}.json"));
        if std::env::var_os("UPDATE_FIXTURES").is_some() || !path.exists() {
            let history: Vec<Value> = run
                .history
                .iter()
                .map(|e| serde_json::to_value(e).unwrap())
                .collect();
            let doc = json!({"history": history, "summary": Summary::of(&run.state)});
            std::fs::write(&path, serde_json::to_string_pretty(&doc).unwrap() + "\n").unwrap();
        }
        let doc: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        let mut state = ExecutionState::default();
        for (i, e) in doc["history"].as_array().unwrap().iter().enumerate() {
            let e: E = serde_json::from_value(e.clone())
                .unwrap_or_else(|err| panic!("{name} event {i}: {err}"));
            // Times are not in the fixture; replay at the recorded clock's start is enough for status and outputs.
            evolve(&mut state, i as u64 + 1, t0(), &e);
        }
        let replayed = serde_json::to_value(Summary::of(&state)).unwrap();
        for field in [
            "status",
            "output",
            "error",
            "failed_step",
            "steps_completed",
            "version",
        ] {
            assert_eq!(replayed[field], doc["summary"][field], "{name}: {field}");
        }
        assert!(
            plan(&state, t0()).is_empty(),
            "{name}: a finished history plans nothing"
        );
    }
}

#[test]
fn ai_steps_render_their_requests_and_name_their_budgets() {
    let mut run = Run::start(
        json!({"name": "ai", "start": "lookup", "budget": {"max_usd": 0.25},
            "steps": {
                "lookup": {"type": "mcp", "server": "orders", "tool": "lookup_order",
                           "arguments": {"order_id": "{{ input.order }}", "verbose": true}, "next": "ask"},
                "ask": {"type": "llm", "provider": "openai", "model": "gpt-4o-mini",
                        "prompt": "Order {{ steps.lookup.output.structured.status }}"}}}),
        json!({"order": "A-17"}),
    );
    let request = run.tasks()[0].4.clone();
    assert_eq!(
        request,
        json!({"server": "orders", "tool": "lookup_order", "arguments": {"order_id": "A-17", "verbose": true}})
    );
    run.work(|_, _, _| Ok(json!({"text": "", "structured": {"status": "shipped"}})));
    // The mcp step's result feeds the llm step's prompt.
    let ask = run.tasks()[0].4.clone();
    assert_eq!(ask["prompt"], "Order shipped");
    assert_eq!(ask["budget"]["execution_id"], run.state.id.as_str());
    assert_eq!(ask["budget"]["workflow_id"], run.state.workflow_id.as_str());
    assert_eq!(ask["budget"]["max_usd"], 0.25);
    assert_eq!(ask["budget"]["max_tokens"], Value::Null);
    run.work(|_, _, _| Ok(json!({"text": "fine"})));
    assert_eq!(run.status(), "succeeded");
}

#[test]
fn ai_step_problems_are_reported_with_pointers() {
    let def: Definition = serde_json::from_value(json!({"name": "bad", "start": "a", "budget": {},
        "steps": {
            "a": {"type": "mcp", "server": "no spaces", "tool": " ", "arguments": ["x"], "next": "b"},
            "b": {"type": "llm", "provider": "acme", "model": "m", "prompt": "{{ nope }}"}}}))
    .unwrap();
    let pointers: Vec<String> = validate(&def).into_iter().map(|p| p.pointer).collect();
    for expected in [
        "/budget",
        "/steps/a/server",
        "/steps/a/tool",
        "/steps/a/arguments",
        "/steps/b/provider",
    ] {
        assert!(
            pointers.iter().any(|p| p == expected),
            "{expected} in {pointers:?}"
        );
    }
}

/// Answers one open task (started, then its outcome), without a turn.
fn answer(run: &mut Run, step_key: &str, result: Result<Value, StepError>) {
    let (key, step, epoch, attempt, _) = run
        .tasks()
        .into_iter()
        .find(|t| t.0 == step_key)
        .unwrap_or_else(|| panic!("no open task {step_key}"));
    run.apply(vec![
        E::StepStarted {
            key: key.clone(),
            step: step.clone(),
            epoch,
            attempt,
            items: None,
            child_execution_id: None,
        },
        E::outcome(key, step, epoch, attempt, result),
    ]);
}

#[test]
fn redrive_reuses_late_results_and_reruns_branches_that_never_finished() {
    let start = || {
        Run::start(
            json!({"name": "p", "start": "both", "steps": {
                "both": {"type": "parallel", "join": "all", "branches": [{"start": "a"}, {"start": "b"}], "next": "out"},
                "a": {"type": "http", "url": "http://x.test/a"},
                "b": {"type": "http", "url": "http://x.test/b"},
                "out": {"type": "transform", "mapping": "steps.both.output"}}}),
            json!({}),
        )
    };
    for b_answers_late in [true, false] {
        let mut run = start();
        let open: Vec<String> = run.tasks().into_iter().map(|t| t.0).collect();
        assert_eq!(open.len(), 2, "{open:?}");
        let (a, b) = (open[0].clone(), open[1].clone());
        answer(&mut run, &a, Err(StepError::new("HttpError", "500", false)));
        run.turn();
        assert_eq!(run.status(), "failed");
        if b_answers_late {
            // b's call was in flight: its result lands after the end, and is kept for a redrive.
            answer(&mut run, &b, Ok(json!("late b")));
            run.turn();
            assert_eq!(run.status(), "failed");
        }
        run.apply(vec![E::ExecutionRedriven {
            by: "ann".into(),
            reset_unfinished: true,
        }]);
        run.turn();
        let tasks = run.tasks();
        let expected = if b_answers_late { 1 } else { 2 };
        assert_eq!(tasks.len(), expected, "late={b_answers_late}: {tasks:?}");
        assert!(tasks.iter().all(|t| t.2 == 1), "in the new epoch");
        run.work(|step, _, _| Ok(json!(format!("new {step}"))));
        assert_eq!(run.status(), "succeeded");
        let b_out = if b_answers_late { "late b" } else { "new b" };
        assert_eq!(run.state.output, Some(json!(["new a", b_out])));
    }
}

#[test]
fn redrive_reruns_every_map_item_whose_outcome_came_after_the_end() {
    let mut run = Run::start(
        json!({"name": "m", "start": "each", "steps": {
            "each": {"type": "map", "items": "input.xs", "concurrency": 10, "iterator": {"start": "call"}},
            "call": {"type": "http", "url": "http://x.test/{{ item }}"}}}),
        json!({"xs": [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]}),
    );
    let keys: Vec<String> = run.tasks().into_iter().map(|t| t.0).collect();
    assert_eq!(keys.len(), 10);
    // Two items fail; the runner crashed with the other eight started, and their
    // WorkerInterrupted outcomes land only after the execution failed.
    for k in &keys[..2] {
        answer(&mut run, k, Err(StepError::new("HttpError", "500", false)));
    }
    run.turn();
    assert_eq!(run.status(), "failed");
    for k in &keys[2..] {
        answer(
            &mut run,
            k,
            Err(StepError::new("WorkerInterrupted", "crash", true)),
        );
    }
    run.turn();
    run.apply(vec![E::ExecutionRedriven {
        by: "ann".into(),
        reset_unfinished: true,
    }]);
    run.turn();
    assert_eq!(run.tasks().len(), 10, "every interrupted item runs again");
    // A late epoch-0 result after the redrive changes nothing.
    let late = E::outcome(
        keys[5].clone(),
        "call".into(),
        0,
        1,
        Err(StepError::new("HttpError", "late", false)),
    );
    run.apply(vec![late]);
    run.turn();
    assert_eq!(run.tasks().len(), 10);
    run.work(|_, _, _| Ok(json!(1)));
    assert_eq!(run.status(), "succeeded");
}

#[test]
fn the_losing_branches_of_join_any_are_abandoned() {
    let mut run = Run::start(
        json!({"name": "race", "start": "race", "steps": {
            "race": {"type": "parallel", "join": "any", "branches": [{"start": "fast"}, {"start": "slow"}, {"start": "ask"}], "next": "then"},
            "then": {"type": "http", "url": "http://x.test/then"},
            "fast": {"type": "http", "url": "http://x.test/fast"},
            "slow": {"type": "http", "url": "http://x.test/slow", "timeout_seconds": 60, "next": "after"},
            "after": {"type": "http", "url": "http://x.test/after"},
            "ask": {"type": "approval"}}}),
        json!({}),
    );
    let open: Vec<String> = run.tasks().into_iter().map(|t| t.0).collect();
    assert_eq!(open.len(), 2, "{open:?}");
    answer(&mut run, "fast", Ok(json!("won")));
    run.turn();
    assert_eq!(run.status(), "running", "the flow goes on after the race");
    let abandoned: Vec<String> = run
        .history
        .iter()
        .find_map(|e| match e {
            E::StepsAbandoned { keys, .. } => Some(keys.clone()),
            _ => None,
        })
        .expect("the losers are abandoned");
    assert_eq!(abandoned, ["ask", "slow"]);
    assert_eq!(
        run.state.pending_steps(),
        ["then"],
        "only what follows the race"
    );
    assert_eq!(
        run.state.steps["race"].output,
        Some(json!({"branch": 0, "output": "won"}))
    );
    // The loser's late result and its timeout change nothing; nothing after it is scheduled.
    let slow = &run.state.steps["slow"];
    let late = E::outcome(
        "slow".into(),
        "slow".into(),
        slow.epoch,
        slow.attempt,
        Ok(json!("late")),
    );
    run.apply(vec![late]);
    run.advance(Duration::seconds(120));
    run.turn();
    assert_eq!(
        run.state.steps["slow"].status,
        shared::domain::execution::StepStatus::Abandoned
    );
    assert!(!run.state.steps.contains_key("after"));
    assert_eq!(run.state.pending_steps(), ["then"]);
    answer(&mut run, "then", Ok(json!("done")));
    run.turn();
    assert_eq!(run.status(), "succeeded");
}

#[test]
fn a_combined_output_or_request_too_large_for_an_event_fails_its_step_not_the_execution() {
    // 40 items of 10 KB each: every output fits an event, their array (400 KB) does not.
    let items: Vec<u32> = (0..40).collect();
    let mut run = Run::start(
        json!({"name": "big", "start": "each", "steps": {
            "each": {"type": "map", "items": "input.items", "concurrency": 40, "iterator": {"start": "fetch"},
                     "catch": [{"errors": ["OutputTooLarge"], "next": "fallback"}]},
            "fetch": {"type": "http", "url": "http://x.test/{{ index }}"},
            "fallback": {"type": "succeed", "output": "{{ error.kind }}: {{ error.message }}"}}}),
        json!({"items": items}),
    );
    run.work(|_, _, _| Ok(json!("z".repeat(10 * 1024))));
    assert_eq!(run.status(), "succeeded", "{:?}", run.types());
    let out = run.state.output.clone().unwrap();
    let text = out.as_str().unwrap();
    assert!(
        text.starts_with("OutputTooLarge: the combined output takes") && text.contains("350 KB"),
        "{text}"
    );

    let run = Run::start(
        json!({"name": "req", "start": "call", "steps": {
            "call": {"type": "http", "url": "http://x.test", "body": {"a": "{{ input.s }}", "b": "{{ input.s }}", "c": "{{ input.s }}"}}}}),
        json!({"s": "q".repeat(120 * 1024)}),
    );
    assert!(run.tasks().is_empty(), "nothing is scheduled");
    assert_eq!(run.status(), "failed");
    let error = run.state.error.clone().unwrap();
    assert_eq!(error.kind, "RequestTooLarge");
    assert!(!error.retryable);

    // Sizes are DynamoDB's, not JSON's: small numbers in lists cost more than their text.
    use shared::domain::execution::plan::{dynamo_size, MAX_VALUE_BYTES};
    let flags = json!((0..1000).map(|_| vec![0; 170]).collect::<Vec<_>>());
    assert!(serde_json::to_vec(&flags).unwrap().len() < MAX_VALUE_BYTES);
    assert!(dynamo_size(&flags) > MAX_VALUE_BYTES);
    assert_eq!(
        dynamo_size(&json!({"ab": "xyz", "n": [12345, true]})),
        3 + (1 + 2 + 3) + (1 + 1 + 3 + (1 + 4) + (1 + 1))
    );
}

#[test]
fn hostile_templates_are_refused_or_fail_their_step_quickly() {
    // What validation can see: unknown filters, tests and functions, binding statements.
    let def = Definition::from_value(json!({"name": "t", "start": "a", "steps": {
        "a": {"type": "template", "template": "{{ input.x | shout }}", "next": "b"},
        "b": {"type": "template", "template": "{% set s = input.x ~ input.x %}{{ s }}", "next": "c"},
        "c": {"type": "condition", "branches": [{"when": "input.x is weird", "next": "d"}], "default": "d"},
        "d": {"type": "parallel", "branches": (0..51).map(|_| json!({"start": "e"})).collect::<Vec<_>>()},
        "e": {"type": "succeed"}}}))
    .unwrap();
    let problems = validate(&def);
    let has = |ptr: &str, needle: &str| {
        problems
            .iter()
            .any(|p| p.pointer == ptr && p.message.contains(needle))
    };
    assert!(
        has("/steps/a/template", "unknown filter `shout`"),
        "{problems:#?}"
    );
    assert!(has("/steps/b/template", "{% set %}"), "{problems:#?}");
    assert!(
        has("/steps/c/branches/0/when", "unknown test `weird`"),
        "{problems:#?}"
    );
    assert!(
        has("/steps/d/branches", "at most 50 branches"),
        "{problems:#?}"
    );

    // What only the input decides: a nested loop over input-sized ranges runs out of fuel at
    // once and fails its step, catchably, instead of holding the orchestrator.
    let started = std::time::Instant::now();
    let run = Run::start(
        json!({"name": "loop", "start": "t", "steps": {
            "t": {"type": "template", "template": "{% for i in range(input.n) %}{% for j in range(input.n) %}{{ i * j }}{% endfor %}{% endfor %}",
                  "catch": [{"errors": ["TemplateError"], "next": "saved"}]},
            "saved": {"type": "succeed", "output": "{{ error.message }}"}}}),
        json!({"n": 100000}),
    );
    assert_eq!(run.status(), "succeeded");
    let message = run.state.output.clone().unwrap();
    assert!(
        message.as_str().unwrap().contains("out of fuel"),
        "{message}"
    );
    assert!(started.elapsed() < std::time::Duration::from_secs(5));
}

#[test]
fn every_problem_that_stops_a_definition_being_read_is_reported_at_once() {
    let problems = Definition::parse_problems(&json!({"name": "x", "start": "a", "steps": {
        "a": {"type": "teleport"},
        "b": {"type": "http", "url": 3},
        "c": {"type": "succeed"}},
        "colour": "blue"}));
    let pointers: Vec<&str> = problems.iter().map(|p| p.pointer.as_str()).collect();
    assert_eq!(problems.len(), 3, "{problems:?}");
    assert!(pointers.contains(&"/steps/a"), "{problems:?}");
    assert!(
        pointers.iter().any(|p| p.starts_with("/steps/b")),
        "{problems:?}"
    );
    assert!(problems[0].message.contains("teleport") || problems[1].message.contains("teleport"));
    assert!(
        problems.iter().any(|p| p.message.contains("colour")),
        "{problems:?}"
    );
}

/// Work a template does inside operators and filters is paid for in fuel, and no operator
/// builds a string over 1 MiB or a sequence over 100,000 items (vendor/minijinja/PATCHES.md).
#[test]
fn templates_cannot_allocate_or_iterate_past_their_fuel() {
    use shared::domain::expr::{eval, render};
    let context = json!({"input": {"n": 100000}});
    let refused = [
        "{{ 'x' * 100000000 }}",
        "{{ ('x' * 1000000) ~ ('x' * 1000000) }}",
        "{{ ('x' * 1000000) + ('x' * 1000000) }}",
        "{{ ([0] * 1000000000000000000) | sum }}",
        "{{ ([0] * 4611686018427387904) | length }}",
        "{{ (range(100000) | list) + (range(100000) | list) }}",
        "{% for i in range(input.n) %}{{ ([1] * 100000) | sum }}{% endfor %}",
        "{% for i in range(input.n) %}{{ range(100000) | list | length }}{% endfor %}",
        "{{ [('x' * 1000000), ('x' * 1000000), ('x' * 1000000), ('x' * 1000000), \
           ('x' * 1000000), ('x' * 1000000), ('x' * 1000000), ('x' * 1000000), \
           ('x' * 1000000), ('x' * 1000000), ('x' * 1000000), ('x' * 1000000), \
           ('x' * 1000000), ('x' * 1000000), ('x' * 1000000), ('x' * 1000000)] | length }}",
    ];
    for template in refused {
        assert!(render(template, &context).is_err(), "rendered: {template}");
    }
    // Nested: the outer length is small, the items are not.
    for template in [
        "{{ [range(100000)] * 100000 }}",
        "{{ ([range(100000)] * 100000) | string | length }}",
        "{{ ([range(100000)] * 100000) | tojson | length }}",
        "{{ (([range(100000)] * 100000) == ([range(100000)] * 100000)) }}",
        "{{ 3 in ([range(100000)] * 100000) | map('sum') }}",
        "{{ ([range(100000)] * 100000) | unique | length }}",
    ] {
        assert!(render(template, &context).is_err(), "rendered: {template}");
    }
    assert!(eval("[range(100000)] * 100000", &context).is_err());
    let single = "([0] * 1000000000000000000)";
    assert!(eval(single, &context).is_err());
    assert!(eval(
        "'ab' ~ ([0] * 100000) ~ ([0] * 100000) ~ ([0] * 100000) ~ ([0] * 100000)",
        &context
    )
    .is_err());

    // What people do still works.
    assert_eq!(
        render("{{ range(1000) | sum }} {{ ('ab' * 3) ~ 'c' }}", &context).unwrap(),
        "499500 abababc"
    );
    assert_eq!(eval("([1, 2] * 2) | sum", &context).unwrap(), json!(6));
}

/// What a worker decides after answering the run's first open task with `answer(step)`, without
/// changing the run: the outcome, and `decide` on the state after it.
fn decide_after_first_task(
    run: &Run,
    answer: impl Fn(&str) -> Value,
) -> (E, ExecutionState, Vec<E>) {
    let (key, step, epoch, attempt, _) = run.tasks().remove(0);
    let output = answer(&step);
    let outcome = E::outcome(key, step, epoch, attempt, Ok(output));
    let mut next = run.state.clone();
    evolve(&mut next, run.state.version + 1, run.now, &outcome);
    let (after, decided) = shared::domain::execution::decide(&next, run.now);
    (outcome, after, decided)
}

/// Issue 14: an outcome carrying its worker's decisions replays exactly like the outcome
/// followed by the orchestrator's turn, survives the stored form, and only plain successors
/// (tasks and inline steps, the execution going on) qualify.
#[test]
fn an_outcome_carrying_its_decisions_replays_like_the_orchestrators_turn() {
    use shared::domain::execution::plan::worker_may_decide;
    let def = json!({"name": "chain", "start": "a", "steps": {
        "a": {"type": "http", "method": "GET", "url": "https://example.com/a", "next": "t"},
        "t": {"type": "template", "template": "got {{ steps.a.output.n }}", "next": "b"},
        "b": {"type": "http", "method": "POST", "url": "https://example.com/b", "body": {"t": "{{ steps.t.output }}"}, "next": "nap"},
        "nap": {"type": "wait", "seconds": 5, "next": "c"},
        "c": {"type": "http", "method": "GET", "url": "https://example.com/c"}}});
    let mut classic = Run::start(def.clone(), json!({}));
    let mut compound = Run::start(def, json!({}));
    let answer = |step: &str| json!({"n": step.len(), "step": step});

    // `a` succeeds: the template and `b`'s task follow, worker-decidable.
    let (outcome, after, decided) = decide_after_first_task(&compound, answer);
    assert!(worker_may_decide(&after, &decided), "{decided:?}");
    let event = outcome.with_decisions(decided).unwrap();
    // The stored form keeps the decisions and the task count the worker's filter matches on.
    let (event_type, payload) = event.clone().into_parts();
    assert_eq!(event_type, "StepSucceeded");
    assert_eq!(payload["tasks"], 1);
    let stored = E::from_parts(&event_type, &payload).unwrap();
    assert_eq!(stored, event);
    compound.apply(vec![stored]);
    classic.work(|step, _, _| Ok(answer(step)));
    let mut expected = classic.state.clone();
    // One event where the classic history has three: only the version differs.
    expected.version = compound.state.version;
    assert_eq!(
        serde_json::to_value(&compound.state).unwrap(),
        serde_json::to_value(&expected).unwrap()
    );
    assert_eq!(
        classic.types(),
        [
            "ExecutionStarted",
            "StepScheduled",
            "StepSucceeded",
            "StepSucceeded",
            "StepScheduled"
        ]
    );

    // `b` succeeds: a wait follows (a timer), which stays the orchestrator's.
    let (_, after, decided) = decide_after_first_task(&compound, answer);
    assert!(!worker_may_decide(&after, &decided), "{decided:?}");

    // The last step's outcome ends the execution: the orchestrator's too.
    let last = Run::start(
        json!({"name": "one", "start": "c", "steps": {
            "c": {"type": "http", "method": "GET", "url": "https://example.com/c"}}}),
        json!({}),
    );
    let (_, after, decided) = decide_after_first_task(&last, answer);
    assert!(!worker_may_decide(&after, &decided), "{decided:?}");
    // A failure never carries decisions.
    assert!(E::outcome(
        "k".into(),
        "s".into(),
        0,
        1,
        Err(StepError::new("X", "x", true))
    )
    .with_decisions(vec![])
    .is_none());
}

/// A wide fan-out after an outcome stays the orchestrator's: one record never carries more than
/// `MAX_CARRIED_TASKS` tasks.
#[test]
fn an_outcome_carries_a_few_tasks_at_most() {
    use shared::domain::execution::plan::{worker_may_decide, MAX_CARRIED_TASKS};
    let fan_out = |n: usize| {
        let branches: Vec<Value> = (0..n).map(|i| json!({"start": format!("b{i}")})).collect();
        let mut steps = serde_json::Map::new();
        steps.insert(
            "a".into(),
            json!({"type": "http", "method": "GET", "url": "https://example.com/a", "next": "p"}),
        );
        steps.insert(
            "p".into(),
            json!({"type": "parallel", "branches": branches}),
        );
        for i in 0..n {
            steps.insert(
                format!("b{i}"),
                json!({"type": "http", "method": "GET", "url": format!("https://example.com/{i}")}),
            );
        }
        let run = Run::start(
            json!({"name": "fan", "start": "a", "steps": steps}),
            json!({}),
        );
        let (_, after, decided) = decide_after_first_task(&run, |_| json!({}));
        worker_may_decide(&after, &decided)
    };
    assert!(fan_out(2));
    assert!(fan_out(MAX_CARRIED_TASKS));
    assert!(!fan_out(MAX_CARRIED_TASKS + 1));
}

/// What a worker decides from is what the store gives back: DynamoDB numbers have no
/// integer/float distinction.
#[test]
fn an_outcome_reads_back_as_dynamodb_keeps_it() {
    let payload = json!({"output": {"whole": 1.0, "half": 0.5, "n": 3, "text": "1.0"}});
    let stored = shared::events::as_stored(payload.as_object().unwrap()).unwrap();
    assert_eq!(
        Value::Object(stored),
        json!({"output": {"whole": 1, "half": 0.5, "n": 3, "text": "1.0"}})
    );
}
