//! OS signals: the first SIGINT or SIGTERM stops the lifecycle, a second one forces it.
//!
//! Executor-agnostic: the signals are caught by [`signal-hook`](signal_hook) (a self-pipe)
//! and read by one background thread, which calls [`Lifecycle::stop`] and
//! [`Lifecycle::force`]. Nothing here needs a runtime.
//!
//! | signal received | effect |
//! |---|---|
//! | the first SIGINT or SIGTERM | [`Lifecycle::stop`] with [`StopCause::Signal`] naming it (`"SIGINT"` or `"SIGTERM"`); a lifecycle already draining keeps its first cause |
//! | a second one, while draining | [`Lifecycle::force`]: the lifecycle is `Abandoned` at once and the report names what was still running |
//! | one after the lifecycle ended and the handler was dropped | the default action: the process terminates |
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

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll};
use std::thread::JoinHandle;
use std::{fmt, thread};

use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::iterator::{Handle, Signals};

use crate::{Lifecycle, Report, StopCause, Wait};

/// The signals that stop (then force) a lifecycle.
const STOP_SIGNALS: [i32; 2] = [SIGINT, SIGTERM];

/// The name a signal number is reported under.
fn name(signal: i32) -> &'static str {
    match signal {
        SIGINT => "SIGINT",
        SIGTERM => "SIGTERM",
        _ => "signal",
    }
}

/// Catches SIGINT and SIGTERM for a [`Lifecycle`] while it is alive: the first one stops the
/// lifecycle, a second one forces it (see the [module docs](self)).
///
/// Dropping it closes the signal pipe, joins its thread and unregisters its handlers; once no
/// `SignalHandler` is alive in the process, SIGINT and SIGTERM take their default action
/// again (terminating the process). Its thread holds a [`Lifecycle`] handle, so while it
/// lives the lifecycle does not stop by itself for want of handles
/// ([`StopCause::HandlesDropped`]).
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
    handle: Handle,
    thread: Option<JoinHandle<()>>,
}

impl SignalHandler {
    /// Registers handlers for SIGINT and SIGTERM and starts the thread that turns them into
    /// [`Lifecycle::stop`] (the first) and [`Lifecycle::force`] (the second).
    ///
    /// # Errors
    ///
    /// The operating system refused to register the handlers or to create the self-pipe or
    /// the thread.
    pub fn install(lifecycle: &Lifecycle) -> io::Result<SignalHandler> {
        let restore = DefaultAction::suspend()?;
        let mut signals = Signals::new(STOP_SIGNALS)?;
        let handle = signals.handle();
        let lifecycle = lifecycle.clone();
        let thread = thread::Builder::new()
            .name("async-lifecycle-signals".into())
            .spawn(move || {
                // Holds the default action off until this thread ends.
                let _restore = restore;
                let mut received = 0_usize;
                for signal in signals.forever() {
                    received += 1;
                    if received == 1 {
                        lifecycle.stop(StopCause::Signal(name(signal)));
                    } else {
                        lifecycle.force();
                    }
                }
            })?;
        Ok(SignalHandler {
            handle,
            thread: Some(thread),
        })
    }
}

impl Drop for SignalHandler {
    fn drop(&mut self) {
        self.handle.close();
        if let Some(thread) = self.thread.take() {
            // Closing the handle ends the thread's iterator at once; it never panics (stop and
            // force do not), and if it did there would be nothing better to do than go on.
            let _ = thread.join();
        }
    }
}

impl fmt::Debug for SignalHandler {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SignalHandler")
            .field("closed", &self.handle.is_closed())
            .finish()
    }
}

/// The process-wide switch that lets SIGINT and SIGTERM take their default action while no
/// [`SignalHandler`] is alive.
///
/// signal-hook never removes its low-level handler, and with no action registered a signal
/// would then be ignored. So, once per process, a conditional default action is registered
/// for each stop signal; it is held off while any handler lives.
struct DefaultAction;

/// Whether the default action runs; `false` while a [`SignalHandler`] lives.
static DEFAULT_ON: OnceLock<io::Result<Arc<AtomicBool>>> = OnceLock::new();
/// How many handlers live; guards the transitions of `DEFAULT_ON`.
static LIVE_HANDLERS: Mutex<usize> = Mutex::new(0);

