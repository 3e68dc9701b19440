//! Serving: requests per second of a trivial axum handler, bare and behind per-request
//! tracking middleware, under `wrk`, side by side in one run.
//!
//! Every contender is the same axum 0.8 `Router` (`GET /` answers `"ok"`; axum without its
//! default features, as in the dev-dependencies) served by the same accept loop: tokio's
//! `TcpListener` on `127.0.0.1:0`, each connection served by hyper's HTTP/1 connection
//! (`hyper::server::conn::http1`, keep-alive on) through a `service_fn` that calls a clone of
//! the router. All of them run at once on one tokio **multi-thread runtime with 1 worker
//! thread**, so the server has one of the machine's cores and `wrk` (one thread) the other.
//! Only the middleware differs:
//!
//! - `bare`: the router alone.
//! - `layer`: `SessionLayer` (`src/tower.rs`), each request's session named
//!   `format!("{method} {path}")`, with a per-connection `ConnectionSession` (a named
//!   session, `conn {peer}`) inserted into each request by the accept loop — the documented
//!   setup: each request's session is a named child of its connection's.
//! - `layer_around_router`: the same layer and connection sessions as `layer`, but wrapped
//!   around the whole `Router` (`SessionLayer::layer(router)`, called by the accept loop)
//!   instead of `Router::layer`, which wraps each route and boxes it again: what axum's own
//!   per-route wrapping costs.
//! - `layer_static_name`: as `layer`, but every request's session is named `"GET /"`, a
//!   `&'static str`: what the name's `format!` (an allocation) costs.
//! - `layer_no_conn`: the same layer as `layer` without connection sessions: each request is a
//!   named session of the lifecycle's own.
//! - `tracker`: the peer recipe with tokio-util: a `TaskTracker::token()` held for the
//!   request's future, as a zero-allocation `tower::util::MapFutureLayer` (the layer a
//!   `tower::layer::layer_fn` would build).
//! - `tracker_from_fn`: the same token the way axum users usually write it,
//!   `axum::middleware::from_fn(|req, next| async { let _token = tracker.token();
//!   next.run(req).await })` (axum boxes the inner service and the future).
//! - `unnamed_session`: not the layer: our `WeakLifecycle::unnamed_session()` held for the
//!   request's future by the same `MapFutureLayer` as `tracker`. `SessionLayer` has no
//!   unnamed mode (every request is named by its closure, which takes the session registry's
//!   lock), so this row shows what our admission costs without a name, next to `tracker`.
//!
//! Before measuring, each server is asked for `GET /` over a plain socket and must answer 200.
//! Then `wrk -t1 -c32 -d{secs}s` runs against each server in turn: a 1 s warm-up each, then
//! `rounds` rounds, the contenders interleaved within a round (their order rotated from round
//! to round). Printed: requests/s per contender and round, the median over rounds, and each
//! median's ratio to `bare`'s. Any non-2xx answer or socket error is printed and fails the run.
//!
//! Run: `cargo bench --bench http_layer` (about 2 min 10 s with the defaults: 8 contenders,
//! a 1 s warm-up and 3 rounds of 5 s each). `HTTP_LAYER_ROUNDS` and `HTTP_LAYER_SECS` change
//! the rounds and their length; criterion-style filters select contenders by substring
//! (`cargo bench --bench http_layer -- tracker`; `--exact layer` for that one alone), `--list`
//! lists them. Without `--bench` (`cargo test --benches`) only the 200 check runs. Without
//! `wrk` on the `PATH` the bench says how to install it and exits 0.

use std::convert::Infallible;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::time::Duration;

use async_lifecycle::tower::{ConnectionSession, SessionLayer};
use async_lifecycle::{Lifecycle, WeakLifecycle};
use axum::Router;
use axum::body::Body;
use axum::extract::Request;
use axum::middleware::{Next, from_fn};
use axum::response::Response;
use axum::routing::get;
use hyper::body::{Body as HttpBody, Incoming};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio_util::task::TaskTracker;
use tower::util::MapFutureLayer;
use tower::{Layer, Service, ServiceExt};

/// The contenders, in their first round's order, with what each measures.
const CONTENDERS: &[(&str, &str)] = &[
    ("bare", "axum Router alone"),
    (
        "layer",
        "SessionLayer, named per request, child of a ConnectionSession",
    ),
    (
        "layer_around_router",
        "SessionLayer as `layer`, but around the whole Router, not Router::layer",
    ),
    (
        "layer_static_name",
        "SessionLayer as `layer`, every request named \"GET /\" (no allocation for the name)",
    ),
    (
        "layer_no_conn",
        "SessionLayer, named per request, no connection sessions",
    ),
    (
        "tracker",
        "TaskTracker::token() held for the future (MapFutureLayer)",
    ),
    (
        "tracker_from_fn",
        "TaskTracker::token() in axum::middleware::from_fn",
    ),
    (
        "unnamed_session",
        "our unnamed_session() held for the future (MapFutureLayer), not the layer",
    ),
];

