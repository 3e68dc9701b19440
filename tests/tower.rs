//! `tower::SessionLayer` behind an axum `Router`, served by hyper one connection at a time
//! over real sockets (a client writing HTTP/1.1 by hand), and around a plain
//! `tower::service_fn` for what sockets cannot show (HTTP/2 headers, errors, the end).
#![cfg(feature = "tower")]

use std::convert::Infallible;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_lifecycle::tokio::BuilderExt;
use async_lifecycle::tower::{ConnectionSession, SessionLayer};
use async_lifecycle::{Lifecycle, Report, State, StopSignal, WeakLifecycle};
use axum::Router;
use axum::body::{Body, Bytes};
use axum::http::{Request, Response, StatusCode, Version};
use axum::routing::get;
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};
use tower::{Layer, ServiceExt};

/// How long any one step may take before the test fails (a bound on failure, never a wait).
const PATIENCE: Duration = Duration::from_secs(20);

/// Names each request's session as `GET /path`.
fn method_and_path(req: &Request<Body>) -> String {
    format!("{} {}", req.method(), req.uri().path())
}

/// A lifecycle on tokio whose accept loop (a service) serves `app` behind the layer, one
/// hyper HTTP/1 connection per task. With `connection_sessions`, each connection is a session
/// named `conn PEER` and its requests carry it. Every accepted connection is announced on
/// the returned channel once its session began.
async fn serve(
    app: Router,
    connection_sessions: bool,
) -> (Lifecycle, SocketAddr, mpsc::UnboundedReceiver<SocketAddr>) {
    let lc = Lifecycle::builder().grace(PATIENCE).tokio().build();
    let app = app.layer(SessionLayer::new(lc.downgrade(), method_and_path));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (accepted, announced) = mpsc::unbounded_channel();
    let weak = lc.downgrade();
    lc.service("accept-loop", move |stop| {
        accept_loop(listener, weak, app, connection_sessions, accepted, stop)
    })
    .unwrap();
    (lc, addr, announced)
}

