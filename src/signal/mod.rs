//! OS signals: the first SIGINT or SIGTERM stops the lifecycle, a second one forces it.
//!
//! Executor-agnostic: the signals are caught by a small handler of this crate's own
//! (installed with `sigaction`, see below) that writes one byte per delivery to a socket, and
//! turned into [`Lifecycle::stop`] and [`Lifecycle::force`] by background threads. Nothing
//! here needs a runtime.
//!
//! | signal received | effect |
//! |---|---|
//! | before the first [`SignalHandler`] is installed | whatever the program had set (by default: the process terminates) |
//! | the first SIGINT or SIGTERM | [`Lifecycle::stop`] with [`StopCause::Signal`] naming it (`"SIGINT"` or `"SIGTERM"`); a lifecycle already draining keeps its first cause |
//! | a second one (the same or the other), and any later one, while draining | [`Lifecycle::force`]: the lifecycle is `Abandoned` at once and the report names what was still running |
//! | one after the lifecycle ended, or after the handler was dropped | the disposition from before the first handler: `SIG_DFL` terminates the process, `SIG_IGN` ignores it, a handler the program had installed runs |
//!
//! # Before, during and after
//!
//! - **Before**: nothing is installed until [`SignalHandler::install`] (or
//!   [`Lifecycle::run_until_signal`]) is called.
//! - **During**: the first handler in the process saves the dispositions of SIGINT and
//!   SIGTERM and installs its own; while it is installed, a disposition found there that was a
//!   function (a handler the program or signal-hook had installed) is still called after
//!   ours, as signal-hook chains. Both signals are caught even if they were ignored before.
//!   Every delivery counts: two SIGTERMs in quick succession stop, then force (the kernel
//!   merges a signal sent while the same one is still pending, before any handler ran;
//!   nothing can count those apart). Several handlers may live at once (one per
//!   lifecycle): each delivery goes to every one of them.
//! - **After**: a handler is done when its lifecycle ends (`Terminated` or `Abandoned`) or
//!   when it is dropped, whichever comes first; its thread notices the end by itself, so
//!   nothing has to poll the [`UntilSignal`] future or drop the [`SignalHandler`]. When the
//!   last live handler is done, the saved dispositions are put back exactly and nothing of
//!   this module stays registered: a SIGTERM handler the program installs afterwards (with
//!   signal-hook or `tokio::signal`) runs, an inherited `SIG_IGN` ignores again, `SIG_DFL`
//!   terminates again. A delivery that raced the end (read by us after the lifecycle ended)
//!   is raised again once the dispositions are back, so it takes the restored one and is not
//!   lost.
//!
//! One exception: if the program installs its own handler for SIGINT or SIGTERM *while* a
//! [`SignalHandler`] lives, ours is left in its chain at the end instead of being removed
//! (removing it would remove theirs); inactive, it only calls on what it had found.
//!
//! # Why this module has unsafe code
//!
//! No safe crate can give a signal disposition back: signal-hook never removes its
//! OS-level handler, and once its last action is gone it lets a saved `SIG_DFL` turn into
//! "ignored". So a private module calls `sigaction` itself; it is the only unsafe code of the
//! crate, and its handler is async-signal-safe (atomics and one `write`). The socket it
//! writes to is created once and kept for the life of the process (two descriptors,
//! close-on-exec).
//!
//! The one-call entry point for `main` is [`Lifecycle::run_until_signal`]; to wait in
//! another way, keep a [`SignalHandler`] alive for as long as signals should stop the
//! lifecycle.
//!
//! # Examples
//!
//! ```no_run
//! use std::time::Duration;
//! use async_lifecycle::Lifecycle;
//!
//! let lc = Lifecycle::builder().grace(Duration::from_secs(10)).build();
//! lc.service("worker", |stop| async move {
//!     stop.await;
//!     Ok::<(), std::io::Error>(())
//! })
//! .unwrap();
//!
//! let report = futures::executor::block_on(lc.run_until_signal()).expect("signal handlers");
//! eprintln!("{report}");
//! std::process::exit(report.exit_code());
//! ```
//!
//! Only Unix is supported (the module is not compiled elsewhere).

mod os;

use std::future::Future;
use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::pin::Pin;
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Wake, Waker};
use std::thread::JoinHandle;
use std::{fmt, thread};

use libc::{SIGINT, SIGTERM, c_int};

use crate::{Lifecycle, Report, StopCause, Wait};

/// The name a signal number is reported under.
fn name(signal: c_int) -> &'static str {
    match signal {
        SIGINT => "SIGINT",
        SIGTERM => "SIGTERM",
        _ => "signal",
    }
}

