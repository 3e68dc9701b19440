//! Graceful shutdown for the concurrent work inside one long-running program, on any async
//! executor.
//!
//! A program runs **services** — long-lived futures such as an accept loop or a queue
//! consumer — and **sessions** — units of work that come and go, such as one connection or
//! one job. When the program is told to stop, a [`Lifecycle`]:
//!
//! 1. stops admitting work: new sessions and services are [`Refused`], never dropped;
//! 2. fires every service's [`StopSignal`] (and each session's [`Session::stop_signal`]);
//! 3. waits for what is in flight, up to a grace deadline measured on a pluggable
//!    [`Clock`];
//! 4. abandons the stragglers at the deadline and names them;
//! 5. complains loudly (through `tracing`) about every service that ended uncleanly —
//!    error, panic, early return — and catches every panic with its payload;
//! 6. returns a [`Report`] whose [`exit_code`](Report::exit_code) tells an orchestrator
//!    what happened.
//!
//! The states are `Running → Draining → Terminated | Abandoned`; the transitions live in a
//! pure, clock-free [`machine`], which the async shell feeds. Time comes from a [`Clock`]: a
//! [`ManualClock`] makes every deadline deterministic in tests.
//!
//! # Example
//!
//! ```
//! use std::time::Duration;
//! use async_lifecycle::{Lifecycle, ManualClock, ServiceOutcome, State};
//! use futures::executor::LocalPool;
//! use futures::task::LocalSpawnExt;
//!
//! let clock = ManualClock::new();
//! let lc = Lifecycle::builder()
//!     .grace(Duration::from_secs(10))
//!     .clock(clock.clone())
//!     .build();
//!
//! // A service that honours its stop signal, and one that ignores it.
//! lc.service("worker", |stop| async move {
//!     stop.await;
//!     Ok::<(), std::io::Error>(())
//! })?;
//! lc.service("producer", |_stop| futures::future::pending::<()>())?;
//! // A session in flight that never ends on its own.
//! let conn = lc.session("conn 10.0.0.7:5123")?;
//!
//! let mut pool = LocalPool::new();
//! let wait = pool.spawner().spawn_local_with_handle(lc.wait()).unwrap();
//! pool.run_until_stalled();
//!
//! lc.stop("deploy");
//! pool.run_until_stalled();
//! assert_eq!(lc.state(), State::Draining);
//!
//! clock.advance(Duration::from_secs(10)); // the grace period runs out
//! let report = pool.run_until(wait);
//!
//! assert_eq!(report.state(), State::Abandoned);
//! assert_eq!(report.service("worker").unwrap().outcome(), &ServiceOutcome::Stopped);
//! assert_eq!(report.service("producer").unwrap().outcome(), &ServiceOutcome::Abandoned);
//! assert_eq!(report.sessions().abandoned()[0].name(), "conn 10.0.0.7:5123");
//! assert_eq!(report.exit_code(), 2);
//! println!("{report}");
//! # drop(conn);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Vocabulary
//!
//! The **stop** is the request (and the moment it is made: [`Lifecycle::stop`], a signal,
//! a failing service); **draining** is the state between the stop and the end; the end is
//! **terminated** (everything finished in time) or **abandoned** (the deadline came first).
//! A **census** counts the sessions at one moment; the **report** is written once, at the
//! end; a [`Snapshot`] is the live view at any moment.
//!
//! # Services, sessions and handles
//!
//! A [`Lifecycle`] handle can stop the lifecycle, so while one exists the lifecycle runs.
//! Services should hold a [`WeakLifecycle`] ([`Lifecycle::downgrade`]) to begin sessions:
//! it keeps nothing alive, so dropping the last `Lifecycle` (an early `?` in `main`) stops
//! the lifecycle and drops the services that never ran.
//!
//! A session that ends by a panic is counted and named apart in the report and complained
//! about: run its work with [`Session::run`] to catch the panic with its payload on every
//! executor (a guard dropped while its thread unwinds is seen too — tokio drops a panicked
//! task's future while the panic unwinds, so such a guard is counted as panicked, without
//! the message; `run` also has the message).
//!
//! For health endpoints and logs, [`Lifecycle::snapshot`] gives the state, the cause, the
//! session counts (refusals after the end included), the oldest live named sessions with
//! their ages and each service's status and uptime; [`Lifecycle::is_stopped`] is one atomic
//! load. [`Lifecycle::stop_on`] stops the lifecycle when any future resolves (a server API
//! that takes `shutdown: impl Future`, an admin endpoint). `main` may return the
//! [`Report`]: it is [`Termination`](std::process::Termination), so destructors run and the
//! process exits with [`Report::exit_code`].
//!
//! # Supervision
//!
//! [`Lifecycle::service_with`] adds a service made by a factory, restarted as its
//! [`Restart`] policy says after a [`Backoff`] (exponential, full jitter, a cap, on the
//! lifecycle's clock); more restarts than the [`RestartIntensity`] allows stop the lifecycle
//! with [`StopCause::RestartIntensity`]. [`Builder::on_event`] receives every [`Event`].
//! Bad settings are [`ConfigError`]s when they are made.
//!
//! Services form a graph through [`ServiceOptions::after`]: a service starts once its
//! dependencies are ready ([`ServiceOptions::declares_ready`] and [`StopSignal::ready`], with
//! a [`ServiceOptions::start_timeout`]; a failed start stops what started, in reverse), and
//! at the stop each service's own signal fires only when its dependents are done. Each
//! service gets a stop budget inside the one grace ([`ServiceOptions::stop_budget`], or the
//! time left shared along its chain): a stalled service is abandoned and named at the end of
//! its budget and never keeps the others from their stop. [`Lifecycle::nest`] runs a whole
//! lifecycle as one service of another; the report is a tree and its exit code the tree's.
//!
//! ```
//! use std::time::Duration;
//! use async_lifecycle::{Lifecycle, ServiceOptions};
//!
//! let lc = Lifecycle::builder().grace(Duration::from_secs(30)).build();
//! lc.service_with("db", ServiceOptions::new(), |stop| async move {
//!     stop.await; // fires after "api" and "workers" are done
//! })?;
//! let api = ServiceOptions::new().after(["db"]).stop_budget(Duration::from_secs(10));
//! lc.service_with("api", api, |stop| stop)?;
//! let workers = lc.nest("workers", ServiceOptions::new().after(["db"]), Lifecycle::builder())?;
//! workers.service("worker 1", |stop| stop)?;
//!
//! lc.stop("deploy");
//! let report = futures::executor::block_on(lc.wait());
//! assert_eq!(report.exit_code(), 0);
//! # Ok::<(), async_lifecycle::ServiceError>(())
//! ```
//!
//! # Features
//!
//! - `tracing` (default): complaints go to `tracing` at error level, target
//!   `async_lifecycle`. Without it they are written to standard error.
//! - `signal` (Unix): the first SIGINT or SIGTERM stops the lifecycle, a second one forces
//!   it; `Lifecycle::run_until_signal` is the one call for `main` (module `signal`).
//! - `tokio`: `tokio::TokioClock` (tokio's timer, paused test time included) and a tokio
//!   spawner for services (module `tokio`).
//! - `async-io`: `async_io::AsyncIoClock` (async-io's timer, for smol and async-std) and a
//!   smol spawner for services (module `async_io`).
//! - `systemd` (Unix): systemd's notifications for a lifecycle — `READY=1`, `STOPPING=1`,
//!   a `STATUS=` naming the oldest draining sessions, `EXTEND_TIMEOUT_USEC=` so that the
//!   grace decides, and the watchdog — on std's `UnixDatagram` (module `systemd`).
//! - `tower`: `tower::SessionLayer`, a tower `Layer` that runs each HTTP request as a session
//!   (a child of its connection's, so it is served while draining), answers 503 with
//!   `Retry-After` when refused, and `Connection: close` once stopping; for hyper, axum and
//!   tonic servers (module `tower`).
//! - `serve`: `serve::serve`, a hyper-util server loop for any tower service (an axum
//!   `Router` as is): a session per connection, the listener's backlog served before it
//!   closes, a linger for idle kept-alive connections, then a graceful close (HTTP/1 close,
//!   HTTP/2 GOAWAY); a stalled half-sent request is named at the deadline (module `serve`).
//! - `sim`: a deterministic simulator for your own shutdown scenarios — a seeded
//!   single-thread executor with random and PCT schedulers, a simulated clock that jumps to
//!   the next deadline, signals, forces, panics and clock jumps injected where the scheduler
//!   picks, and replay tokens that reproduce a failing run exactly (module `sim`; the guide
//!   page `guide::simulation` compares it with loom, shuttle, turmoil and madsim).
//!
//! # Comparison with neighbours
//!
//! - **tokio-util's `CancellationToken` + `TaskTracker`**: the cheapest primitives, but no
//!   deadline, no names, no report of errors or panics, and tokio only. An unnamed session
//!   here costs about what a `TaskTracker` token costs (about 1.1× on one thread, and less
//!   than one on two threads, where sessions are sharded per thread; no allocation; see
//!   `BENCHMARKS.md`) and adds the deadline and the report.
//! - **tokio-graceful-shutdown**: a subsystem tree with signals and one timeout, tokio only;
//!   stragglers are logged but not returned and panic payloads are dropped. Here the report
//!   is a value you can assert on, and sessions are cheap enough for every request.
//! - **drain**, **async-shutdown**: signal and wait-for-release, with no deadline and no
//!   names.
//! - **swansong**: executor-agnostic like this crate, but without a deadline, an abandon
//!   step or a report.

