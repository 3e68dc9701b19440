//! systemd's service notifications (`sd_notify`) for a [`Lifecycle`]: `READY=1` once it is
//! ready, `STOPPING=1` at the stop, a `STATUS=` line naming what the drain waits for, an
//! `EXTEND_TIMEOUT_USEC=` that lets the grace period (not `TimeoutStopSec=`) decide when the
//! drain ends, and the watchdog's `WATCHDOG=1`.
//!
//! Built on std's [`UnixDatagram`]: no `unsafe`, no dependency. The environment
//! (`NOTIFY_SOCKET`, `WATCHDOG_USEC`, `WATCHDOG_PID`) is read once, by
//! [`Notifier::from_env`], and never unset (child processes inherit it; a child that must not
//! notify should have it removed with [`Command::env_remove`](std::process::Command)).
//!
//! # What is sent
//!
//! [`Notifier::drive`] (or [`notify`]) makes a future, [`Notify`], to spawn on the
//! lifecycle's executor. It sends:
//!
//! | when | message |
//! |---|---|
//! | [`Snapshot::is_ready`] first holds (checked right away, then at growing intervals up to [`READY_POLL`]) | `READY=1` |
//! | every `WATCHDOG_USEC`/2, from its start to the end of the lifecycle, when `WATCHDOG_USEC` is set and `WATCHDOG_PID` is unset or this process's id | `WATCHDOG=1` |
//! | the stop (the lifecycle's [`StopSignal`](crate::StopSignal)); with a [pre-drain](crate::Builder::pre_drain), the request (looked for every [`READY_POLL`]) | `STOPPING=1` |
//! | at once, then every [`STATUS_EVERY`] while draining | `STATUS=draining: 2 sessions; oldest: conn 10.0.0.7:5123 (12.0s)` and `EXTEND_TIMEOUT_USEC=` |
//! | the end (`Terminated` or `Abandoned`) | nothing more: the future completes |
//!
//! `EXTEND_TIMEOUT_USEC` is the time left until the lifecycle's deadline (read from the
//! lifecycle: the stop plus its grace) plus [`EXTEND_MARGIN`]: systemd kills the process only
//! past that point, so the grace decides, whatever `TimeoutStopSec=` says (systemd only uses
//! the extension past the configured timeout). A lifecycle with no deadline (a grace of
//! `Duration::MAX`: only a force ends its drain) sends [`EXTEND_ROLLING`] instead, re-sent
//! every [`STATUS_EVERY`]: the drain may last as long as the process keeps sending.
//!
//! The task holds no [`Lifecycle`] handle (a [`WeakLifecycle`], the
//! stop signal, the clock): it keeps nothing alive, is no service and never appears in the
//! report. Every interval is measured on the lifecycle's [`Clock`], so a
//! [`ManualClock`](crate::ManualClock) drives it in tests. A failed send (no one listens on
//! the socket, a full queue: the socket does not block) is complained about once and never
//! panics; later messages are still tried.
//!
//! # Bad input
//!
//! A `NOTIFY_SOCKET` that is empty, neither an absolute path nor an `@abstract` name (or a
//! `vsock:` address, or an abstract name off Linux), too long for a Unix socket address, or
//! a `WATCHDOG_USEC`/`WATCHDOG_PID` that is not a positive number is a [`NotifyError`]:
//! the program should say so and exit, rather than run unnoticed until systemd's start
//! timeout kills it. An unset `NOTIFY_SOCKET` is `Ok(None)`: not under systemd.
//!
//! # Examples
//!
//! ```no_run
//! use std::time::Duration;
//! use async_lifecycle::Lifecycle;
//! use async_lifecycle::systemd::Notifier;
//! use async_lifecycle::tokio::BuilderExt;
//!
//! # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let grace = Duration::from_secs(10);
//! let notifier = Notifier::from_env()?; // a malformed NOTIFY_SOCKET: say so and exit
//! let lc = Lifecycle::builder().grace(grace).tokio().build();
//! lc.service("accept-loop", |stop| stop)?;
//! if let Some(notifier) = notifier {
//!     tokio::spawn(notifier.drive(&lc)); // ends with the lifecycle
//! }
//! let report = lc.run_until_signal().await?;
//! eprintln!("{report}");
//! # Ok(()) }
//! ```
//!
//! A sample unit file is `contrib/async-lifecycle-http.service`.