/// Catches SIGINT and SIGTERM for a [`Lifecycle`] while it is alive: the first one stops the
/// lifecycle, a second one forces it (see the [module docs](self)).
///
/// It is done when the lifecycle ends or when it is dropped, whichever comes first; once no
/// `SignalHandler` in the process is live, SIGINT and SIGTERM have the dispositions they had
/// before the first one was installed (by default: terminate the process). Dropping it waits
/// for that. Its thread holds a [`Lifecycle`] handle, so while it lives the lifecycle does not
/// stop by itself for want of handles ([`StopCause::HandlesDropped`]).
///
/// # Examples
///
/// ```no_run
/// use async_lifecycle::Lifecycle;
/// use async_lifecycle::signal::SignalHandler;
///
/// let lc = Lifecycle::new();
/// let handler = SignalHandler::install(&lc).expect("signal handlers");
/// let report = futures::executor::block_on(lc.wait());
/// drop(handler);
/// println!("{report}");
/// ```
pub struct SignalHandler {
    /// To tell the thread the handler was dropped.
    close: Sender<Msg>,
    thread: Option<JoinHandle<()>>,
}

/// What a handler's thread is told.
enum Msg {
    /// A delivery of this signal.
    Signal(c_int),
    /// The lifecycle's end may have come: poll it again.
    Wake,
    /// The [`SignalHandler`] was dropped.
    Close,
}

/// The process-wide state, behind [`REGISTRY`].
struct Registry {
    /// The live handlers, each with the channel to its thread; the OS handler is installed
    /// while this is not empty.
    live: Vec<(u64, Sender<Msg>)>,
    next_id: u64,
    /// The socket the OS handler writes deliveries to: created at the first install and
    /// never closed, since a handler running on another thread may still write to it.
    pipe: Option<&'static Pipe>,
    /// Whether the reader thread runs.
    reader: bool,
    /// End markers (a `0` byte, written each time the last live handler went) written to the
    /// socket, and read by the reader: it stops once it has read them all with no handler
    /// live, so it has read every delivery.
    ends_written: u64,
    ends_read: u64,
}

struct Pipe {
    read: UnixStream,
    write: UnixStream,
}

static REGISTRY: Mutex<Registry> = Mutex::new(Registry {
    live: Vec::new(),
    next_id: 0,
    pipe: None,
    reader: false,
    ends_written: 0,
    ends_read: 0,
});

fn registry() -> MutexGuard<'static, Registry> {
    REGISTRY.lock().unwrap_or_else(|e| e.into_inner())
}

impl Registry {
    fn pipe(&mut self) -> io::Result<&'static Pipe> {
        if let Some(pipe) = self.pipe {
            return Ok(pipe);
        }
        let (read, write) = UnixStream::pair()?;
        // The signal handler must never block.
        write.set_nonblocking(true)?;
        let pipe: &'static Pipe = Box::leak(Box::new(Pipe { read, write }));
        self.pipe = Some(pipe);
        Ok(pipe)
    }

    /// The last live handler went: gives the dispositions back, then marks the end in the
    /// socket, after every delivery that reached our handler.
    fn end(&mut self) {
        os::deactivate();
        if let Some(pipe) = self.pipe {
            if (&pipe.write).write(&[0]).is_ok() {
                self.ends_written += 1;
            }
        }
    }
}

impl SignalHandler {
    /// Installs the SIGINT and SIGTERM handlers (or joins those already installed for another
    /// lifecycle) and starts the thread that turns deliveries into [`Lifecycle::stop`] (the
    /// first) and [`Lifecycle::force`] (the next ones), and gives the dispositions back when
    /// the lifecycle ends.
    ///
    /// # Errors
    ///
    /// The operating system refused to install the handlers or to create the socket or the
    /// threads; nothing stays installed then.
    pub fn install(lifecycle: &Lifecycle) -> io::Result<SignalHandler> {
        let mut registry = registry();
        let pipe = registry.pipe()?;
        if !registry.reader {
            thread::Builder::new()
                .name("async-lifecycle-signal-reader".into())
                .spawn(move || read(pipe))?;
            registry.reader = true;
        }
        let first = registry.live.is_empty();
        let started = if first {
            os::activate(pipe.write.as_raw_fd())
        } else {
            Ok(())
        }
        .and_then(|()| {
            let (sender, receiver) = mpsc::channel();
            let id = registry.next_id;
            let lifecycle = lifecycle.clone();
            let wake = Arc::new(WakeWith(sender.clone()));
            let thread = thread::Builder::new()
                .name("async-lifecycle-signals".into())
                .spawn(move || watch(&lifecycle, id, &receiver, wake.into()))?;
            Ok((id, sender, thread))
        });
        match started {
            Ok((id, sender, thread)) => {
                registry.next_id += 1;
                registry.live.push((id, sender.clone()));
                Ok(SignalHandler {
                    close: sender,
                    thread: Some(thread),
                })
            }
            Err(e) => {
                if first {
                    // Also lets the reader stop, having re-raised whatever came meanwhile.
                    registry.end();
                }
                Err(e)
            }
        }
    }
}

