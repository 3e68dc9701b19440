//! A hyper-util server loop whose connections survive a stop: for any tower service, an axum
//! `Router` as is.
//!
//! [`serve`] accepts connections from a tokio [`TcpListener`] and serves each with hyper-util's
//! automatic HTTP/1 / HTTP/2 connection, on its own tokio task:
//!
//! - **A session per connection**, named `conn PEER_ADDR`: the report names a connection that
//!   outlives the grace. Each request carries it as a [`ConnectionSession`] extension, so a
//!   [`SessionLayer`](crate::tower::SessionLayer) begins the request's session as its child,
//!   admitted while draining, and the peer address as a [`PeerAddr`] extension.
//! - **At the stop** (the [`StopSignal`] it is given fires): the connections the kernel had
//!   already accepted — the listener's backlog — are taken and served, then the listener is
//!   closed: new connections are refused, none is reset out of the backlog. `serve` then
//!   returns; the connections go on under their sessions, which the lifecycle waits for.
//! - **`Connection: close`** on every HTTP/1 response completed once the lifecycle stopped
//!   (except `101 Switching Protocols`), so clients do not reuse the connection.
//! - **The linger**: an idle kept-alive connection is not closed at the stop. For a short
//!   linger — by default a quarter of the time left until the deadline, at most one second
//!   ([`Serve::linger`]) — a request arriving on it is still answered (with
//!   `Connection: close`): the race where the server closes an idle connection just as the
//!   client sends on it is designed away. Then each connection is shut down gracefully with
//!   hyper's `graceful_shutdown`: an idle HTTP/1 connection is closed, a busy one closes after
//!   its response; HTTP/2 gets a GOAWAY and the streams in flight finish. An HTTP/1
//!   response begun before the stop (so it did not say `Connection: close`) and still being
//!   sent when the linger ends is let finish first, then the connection lingers again: its
//!   client may send the next request the moment it ends, and that request is answered.
//! - **A request half received** (HTTP/1 bytes read since the last response, its head not
//!   complete) is waited for after the linger rather than cut off: once it is complete it is
//!   answered, with `Connection: close`. A client that stalls mid-request past the grace is
//!   abandoned by the lifecycle, and the report names its connection (`conn PEER_ADDR`).
//! - **HTTP/1 pipelining**: requests a client sent behind one that ends with
//!   `Connection: close` are not read; the connection closes cleanly after that response, and
//!   the client retries what it left unanswered (RFC 9112 §9.3.2). They were never
//!   dispatched, so no session began: nothing admitted is lost. The half-received-request
//!   wait above sees only the bytes read since the last response: a pipelined request still
//!   incomplete behind one already answered (a client that pipelines, then stalls mid-request)
//!   is closed on at the end of the linger, and left to the same retry.
//! - **A panic** in the service (its `call`, its future) is answered `500 Internal Server
//!   Error` (HTTP/1: with `Connection: close`) instead of resetting the connection, and the
//!   report names the request as a panicked session with its message: as the
//!   [`SessionLayer`](crate::tower::SessionLayer)'s request session if the layer recorded it,
//!   else as `METHOD PATH` under its connection. A panic in a response body, once its head is
//!   sent, ends the connection (the layer names it).
//!
//! While it listens, `serve` holds one unnamed session: the parent of every connection's
//! session, so the connections taken from the backlog after the stop are admitted (the report
//! counts it; it ends when the listener closes). Connection-level accept errors (a reset or
//! aborted handshake) are skipped; any other accept error (out of file descriptors) ends
//! `serve` with it, which fails the service: the lifecycle stops and the report says why.
//!
//! `serve` must run on a tokio runtime (with the time and I/O drivers): it spawns each
//! connection with [`tokio::spawn`]. An upgraded connection (a WebSocket) leaves hyper when it
//! is upgraded, and its connection's session ends then: the upgrade's handler should begin a
//! session of its own for it.
//!
//! # Examples
//!
//! An axum router behind [`SessionLayer`](crate::tower::SessionLayer), served as a service:
//!
//! ```
//! use std::time::Duration;
//! use async_lifecycle::Lifecycle;
//! use async_lifecycle::serve::serve;
//! use async_lifecycle::tokio::BuilderExt;
//! use async_lifecycle::tower::SessionLayer;
//! use axum::{Router, http::Request, routing::get};
//! use hyper::body::Incoming;
//! use tower::Layer;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let lc = Lifecycle::builder().grace(Duration::from_secs(10)).tokio().build();
//! let router = Router::new().route("/", get(|| async { "ok" }));
//! // Around the whole router: `Router::layer` would wrap (and re-box) every route.
//! let app = SessionLayer::new(lc.downgrade(), |req: &Request<Incoming>| {
//!     format!("{} {}", req.method(), req.uri().path())
//! })
//! .layer(router);
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! let weak = lc.downgrade();
//! lc.service("http", move |stop| serve(weak, listener, app, stop))?;
//!
//! lc.stop("deploy");
//! let report = lc.wait().await;
//! assert_eq!(report.exit_code(), 0, "{report}");
//! # Ok(()) }
//! ```