use std::error::Error;
use std::ffi::{OsStr, OsString};
use std::fmt;
use std::fmt::Write as _;
use std::future::Future;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures_util::future::{Either, select};

use crate::lifecycle::Ended;
use crate::machine::shown;
use crate::{Clock, Lifecycle, Snapshot, WeakLifecycle};

/// How often the `STATUS=` line (and `EXTEND_TIMEOUT_USEC=`) is sent while draining.
pub const STATUS_EVERY: Duration = Duration::from_secs(1);

/// Added to the time left until the lifecycle's deadline in `EXTEND_TIMEOUT_USEC=`: the time
/// the process has to write its report and exit once the lifecycle ended.
pub const EXTEND_MARGIN: Duration = Duration::from_secs(1);

/// `EXTEND_TIMEOUT_USEC=` when the lifecycle has no deadline (a grace of `Duration::MAX`): three
/// [`STATUS_EVERY`] intervals plus [`EXTEND_MARGIN`], re-sent every interval.
pub const EXTEND_ROLLING: Duration = Duration::from_secs(4);

/// The longest interval between two readiness checks before `READY=1` (they start at 5 ms
/// and double).
pub const READY_POLL: Duration = Duration::from_millis(100);

const READY_POLL_FIRST: Duration = Duration::from_millis(5);

/// The longest session name quoted in a `STATUS=` line, in characters.
const NAME_MAX: usize = 200;

/// The longest Unix socket path (`sun_path` less its terminating NUL), and the longest
/// abstract name (less its leading NUL).
const ADDRESS_MAX: usize = 107;

/// A malformed systemd environment, from [`Notifier::from_env`].
#[derive(Debug)]
#[non_exhaustive]
pub enum NotifyError {
    /// `NOTIFY_SOCKET` is set but empty.
    Empty,
    /// `NOTIFY_SOCKET` is neither an absolute path nor an `@abstract` name.
    Relative(OsString),
    /// `NOTIFY_SOCKET` is longer than a Unix socket address holds.
    TooLong {
        /// Its length in bytes (without the `@` of an abstract name).
        len: usize,
        /// The most a Unix socket address holds.
        max: usize,
    },
    /// `NOTIFY_SOCKET` is an address this build cannot send to: `vsock:`, or an abstract
    /// name on a system other than Linux and Android.
    Unsupported(OsString),
    /// The address or the socket could not be made.
    Socket(io::Error),
    /// `WATCHDOG_USEC` is not a positive number of microseconds.
    WatchdogUsec(OsString),
    /// `WATCHDOG_PID` is not a process id.
    WatchdogPid(OsString),
}

impl fmt::Display for NotifyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NotifyError::Empty => f.write_str("NOTIFY_SOCKET is set but empty"),
            NotifyError::Relative(value) => write!(
                f,
                "NOTIFY_SOCKET={:?} is neither an absolute path nor an @abstract name",
                value.to_string_lossy()
            ),
            NotifyError::TooLong { len, max } => write!(
                f,
                "NOTIFY_SOCKET is {len} bytes long; a Unix socket address holds at most {max}"
            ),
            NotifyError::Unsupported(value) => write!(
                f,
                "NOTIFY_SOCKET={:?} is an address this system cannot send to",
                value.to_string_lossy()
            ),
            NotifyError::Socket(e) => write!(f, "cannot make the NOTIFY_SOCKET socket: {e}"),
            NotifyError::WatchdogUsec(value) => write!(
                f,
                "WATCHDOG_USEC={:?} is not a positive number of microseconds",
                value.to_string_lossy()
            ),
            NotifyError::WatchdogPid(value) => write!(
                f,
                "WATCHDOG_PID={:?} is not a process id",
                value.to_string_lossy()
            ),
        }
    }
}

impl Error for NotifyError {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        match self {
            NotifyError::Socket(e) => Some(e),
            _ => None,
        }
    }
}

/// A connection to systemd's notification socket, from the environment.
pub struct Notifier {
    socket: UnixDatagram,
    addr: SocketAddr,
    /// `NOTIFY_SOCKET`, for complaints.
    target: OsString,
    /// `WATCHDOG_USEC`, when the watchdog is this process's.
    watchdog: Option<Duration>,
}

