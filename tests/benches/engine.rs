//! The pure engine's costs: `decide` (the orchestrator's planning for one incoming event) and
//! replaying an execution against history length (1k and 10k events), from events alone and
//! from a snapshot plus a tail. No I/O: the event store is the in-memory adapter.
//! Run with `scripts/bench engine`.

use std::sync::Arc;

use chrono::Utc;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use serde_json::{json, Value};
use shared::domain::execution::sim::Simulation;
use shared::domain::execution::{decide, evolve, ExecutionEvent, ExecutionState, StepError};
use shared::events::{ExpectedVersion, InMemoryEventStore};
use shared::executions::{stream_id, Cause, ExecutionRepo};
use tokio::runtime::Runtime;

fn echo(_: &str, request: &Value, _: u32) -> Result<Value, StepError> {
    Ok(json!({"status": 200, "body": request["body"].clone()}))
}

/// A map over `items` items whose iterator makes four HTTP calls: 12 events per item.
fn map_workflow(items: usize, concurrency: u32) -> Simulation {
    let step = |n: u32, next: Option<&str>| {
        let mut s = json!({"type": "http", "method": "POST", "url": "http://x.test/{{ index }}", "body": {"n": n, "item": "{{ item }}"}});
        if let Some(next) = next {
            s["next"] = json!(next);
        }
        s
    };
    Simulation::start(
        json!({"name": "bench", "start": "each", "steps": {
            "each": {"type": "map", "items": "input.items", "concurrency": concurrency, "iterator": {"start": "a"}},
            "a": step(1, Some("b")), "b": step(2, Some("c")), "c": step(3, Some("d")), "d": step(4, None)}}),
        json!({"items": (0..items).collect::<Vec<_>>()}),
    )
}

fn finished(items: usize) -> Simulation {
    let mut sim = map_workflow(items, 100);
    while sim.work(echo) > 0 {}
    assert_eq!(sim.status(), "succeeded");
    sim
}

/// A linear workflow of ten HTTP steps, stopped after `done` of them.
fn linear(done: usize) -> Simulation {
    let mut steps = serde_json::Map::new();
    for i in 0..10 {
        let mut s = json!({"type": "http", "url": "http://x.test/{{ input.n }}", "body": "{{ steps | length }}"});
        if i < 9 {
            s["next"] = json!(format!("s{}", i + 1));
        }
        steps.insert(format!("s{i}"), s);
    }
    let mut sim = Simulation::start(
        json!({"name": "linear", "start": "s0", "steps": steps}),
        json!({"n": 1}),
    );
    for _ in 0..done {
        sim.work(echo);
    }
    sim
}

/// The state right after a task's outcome arrived, before the orchestrator's turn.
fn awaiting_turn(mut sim: Simulation) -> ExecutionState {
    let (key, step, epoch, attempt, _) = sim.tasks().remove(0);
    sim.apply(vec![ExecutionEvent::StepSucceeded {
        key,
        step,
        epoch,
        attempt,
        output: json!({"status": 200}),
        usage: None,
        then: Vec::new(),
        tasks: 0,
    }]);
    sim.state
}

fn plan(c: &mut Criterion) {
    let mut g = c.benchmark_group("decide_per_event");
    g.throughput(Throughput::Elements(1));
    let now = Utc::now();
    let cases = [
        ("linear_10_steps_at_step_5", awaiting_turn(linear(5))),
        (
            "map_100_items_c10_first_round",
            awaiting_turn(map_workflow(100, 10)),
        ),
        (
            "map_1000_items_c10_first_round",
            awaiting_turn(map_workflow(1000, 10)),
        ),
    ];
    for (name, state) in cases {
        g.bench_function(name, |b| b.iter(|| decide(&state, now)));
    }
    g.finish();
}

fn replay(c: &mut Criterion) {
    let rt = Runtime::new().unwrap();
    let mut g = c.benchmark_group("replay");
    g.sample_size(10);
    for items in [84usize, 834] {
        let sim = finished(items);
        let events = sim.history.len() as u64;
        g.throughput(Throughput::Elements(events));
        let label = format!("{}k_events", (events as f64 / 1000.0).round() as u64);
        g.bench_with_input(
            BenchmarkId::new("evolve_from_scratch", &label),
            &sim.history,
            |b, history| {
                b.iter(|| {
                    let mut state = ExecutionState::default();
                    for (i, e) in history.iter().enumerate() {
                        evolve(&mut state, i as u64 + 1, sim.now, e);
                    }
                    state
                })
            },
        );
        let (repo, with_snapshot) = rt.block_on(async {
            let repo = ExecutionRepo::new(Arc::new(InMemoryEventStore::new(Default::default())));
            let plain = stream_id("bench", &format!("plain-{items}")).unwrap();
            let snap = stream_id("bench", &format!("snap-{items}")).unwrap();
            let cause = Cause {
                tenant: "bench",
                actor: "bench",
                correlation_id: "bench",
                causation_id: None,
                at: Utc::now(),
            };
            for stream in [&plain, &snap] {
                repo.append(
                    stream,
                    ExpectedVersion::NoStream,
                    sim.history.clone(),
                    &cause,
                    None,
                )
                .await
                .unwrap();
            }
            // A snapshot 100 events before the end, as the orchestrator keeps them.
            let mut state = ExecutionState::default();
            let upto = sim.history.len() - 100;
            for (i, e) in sim.history[..upto].iter().enumerate() {
                evolve(&mut state, i as u64 + 1, sim.now, e);
            }
            repo.snapshot(&snap, &state).await.unwrap();
            (repo, (plain, snap))
        });
        let (plain, snap) = with_snapshot;
        g.bench_function(BenchmarkId::new("load_without_snapshot", &label), |b| {
            b.iter(|| rt.block_on(repo.load(&plain)).unwrap())
        });
        g.bench_function(
            BenchmarkId::new("load_from_snapshot_plus_100", &label),
            |b| b.iter(|| rt.block_on(repo.load(&snap)).unwrap()),
        );
    }
    g.finish();
}

criterion_group!(benches, plan, replay);
criterion_main!(benches);
