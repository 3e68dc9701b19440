//! A tower [`Layer`] that runs every HTTP request as a session: for hyper, axum and tonic
//! servers.
//!
//! [`SessionLayer`] wraps any `tower_service::Service<http::Request<B>>` that answers with an
//! `http::Response`:
//!
//! - **One session per request**, named by a closure (`GET /users from 10.0.0.7:5123`): a
//!   straggler is named in the report, and the live view shows the requests in flight.
//! - **Under its connection**: a request that carries a [`ConnectionSession`] in its
//!   extensions (the server's per-connection code inserts it) runs as a
//!   [child](crate::Session::child) of that session, so it is admitted even while draining —
//!   its connection already delivered it — and named with its connection. A request without
//!   one gets a session of its own.
//! - **Until the response is sent**: the session lives in the response body
//!   ([`SessionBody`]) until its last frame is sent or the body is dropped (a client that went
//!   away), so a streaming response keeps the drain waiting; if the inner service fails, it
//!   ends when the inner future does. A panic in the inner future, the body or the naming
//!   closure ends the session as panicked, named (by the method and path when the closure
//!   panicked), with its message, and then goes on unwinding (`serve::serve` answers 500; with
//!   another server, put tower-http's `CatchPanicLayer` outside this layer to answer 500).
//! - **Refused outright** — no connection session and the lifecycle draining, or the
//!   lifecycle ended — a request is answered `503 Service Unavailable` with `Retry-After: 1`
//!   and `Connection: close`, and the inner service is not called.
//! - **`Connection: close`** on every HTTP/1 response completed once the stop was requested,
//!   so clients do not reuse the connection (not on HTTP/2, where connection-specific headers
//!   are forbidden: close those connections with a GOAWAY; not on `101 Switching Protocols`).
//!
//! The layer only sees requests: the server still has to stop accepting at the stop, close
//! idle kept-alive connections, and keep each connection's session until the connection ends.
//! `serve::serve` (feature `serve`) does that part for any tower service on tokio, an axum
//! `Router` behind this layer included, and inserts each connection's [`ConnectionSession`]
//! into its requests (see `examples/axum.rs`).
//!
//! # Examples
//!
//! An axum router behind the layer, served by hyper one connection at a time, each
//! connection a session and its requests its children:
//!
//! ```
//! use std::sync::Arc;
//! use async_lifecycle::Lifecycle;
//! use async_lifecycle::tower::{ConnectionSession, SessionLayer};
//! use axum::{Router, body::Body, http::Request, routing::get};
//! use tower_service::Service;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let lc = Lifecycle::new();
//! let mut app = Router::new().route("/", get(|| async { "ok" })).layer(SessionLayer::new(
//!     lc.downgrade(),
//!     |req: &Request<Body>| format!("{} {}", req.method(), req.uri().path()),
//! ));
//!
//! // Per connection (after `accept`): its session, inserted into each of its requests.
//! let conn = ConnectionSession::new(lc.session("conn 10.0.0.7:5123")?);
//! let mut req = Request::new(Body::empty());
//! req.extensions_mut().insert(conn.clone());
//!
//! lc.stop("deploy");
//! // Draining: a request its connection already delivered is still served, and told to close.
//! let served = app.call(req).await?;
//! assert_eq!(served.status(), 200);
//! assert_eq!(served.headers()["connection"], "close");
//! // A request on no connection's behalf is turned away.
//! let refused = app.call(Request::new(Body::empty())).await?;
//! assert_eq!(refused.status(), 503);
//! assert_eq!(refused.headers()["retry-after"], "1");
//!
//! // The request's session ends with its response body; the connection's, with its last
//! // clone.
//! drop((served, conn));
//! let report = lc.wait().await;
//! assert_eq!(report.sessions().completed(), 2);
//! # Ok(()) }
//! ```
//!
//! With hyper, insert the extension in the connection's service:
//! `service_fn(move |mut req| { req.extensions_mut().insert(conn.clone()); app.call(req) })`,
//! and drop the [`ConnectionSession`] when the connection ends.

use std::any::Any;
use std::borrow::Cow;
use std::convert::Infallible;
use std::fmt;
use std::future::Future;
use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use futures_util::FutureExt;
use http::header::{CONNECTION, HeaderValue, RETRY_AFTER};
use http::{Request, Response, StatusCode, Version};
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;
use tower_layer::Layer;
use tower_service::Service;

use crate::{Refused, Session, WeakLifecycle};

/// The session of the connection a request arrived on, as a request extension.
///
/// A server's per-connection code begins one session for the connection and inserts a clone
/// of this into every request it reads from it
/// (`request.extensions_mut().insert(conn.clone())`); [`SessionLayer`] then begins the
/// request's session as a [child](Session::child) of it. The connection's session ends when
/// the last clone is dropped: keep one for as long as the connection is served.
#[derive(Clone, Debug)]
pub struct ConnectionSession(pub Arc<Session>);