#![deny(unsafe_code)] // `signal`: one module (src/signal/os.rs) calls `sigaction`; see its docs.
#![cfg_attr(docsrs, feature(doc_cfg))]
#![warn(
    missing_docs,
    missing_debug_implementations,
    rust_2018_idioms,
    unreachable_pub
)]

#[cfg(feature = "async-io")]
#[cfg_attr(docsrs, doc(cfg(feature = "async-io")))]
pub mod async_io;
pub mod clock;
mod coarse;
mod complain;
mod error;
mod event;
#[cfg(any(doc, doctest))]
pub mod guide;
mod lifecycle;
mod loom;
pub mod machine;
#[cfg(feature = "serve")]
#[cfg_attr(docsrs, doc(cfg(feature = "serve")))]
pub mod serve;
mod service;
mod session;
mod shared;
#[cfg(all(feature = "signal", unix))]
#[cfg_attr(docsrs, doc(cfg(all(feature = "signal", unix))))]
pub mod signal;
#[cfg(feature = "sim")]
#[cfg_attr(docsrs, doc(cfg(feature = "sim")))]
pub mod sim;
mod snapshot;
mod sync;
#[cfg(all(feature = "systemd", unix))]
#[cfg_attr(docsrs, doc(cfg(all(feature = "systemd", unix))))]
pub mod systemd;
#[cfg(feature = "tokio")]
#[cfg_attr(docsrs, doc(cfg(feature = "tokio")))]
pub mod tokio;
#[cfg(feature = "tower")]
#[cfg_attr(docsrs, doc(cfg(feature = "tower")))]
pub mod tower;

