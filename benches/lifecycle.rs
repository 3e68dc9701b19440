//! A whole lifecycle: start 100 services and 10,000 sessions, stop, and get the report — ours
//! against tokio-graceful-shutdown doing the same with subsystems.
//!
//! Each iteration builds everything from nothing on a tokio runtime: 100 services that run
//! until their stop signal fires, and 10,000 sessions, each a spawned task that ends when it
//! learns that draining began. After one yield (so the tasks run and park), the stop is
//! requested and the iteration ends when the final result is in hand: our `Report` (checked
//! to show a clean end with 10,000 completed sessions), or tokio-graceful-shutdown's
//! `handle_shutdown_requests` result (checked to be `Ok`). Both have a 30 s grace period /
//! shutdown timeout that is never reached.
//!
//! The sessions are named in both: ours with `Lifecycle::session`, theirs by the subsystem
//! name every subsystem has.

use std::convert::Infallible;
use std::time::Duration;

use async_lifecycle::{Lifecycle, State};
use criterion::{Criterion, SamplingMode};
use tokio_graceful_shutdown::{SubsystemBuilder, SubsystemHandle, Toplevel};

const SERVICES: usize = 100;
const SESSIONS: usize = 10_000;
const GRACE: Duration = Duration::from_secs(30);

/// Service names are unique within a lifecycle: 100 static names, made once, so no
/// allocation is measured (the peer gets one static name, as before).
fn names() -> &'static [&'static str] {
    static NAMES: std::sync::OnceLock<Vec<&'static str>> = std::sync::OnceLock::new();
    NAMES.get_or_init(|| {
        (0..SERVICES)
            .map(|i| &*Box::leak(format!("service {i}").into_boxed_str()))
            .collect()
    })
}

async fn ours() {
    let lc = Lifecycle::builder()
        .grace(GRACE)
        .spawner(|service| {
            tokio::spawn(service);
        })
        .build();
    for &name in names() {
        // The stop signal is itself a future that ends when the stop is requested.
        lc.service(name, |stop| stop).expect("running");
    }
    for _ in 0..SESSIONS {
        let session = lc.session("session").expect("running");
        tokio::spawn(async move {
            session.stop_signal().await;
            drop(session);
        });
    }
    tokio::task::yield_now().await;
    lc.stop("bench");
    let report = lc.wait().await;
    assert_eq!(report.state(), State::Terminated);
    assert_eq!(report.exit_code(), 0);
    assert_eq!(report.services().len(), SERVICES);
    assert_eq!(report.sessions().completed(), SESSIONS as u64);
}

async fn until_shutdown(subsystem: &mut SubsystemHandle) -> Result<(), Infallible> {
    subsystem.on_shutdown_requested().await;
    Ok(())
}

async fn tokio_graceful_shutdown() {
    Toplevel::new(async |root: &mut SubsystemHandle| {
        for _ in 0..SERVICES {
            root.start(SubsystemBuilder::new("service", until_shutdown));
        }
        for _ in 0..SESSIONS {
            root.start(SubsystemBuilder::new("session", until_shutdown));
        }
        tokio::task::yield_now().await;
        root.request_shutdown();
    })
    .handle_shutdown_requests(GRACE)
    .await
    .expect("a clean shutdown");
}

fn whole_lifecycle(c: &mut Criterion) {
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
        let mut group = c.benchmark_group(format!("lifecycle_{name}"));
        group.sampling_mode(SamplingMode::Flat);
        group.sample_size(10);
        group.bench_function("ours", |b| b.iter(|| rt.block_on(ours())));
        group.bench_function("tokio_graceful_shutdown", |b| {
            b.iter(|| rt.block_on(tokio_graceful_shutdown()))
        });
        group.finish();
    }
}

fn main() {
    let mut c = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3))
        .configure_from_args();
    whole_lifecycle(&mut c);
    c.final_summary();
}
