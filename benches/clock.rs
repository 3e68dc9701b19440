//! The cost of one clock reading, and how far the coarse one lags.
//!
//! The contenders, each one call:
//!
//! - `std_instant_now`: [`Instant::now`], the floor of an exact reading;
//! - `system_clock_now`: `SystemClock::now` (that, plus the `sim` feature's thread-local
//!   out-of-reach check, which benches build with);
//! - `system_clock_coarse_now`: `SystemClock::coarse_now`, the process-wide reading refreshed
//!   every millisecond by a background thread (which the loop keeps awake);
//! - `dyn_system_clock_coarse_now`: the same through `Arc<dyn Clock>`, as the lifecycle calls it;
//! - `manual_clock_now`: `ManualClock::now` (a mutex), which `coarse_now` defaults to;
//! - `tokio_instant_now`: `tokio::time::Instant::now` inside a current-thread runtime with
//!   time enabled (what `TokioClock::now` is; tokio's `test-util`, on in this build, makes it
//!   look up the runtime's clock).
//!
//! Before the measurements it prints the coarse reading's lag behind an `Instant::now` taken
//! right after it (percentiles over a second of back-to-back reads), and the cost of the read
//! that finds the background thread parked (it takes `Instant::now` and wakes the thread).

use std::hint::black_box;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use async_lifecycle::{Clock, ManualClock, SystemClock};
use criterion::Criterion;

fn readings(c: &mut Criterion) {
    let mut group = c.benchmark_group("clock");
    group.bench_function("std_instant_now", |b| b.iter(Instant::now));
    let system = SystemClock::new();
    group.bench_function("system_clock_now", |b| b.iter(|| black_box(&system).now()));
    group.bench_function("system_clock_coarse_now", |b| {
        b.iter(|| black_box(&system).coarse_now())
    });
    let shared: Arc<dyn Clock> = Arc::new(SystemClock::new());
    group.bench_function("dyn_system_clock_coarse_now", |b| {
        b.iter(|| black_box(&shared).coarse_now())
    });
    let manual = ManualClock::new();
    group.bench_function("manual_clock_now", |b| b.iter(|| black_box(&manual).now()));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("runtime");
    let _entered = rt.enter();
    group.bench_function("tokio_instant_now", |b| b.iter(tokio::time::Instant::now));
    group.finish();
}

/// Prints the coarse reading's lag behind `Instant::now`, and the cost of a read that wakes
/// the parked background thread.
fn lag_report() {
    let clock = SystemClock::new();
    clock.coarse_now(); // starts the background thread
    // lags by the microsecond, the last bucket holding 10 ms and over
    let mut buckets = vec![0u64; 10_001];
    let (mut reads, mut max) = (0u64, Duration::ZERO);
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(1) {
        let coarse = clock.coarse_now();
        let lag = Instant::now() - coarse;
        buckets[(lag.as_micros() as usize).min(10_000)] += 1;
        max = max.max(lag);
        reads += 1;
    }
    let at = |q: f64| {
        let rank = (reads as f64 * q).ceil() as u64;
        let mut seen = 0;
        let micros = buckets
            .iter()
            .position(|n| {
                seen += n;
                seen >= rank
            })
            .unwrap_or(10_000);
        format!("<{}us", micros + 1)
    };
    println!(
        "coarse lag over {reads} reads: p50 {}, p99 {}, p99.9 {}, max {max:?}",
        at(0.5),
        at(0.99),
        at(0.999),
    );

    let mut wakes: Vec<Duration> = (0..10)
        .map(|_| {
            // unread for longer than the 100 ms idle period plus its check: parked by then
            thread::sleep(Duration::from_millis(250));
            let before = Instant::now();
            black_box(clock.coarse_now());
            before.elapsed()
        })
        .collect();
    wakes.sort_unstable();
    println!(
        "a read that wakes the parked thread: median {:?}, max {:?} (10 reads)",
        wakes[wakes.len() / 2],
        wakes[wakes.len() - 1],
    );
}

fn main() {
    lag_report();
    let mut c = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .configure_from_args();
    readings(&mut c);
    c.final_summary();
}
