//! Supervision: the cost of one restart, and the CPU a restart storm burns.
//!
//! # `restart_cost` and `restart_cost_no_timer` (criterion)
//!
//! One service fails at once, N times in a row, and is restarted after each failure; the
//! (N + 1)th run succeeds. Each criterion iteration is one restart: `iter_custom` gets N
//! iterations from one supervisor and returns the time from the first run's failure (read
//! just before that run returns its error) to the start of the (N + 1)th run (read as it is
//! first polled). That span holds N restarts and N − 1 empty failing runs. Building and
//! tearing down the supervisor are not timed. Everything runs on a tokio current-thread
//! runtime.
//!
//! The backoff is 1 ns, fixed (`Backoff::new(1 ns, 1 ns)?.without_jitter()`, the smallest
//! the API accepts: a zero backoff is refused). The restart intensity is `u32::MAX` restarts
//! within 1 ms: it never trips, and its window (the restarts of the last millisecond) stays
//! short, as the default's (at most 6 entries) does.
//!
//! - `restart_cost`: the waits go through tokio's timer. Tokio rounds every deadline up to
//!   the next millisecond tick, so a 1 ns sleep is a park of up to 1 ms: this group
//!   measures that timer as much as the restart.
//! - `restart_cost_no_timer`: the same with a clock (`DueClock`, below) whose sleep is ready
//!   at once when its deadline has passed — which a 1 ns deadline always has by the time it
//!   is polled — and otherwise is tokio's. This is the restart machinery alone.
//!
//! The contenders, in both groups, with the same sleep (the same `Clock::sleep_until`):
//!
//! - `ours_tokio_spawner`: `Lifecycle::service_with` with `Restart::OnFailure`, services
//!   spawned as tokio tasks (`.tokio()`, or `DueClock` with `async_lifecycle::tokio::spawner`);
//!   `lc.wait()` drives the backoff timer.
//! - `ours_wait_driven`: the same with no spawner: `lc.wait()` runs every run in itself.
//! - `hand_written_loop`: the floor a user would write,
//!   `loop { match tokio::spawn(run()).await { Ok(Ok(())) => break, _ => sleep(backoff).await } }`.
//! - `tokio_graceful_shutdown_keepalive`: tokio-graceful-shutdown 0.20 has no restart API
//!   (no restart policy, no backoff). Its own example
//!   `examples/12_subsystem_auto_restart.rs` restarts a subsystem with a hand-written
//!   keepalive subsystem that starts it as a nested subsystem
//!   (`ErrorAction::CatchAndLocalShutdown`) and `join()`s it in a loop; that pattern is
//!   measured, with the same sleep added between runs.
//!
//! # `restart_storm_cpu` (plain `main`, after criterion)
//!
//! CPU time, not latency. A service that fails at once is supervised under the default
//! backoff (`Backoff::DEFAULT`: 100 ms doubling to 30 s, full jitter; seeded) and a restart
//! intensity that does not trip (`u32::MAX` within 1 s), with `.tokio()` on a tokio
//! current-thread runtime, for 10 s of real time (`RESTART_STORM_SECS` overrides it; 0 skips
//! the section). Printed: the process's CPU time over that span (user + system, from
//! `/proc/self/stat` at 10 ms resolution and from the threads' `/proc/self/task/*/schedstat`
//! in ns), the runs, and the CPU as a percentage of one core. Side by side, for 1 s: the same
//! service under a naive supervisor with no backoff (`loop { tokio::spawn(run()).await }`),
//! which busy-loops.
//!
//! The storm runs unless a criterion filter is given that `restart_storm_cpu` does not
//! contain. Without `--bench` (`cargo test --benches`) it runs for 0.2 s only.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use async_lifecycle::tokio::{BuilderExt, TokioClock};
use async_lifecycle::{
    Backoff, Builder, Clock, Lifecycle, Restart, RestartIntensity, ServiceOptions, Sleep,
};
use criterion::{Criterion, SamplingMode};
use tokio_graceful_shutdown::{ErrorAction, SubsystemBuilder, SubsystemHandle, Toplevel};

