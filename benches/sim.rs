//! Simulated runs per second (issue 11, item 9): a scenario of 5 services and 100 sessions,
//! under the simulator's search, side by side with the same scenario on tokio's
//! current-thread runtime with paused time (the usual way to test a shutdown without waiting
//! for it), in one run.
//!
//! The scenario: a lifecycle with a 5 s grace; 5 services that run until their stop signal;
//! 100 sessions, each a task that begins a named session, sleeps 1 to 100 ms of (simulated
//! or paused) time and ends it; a stop requested after 50 ms; then `wait()` and a check of the
//! report (100 admitted, exit 0). Each is a run: on the simulator one schedule of a search
//! (`Config::search` with `runs(RUNS_PER_SEARCH)`, its determinism re-run of the first
//! schedule included), on tokio one `block_on` on a runtime built once.
//!
//! Contenders:
//! - `sim_search`: the portfolio search (random and PCT), runs/s as criterion's throughput.
//! - `tokio_paused`: tokio current-thread, `start_paused(true)`, the lifecycle on
//!   `TokioClock` and tokio's spawner. One interleaving per run, chosen by tokio.
//!
//! `cargo bench --bench sim`; BENCHMARKS.md, "Simulation", records a run.

use std::time::Duration;

use async_lifecycle::sim::{self, Config, Env};
use async_lifecycle::tokio::BuilderExt;
use async_lifecycle::{Lifecycle, Report};
use criterion::{Criterion, Throughput};

const SERVICES: usize = 5;
const SESSIONS: u64 = 100;
const RUNS_PER_SEARCH: u64 = 100;

/// The report every run must end with.
fn check(report: &Report) {
    assert_eq!(report.exit_code(), 0, "{report}");
    assert_eq!(report.sessions().admitted(), SESSIONS, "{report}");
}

/// The session tasks' sleep: 1 to 100 ms, spread over the sessions.
fn nap(i: u64) -> Duration {
    Duration::from_millis(1 + (i * 37) % 100)
}

/// The scenario on the simulator.
async fn simulated(env: Env) -> sim::Outcome {
    let lc = env.lifecycle(|b| b.grace(Duration::from_secs(5)));
    for i in 0..SERVICES {
        lc.service(format!("service {i}"), |stop| stop)?;
    }
    for i in 0..SESSIONS {
        let session = lc.session(format!("session {i}"))?;
        let sleep = env.sleep(nap(i));
        env.spawn(format!("session {i}"), async move {
            sleep.await;
            drop(session);
        });
    }
    let stopper = env.clone();
    let lc2 = lc.clone();
    env.spawn("stopper", async move {
        stopper.sleep(Duration::from_millis(50)).await;
        lc2.stop("bench");
    });
    check(&lc.wait().await);
    Ok(())
}

/// The same scenario on a paused tokio runtime.
async fn on_tokio() {
    let lc = Lifecycle::builder()
        .grace(Duration::from_secs(5))
        .tokio()
        .build();
    for i in 0..SERVICES {
        lc.service(format!("service {i}"), |stop| stop)
            .expect("running");
    }
    for i in 0..SESSIONS {
        let session = lc.session(format!("session {i}")).expect("running");
        tokio::spawn(async move {
            tokio::time::sleep(nap(i)).await;
            drop(session);
        });
    }
    let stopper = lc.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(50)).await;
        stopper.stop("bench");
    });
    check(&lc.wait().await);
}

fn runs_per_second(c: &mut Criterion) {
    let mut group = c.benchmark_group("sim_runs");
    group.throughput(Throughput::Elements(RUNS_PER_SEARCH));
    group.bench_function("sim_search", |b| {
        b.iter(|| {
            let stats = Config::new()
                .runs(RUNS_PER_SEARCH)
                .search(simulated)
                .unwrap_or_else(|failure| panic!("{failure}"));
            assert_eq!(stats.runs(), RUNS_PER_SEARCH);
        });
    });
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .expect("a runtime");
    group.bench_function("tokio_paused", |b| {
        b.iter(|| {
            for _ in 0..RUNS_PER_SEARCH {
                runtime.block_on(on_tokio());
            }
        });
    });
    group.finish();
}

fn main() {
    let mut c = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3))
        .sample_size(20)
        .configure_from_args();
    runs_per_second(&mut c);
    c.final_summary();
}