/// The loom models (`tests/loom/models.rs`): library unit tests, because loom is a
/// dev-dependency only the lib's own test build sees. They use the public API by its
/// `async_lifecycle::` paths, as an integration test would.
#[cfg(all(test, loom))]
#[path = "../tests/loom/models.rs"]
mod loom_models;
/// The loom models of dependencies, readiness and the ordered stop (`tests/loom/ordering.rs`).
#[cfg(all(test, loom))]
#[path = "../tests/loom/ordering.rs"]
mod loom_models_ordering;
#[cfg(all(test, loom))]
extern crate self as async_lifecycle;

pub use clock::{Clock, ManualClock, Sleep, SystemClock};
pub use error::{Refused, ServiceError};
pub use event::Event;
pub use lifecycle::{Builder, DEFAULT_GRACE, Lifecycle, Wait, WeakLifecycle};
pub use machine::{
    Backoff, ConfigError, FailurePolicy, NamedSession, PanickedSession, Report, Restart,
    RestartIntensity, ServiceOptions, ServiceOutcome, ServiceReport, SessionReport, State,
    StopCause,
};
pub use service::{ServiceResult, StopSignal};
pub use session::{Session, SessionPanic};
pub use snapshot::{Probe, ServiceSnapshot, Snapshot};

/// The README's examples, compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
