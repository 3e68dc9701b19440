//! Ordered stop: 1,000 services with dependencies, stop requested → final report, dependents
//! stopped before what they depend on — ours against tokio-graceful-shutdown's nested
//! subsystems, the way its users express "stop this before that".
//!
//! # The shapes (the same 1,000 services in both)
//!
//! - `chain`: service `i` depends on service `i − 1` (1,000 deep). Every stop waits for the
//!   one before it: 1,000 steps, one after the other — the worst case for an ordered stop.
//! - `tree`: a binary tree in heap order, service `i` depends on service `(i − 1) / 2`
//!   (10 levels: 1, 2, 4, … 256, then 489 leaves). Each level stops once the one below it has.
//! - `flat`: no dependencies (reference: the unordered stop of the same 1,000 services).
//! - `layers` (ours only): 10 layers of 100, each service depending on all 100 services of
//!   the layer before (9 × 100 × 100 = 90,000 edges). tokio-graceful-shutdown cannot express
//!   it — a subsystem has one parent — so there is no peer in this group.
//!
//! Ours: `Lifecycle::builder().tokio()` (tokio's clock and spawner), each service added with
//! `service_with` and `ServiceOptions::new().after([its dependency])`, in dependency order.
//! tokio-graceful-shutdown 0.20: a subsystem starts its dependents as its nested subsystems
//! (a dependency is the parent of its dependents: tokio-graceful-shutdown stops children
//! before parents), via `IntoSubsystem`; on the stop each waits for its shutdown request,
//! then `wait_for_children()` (its example `19_sequential_shutdown.rs`), then ends — so a
//! subsystem's stop work happens once its dependents ended, as ours does. The stop comes
//! from outside, through `Toplevel::new_with_shutdown_token` (its example 23).
//!
//! # What is timed
//!
//! Each iteration (`iter_custom`) builds everything from nothing on the runtime and waits
//! until all 1,000 services have been polled once (a counter the services bump; not timed).
//! Then the clock starts, the stop is requested (`lc.stop`, or the token's `cancel`), and the
//! clock stops when the final result is in hand: our `Report`, or
//! `handle_shutdown_requests`'s result. Each service just awaits its stop signal and returns
//! `Ok`. Both have a 30 s grace / shutdown timeout that is never reached.
//!
//! Before the timed runs each contender is run once recording the order in which the
//! services saw their stop: the bench asserts that every service stopped before its
//! dependency (so a broken order fails the bench), that the report is clean (exit code 0,
//! `Terminated`, every service `Stopped`), and tokio-graceful-shutdown's result is `Ok`.
//!
//! Runtimes: tokio current-thread, and tokio multi-thread with 2 workers, as
//! `benches/lifecycle.rs`.

use std::convert::Infallible;
use std::pin::pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use async_lifecycle::tokio::BuilderExt;
use async_lifecycle::{Lifecycle, ServiceOptions, ServiceOutcome, State};
use criterion::{Criterion, SamplingMode};
use tokio::sync::Notify;
use tokio_graceful_shutdown::{IntoSubsystem, SubsystemBuilder, SubsystemHandle, Toplevel};
use tokio_util::sync::CancellationToken;

const N: usize = 1_000;
const LAYERS: usize = 10;
const WIDTH: usize = N / LAYERS;
const GRACE: Duration = Duration::from_secs(30);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shape {
    Chain,
    Tree,
    Flat,
    Layers,
}

