//! Stop fan-out: the time from the stop call until all N waiters have been woken and have run,
//! for N = 1,000 and 100,000, on a tokio current-thread runtime, a tokio multi-thread runtime
//! with 2 workers, and a single-threaded smol executor.
//!
//! Each iteration spawns N tasks, each awaiting one waiter future, and waits (untimed) until
//! every one of them has been polled once and is parked. The clock then starts, the stop is
//! fired, and it stops when the last task has finished (it sends on a oneshot the driver
//! awaits). Spawning and parking are not timed.
//!
//! Contenders: ours (`Lifecycle::stop_signal` / `Lifecycle::stop`), tokio-util
//! `CancellationToken` (`cancelled_owned` / `cancel`), async-shutdown
//! (`wait_shutdown_triggered` / `trigger_shutdown`), swansong (`shutting_down` / `shut_down`)
//! and drain (`Watch::signaled` / the first poll of `Signal::drain`).

use std::future::{Future, poll_fn};
use std::pin::{Pin, pin};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::Context;
use std::time::{Duration, Instant};

use async_lifecycle::Lifecycle;
use async_shutdown::ShutdownManager;
use criterion::measurement::WallTime;
use criterion::{BenchmarkGroup, BenchmarkId, Criterion, SamplingMode};
use futures::channel::oneshot;
use futures::task::noop_waker_ref;
use swansong::Swansong;
use tokio_util::sync::CancellationToken;

type BoxFuture = Pin<Box<dyn Future<Output = ()> + Send>>;

/// A stop broadcast: many waiters, one fire.
trait FanOut: Send + Sync + 'static {
    const NAME: &'static str;
    fn new() -> Self;
    fn waiter(&self) -> impl Future<Output = ()> + Send + 'static;
    fn fire(&self);
}

struct Ours(Lifecycle);

impl FanOut for Ours {
    const NAME: &'static str = "ours";
    fn new() -> Self {
        Ours(Lifecycle::new())
    }
    fn waiter(&self) -> impl Future<Output = ()> + Send + 'static {
        self.0.stop_signal()
    }
    fn fire(&self) {
        self.0.stop("bench");
    }
}

struct Cancellation(CancellationToken);

impl FanOut for Cancellation {
    const NAME: &'static str = "tokio_util_cancellation_token";
    fn new() -> Self {
        Cancellation(CancellationToken::new())
    }
    fn waiter(&self) -> impl Future<Output = ()> + Send + 'static {
        self.0.clone().cancelled_owned()
    }
    fn fire(&self) {
        self.0.cancel();
    }
}

struct AsyncShutdown(ShutdownManager<()>);

impl FanOut for AsyncShutdown {
    const NAME: &'static str = "async_shutdown";
    fn new() -> Self {
        AsyncShutdown(ShutdownManager::new())
    }
    fn waiter(&self) -> impl Future<Output = ()> + Send + 'static {
        self.0.wait_shutdown_triggered()
    }
    fn fire(&self) {
        self.0.trigger_shutdown(()).expect("first trigger");
    }
}

struct SwanSong(Swansong);

impl FanOut for SwanSong {
    const NAME: &'static str = "swansong";
    fn new() -> Self {
        SwanSong(Swansong::new())
    }
    fn waiter(&self) -> impl Future<Output = ()> + Send + 'static {
        self.0.shutting_down()
    }
    fn fire(&self) {
        drop(self.0.shut_down());
    }
}

struct Drain {
    signal: Mutex<Option<drain::Signal>>,
    watch: drain::Watch,
}

impl FanOut for Drain {
    const NAME: &'static str = "drain";
    fn new() -> Self {
        let (signal, watch) = drain::channel();
        Drain {
            signal: Mutex::new(Some(signal)),
            watch,
        }
    }
    fn waiter(&self) -> impl Future<Output = ()> + Send + 'static {
        let signaled = self.watch.clone().signaled();
        async move {
            drop(signaled.await);
        }
    }
    fn fire(&self) {
        let signal = self.signal.lock().unwrap().take().expect("fired once");
        // Signal::drain signals on its first poll, then waits for the watchers to release,
        // which is not what this benchmark measures.
        let mut drain = pin!(signal.drain());
        let _ = drain
            .as_mut()
            .poll(&mut Context::from_waker(noop_waker_ref()));
    }
}

/// Sends once `n` ticks have happened.
struct Countdown {
    left: AtomicUsize,
    done: Mutex<Option<oneshot::Sender<()>>>,
}

