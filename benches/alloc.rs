//! Heap cost of sessions, counted by a global allocator: allocations and bytes per
//! create+drop in steady state, and heap bytes per live session with 100,000 live at once,
//! for us and each peer; and the allocations on the drain-completion path (the last session
//! ends, the waiting future resolves), which `benches/drain.rs` times; and the allocations to
//! add and run one service on tokio's current-thread runtime — with `.tokio()` (each service
//! spawned unboxed) and with a plain spawner function (`.spawner(|s| { tokio::spawn(s); })`,
//! each task boxed for it) — against tokio-util's recipe (a `TaskTracker::spawn` of a task
//! awaiting a `CancellationToken` clone), which `benches/services.rs` times. Prints three
//! tables; `cargo bench --bench alloc` runs it.
//!
//! The counts are exact (not timed), so one run is enough. Only this thread allocates while a
//! region is measured.

use std::alloc::System;
use std::future::Future;
use std::hint::black_box;
use std::mem::size_of;
use std::pin::Pin;
use std::task::Context;

use async_lifecycle::Lifecycle;
use async_lifecycle::tokio::BuilderExt;
use async_shutdown::ShutdownManager;
use futures::task::noop_waker_ref;
use stats_alloc::{INSTRUMENTED_SYSTEM, Region, Stats, StatsAlloc};
use swansong::Swansong;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

/// Create+drop pairs measured for the steady-state numbers, after as many for warming up.
const PAIRS: usize = 10_000;
/// Sessions held live at once for the per-live-session numbers.
const LIVE: usize = 100_000;

/// What one contender costs.
struct Row {
    name: &'static str,
    handle_bytes: usize,
    allocs_per_pair: f64,
    bytes_per_pair: f64,
    live_bytes_per_session: f64,
}

/// Measures one contender: `make` creates one handle from the shared object.
fn measure<T>(name: &'static str, make: impl Fn() -> T) -> Row {
    // Warm up: let any pool or slab reach its steady size.
    for _ in 0..PAIRS {
        black_box(make());
    }
    let region = Region::new(GLOBAL);
    for _ in 0..PAIRS {
        black_box(make());
    }
    let pairs = region.change();

    let mut live = Vec::with_capacity(LIVE);
    let region = Region::new(GLOBAL);
    for _ in 0..LIVE {
        live.push(make());
    }
    let held = net_bytes(region.change());
    drop(black_box(live));

    Row {
        name,
        handle_bytes: size_of::<T>(),
        allocs_per_pair: pairs.allocations as f64 / PAIRS as f64,
        bytes_per_pair: pairs.bytes_allocated as f64 / PAIRS as f64,
        live_bytes_per_session: held as f64 / LIVE as f64,
    }
}

/// Heap bytes still allocated at the end of a region (the `Vec` of handles was allocated
/// before it, so it does not count). `stats_alloc` already adds a growing reallocation's
/// difference to `bytes_allocated` (and a shrinking one's to `bytes_deallocated`).
fn net_bytes(stats: Stats) -> i64 {
    stats.bytes_allocated as i64 - stats.bytes_deallocated as i64
}

/// Drain completions measured per contender.
const DRAINS: usize = 1_000;

/// Allocations and bytes allocated on the drain-completion path: `setup` returns a live
/// session and the pending future that waits for the drain (stop already requested); the
/// counted part drops the session and polls the future to completion (the output, such as our
/// report, is dropped after counting).
fn drain_path<G, F: Future>(name: &'static str, mut setup: impl FnMut() -> (G, F)) -> DrainRow {
    let mut cx = Context::from_waker(noop_waker_ref());
    let mut pending: Vec<(Option<G>, Pin<Box<F>>)> = (0..DRAINS)
        .map(|_| {
            let (guard, future) = setup();
            let mut future = Box::pin(future);
            assert!(
                future.as_mut().poll(&mut cx).is_pending(),
                "a session is live"
            );
            (Some(guard), future)
        })
        .collect();
    let mut outputs = Vec::with_capacity(DRAINS);
    let region = Region::new(GLOBAL);
    for (guard, future) in &mut pending {
        drop(guard.take());
        match future.as_mut().poll(&mut cx) {
            std::task::Poll::Ready(output) => outputs.push(output),
            std::task::Poll::Pending => panic!("the last session ended"),
        }
    }
    let stats = region.change();
    drop(outputs);
    DrainRow {
        name,
        allocs: stats.allocations as f64 / DRAINS as f64,
        bytes: stats.bytes_allocated as f64 / DRAINS as f64,
    }
}