impl Shape {
    fn name(self) -> &'static str {
        match self {
            Shape::Chain => "chain",
            Shape::Tree => "tree",
            Shape::Flat => "flat",
            Shape::Layers => "layers",
        }
    }

    /// The services `i` depends on (all added before `i`).
    fn dependencies(self, i: usize) -> Vec<usize> {
        match self {
            Shape::Chain if i > 0 => vec![i - 1],
            Shape::Tree if i > 0 => vec![(i - 1) / 2],
            Shape::Layers if i >= WIDTH => {
                let layer = i / WIDTH;
                ((layer - 1) * WIDTH..layer * WIDTH).collect()
            }
            _ => Vec::new(),
        }
    }

    /// The services that depend on `i`: its nested subsystems in tokio-graceful-shutdown
    /// (only for the shapes where each service has at most one dependency).
    fn dependents(self, i: usize) -> Vec<usize> {
        match self {
            Shape::Chain => (i + 1..N).take(1).collect(),
            Shape::Tree => [2 * i + 1, 2 * i + 2]
                .into_iter()
                .filter(|&c| c < N)
                .collect(),
            Shape::Flat => Vec::new(),
            Shape::Layers => unreachable!("a subsystem has one parent"),
        }
    }

    /// The services started by tokio-graceful-shutdown's root: those with no dependency.
    fn roots(self) -> Vec<usize> {
        (0..N)
            .filter(|&i| self.dependencies(i).is_empty())
            .collect()
    }
}

/// Service names are unique within a lifecycle: static names, made once, so no allocation
/// is measured (tokio-graceful-shutdown gets the same names).
fn names() -> &'static [&'static str] {
    static NAMES: OnceLock<Vec<&'static str>> = OnceLock::new();
    NAMES.get_or_init(|| {
        (0..N)
            .map(|i| &*Box::leak(format!("service {i}").into_boxed_str()))
            .collect()
    })
}

/// Shared by the services of one iteration: how many started (so the stop comes once all
/// are up), and, in the checked run, the order in which they saw their stop.
struct Probe {
    started: AtomicUsize,
    all_started: Notify,
    order: Option<Mutex<Vec<usize>>>,
}

impl Probe {
    fn new(record: bool) -> Arc<Probe> {
        Arc::new(Probe {
            started: AtomicUsize::new(0),
            all_started: Notify::new(),
            order: record.then(|| Mutex::new(Vec::with_capacity(N))),
        })
    }

    fn started(&self) {
        if self.started.fetch_add(1, Ordering::Relaxed) + 1 == N {
            self.all_started.notify_one();
        }
    }

    async fn all_started(&self) {
        if self.started.load(Ordering::Relaxed) < N {
            self.all_started.notified().await;
        }
    }

    fn stopping(&self, i: usize) {
        if let Some(order) = &self.order {
            order.lock().unwrap().push(i);
        }
    }

    /// Asserts that all services stopped, each before every service it depends on.
    fn check_order(&self, shape: Shape) {
        let order = self.order.as_ref().expect("recorded").lock().unwrap();
        assert_eq!(
            order.len(),
            N,
            "{}: every service stopped once",
            shape.name()
        );
        let mut position = vec![usize::MAX; N];
        for (at, &i) in order.iter().enumerate() {
            assert_eq!(position[i], usize::MAX, "service {i} stopped twice");
            position[i] = at;
        }
        for i in 0..N {
            for d in shape.dependencies(i) {
                assert!(
                    position[i] < position[d],
                    "{}: service {i} stopped after its dependency {d}",
                    shape.name()
                );
            }
        }
    }
}

/// Ours: one lifecycle, dependencies with `after`.
async fn ours(shape: Shape, record: bool) -> Duration {
    let names = names();
    let lc = Lifecycle::builder().grace(GRACE).tokio().build();
    let probe = Probe::new(record);
    for (i, &name) in names.iter().enumerate() {
        let options =
            ServiceOptions::new().after(shape.dependencies(i).into_iter().map(|d| names[d]));
        let probe = probe.clone();
        lc.service_with(name, options, move |stop| {
            let probe = probe.clone();
            async move {
                probe.started();
                stop.await;
                probe.stopping(i);
                Ok::<(), Infallible>(())
            }
        })
        .expect("running");
    }
    probe.all_started().await;
    let started = Instant::now();
    lc.stop("bench");
    let report = lc.wait().await;
    let elapsed = started.elapsed();
    if record {
        assert_eq!(report.exit_code(), 0, "{report}");
        assert_eq!(report.state(), State::Terminated);
        assert_eq!(report.services().len(), N);
        assert!(
            report
                .services()
                .iter()
                .all(|s| *s.outcome() == ServiceOutcome::Stopped),
            "{report}"
        );
        probe.check_order(shape);
    }
    elapsed
}

