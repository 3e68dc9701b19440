//! Scale (issue 12): session admission as threads are added, and drain completion as the
//! number of sessions a lifecycle has seen grows.
//!
//! # `scaling`: 1, 2, 4, 8 and 16 threads on one shared object
//!
//! Every sample starts T threads on the same object (one lifecycle, one `TaskTracker`, one
//! `Swansong`), lines them up on a barrier, and each does the same number of create+drop
//! pairs. The time reported per iteration is the **span of the sample divided by the pairs
//! each thread did**: from the first thread's start to the last thread's end (so a thread
//! that started late, or was descheduled, counts), per pair. It is the time one pair takes
//! per thread while T threads do the same; criterion's throughput line (T elements per
//! iteration) is the total rate, all threads together. With more threads than cores (the
//! bench machine has 2) the upper rows measure oversubscription: the threads take turns, and
//! the span grows with T / cores even when nothing is contended.
//!
//! Contenders, each creating one handle and dropping it: `ours_unnamed`
//! (`Lifecycle::unnamed_session`), `ours_named` (`Lifecycle::session("conn")`),
//! `tokio_util_task_tracker_token` (`TaskTracker::token`), `swansong_guard`
//! (`Swansong::guard`) and `swansong_guard_with_report` (`Swansong::with_guard_report`, then
//! `guard`: the peer that, like a named session, records each guard).
//!
//! Our sessions begin on the shard the thread's number picks (numbers are taken in the order
//! threads first begin a session): the T fresh threads of a sample take consecutive numbers,
//! so up to the shard count (twice the cores, 4 here) they land on distinct shards, and above
//! it they share. `scaling_same_shard` forces the worst placement at 2 threads: both threads
//! on one shard (63 throwaway threads take numbers between them, so the two numbers are equal
//! modulo any shard count a lifecycle can have, 2 to 64).
//!
//! # `drain_flat_in_n`: the last release after N sessions
//!
//! As `benches/drain.rs` (the time from the end of the last live session to the waiting
//! future resolving, polled by hand with a no-op waker), after a lifecycle — or a tracker —
//! has seen N sessions, for N = 1,000 and 100,000. Setup (untimed): N sessions (or tokens)
//! begun on this thread and live at once (so the shard's registry grows to N entries), the
//! stop (`Lifecycle::stop`; `TaskTracker::close`), N − 1 of them ended, and the wait future
//! polled once and pending. Timed: the last one ends and the future is polled, which must be
//! ready. Each completion is timed alone, right after its own setup, so the figures include
//! one timing window's two clock reads: `timer_floor` measures an empty window, to subtract.
//! (Timing 8 completions together after 8 setups was tried first: at N = 100,000 each setup's
//! N-entry registry and N-handle vector evict the other setups' lifecycles from the caches,
//! so it measured cold caches, not the drain path.)
//!
//! At the end the bench prints both groups' medians (the median over criterion's measured
//! samples of each sample's time per iteration, as criterion's own median) and their ratios
//! to `TaskTracker` in the same run.

use std::collections::BTreeMap;
use std::future::Future;
use std::hint::black_box;
use std::sync::{Barrier, Mutex};
use std::task::Context;
use std::thread;
use std::time::{Duration, Instant};

use async_lifecycle::{Lifecycle, State};
use criterion::{BenchmarkId, Criterion, SamplingMode, Throughput};
use futures::task::noop_waker_ref;
use swansong::Swansong;
use tokio_util::task::TaskTracker;

/// The thread counts of the scaling group.
const THREADS: [usize; 5] = [1, 2, 4, 8, 16];
/// Criterion's samples per benchmark (flat sampling: the last `SAMPLES` calls of a
/// benchmark's routine are its measured samples).
const SAMPLES: usize = 20;
/// The session counts of the drain group.
const DRAIN_N: [usize; 2] = [1_000, 100_000];

/// Every sample's time per iteration, by (group, contender, parameter), in call order:
/// warm-up calls first, then the `SAMPLES` measured ones.
type Log = Mutex<BTreeMap<(&'static str, &'static str, usize), Vec<f64>>>;

fn log() -> &'static Log {
    static LOG: std::sync::OnceLock<Log> = std::sync::OnceLock::new();
    LOG.get_or_init(|| Mutex::new(BTreeMap::new()))
}