/// What one contender allocates on the drain-completion path.
struct DrainRow {
    name: &'static str,
    allocs: f64,
    bytes: f64,
}

fn drain_rows() -> Vec<DrainRow> {
    let ours = |named: bool| {
        move || {
            let lc = Lifecycle::new();
            let session = if named {
                lc.session("conn").expect("running")
            } else {
                lc.unnamed_session().expect("running")
            };
            lc.stop("bench");
            (session, lc.wait())
        }
    };
    vec![
        drain_path("ours_unnamed", ours(false)),
        drain_path("ours_named", ours(true)),
        drain_path("tokio_util_task_tracker_close_wait", || {
            let tracker = TaskTracker::new();
            let token = tracker.token();
            tracker.close();
            (token, async move { tracker.wait().await })
        }),
        drain_path("drain_signal_drain", || {
            let (signal, watch) = drain::channel();
            (watch, signal.drain())
        }),
        drain_path("async_shutdown_wait_complete", || {
            let manager = ShutdownManager::<()>::new();
            let token = manager.delay_shutdown_token().expect("not completed");
            manager.trigger_shutdown(()).expect("first trigger");
            (token, manager.wait_shutdown_complete())
        }),
        drain_path("swansong_shut_down", || {
            let swansong = Swansong::new();
            let guard = swansong.guard();
            (guard, swansong.shut_down())
        }),
    ]
}

/// What one contender allocates per service.
struct ServiceRow {
    name: &'static str,
    /// Fresh allocations (a reallocation, the growth of a vector, is not one).
    allocs: f64,
    reallocs: f64,
    /// Bytes allocated, a reallocation's growth included.
    bytes: f64,
}

/// Services added and run for the per-service count, after as many for warming up.
const SERVICES: usize = 50;

/// Allocations (and bytes) per service added and run to its first pending poll, on tokio's
/// current-thread runtime: services `SERVICES + 1` to `2 * SERVICES` of one lifecycle (its
/// vectors have grown), against the same number of tasks spawned by the tokio-util recipe.
/// The mean over those services includes the lifecycle's amortised growth: the name index's
/// rehash and an abort-slot segment (64 slots, at service 57) are the allocations beyond one
/// per service with `.tokio()`, and the machine's per-service vectors growing are the
/// reallocations, which make most of the bytes. A service's own allocations are tokio's
/// 256 B task cell, or a 112 B box and a 128 B cell with a spawner function.
fn service_rows() -> Vec<ServiceRow> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("a runtime");
    let ours = |builder: fn() -> async_lifecycle::Builder, owned: bool| {
        rt.block_on(ours_services(builder, owned))
    };
    let tokio = || Lifecycle::builder().tokio();
    let plain = || {
        Lifecycle::builder().spawner(|service| {
            tokio::spawn(service);
        })
    };
    let ours_tokio = ours(tokio, false);
    let ours_tokio_owned = ours(tokio, true);
    let ours_spawner = ours(plain, false);
    let recipe = rt.block_on(async {
        let tracker = TaskTracker::new();
        let cancel = CancellationToken::new();
        let add = || {
            let token = cancel.clone();
            tracker.spawn(async move { token.cancelled().await });
        };
        (0..SERVICES).for_each(|_| add());
        tokio::task::yield_now().await;
        let region = Region::new(GLOBAL);
        (0..SERVICES).for_each(|_| add());
        tokio::task::yield_now().await;
        let stats = region.change();
        cancel.cancel();
        tracker.close();
        tracker.wait().await;
        stats
    });
    let row = |name, stats: Stats| ServiceRow {
        name,
        allocs: stats.allocations as f64 / SERVICES as f64,
        reallocs: stats.reallocations as f64 / SERVICES as f64,
        bytes: stats.bytes_allocated as f64 / SERVICES as f64,
    };
    vec![
        row("ours_service_tokio", ours_tokio),
        row("ours_service_tokio_string_names", ours_tokio_owned),
        row("ours_service_plain_spawner", ours_spawner),
        row("tokio_util_tracker_spawn_cancelled", recipe),
    ]
}

