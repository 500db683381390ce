//! Engine throughput on one core: many executions of a 10-step linear workflow of `http` steps,
//! driven as the functions drive them (the orchestrator's turn: catch up from its cached state,
//! `decide`, append at the expected version; the worker: the claim of the attempt, then
//! the outcome), against the in-memory event store, with an inline worker that answers each
//! task at once. No read models and no I/O: what is left is the engine's own work per step
//! (event encoding, replay, planning, templating). By default the worker decides plain
//! successors inside its outcome, as the product does (issue 14); `--orchestrator-decides`
//! measures the turn-per-step flow before it.
//! Run with `scripts/bench steps` (`-- --executions N`, default 2,000).

use std::sync::Arc;
use std::time::Instant;

use chrono::Utc;
use serde_json::{json, Value};
use shared::domain::definition::Definition;
use shared::domain::execution::plan::worker_may_decide;
use shared::domain::execution::{decide, evolve, ExecutionEvent as E, ExecutionState};
use shared::events::{ExpectedVersion, InMemoryEventStore};
use shared::executions::{stream_id, Cause, ExecutionRepo};

const STEPS: usize = 10;

fn definition() -> Definition {
    let mut steps = serde_json::Map::new();
    for i in 0..STEPS {
        let mut s = json!({"type": "http", "method": "POST", "url": "https://api.example.com/items/{{ input.n }}",
                           "body": {"step": i, "previous": "{{ steps | length }}"}});
        if i + 1 < STEPS {
            s["next"] = json!(format!("s{}", i + 1));
        }
        steps.insert(format!("s{i}"), s);
    }
    Definition::from_value(json!({"name": "bench", "start": "s0", "steps": steps})).unwrap()
}

fn main() {
    let executions: usize = std::env::args()
        .skip_while(|a| a != "--executions")
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or(2_000);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let worker_decides = !std::env::args().any(|a| a == "--orchestrator-decides");
    let (steps, elapsed) = rt.block_on(run(executions, worker_decides));
    println!(
        "{executions} executions x {STEPS} http steps, {} deciding: {steps} steps in {:.2} s on one core = {:.0} steps/s ({:.1} µs per step)",
        if worker_decides { "workers" } else { "the orchestrator" },
        elapsed,
        steps as f64 / elapsed,
        elapsed * 1e6 / steps as f64
    );
}

async fn run(executions: usize, worker_decides: bool) -> (usize, f64) {
    let repo = ExecutionRepo::new(Arc::new(InMemoryEventStore::new(Default::default())));
    let def = definition();
    let started = Instant::now();
    let mut steps = 0;
    // The orchestrator's cache: each execution's state, as a warm function keeps it.
    let mut live: Vec<(shared::events::StreamId, ExecutionState)> = Vec::new();
    for i in 0..executions {
        let id = format!("e{i}");
        let stream = stream_id("bench", &id).unwrap();
        let cause = cause(&id);
        repo.append(
            &stream,
            ExpectedVersion::NoStream,
            vec![E::ExecutionStarted {
                execution_id: id.clone(),
                workflow_id: "wf".into(),
                workflow_version: 1,
                definition: Box::new(def.clone()),
                input: json!({"n": i}),
                parent: None,
            }],
            &cause,
            None,
        )
        .await
        .unwrap();
        live.push((stream, ExecutionState::default()));
    }
    // Round-robin: every execution takes one step per round, as many executions interleave.
    // Each entry: the stream, its cached state, and the tasks a worker decided on (then no
    // orchestrator turn comes before them).
    type Task = (String, String, u32, u32, Value);
    let mut live: Vec<(shared::events::StreamId, ExecutionState, Vec<Task>)> = live
        .into_iter()
        .map(|(s, st)| (s, st, Vec::new()))
        .collect();
    let tasks_of = |events: &[E]| -> Vec<Task> {
        events
            .iter()
            .flat_map(E::tasks)
            .map(|t| (t.key, t.step, t.epoch, t.attempt, t.request))
            .collect()
    };
    while !live.is_empty() {
        let mut still = Vec::with_capacity(live.len());
        for (stream, cached, carried) in live {
            let id = stream
                .as_str()
                .rsplit('#')
                .next()
                .unwrap_or_default()
                .to_owned();
            let cause = cause(&id);
            let mut state = cached;
            let tasks = if carried.is_empty() {
                // The orchestrator's turn.
                state = repo.catch_up(&stream, state).await.unwrap().state;
                let (next, events) = decide(&state, Utc::now());
                let tasks = tasks_of(&events);
                if !events.is_empty() {
                    let r = repo
                        .append(
                            &stream,
                            ExpectedVersion::Exact(state.version),
                            events,
                            &cause,
                            None,
                        )
                        .await
                        .unwrap();
                    state = next;
                    state.version = r.last_version;
                }
                tasks
            } else {
                carried
            };
            if state.status.is_terminal() {
                continue;
            }
            // The worker, inline: claim, perform (an echo), record; with `--worker-decides`,
            // the outcome carries what it leads to when that is plain successors.
            let mut next_tasks = Vec::new();
            for (key, step, epoch, attempt, request) in tasks {
                assert!(repo
                    .store()
                    .claim(&stream, &format!("started:{key}@{epoch}.{attempt}"))
                    .await
                    .unwrap());
                let output = json!({"status": 200, "body": request["body"].clone()});
                let outcome = E::outcome(key, step, epoch, attempt, Ok(output));
                steps += 1;
                if worker_decides {
                    let now = Utc::now();
                    let mut next = state.clone();
                    evolve(&mut next, state.version + 1, now, &outcome);
                    let (after, decided) = decide(&next, now);
                    if worker_may_decide(&after, &decided) {
                        let carried = tasks_of(&decided);
                        let event = outcome.with_decisions(decided).unwrap();
                        let r = repo
                            .append(
                                &stream,
                                ExpectedVersion::Exact(state.version),
                                vec![event],
                                &cause,
                                None,
                            )
                            .await
                            .unwrap();
                        state = after;
                        state.version = r.last_version;
                        next_tasks.extend(carried);
                        continue;
                    }
                }
                repo.append_any(&stream, vec![outcome], &cause, None)
                    .await
                    .unwrap();
            }
            still.push((stream, state, next_tasks));
        }
        live = still;
    }
    (steps, started.elapsed().as_secs_f64())
}

fn cause(id: &str) -> Cause<'_> {
    Cause {
        tenant: "bench",
        actor: "bench",
        correlation_id: id,
        causation_id: None,
        at: Utc::now(),
    }
}