async fn accept_loop(
    listener: TcpListener,
    lc: WeakLifecycle,
    app: Router,
    connection_sessions: bool,
    accepted: mpsc::UnboundedSender<SocketAddr>,
    mut stop: StopSignal,
) -> std::io::Result<()> {
    loop {
        let (tcp, peer) = tokio::select! {
            () = &mut stop => return Ok(()),
            accepted = listener.accept() => accepted?,
        };
        let connection = connection_sessions
            .then(|| lc.session(format!("conn {peer}")).ok())
            .flatten()
            .map(ConnectionSession::new);
        let _ = accepted.send(peer);
        let app = app.clone();
        tokio::spawn(async move {
            // The closure holds the connection's session: it ends with the connection.
            let service = hyper::service::service_fn(move |mut req: Request<Incoming>| {
                if let Some(connection) = &connection {
                    req.extensions_mut().insert(connection.clone());
                }
                app.clone().oneshot(req)
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(tcp), service)
                .await;
        });
    }
}

/// Waits for the lifecycle's end, failing after `PATIENCE`.
async fn ended(lc: &Lifecycle) -> Report {
    tokio::time::timeout(PATIENCE, lc.wait())
        .await
        .expect("the lifecycle ends")
}

/// Hands the test a receiver of the chunks a streaming handler sends.
type Chunks = Arc<Mutex<Option<mpsc::Receiver<Bytes>>>>;

/// A handler whose body is whatever the test sends on the channel, until it drops it.
fn streaming(chunks: Chunks) -> Router {
    Router::new().route(
        "/stream",
        get(move || async move {
            let rx = chunks
                .lock()
                .unwrap()
                .take()
                .expect("one streaming request");
            let stream = futures::stream::unfold(rx, |mut rx| async move {
                let chunk = rx.recv().await?;
                Some((Ok::<_, Infallible>(chunk), rx))
            });
            Body::from_stream(stream)
        }),
    )
}

/// One HTTP/1.1 client connection, blocking (the test body runs outside the runtime's
/// workers).
struct Client {
    reader: BufReader<TcpStream>,
}

#[derive(Debug)]
struct Head {
    status: u16,
    headers: Vec<(String, String)>,
}

impl Head {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn closes(&self) -> bool {
        self.header("connection")
            .is_some_and(|v| v.eq_ignore_ascii_case("close"))
    }
}

impl Client {
    fn connect(addr: SocketAddr) -> Client {
        let stream = TcpStream::connect(addr).unwrap();
        stream.set_read_timeout(Some(PATIENCE)).unwrap();
        Client {
            reader: BufReader::new(stream),
        }
    }

    fn local_addr(&self) -> SocketAddr {
        self.reader.get_ref().local_addr().unwrap()
    }

    fn write(&mut self, bytes: &str) {
        self.reader.get_mut().write_all(bytes.as_bytes()).unwrap();
    }

    fn line(&mut self) -> String {
        let mut line = String::new();
        self.reader.read_line(&mut line).unwrap();
        line.trim_end().to_owned()
    }

    fn head(&mut self) -> Head {
        let line = self.line();
        let status = line
            .strip_prefix("HTTP/1.1 ")
            .and_then(|rest| rest.get(..3))
            .and_then(|code| code.parse().ok())
            .unwrap_or_else(|| panic!("not a status line: {line:?}"));
        let mut headers = Vec::new();
        loop {
            let line = self.line();
            if line.is_empty() {
                return Head { status, headers };
            }
            let (name, value) = line.split_once(':').expect("a header line");
            headers.push((name.trim().to_owned(), value.trim().to_owned()));
        }
    }

    /// The next chunk of a chunked body; `None` for the last (empty) one.
    fn chunk(&mut self) -> Option<String> {
        let size = usize::from_str_radix(&self.line(), 16).expect("a chunk size");
        let mut data = vec![0; size + 2];
        self.reader.read_exact(&mut data).unwrap();
        data.truncate(size);
        (size > 0).then(|| String::from_utf8(data).unwrap())
    }

    /// A response with a `Content-Length`: its head and body.
    fn response(&mut self) -> (Head, String) {
        let head = self.head();
        let length = head
            .header("content-length")
            .expect("a content-length")
            .parse()
            .unwrap();
        let mut body = vec![0; length];
        self.reader.read_exact(&mut body).unwrap();
        (head, String::from_utf8(body).unwrap())
    }

    /// Reads until the server closes the connection; returns what came before.
    fn read_to_close(&mut self) -> Vec<u8> {
        let mut rest = Vec::new();
        let _ = self.reader.read_to_end(&mut rest);
        rest
    }
}

/// The failure: requests whose heads were half sent at the stop. Each is served
/// under its connection's session, with `Connection: close`, and nothing is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_half_sent_at_the_stop_are_served_under_their_connection() {
    let app = Router::new().route("/", get(|| async { "ok" }));
    let (lc, addr, mut announced) = serve(app, true).await;

    let mut clients: Vec<Client> = (0..8).map(|_| Client::connect(addr)).collect();
    for client in &mut clients {
        client.write("GET / HTTP/1.1\r\nHost: test\r\n");
    }
    for _ in &clients {
        announced.recv().await.expect("accepted");
    }

    lc.stop("SIGTERM");
    assert_eq!(lc.state(), State::Draining);
    for client in &mut clients {
        client.write("\r\n");
    }
    for client in &mut clients {
        let (head, body) = client.response();
        assert_eq!((head.status, body.as_str()), (200, "ok"), "{head:?}");
        assert!(head.closes(), "{head:?}");
        assert!(client.read_to_close().is_empty());
    }

    let report = ended(&lc).await;
    assert_eq!(report.state(), State::Terminated, "{report}");
    // Eight connections and their eight requests; none refused.
    assert_eq!(report.sessions().admitted(), 16, "{report}");
    assert_eq!(report.sessions().completed(), 16, "{report}");
    assert_eq!(report.sessions().refused(), 0, "{report}");
}