/// The trivial handler every contender serves.
fn router() -> Router {
    Router::new().route("/", get(|| async { "ok" }))
}

/// The router of contender `name`, and whether its connections get a `ConnectionSession`.
fn app(name: &str, lc: &WeakLifecycle, tracker: &TaskTracker) -> (Router, bool) {
    match name {
        "bare" => (router(), false),
        "layer" | "layer_no_conn" => {
            let layer = SessionLayer::new(lc.clone(), |req: &Request| {
                format!("{} {}", req.method(), req.uri().path())
            });
            (router().layer(layer), name == "layer")
        }
        "layer_static_name" => {
            let layer = SessionLayer::new(lc.clone(), |_: &Request| "GET /");
            (router().layer(layer), true)
        }
        "tracker" => {
            let tracker = tracker.clone();
            let hold = MapFutureLayer::new(move |future| {
                let token = tracker.token();
                async move {
                    let response = future.await;
                    drop(token);
                    response
                }
            });
            (router().layer(hold), false)
        }
        "tracker_from_fn" => {
            let tracker = tracker.clone();
            let track = from_fn(move |req: Request, next: Next| {
                let token = tracker.token();
                async move {
                    let response: Response = next.run(req).await;
                    drop(token);
                    response
                }
            });
            (router().layer(track), false)
        }
        "unnamed_session" => {
            let lc = lc.clone();
            let hold = MapFutureLayer::new(move |future| {
                let session = lc.unnamed_session().expect("running");
                async move {
                    let response = future.await;
                    drop(session);
                    response
                }
            });
            (router().layer(hold), false)
        }
        other => unreachable!("unknown contender {other}"),
    }
}

/// Serves `app` on a fresh loopback port: each connection on hyper's HTTP/1, with its own
/// `ConnectionSession` if `connection_sessions`.
async fn serve<S, B>(app: S, lc: WeakLifecycle, connection_sessions: bool) -> SocketAddr
where
    S: Service<Request, Response = Response<B>, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
    B: HttpBody + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("local address");
    tokio::spawn(async move {
        loop {
            let Ok((tcp, peer)) = listener.accept().await else {
                continue;
            };
            let _ = tcp.set_nodelay(true);
            let connection = connection_sessions.then(|| {
                ConnectionSession::new(lc.session(format!("conn {peer}")).expect("running"))
            });
            let app = app.clone();
            tokio::spawn(async move {
                // The closure holds the connection's session: it ends with the connection.
                let service = hyper::service::service_fn(move |mut req: Request<Incoming>| {
                    if let Some(connection) = &connection {
                        req.extensions_mut().insert(connection.clone());
                    }
                    app.clone().oneshot(req.map(Body::new))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tcp), service)
                    .await;
            });
        }
    });
    addr
}

/// `GET /` over a plain socket; panics unless the answer is a 200 with body `ok`.
fn check(name: &str, addr: SocketAddr) {
    let mut tcp = TcpStream::connect(addr).expect("connect");
    tcp.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    tcp.write_all(b"GET / HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n")
        .expect("write");
    let mut answer = String::new();
    tcp.read_to_string(&mut answer).expect("read");
    assert!(
        answer.starts_with("HTTP/1.1 200") && answer.ends_with("\r\n\r\nok"),
        "{name}: GET / answered {answer:?}"
    );
}

/// One wrk run's outcome.
struct Run {
    requests_per_s: f64,
    /// Non-2xx answers, socket errors: anything but a clean run.
    trouble: Vec<String>,
}

/// Runs `wrk -t1 -c32 -d{secs}s` against `addr`.
fn wrk(addr: SocketAddr, secs: u64) -> Run {
    let out = Command::new("wrk")
        .args(["-t1", "-c32", &format!("-d{secs}s"), "--latency"])
        .arg(format!("http://{addr}/"))
        .output()
        .expect("run wrk");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "wrk failed: {text}");
    let requests_per_s = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("Requests/sec:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no Requests/sec in wrk's output: {text}"));
    let trouble = text
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with("Non-2xx") || l.starts_with("Socket errors"))
        .map(str::to_owned)
        .collect();
    Run {
        requests_per_s,
        trouble,
    }
}

fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let n = sorted.len();
    if n % 2 == 1 {
        sorted[n / 2]
    } else {
        (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0
    }
}