use std::any::Any;
use std::error::Error as StdError;
use std::fmt;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering};
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant};

use futures_util::future::{Either, select};
use http::header::{CONNECTION, HeaderValue};
use http::{Request, Response, StatusCode, Version};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::service::{TowerToHyperService, TowerToHyperServiceFuture};
use pin_project_lite::pin_project;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use tower_service::Service;

use crate::tower::ConnectionSession;
use crate::{Session, StopSignal, WeakLifecycle};

/// The longest default linger of an idle kept-alive connection once stopping.
const MAX_LINGER: Duration = Duration::from_secs(1);

/// The peer address of the connection a request arrived on, as a request extension
/// (`request.extensions().get::<PeerAddr>()`), inserted by [`serve`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PeerAddr(pub SocketAddr);

/// Serves `service` on `listener` until `stop` fires, every connection a session of `lc`;
/// see the [module docs](self). Await it, typically as the body of a service:
/// `lc.service("http", move |stop| serve(weak, listener, app, stop))`.
///
/// It resolves once the listener is closed and its last connections (the backlog) are
/// handed to their tasks, with the accept error that ended it, if one did.
pub fn serve<S>(
    lc: WeakLifecycle,
    listener: TcpListener,
    service: S,
    stop: StopSignal,
) -> Serve<S> {
    Serve {
        parts: Some(Parts {
            lc,
            listener,
            service,
            stop,
            linger: None,
        }),
        running: None,
    }
}

/// The future [`serve`] returns; [`linger`](Serve::linger) sets the idle connections' linger
/// before it is first polled.
#[must_use = "futures do nothing unless you .await or poll them"]
pub struct Serve<S> {
    parts: Option<Parts<S>>,
    running: Option<Pin<Box<dyn Future<Output = io::Result<()>> + Send>>>,
}

struct Parts<S> {
    lc: WeakLifecycle,
    listener: TcpListener,
    service: S,
    stop: StopSignal,
    linger: Option<Duration>,
}

// `S` is never pinned: it is moved into the boxed future at the first poll.
impl<S> Unpin for Serve<S> {}

impl<S> Serve<S> {
    /// How long an idle kept-alive connection stays open once stopping, for a request the
    /// client may already be sending on it (default: a quarter of the time left until the
    /// deadline, at most one second). Has no effect once the future was polled.
    pub fn linger(mut self, linger: Duration) -> Self {
        if let Some(parts) = &mut self.parts {
            parts.linger = Some(linger);
        }
        self
    }
}

impl<S> fmt::Debug for Serve<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Serve")
            .field("started", &self.running.is_some())
            .finish_non_exhaustive()
    }
}

impl<S, B> Future for Serve<S>
where
    S: Service<Request<Incoming>, Response = Response<B>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<Box<dyn StdError + Send + Sync>>,
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn StdError + Send + Sync>>,
{
    type Output = io::Result<()>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        if let Some(parts) = this.parts.take() {
            this.running = Some(Box::pin(accept_loop(parts)));
        }
        match &mut this.running {
            Some(running) => running.as_mut().poll(cx),
            None => panic!("Serve polled after completion"),
        }
    }
}