impl ConnectionSession {
    /// Wraps a connection's session.
    pub fn new(session: Session) -> Self {
        ConnectionSession(Arc::new(session))
    }
}

impl From<Session> for ConnectionSession {
    fn from(session: Session) -> Self {
        ConnectionSession::new(session)
    }
}

/// A tower [`Layer`]: every request runs as a session of the lifecycle; see the
/// [module docs](self).
///
/// `name` names each request's session: any `Fn(&http::Request<B>) -> R` where `R` is a
/// `String`, a `&'static str` or a `Cow<'static, str>`.
///
/// With axum, wrap the whole router (`SessionLayer::new(..).layer(router)`) rather than
/// adding it with `Router::layer`, which wraps and re-boxes every route: under wrk the former
/// served 0.95× of a bare handler, the latter 0.90× (BENCHMARKS.md, "Serving").
pub struct SessionLayer<N> {
    lifecycle: WeakLifecycle,
    name: Arc<N>,
}

impl<N> SessionLayer<N> {
    /// A layer that begins each request's session on `lifecycle`, named by `name`.
    pub fn new(lifecycle: WeakLifecycle, name: N) -> Self {
        SessionLayer {
            lifecycle,
            name: Arc::new(name),
        }
    }
}

impl<N> Clone for SessionLayer<N> {
    fn clone(&self) -> Self {
        SessionLayer {
            lifecycle: self.lifecycle.clone(),
            name: self.name.clone(),
        }
    }
}

impl<N> fmt::Debug for SessionLayer<N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SessionLayer")
            .field("lifecycle", &self.lifecycle)
            .finish_non_exhaustive()
    }
}

impl<S, N> Layer<S> for SessionLayer<N> {
    type Service = SessionService<S, N>;

    fn layer(&self, inner: S) -> Self::Service {
        SessionService {
            inner,
            lifecycle: self.lifecycle.clone(),
            name: self.name.clone(),
        }
    }
}

/// The service [`SessionLayer`] makes: `inner`, with every request run as a session.
pub struct SessionService<S, N> {
    inner: S,
    lifecycle: WeakLifecycle,
    name: Arc<N>,
}

impl<S: Clone, N> Clone for SessionService<S, N> {
    fn clone(&self) -> Self {
        SessionService {
            inner: self.inner.clone(),
            lifecycle: self.lifecycle.clone(),
            name: self.name.clone(),
        }
    }
}

impl<S: fmt::Debug, N> fmt::Debug for SessionService<S, N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SessionService")
            .field("inner", &self.inner)
            .field("lifecycle", &self.lifecycle)
            .finish_non_exhaustive()
    }
}

impl<S, N, R, B, ResBody> Service<Request<B>> for SessionService<S, N>
where
    S: Service<Request<B>, Response = Response<ResBody>>,
    N: Fn(&Request<B>) -> R,
    R: Into<Cow<'static, str>>,
{
    type Response = Response<SessionBody<ResBody>>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let http1 = request.version() <= Version::HTTP_11;
        let name = match catch_unwind(AssertUnwindSafe(|| (self.name)(&request).into())) {
            Ok(name) => name,
            // The request is still named in the report, as panicked, with the message.
            Err(payload) => {
                let name = format!(
                    "{} {} (naming it panicked)",
                    request.method(),
                    request.uri().path()
                );
                let payload = match self.begin(&request, name.into()) {
                    Ok(session) => record_panic(session, payload),
                    Err(_refused) => payload,
                };
                resume_unwind(payload)
            }
        };
        let session = self.begin(&request, name);
        let state = match session {
            // Held here while `call` runs: a panic in it ends the session as panicked.
            Ok(session) => State::Called {
                future: self.inner.call(request),
                session: Some(session),
                http1,
            },
            Err(_refused) => State::Refused { http1 },
        };
        ResponseFuture { state }
    }
}

impl<S, N> SessionService<S, N> {
    /// The request's session: a child of its connection's, else one of its own.
    fn begin<B>(&self, request: &Request<B>, name: Cow<'static, str>) -> Result<Session, Refused> {
        match request.extensions().get::<ConnectionSession>() {
            Some(ConnectionSession(connection)) => connection.child(name),
            None => self.lifecycle.session(name),
        }
    }
}

pin_project! {
    /// The future of a [`SessionService`] call.
    pub struct ResponseFuture<F> {
        #[pin]
        state: State<F>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<F> {
        Called {
            #[pin]
            future: F,
            session: Option<Session>,
            http1: bool,
        },
        Refused {
            http1: bool,
        },
    }
}

impl<F> fmt::Debug for ResponseFuture<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let refused = matches!(self.state, State::Refused { .. });
        f.debug_struct("ResponseFuture")
            .field("refused", &refused)
            .finish_non_exhaustive()
    }
}

