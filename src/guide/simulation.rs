//! Testing your own shutdown under the simulator: what it explores, what it guarantees, and
//! how it compares with tokio's paused time, turmoil, shuttle, loom and madsim.
//!
//! This module has no items; it is documentation only. The simulator itself is
//! [`crate::sim`] (feature `sim`).
//!
//! - [The question it answers](#the-question-it-answers)
//! - [A test, step by step](#a-test-step-by-step)
//! - [What PCT promises](#what-pct-promises)
//! - [Compared with the other tools](#compared-with-the-other-tools)
//! - [Driving it from proptest and cargo-fuzz](#driving-it-from-proptest-and-cargo-fuzz)
//! - [What it cannot see](#what-it-cannot-see)
//!
//! # The question it answers
//!
//! *Does my queue worker lose a job if SIGTERM lands between taking it off the queue and
//! beginning its session?* A test on tokio answers for the one interleaving tokio happened
//! to pick, and with real time it waits for the grace. The simulator runs the scenario on
//! a seeded single-thread executor where every service, stop trigger, session task and
//! task you spawn is one schedulable task; at every step a scheduler picks which ready task
//! runs. Time is simulated and jumps to the next deadline when nothing can run, so a 30 s
//! grace costs microseconds. The signal is a task too: [`Fault::Signal`] fires at a step
//! the scheduler picks, so *when* it lands is explored like any other interleaving.
//!
//! # A test, step by step
//!
//! The scenario is an `async fn(Env) -> sim::Outcome`: build the lifecycle with
//! [`Env::lifecycle`], add services and sessions as in production, queue the faults, await
//! `wait()`, then check what must hold and return an error if it does not.
//!
//! ```
//! use std::sync::{Arc, Mutex};
//! use std::time::Duration;
//! use async_lifecycle::sim::{self, Config, Env, Fault};
//! use futures::future::{Either, select};
//!
//! /// A worker that begins the job's session *before* taking the job: the stop can no
//! /// longer land between the two.
//! async fn scenario(env: Env) -> sim::Outcome {
//!     let lc = env.lifecycle(|b| b.grace(Duration::from_secs(5)));
//!     let (tx, rx) = async_channel::unbounded::<u32>();
//!     let done = Arc::new(Mutex::new(Vec::new()));
//!     let (sessions, finished, queue) = (lc.downgrade(), done.clone(), rx.clone());
//!     lc.service("worker", move |mut stop| async move {
//!         loop {
//!             // Admitted first; refused once draining, and then the job stays queued.
//!             let Ok(session) = sessions.session("job") else { break };
//!             match select(std::pin::pin!(queue.recv()), &mut stop).await {
//!                 Either::Left((Ok(job), _)) => finished.lock().unwrap().push(job),
//!                 _ => break,
//!             }
//!             drop(session);
//!         }
//!     })?;
//!     for job in 0..3 {
//!         tx.send(job).await?;
//!     }
//!     env.fault(Fault::Signal); // SIGTERM, at a step the scheduler picks
//!     let report = lc.wait().await;
//!     // Nothing taken and lost: every job is done, or still queued for the next process.
//!     let done = done.lock().unwrap().len();
//!     if done + rx.len() != 3 {
//!         return Err(format!("{done} done, {} queued, of 3", rx.len()).into());
//!     }
//!     if report.exit_code() != 0 {
//!         return Err(report.to_string().into());
//!     }
//!     Ok(())
//! }
//!
//! // 1,000 schedules (random, PCT 1, PCT 2, PCT 3 in turn), from a fixed seed: CI
//! // explores the same ones every time. A failure prints `replay: v1-…` and `trace: …`.
//! let stats = Config::new().search(scenario).unwrap_or_else(|f| panic!("{f}"));
//! assert_eq!(stats.runs(), 1000);
//! ```
//!
//! When a search fails, the [`Failure`] prints what went wrong (the check's message, a
//! panic, or a deadlock with the names and ages of what was still live), then one
//! `replay: TOKEN` line and one `trace: HASH` line. [`replay`](crate::sim::replay) with
//! that token — or the same test run again with `ASYNC_LIFECYCLE_SIM_REPLAY=TOKEN` in its
//! environment ([`REPLAY_ENV`](crate::sim::REPLAY_ENV)) — runs exactly that schedule again and
//! prints the same trace hash, so a failure seen once in CI is a failure you can debug.
//! `ASYNC_LIFECYCLE_SIM_SEED` ([`SEED_ENV`](crate::sim::SEED_ENV)) explores other schedules
//! than the default seed's, for a longer search on a quiet machine.
//!
//! `examples/sim_race.rs` is the whole workflow as a program: `cargo run --example sim_race`
//! finds a planted race and prints its token, `-- --replay TOKEN` replays it, `-- --fixed`
//! runs 10,000 schedules of the corrected worker.
//!
//! # What PCT promises
//!
//! Random scheduling is good at shallow bugs and at variety, but a race that needs two
//! particular things to happen in a particular order, among hundreds of steps, can take it
//! a very long time. PCT — probabilistic concurrency testing (Burckhardt, Kothari, Musuvathi
//! and Nagarakatte, ASPLOS 2010) — gives each task a random priority, always runs the
//! highest-priority ready task, and at `d − 1` random steps demotes the running task below
//! all others. Its guarantee, in plain words:
//!
//! > A bug that shows whenever `d` particular ordering constraints hold (its *depth*) is
//! > found by **each run** with probability at least **1 / (n · k^(d−1))**, where `n` is the
//! > number of tasks and `k` the number of steps in a run.
//!
//! - Depth 1 ("the stop lands before the worker looks at its signal"): at least `1/n` per
//!   run of PCT 1. With 5 tasks, 1 in 5; 1,000 such runs miss it with probability below
//!   10⁻⁹⁶.
//! - Depth 2 ("the job is taken, *then* the stop lands, *then* the session is begun"): at
//!   least `1/(n·k)` per run of PCT 2. With 5 tasks and 50 steps, 1 in 250; 1,000 such runs
//!   miss it with probability below 2 % ((1 − 1/250)¹⁰⁰⁰ ≈ e⁻⁴), 10,000 below 10⁻¹⁷.
//! - Depth 3: at least `1/(n·k²)` per run of PCT 3: 1 in 12,500 for the same scenario.
//!   Deep races need long searches; keep scenarios small (few tasks, few steps) and the
//!   bound improves quickly.
//!
//! One exception, as in shuttle: a task that runs 1,000 steps in a row, yielding at each
//! with no other task run in between (a spin on a flag), is put below every other task
//! until one other task has run a step, then gets its priority back. Without it, a spinning
//! task that outranks the one that would set its flag livelocks the run by PCT's own doing.
//! The bound covers the schedules in which no task runs 1,000 yielding steps in a row; a
//! longer streak hands one step to the highest-priority other ready task every 1,000 steps.
//!
//! The bound is a floor, not an estimate: most races are found far sooner. The default
//! [`Scheduler::Portfolio`](crate::sim::Scheduler::Portfolio) takes random, PCT 1, PCT 2 and PCT
//! 3 in turn, so each bound holds for a quarter of a search's runs (a 1,000-run search
//! makes 250 runs of each: divide the exponents above by four, or pin
//! [`Config::scheduler`](crate::sim::Config::scheduler) to the depth you fear), and PCT's
//! `k` is learned from the longest run so far.
//!
//! # Compared with the other tools
//!
//! | | explores interleavings | time | faults | your code unchanged | executor |
//! |---|---|---|---|---|---|
//! | tokio's paused time (`start_paused`) | no: one order per run, tokio's | auto-advances when idle | by hand | yes, on tokio | tokio only |
//! | turmoil | seeded, one order per seed | simulated | network: partitions, latency | yes, on tokio (its net types) | tokio only |
//! | shuttle | random and PCT | none: no model of time | by hand | no: its `sync`/`thread` types | its own |
//! | loom | exhaustively, bounded | none | by hand | no: its atomics and `sync` types | its own (`block_on`) |
//! | madsim | seeded, one order per seed | simulated, libc intercepted | network, node kills | mostly: a `cfg(madsim)` build swaps tokio | tokio API, swapped |
//! | **`async_lifecycle::sim`** | **random and PCT, replayable** | **simulated, jumps to the next deadline** | **stop, second signal, force, service panic, clock jump — timed by the scheduler** | **yes: any executor-agnostic code on this crate's API** | **any: it is a spawner and a clock** |
//!
//! - **tokio's paused time** makes sleeps instant but not orderings variable: the race
//!   above passes a thousand times because tokio polls the same way each time.
//! - **turmoil** simulates networks of hosts and is the tool for partitions and message
//!   loss; it drives tokio, and one seed is one interleaving, not a scheduler's search.
//! - **shuttle** has the right search (random, PCT) but no time: a grace, a deadline or a
//!   backoff cannot be expressed, and code must use its primitives.
//! - **loom** is exhaustive for small models of atomics and locks — this crate's own
//!   gate is checked with it — but has no time and no executor beyond its `block_on`.
//! - **madsim** simulates a whole program, tokio included, behind a `cfg`; powerful, but the
//!   build is a different build, and scheduling is explored by seed rather than by PCT.
//!
//! This simulator aims at the layer between: the lifecycle of *your* services and
//! sessions, with time, signals and faults, on unchanged code. It is not a network
//! simulator and does not see OS threads: use turmoil for the network and loom for your
//! own atomics.
//!
//! # Driving it from proptest and cargo-fuzz
//!
//! A run's choices can come from raw bytes or a list of numbers instead of a seed
//! ([`Choices`]), so a fuzzer or proptest drives the schedule and shrinks a failure:
//!
//! ```
//! use std::time::Duration;
//! use async_lifecycle::sim::{self, Choices, Config, Env, Fault, Token};
//!
//! async fn scenario(env: Env) -> sim::Outcome {
//!     let lc = env.lifecycle(|b| b.grace(Duration::from_secs(1)));
//!     lc.service("api", |stop| stop)?;
//!     env.fault(Fault::Signal);
//!     let report = lc.wait().await;
//!     if report.exit_code() != 0 {
//!         return Err(report.to_string().into());
//!     }
//!     Ok(())
//! }
//!
//! // What a fuzz target does with its input (`fuzz_target!(|data: &[u8]| ...)`):
//! let data: &[u8] = &[3, 1, 4, 1, 5, 9, 2, 6];
//! let token = Token::pct(2, 64, Choices::bytes(data));
//! Config::new().run(&token, scenario).unwrap_or_else(|f| panic!("{f}"));
//!
//! // What a proptest does with a generated `Vec<u32>` (shrinking it toward zeros):
//! let token = Token::random(Choices::list(vec![0, 7, 2, 9]));
//! Config::new().run(&token, scenario).unwrap_or_else(|f| panic!("{f}"));
//! ```
//!
//! The crate's own fuzz target `fuzz/fuzz_targets/sim.rs` and the proptest in
//! `tests/sim_scenarios.rs` do exactly this, on the scenarios of its examples.
//!
//! # What it cannot see
//!
//! Anything outside the simulation would make a run unrepeatable, so reaching it fails the
//! run with [`FailureKind::OutOfReach`](crate::sim::FailureKind::OutOfReach) rather than
//! silently differ: the system clock through [`SystemClock`](crate::SystemClock), this crate's
//! tokio and async-io clocks and spawners, tokio timers, sockets and spawns, an `Env` kept
//! from an earlier run, and any wake from another thread (a real timer, a real socket,
//! another executor). Use the lifecycle's clock ([`Lifecycle::clock`](crate::Lifecycle::clock))
//! or [`Env::sleep`] for time, and [`Env::spawn`] for tasks.
//!
//! A real timer or another executor usually wakes its task after the run has nothing left
//! to run; a run that looks deadlocked therefore waits up to
//! [`FOREIGN_WAKE_WAIT`](crate::sim::FOREIGN_WAKE_WAIT) (150 ms, only on a failing run) for
//! such a wake, and reports one as out of reach. Something that wakes nothing within it (a
//! socket no one connects to, a timer set further out) reads as a deadlock, whose message
//! lists these causes.
//!
//! Blocking calls cannot be seen either. `std::thread::sleep` or blocking I/O only make a
//! run slower; a blocking wait on something only the simulator can complete —
//! `futures::executor::block_on(lc.wait())` inside a service, say — never returns, and the
//! search hangs. Search from a plain `#[test]`, not a `#[tokio::test]`: with the `tokio`
//! feature a search inside a tokio runtime is refused, as tokio's spawns and timers would
//! go to that runtime.
//!
//! A `HashMap`'s random iteration order, the system clock read directly, or a global that
//! one run changes for the next make runs differ. The determinism check runs one token
//! twice, back to back — each search's first run and every failing one — and compares the
//! traces, which cover the schedule, the clock, the faults, the lifecycles' events and the
//! failure's whole report: a difference is reported as
//! [`FailureKind::Nondeterministic`](crate::sim::FailureKind::Nondeterministic). It sees only
//! what differs between those two runs. A global that changes a later run's outcome and its
//! re-run's alike (a counter of runs) goes unseen, and a replay of that failure made later
//! may pass: keep what a scenario depends on inside it.
//!
//! [`Fault::Signal`]: crate::sim::Fault::Signal
//! [`Env::lifecycle`]: crate::sim::Env::lifecycle
//! [`Env::sleep`]: crate::sim::Env::sleep
//! [`Env::spawn`]: crate::sim::Env::spawn
//! [`Failure`]: crate::sim::Failure
//! [`Choices`]: crate::sim::Choices