/// Accepts until the stop; then takes the backlog and closes the listener.
async fn accept_loop<S, B>(parts: Parts<S>) -> io::Result<()>
where
    S: Service<Request<Incoming>, Response = Response<B>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<Box<dyn StdError + Send + Sync>>,
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn StdError + Send + Sync>>,
{
    let Parts {
        lc,
        listener,
        service,
        mut stop,
        linger,
    } = parts;
    // The parent of every connection's session: a connection taken from the backlog after
    // the stop is admitted as its child. None once the lifecycle is stopping: nothing to do.
    let Ok(listening) = lc.unnamed_session() else {
        return Ok(());
    };
    let connections_stop = stop.clone();
    // Owns the listening session: dropping it ends that session.
    let connection = move |tcp: TcpStream, peer: SocketAddr| {
        // Refused only once the lifecycle has ended: nobody is waiting for this one.
        if let Ok(session) = listening.child(format!("conn {peer}")) {
            tokio::spawn(connection(
                tcp,
                peer,
                session,
                service.clone(),
                lc.clone(),
                connections_stop.clone(),
                linger,
            ));
        }
    };
    loop {
        // The stop first: once it fired, nothing more is accepted here.
        match select(&mut stop, pin!(listener.accept())).await {
            Either::Left(((), _)) => break,
            Either::Right((Ok((tcp, peer)), _)) => connection(tcp, peer),
            Either::Right((Err(e), _)) if is_connection_error(&e) => {}
            Either::Right((Err(e), _)) => return Err(e),
        }
    }

    // The kernel completed these handshakes before the stop: serve them rather than let
    // the close reset them. Asking the socket itself, not tokio's cached readiness.
    let listener = listener.into_std()?;
    loop {
        match listener.accept() {
            Ok((tcp, peer)) => {
                tcp.set_nonblocking(true)?;
                connection(TcpStream::from_std(tcp)?, peer);
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) if is_connection_error(&e) => {}
            Err(e) => return Err(e),
        }
    }
    drop(listener);
    drop(connection);
    Ok(())
}

fn is_connection_error(e: &io::Error) -> bool {
    use io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset, Interrupted};
    matches!(
        e.kind(),
        ConnectionAborted | ConnectionRefused | ConnectionReset | Interrupted
    )
}

/// Serves one connection until the client closes it or, once stopping, until the linger
/// and any half-received request are over and it has been shut down gracefully.
async fn connection<S, B>(
    tcp: TcpStream,
    peer: SocketAddr,
    session: Session,
    service: S,
    lc: WeakLifecycle,
    mut stop: StopSignal,
    linger: Option<Duration>,
) where
    S: Service<Request<Incoming>, Response = Response<B>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<Box<dyn StdError + Send + Sync>>,
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn StdError + Send + Sync>>,
{
    let watch = Arc::new(Watch::new(ConnectionSession::new(session), lc));
    let service = ConnectionService {
        inner: TowerToHyperService::new(service),
        peer: PeerAddr(peer),
        watch: watch.clone(),
    };
    let io = TokioIo::new(Watched {
        tcp,
        watch: watch.clone(),
    });
    let builder = auto::Builder::new(TokioExecutor::new());
    // The session lives in the service (and in each request's extensions): it ends once the
    // connection has ended and its last request is dropped.
    let mut conn = pin!(builder.serve_connection_with_upgrades(io, service));

    // Errors (a client that went away mid-request) just end the connection.
    if let Either::Left(_) = select(conn.as_mut(), &mut stop).await {
        return;
    }
    let linger = linger.unwrap_or_else(|| default_linger(&stop));
    if let Either::Left(_) = select(conn.as_mut(), pin!(tokio::time::sleep(linger))).await {
        return;
    }
    watch.watched.store(true, Ordering::Relaxed);
    // A response that began before the stop (so it did not say `Connection: close`) and is
    // still being sent: its client may send its next request the moment it ends, and the
    // graceful shutdown would close the connection without reading it. Wait for it to end,
    // then linger again for that request (answered with `Connection: close`).
    if watch.unmarked.load(Ordering::Acquire) > 0 {
        while watch.unmarked.load(Ordering::Acquire) > 0 {
            if let Either::Left(_) = select(conn.as_mut(), pin!(watch.changed.notified())).await {
                return;
            }
        }
        let linger = default_linger(&stop).min(linger);
        if let Either::Left(_) = select(conn.as_mut(), pin!(tokio::time::sleep(linger))).await {
            return;
        }
    }
    // A request half received is not cut off: wait for its head (then the graceful shutdown
    // closes the connection after its response), or for the deadline to abandon it.
    while watch.mid_request() {
        if let Either::Left(_) = select(conn.as_mut(), pin!(watch.changed.notified())).await {
            return;
        }
    }
    conn.as_mut().graceful_shutdown();
    let _ = conn.await;
}

/// A quarter of the time left until the service's deadline, at most [`MAX_LINGER`].
fn default_linger(stop: &StopSignal) -> Duration {
    stop.deadline()
        .map_or(MAX_LINGER, |deadline| {
            deadline.saturating_duration_since(Instant::now()) / 4
        })
        .min(MAX_LINGER)
}

/// A connection's shared state, one `Arc` per connection (its requests' futures and bodies
/// hold a clone, not one of each field): its session and lifecycle, and what it last did, as
/// far as a half-received HTTP/1 request goes.
struct Watch {
    session: ConnectionSession,
    lc: WeakLifecycle,
    /// HTTP/1 responses sent without `Connection: close` (begun before the stop) whose body
    /// is still being written.
    unmarked: AtomicUsize,
    last: AtomicU8,
    /// Set once the connection task waits on `changed`.
    watched: AtomicBool,
    changed: Notify,
}