impl<F, B, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response<B>, E>>,
{
    type Output = Result<Response<SessionBody<B>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().state.project() {
            StateProj::Refused { http1 } => Poll::Ready(Ok(refused(*http1))),
            StateProj::Called {
                future,
                session,
                http1,
            } => {
                let output = ready!(guarded(session, || future.poll(cx)));
                let session = session
                    .take()
                    .expect("ResponseFuture polled after completion");
                match output {
                    Ok(mut response) => {
                        // Decided once the work is done: a request that began before the
                        // stop and ends after it closes its connection too.
                        if *http1
                            && session.is_stopped()
                            && response.status() != StatusCode::SWITCHING_PROTOCOLS
                        {
                            response
                                .headers_mut()
                                .insert(CONNECTION, HeaderValue::from_static("close"));
                        }
                        Poll::Ready(Ok(
                            response.map(|body| SessionBody::streaming(body, session))
                        ))
                    }
                    // The session ends here: there is no body to carry it.
                    Err(error) => Poll::Ready(Err(error)),
                }
            }
        }
    }
}

/// The answer to a request refused outright.
fn refused<B>(http1: bool) -> Response<SessionBody<B>> {
    let mut response = Response::new(SessionBody::empty());
    *response.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
    let headers = response.headers_mut();
    headers.insert(RETRY_AFTER, HeaderValue::from_static("1"));
    if http1 {
        headers.insert(CONNECTION, HeaderValue::from_static("close"));
    }
    response
}

/// Runs `poll`; if it panics, ends `session` as panicked (named, with the panic's message)
/// and resumes the panic.
fn guarded<T>(session: &mut Option<Session>, poll: impl FnOnce() -> T) -> T {
    match catch_unwind(AssertUnwindSafe(poll)) {
        Ok(output) => output,
        Err(payload) => {
            let payload = match session.take() {
                Some(session) => record_panic(session, payload),
                None => payload,
            };
            resume_unwind(payload)
        }
    }
}

thread_local! {
    /// The address of the last panic payload [`record_panic`] recorded on this thread (0 for
    /// none): `serve` catches the panic further up and must not record it a second time.
    static RECORDED: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// Where a panic payload lives: the same box however often it is moved.
fn payload_address(payload: &(dyn Any + Send)) -> usize {
    (payload as *const (dyn Any + Send)).cast::<()>() as usize
}

/// Ends `session` as panicked, named, with the payload's message, and hands the payload
/// back to be resumed.
pub(crate) fn record_panic(session: Session, payload: Box<dyn Any + Send>) -> Box<dyn Any + Send> {
    // `Session::run` records the panic with its message; the future re-raises the payload
    // inside it and completes at its first poll.
    let rethrow = async move { rethrow(payload) };
    let payload = match session.run(rethrow).now_or_never() {
        Some(Err(panic)) => panic.into_payload(),
        Some(Ok(never)) => match never {},
        None => unreachable!("the re-raise completes at its first poll"),
    };
    RECORDED.with(|recorded| recorded.set(payload_address(&*payload)));
    payload
}

/// Whether this panic was already recorded on a request's session by the layer (and
/// forgets it).
#[allow(dead_code, reason = "used by the `serve` feature")]
pub(crate) fn was_recorded(payload: &(dyn Any + Send)) -> bool {
    RECORDED.with(|recorded| {
        let was = recorded.get() == payload_address(payload);
        if was {
            recorded.set(0);
        }
        was
    })
}

/// Re-raises a caught panic.
fn rethrow(payload: Box<dyn Any + Send>) -> Infallible {
    resume_unwind(payload)
}

pin_project! {
    /// A response body that holds the request's session until its last frame is sent or
    /// it is dropped; or the empty body of a refused request.
    pub struct SessionBody<B> {
        #[pin]
        kind: Kind<B>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<B> {
        Streaming {
            #[pin]
            body: B,
            session: Option<Session>,
        },
        Empty,
    }
}

impl<B> SessionBody<B> {
    fn streaming(body: B, session: Session) -> Self {
        SessionBody {
            kind: Kind::Streaming {
                body,
                session: Some(session),
            },
        }
    }

    fn empty() -> Self {
        SessionBody { kind: Kind::Empty }
    }
}

impl<B> fmt::Debug for SessionBody<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let session = match &self.kind {
            Kind::Streaming { session, .. } => session.as_ref(),
            Kind::Empty => None,
        };
        f.debug_struct("SessionBody")
            .field("session", &session)
            .finish_non_exhaustive()
    }
}

impl<B: Body> Body for SessionBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        match self.project().kind.project() {
            KindProj::Empty => Poll::Ready(None),
            KindProj::Streaming { mut body, session } => {
                let frame = ready!(guarded(session, || body.as_mut().poll_frame(cx)));
                // The last frame, or an error that ends the stream: the request is over.
                let ended = match &frame {
                    Some(Ok(_)) => body.is_end_stream(),
                    Some(Err(_)) | None => true,
                };
                if ended {
                    drop(session.take());
                }
                Poll::Ready(frame)
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Streaming { body, .. } => body.is_end_stream(),
            Kind::Empty => true,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Streaming { body, .. } => body.size_hint(),
            Kind::Empty => SizeHint::with_exact(0),
        }
    }
}
