//! Session admission: the cost of creating and dropping one tracking handle, side by side with
//! the peers doing the same job, on one thread and with two threads hammering the same object.
//!
//! Each benchmark creates one handle and drops it. The contenders:
//!
//! - `floor_atomic_add_sub`: one atomic add and one atomic sub on a shared word, the least any
//!   counter of live work can cost;
//! - `ours_unnamed`: `Lifecycle::unnamed_session`;
//! - `ours_named`: `Lifecycle::session` with a `&'static str` name (a clock read, a lock and a
//!   slab insert, then a lock and a slab remove);
//! - `tokio_util_task_tracker_token`: `TaskTracker::token`;
//! - `tokio_util_child_token`: `CancellationToken::child_token`;
//! - `drain_watch_clone`: `drain::Watch::clone`;
//! - `async_shutdown_delay_token`: `ShutdownManager::delay_shutdown_token`;
//! - `swansong_guard` and `swansong_guard_with_report`: `Swansong::guard`, without and with the
//!   opt-in guard report (`Swansong::with_guard_report`).
//!
//! In the two-thread group every sample starts two threads on the same object, lines them up
//! on a barrier, and each does the same number of create+drop pairs; the time per pair is the
//! slower thread's, so it is the cost of one pair while the other thread contends.

use std::hint::black_box;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use async_lifecycle::Lifecycle;
use async_shutdown::ShutdownManager;
use criterion::{Bencher, Criterion, SamplingMode};
use swansong::Swansong;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Every contender, as a closure that creates one handle; the caller drops it.
///
/// `register` is called once per contender with its benchmark name and a factory that makes
/// the object (shared by both threads in the contended group) and hands back the closure.
fn contenders(mut register: impl FnMut(&str, &mut dyn FnMut(&mut Bencher<'_>, bool))) {
    register("floor_atomic_add_sub", &mut |b, two| {
        let word = Arc::new(AtomicUsize::new(0));
        run(b, two, &|| {
            // AcqRel on both, like a counter whose end publishes the work done.
            word.fetch_add(1, Ordering::AcqRel);
            word.fetch_sub(1, Ordering::AcqRel);
        });
    });
    register("ours_unnamed", &mut |b, two| {
        let lc = Lifecycle::new();
        run(b, two, &|| lc.unnamed_session().expect("running"));
    });
    register("ours_named", &mut |b, two| {
        let lc = Lifecycle::new();
        run(b, two, &|| lc.session("conn").expect("running"));
    });
    register("tokio_util_task_tracker_token", &mut |b, two| {
        let tracker = TaskTracker::new();
        run(b, two, &|| tracker.token());
    });
    register("tokio_util_child_token", &mut |b, two| {
        let token = CancellationToken::new();
        run(b, two, &|| token.child_token());
    });
    register("drain_watch_clone", &mut |b, two| {
        let (_signal, watch) = drain::channel();
        run(b, two, &|| watch.clone());
    });
    register("async_shutdown_delay_token", &mut |b, two| {
        let manager = ShutdownManager::<()>::new();
        run(b, two, &|| {
            manager.delay_shutdown_token().expect("not completed")
        });
    });
    register("swansong_guard", &mut |b, two| {
        let swansong = Swansong::new();
        run(b, two, &|| swansong.guard());
    });
    register("swansong_guard_with_report", &mut |b, two| {
        let swansong = Swansong::with_guard_report();
        run(b, two, &|| swansong.guard());
    });
}

/// Times `make` (a create, and the drop of what it returns) on one thread, or on two threads
/// at once.
///
/// Generic over `make` (not `dyn`), so each contender's create and drop are inlined into the
/// measured loop, as they would be in a caller's code.
fn run<T, F: Fn() -> T + Sync>(b: &mut Bencher<'_>, two_threads: bool, make: &F) {
    if two_threads {
        b.iter_custom(|iters| contended(iters, make));
    } else {
        // One black_box, then the drop, inside the routine: exactly what the two-thread loop
        // does. Returning the handle instead made criterion black_box it a second time,
        // which forced an extra copy through memory and measured the handle's size (a 16-byte
        // copy stalls on store forwarding here) rather than the cost of admission.
        b.iter(|| drop(black_box(make())));
    }
}

/// Two threads each do `iters` create+drop pairs on the same object; returns the slower
/// thread's time.
fn contended<T, F: Fn() -> T + Sync>(iters: u64, make: &F) -> Duration {
    let barrier = Barrier::new(2);
    thread::scope(|s| {
        let workers: Vec<_> = (0..2)
            .map(|_| {
                s.spawn(|| {
                    barrier.wait();
                    let start = Instant::now();
                    for _ in 0..iters {
                        black_box(make());
                    }
                    start.elapsed()
                })
            })
            .collect();
        workers
            .into_iter()
            .map(|w| w.join().expect("worker panicked"))
            .max()
            .expect("two workers")
    })
}

fn one_thread(c: &mut Criterion) {
    let mut group = c.benchmark_group("admission_1thread");
    contenders(|name, bench| {
        group.bench_function(name, |b| bench(b, false));
    });
    group.finish();
}

fn two_threads(c: &mut Criterion) {
    let mut group = c.benchmark_group("admission_2threads");
    // Every sample spawns two threads: the same iteration count per sample keeps that cost
    // equal across samples, and the median meaningful.
    group.sampling_mode(SamplingMode::Flat);
    contenders(|name, bench| {
        group.bench_function(name, |b| bench(b, true));
    });
    group.finish();
}

fn main() {
    let mut c = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_millis(1500))
        .sample_size(30)
        .configure_from_args();
    one_thread(&mut c);
    two_threads(&mut c);
    c.final_summary();
}
