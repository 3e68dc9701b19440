//! An HTTP server on tokio and hyper 1.x whose in-flight requests survive a SIGTERM.
//!
//! ```text
//! cargo run --example http -- --listen 127.0.0.1:7878 --grace 10s
//! curl http://127.0.0.1:7878/            # 200 ok
//! curl http://127.0.0.1:7878/sleep?ms=N  # 200 ok, after N ms
//! ```
//!
//! The flags, the `listening on HOST:PORT` line, the exit statuses and the signal behaviour
//! are those of the `echo` example. The accept loop is a service; each connection is a
//! session named `conn PEER_ADDR` and each request one named `GET /path from PEER_ADDR`.
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
//!    in flight finish).
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
use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use async_lifecycle::tokio::BuilderExt;
use async_lifecycle::{Lifecycle, Session, StopSignal, WeakLifecycle};
use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::header::{CONNECTION, HeaderValue};
use hyper::{Method, Request, Response, StatusCode, Version};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

#[path = "common/args.rs"]
mod args;
use args::{Args, EXIT_SETUP};

/// The longest an idle kept-alive connection is kept open once draining starts.
const MAX_LINGER: Duration = Duration::from_secs(1);

fn main() -> ExitCode {
    let args = match args::from_env("http") {
        Ok(args) => args,
        Err(code) => return code,
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
    ExitCode::from(runtime.block_on(serve(args)))
}

async fn serve(args: Args) -> u8 {
    #[cfg(all(feature = "systemd", unix))]
    let notifier = match async_lifecycle::systemd::Notifier::from_env() {
        Ok(notifier) => notifier.map(|n| n.grace(args.grace)),
        Err(e) => {
            eprintln!("http: {e}");
            return EXIT_SETUP;
        }
    };
    let listener = match TcpListener::bind(args.listen).await {
        Ok(listener) => listener,
        Err(e) => {
            eprintln!("http: cannot listen on {}: {e}", args.listen);
            return EXIT_SETUP;
        }
    };
    let addr = match listener.local_addr() {
        Ok(addr) => addr,
        Err(e) => {
            eprintln!("http: cannot read the listening address: {e}");
            return EXIT_SETUP;
        }
    };
    let lc = Lifecycle::builder().grace(args.grace).tokio().build();
    // Signal handlers first: once the line below is printed, a signal must drain, not kill.
    let until_signal = lc.run_until_signal();
    let linger = (args.grace / 4).min(MAX_LINGER);
    // The service holds a weak handle: it begins sessions, and keeps nothing alive.
    let server = lc.downgrade();
    lc.service("accept-loop", move |stop| {
        accept_loop(listener, server, linger, stop)
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

/// Accepts connections until the stop; then takes the backlog, closes the listener, and
/// returns once every connection it started has ended.
async fn accept_loop(
    listener: TcpListener,
    lc: WeakLifecycle,
    linger: Duration,
    mut stop: StopSignal,
) -> std::io::Result<()> {
    // Each connection task holds a sender; `recv` returns `None` once all have ended.
    let (alive, mut all_ended) = mpsc::channel::<()>(1);
    loop {
        tokio::select! {
            biased;
            () = &mut stop => break,
            accepted = listener.accept() => match accepted {
                Ok((tcp, peer)) => {
                    let session = lc.session(format!("conn {peer}")).ok();
                    tokio::spawn(connection(tcp, peer, session, lc.clone(), linger, alive.clone()));
                }
                Err(e) if is_transient(&e) => {}
                // Out of file descriptors and the like: the service fails, which stops the
                // lifecycle and is reported.
                Err(e) => return Err(e),
            },
        }
    }

    // The kernel completed these handshakes before the stop: serve them rather than let
    // the close reset them. Asking the socket directly, not tokio's cached readiness.
    let listener = listener.into_std()?;
    loop {
        match listener.accept() {
            Ok((tcp, peer)) => {
                tcp.set_nonblocking(true)?;
                let tcp = TcpStream::from_std(tcp)?;
                // No session: the lifecycle is draining; this service waits for it instead.
                tokio::spawn(connection(
                    tcp,
                    peer,
                    None,
                    lc.clone(),
                    linger,
                    alive.clone(),
                ));
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
            Err(e) if is_transient(&e) => {}
            Err(e) => return Err(e),
        }
    }
    drop(listener);
    eprintln!("http: draining: listener closed");

    drop(alive);
    let _ = all_ended.recv().await;
    Ok(())
}

fn is_transient(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::{ConnectionAborted, ConnectionReset, Interrupted};
    matches!(e.kind(), ConnectionAborted | ConnectionReset | Interrupted)
}

/// Serves one connection (HTTP/1 or HTTP/2) until the client closes it or, once draining
/// started, until its last response (see the module docs for the linger).
async fn connection(
    tcp: TcpStream,
    peer: SocketAddr,
    session: Option<Session>,
    lc: WeakLifecycle,
    linger: Duration,
    _alive: mpsc::Sender<()>,
) {
    let requests = lc.clone();
    let service = hyper::service::service_fn(move |req| handle(req, peer, requests.clone()));
    let builder = auto::Builder::new(TokioExecutor::new());
    let conn = builder.serve_connection(TokioIo::new(tcp), service);
    tokio::pin!(conn);

    // Errors (a client that went away mid-request) just end the connection.
    tokio::select! {
        _ = conn.as_mut() => return,
        () = lc.stop_signal() => {}
    }
    tokio::select! {
        _ = conn.as_mut() => return,
        () = tokio::time::sleep(linger) => {}
    }
    conn.as_mut().graceful_shutdown();
    let _ = conn.await;
    drop(session);
}

async fn handle(
    req: Request<Incoming>,
    peer: SocketAddr,
    lc: WeakLifecycle,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let draining = lc.is_stopped();
    // While draining, the connection's session (or the accept loop) covers the request: it
    // is served, not refused.
    let session = if draining {
        None
    } else {
        lc.session(format!("{} {} from {peer}", req.method(), req.uri()))
            .ok()
    };

    let mut response = route(&req).await;

    // Decided after the work: a request that began before the stop and ends after it
    // closes its connection too.
    if lc.is_stopped() && req.version() <= Version::HTTP_11 {
        response
            .headers_mut()
            .insert(CONNECTION, HeaderValue::from_static("close"));
    }
    drop(session);
    Ok(response)
}

async fn route(req: &Request<Incoming>) -> Response<Full<Bytes>> {
    if req.method() != Method::GET {
        return text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n");
    }
    match req.uri().path() {
        "/" => text(StatusCode::OK, "ok"),
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