/// Without a connection session, a request that arrives while draining is refused outright:
/// 503, `Retry-After`, `Connection: close`, and the handler is never called.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_on_no_connection_is_refused_while_draining() {
    let called = Arc::new(AtomicUsize::new(0));
    let counter = called.clone();
    let app = Router::new().route(
        "/",
        get(move || async move {
            counter.fetch_add(1, Ordering::SeqCst);
            "ok"
        }),
    );
    let (lc, addr, mut announced) = serve(app, false).await;
    // Keeps the lifecycle draining rather than ended.
    let holder = lc.session("holder").unwrap();

    let mut client = Client::connect(addr);
    announced.recv().await.expect("accepted");
    lc.stop("SIGTERM");
    client.write("GET / HTTP/1.1\r\nHost: test\r\n\r\n");
    let (head, body) = client.response();
    assert_eq!(head.status, 503, "{head:?}");
    assert_eq!(head.header("retry-after"), Some("1"), "{head:?}");
    assert!(head.closes(), "{head:?}");
    assert_eq!(body, "");
    assert!(client.read_to_close().is_empty());
    assert_eq!(called.load(Ordering::SeqCst), 0, "the handler ran");
    assert_eq!(lc.state(), State::Draining);
    assert_eq!(lc.snapshot().refused_sessions(), 1);

    drop(holder);
    let report = ended(&lc).await;
    assert_eq!(report.state(), State::Terminated, "{report}");
    assert_eq!(report.sessions().refused(), 1, "{report}");
}

/// A streaming response keeps its request's session — and so the drain — until its last
/// chunk is sent, though its head was sent before the stop.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_streaming_body_keeps_its_session_until_its_last_chunk() {
    let (tx, rx) = mpsc::channel(1);
    let (lc, addr, mut announced) = serve(streaming(Arc::new(Mutex::new(Some(rx)))), false).await;

    let mut client = Client::connect(addr);
    announced.recv().await.expect("accepted");
    client.write("GET /stream HTTP/1.1\r\nHost: test\r\n\r\n");
    tx.send(Bytes::from("first")).await.unwrap();
    let head = client.head();
    assert_eq!(head.status, 200, "{head:?}");
    assert_eq!(
        head.header("transfer-encoding"),
        Some("chunked"),
        "{head:?}"
    );
    assert_eq!(client.chunk().as_deref(), Some("first"));

    lc.stop("SIGTERM");
    let snapshot = lc.snapshot();
    assert_eq!(snapshot.state(), State::Draining);
    assert_eq!(snapshot.live_sessions(), 1);
    assert_eq!(snapshot.oldest_sessions()[0].name(), "GET /stream");
    assert_eq!(snapshot.oldest_sessions()[0].parent(), None);

    tx.send(Bytes::from("second")).await.unwrap();
    assert_eq!(client.chunk().as_deref(), Some("second"));
    assert_eq!(lc.state(), State::Draining, "ended before the last chunk");
    assert_eq!(lc.snapshot().live_sessions(), 1);

    drop(tx); // the end of the stream
    assert_eq!(client.chunk(), None);
    let report = ended(&lc).await;
    assert_eq!(report.state(), State::Terminated, "{report}");
    assert_eq!(report.sessions().completed(), 1, "{report}");
}

