//! An HTTP server on tokio and hyper 1.x whose in-flight requests survive a SIGTERM.
//!
//! ```text
//! cargo run --example http -- --listen 127.0.0.1:7878 --grace 10s
//! curl http://127.0.0.1:7878/            # 200 ok
//! curl http://127.0.0.1:7878/sleep?ms=N  # 200 ok, after N ms
//! curl http://127.0.0.1:7878/ready       # 200 ok while ready, 503 and why once stopping
//! ```
//!
//! The flags, the `listening on HOST:PORT` line, the exit statuses and the signal behaviour
//! are those of the `echo` example. The server is `async_lifecycle::serve::serve` (feature
//! `serve`) run as a service, around a `tower::service_fn` behind
//! `async_lifecycle::tower::SessionLayer`: each connection is a session named
//! `conn PEER_ADDR` and each request its child, named `GET /path from PEER_ADDR`.
//! `examples/axum.rs` is the same server on an axum `Router`.
//!
//! On the first SIGINT/SIGTERM:
//!
//! 1. Connections the kernel had already accepted (the listener's backlog) are taken and
//!    served, then the listener is closed (stderr: `http: draining: listener closed`): new
//!    connections are refused, none is reset out of the backlog.
//! 2. Requests in flight finish. Every response written from now on carries
//!    `Connection: close` (HTTP/1), so the client will not reuse the connection.
//! 3. A kept-alive connection that is idle is not closed at once: for a short linger
//!    (a quarter of the grace period, at most one second) a request arriving on it is still
//!    answered, with `Connection: close`. This removes the classic race where the server
//!    closes an idle connection just as the client sends on it. After the linger, idle
//!    connections are shut down gracefully (HTTP/1: closed; HTTP/2: GOAWAY, then the streams
//!    in flight finish). A request half received is waited for, and answered once complete;
//!    a client that stalls mid-request past the grace is named in the report (`conn PEER`).
//! 4. Once every connection has ended, the process exits 0 with the report on stderr.
//!
//! Built with the `systemd` feature and started with `NOTIFY_SOCKET` set (a `Type=notify`
//! unit: `contrib/async-lifecycle-http.service`), it notifies systemd through
//! `async_lifecycle::systemd`: `READY=1`, the watchdog, `STOPPING=1` at the signal, and while
//! draining a `STATUS=` naming the oldest connection with `EXTEND_TIMEOUT_USEC=` up to the
//! grace's end. A malformed `NOTIFY_SOCKET` (or `WATCHDOG_USEC`, `WATCHDOG_PID`) is one line
//! on stderr and exit status 71 before it listens, rather than a server systemd would kill
//! at its start timeout.

use std::convert::Infallible;
use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use async_lifecycle::serve::{PeerAddr, serve};
use async_lifecycle::tokio::BuilderExt;
use async_lifecycle::tower::SessionLayer;
use async_lifecycle::{Lifecycle, WeakLifecycle};
use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::header::HeaderValue;
use hyper::{Method, Request, Response, StatusCode};
use tower::Layer;

#[path = "common/args.rs"]
mod args;
use args::{Args, EXIT_SETUP};

fn main() -> ExitCode {
    let args = match args::from_env("http") {
        Ok(args) => args,
        Err(code) => return code,
    };
    // Before the runtime's threads start: `listenfd` unsets LISTEN_FDS.
    let inherited = match args::inherited("http") {
        Ok(inherited) => inherited,
        Err(message) => {
            eprintln!("{message}");
            return ExitCode::from(EXIT_SETUP);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("http: cannot start the runtime: {e}");
            return ExitCode::from(EXIT_SETUP);
        }
    };
    ExitCode::from(runtime.block_on(run(args, inherited)))
}

async fn run(args: Args, inherited: Option<std::net::TcpListener>) -> u8 {
    #[cfg(all(feature = "systemd", unix))]
    let notifier = match async_lifecycle::systemd::Notifier::from_env() {
        Ok(notifier) => notifier,
        Err(e) => {
            eprintln!("http: {e}");
            return EXIT_SETUP;
        }
    };
    let (listener, addr) = match args::listener("http", &args, inherited).await {
        Ok(bound) => bound,
        Err(message) => {
            eprintln!("{message}");
            return EXIT_SETUP;
        }
    };
    let lc = Lifecycle::builder()
        .grace(args.grace)
        .pre_drain(args.pre_drain)
        .tokio()
        .build();
    // Signal handlers first: once the line below is printed, a signal must drain, not kill.
    let until_signal = lc.run_until_signal();

    // Each request a session, a child of its connection's, named with the peer.
    let weak = lc.downgrade();
    let ready = weak.clone();
    let app = SessionLayer::new(weak.clone(), name).layer(tower::service_fn(
        move |req: Request<Incoming>| {
            let ready = ready.clone();
            async move { Ok::<_, Infallible>(route(&req, &ready).await) }
        },
    ));
    // The service holds a weak handle: it begins sessions, and keeps nothing alive.
    lc.service("accept-loop", move |stop| async move {
        serve(weak, listener, app, stop).await?;
        eprintln!("http: draining: listener closed");
        Ok::<(), std::io::Error>(())
    })
    .expect("a running lifecycle admits services");
    // READY=1, the watchdog, STOPPING=1 and the drain's STATUS=; it ends with the lifecycle.
    #[cfg(all(feature = "systemd", unix))]
    if let Some(notifier) = notifier {
        tokio::spawn(notifier.drive(&lc));
    }

    println!("listening on {addr}");
    // Ignored: a closed stdout must not stop the server.
    let _ = std::io::stdout().flush();

    args::exit_status("http", until_signal.await)
}

/// `GET /sleep?ms=60000 from 127.0.0.1:50312`.
fn name(req: &Request<Incoming>) -> String {
    match req.extensions().get::<PeerAddr>() {
        Some(PeerAddr(peer)) => format!("{} {} from {peer}", req.method(), req.uri()),
        None => format!("{} {}", req.method(), req.uri()),
    }
}

async fn route(req: &Request<Incoming>, lc: &WeakLifecycle) -> Response<Full<Bytes>> {
    if req.method() != Method::GET {
        return text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n");
    }
    match req.uri().path() {
        "/" => text(StatusCode::OK, "ok"),
        "/ready" => {
            // 200 `ok` while ready; 503 and why not (`stopping: received SIGTERM`).
            let probe = lc.snapshot().readiness();
            let status = StatusCode::from_u16(probe.status()).unwrap_or(StatusCode::OK);
            let mut response = Response::new(Full::new(Bytes::from(probe.reason().to_owned())));
            *response.status_mut() = status;
            response
        }
        "/sleep" => {
            let ms = req
                .uri()
                .query()
                .unwrap_or("")
                .split('&')
                .find_map(|pair| pair.strip_prefix("ms="))
                .and_then(|ms| ms.parse::<u64>().ok());
            match ms {
                Some(ms) => {
                    tokio::time::sleep(Duration::from_millis(ms)).await;
                    let mut response = text(StatusCode::OK, "ok");
                    // Lets a load test tell the sleeps' answers apart.
                    response
                        .headers_mut()
                        .insert("x-slept-ms", HeaderValue::from(ms));
                    response
                }
                None => text(StatusCode::BAD_REQUEST, "expected /sleep?ms=N\n"),
            }
        }
        _ => text(StatusCode::NOT_FOUND, "not found\n"),
    }
}

fn text(status: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *response.status_mut() = status;
    response
}