fn record(key: (&'static str, &'static str, usize), iters: u64, elapsed: Duration) {
    let per_iter = elapsed.as_nanos() as f64 / iters as f64;
    log()
        .lock()
        .expect("log")
        .entry(key)
        .or_default()
        .push(per_iter);
}

/// The median of a benchmark's measured samples, in ns per iteration.
fn median(key: (&'static str, &'static str, usize)) -> Option<f64> {
    let log = log().lock().expect("log");
    let all = log.get(&key)?;
    let mut measured = all[all.len().saturating_sub(SAMPLES)..].to_vec();
    measured.sort_by(f64::total_cmp);
    let n = measured.len();
    (n > 0).then(|| {
        if n % 2 == 1 {
            measured[n / 2]
        } else {
            (measured[n / 2 - 1] + measured[n / 2]) / 2.0
        }
    })
}

// ---- Scaling ----

/// `threads` threads each do `iters` create+drop pairs with `make` on the same object, from
/// one barrier; returns the span from the first start to the last end.
fn span<T, F: Fn() -> T + Sync>(threads: usize, iters: u64, make: &F) -> Duration {
    let barrier = Barrier::new(threads);
    let times: Vec<(Instant, Instant)> = thread::scope(|s| {
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                s.spawn(|| {
                    barrier.wait();
                    let start = Instant::now();
                    for _ in 0..iters {
                        black_box(make());
                    }
                    (start, Instant::now())
                })
            })
            .collect();
        workers
            .into_iter()
            .map(|w| w.join().expect("worker panicked"))
            .collect()
    });
    let first = times.iter().map(|t| t.0).min().expect("a worker");
    let last = times.iter().map(|t| t.1).max().expect("a worker");
    last - first
}

/// As `span` with two threads whose sessions begin on the same shard of a lifecycle: the
/// first takes its thread number, 63 throwaway threads take the next 63, then the second
/// takes its own, equal to the first's modulo 64 and so modulo every shard count.
fn span_same_shard<T, F: Fn() -> T + Sync>(iters: u64, make: &F) -> Duration {
    let burn = Lifecycle::new();
    let (numbered_first, numbered_second) = (Barrier::new(2), Barrier::new(2));
    let start = Barrier::new(2);
    let work = |numbered: &Barrier| {
        drop(black_box(make())); // takes this thread's number
        numbered.wait();
        start.wait();
        let begun = Instant::now();
        for _ in 0..iters {
            black_box(make());
        }
        (begun, Instant::now())
    };
    let times: Vec<(Instant, Instant)> = thread::scope(|s| {
        let first = s.spawn(|| work(&numbered_first));
        numbered_first.wait();
        for _ in 0..63 {
            s.spawn(|| drop(burn.unnamed_session().expect("running")))
                .join()
                .expect("burner");
        }
        let second = s.spawn(|| work(&numbered_second));
        numbered_second.wait();
        vec![
            first.join().expect("worker panicked"),
            second.join().expect("worker panicked"),
        ]
    });
    let first = times.iter().map(|t| t.0).min().expect("a worker");
    let last = times.iter().map(|t| t.1).max().expect("a worker");
    last - first
}