/// Sends [`Msg::Wake`] to a handler's thread: the waker of its `lc.ended()`.
struct WakeWith(Sender<Msg>);

impl Wake for WakeWith {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        // The thread is gone once the lifecycle ended: nothing to tell then.
        let _ = self.0.send(Msg::Wake);
    }
}

/// A handler's thread: counts deliveries until the lifecycle ends or the handler is dropped,
/// then leaves the registry.
fn watch(lifecycle: &Lifecycle, id: u64, receiver: &Receiver<Msg>, waker: Waker) {
    let mut cx = Context::from_waker(&waker);
    let mut ended = lifecycle.ended();
    let mut received = 0_usize;
    let mut late = Vec::new();
    while Pin::new(&mut ended).poll(&mut cx).is_pending() {
        match receiver.recv() {
            Ok(Msg::Signal(signal)) => {
                if Pin::new(&mut ended).poll(&mut cx).is_ready() {
                    late.push(signal);
                    break;
                }
                received += 1;
                if received == 1 {
                    lifecycle.stop(StopCause::Signal(name(signal)));
                } else {
                    lifecycle.force();
                }
            }
            Ok(Msg::Wake) => {}
            // The waker holds a sender, so the channel never closes before this returns.
            Ok(Msg::Close) | Err(_) => break,
        }
    }
    drop(ended);
    let mut registry = registry();
    registry.live.retain(|(live, _)| *live != id);
    // Routed here before it left the registry, and after the end (or the drop).
    late.extend(receiver.try_iter().filter_map(|msg| match msg {
        Msg::Signal(signal) => Some(signal),
        Msg::Wake | Msg::Close => None,
    }));
    if registry.live.is_empty() {
        registry.end();
        // After the restore: they take the disposition that is back. Another live handler
        // got them as well, so only the last one raises them.
        for signal in late {
            os::raise(signal);
        }
    }
}

/// The reader thread: hands each delivery to every live handler, or, when none is live (the
/// dispositions are back), raises it again so that it takes the restored disposition.
fn read(pipe: &'static Pipe) {
    let mut buffer = [0_u8; 64];
    loop {
        let read = match (&pipe.read).read(&mut buffer) {
            Ok(read) => read,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            // Cannot happen to a socket pair that is never closed; if it did, the next
            // install starts another reader.
            Err(_) => 0,
        };
        let mut registry = registry();
        for &byte in &buffer[..read] {
            let signal = c_int::from(byte);
            if signal == 0 {
                registry.ends_read += 1;
            } else if registry.live.is_empty() {
                os::raise(signal);
            } else {
                for (_, sender) in &registry.live {
                    let _ = sender.send(Msg::Signal(signal));
                }
            }
        }
        if read == 0 || registry.live.is_empty() && registry.ends_read == registry.ends_written {
            registry.reader = false;
            return;
        }
    }
}

impl Drop for SignalHandler {
    fn drop(&mut self) {
        // The thread is gone already if the lifecycle ended.
        let _ = self.close.send(Msg::Close);
        if let Some(thread) = self.thread.take() {
            // It never panics (stop and force do not), and if it did there would be nothing
            // better to do than go on.
            let _ = thread.join();
        }
    }
}

impl fmt::Debug for SignalHandler {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SignalHandler")
            .field(
                "done",
                &self.thread.as_ref().is_none_or(JoinHandle::is_finished),
            )
            .finish()
    }
}

