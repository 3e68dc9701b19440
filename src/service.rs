//! Services: long-lived futures, each handed a [`StopSignal`], run to completion under a
//! panic catcher that reports how they ended.

use std::any::Any;
use std::error::Error;
use std::fmt;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures_util::FutureExt;
use futures_util::future::{Abortable, CatchUnwind};

use crate::complain::quietly;
use crate::machine::{Exit, ServiceId, StopCause};
use crate::shared::Shared;

/// What a service's future may return: `()`, or `Result<(), E>` for any error that converts
/// into `Box<dyn Error + Send + Sync>` (every `std::error::Error`, `String`, `&str`,
/// `anyhow::Error`, …).
///
/// An error is recorded with its whole `source()` chain.
pub trait ServiceResult: Send + 'static {
    /// How the service ended.
    fn into_exit(self) -> Exit;
}

impl ServiceResult for () {
    fn into_exit(self) -> Exit {
        Exit::Ok
    }
}

impl<E> ServiceResult for Result<(), E>
where
    E: Into<Box<dyn Error + Send + Sync>> + Send + 'static,
{
    fn into_exit(self) -> Exit {
        match self {
            Ok(()) => Exit::Ok,
            Err(error) => Exit::Err(error_chain(&*error.into())),
        }
    }
}

/// The error and its sources, joined with `": "`.
fn error_chain(error: &(dyn Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// The text of a panic payload: the message for `&str` and `String` payloads.
pub(crate) fn panic_text(payload: &(dyn Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "panic payload of a non-string type".to_owned()
    }
}

pub(crate) type Body = Pin<Box<dyn Future<Output = Exit> + Send>>;

/// A service's future as the lifecycle drives it: abortable, panic-catching, and reporting
/// its exit exactly once — even when it is dropped unfinished.
pub(crate) struct ServiceTask {
    shared: Arc<Shared>,
    id: Option<ServiceId>,
    /// `None` once it completed: dropped at once (under `catch_unwind`), so what it owns is
    /// released when it ends, whoever holds the task.
    body: Option<Abortable<CatchUnwind<AssertUnwindSafe<Body>>>>,
}

impl ServiceTask {
    pub(crate) fn new<R: ServiceResult>(
        shared: Arc<Shared>,
        id: ServiceId,
        body: impl Future<Output = R> + Send + 'static,
        registration: futures_util::future::AbortRegistration,
    ) -> Self {
        Self::from_exit(
            shared,
            id,
            Box::pin(body.map(ServiceResult::into_exit)),
            registration,
        )
    }

    /// A run whose output is already an [`Exit`] (a restartable service's factory makes
    /// those).
    pub(crate) fn from_exit(
        shared: Arc<Shared>,
        id: ServiceId,
        body: Body,
        registration: futures_util::future::AbortRegistration,
    ) -> Self {
        ServiceTask {
            shared,
            id: Some(id),
            body: Some(Abortable::new(
                AssertUnwindSafe(body).catch_unwind(),
                registration,
            )),
        }
    }

    /// Drops the service's future, swallowing a panic from its drop: a future that panics
    /// when dropped (by a `Wait`, an executor, the end of the lifecycle) must not take the
    /// report or the other services with it. The panic hook has reported it.
    fn drop_body(&mut self) {
        if let Some(body) = self.body.take() {
            quietly(|| drop(body));
        }
    }

    fn finish(&mut self, exit: Exit) {
        if let Some(id) = self.id.take() {
            self.shared.service_exited(id, exit);
        }
    }
}

impl fmt::Debug for ServiceTask {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServiceTask")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

impl Future for ServiceTask {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let Some(body) = self.body.as_mut() else {
            return Poll::Ready(());
        };
        let exit = match body.poll_unpin(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(Ok(Ok(exit))) => exit,
            Poll::Ready(Ok(Err(payload))) => Exit::Panic(panic_text(&*payload)),
            // Aborted only once the lifecycle was abandoned; the machine already recorded it.
            Poll::Ready(Err(_aborted)) => Exit::Dropped,
        };
        self.finish(exit);
        self.drop_body();
        Poll::Ready(())
    }
}

impl Drop for ServiceTask {
    fn drop(&mut self) {
        self.finish(Exit::Dropped);
        self.drop_body();
    }
}

/// What a driver (a `Wait`, or the spawner) runs for the lifecycle: a service, or a stop
/// trigger from [`Lifecycle::stop_on`](crate::Lifecycle::stop_on).
pub(crate) enum Task {
    Service(ServiceTask),
    Trigger(Trigger),
}

impl Future for Task {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        match self.get_mut() {
            Task::Service(task) => Pin::new(task).poll(cx),
            Task::Trigger(trigger) => Pin::new(trigger).poll(cx),
        }
    }
}

impl fmt::Debug for Task {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Task::Service(task) => task.fmt(f),
            Task::Trigger(_) => f.write_str("Trigger"),
        }
    }
}