impl DefaultAction {
    fn suspend() -> io::Result<DefaultAction> {
        let flag = DEFAULT_ON.get_or_init(|| {
            let flag = Arc::new(AtomicBool::new(true));
            for signal in STOP_SIGNALS {
                signal_hook::flag::register_conditional_default(signal, Arc::clone(&flag))?;
            }
            Ok(flag)
        });
        let flag = match flag {
            Ok(flag) => flag,
            Err(e) => return Err(io::Error::new(e.kind(), e.to_string())),
        };
        let mut live = LIVE_HANDLERS.lock().unwrap_or_else(|e| e.into_inner());
        *live += 1;
        // SeqCst: read by the signal handler, which synchronises with nothing else.
        flag.store(false, Ordering::SeqCst);
        Ok(DefaultAction)
    }
}

impl Drop for DefaultAction {
    fn drop(&mut self) {
        let mut live = LIVE_HANDLERS.lock().unwrap_or_else(|e| e.into_inner());
        *live -= 1;
        if *live == 0 {
            if let Some(Ok(flag)) = DEFAULT_ON.get() {
                // SeqCst: as above.
                flag.store(true, Ordering::SeqCst);
            }
        }
    }
}

impl Lifecycle {
    /// Runs until SIGINT or SIGTERM, drains, and returns the [`Report`]: the one call for
    /// `main`.
    ///
    /// The handlers are installed by this call (not at the first poll), so a signal that
    /// arrives between the call and the first `.await` is not lost. The first SIGINT or
    /// SIGTERM stops the lifecycle with [`StopCause::Signal`]; a second one forces it, so it
    /// ends `Abandoned` at once with the stragglers named. The future is
    /// [`wait`](Lifecycle::wait) otherwise: it drives services that have no spawner and
    /// enforces the grace deadline. The handlers are removed (see [`SignalHandler`]) when the
    /// lifecycle ends or the future is dropped.
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
        // Uninstall before handing the report back: the program may go on after it.
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
    use signal_hook::low_level::raise;

    /// Signals are process-wide: one test at a time raises them.
    static SERIAL: Mutex<()> = Mutex::new(());

    #[test]
    fn first_signal_stops_second_forces_and_names_the_stragglers() {
        let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
        let lc = Lifecycle::new();
        let conn = lc.session("conn 127.0.0.1:5555").unwrap();
        let until = lc.run_until_signal();

        raise(SIGTERM).unwrap();
        futures::executor::block_on(lc.stop_signal());
        assert_eq!(lc.cause(), Some(StopCause::Signal("SIGTERM")));
        assert_eq!(lc.state(), State::Draining);

        raise(SIGINT).unwrap();
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
        drop(conn);
    }

    #[test]
    fn a_signal_drains_to_terminated_and_the_thread_ends_with_the_lifecycle() {
        let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
        let lc = Lifecycle::new();
        lc.service("worker", |stop| async move {
            stop.await;
            Ok::<(), io::Error>(())
        })
        .unwrap();
        let mut until = lc.run_until_signal();
        assert!(
            DEFAULT_ON
                .get()
                .unwrap()
                .as_ref()
                .is_ok_and(|f| !f.load(Ordering::SeqCst))
        );

        raise(SIGINT).unwrap();
        let report = futures::executor::block_on(&mut until).unwrap();
        assert_eq!(report.state(), State::Terminated);
        assert_eq!(report.cause(), Some(&StopCause::Signal("SIGINT")));
        assert_eq!(report.exit_code(), 0);
        // The handler was uninstalled when the report was handed back.
        assert!(until.handler.is_none());
        let live = *LIVE_HANDLERS.lock().unwrap_or_else(|e| e.into_inner());
        assert_eq!(live, 0);
        assert!(
            DEFAULT_ON
                .get()
                .unwrap()
                .as_ref()
                .is_ok_and(|f| f.load(Ordering::SeqCst))
        );
    }

    #[test]
    fn dropping_the_future_uninstalls() {
        let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
        let lc = Lifecycle::new();
        let until = lc.run_until_signal();
        let handle = match &until.handler {
            Some(Ok(handler)) => handler.handle.clone(),
            _ => panic!("handlers were not installed"),
        };
        assert!(!handle.is_closed());
        drop(until);
        assert!(handle.is_closed());
        assert_eq!(lc.state(), State::Running);
    }
}