/// Adds `2 * SERVICES` services to a lifecycle built from `builder()` (called on the current
/// tokio runtime: `.tokio()` takes its handle), counting the second half; then stops it and
/// checks the report. The names are made up front: `&'static str`s (leaked), or, if `owned`,
/// `String`s, which move into the service's name without allocating but are cloned for the
/// machine's name index (one allocation per service more).
async fn ours_services(builder: fn() -> async_lifecycle::Builder, owned: bool) -> Stats {
    let lc = builder().build();
    let mut names: Vec<std::borrow::Cow<'static, str>> = (0..2 * SERVICES)
        .map(|i| {
            let name = format!("svc {i}");
            if owned {
                name.into()
            } else {
                (&*Box::leak(name.into_boxed_str())).into()
            }
        })
        .collect();
    let add = |name: std::borrow::Cow<'static, str>| {
        lc.service(name, |stop| stop).expect("running");
    };
    names.drain(..SERVICES).for_each(add);
    tokio::task::yield_now().await; // the spawned services run to their first pending poll
    let region = Region::new(GLOBAL);
    names.drain(..).for_each(add);
    tokio::task::yield_now().await;
    let stats = region.change();
    lc.stop("bench");
    let report = lc.wait().await;
    assert_eq!(report.exit_code(), 0, "{report}");
    stats
}

fn main() {
    let mut rows = Vec::new();

    let lc = Lifecycle::new();
    rows.push(measure("ours_unnamed", || {
        lc.unnamed_session().expect("running")
    }));
    let lc = Lifecycle::new();
    rows.push(measure("ours_named", || {
        lc.session("conn").expect("running")
    }));

    let tracker = TaskTracker::new();
    rows.push(measure("tokio_util_task_tracker_token", || tracker.token()));
    let token = CancellationToken::new();
    rows.push(measure("tokio_util_child_token", || token.child_token()));
    let (_signal, watch) = drain::channel();
    rows.push(measure("drain_watch_clone", || watch.clone()));
    let manager = ShutdownManager::<()>::new();
    rows.push(measure("async_shutdown_delay_token", || {
        manager.delay_shutdown_token().expect("not completed")
    }));
    let swansong = Swansong::new();
    rows.push(measure("swansong_guard", || swansong.guard()));
    let swansong = Swansong::with_guard_report();
    rows.push(measure("swansong_guard_with_report", || swansong.guard()));

    println!("heap cost per session (counting global allocator; exact counts)");
    println!(
        "{:<32} {:>12} {:>16} {:>16} {:>26}",
        "contender",
        "handle size",
        "allocs/session",
        "bytes/session",
        format!("heap bytes/live (N={LIVE})"),
    );
    for row in &rows {
        println!(
            "{:<32} {:>10} B {:>16.3} {:>16.1} {:>26.1}",
            row.name,
            row.handle_bytes,
            row.allocs_per_pair,
            row.bytes_per_pair,
            row.live_bytes_per_session,
        );
    }

    println!();
    println!("allocations on the drain-completion path (last session ends -> wait resolves)");
    println!("{:<36} {:>12} {:>12}", "contender", "allocs", "bytes");
    for row in drain_rows() {
        println!("{:<36} {:>12.1} {:>12.1}", row.name, row.allocs, row.bytes);
    }

    println!();
    println!(
        "allocations to add and run one service (tokio current-thread; mean over services 51-100)"
    );
    println!(
        "{:<36} {:>12} {:>12} {:>12}",
        "contender", "allocs", "reallocs", "bytes"
    );
    for row in service_rows() {
        println!(
            "{:<36} {:>12.2} {:>12.2} {:>12.1}",
            row.name, row.allocs, row.reallocs, row.bytes
        );
    }
}
