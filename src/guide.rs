//! Coming from elsewhere: the same small axum server with tokio-graceful-shutdown, with
//! tokio-util's `CancellationToken` + `TaskTracker`, and with this crate.
//!
//! This module has no items; it is documentation only.
//!
//! The server answers `GET /` at once, `GET /slow` after five seconds, `GET /ready` for a
//! readiness probe and `GET /live` for a liveness probe, on HTTP/1 and HTTP/2, and stops on
//! SIGTERM (or SIGINT) within 20 seconds. Each version below is complete and compiles; the
//! two "before" versions are what the peers' own documentation leads to.
//!
//! - [The server with async-lifecycle](#the-server-with-async-lifecycle)
//! - [Coming from tokio-graceful-shutdown](#coming-from-tokio-graceful-shutdown)
//! - [Coming from `CancellationToken` + `TaskTracker`](#coming-from-cancellationtoken--tasktracker)
//! - [Deploying it](#deploying-it)
//!
//! Testing the shutdown of your own services and sessions under the deterministic simulator
//! (feature `sim`) has a page of its own: [`simulation`].
//!
//! # The server with async-lifecycle
//!
//! [`serve`] is the accept loop, run as a [service](crate::Lifecycle::service): every
//! connection is a session named `conn PEER`, inserted into each of its requests as a
//! [`ConnectionSession`]; [`SessionLayer`] runs each request as a
//! [child](crate::Session::child) of its connection's session, named `GET /path`.
//! [`Builder::pre_drain`] keeps serving, not ready, for 5 s after the signal;
//! [`run_until_signal`] returns the [`Report`], and `main` returns it, so the exit status
//! says what happened.
//!
//! ```no_run
//! use std::error::Error;
//! use std::time::Duration;
//!
//! use async_lifecycle::serve::serve;
//! use async_lifecycle::tokio::BuilderExt;
//! use async_lifecycle::tower::{SessionLayer, SessionService};
//! use async_lifecycle::{Lifecycle, Probe, Report, WeakLifecycle};
//! use axum::Router;
//! use axum::http::{Request, StatusCode};
//! use axum::routing::get;
//! use hyper::body::Incoming;
//! use tokio::net::TcpListener;
//! use tower::Layer;
//!
//! #[tokio::main]
//! async fn main() -> Result<Report, Box<dyn Error>> {
//!     let lc = Lifecycle::builder()
//!         .grace(Duration::from_secs(20))
//!         // After the signal: 5 s more of serving with /ready failing, so that load
//!         // balancers move away first. Spent inside the 20 s, not added to them.
//!         .pre_drain(Duration::from_secs(5))
//!         .tokio()
//!         .build();
//!     let listener = TcpListener::bind("0.0.0.0:8080").await?;
//!     let app = app(lc.downgrade());
//!     let weak = lc.downgrade();
//!     // Accepts until the drain, then serves the listener's backlog and closes it; each
//!     // connection lingers if idle, then closes gracefully, under its own session.
//!     lc.service("http", move |stop| serve(weak, listener, app, stop))?;
//!
//!     // The first SIGTERM or SIGINT: the pre-drain, then the drain; a second one forces.
//!     let report = lc.run_until_signal().await?;
//!     eprintln!("{report}");
//!     Ok(report) // exit status 0 (clean), 1 (a service failed) or 2 (work abandoned)
//! }
//!
//! fn app(lc: WeakLifecycle) -> SessionService<Router, fn(&Request<Incoming>) -> String> {
//!     let (ready, live) = (lc.clone(), lc.clone());
//!     let router = Router::new()
//!         .route("/", get(|| async { "ok" }))
//!         .route(
//!             "/slow",
//!             get(|| async {
//!                 tokio::time::sleep(Duration::from_secs(5)).await;
//!                 "slept"
//!             }),
//!         )
//!         // 503 from the instant of the signal (pre-drain included), with the reason.
//!         .route("/ready", get(move || probe_answer(ready.snapshot().readiness())))
//!         // 200 while running or draining; 503 once ended.
//!         .route("/live", get(move || probe_answer(live.snapshot().liveness())));
//!     // One session per request, under its connection's: named in the report. Around the
//!     // whole router (`Router::layer` would wrap and re-box every route).
//!     SessionLayer::new(lc, request_name as fn(&Request<Incoming>) -> String).layer(router)
//! }
//!
//! fn request_name(req: &Request<Incoming>) -> String {
//!     format!("{} {}", req.method(), req.uri().path())
//! }
//!
//! async fn probe_answer(probe: Probe) -> (StatusCode, String) {
//!     let status = StatusCode::from_u16(probe.status()).expect("200 or 503");
//!     (status, probe.reason().to_owned())
//! }
//! ```
//!
//! On SIGTERM:
//!
//! 1. **0 s, the pre-drain**: `/ready` answers 503; everything else is served as before and
//!    new connections are still accepted. The stop's cause is `received SIGTERM`.
//! 2. **5 s, the drain**: the [`StopSignal`]s fire. [`serve`] takes the connections the
//!    kernel had already accepted (the listener's backlog), serves them, and closes the
//!    listener. Requests in flight finish; every HTTP/1 response from now on says
//!    `Connection: close`. An idle kept-alive connection lingers — a quarter of the time
//!    left, at most 1 s ([`Serve::linger`](crate::serve::Serve::linger)) — so a request
//!    arriving on it is still served; then each connection is closed gracefully (HTTP/1:
//!    closed after its response; HTTP/2: GOAWAY, and its streams in flight finish). A
//!    request half sent by then is waited for and answered. A request with no connection
//!    session (none here) would be answered `503` with `Retry-After: 1`, its handler not
//!    called.
//! 3. **When the last session ends**, or at **20 s** at the latest, `run_until_signal`
//!    returns the report. Whatever still runs at the deadline is named in it —
//!    `ABANDONED GET /slow  (age 19.200s, under conn 10.0.0.7:5123)`, or, for a client
//!    stalled mid-request, its connection: `ABANDONED conn 10.0.0.7:5124  (age 19.200s)` —
//!    and the exit status is 2.
//!
//! `examples/axum.rs` is the same server shape, and `examples/http.rs` the same on a plain
//! `tower::service_fn`, with the command line, output and exit statuses that
//! `scripts/load.py` checks under load. [`serve`] takes a tokio `TcpListener`; on another
//! transport (TLS, a Unix socket) the loop is written by hand, inserting a
//! [`ConnectionSession`] per connection as the [`tower`](crate::tower) module shows.
//!
//! # Coming from tokio-graceful-shutdown
//!
//! The usual shape, after the crate's own hyper example: a `Toplevel` with signal handling
//! and a timeout, one subsystem for the server, and — because its maintainers say subsystems
//! are too heavy for one per connection — a `TaskTracker` for the connections.
//!
//! ```no_run
//! use std::time::Duration;
//!
//! use axum::Router;
//! use axum::http::{Request, StatusCode};
//! use axum::routing::get;
//! use hyper::body::Incoming;
//! use hyper_util::rt::{TokioExecutor, TokioIo};
//! use hyper_util::server::conn::auto;
//! use tokio::net::TcpListener;
//! use tokio_graceful_shutdown::errors::CancelledByShutdown;
//! use tokio_graceful_shutdown::{FutureExt, SubsystemBuilder, SubsystemHandle, Toplevel};
//! use tokio_util::sync::CancellationToken;
//! use tokio_util::task::TaskTracker;
//! use tower::ServiceExt;
//!
//! #[tokio::main]
//! async fn main() -> Result<(), Box<dyn std::error::Error>> {
//!     Toplevel::new(async |s: &mut SubsystemHandle| {
//!         s.start(SubsystemBuilder::new("http", http));
//!     })
//!     .catch_signals()
//!     .handle_shutdown_requests(Duration::from_secs(20))
//!     .await
//!     .map_err(Into::into) // a timeout and a failed subsystem are both exit status 1
//! }
//!
//! async fn http(subsys: &mut SubsystemHandle) -> std::io::Result<()> {
//!     let listener = TcpListener::bind("0.0.0.0:8080").await?;
//!     let stopping = subsys.create_cancellation_token();
//!     let app = app(stopping.clone());
//!     let connections = TaskTracker::new();
//!     loop {
//!         let (tcp, _peer) = match listener.accept().cancel_on_shutdown(subsys).await {
//!             Ok(accepted) => accepted?,
//!             Err(CancelledByShutdown) => break,
//!         };
//!         let (app, stopping) = (app.clone(), stopping.clone());
//!         connections.spawn(async move {
//!             let service = hyper::service::service_fn(move |req: Request<Incoming>| {
//!                 app.clone().oneshot(req)
//!             });
//!             let http = auto::Builder::new(TokioExecutor::new());
//!             let serving = http.serve_connection(TokioIo::new(tcp), service);
//!             tokio::pin!(serving);
//!             tokio::select! {
//!                 _ = serving.as_mut() => {}
//!                 () = stopping.cancelled() => {
//!                     serving.as_mut().graceful_shutdown();
//!                     let _ = serving.await;
//!                 }
//!             }
//!         });
//!     }
//!     drop(listener); // connections still in the backlog are reset
//!     connections.close();
//!     connections.wait().await; // the timeout is the Toplevel's; nothing here names a straggler
//!     Ok(())
//! }
//!
//! fn app(stopping: CancellationToken) -> Router {
//!     Router::new()
//!         .route("/", get(|| async { "ok" }))
//!         .route(
//!             "/slow",
//!             get(|| async {
//!                 tokio::time::sleep(Duration::from_secs(5)).await;
//!                 "slept"
//!             }),
//!         )
//!         // Not ready at the signal — which is also when the listener closes.
//!         .route(
//!             "/ready",
//!             get(move || {
//!                 let ready = !stopping.is_cancelled();
//!                 async move {
//!                     if ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE }
//!                 }
//!             }),
//!         )
//!         .route("/live", get(|| async { "alive" }))
//! }
//! ```
//!
//! The same server with this crate is [the one above](#the-server-with-async-lifecycle).
//! Piece by piece:
//!
//! | tokio-graceful-shutdown | async-lifecycle |
//! |---|---|
//! | `Toplevel::new(..)` | [`Lifecycle::builder()`](crate::Lifecycle::builder)`…build()` |
//! | `SubsystemBuilder::new("http", http)` | [`lc.service("http", ..)`](crate::Lifecycle::service) |
//! | `subsys.on_shutdown_requested()`, `cancel_on_shutdown` | the service's [`StopSignal`], handed to [`serve`] (or in a `select!` of your own) |
//! | `.catch_signals()` | [`lc.run_until_signal()`](crate::Lifecycle::run_until_signal) (a second signal forces) |
//! | `.handle_shutdown_requests(timeout)` | [`Builder::grace`](crate::Builder::grace), enforced by `run_until_signal` |
//! | the accept loop, `serve_connection`, `graceful_shutdown` | [`serve(weak, listener, app, stop)`](crate::serve::serve) |
//! | a `TaskTracker` for connections | a session per connection ([`serve`]) and per request ([`SessionLayer`]) |
//! | `Result<(), GracefulShutdownError>` from `main` | the [`Report`] from `main` |
//!
//! What you gain:
//!
//! - **The server's part written once**: the accept loop and each connection's drain are
//!   [`serve`], one line, where the version above writes about thirty lines of its own —
//!   and still resets the backlog and cuts off a request half sent.
//! - **Names**: a straggler is a request named with its connection
//!   (`ABANDONED GET /slow  (age 19.200s, under conn 10.0.0.7:5123)`), or a connection whose
//!   client stalled mid-request, not a subsystem that timed out. Sessions are cheap enough
//!   for every request, which subsystems are not.
//! - **The report**: a value — what was admitted, completed, refused, panicked, abandoned,
//!   each service's outcome and the stop's cause — that `main` prints and returns, and a
//!   test can assert on ([`Report::sessions`], [`Report::service`]); panics keep their
//!   message.
//! - **The deadline**: one grace, as with `handle_shutdown_requests`, but the pre-drain is
//!   spent inside it rather than added to it, each service can have its own stop budget
//!   within it ([`ServiceOptions::stop_budget`](crate::ServiceOptions::stop_budget)), and
//!   at the deadline the stragglers are named rather than summed up as a timeout error.
//! - **Nothing lost at the backlog**: the connections the kernel completed before the
//!   signal are served — as sessions, children of the one [`serve`] holds while listening,
//!   so the drain waits for them and names them — not reset when the listener closes.
//! - **Nothing lost at the close**: a request arriving on an idle kept-alive connection
//!   just as the drain begins is answered, with `Connection: close`, rather than meeting a
//!   closed socket (the linger); a request half sent when the connection is to close is
//!   waited for and answered rather than cut off; HTTP/2 gets a GOAWAY and its streams in
//!   flight finish.
//! - **Readiness and the pre-drain**: [`Snapshot::readiness`] fails from the signal while
//!   [`Builder::pre_drain`] keeps serving, so no `preStop` sleep is needed (see
//!   [Deploying it](#deploying-it)).
//! - **Exit statuses**: 0 clean, 1 a service failed or panicked, 2 work abandoned at the
//!   deadline ([`Report::exit_code`]); tokio-graceful-shutdown's `main` exits 1 for both of
//!   the last two.
//!
//! Nothing is lost by moving: a service's future can keep using tokio (a `select!` on its
//! [`StopSignal`]), nested subsystems become [`Lifecycle::nest`](crate::Lifecycle::nest)
//! or [`ServiceOptions::after`](crate::ServiceOptions::after), and a subsystem that
//! requests the shutdown calls [`WeakLifecycle::stop`](crate::WeakLifecycle::stop) with a
//! cause.
//!
//! # Coming from `CancellationToken` + `TaskTracker`
//!
//! The usual shape with tokio-util's primitives: a token cancelled at the signal, a tracker
//! holding the connections, a timeout around `tracker.wait()`.
//!
//! ```no_run
//! use std::time::Duration;
//!
//! use axum::Router;
//! use axum::http::{Request, StatusCode};
//! use axum::routing::get;
//! use hyper::body::Incoming;
//! use hyper_util::rt::{TokioExecutor, TokioIo};
//! use hyper_util::server::conn::auto;
//! use tokio::net::TcpListener;
//! use tokio::signal::unix::{SignalKind, signal};
//! use tokio_util::sync::CancellationToken;
//! use tokio_util::task::TaskTracker;
//! use tower::ServiceExt;
//!
//! #[tokio::main]
//! async fn main() -> Result<(), Box<dyn std::error::Error>> {
//!     let stopping = CancellationToken::new();
//!     let connections = TaskTracker::new();
//!     let listener = TcpListener::bind("0.0.0.0:8080").await?;
//!     let app = app(stopping.clone());
//!     let mut sigterm = signal(SignalKind::terminate())?;
//!     loop {
//!         let (tcp, _peer) = tokio::select! {
//!             _ = sigterm.recv() => break,
//!             _ = tokio::signal::ctrl_c() => break,
//!             accepted = listener.accept() => accepted?,
//!         };
//!         let (app, stopping) = (app.clone(), stopping.clone());
//!         connections.spawn(async move {
//!             let service = hyper::service::service_fn(move |req: Request<Incoming>| {
//!                 app.clone().oneshot(req)
//!             });
//!             let http = auto::Builder::new(TokioExecutor::new());
//!             let serving = http.serve_connection(TokioIo::new(tcp), service);
//!             tokio::pin!(serving);
//!             tokio::select! {
//!                 _ = serving.as_mut() => {}
//!                 () = stopping.cancelled() => {
//!                     serving.as_mut().graceful_shutdown();
//!                     let _ = serving.await;
//!                 }
//!             }
//!         });
//!     }
//!     stopping.cancel();
//!     drop(listener); // connections still in the backlog are reset
//!     connections.close();
//!     let drained = tokio::time::timeout(Duration::from_secs(20), connections.wait()).await;
//!     if drained.is_err() {
//!         // How many, but not which connections or requests.
//!         return Err(format!("{} connections still open", connections.len()).into());
//!     }
//!     Ok(())
//! }
//!
//! fn app(stopping: CancellationToken) -> Router {
//!     Router::new()
//!         .route("/", get(|| async { "ok" }))
//!         .route(
//!             "/slow",
//!             get(|| async {
//!                 tokio::time::sleep(Duration::from_secs(5)).await;
//!                 "slept"
//!             }),
//!         )
//!         .route(
//!             "/ready",
//!             get(move || {
//!                 let ready = !stopping.is_cancelled();
//!                 async move {
//!                     if ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE }
//!                 }
//!             }),
//!         )
//!         .route("/live", get(|| async { "alive" }))
//! }
//! ```
//!
//! The same server with this crate is [the one above](#the-server-with-async-lifecycle).
//! Piece by piece:
//!
//! | `CancellationToken` + `TaskTracker` | async-lifecycle |
//! |---|---|
//! | `token.cancel()` at a signal you catch | [`lc.run_until_signal()`](crate::Lifecycle::run_until_signal), or [`lc.stop(cause)`](crate::Lifecycle::stop) |
//! | `token.cancelled()` | [`StopSignal`] (a service's, [`Session::stop_signal`](crate::Session::stop_signal), [`WeakLifecycle::stop_signal`](crate::WeakLifecycle::stop_signal)) |
//! | `!token.is_cancelled()` for readiness | [`Snapshot::readiness`]: 503 with the reason (`stopping: received SIGTERM`, a service not ready) |
//! | the accept loop, `serve_connection`, `graceful_shutdown` | [`serve(weak, listener, app, stop)`](crate::serve::serve) |
//! | `tracker.spawn(..)` per connection | a session per connection ([`serve`]) and per request ([`SessionLayer`]) |
//! | `tracker.close(); timeout(d, tracker.wait())` | [`Builder::grace`](crate::Builder::grace); the lifecycle waits and enforces it |
//! | `Result<(), _>` from `main` | the [`Report`] from `main` |
//!
//! What you gain:
//!
//! - **The server's part written once**: the accept loop and each connection's drain are
//!   [`serve`], one line, not the thirty or so above that each program writes.
//! - **Names**: the tracker counts tasks; a session has a name, and a request's names its
//!   connection, so the report says which request on which connection was still running,
//!   or which connection's client stalled mid-request.
//! - **The report**: every request's outcome counted — completed, refused, panicked (with
//!   its message; a panicking tracked task leaves only the panic hook's line), abandoned —
//!   and the stop's cause (`received SIGTERM`), as a value `main` prints and returns.
//! - **The deadline**: part of the lifecycle, not a `timeout` around `wait()` that each
//!   program writes; a second signal forces it.
//! - **Nothing lost at the backlog**: the connections the kernel completed before the
//!   signal are served, as sessions, not reset by the close; a request a connection
//!   delivered is served while draining, with `Connection: close`, and each HTTP/1 response
//!   from then on tells its client not to reuse the connection.
//! - **Nothing lost at the close**: an idle kept-alive connection lingers before it is
//!   closed, so a request its client sent just as the drain began is answered; a request
//!   half sent is waited for rather than cut off; HTTP/2 gets a GOAWAY.
//! - **Readiness and the pre-drain**: not ready at the signal, still serving for
//!   [`Builder::pre_drain`]; with a token, readiness fails when the listener closes.
//! - **Exit statuses**: 0 clean, 1 a service failed or panicked, 2 work abandoned at the
//!   deadline, decided for you ([`Report::exit_code`]).
//!
//! The cost: a named session is one clock read and an uncontended lock more than an
//! unnamed one, which costs about what a `TaskTracker` token does (see `BENCHMARKS.md`).
//! Only the server itself — [`serve`] — needs tokio: the sessions and the layer run on any
//! executor (`.smol(executor)` on the builder, with the `async-io` feature).
//!
//! # Deploying it
//!
//! Kubernetes sends SIGTERM after the `preStop` hook and SIGKILL at
//! `terminationGracePeriodSeconds`, counted from the start of the hook, so the budget is
//! `preStop sleep + grace + margin ≤ terminationGracePeriodSeconds`. With
//! [`Builder::pre_drain`] the `preStop` sleep is unnecessary (the delay is spent inside the
//! grace): 20 s of grace and 5 s of margin fit in 25 s. `contrib/kubernetes.yaml` in the
//! repository is a Deployment and a Service for this server with both options explained;
//! the README's "Kubernetes" and "systemd" sections say more.
//!
//! [`serve`]: crate::serve::serve
//! [`ConnectionSession`]: crate::tower::ConnectionSession
//! [`SessionLayer`]: crate::tower::SessionLayer
//! [`Builder::pre_drain`]: crate::Builder::pre_drain
//! [`run_until_signal`]: crate::Lifecycle::run_until_signal
//! [`Report`]: crate::Report
//! [`Report::exit_code`]: crate::Report::exit_code
//! [`Report::sessions`]: crate::Report::sessions
//! [`Report::service`]: crate::Report::service
//! [`StopSignal`]: crate::StopSignal
//! [`Snapshot::readiness`]: crate::Snapshot::readiness

// Built for the documentation only (`cfg(any(doc, doctest))` in lib.rs), with the
// features its examples use (`serve` brings `tower` and `tokio`).
#![cfg(all(feature = "serve", feature = "signal", unix))]
#![cfg_attr(docsrs, doc(cfg(all(feature = "serve", feature = "signal", unix))))]

#[cfg(feature = "sim")]
#[cfg_attr(docsrs, doc(cfg(feature = "sim")))]
pub mod simulation;
