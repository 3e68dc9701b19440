//! Drain completion: the time from the end of the last live session to the future that waits
//! for the drain resolving.
//!
//! Setup (untimed): the stop has been requested, one session is live, and the waiting future
//! has been polled once and is pending. Timed: drop the session, then poll the future once,
//! which must be ready. The futures are polled by hand with a no-op waker, so no executor's
//! scheduling is measured, only the work of the primitives.
//!
//! A second group, `drain_completion_warm`, times each completion right after its own setup
//! (caches warm), each with its own timer reading; `timer_only` is that reading's cost.
//!
//! Contenders: ours (an unnamed and a named session, `Lifecycle::wait`, which also writes the
//! report); tokio-util `TaskTracker` (a token, `close`, `wait`); drain (a `Watch`,
//! `Signal::drain`); async-shutdown (a delay token, `trigger_shutdown`,
//! `wait_shutdown_complete`); swansong (a guard, `shut_down`).

use std::future::Future;
use std::pin::Pin;
use std::task::Context;
use std::time::Duration;

use async_lifecycle::{Lifecycle, Session, State, Wait};
use async_shutdown::ShutdownManager;
use criterion::{BatchSize, Bencher, Criterion};
use futures::task::noop_waker_ref;
use swansong::Swansong;
use tokio_util::task::TaskTracker;

/// Benchmarks one contender: `setup` returns the live session and the future waiting for the
/// drain (the stop already requested); the timed part ends the session and polls the future.
fn last_session_to_resolved<G, F: Future>(b: &mut Bencher<'_>, mut setup: impl FnMut() -> (G, F)) {
    b.iter_batched_ref(
        || {
            let (guard, future) = setup();
            let mut future = Box::pin(future);
            let mut cx = Context::from_waker(noop_waker_ref());
            assert!(
                future.as_mut().poll(&mut cx).is_pending(),
                "a session is live"
            );
            (Some(guard), future)
        },
        |(guard, future): &mut (Option<G>, Pin<Box<F>>)| {
            drop(guard.take());
            let mut cx = Context::from_waker(noop_waker_ref());
            assert!(
                future.as_mut().poll(&mut cx).is_ready(),
                "the last session ended"
            );
        },
        BatchSize::SmallInput,
    );
}

/// A lifecycle draining one live session, and its `wait` future.
fn ours(named: bool) -> (Session, Wait) {
    ours_on(Lifecycle::new(), named)
}

/// As `ours`, on a manual clock: the grace deadline's sleep registers with the clock, not
/// with futures-timer's thread (which the system clock's sleep wakes, on the other core).
fn ours_manual_clock(named: bool) -> (Session, Wait) {
    ours_on(
        Lifecycle::builder()
            .clock(async_lifecycle::ManualClock::new())
            .build(),
        named,
    )
}

fn ours_on(lc: Lifecycle, named: bool) -> (Session, Wait) {
    let session = if named {
        lc.session("conn").expect("running")
    } else {
        lc.unnamed_session().expect("running")
    };
    lc.stop("bench");
    assert_eq!(lc.state(), State::Draining);
    (session, lc.wait())
}

fn drain_completion(c: &mut Criterion) {
    let mut group = c.benchmark_group("drain_completion");
    group.bench_function("ours_unnamed", |b| {
        last_session_to_resolved(b, || ours(false))
    });
    group.bench_function("ours_named", |b| last_session_to_resolved(b, || ours(true)));
    group.bench_function("ours_unnamed_manual_clock", |b| {
        last_session_to_resolved(b, || ours_manual_clock(false))
    });
    group.bench_function("tokio_util_task_tracker_close_wait", |b| {
        last_session_to_resolved(b, || {
            let tracker = TaskTracker::new();
            let token = tracker.token();
            tracker.close();
            (token, async move { tracker.wait().await })
        })
    });
    group.bench_function("drain_signal_drain", |b| {
        last_session_to_resolved(b, || {
            let (signal, watch) = drain::channel();
            (watch, signal.drain())
        })
    });
    group.bench_function("async_shutdown_wait_complete", |b| {
        last_session_to_resolved(b, || {
            let manager = ShutdownManager::<()>::new();
            let token = manager.delay_shutdown_token().expect("not completed");
            manager.trigger_shutdown(()).expect("first trigger");
            (token, manager.wait_shutdown_complete())
        })
    });
    group.bench_function("swansong_shut_down", |b| {
        last_session_to_resolved(b, || {
            let swansong = Swansong::new();
            let guard = swansong.guard();
            (guard, swansong.shut_down())
        })
    });
    group.finish();
}

/// As `last_session_to_resolved`, warm: each completion's setup runs just before it, so the
/// lines it touches are in cache, as when a server's last request ends. Each completion is
/// timed on its own, so every figure includes one `Instant::now` pair: the `timer_only`
/// contender measures that pair, to subtract before taking ratios.
fn last_session_to_resolved_warm<G, F: Future>(
    b: &mut Bencher<'_>,
    mut setup: impl FnMut() -> (G, F),
) {
    b.iter_custom(|iters| {
        let mut total = Duration::ZERO;
        for _ in 0..iters {
            let (guard, future) = setup();
            let mut future = std::pin::pin!(future);
            let mut cx = Context::from_waker(noop_waker_ref());
            assert!(
                future.as_mut().poll(&mut cx).is_pending(),
                "a session is live"
            );
            let start = std::time::Instant::now();
            drop(guard);
            let ready = future.as_mut().poll(&mut cx).is_ready();
            total += start.elapsed();
            assert!(ready, "the last session ended");
        }
        total
    });
}

fn drain_completion_warm(c: &mut Criterion) {
    let mut group = c.benchmark_group("drain_completion_warm");
    group.bench_function("timer_only", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let start = std::time::Instant::now();
                std::hint::black_box(());
                total += start.elapsed();
            }
            total
        })
    });
    group.bench_function("ours_unnamed", |b| {
        last_session_to_resolved_warm(b, || ours(false))
    });
    group.bench_function("ours_named", |b| {
        last_session_to_resolved_warm(b, || ours(true))
    });
    group.bench_function("tokio_util_task_tracker_close_wait", |b| {
        last_session_to_resolved_warm(b, || {
            let tracker = TaskTracker::new();
            let token = tracker.token();
            tracker.close();
            (token, async move { tracker.wait().await })
        })
    });
    group.finish();
}

fn main() {
    let mut c = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_millis(1500))
        .sample_size(30)
        .configure_from_args();
    drain_completion(&mut c);
    drain_completion_warm(&mut c);
    c.final_summary();
}