/// The closure names each request's session, and the live view shows it under its
/// connection; a response completed while running keeps the connection open.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_session_is_named_by_the_closure_under_its_connection() {
    let (entered, mut inside) = mpsc::unbounded_channel::<()>();
    let (release, released) = oneshot::channel::<()>();
    let released = Arc::new(Mutex::new(Some(released)));
    let app = Router::new().route(
        "/hold",
        get(move || async move {
            let released = released.lock().unwrap().take().expect("one request");
            entered.send(()).unwrap();
            released.await.unwrap();
            "held"
        }),
    );
    let (lc, addr, mut announced) = serve(app, true).await;

    let mut client = Client::connect(addr);
    announced.recv().await.expect("accepted");
    client.write("GET /hold?for=test HTTP/1.1\r\nHost: test\r\n\r\n");
    inside.recv().await.expect("the handler runs");

    let snapshot = lc.snapshot();
    let conn = format!("conn {}", client.local_addr());
    let sessions = snapshot.oldest_sessions();
    assert_eq!(sessions.len(), 2, "{sessions:?}");
    assert_eq!((sessions[0].name(), sessions[0].parent()), (&*conn, None));
    assert_eq!(sessions[1].name(), "GET /hold");
    assert_eq!(sessions[1].parent(), Some(&*conn));

    release.send(()).unwrap();
    let (head, body) = client.response();
    assert_eq!((head.status, body.as_str()), (200, "held"), "{head:?}");
    assert!(!head.closes(), "{head:?}");

    // The kept-alive connection keeps the drain waiting until the client closes it.
    lc.stop("SIGTERM");
    assert_eq!(lc.state(), State::Draining);
    assert_eq!(lc.snapshot().oldest_sessions()[0].name(), conn);
    drop(client);
    let report = ended(&lc).await;
    assert_eq!(report.state(), State::Terminated, "{report}");
    assert_eq!(report.sessions().completed(), 2, "{report}");
}

/// A handler that panics ends its session as panicked, named, with the message; nothing is
/// leaked, and the connection's session ends with the connection's task.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_handler_ends_its_session() {
    let app = Router::new().route(
        "/panic",
        get(|| async {
            if true {
                panic!("boom");
            }
            "unreachable"
        }),
    );
    let (lc, addr, mut announced) = serve(app, true).await;

    let mut client = Client::connect(addr);
    announced.recv().await.expect("accepted");
    client.write("GET /panic HTTP/1.1\r\nHost: test\r\n\r\n");
    // The panic takes the connection's task with it: the connection closes unanswered.
    assert!(client.read_to_close().is_empty());

    lc.stop("done");
    let report = ended(&lc).await;
    assert_eq!(report.state(), State::Terminated, "{report}");
    let sessions = report.sessions();
    assert!(sessions.abandoned().is_empty(), "{report}");
    // The request first, with its message; then its connection, whose task the panic
    // unwound (tokio drops a task's future while the panic unwinds through it).
    let panicked = sessions.panicked_sessions();
    assert_eq!(sessions.panicked(), 2, "{report}");
    assert_eq!(panicked[0].name(), Some("GET /panic"));
    assert_eq!(panicked[0].message(), Some("boom"));
    let conn = format!("conn {}", client.local_addr());
    assert_eq!(panicked[1].name(), Some(&*conn), "{report}");
    assert_eq!(sessions.completed(), 0, "{report}");
}

/// A response body dropped before its end (the client went away) ends its session.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_response_body_ends_its_session() {
    let (tx, rx) = mpsc::channel(1);
    let (lc, addr, mut announced) = serve(streaming(Arc::new(Mutex::new(Some(rx)))), false).await;

    let mut client = Client::connect(addr);
    announced.recv().await.expect("accepted");
    client.write("GET /stream HTTP/1.1\r\nHost: test\r\n\r\n");
    tx.send(Bytes::from("first")).await.unwrap();
    assert_eq!(client.head().status, 200);
    assert_eq!(client.chunk().as_deref(), Some("first"));

    lc.stop("SIGTERM");
    assert_eq!(lc.state(), State::Draining);
    drop(client);
    // Hyper learns of the close when a write fails; the body (and the channel's receiver
    // in it) is dropped then.
    tokio::time::timeout(PATIENCE, async {
        while tx.send(Bytes::from("more")).await.is_ok() {}
    })
    .await
    .expect("the body is dropped");
    let report = ended(&lc).await;
    assert_eq!(report.state(), State::Terminated, "{report}");
    assert_eq!(report.sessions().completed(), 1, "{report}");
}