impl Notifier {
    /// Reads `NOTIFY_SOCKET`, `WATCHDOG_USEC` and `WATCHDOG_PID` (once; none is unset) and
    /// makes the socket.
    ///
    /// # Errors
    ///
    /// A [`NotifyError`] when they are malformed (see the [module docs](self)); `Ok(None)`
    /// when `NOTIFY_SOCKET` is unset: not under systemd (the watchdog variables are not
    /// looked at then).
    pub fn from_env() -> Result<Option<Notifier>, NotifyError> {
        let var = std::env::var_os;
        Notifier::from_vars(
            var("NOTIFY_SOCKET").as_deref(),
            var("WATCHDOG_USEC").as_deref(),
            var("WATCHDOG_PID").as_deref(),
            std::process::id(),
        )
    }

    /// [`from_env`](Notifier::from_env) on given values, for process `pid`.
    fn from_vars(
        socket: Option<&OsStr>,
        watchdog_usec: Option<&OsStr>,
        watchdog_pid: Option<&OsStr>,
        pid: u32,
    ) -> Result<Option<Notifier>, NotifyError> {
        let Some(target) = socket else {
            return Ok(None);
        };
        let addr = address(target)?;
        let usec = watchdog_usec
            .map(|v| positive(v).ok_or_else(|| NotifyError::WatchdogUsec(v.to_owned())))
            .transpose()?;
        let watchdog_pid = watchdog_pid
            .map(|v| {
                positive(v)
                    .and_then(|p| u32::try_from(p).ok())
                    .ok_or_else(|| NotifyError::WatchdogPid(v.to_owned()))
            })
            .transpose()?;
        let mine = watchdog_pid.is_none_or(|p| p == pid);
        let socket = UnixDatagram::unbound().map_err(NotifyError::Socket)?;
        // A full queue must not block the executor: the send fails instead.
        socket.set_nonblocking(true).map_err(NotifyError::Socket)?;
        Ok(Some(Notifier {
            socket,
            addr,
            target: target.to_owned(),
            watchdog: usec.filter(|_| mine).map(Duration::from_micros),
        }))
    }

    /// `WATCHDOG_USEC`, when the watchdog is this process's (`WATCHDOG_PID` unset or ours):
    /// [`drive`](Notifier::drive) sends `WATCHDOG=1` every half of it.
    pub fn watchdog(&self) -> Option<Duration> {
        self.watchdog
    }

    /// Sends one notification: newline-separated `KEY=value` assignments, like
    /// `"READY=1"` or `"STATUS=loading\nEXTEND_TIMEOUT_USEC=5000000"`.
    ///
    /// # Errors
    ///
    /// The send's error: no one listens there (`ConnectionRefused`, `NotFound`), or the
    /// queue is full (`WouldBlock`: the socket does not block).
    pub fn send(&self, state: &str) -> io::Result<()> {
        self.socket
            .send_to_addr(state.as_bytes(), &self.addr)
            .map(drop)
    }

    /// The task that notifies systemd of `lc`'s readiness, stop, drain and end, and feeds the
    /// watchdog (see the [module docs](self)). Spawn it on the executor that drives `lc`
    /// (its clock's timer must work there). It completes at the lifecycle's end and holds
    /// nothing that keeps the lifecycle alive.
    pub fn drive(self, lc: &Lifecycle) -> Notify {
        let task = run(
            Sender {
                notifier: self,
                complained: false,
            },
            lc.downgrade(),
            Arc::clone(lc.clock()),
            lc.ended(),
        );
        Notify {
            task: Box::pin(task),
        }
    }
}

impl fmt::Debug for Notifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Notifier")
            .field("socket", &self.target)
            .field("watchdog", &self.watchdog)
            .finish_non_exhaustive()
    }
}

/// [`Notifier::from_env`] and [`Notifier::drive`] in one call: `Ok(None)` when not under
/// systemd.
///
/// # Errors
///
/// A [`NotifyError`] for a malformed environment.
pub fn notify(lc: &Lifecycle) -> Result<Option<Notify>, NotifyError> {
    Ok(Notifier::from_env()?.map(|n| n.drive(lc)))
}

/// The notification task of a lifecycle, from [`Notifier::drive`]: spawn it. It completes at
/// the lifecycle's end.
#[must_use = "futures do nothing unless you .await or poll them"]
pub struct Notify {
    task: Pin<Box<dyn Future<Output = ()> + Send>>,
}

