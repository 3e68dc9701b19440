//! 100 services started and stopped: ours against tokio-util's `TaskTracker` +
//! `CancellationToken` recipe (issue 12's target: at most 1.2× the recipe).
//!
//! Each iteration, inside one `block_on` on a tokio runtime: ours builds a lifecycle, adds 100
//! services that each await their stop signal (static names, so no name is allocated), yields
//! once so the spawned services run and park, stops, and awaits `wait()` for the report
//! (checked to be a clean end of 100 services). The recipe makes a `TaskTracker` and a
//! `CancellationToken`, spawns 100 tracked tasks that each await a clone of the token's
//! `cancelled()`, yields once, cancels, closes the tracker and awaits its `wait()`.
//!
//! Ours runs twice: with `.tokio()` (tokio's clock, and each service spawned as its own task
//! unboxed: one allocation per service, tokio's task cell) and with a plain spawner function,
//! `.spawner(|s| { tokio::spawn(s); })` (the system clock; each task boxed for the function,
//! then tokio's cell: two). On tokio's current-thread runtime and on a multi-thread runtime
//! with 2 workers (where `block_on` runs the iteration on the bench's thread and the tasks on
//! the workers), side by side in one group per runtime.

use std::time::Duration;

use async_lifecycle::tokio::BuilderExt;
use async_lifecycle::{Lifecycle, State};
use criterion::Criterion;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

const SERVICES: usize = 100;

/// Service names are unique within a lifecycle: 100 static names, made once.
fn names() -> &'static [&'static str] {
    static NAMES: std::sync::OnceLock<Vec<&'static str>> = std::sync::OnceLock::new();
    NAMES.get_or_init(|| {
        (0..SERVICES)
            .map(|i| &*Box::leak(format!("service {i}").into_boxed_str()))
            .collect()
    })
}

async fn ours(lc: Lifecycle) {
    for &name in names() {
        // The stop signal is itself a future that ends when the stop is requested.
        lc.service(name, |stop| stop).expect("running");
    }
    tokio::task::yield_now().await;
    lc.stop("bench");
    let report = lc.wait().await;
    assert_eq!(report.state(), State::Terminated);
    assert_eq!(report.services().len(), SERVICES);
}

async fn ours_tokio() {
    ours(Lifecycle::builder().tokio().build()).await;
}

async fn ours_spawner() {
    ours(
        Lifecycle::builder()
            .spawner(|service| {
                tokio::spawn(service);
            })
            .build(),
    )
    .await;
}

async fn recipe() {
    let tracker = TaskTracker::new();
    let cancel = CancellationToken::new();
    for _ in 0..SERVICES {
        let token = cancel.clone();
        tracker.spawn(async move { token.cancelled().await });
    }
    tokio::task::yield_now().await;
    cancel.cancel();
    tracker.close();
    tracker.wait().await;
}

fn services(c: &mut Criterion) {
    let runtimes = [
        (
            "tokio_current_thread",
            tokio::runtime::Builder::new_current_thread()
                .enable_time()
                .build()
                .expect("runtime"),
        ),
        (
            "tokio_multi_thread_2",
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_time()
                .build()
                .expect("runtime"),
        ),
    ];
    for (name, rt) in &runtimes {
        let mut group = c.benchmark_group(format!("services_100_{name}"));
        group.bench_function("ours_tokio", |b| b.iter(|| rt.block_on(ours_tokio())));
        group.bench_function("ours_spawner", |b| b.iter(|| rt.block_on(ours_spawner())));
        group.bench_function("tokio_util_tracker_cancel_token", |b| {
            b.iter(|| rt.block_on(recipe()))
        });
        group.finish();
    }
}

fn main() {
    let mut c = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_millis(1500))
        .sample_size(30)
        .configure_from_args();
    services(&mut c);
    c.final_summary();
}