/// The backoff of the restart-cost groups: the smallest the API accepts.
const TINY: Duration = Duration::from_nanos(1);
const GRACE: Duration = Duration::from_secs(30);
/// The jitter seed of the storm (the restart-cost groups have no jitter).
const SEED: u64 = 0x5EED;

/// A clock whose sleep is ready at once when its deadline has passed, and tokio's otherwise:
/// restarts without the timer's millisecond rounding.
#[derive(Debug, Clone, Copy)]
struct DueClock;

/// An already-finished sleep (a zero-sized future: boxing it does not allocate).
struct Done;

impl Future for Done {
    type Output = ();
    fn poll(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<()> {
        Poll::Ready(())
    }
}

impl Clock for DueClock {
    fn now(&self) -> Instant {
        Instant::now()
    }

    fn sleep_until(&self, deadline: Instant) -> Sleep {
        if deadline <= Instant::now() {
            Box::pin(Done)
        } else {
            TokioClock::new().sleep_until(deadline)
        }
    }
}

/// Which sleep the backoff waits use: tokio's timer, or `DueClock`.
#[derive(Debug, Clone, Copy)]
enum Timer {
    Tokio,
    Due,
}

impl Timer {
    /// The backoff wait of the peers: the same `Clock::sleep_until` ours uses.
    fn sleep(self, after: Duration) -> Sleep {
        let deadline = Instant::now() + after;
        match self {
            Timer::Tokio => TokioClock::new().sleep_until(deadline),
            Timer::Due => DueClock.sleep_until(deadline),
        }
    }
}

/// The service under test: its first `failures` runs fail at once; the next one succeeds.
/// Records when the first run failed and when the last one started.
struct Probe {
    runs: AtomicU64,
    failures: u64,
    first_failure: Mutex<Option<Instant>>,
    last_start: Mutex<Option<Instant>>,
}

impl Probe {
    fn new(failures: u64) -> Arc<Probe> {
        Arc::new(Probe {
            runs: AtomicU64::new(0),
            failures,
            first_failure: Mutex::new(None),
            last_start: Mutex::new(None),
        })
    }

    /// The body of one run (called from inside the run's future, when it is polled).
    fn run(&self) -> Result<(), &'static str> {
        let k = self.runs.fetch_add(1, Ordering::Relaxed);
        if k < self.failures {
            if k == 0 {
                *self.first_failure.lock().unwrap() = Some(Instant::now());
            }
            Err("connection refused")
        } else {
            if k == self.failures {
                *self.last_start.lock().unwrap() = Some(Instant::now());
            }
            Ok(())
        }
    }

    /// The time the `failures` restarts took.
    fn elapsed(&self) -> Duration {
        assert_eq!(self.runs.load(Ordering::Relaxed), self.failures + 1);
        let first = self.first_failure.lock().unwrap().expect("a first failure");
        let last = self.last_start.lock().unwrap().expect("a last run");
        last - first
    }
}

/// Ours: `service_with`, restarted on failure; the last run stops the lifecycle.
async fn ours(timer: Timer, spawner: bool, restarts: u64) -> Duration {
    let mut builder: Builder = Lifecycle::builder().grace(GRACE).restart_intensity(
        RestartIntensity::new(RestartIntensity::MAX_RESTARTS, Duration::from_millis(1))
            .expect("valid"),
    );
    builder = match (timer, spawner) {
        (Timer::Tokio, true) => builder.tokio(),
        (Timer::Due, true) => builder
            .clock(DueClock)
            .spawner(async_lifecycle::tokio::spawner()),
        (Timer::Tokio, false) => builder.clock(TokioClock::new()),
        (Timer::Due, false) => builder.clock(DueClock),
    };
    let lc = builder.build();
    let probe = Probe::new(restarts);
    let backoff = Backoff::new(TINY, TINY).expect("valid").without_jitter();
    let options = ServiceOptions::new()
        .restart(Restart::OnFailure)
        .backoff(backoff);
    let weak = lc.downgrade();
    let p = probe.clone();
    lc.service_with("flaky", options, move |_stop| {
        let probe = p.clone();
        let weak = weak.clone();
        async move {
            let result = probe.run();
            if result.is_ok() {
                weak.stop("measured");
            }
            result
        }
    })
    .expect("running");
    let report = lc.wait().await;
    assert_eq!(
        report.service("flaky").expect("reported").restarts(),
        u32::try_from(restarts).unwrap()
    );
    probe.elapsed()
}