impl Future for Notify {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        self.task.as_mut().poll(cx)
    }
}

impl fmt::Debug for Notify {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Notify").finish_non_exhaustive()
    }
}

/// The socket's address from `NOTIFY_SOCKET`.
fn address(value: &OsStr) -> Result<SocketAddr, NotifyError> {
    let bytes = value.as_bytes();
    match bytes.first() {
        None => Err(NotifyError::Empty),
        Some(b'/') if bytes.len() > ADDRESS_MAX => Err(NotifyError::TooLong {
            len: bytes.len(),
            max: ADDRESS_MAX,
        }),
        Some(b'/') => SocketAddr::from_pathname(value).map_err(NotifyError::Socket),
        Some(b'@') => abstract_address(value, &bytes[1..]),
        Some(_) if bytes.starts_with(b"vsock:") => Err(NotifyError::Unsupported(value.to_owned())),
        Some(_) => Err(NotifyError::Relative(value.to_owned())),
    }
}

#[cfg(any(target_os = "linux", target_os = "android"))]
fn abstract_address(_value: &OsStr, name: &[u8]) -> Result<SocketAddr, NotifyError> {
    #[cfg(target_os = "android")]
    use std::os::android::net::SocketAddrExt;
    #[cfg(target_os = "linux")]
    use std::os::linux::net::SocketAddrExt;
    if name.len() > ADDRESS_MAX {
        return Err(NotifyError::TooLong {
            len: name.len(),
            max: ADDRESS_MAX,
        });
    }
    SocketAddr::from_abstract_name(name).map_err(NotifyError::Socket)
}

#[cfg(not(any(target_os = "linux", target_os = "android")))]
fn abstract_address(value: &OsStr, _name: &[u8]) -> Result<SocketAddr, NotifyError> {
    Err(NotifyError::Unsupported(value.to_owned()))
}

/// A positive decimal number.
fn positive(value: &OsStr) -> Option<u64> {
    let text = value.to_str()?;
    if !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok().filter(|&n| n > 0)
}

/// Sends, complaining about the first failure only.
struct Sender {
    notifier: Notifier,
    complained: bool,
}

impl Sender {
    fn send(&mut self, state: &str) {
        if let Err(e) = self.notifier.send(state) {
            if !std::mem::replace(&mut self.complained, true) {
                send_failed(&self.notifier.target, &e);
            }
        }
    }
}

fn send_failed(target: &OsStr, e: &io::Error) {
    let target = target.to_string_lossy();
    crate::complain::quietly(|| {
        #[cfg(feature = "tracing")]
        tracing::error!(target: "async_lifecycle", notify_socket = %target, error = %e, "cannot notify systemd; later failures are not reported");
        #[cfg(not(feature = "tracing"))]
        {
            use std::io::Write;
            let _ = writeln!(
                std::io::stderr().lock(),
                "async-lifecycle: cannot notify systemd at NOTIFY_SOCKET={target:?}: {e}; later failures are not reported"
            );
        }
    });
}

/// The watchdog's next ping after one due at `due`: one half-period later, or one from now
/// when the executor was so late that pings were missed (no burst to catch up).
fn next_ping(due: Instant, half: Duration, now: Instant) -> Instant {
    let next = due + half;
    if next > now { next } else { now + half }
}