/// A future that stops the lifecycle with its output as the cause; it gives up (and is
/// dropped) once the lifecycle stopped for another reason. It holds the shared state, not a
/// `Lifecycle` handle, so it keeps nothing alive.
pub(crate) struct Trigger {
    shared: Arc<Shared>,
    stop_key: Option<usize>,
    /// Dropped under `catch_unwind` (see `ServiceTask::drop_body`).
    fut: Option<Pin<Box<dyn Future<Output = StopCause> + Send>>>,
}

impl Trigger {
    pub(crate) fn new(
        shared: Arc<Shared>,
        fut: Pin<Box<dyn Future<Output = StopCause> + Send>>,
    ) -> Self {
        Trigger {
            shared,
            stop_key: None,
            fut: Some(fut),
        }
    }
}

impl Future for Trigger {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = &mut *self;
        let Some(fut) = this.fut.as_mut() else {
            return Poll::Ready(());
        };
        if this
            .shared
            .stop
            .poll_wait(&mut this.stop_key, cx)
            .is_ready()
        {
            let fut = this.fut.take();
            quietly(|| drop(fut));
            return Poll::Ready(());
        }
        let cause = std::task::ready!(fut.as_mut().poll(cx));
        let fut = this.fut.take();
        quietly(|| drop(fut));
        this.shared.apply(|m, now| m.request_stop(now, cause));
        Poll::Ready(())
    }
}

impl Drop for Trigger {
    fn drop(&mut self) {
        self.shared.stop.cancel(&mut self.stop_key);
        let fut = self.fut.take();
        quietly(|| drop(fut));
    }
}

/// Resolves when it is time to stop: for a service, when its dependents are done (at once,
/// for a service nothing running depends on); for everyone else, when the lifecycle starts
/// draining. The moment to stop taking new work and wrap up what is in flight.
///
/// Every service is handed one; [`Session::stop_signal`](crate::Session::stop_signal) and
/// [`Lifecycle::stop_signal`](crate::Lifecycle::stop_signal) give more. It is level-triggered:
/// once it fired, it is ready at every poll, so it can sit in a `select!` loop (a service's
/// own signal also fires when the lifecycle ends, released or not).
/// Cloning it is cheap; each clone waits on its own.
///
/// The signal a service's run receives is also how that run declares itself ready
/// ([`ready`](StopSignal::ready)), for a service added with
/// [`ServiceOptions::declares_ready`](crate::ServiceOptions::declares_ready).
///
/// # Examples
///
/// ```
/// use async_lifecycle::Lifecycle;
///
/// let lc = Lifecycle::new();
/// let stop = lc.stop_signal();
/// assert!(!stop.is_stopped());
/// lc.stop("deploy");
/// futures::executor::block_on(stop.clone());
/// assert!(stop.is_stopped());
/// assert_eq!(stop.cause().unwrap().to_string(), "requested: deploy");
/// ```
#[must_use = "futures do nothing unless you .await or poll them"]
pub struct StopSignal {
    shared: Arc<Shared>,
    /// The service run it was handed to, and which run: its own signal, and its readiness.
    service: Option<(ServiceId, u32)>,
    key: Option<usize>,
    /// Its registration with the service's own signal, once the lifecycle's fired.
    held_key: Option<usize>,
}