/// Nothing read yet.
const QUIET: u8 = 0;
/// Bytes read since the last request was dispatched or the last bytes written.
const READ: u8 = 1;
/// A request dispatched or bytes written since the last read.
const ANSWERED: u8 = 2;
/// HTTP/2 (its preface): frames come and go, and GOAWAY is graceful; never waited for.
const HTTP2: u8 = 3;

impl Watch {
    fn new(session: ConnectionSession, lc: WeakLifecycle) -> Self {
        Watch {
            session,
            lc,
            unmarked: AtomicUsize::new(0),
            last: AtomicU8::new(QUIET),
            watched: AtomicBool::new(false),
            changed: Notify::new(),
        }
    }

    fn read(&self, bytes: &[u8]) {
        let last = self.last.load(Ordering::Relaxed);
        if last == HTTP2 {
            return;
        }
        let next = if last == QUIET && bytes.starts_with(b"PRI ") {
            HTTP2
        } else {
            READ
        };
        self.set(next);
    }

    fn answered(&self) {
        if self.last.load(Ordering::Relaxed) != HTTP2 {
            self.set(ANSWERED);
        }
    }

    fn set(&self, last: u8) {
        self.last.store(last, Ordering::Relaxed);
        if self.watched.load(Ordering::Relaxed) {
            self.changed.notify_one();
        }
    }

    /// Whether an HTTP/1 request has begun arriving and was not dispatched yet.
    fn mid_request(&self) -> bool {
        self.last.load(Ordering::Relaxed) == READ
    }
}

/// The connection's socket, telling its [`Watch`] what was read and written.
struct Watched {
    tcp: TcpStream,
    watch: Arc<Watch>,
}

impl AsyncRead for Watched {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let result = ready!(Pin::new(&mut this.tcp).poll_read(cx, buf));
        if result.is_ok() && buf.filled().len() > before {
            this.watch.read(&buf.filled()[before..]);
        }
        Poll::Ready(result)
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let result = ready!(Pin::new(&mut this.tcp).poll_write(cx, buf));
        if matches!(result, Ok(n) if n > 0) {
            this.watch.answered();
        }
        Poll::Ready(result)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let result = ready!(Pin::new(&mut this.tcp).poll_write_vectored(cx, bufs));
        if matches!(result, Ok(n) if n > 0) {
            this.watch.answered();
        }
        Poll::Ready(result)
    }

    fn is_write_vectored(&self) -> bool {
        self.tcp.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().tcp).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().tcp).poll_shutdown(cx)
    }
}

/// The per-connection hyper service: the extensions in, `Connection: close` out.
struct ConnectionService<S> {
    inner: TowerToHyperService<S>,
    peer: PeerAddr,
    watch: Arc<Watch>,
}

impl<S, B> hyper::service::Service<Request<Incoming>> for ConnectionService<S>
where
    S: Service<Request<Incoming>, Response = Response<B>> + Clone,
{
    type Response = Response<TrackedBody<B>>;
    type Error = S::Error;
    type Future = ClosingFuture<TowerToHyperServiceFuture<S, Request<Incoming>>>;

    fn call(&self, mut request: Request<Incoming>) -> Self::Future {
        self.watch.answered();
        let http1 = request.version() <= Version::HTTP_11;
        // Kept to name the request if it panics (`Uri`'s parts are reference counted).
        let what = (request.method().clone(), request.uri().clone());
        let extensions = request.extensions_mut();
        extensions.insert(self.watch.session.clone());
        extensions.insert(self.peer);
        let call = catch_unwind(AssertUnwindSafe(|| {
            hyper::service::Service::call(&self.inner, request)
        }));
        let call = match call {
            Ok(future) => Call::Pending { future },
            Err(payload) => {
                record_unrecorded(&self.watch.session, &what, payload);
                Call::Panicked
            }
        };
        ClosingFuture {
            call,
            http1,
            watch: self.watch.clone(),
            what: Some(what),
        }
    }
}

/// A request's panic, caught: unless the [`SessionLayer`](crate::tower::SessionLayer)
/// already ended the request's session with it, the report names it as a panicked session
/// of its own (`METHOD PATH`, a child of its connection's), with its message.
fn record_unrecorded(
    connection: &ConnectionSession,
    (method, uri): &(http::Method, http::Uri),
    payload: Box<dyn Any + Send>,
) {
    if crate::tower::was_recorded(&*payload) {
        return;
    }
    if let Ok(session) = connection.0.child(format!("{method} {}", uri.path())) {
        drop(crate::tower::record_panic(session, payload));
    }
}