/// The notification task (see the module docs).
async fn run(mut out: Sender, lc: WeakLifecycle, clock: Arc<dyn Clock>, mut ended: Ended) {
    let half = out.notifier.watchdog.map(|w| w / 2);
    let mut ping = half.map(|h| clock.now() + h);
    let mut stop = lc.stop_signal();

    // Running: READY=1 once ready, and the watchdog. With a pre-drain, a stop is requested
    // before the stop signal fires: looked for every READY_POLL, so that STOPPING=1 and the
    // extension come at the request (the deadline is counted from it).
    let pre_drain = lc.has_pre_drain();
    let mut ready_check = Some((clock.now(), READY_POLL_FIRST));
    while !lc.stop_requested() {
        let now = clock.now();
        if let Some((due, poll)) = ready_check {
            if now >= due {
                ready_check = if lc.snapshot().is_ready() {
                    out.send("READY=1");
                    None
                } else {
                    Some((now + poll, (poll * 2).min(READY_POLL)))
                };
            }
        }
        feed(&mut out, &mut ping, half, now);
        let requested_check = pre_drain.then(|| now + READY_POLL);
        let wake = [ready_check.map(|(due, _)| due), ping, requested_check]
            .into_iter()
            .flatten()
            .min();
        match wake {
            Some(at) => drop(select(&mut stop, clock.sleep_until(at)).await),
            None => (&mut stop).await,
        }
    }
    drop(stop);

    // Draining: STOPPING=1, then STATUS= and EXTEND_TIMEOUT_USEC= until the end.
    if lc.state().is_terminal() {
        return;
    }
    out.send("STOPPING=1");
    // The lifecycle's own deadline (the request plus the grace, pre-drain included).
    let deadline = lc.stop_deadline();
    let mut status_due = clock.now();
    loop {
        let now = clock.now();
        if now >= status_due {
            let snapshot = lc.snapshot();
            if snapshot.state().is_terminal() {
                return;
            }
            let extend = match deadline {
                Some(deadline) => deadline.saturating_duration_since(now) + EXTEND_MARGIN,
                None => EXTEND_ROLLING,
            };
            out.send(&format!(
                "STATUS={}\nEXTEND_TIMEOUT_USEC={}",
                status(&snapshot),
                extend.as_micros()
            ));
            status_due = now + STATUS_EVERY;
        }
        feed(&mut out, &mut ping, half, now);
        let wake = ping.map_or(status_due, |p| p.min(status_due));
        if let Either::Left(_) = select(&mut ended, clock.sleep_until(wake)).await {
            return;
        }
    }
}

/// `WATCHDOG=1` when the next ping is due.
fn feed(out: &mut Sender, ping: &mut Option<Instant>, half: Option<Duration>, now: Instant) {
    if let (Some(due), Some(half)) = (*ping, half) {
        if now >= due {
            out.send("WATCHDOG=1");
            *ping = Some(next_ping(due, half, now));
        }
    }
}