#[cfg_attr(docsrs, doc(cfg(all(feature = "signal", unix))))]
impl Lifecycle {
    /// Runs until SIGINT or SIGTERM, drains, and returns the [`Report`]: the one call for
    /// `main`.
    ///
    /// What happens to SIGINT and SIGTERM (see the [module docs](crate::signal)):
    ///
    /// - **before this call**, whatever the program had set (by default they terminate the
    ///   process);
    /// - **from this call on** (not from the first poll, so a signal that arrives before the
    ///   first `.await` is not lost), the first one stops the lifecycle with
    ///   [`StopCause::Signal`], and every later one forces it, so it ends `Abandoned` at once
    ///   with the stragglers named; two in quick succession count as two;
    /// - **once the lifecycle has ended**, or the future is dropped, the dispositions from
    ///   before the first handler are back (`SIG_DFL`: a signal terminates the process;
    ///   `SIG_IGN`: ignored; a handler the program had installed: it runs), whether or not the
    ///   future is polled again; a signal that raced the end is raised again then, so it
    ///   takes that disposition. The report is handed back after that.
    ///
    /// The future is [`wait`](Lifecycle::wait) otherwise: it drives services that have no
    /// spawner and enforces the grace deadline.
    ///
    /// Only on Unix, with the `signal` feature.
    ///
    /// # Errors
    ///
    /// The future resolves to the error if the handlers could not be installed; the
    /// lifecycle is then left running.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # async fn demo() -> std::io::Result<()> {
    /// let lc = async_lifecycle::Lifecycle::new();
    /// // ... add services, start sessions from them ...
    /// let report = lc.run_until_signal().await?;
    /// eprintln!("{report}");
    /// std::process::exit(report.exit_code());
    /// # }
    /// ```
    pub fn run_until_signal(&self) -> UntilSignal {
        UntilSignal {
            wait: self.wait(),
            handler: Some(SignalHandler::install(self)),
        }
    }
}

/// Resolves with the [`Report`] once a signal-stopped lifecycle ends; see
/// [`Lifecycle::run_until_signal`].
#[must_use = "futures do nothing unless you .await or poll them"]
pub struct UntilSignal {
    wait: Wait,
    handler: Option<io::Result<SignalHandler>>,
}

impl Future for UntilSignal {
    type Output = io::Result<Report>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<Report>> {
        match self.handler.take() {
            Some(Err(e)) => return Poll::Ready(Err(e)),
            Some(Ok(handler)) => self.handler = Some(Ok(handler)),
            None => {}
        }
        let report = std::task::ready!(Pin::new(&mut self.wait).poll(cx));
        // The handler's thread gives the dispositions back at the end by itself; dropping it
        // waits for that, so they are back when the program gets the report.
        self.handler = None;
        Poll::Ready(Ok(report))
    }
}