impl StopSignal {
    pub(crate) fn new(shared: Arc<Shared>) -> Self {
        StopSignal {
            shared,
            service: None,
            key: None,
            held_key: None,
        }
    }

    /// The signal of run `attempt` of service `id`.
    pub(crate) fn for_service(shared: Arc<Shared>, id: ServiceId, attempt: u32) -> Self {
        StopSignal {
            shared,
            service: Some((id, attempt)),
            key: None,
            held_key: None,
        }
    }

    /// Whether it fired: the stop was requested and, for a service's signal, its dependents
    /// are done.
    pub fn is_stopped(&self) -> bool {
        self.shared.stop.is_fired()
            && self
                .service
                .and_then(|(id, _)| self.shared.held(id))
                .is_none_or(|held| held.is_fired())
    }

    /// Why the lifecycle stopped, once it did.
    pub fn cause(&self) -> Option<&StopCause> {
        self.shared.cause()
    }

    /// Declares the service run this signal was handed to ready: its dependents
    /// ([`ServiceOptions::after`](crate::ServiceOptions::after)) may start, its start timeout
    /// no longer runs, and the live view shows it ready. Returns whether this call changed
    /// that: `false` when it was ready already, when the lifecycle is stopping, for the
    /// signal of an earlier run, or for a signal that was not handed to a service
    /// (a session's or the lifecycle's).
    ///
    /// # Examples
    ///
    /// ```
    /// use async_lifecycle::{Lifecycle, ServiceOptions};
    ///
    /// let lc = Lifecycle::new();
    /// lc.service_with("db", ServiceOptions::new().declares_ready(), |stop| async move {
    ///     // … open the pool …
    ///     stop.ready();
    ///     stop.await;
    /// })?;
    /// lc.service_with("api", ServiceOptions::new().after(["db"]), |stop| stop)?;
    /// lc.stop("demo");
    /// let report = futures::executor::block_on(lc.wait());
    /// assert_eq!(report.exit_code(), 0);
    /// # Ok::<(), async_lifecycle::ServiceError>(())
    /// ```
    pub fn ready(&self) -> bool {
        match self.service {
            Some((id, attempt)) => self.shared.ready(id, attempt),
            None => false,
        }
    }

    /// The instant by which this service must have stopped (its stop budget's end, else the
    /// lifecycle's deadline), once its signal fired.
    pub(crate) fn deadline(&self) -> Option<std::time::Instant> {
        let (id, _) = self.service?;
        self.shared.service_deadline(id)
    }
}

impl Clone for StopSignal {
    fn clone(&self) -> Self {
        StopSignal {
            shared: self.shared.clone(),
            service: self.service,
            key: None,
            held_key: None,
        }
    }
}

impl Future for StopSignal {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = &mut *self;
        std::task::ready!(this.shared.stop.poll_wait(&mut this.key, cx));
        // Set before `stop` fired: a service that had a dependent running waits for its own.
        match this.service.and_then(|(id, _)| this.shared.held(id)) {
            Some(held) => held.poll_wait(&mut this.held_key, cx),
            None => Poll::Ready(()),
        }
    }
}

impl Drop for StopSignal {
    fn drop(&mut self) {
        self.shared.stop.cancel(&mut self.key);
        if let Some(held) = self.service.and_then(|(id, _)| self.shared.held(id)) {
            held.cancel(&mut self.held_key);
        }
    }
}

impl fmt::Debug for StopSignal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StopSignal")
            .field("stopped", &self.is_stopped())
            .finish()
    }
}