/// A tokio-graceful-shutdown subsystem: starts its dependents as nested subsystems, and on
/// the stop ends once they have.
struct Node {
    shape: Shape,
    index: usize,
    probe: Arc<Probe>,
}

impl Node {
    fn new(shape: Shape, index: usize, probe: &Arc<Probe>) -> Node {
        Node {
            shape,
            index,
            probe: probe.clone(),
        }
    }
}

impl IntoSubsystem<Infallible> for Node {
    async fn run(self, subsys: &mut SubsystemHandle) -> Result<(), Infallible> {
        for child in self.shape.dependents(self.index) {
            subsys.start(SubsystemBuilder::new(
                names()[child],
                Node::new(self.shape, child, &self.probe).into_subsystem(),
            ));
        }
        self.probe.started();
        subsys.on_shutdown_requested().await;
        subsys.wait_for_children().await;
        self.probe.stopping(self.index);
        Ok(())
    }
}

/// tokio-graceful-shutdown: dependents as nested subsystems of their dependency.
async fn tokio_graceful_shutdown(shape: Shape, record: bool) -> Duration {
    let probe = Probe::new(record);
    let token = CancellationToken::new();
    let p = probe.clone();
    let toplevel = Toplevel::new_with_shutdown_token(
        async move |root: &mut SubsystemHandle| {
            for i in shape.roots() {
                root.start(SubsystemBuilder::new(
                    names()[i],
                    Node::new(shape, i, &p).into_subsystem(),
                ));
            }
        },
        token.clone(),
    )
    .handle_shutdown_requests(GRACE);
    let mut toplevel = pin!(toplevel);
    tokio::select! {
        biased;
        () = probe.all_started() => {}
        result = &mut toplevel => panic!("ended before the stop: {result:?}"),
    }
    let started = Instant::now();
    token.cancel();
    let result = toplevel.await;
    let elapsed = started.elapsed();
    if record {
        result.expect("a clean shutdown");
        probe.check_order(shape);
    }
    elapsed
}

type Contender = fn(Shape, bool) -> std::pin::Pin<Box<dyn Future<Output = Duration>>>;

fn ordered_stop(c: &mut Criterion) {
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
    let contenders: [(&str, Contender); 2] = [
        ("ours", |shape, record| Box::pin(ours(shape, record))),
        ("tokio_graceful_shutdown", |shape, record| {
            Box::pin(tokio_graceful_shutdown(shape, record))
        }),
    ];
    for (rt_name, rt) in &runtimes {
        for shape in [Shape::Chain, Shape::Tree, Shape::Flat, Shape::Layers] {
            let mut group = c.benchmark_group(format!("ordered_stop_{}_{rt_name}", shape.name()));
            group.sampling_mode(SamplingMode::Flat);
            group.sample_size(10);
            for (name, contender) in &contenders {
                if shape == Shape::Layers && *name != "ours" {
                    continue;
                }
                let mut checked = false;
                group.bench_function(*name, |b| {
                    if !std::mem::replace(&mut checked, true) {
                        // Once, before anything is timed: the order and the result (a broken
                        // order panics here).
                        rt.block_on(contender(shape, true));
                    }
                    b.iter_custom(|iters| {
                        (0..iters)
                            .map(|_| rt.block_on(contender(shape, false)))
                            .sum()
                    })
                });
            }
            group.finish();
        }
    }
}

fn main() {
    let mut c = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3))
        .configure_from_args();
    ordered_stop(&mut c);
    c.final_summary();
}