/// Every contender of the scaling group: `register(name, run)`, where `run(threads, iters)`
/// makes a fresh shared object and returns the span of one sample on it.
fn contenders(mut register: impl FnMut(&'static str, &dyn Fn(usize, u64) -> Duration)) {
    register("ours_unnamed", &|threads, iters| {
        let lc = Lifecycle::new();
        span(threads, iters, &|| lc.unnamed_session().expect("running"))
    });
    register("ours_named", &|threads, iters| {
        let lc = Lifecycle::new();
        span(threads, iters, &|| lc.session("conn").expect("running"))
    });
    register("tokio_util_task_tracker_token", &|threads, iters| {
        let tracker = TaskTracker::new();
        span(threads, iters, &|| tracker.token())
    });
    register("swansong_guard", &|threads, iters| {
        let swansong = Swansong::new();
        span(threads, iters, &|| swansong.guard())
    });
    register("swansong_guard_with_report", &|threads, iters| {
        let swansong = Swansong::with_guard_report();
        span(threads, iters, &|| swansong.guard())
    });
}

fn scaling(c: &mut Criterion) {
    let mut group = c.benchmark_group("scaling");
    // Every sample spawns its threads: the same iteration count per sample keeps that cost
    // out of the slope, and the median meaningful.
    group.sampling_mode(SamplingMode::Flat);
    for threads in THREADS {
        group.throughput(Throughput::Elements(threads as u64));
        contenders(|name, run| {
            group.bench_with_input(BenchmarkId::new(name, threads), &threads, |b, &t| {
                b.iter_custom(|iters| {
                    let elapsed = run(t, iters);
                    record(("scaling", name, t), iters, elapsed);
                    elapsed
                });
            });
        });
    }
    group.finish();

    let mut group = c.benchmark_group("scaling_same_shard");
    group.sampling_mode(SamplingMode::Flat);
    group.throughput(Throughput::Elements(2));
    group.bench_function("ours_unnamed", |b| {
        b.iter_custom(|iters| {
            let lc = Lifecycle::new();
            let elapsed = span_same_shard(iters, &|| lc.unnamed_session().expect("running"));
            record(("scaling_same_shard", "ours_unnamed", 2), iters, elapsed);
            elapsed
        });
    });
    group.bench_function("ours_named", |b| {
        b.iter_custom(|iters| {
            let lc = Lifecycle::new();
            let elapsed = span_same_shard(iters, &|| lc.session("conn").expect("running"));
            record(("scaling_same_shard", "ours_named", 2), iters, elapsed);
            elapsed
        });
    });
    group.finish();
}

// ---- Drain completion, flat in N ----

/// Times `iters` drain completions, one setup each: `setup(n)` returns the last live session
/// and the waiting future (the stop requested, the other n − 1 ended). Each completion is
/// timed on its own, right after its setup, so it finds the caches as its own setup left
/// them (not as the setups of other iterations did).
fn drain_iters<G, F: Future>(iters: u64, n: usize, setup: &impl Fn(usize) -> (G, F)) -> Duration {
    let mut total = Duration::ZERO;
    let mut cx = Context::from_waker(noop_waker_ref());
    for _ in 0..iters {
        let (guard, future) = setup(n);
        let mut future = Box::pin(future);
        assert!(
            future.as_mut().poll(&mut cx).is_pending(),
            "a session is live"
        );
        let start = Instant::now();
        drop(black_box(guard));
        let ready = future.as_mut().poll(&mut cx).is_ready();
        total += start.elapsed();
        assert!(ready, "the last session ended");
    }
    total
}

/// What `drain_iters` measures around an empty window: its two clock reads.
fn timer_floor(iters: u64) -> Duration {
    let mut total = Duration::ZERO;
    for _ in 0..iters {
        let start = Instant::now();
        total += black_box(start).elapsed();
    }
    total
}

/// A lifecycle that has seen `n` sessions, stopped with the last one live.
fn ours(named: bool) -> impl Fn(usize) -> (async_lifecycle::Session, async_lifecycle::Wait) {
    move |n| {
        let lc = Lifecycle::new();
        let mut sessions: Vec<_> = (0..n)
            .map(|_| {
                if named {
                    lc.session("conn").expect("running")
                } else {
                    lc.unnamed_session().expect("running")
                }
            })
            .collect();
        lc.stop("bench");
        assert_eq!(lc.state(), State::Draining);
        let last = sessions.pop().expect("n > 0");
        drop(sessions);
        (last, lc.wait())
    }
}

/// A tracker that has seen `n` tokens, closed with the last one live.
fn tracker(n: usize) -> (impl Sized, impl Future<Output = ()>) {
    let tracker = TaskTracker::new();
    let mut tokens: Vec<_> = (0..n).map(|_| tracker.token()).collect();
    tracker.close();
    let last = tokens.pop().expect("n > 0");
    drop(tokens);
    (last, async move { tracker.wait().await })
}

fn drain_flat_in_n(c: &mut Criterion) {
    let mut group = c.benchmark_group("drain_flat_in_n");
    // The setup of one iteration (N sessions) outweighs its timed part by far: flat
    // sampling keeps the iteration count per sample small and equal.
    group.sampling_mode(SamplingMode::Flat);
    group.bench_function("timer_floor", |b| {
        b.iter_custom(|iters| {
            let elapsed = timer_floor(iters);
            record(("drain_flat_in_n", "timer_floor", 0), iters, elapsed);
            elapsed
        });
    });
    for n in DRAIN_N {
        group.bench_with_input(BenchmarkId::new("ours_unnamed", n), &n, |b, &n| {
            b.iter_custom(|iters| {
                let elapsed = drain_iters(iters, n, &ours(false));
                record(("drain_flat_in_n", "ours_unnamed", n), iters, elapsed);
                elapsed
            });
        });
        group.bench_with_input(BenchmarkId::new("ours_named", n), &n, |b, &n| {
            b.iter_custom(|iters| {
                let elapsed = drain_iters(iters, n, &ours(true));
                record(("drain_flat_in_n", "ours_named", n), iters, elapsed);
                elapsed
            });
        });
        group.bench_with_input(
            BenchmarkId::new("tokio_util_task_tracker_close_wait", n),
            &n,
            |b, &n| {
                b.iter_custom(|iters| {
                    let elapsed = drain_iters(iters, n, &tracker);
                    record(
                        ("drain_flat_in_n", "tokio_util_task_tracker_close_wait", n),
                        iters,
                        elapsed,
                    );
                    elapsed
                });
            },
        );
    }
    group.finish();
}

// ---- Summary ----

fn summary() {
    let tt = "tokio_util_task_tracker_token";
    let names = [
        "ours_unnamed",
        "ours_named",
        tt,
        "swansong_guard",
        "swansong_guard_with_report",
    ];
    println!();
    println!(
        "scaling: ns per create+drop per thread (span / pairs per thread), median; ratio to TaskTracker"
    );
    print!("{:<8}", "threads");
    for name in names {
        print!(" {name:>30}");
    }
    println!();
    for threads in THREADS {
        print!("{threads:<8}");
        let base = median(("scaling", tt, threads));
        for name in names {
            match (median(("scaling", name, threads)), base) {
                (Some(ns), Some(base)) => print!(" {:>30}", format!("{ns:.1} ({:.2}x)", ns / base)),
                (Some(ns), None) => print!(" {:>30}", format!("{ns:.1}")),
                (None, _) => print!(" {:>30}", "-"),
            }
        }
        println!();
    }
    for name in ["ours_unnamed", "ours_named"] {
        if let Some(ns) = median(("scaling_same_shard", name, 2)) {
            let base = median(("scaling", tt, 2))
                .map(|base| format!(" ({:.2}x TaskTracker at 2 threads)", ns / base))
                .unwrap_or_default();
            println!("same shard, 2 threads, {name}: {ns:.1} ns{base}");
        }
    }

    let tt = "tokio_util_task_tracker_close_wait";
    println!();
    println!(
        "drain_flat_in_n: ns from the last session's end to wait() resolved, median; ratio to TaskTracker at the same N"
    );
    print!("{:<8}", "N");
    for name in ["ours_unnamed", "ours_named", tt] {
        print!(" {name:>36}");
    }
    println!();
    for n in DRAIN_N {
        print!("{n:<8}");
        let base = median(("drain_flat_in_n", tt, n));
        for name in ["ours_unnamed", "ours_named", tt] {
            match (median(("drain_flat_in_n", name, n)), base) {
                (Some(ns), Some(base)) => print!(" {:>36}", format!("{ns:.1} ({:.2}x)", ns / base)),
                (Some(ns), None) => print!(" {:>36}", format!("{ns:.1}")),
                (None, _) => print!(" {:>36}", "-"),
            }
        }
        println!();
    }
    if let Some(floor) = median(("drain_flat_in_n", "timer_floor", 0)) {
        println!(
            "timer_floor (an empty timing window, included in every figure above): {floor:.1} ns"
        );
        println!("the same, net of timer_floor:");
        for n in DRAIN_N {
            print!("{n:<8}");
            let base = median(("drain_flat_in_n", tt, n)).map(|ns| ns - floor);
            for name in ["ours_unnamed", "ours_named", tt] {
                match (median(("drain_flat_in_n", name, n)), base) {
                    (Some(ns), Some(base)) => {
                        let net = ns - floor;
                        print!(" {:>36}", format!("{net:.1} ({:.2}x)", net / base));
                    }
                    _ => print!(" {:>36}", "-"),
                }
            }
            println!();
        }
    }
}

fn main() {
    let mut c = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_millis(1500))
        .sample_size(SAMPLES)
        .configure_from_args();
    scaling(&mut c);
    drain_flat_in_n(&mut c);
    c.final_summary();
    summary();
}
