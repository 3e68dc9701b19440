//! `examples/http.rs` on an axum `Router`: the same command line, output, exit statuses and
//! drain, in the few lines an axum user writes.
//!
//! ```text
//! cargo run --example axum -- --listen 127.0.0.1:7878 --grace 10s
//! curl http://127.0.0.1:7878/            # 200 ok
//! curl http://127.0.0.1:7878/sleep?ms=N  # 200 ok, after N ms
//! curl http://127.0.0.1:7878/ready       # 200 ok while ready, 503 and why once stopping
//! ```
//!
//! The router is behind `async_lifecycle::tower::SessionLayer` (each request a session named
//! `GET /path from PEER_ADDR`, a child of its connection's) and served by
//! `async_lifecycle::serve::serve` as the `accept-loop` service (each connection a session
//! named `conn PEER_ADDR`). What happens at SIGINT/SIGTERM — the backlog served, the listener
//! closed (stderr: `axum: draining: listener closed`), `Connection: close`, the idle linger,
//! the graceful close, the report and the exit status — is described in `examples/http.rs`.

use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use async_lifecycle::Lifecycle;
use async_lifecycle::serve::{PeerAddr, serve};
use async_lifecycle::tokio::BuilderExt;
use async_lifecycle::tower::SessionLayer;
use axum::Router;
use axum::http::{HeaderValue, Request, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tower::Layer;

#[path = "common/args.rs"]
mod args;
use args::{Args, EXIT_SETUP};

fn main() -> ExitCode {
    let args = match args::from_env("axum") {
        Ok(args) => args,
        Err(code) => return code,
    };
    // Before the runtime's threads start: `listenfd` unsets LISTEN_FDS.
    let inherited = match args::inherited("axum") {
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
            eprintln!("axum: cannot start the runtime: {e}");
            return ExitCode::from(EXIT_SETUP);
        }
    };
    ExitCode::from(runtime.block_on(run(args, inherited)))
}

async fn run(args: Args, inherited: Option<std::net::TcpListener>) -> u8 {
    let (listener, addr) = match args::listener("axum", &args, inherited).await {
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

    let weak = lc.downgrade();
    let ready = lc.downgrade();
    let app = Router::new()
        .route("/", get(|| async { "ok" }))
        .route("/sleep", get(sleep))
        .route(
            "/ready",
            get(move || {
                let probe = ready.snapshot().readiness();
                let status = StatusCode::from_u16(probe.status()).unwrap_or(StatusCode::OK);
                async move { (status, probe.reason().to_owned()) }
            }),
        )
        .fallback(|| async { (StatusCode::NOT_FOUND, "not found\n") });
    // Around the whole router, not `Router::layer` (which wraps, and re-boxes, every route).
    let app = SessionLayer::new(lc.downgrade(), name).layer(app);
    lc.service("accept-loop", move |stop| async move {
        serve(weak, listener, app, stop).await?;
        eprintln!("axum: draining: listener closed");
        Ok::<(), std::io::Error>(())
    })
    .expect("a running lifecycle admits services");

    println!("listening on {addr}");
    // Ignored: a closed stdout must not stop the server.
    let _ = std::io::stdout().flush();

    args::exit_status("axum", until_signal.await)
}

/// `GET /sleep?ms=60000 from 127.0.0.1:50312`.
fn name<B>(req: &Request<B>) -> String {
    match req.extensions().get::<PeerAddr>() {
        Some(PeerAddr(peer)) => format!("{} {} from {peer}", req.method(), req.uri()),
        None => format!("{} {}", req.method(), req.uri()),
    }
}

/// `GET /sleep?ms=N`: 200 `ok` after N ms, with `x-slept-ms: N`.
async fn sleep(uri: Uri) -> Response {
    let ms = uri
        .query()
        .unwrap_or("")
        .split('&')
        .find_map(|pair| pair.strip_prefix("ms="))
        .and_then(|ms| ms.parse::<u64>().ok());
    let Some(ms) = ms else {
        return (StatusCode::BAD_REQUEST, "expected /sleep?ms=N\n").into_response();
    };
    tokio::time::sleep(Duration::from_millis(ms)).await;
    // Lets a load test tell the sleeps' answers apart.
    ([("x-slept-ms", HeaderValue::from(ms))], "ok").into_response()
}