pin_project! {
    #[project = CallProj]
    enum Call<F> {
        Pending {
            #[pin]
            future: F,
        },
        // The service panicked (its `call` or its future): answered 500.
        Panicked,
    }
}

pin_project! {
    /// A response future that adds `Connection: close` to an HTTP/1 response completed once
    /// the lifecycle stopped, and answers 500 (and `Connection: close`) if the service panics.
    struct ClosingFuture<F> {
        #[pin]
        call: Call<F>,
        http1: bool,
        watch: Arc<Watch>,
        // To name the request if it panics.
        what: Option<(http::Method, http::Uri)>,
    }
}

impl<F, B, E> Future for ClosingFuture<F>
where
    F: Future<Output = Result<Response<B>, E>>,
{
    type Output = Result<Response<TrackedBody<B>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        let polled = match this.call.as_mut().project() {
            CallProj::Pending { future } => catch_unwind(AssertUnwindSafe(|| future.poll(cx))),
            CallProj::Panicked => return Poll::Ready(Ok(internal_error(*this.http1))),
        };
        let mut output = match polled {
            Ok(Poll::Pending) => return Poll::Pending,
            Ok(Poll::Ready(output)) => output,
            Err(payload) => {
                // The future is not polled again.
                this.call.set(Call::Panicked);
                if let Some(what) = this.what.take() {
                    record_unrecorded(&this.watch.session, &what, payload);
                }
                return Poll::Ready(Ok(internal_error(*this.http1)));
            }
        };
        drop(this.what.take());
        let mut unmarked = false;
        if let (Ok(response), true) = (&mut output, *this.http1) {
            let lc = &this.watch.lc;
            // Decided once the work is done: a request that began before the stop and ends
            // after it closes its connection too.
            if lc.is_stopped() && response.status() != StatusCode::SWITCHING_PROTOCOLS {
                response
                    .headers_mut()
                    .insert(CONNECTION, HeaderValue::from_static("close"));
            } else {
                unmarked = true;
            }
        }
        let watch = this.watch;
        Poll::Ready(output.map(|response| {
            response.map(|body| {
                let guard = unmarked.then(|| {
                    watch.unmarked.fetch_add(1, Ordering::AcqRel);
                    Unmarked(watch.clone())
                });
                TrackedBody {
                    kind: Tracked::Body { inner: body },
                    _unmarked: guard,
                }
            })
        }))
    }
}

/// The answer to a request whose service panicked: 500, and on HTTP/1 `Connection: close`
/// (the service may be left in a bad state; the client opens a new connection).
fn internal_error<B>(http1: bool) -> Response<TrackedBody<B>> {
    let mut response = Response::new(TrackedBody {
        kind: Tracked::Empty,
        _unmarked: None,
    });
    *response.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
    if http1 {
        response
            .headers_mut()
            .insert(CONNECTION, HeaderValue::from_static("close"));
    }
    response
}

/// Counts a response sent without `Connection: close` until its body is dropped (hyper
/// drops it once written, or when the connection ends).
struct Unmarked(Arc<Watch>);

impl Drop for Unmarked {
    fn drop(&mut self) {
        self.0.unmarked.fetch_sub(1, Ordering::AcqRel);
        // A permit if nobody waits yet: the connection task's next `notified()` completes.
        self.0.changed.notify_one();
    }
}

pin_project! {
    /// A response body, counted while it is being sent if its head did not say
    /// `Connection: close`; or the empty body of a 500 for a panic.
    struct TrackedBody<B> {
        #[pin]
        kind: Tracked<B>,
        _unmarked: Option<Unmarked>,
    }
}

pin_project! {
    #[project = TrackedProj]
    enum Tracked<B> {
        Body {
            #[pin]
            inner: B,
        },
        Empty,
    }
}

impl<B: http_body::Body> http_body::Body for TrackedBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        match self.project().kind.project() {
            TrackedProj::Body { inner } => inner.poll_frame(cx),
            TrackedProj::Empty => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Tracked::Body { inner } => inner.is_end_stream(),
            Tracked::Empty => true,
        }
    }

    fn size_hint(&self) -> http_body::SizeHint {
        match &self.kind {
            Tracked::Body { inner } => inner.size_hint(),
            Tracked::Empty => http_body::SizeHint::with_exact(0),
        }
    }
}
