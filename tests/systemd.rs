//! The `http` example under a fake systemd: a real datagram socket as `NOTIFY_SOCKET` (a path
//! in a temporary directory, and an abstract name on Linux), the example as a child process,
//! real signals. Checks the order of the notifications (`READY=1`, the watchdog, `STOPPING=1`,
//! the drain's `STATUS=`, then nothing), the watchdog's cadence, `WATCHDOG_PID`, and a
//! malformed `NOTIFY_SOCKET`. See `src/systemd.rs`.
#![cfg(all(feature = "systemd", unix))]

mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;
use std::process::{Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver};
use std::thread;
use std::time::{Duration, Instant};

use support::{PATIENCE, example};

/// `WATCHDOG_USEC` for every run: a ping every 50 ms.
const WATCHDOG_USEC: &str = "100000";

/// The fake systemd: a bound datagram socket, what `NOTIFY_SOCKET` says, and a thread that
/// reads every message as it comes (the kernel queues only a few datagrams: a reader that
/// looked away would make the sender drop some), with the instant it came.
struct Systemd {
    messages: Receiver<(Instant, String)>,
    stop: Arc<AtomicBool>,
    notify_socket: String,
    dir: Option<PathBuf>,
}

fn unique() -> String {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    format!(
        "async-lifecycle-test-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

impl Systemd {
    /// A socket at a path in a fresh temporary directory.
    fn at_path() -> Systemd {
        let dir = std::env::temp_dir().join(unique());
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("notify");
        let socket = UnixDatagram::bind(&path).unwrap();
        Systemd::listen(socket, path.to_str().unwrap().to_owned(), Some(dir))
    }

    /// A socket with an abstract name, `@...`.
    #[cfg(target_os = "linux")]
    fn abstract_name() -> Systemd {
        use std::os::linux::net::SocketAddrExt;
        let name = unique();
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let socket = UnixDatagram::bind_addr(&addr).unwrap();
        Systemd::listen(socket, format!("@{name}"), None)
    }

    fn listen(socket: UnixDatagram, notify_socket: String, dir: Option<PathBuf>) -> Systemd {
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = Arc::clone(&stop);
        let (tx, messages) = mpsc::channel();
        // The timeout only bounds how long the thread outlives the test.
        socket
            .set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        thread::spawn(move || {
            let mut buf = [0; 4096];
            while !stopped.load(Ordering::Relaxed) {
                if let Ok(n) = socket.recv(&mut buf) {
                    let message = String::from_utf8(buf[..n].to_vec()).unwrap();
                    if tx.send((Instant::now(), message)).is_err() {
                        break;
                    }
                }
            }
        });
        Systemd {
            messages,
            stop,
            notify_socket,
            dir,
        }
    }

    /// The next message and when it came, or `None` once `until` has passed.
    fn next(&self, until: Instant) -> Option<(Instant, String)> {
        let left = until.saturating_duration_since(Instant::now());
        self.messages.recv_timeout(left).ok()
    }
}

impl Drop for Systemd {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(dir) = &self.dir {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// The example as a child process with the systemd environment.
struct Server {
    pid: u32,
    addr: SocketAddr,
    exited: Receiver<ExitStatus>,
    stderr: Receiver<String>,
}

impl Server {
    fn start(env: &[(&str, &str)]) -> Server {
        Server::start_with(env, &[])
    }

    fn start_with(env: &[(&str, &str)], extra: &[&str]) -> Server {
        let mut child = Command::new(example("http"))
            .args(["--listen", "127.0.0.1:0", "--grace", "10s"])
            .args(extra)
            .env_remove("NOTIFY_SOCKET")
            .env_remove("WATCHDOG_USEC")
            .env_remove("WATCHDOG_PID")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the example starts");
        let pid = child.id();
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut child_stderr = child.stderr.take().unwrap();
        let (stderr_tx, stderr) = mpsc::channel();
        thread::spawn(move || {
            let mut all = String::new();
            let _ = child_stderr.read_to_string(&mut all);
            let _ = stderr_tx.send(all);
        });
        let (exit_tx, exited) = mpsc::channel();
        thread::spawn(move || {
            if let Ok(status) = child.wait() {
                let _ = exit_tx.send(status);
            }
        });
        let mut line = String::new();
        stdout.read_line(&mut line).unwrap();
        let addr = line
            .trim_end()
            .strip_prefix("listening on ")
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"));
        Server {
            pid,
            addr,
            exited,
            stderr,
        }
    }

    fn signal(&self, signal: &str) {
        let status = Command::new("sh")
            .args(["-c", &format!("kill -s {signal} {}", self.pid)])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Waits for the exit; returns the status code and stderr.
    fn wait(self) -> (Option<i32>, String) {
        let status = self
            .exited
            .recv_timeout(PATIENCE)
            .expect("the example exits");
        let stderr = self.stderr.recv_timeout(PATIENCE).unwrap_or_default();
        (status.code(), stderr)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if self.exited.try_recv().is_err() {
            // A failed test must not leave the server behind (a no-op once it exited).
            let _ = Command::new("sh")
                .args(["-c", &format!("kill -s KILL {} 2>/dev/null", self.pid)])
                .status();
        }
    }
}

/// One kept-alive HTTP/1.1 connection.
struct Client {
    reader: BufReader<TcpStream>,
}

impl Client {
    fn connect(addr: SocketAddr) -> Client {
        let stream = TcpStream::connect(addr).unwrap();
        stream.set_read_timeout(Some(PATIENCE)).unwrap();
        Client {
            reader: BufReader::new(stream),
        }
    }

    fn send(&mut self, path: &str) {
        let request = format!("GET {path} HTTP/1.1\r\nHost: test\r\n\r\n");
        self.reader.get_mut().write_all(request.as_bytes()).unwrap();
    }

    /// The status code; the body (a Content-Length one) is read too.
    fn receive(&mut self) -> u16 {
        let mut line = String::new();
        self.reader.read_line(&mut line).unwrap();
        let status = line[9..12].parse().unwrap();
        let mut length = 0;
        loop {
            line.clear();
            self.reader.read_line(&mut line).unwrap();
            if line.trim_end().is_empty() {
                break;
            }
            if let Some((name, value)) = line.split_once(':') {
                if name.eq_ignore_ascii_case("content-length") {
                    length = value.trim().parse().unwrap();
                }
            }
        }
        let mut body = vec![0; length];
        self.reader.read_exact(&mut body).unwrap();
        status
    }
}

/// What one run saw: every message with when it came, and the client's port.
struct Run {
    messages: Vec<(Instant, String)>,
    ready_at: Instant,
    conn: String,
}

/// Runs the example under `systemd` to its end: wait for `READY=1`, watch the watchdog for
/// `window`, a request, a second one in flight at SIGTERM, then the drain and the exit.
fn run(systemd: &Systemd, watchdog_pid: Option<&str>, window: Duration) -> Run {
    let mut env = vec![
        ("NOTIFY_SOCKET", systemd.notify_socket.as_str()),
        ("WATCHDOG_USEC", WATCHDOG_USEC),
    ];
    if let Some(pid) = watchdog_pid {
        env.push(("WATCHDOG_PID", pid));
    }
    let server = Server::start(&env);
    let mut messages = Vec::new();
    let patience = Instant::now() + PATIENCE;
    let ready_at = loop {
        let (at, message) = systemd.next(patience).expect("READY=1 within the patience");
        let ready = message == "READY=1";
        messages.push((at, message));
        if ready {
            break at;
        }
    };
    // The watchdog while running: the messages of `window` after READY=1.
    let watch = ready_at + window;
    while let Some((at, message)) = systemd.next(watch) {
        messages.push((at, message));
    }

    let mut client = Client::connect(server.addr);
    let conn = format!("conn {}", client.reader.get_ref().local_addr().unwrap());
    client.send("/");
    assert_eq!(client.receive(), 200);
    // In flight at the signal: the drain lasts about this long.
    client.send("/sleep?ms=1500");
    server.signal("TERM");
    assert_eq!(client.receive(), 200, "the request in flight is answered");

    let (code, stderr) = server.wait();
    assert_eq!(code, Some(0), "{stderr}");
    assert!(!stderr.contains("panicked at"), "{stderr}");
    // Whatever was sent before the exit is queued; nothing comes after it.
    let after_exit = Instant::now() + Duration::from_millis(200);
    while let Some((at, message)) = systemd.next(after_exit) {
        messages.push((at, message));
    }
    Run {
        messages,
        ready_at,
        conn,
    }
}

/// Asserts READY=1 → (WATCHDOG=1…) → STOPPING=1 → STATUS=… (with the extension), with the
/// watchdog's pings among them only where `watchdog`.
fn assert_order(run: &Run, watchdog: bool) {
    let kinds: Vec<&str> = run
        .messages
        .iter()
        .map(|(_, m)| m.split('=').next().unwrap())
        .collect();
    let shown: Vec<&str> = run.messages.iter().map(|(_, m)| m.as_str()).collect();
    assert_eq!(kinds[0], "READY", "{shown:#?}");
    let stopping = kinds
        .iter()
        .position(|k| *k == "STOPPING")
        .expect("STOPPING=1");
    assert_eq!(
        kinds.iter().filter(|k| **k == "STOPPING").count(),
        1,
        "{shown:#?}"
    );
    assert_eq!(
        kinds.iter().filter(|k| **k == "READY").count(),
        1,
        "{shown:#?}"
    );
    assert!(
        kinds[1..stopping].iter().all(|k| *k == "WATCHDOG"),
        "only the watchdog between READY and STOPPING: {shown:#?}"
    );
    let after: Vec<&str> = kinds[stopping + 1..]
        .iter()
        .copied()
        .filter(|k| *k != "WATCHDOG")
        .collect();
    assert!(!after.is_empty(), "a STATUS while draining: {shown:#?}");
    assert!(after.iter().all(|k| *k == "STATUS"), "{shown:#?}");
    assert_eq!(
        kinds.contains(&"WATCHDOG"),
        watchdog,
        "the watchdog is on only where it is ours: {shown:#?}"
    );

    // The first STATUS names the connection in flight, oldest, and extends to the grace.
    let (_, first) = &run.messages[stopping + 1..]
        .iter()
        .find(|(_, m)| m.starts_with("STATUS="))
        .unwrap();
    let mut lines = first.lines();
    let status = lines.next().unwrap();
    assert!(status.starts_with("STATUS=draining: "), "{first:?}");
    assert!(
        status.contains(&format!("; oldest: {} (", run.conn)),
        "the oldest session by name: {first:?}"
    );
    let extend: u64 = lines
        .next()
        .and_then(|l| l.strip_prefix("EXTEND_TIMEOUT_USEC="))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("an extension: {first:?}"));
    // --grace 10s, plus a second's margin, less what passed before it was sent.
    assert!((9_000_000..=11_000_000).contains(&extend), "{first:?}");
    // Each re-sent extension names the same instant: the deadline, plus the margin.
    let ends: Vec<Instant> = run
        .messages
        .iter()
        .filter_map(|(at, m)| {
            let usec = m
                .lines()
                .find_map(|l| l.strip_prefix("EXTEND_TIMEOUT_USEC="))?;
            Some(*at + Duration::from_micros(usec.parse().unwrap()))
        })
        .collect();
    let (first_end, last_end) = (ends[0], *ends.last().unwrap());
    assert!(
        last_end.max(first_end) - last_end.min(first_end) < Duration::from_millis(200),
        "{shown:#?}"
    );
}

#[test]
fn notifies_ready_watchdog_stopping_and_status_at_a_path() {
    let systemd = Systemd::at_path();
    let window = Duration::from_millis(1000);
    let run = run(&systemd, None, window);
    assert_order(&run, true);
    // Every 50 ms: about 20 in the window after READY=1. Generous bounds for a loaded
    // machine; the cadence itself is exact on a manual clock (src/systemd.rs).
    let pings = run
        .messages
        .iter()
        .filter(|(at, m)| m == "WATCHDOG=1" && *at > run.ready_at && *at <= run.ready_at + window)
        .count();
    assert!((8..=30).contains(&pings), "{pings} pings in {window:?}");
    let shown: Vec<_> = run
        .messages
        .iter()
        .map(|(at, m)| (at.duration_since(run.ready_at), m))
        .collect();
    eprintln!("{shown:#?}");
}

#[test]
fn a_watchdog_pid_of_another_process_means_no_watchdog() {
    let systemd = Systemd::at_path();
    let run = run(&systemd, Some("1"), Duration::from_millis(300));
    assert_order(&run, false);
}

#[cfg(target_os = "linux")]
#[test]
fn notifies_an_abstract_name() {
    let systemd = Systemd::abstract_name();
    let run = run(&systemd, None, Duration::from_millis(200));
    assert_order(&run, true);
}

#[test]
fn a_malformed_notify_socket_is_one_line_and_exit_71() {
    let long = format!("/{}", "x".repeat(200));
    for (value, says) in [
        ("", "empty"),
        (
            "run/notify",
            "neither an absolute path nor an @abstract name",
        ),
        (long.as_str(), "201 bytes long"),
    ] {
        let output = Command::new(example("http"))
            .args(["--listen", "127.0.0.1:0"])
            .env("NOTIFY_SOCKET", value)
            .env_remove("WATCHDOG_USEC")
            .env_remove("WATCHDOG_PID")
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(71), "{value:?}: {stderr}");
        assert!(output.stdout.is_empty(), "{value:?}: it never listened");
        assert_eq!(stderr.lines().count(), 1, "{value:?}: {stderr}");
        assert!(
            stderr.starts_with("http: NOTIFY_SOCKET"),
            "{value:?}: {stderr}"
        );
        assert!(stderr.contains(says), "{value:?}: {stderr}");
    }
    // A bad watchdog setting is refused the same way.
    let output = Command::new(example("http"))
        .args(["--listen", "127.0.0.1:0"])
        .env("NOTIFY_SOCKET", "/run/nowhere")
        .env("WATCHDOG_USEC", "ten")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(71));
    assert!(String::from_utf8_lossy(&output.stderr).contains("WATCHDOG_USEC=\"ten\""));
}

#[test]
fn no_listener_at_the_socket_changes_nothing() {
    // systemd went away (or never listened): every send fails, the server serves and exits
    // as without it.
    let systemd = Systemd::at_path();
    let path = systemd.notify_socket.clone();
    drop(systemd);
    let server = Server::start(&[("NOTIFY_SOCKET", &path), ("WATCHDOG_USEC", WATCHDOG_USEC)]);
    let mut client = Client::connect(server.addr);
    client.send("/");
    assert_eq!(client.receive(), 200);
    server.signal("TERM");
    let (code, stderr) = server.wait();
    assert_eq!(code, Some(0), "{stderr}");
    assert!(!stderr.contains("panicked at"), "{stderr}");
}

/// With a pre-drain, systemd hears of the stop when it is requested: `STOPPING=1` and an
/// extension counted from the request come at once, not when the drain begins (else a
/// `TimeoutStopSec=` shorter than the pre-drain would kill the server in it).
#[test]
fn a_pre_drain_is_announced_at_the_request() {
    let systemd = Systemd::at_path();
    let server = Server::start_with(
        &[("NOTIFY_SOCKET", systemd.notify_socket.as_str())],
        &["--pre-drain", "3s"],
    );
    let patience = Instant::now() + PATIENCE;
    loop {
        let (_, message) = systemd.next(patience).expect("READY=1 within the patience");
        if message == "READY=1" {
            break;
        }
    }
    let signalled = Instant::now();
    server.signal("TERM");
    let (stopping_at, extend) = loop {
        let (at, message) = systemd.next(patience).expect("STOPPING=1");
        if message == "STOPPING=1" {
            let (_, status) = systemd.next(patience).expect("STATUS= and the extension");
            let usec: u64 = status
                .lines()
                .find_map(|l| l.strip_prefix("EXTEND_TIMEOUT_USEC="))
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("an extension: {status:?}"));
            break (at, Duration::from_micros(usec));
        }
    };
    assert!(
        stopping_at - signalled < Duration::from_millis(1500),
        "STOPPING=1 {:?} after SIGTERM, before the 3 s pre-drain ended",
        stopping_at - signalled
    );
    // The grace (10 s) counts from the request, plus a second's margin.
    assert!(extend <= Duration::from_secs(11), "{extend:?}");
    let (code, stderr) = server.wait();
    assert_eq!(code, Some(0), "{stderr}");
}