/// The floor: spawn a run, await it, sleep the backoff after a failure.
async fn hand_written(timer: Timer, restarts: u64) -> Duration {
    let probe = Probe::new(restarts);
    loop {
        let p = probe.clone();
        match tokio::spawn(async move { p.run() }).await {
            Ok(Ok(())) => break,
            Ok(Err(_)) | Err(_) => timer.sleep(TINY).await,
        }
    }
    probe.elapsed()
}

/// tokio-graceful-shutdown's documented pattern (its example 12): a keepalive subsystem
/// restarting a nested subsystem in a loop.
async fn tokio_graceful_shutdown(timer: Timer, restarts: u64) -> Duration {
    let probe = Probe::new(restarts);
    let p = probe.clone();
    Toplevel::new(async move |root: &mut SubsystemHandle| {
        root.start(SubsystemBuilder::new(
            "keepalive",
            async move |keepalive: &mut SubsystemHandle| {
                loop {
                    let run = p.clone();
                    let nested = keepalive.start(
                        SubsystemBuilder::new("flaky", move |_: &mut SubsystemHandle| async move {
                            run.run()
                        })
                        .on_failure(ErrorAction::CatchAndLocalShutdown)
                        .on_panic(ErrorAction::CatchAndLocalShutdown),
                    );
                    if nested.join().await.is_ok() {
                        break;
                    }
                    timer.sleep(TINY).await;
                }
                keepalive.request_shutdown();
                Ok::<(), Infallible>(())
            },
        ));
    })
    .handle_shutdown_requests(GRACE)
    .await
    .expect("a clean shutdown");
    probe.elapsed()
}

fn restart_cost(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("runtime");
    for (group_name, timer) in [
        ("restart_cost", Timer::Tokio),
        ("restart_cost_no_timer", Timer::Due),
    ] {
        let mut group = c.benchmark_group(group_name);
        group.sampling_mode(SamplingMode::Flat);
        group.sample_size(20);
        group.bench_function("ours_tokio_spawner", |b| {
            b.iter_custom(|n| rt.block_on(ours(timer, true, n)))
        });
        group.bench_function("ours_wait_driven", |b| {
            b.iter_custom(|n| rt.block_on(ours(timer, false, n)))
        });
        group.bench_function("hand_written_loop", |b| {
            b.iter_custom(|n| rt.block_on(hand_written(timer, n)))
        });
        group.bench_function("tokio_graceful_shutdown_keepalive", |b| {
            b.iter_custom(|n| rt.block_on(tokio_graceful_shutdown(timer, n)))
        });
        group.finish();
    }
}

/// The process's CPU time: (user + system from `/proc/self/stat`, 10 ms ticks; the sum of
/// the live threads' run time from `/proc/self/task/*/schedstat`, ns). `None` off Linux.
fn cpu_time() -> Option<(Duration, Duration)> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name (which may hold spaces), from field 3 (the state) on:
    // utime is field 14, stime field 15, in clock ticks (USER_HZ, 100 on Linux).
    let fields: Vec<&str> = stat[stat.rfind(')')? + 1..].split_whitespace().collect();
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    let from_stat = Duration::from_millis(ticks * 10);
    let mut nanos = 0u64;
    for task in std::fs::read_dir("/proc/self/task").ok()? {
        let path = task.ok()?.path().join("schedstat");
        let text = std::fs::read_to_string(path).ok()?;
        nanos += text.split_whitespace().next()?.parse::<u64>().ok()?;
    }
    Some((from_stat, Duration::from_nanos(nanos)))
}

fn print_cpu(label: &str, before: Option<(Duration, Duration)>, wall: Duration, runs: u64) {
    let after = cpu_time();
    let wall_s = wall.as_secs_f64();
    match (before, after) {
        (Some((stat0, sched0)), Some((stat1, sched1))) => {
            let stat = (stat1 - stat0).as_secs_f64();
            let sched = (sched1 - sched0).as_secs_f64();
            println!(
                "restart_storm_cpu/{label}: wall {wall_s:.3} s, runs {runs}, CPU {sched:.6} s \
                 ({:.4} % of one core; /proc/self/stat: {stat:.2} s), {:.1} runs/s",
                100.0 * sched / wall_s,
                runs as f64 / wall_s,
            );
        }
        _ => println!(
            "restart_storm_cpu/{label}: wall {wall_s:.3} s, runs {runs}, CPU n/a (no /proc)"
        ),
    }
}