/// The contenders the command line selects: criterion-style substring filters on the name
/// (`tracker`), or a prefix of the full id (`http_layer`, `http_layer/layer`); with `--exact`,
/// the name or the full id exactly (`--exact layer`); none: all.
/// Options are skipped, with the value of those that take one (criterion's, libtest's).
fn selected(args: &[String]) -> Vec<&'static str> {
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
        "--logfile",
        "--test-threads",
        "--skip",
    ];
    let exact = args.iter().any(|a| a == "--exact");
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
    CONTENDERS
        .iter()
        .map(|&(name, _)| name)
        .filter(|name| {
            // On the name alone: every full id (`http_layer/{name}`) contains "layer".
            let full = format!("http_layer/{name}");
            filters.is_empty()
                || filters.iter().any(|f| {
                    if exact {
                        name == f || full == *f
                    } else {
                        name.contains(f) || full.starts_with(f)
                    }
                })
        })
        .collect()
}

fn env_u64(name: &str, default: u64) -> u64 {
    match std::env::var(name) {
        Ok(v) => v
            .parse()
            .unwrap_or_else(|_| panic!("{name}: a whole number, not {v:?}")),
        Err(_) => default,
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let names = selected(&args);
    if args.iter().any(|a| a == "--list") {
        for name in &names {
            println!("http_layer/{name}: bench");
        }
        return;
    }
    if names.is_empty() {
        return;
    }
    let benching = args.iter().any(|a| a == "--bench");

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let lc = Lifecycle::new();
    let tracker = TaskTracker::new();
    let servers: Vec<(&str, SocketAddr)> = names
        .iter()
        .map(|&name| {
            let addr = if name == "layer_around_router" {
                // `SessionLayer` around the whole router, not `Router::layer`.
                let layer = SessionLayer::new(lc.downgrade(), |req: &Request| {
                    format!("{} {}", req.method(), req.uri().path())
                });
                rt.block_on(serve(layer.layer(router()), lc.downgrade(), true))
            } else {
                let (app, connection_sessions) = app(name, &lc.downgrade(), &tracker);
                rt.block_on(serve(app, lc.downgrade(), connection_sessions))
            };
            check(name, addr);
            (name, addr)
        })
        .collect();
    if !benching {
        println!("http_layer: every server answers GET / with 200 (pass --bench to measure)");
        return;
    }
    let wrk_version = match Command::new("wrk").arg("--version").output() {
        Ok(out) => String::from_utf8_lossy(&out.stdout)
            .lines()
            .next()
            .unwrap_or("wrk")
            .to_owned(),
        Err(_) => {
            println!(
                "http_layer: wrk is not installed, skipping. Install it and rerun: \
                 `sudo apt-get install wrk` (Debian, Ubuntu), `brew install wrk` (macOS), \
                 or build it from https://github.com/wg/wrk"
            );
            return;
        }
    };

    let rounds = env_u64("HTTP_LAYER_ROUNDS", 3).max(1) as usize;
    let secs = env_u64("HTTP_LAYER_SECS", 5).max(1);
    println!(
        "http_layer: {wrk_version}; wrk -t1 -c32, {rounds} round(s) of {secs} s after a 1 s \
         warm-up; server: tokio multi-thread runtime, 1 worker thread, HTTP/1 keep-alive"
    );
    for &(name, addr) in &servers {
        let _ = wrk(addr, 1);
        println!("  {name:<20} on {addr}: warmed up");
    }

    let mut rps: Vec<Vec<f64>> = vec![Vec::new(); servers.len()];
    let mut failed = false;
    for round in 0..rounds {
        for k in 0..servers.len() {
            let i = (k + round) % servers.len();
            let (name, addr) = servers[i];
            let run = wrk(addr, secs);
            println!(
                "round {}: {name:<20} {:>10.0} requests/s{}",
                round + 1,
                run.requests_per_s,
                if run.trouble.is_empty() {
                    String::new()
                } else {
                    format!("  FAILED: {}", run.trouble.join("; "))
                }
            );
            failed |= !run.trouble.is_empty();
            rps[i].push(run.requests_per_s);
        }
    }

    let bare = servers
        .iter()
        .position(|&(name, _)| name == "bare")
        .map(|i| median(&rps[i]));
    println!();
    println!(
        "{:<20} {:>12} {:>9}  {:<40}  what",
        "contender", "median rps", "/ bare", "rounds"
    );
    for (i, &(name, _)) in servers.iter().enumerate() {
        let m = median(&rps[i]);
        let ratio = bare.map_or_else(|| "-".to_owned(), |b| format!("{:.3}", m / b));
        let each: Vec<String> = rps[i].iter().map(|r| format!("{r:.0}")).collect();
        let what = CONTENDERS
            .iter()
            .find(|&&(n, _)| n == name)
            .map_or("", |&(_, w)| w);
        println!(
            "{name:<20} {m:>12.0} {ratio:>9}  {:<40}  {what}",
            each.join(" ")
        );
    }
    drop(rt);
    drop(lc);
    if failed {
        eprintln!("http_layer: some runs had errors or non-2xx answers (above)");
        std::process::exit(1);
    }
}