impl fmt::Debug for UntilSignal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UntilSignal")
            .field("wait", &self.wait)
            .field("handler", &self.handler)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::State;
    use std::time::{Duration, Instant};

    /// Signals are process-wide: one test at a time installs handlers.
    static SERIAL: Mutex<()> = Mutex::new(());

    /// The stop cause, as displayed (whether `cause` returns it owned or borrowed).
    fn cause(lc: &Lifecycle) -> Option<String> {
        lc.cause().map(|cause| cause.to_string())
    }

    fn serial() -> MutexGuard<'static, ()> {
        SERIAL.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Waits (boundedly) until no handler is live and the reader stopped.
    fn until_uninstalled() {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let registry = registry();
            if registry.live.is_empty() && !registry.reader {
                break;
            }
            drop(registry);
            assert!(Instant::now() < deadline, "the handlers were not removed");
            thread::sleep(Duration::from_millis(1));
        }
    }

    fn assert_restored() {
        for signal in os::SIGNALS {
            assert!(!os::installed(signal));
            // The test harness leaves both at SIG_DFL.
            assert!(os::is_default(signal));
        }
    }

    #[test]
    fn first_signal_stops_second_forces_and_names_the_stragglers() {
        let _serial = serial();
        let lc = Lifecycle::new();
        let conn = lc.session("conn 127.0.0.1:5555").unwrap();
        let until = lc.run_until_signal();

        os::raise(SIGTERM);
        futures::executor::block_on(lc.stop_signal());
        assert_eq!(cause(&lc).as_deref(), Some("received SIGTERM"));
        assert_eq!(lc.state(), State::Draining);

        os::raise(SIGINT);
        let report = futures::executor::block_on(until).unwrap();
        assert_eq!(report.state(), State::Abandoned);
        assert!(report.forced());
        assert_eq!(report.cause(), Some(&StopCause::Signal("SIGTERM")));
        let names: Vec<&str> = report
            .sessions()
            .abandoned()
            .iter()
            .map(|s| s.name())
            .collect();
        assert_eq!(names, ["conn 127.0.0.1:5555"]);
        assert_eq!(report.exit_code(), 2);
        assert_restored();
        drop(conn);
    }

    #[test]
    fn a_signal_drains_to_terminated_and_the_thread_ends_with_the_lifecycle() {
        let _serial = serial();
        let lc = Lifecycle::new();
        lc.service("worker", |stop| async move {
            stop.await;
            Ok::<(), io::Error>(())
        })
        .unwrap();
        let mut until = lc.run_until_signal();
        assert!(os::installed(SIGINT) && os::installed(SIGTERM));

        os::raise(SIGINT);
        let report = futures::executor::block_on(&mut until).unwrap();
        assert_eq!(report.state(), State::Terminated);
        assert_eq!(report.cause(), Some(&StopCause::Signal("SIGINT")));
        assert_eq!(report.exit_code(), 0);
        // The handler was done (and joined) when the report was handed back.
        assert!(until.handler.is_none());
        assert!(registry().live.is_empty());
        assert_restored();
        until_uninstalled();
    }

    #[test]
    fn dropping_the_future_uninstalls() {
        let _serial = serial();
        let lc = Lifecycle::new();
        let until = lc.run_until_signal();
        assert!(matches!(&until.handler, Some(Ok(_))));
        assert_eq!(registry().live.len(), 1);
        assert!(os::installed(SIGTERM));
        drop(until);
        assert!(registry().live.is_empty());
        assert_restored();
        assert_eq!(lc.state(), State::Running);
        until_uninstalled();
    }

    /// Defect (c): raise runs the handler before it returns, so these are two deliveries in
    /// quick succession; signal-hook's iterator merged them into one.
    #[test]
    fn two_identical_signals_back_to_back_force() {
        let _serial = serial();
        let lc = Lifecycle::builder().grace(Duration::from_secs(600)).build();
        let conn = lc.session("held").unwrap();
        let until = lc.run_until_signal();
        os::raise(SIGTERM);
        os::raise(SIGTERM);
        // Bounded: not forced, it would drain for the whole grace.
        let deadline = Instant::now() + Duration::from_secs(30);
        while lc.state() != State::Abandoned {
            assert!(Instant::now() < deadline, "two SIGTERMs did not force");
            thread::sleep(Duration::from_millis(1));
        }
        let report = futures::executor::block_on(until).unwrap();
        assert_eq!(report.state(), State::Abandoned);
        assert!(report.forced());
        assert_eq!(report.cause(), Some(&StopCause::Signal("SIGTERM")));
        drop(conn);
    }

    /// Defect (b), in process: the end gives the dispositions back with the future neither
    /// polled nor dropped.
    #[test]
    fn the_end_uninstalls_without_a_poll_or_a_drop() {
        let _serial = serial();
        let lc = Lifecycle::new();
        let conn = lc.session("held").unwrap();
        let until = lc.run_until_signal();
        assert!(os::installed(SIGTERM));
        lc.force();
        assert_eq!(lc.state(), State::Abandoned);
        until_uninstalled();
        assert_restored();
        drop(until);
        drop(conn);
    }

    #[test]
    fn a_handler_for_an_ended_lifecycle_is_done_at_once() {
        let _serial = serial();
        let lc = Lifecycle::new();
        lc.force();
        let handler = SignalHandler::install(&lc).unwrap();
        until_uninstalled();
        assert_restored();
        drop(handler);
    }

    #[test]
    fn every_live_handler_gets_each_delivery_and_the_last_one_restores() {
        let _serial = serial();
        let first = Lifecycle::new();
        let second = Lifecycle::new();
        let held = (first.session("a").unwrap(), second.session("b").unwrap());
        let one = SignalHandler::install(&first).unwrap();
        let two = SignalHandler::install(&second).unwrap();
        os::raise(SIGTERM);
        futures::executor::block_on(first.stop_signal());
        futures::executor::block_on(second.stop_signal());
        assert_eq!(cause(&second).as_deref(), Some("received SIGTERM"));

        // One ends: the other still catches signals.
        first.force();
        futures::executor::block_on(first.ended());
        let deadline = Instant::now() + Duration::from_secs(30);
        while registry().live.len() != 1 {
            assert!(Instant::now() < deadline, "the first handler did not leave");
            thread::sleep(Duration::from_millis(1));
        }
        assert!(os::installed(SIGTERM));
        os::raise(SIGINT);
        futures::executor::block_on(second.ended());
        assert_eq!(second.state(), State::Abandoned);
        until_uninstalled();
        assert_restored();
        drop((one, two, held));
    }

    #[test]
    fn a_second_install_after_the_end_installs_again() {
        let _serial = serial();
        for _ in 0..3 {
            let lc = Lifecycle::new();
            let conn = lc.session("held").unwrap();
            let until = lc.run_until_signal();
            assert!(os::installed(SIGTERM));
            os::raise(SIGTERM);
            futures::executor::block_on(lc.stop_signal());
            drop(conn);
            let report = futures::executor::block_on(until).unwrap();
            assert_eq!(report.cause(), Some(&StopCause::Signal("SIGTERM")));
            assert_restored();
        }
        until_uninstalled();
    }
}