/// The `STATUS=` text while draining: the live sessions, the oldest by name and age, and the
/// services still running. One line.
fn status(snapshot: &Snapshot) -> String {
    let live = snapshot.live_sessions();
    // In a pre-drain the server still serves (not ready): nothing is stopping yet.
    let pre_drain = snapshot.is_stopping();
    let mut text = format!(
        "{}: {live} session{}",
        if pre_drain {
            "pre-drain (not ready)"
        } else {
            "draining"
        },
        if live == 1 { "" } else { "s" }
    );
    if let Some(oldest) = snapshot.oldest_sessions().first() {
        let name: String = shown(oldest.name()).chars().take(NAME_MAX).collect();
        let _ = write!(text, "; oldest: {name} ({:.1?})", oldest.age());
    }
    let running = snapshot
        .services()
        .iter()
        .filter(|s| s.is_running())
        .count();
    if running > 0 && !pre_drain {
        let _ = write!(
            text,
            "; {running} service{} stopping",
            if running == 1 { "" } else { "s" }
        );
    }
    text
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use crate::{ManualClock, ServiceOptions};
    use futures::executor::LocalPool;
    use futures::task::LocalSpawnExt;
    use std::path::PathBuf;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn os(s: &str) -> Option<&OsStr> {
        Some(OsStr::new(s))
    }

    fn parse(
        socket: Option<&str>,
        usec: Option<&str>,
        pid: Option<&str>,
    ) -> Result<Option<Notifier>, NotifyError> {
        Notifier::from_vars(socket.and_then(os), usec.and_then(os), pid.and_then(os), 42)
    }

    #[test]
    fn not_under_systemd_is_none() {
        assert!(parse(None, Some("x"), Some("y")).unwrap().is_none());
    }

    #[test]
    fn malformed_sockets_are_errors() {
        assert!(matches!(
            parse(Some(""), None, None),
            Err(NotifyError::Empty)
        ));
        assert!(matches!(
            parse(Some("run/notify"), None, None),
            Err(NotifyError::Relative(_))
        ));
        assert!(matches!(
            parse(Some("vsock:2:1234"), None, None),
            Err(NotifyError::Unsupported(_))
        ));
        let long = format!("/{}", "x".repeat(ADDRESS_MAX));
        let e = parse(Some(&long), None, None).unwrap_err();
        assert!(
            matches!(e, NotifyError::TooLong { len: 108, max: 107 }),
            "{e}"
        );
        assert_eq!(
            e.to_string(),
            "NOTIFY_SOCKET is 108 bytes long; a Unix socket address holds at most 107"
        );
        let e = parse(Some("run/notify"), None, None).unwrap_err();
        assert_eq!(
            e.to_string(),
            "NOTIFY_SOCKET=\"run/notify\" is neither an absolute path nor an @abstract name"
        );
        // The longest path that fits is fine (sending to it fails later, once).
        assert!(
            parse(Some(&long[..ADDRESS_MAX]), None, None)
                .unwrap()
                .is_some()
        );
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn abstract_names() {
        assert!(parse(Some("@name"), None, None).unwrap().is_some());
        let long = format!("@{}", "x".repeat(ADDRESS_MAX + 1));
        assert!(matches!(
            parse(Some(&long), None, None),
            Err(NotifyError::TooLong { len: 108, .. })
        ));
    }

    #[test]
    fn watchdog_variables() {
        let n = |usec, pid| parse(Some("/run/notify"), usec, pid);
        assert_eq!(n(None, None).unwrap().unwrap().watchdog(), None);
        let ours = n(Some("100000"), None).unwrap().unwrap();
        assert_eq!(ours.watchdog(), Some(Duration::from_millis(100)));
        assert_eq!(
            n(Some("100000"), Some("42")).unwrap().unwrap().watchdog(),
            Some(Duration::from_millis(100))
        );
        assert_eq!(
            n(Some("100000"), Some("43")).unwrap().unwrap().watchdog(),
            None,
            "another process's"
        );
        for bad in ["", "0", "-5", "1e6", "10s", " 5"] {
            assert!(
                matches!(n(Some(bad), None), Err(NotifyError::WatchdogUsec(_))),
                "{bad:?}"
            );
            assert!(
                matches!(n(Some("5"), Some(bad)), Err(NotifyError::WatchdogPid(_))),
                "{bad:?}"
            );
        }
        assert!(matches!(
            n(Some("5"), Some("99999999999")),
            Err(NotifyError::WatchdogPid(_))
        ));
    }

    /// A bound datagram socket in a fresh temporary directory, removed on drop.
    struct Listener {
        dir: PathBuf,
        path: PathBuf,
        socket: UnixDatagram,
    }

    impl Listener {
        fn new() -> Listener {
            static NEXT: AtomicUsize = AtomicUsize::new(0);
            let dir = std::env::temp_dir().join(format!(
                "async-lifecycle-systemd-{}-{}",
                std::process::id(),
                NEXT.fetch_add(1, Ordering::Relaxed)
            ));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).unwrap();
            let path = dir.join("notify");
            let socket = UnixDatagram::bind(&path).unwrap();
            socket.set_nonblocking(true).unwrap();
            Listener { dir, path, socket }
        }

        /// Every message received so far.
        fn received(&self) -> Vec<String> {
            let mut buf = [0; 4096];
            let mut out = Vec::new();
            while let Ok(n) = self.socket.recv(&mut buf) {
                out.push(String::from_utf8(buf[..n].to_vec()).unwrap());
            }
            out
        }
    }

    impl Drop for Listener {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }

    #[test]
    fn the_whole_sequence_on_a_manual_clock() {
        let listener = Listener::new();
        let notifier = Notifier::from_vars(Some(listener.path.as_os_str()), os("100000"), None, 1)
            .unwrap()
            .unwrap();
        let clock = ManualClock::new();
        let lc = Lifecycle::builder()
            .grace(Duration::from_secs(10))
            .clock(clock.clone())
            .build();
        let (tx, rx) = futures::channel::oneshot::channel::<()>();
        let mut rx = Some(rx);
        lc.service_with("db", ServiceOptions::new().declares_ready(), move |stop| {
            let rx = rx.take();
            async move {
                if let Some(rx) = rx {
                    let _ = rx.await;
                }
                stop.ready();
                stop.await;
            }
        })
        .unwrap();
        let session = lc.session("conn 10.0.0.7:5123\nforged=1").unwrap();
        let mut pool = LocalPool::new();
        let spawner = pool.spawner();
        let notify = spawner
            .spawn_local_with_handle(notifier.drive(&lc))
            .unwrap();
        let wait = spawner.spawn_local_with_handle(lc.wait()).unwrap();
        pool.run_until_stalled();
        assert_eq!(listener.received(), Vec::<String>::new(), "not ready yet");

        tx.send(()).unwrap();
        pool.run_until_stalled();
        clock.advance(Duration::from_millis(5)); // the next readiness check
        pool.run_until_stalled();
        assert_eq!(listener.received(), ["READY=1"]);
        clock.advance(Duration::from_millis(45));
        pool.run_until_stalled();
        assert_eq!(listener.received(), ["WATCHDOG=1"]);
        clock.advance(Duration::from_millis(120)); // late: one ping, no burst
        pool.run_until_stalled();
        assert_eq!(listener.received(), ["WATCHDOG=1"]);
        clock.advance(Duration::from_millis(30)); // 200 ms: the next is at 220 ms
        pool.run_until_stalled();
        assert_eq!(listener.received(), Vec::<String>::new());

        lc.stop("deploy");
        pool.run_until_stalled();
        let got = listener.received();
        assert_eq!(got.len(), 2, "{got:?}");
        assert_eq!(got[0], "STOPPING=1");
        // "db" may or may not have ended when the notifier looked: "; 1 service stopping".
        let oldest = "STATUS=draining: 1 session; oldest: conn 10.0.0.7:5123\\nforged=1";
        assert!(
            got[1].starts_with(&format!("{oldest} (200.0ms)")),
            "{got:?}"
        );
        assert!(
            got[1].ends_with("\nEXTEND_TIMEOUT_USEC=11000000"),
            "{got:?}"
        );
        clock.advance(Duration::from_millis(1000));
        pool.run_until_stalled();
        assert_eq!(
            listener.received(),
            [
                format!("{oldest} (1.2s)\nEXTEND_TIMEOUT_USEC=10000000"),
                "WATCHDOG=1".to_owned(),
            ],
            "one ping after a long sleep, no burst"
        );

        drop(session);
        pool.run_until_stalled();
        let report = pool.run_until(wait);
        assert_eq!(report.exit_code(), 0, "{report}");
        assert!(report.service("db").is_some());
        assert_eq!(report.services().len(), 1, "the notifier is no service");
        pool.run_until(notify);
        assert_eq!(
            listener.received(),
            Vec::<String>::new(),
            "nothing after the end"
        );
    }

    #[test]
    fn without_a_deadline_the_extension_rolls_and_services_are_named() {
        let listener = Listener::new();
        let notifier = Notifier::from_vars(Some(listener.path.as_os_str()), None, None, 1)
            .unwrap()
            .unwrap();
        let clock = ManualClock::new();
        let lc = Lifecycle::builder()
            .clock(clock.clone())
            .grace(Duration::MAX)
            .build();
        lc.service("stubborn", |_stop| futures::future::pending::<()>())
            .unwrap();
        let mut pool = LocalPool::new();
        let spawner = pool.spawner();
        let notify = spawner
            .spawn_local_with_handle(notifier.drive(&lc))
            .unwrap();
        let wait = spawner.spawn_local_with_handle(lc.wait()).unwrap();
        pool.run_until_stalled();
        clock.advance(READY_POLL_FIRST);
        pool.run_until_stalled();
        assert_eq!(listener.received(), ["READY=1"]);
        clock.advance(Duration::from_secs(60));
        pool.run_until_stalled();
        assert_eq!(listener.received(), Vec::<String>::new(), "no watchdog");
        lc.stop("deploy");
        pool.run_until_stalled();
        assert_eq!(
            listener.received(),
            [
                "STOPPING=1",
                "STATUS=draining: 0 sessions; 1 service stopping\nEXTEND_TIMEOUT_USEC=4000000",
            ]
        );
        clock.advance(STATUS_EVERY);
        pool.run_until_stalled();
        assert_eq!(
            listener.received(),
            ["STATUS=draining: 0 sessions; 1 service stopping\nEXTEND_TIMEOUT_USEC=4000000"],
            "re-sent: it rolls"
        );
        lc.force();
        let report = pool.run_until(wait);
        assert_eq!(report.exit_code(), 2);
        pool.run_until(notify);
        assert_eq!(
            listener.received(),
            Vec::<String>::new(),
            "nothing after the end"
        );
    }

    /// The extension is counted from the lifecycle's own deadline: with a pre-drain, from the
    /// request (the grace includes the pre-drain), not from the drain's start.
    #[test]
    fn the_extension_counts_from_the_lifecycles_deadline() {
        let listener = Listener::new();
        let notifier = Notifier::from_vars(Some(listener.path.as_os_str()), None, None, 1)
            .unwrap()
            .unwrap();
        let clock = ManualClock::new();
        let lc = Lifecycle::builder()
            .clock(clock.clone())
            .grace(Duration::from_secs(10))
            .pre_drain(Duration::from_secs(4))
            .build();
        lc.service("http", |stop| stop).unwrap();
        let mut pool = LocalPool::new();
        let spawner = pool.spawner();
        let notify = spawner
            .spawn_local_with_handle(notifier.drive(&lc))
            .unwrap();
        let wait = spawner.spawn_local_with_handle(lc.wait()).unwrap();
        pool.run_until_stalled();
        clock.advance(READY_POLL_FIRST);
        pool.run_until_stalled();
        assert_eq!(listener.received(), ["READY=1"]);
        lc.stop("deploy");
        pool.run_until_stalled();
        clock.advance(READY_POLL);
        pool.run_until_stalled();
        let left = Duration::from_secs(10) - READY_POLL + EXTEND_MARGIN;
        assert_eq!(
            listener.received(),
            [
                "STOPPING=1".to_owned(),
                format!(
                    "STATUS=pre-drain (not ready): 0 sessions\nEXTEND_TIMEOUT_USEC={}",
                    left.as_micros()
                ),
            ]
        );
        clock.advance(Duration::from_secs(4));
        pool.run_until_stalled();
        let report = pool.run_until(wait);
        // 4.1 s after the request: 5.9 s of the grace left, plus the margin.
        let status = listener.received();
        assert!(
            status
                .first()
                .is_some_and(|s| s.ends_with("\nEXTEND_TIMEOUT_USEC=6900000")),
            "{status:?}"
        );
        assert_eq!(report.exit_code(), 0);
        pool.run_until(notify);
    }

    #[test]
    fn holds_no_lifecycle_handle() {
        let listener = Listener::new();
        let notifier = Notifier::from_vars(Some(listener.path.as_os_str()), os("1000"), None, 1)
            .unwrap()
            .unwrap();
        let lc = Lifecycle::builder().clock(ManualClock::new()).build();
        let weak = lc.downgrade();
        let notify = notifier.drive(&lc);
        drop(lc);
        assert_eq!(weak.cause(), Some(&crate::StopCause::HandlesDropped));
        futures::executor::block_on(notify);
    }

    #[test]
    fn no_listener_is_complained_about_once_and_never_panics() {
        let listener = Listener::new();
        let path = listener.path.clone();
        drop(listener); // the directory is gone: every send fails
        let notifier = Notifier::from_vars(Some(path.as_os_str()), os("2000"), None, 1)
            .unwrap()
            .unwrap();
        assert!(notifier.send("READY=1").is_err());
        let clock = ManualClock::new();
        let lc = Lifecycle::builder().clock(clock.clone()).build();
        lc.service("worker", |stop| stop).unwrap();
        let mut pool = LocalPool::new();
        let spawner = pool.spawner();
        let notify = spawner
            .spawn_local_with_handle(notifier.drive(&lc))
            .unwrap();
        let wait = spawner.spawn_local_with_handle(lc.wait()).unwrap();
        pool.run_until_stalled();
        for _ in 0..10 {
            clock.advance(Duration::from_millis(1));
            pool.run_until_stalled();
        }
        lc.stop("done");
        assert_eq!(pool.run_until(wait).exit_code(), 0);
        pool.run_until(notify);
    }

    #[test]
    fn started_after_the_end_sends_nothing() {
        let listener = Listener::new();
        let notifier = Notifier::from_vars(Some(listener.path.as_os_str()), os("1000"), None, 1)
            .unwrap()
            .unwrap();
        let lc = Lifecycle::builder().clock(ManualClock::new()).build();
        lc.stop("early");
        let _ = futures::executor::block_on(lc.wait());
        futures::executor::block_on(notifier.drive(&lc));
        assert_eq!(listener.received(), Vec::<String>::new());
    }
}