// ---- Around a plain tower service: no axum, no sockets ----

type PlainRequest = Request<Empty<Bytes>>;

fn request(version: Version, connection: Option<&ConnectionSession>) -> PlainRequest {
    let mut req = Request::builder()
        .uri("/plain")
        .version(version)
        .body(Empty::new())
        .unwrap();
    if let Some(connection) = connection {
        req.extensions_mut().insert(connection.clone());
    }
    req
}

/// Every response completed once stopping says `Connection: close` on HTTP/1 and not on
/// HTTP/2 (which forbids connection-specific headers), refusals included; and the layer
/// works around any tower service.
#[tokio::test]
async fn http2_responses_carry_no_connection_header() {
    let lc = Lifecycle::new();
    let svc = SessionLayer::new(lc.downgrade(), |req: &PlainRequest| {
        format!("{:?} {}", req.version(), req.uri().path())
    })
    .layer(tower::service_fn(|_req: PlainRequest| async {
        Ok::<_, Infallible>(Response::new(Full::new(Bytes::from("plain"))))
    }));
    let conn = ConnectionSession::new(lc.session("conn").unwrap());

    let running = svc.clone().oneshot(request(Version::HTTP_11, None)).await;
    assert!(running.unwrap().headers().get("connection").is_none());

    lc.stop("deploy");
    for (version, close) in [(Version::HTTP_11, Some("close")), (Version::HTTP_2, None)] {
        let served = svc.clone().oneshot(request(version, Some(&conn))).await;
        let served = served.unwrap();
        assert_eq!(served.status(), StatusCode::OK);
        let connection = served.headers().get("connection");
        assert_eq!(
            connection.map(|v| v.to_str().unwrap()),
            close,
            "{version:?}"
        );
        let body = served.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(body, "plain");

        let refused = svc.clone().oneshot(request(version, None)).await.unwrap();
        assert_eq!(refused.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(refused.headers()["retry-after"], "1");
        let connection = refused.headers().get("connection");
        assert_eq!(
            connection.map(|v| v.to_str().unwrap()),
            close,
            "{version:?}"
        );
        assert!(
            refused
                .into_body()
                .collect()
                .await
                .unwrap()
                .to_bytes()
                .is_empty()
        );
    }
    drop(conn);
    let report = ended(&lc).await;
    assert_eq!(report.sessions().admitted(), 4, "{report}");
    assert_eq!(report.sessions().refused(), 2, "{report}");
}

/// A service that fails ends the request's session when its future does; once the lifecycle
/// has ended, even a request under a live connection is refused.
#[tokio::test]
async fn an_error_ends_the_session_and_the_end_refuses_every_request() {
    let lc = Lifecycle::new();
    let svc = SessionLayer::new(lc.downgrade(), |_: &PlainRequest| "plain").layer(
        tower::service_fn(|_req: PlainRequest| async {
            Err::<Response<Empty<Bytes>>, _>(std::io::Error::other("backend down"))
        }),
    );
    let conn = ConnectionSession::new(lc.session("conn").unwrap());

    let failed = svc
        .clone()
        .oneshot(request(Version::HTTP_11, Some(&conn)))
        .await;
    assert_eq!(failed.unwrap_err().to_string(), "backend down");
    assert_eq!(lc.snapshot().live_sessions(), 1, "only the connection");

    lc.stop("deploy");
    lc.force(); // the connection is abandoned: the lifecycle has ended
    let report = ended(&lc).await;
    assert_eq!(report.state(), State::Abandoned, "{report}");
    let refused = svc.oneshot(request(Version::HTTP_11, Some(&conn))).await;
    let refused = refused.unwrap();
    assert_eq!(refused.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(refused.headers()["connection"] == "close");
    assert_eq!(lc.snapshot().refused_sessions(), 1);
}

// ---- A tonic gRPC server: tonic-health's pre-generated service, unchanged ----

/// The layer around tonic-health's `HealthServer` (a plain tower service), served by hyper
/// over HTTP/2 under a connection session and called with h2. A server-streaming `Watch`
/// begun before the stop keeps its session — and the drain — until the client cancels it;
/// a unary `Check` on the same connection while draining is served; no response carries a
/// connection-specific header.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tonic_health_service_drains_its_streams() {
    use tonic_health::ServingStatus;

    let lc = Lifecycle::builder().grace(PATIENCE).tokio().build();
    let (reporter, health) = tonic_health::server::health_reporter();
    let grpc = SessionLayer::new(lc.downgrade(), |req: &Request<Incoming>| {
        format!("{} {}", req.method(), req.uri().path())
    })
    .layer(health);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();

    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (accepted, peer) = listener.accept().await.unwrap();
    let conn = ConnectionSession::new(lc.session(format!("conn {peer}")).unwrap());
    tokio::spawn(async move {
        let service = hyper::service::service_fn(move |mut req: Request<Incoming>| {
            req.extensions_mut().insert(conn.clone());
            grpc.clone().oneshot(req)
        });
        let _ = hyper::server::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
            .serve_connection(TokioIo::new(accepted), service)
            .await;
    });

    let (client, connection) = h2::client::handshake(tcp).await.unwrap();
    tokio::spawn(connection);
    let mut client = client.ready().await.unwrap();
    // A gRPC call: one length-prefixed message, `HealthCheckRequest { service: "" }` (empty).
    let mut call = |method: &str| {
        let request = Request::post(format!("http://{addr}/grpc.health.v1.Health/{method}"))
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .body(())
            .unwrap();
        let (response, mut send) = client.send_request(request, false).unwrap();
        send.send_data(Bytes::from_static(&[0, 0, 0, 0, 0]), true)
            .unwrap();
        response
    };
    // `HealthCheckResponse { status }`, length-prefixed.
    let message = |status: ServingStatus| Bytes::from(vec![0, 0, 0, 0, 2, 0x08, status as u8]);

    let watch = call("Watch").await.unwrap();
    assert_eq!(watch.status(), StatusCode::OK);
    let mut watch = watch.into_body();
    let first = watch.data().await.unwrap().unwrap();
    assert_eq!(first, message(ServingStatus::Serving));

    lc.stop("SIGTERM");
    let snapshot = lc.snapshot();
    assert_eq!(snapshot.state(), State::Draining);
    let sessions = snapshot.oldest_sessions();
    assert_eq!(sessions[1].name(), "POST /grpc.health.v1.Health/Watch");
    assert_eq!(sessions[1].parent(), Some(&*format!("conn {peer}")));

    reporter
        .set_service_status("", ServingStatus::NotServing)
        .await;
    let second = watch.data().await.unwrap().unwrap();
    assert_eq!(second, message(ServingStatus::NotServing));

    // A unary call on the same connection while draining is served, in full.
    let check = call("Check").await.unwrap();
    assert_eq!(check.status(), StatusCode::OK);
    assert!(check.headers().get("connection").is_none(), "{check:?}");
    let mut check = check.into_body();
    let answer = check.data().await.unwrap().unwrap();
    assert_eq!(answer, message(ServingStatus::NotServing));
    let trailers = check.trailers().await.unwrap().unwrap();
    assert_eq!(trailers["grpc-status"], "0");
    assert_eq!(lc.state(), State::Draining, "the watch is still open");
    assert_eq!(
        lc.snapshot().live_sessions(),
        2,
        "the connection and the watch"
    );

    // The client cancels the watch and closes the connection: both sessions end.
    drop((watch, check, client));
    let report = ended(&lc).await;
    assert_eq!(report.state(), State::Terminated, "{report}");
    assert_eq!(report.sessions().completed(), 3, "{report}");
}