/// Ours under the default backoff, failing at once, for `secs` of real time.
fn storm_ours(rt: &tokio::runtime::Runtime, secs: Duration) {
    rt.block_on(async {
        let lc = Lifecycle::builder()
            .tokio()
            .seed(SEED)
            .restart_intensity(
                RestartIntensity::new(RestartIntensity::MAX_RESTARTS, Duration::from_secs(1))
                    .expect("valid"),
            )
            .build();
        let runs = Arc::new(AtomicU64::new(0));
        let counted = runs.clone();
        let options = ServiceOptions::new()
            .restart(Restart::OnFailure)
            .backoff(Backoff::DEFAULT);
        let before = cpu_time();
        let started = Instant::now();
        lc.service_with("storm", options, move |_stop| {
            let runs = counted.clone();
            async move {
                runs.fetch_add(1, Ordering::Relaxed);
                Err::<(), _>("connection refused")
            }
        })
        .expect("running");
        lc.stop_on(async move {
            tokio::time::sleep(secs).await;
            "storm over"
        });
        let report = lc.wait().await;
        let wall = started.elapsed();
        let runs = runs.load(Ordering::Relaxed);
        assert_eq!(
            report.service("storm").expect("reported").attempts(),
            u32::try_from(runs).unwrap()
        );
        print_cpu("ours_default_backoff", before, wall, runs);
    });
}

/// A naive supervisor with no backoff: spawn the failing run and await it, in a loop.
fn storm_naive(rt: &tokio::runtime::Runtime, secs: Duration) {
    rt.block_on(async {
        let before = cpu_time();
        let started = Instant::now();
        let deadline = started + secs;
        let mut runs = 0u64;
        loop {
            let run = tokio::spawn(async { Err::<(), _>("connection refused") });
            let _ = std::hint::black_box(run.await);
            runs += 1;
            if runs % 256 == 0 && Instant::now() >= deadline {
                break;
            }
        }
        print_cpu("naive_no_backoff", before, started.elapsed(), runs);
    });
}

/// Whether the criterion arguments select the storm: no filter, or one it contains.
fn storm_selected(args: &[String]) -> bool {
    // Criterion options that take a value: that value is not a filter.
    const WITH_VALUE: &[&str] = &[
        "--save-baseline",
        "--baseline",
        "--baseline-lenient",
        "--load-baseline",
        "--sample-size",
        "--warm-up-time",
        "--measurement-time",
        "--nresamples",
        "--noise-threshold",
        "--confidence-level",
        "--significance-level",
        "--plotting-backend",
        "--output-format",
        "--color",
        "--format",
        "--profile-time",
    ];
    if args.iter().any(|a| a == "--list") {
        return false;
    }
    let mut filters = Vec::new();
    let mut skip = false;
    for arg in args {
        if skip {
            skip = false;
        } else if arg.starts_with('-') {
            skip = WITH_VALUE.contains(&arg.as_str());
        } else {
            filters.push(arg.as_str());
        }
    }
    filters.is_empty() || filters.iter().any(|f| "restart_storm_cpu".contains(f))
}

fn main() {
    let mut c = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3))
        .configure_from_args();
    restart_cost(&mut c);
    c.final_summary();

    let args: Vec<String> = std::env::args().skip(1).collect();
    if !storm_selected(&args) {
        return;
    }
    let benching = args.iter().any(|a| a == "--bench");
    let storm = match std::env::var("RESTART_STORM_SECS") {
        Ok(s) => s.parse::<f64>().expect("RESTART_STORM_SECS: seconds"),
        Err(_) if benching => 10.0,
        Err(_) => 0.2,
    };
    if storm <= 0.0 {
        return;
    }
    let naive = storm.min(1.0);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("runtime");
    storm_ours(&rt, Duration::from_secs_f64(storm));
    storm_naive(&rt, Duration::from_secs_f64(naive));
}