impl Countdown {
    fn new(n: usize) -> (Arc<Self>, oneshot::Receiver<()>) {
        let (tx, rx) = oneshot::channel();
        let count = Countdown {
            left: AtomicUsize::new(n),
            done: Mutex::new(Some(tx)),
        };
        (Arc::new(count), rx)
    }

    fn tick(&self) {
        // AcqRel: the last ticker sees every other ticker's work.
        if self.left.fetch_sub(1, Ordering::AcqRel) == 1 {
            let tx = self.done.lock().unwrap().take().expect("sent once");
            let _ = tx.send(());
        }
    }
}

/// One measured iteration: spawn `n` waiters, wait until all are parked, then time the fire
/// until the last waiter has run.
async fn fan_out<C: FanOut>(n: usize, spawn: impl Fn(BoxFuture)) -> Duration {
    let broadcast = C::new();
    let (parked, all_parked) = Countdown::new(n);
    let (finished, all_finished) = Countdown::new(n);
    for _ in 0..n {
        let waiter = broadcast.waiter();
        let parked = parked.clone();
        let finished = finished.clone();
        spawn(Box::pin(async move {
            // The waiter lives inline in the task, as in a caller's code (no box of its own).
            let mut waiter = pin!(waiter);
            let mut counted = false;
            poll_fn(|cx| {
                let poll = waiter.as_mut().poll(cx);
                // Counted parked the first time it is pending: its waker is registered.
                if poll.is_pending() && !counted {
                    counted = true;
                    parked.tick();
                }
                poll
            })
            .await;
            finished.tick();
        }));
    }
    all_parked.await.expect("every waiter parks");
    let start = Instant::now();
    broadcast.fire();
    all_finished.await.expect("every waiter finishes");
    start.elapsed()
}

/// The executors, each able to run one iteration.
enum Runtime {
    TokioCurrentThread(tokio::runtime::Runtime),
    TokioMultiThread2(tokio::runtime::Runtime),
    Smol(smol::Executor<'static>),
}

impl Runtime {
    fn all() -> Vec<Runtime> {
        vec![
            Runtime::TokioCurrentThread(
                tokio::runtime::Builder::new_current_thread()
                    .build()
                    .expect("runtime"),
            ),
            Runtime::TokioMultiThread2(
                tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .build()
                    .expect("runtime"),
            ),
            Runtime::Smol(smol::Executor::new()),
        ]
    }

    fn name(&self) -> &'static str {
        match self {
            Runtime::TokioCurrentThread(_) => "tokio_current_thread",
            Runtime::TokioMultiThread2(_) => "tokio_multi_thread_2",
            Runtime::Smol(_) => "smol",
        }
    }

    fn iteration<C: FanOut>(&self, n: usize) -> Duration {
        match self {
            Runtime::TokioCurrentThread(rt) | Runtime::TokioMultiThread2(rt) => {
                rt.block_on(fan_out::<C>(n, |task| drop(tokio::spawn(task))))
            }
            Runtime::Smol(ex) => {
                smol::block_on(ex.run(fan_out::<C>(n, |task| ex.spawn(task).detach())))
            }
        }
    }
}

fn contender<C: FanOut>(group: &mut BenchmarkGroup<'_, WallTime>, runtime: &Runtime, n: usize) {
    // Setup (spawning N tasks) dominates the wall time; few, equal samples keep the run short.
    group.sample_size(if n >= 100_000 { 10 } else { 20 });
    group.bench_with_input(BenchmarkId::new(C::NAME, n), &n, |b, &n| {
        b.iter_custom(|iters| (0..iters).map(|_| runtime.iteration::<C>(n)).sum());
    });
}

fn main() {
    let mut c = Criterion::default()
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(1))
        .configure_from_args();
    for runtime in Runtime::all() {
        let mut group = c.benchmark_group(format!("fanout_{}", runtime.name()));
        group.sampling_mode(SamplingMode::Flat);
        for n in [1_000, 100_000] {
            contender::<Ours>(&mut group, &runtime, n);
            contender::<Cancellation>(&mut group, &runtime, n);
            contender::<AsyncShutdown>(&mut group, &runtime, n);
            contender::<SwanSong>(&mut group, &runtime, n);
            contender::<Drain>(&mut group, &runtime, n);
        }
        group.finish();
    }
    c.final_summary();
}
