//! Runs an example as a child process, as a client would meet it: its stdout line, its
//! stderr, real signals, its exit status.

// Each test binary uses its own subset of these helpers.
#![allow(dead_code)]

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Mutex, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

/// How long any one step may take before the test fails (a bound on failure, never a wait).
pub const PATIENCE: Duration = Duration::from_secs(20);

/// Runs `command` to its end with stdin closed and its output captured, killing it and
/// failing past [`PATIENCE`] (a bound on failure, never a wait). Returns its exit status,
/// stdout and stderr.
pub fn run_bounded(mut command: Command, what: &str) -> (ExitStatus, String, String) {
    let child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the example starts");
    let pid = child.id();
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(PATIENCE) {
        Ok(output) => {
            let output = output.expect("the example's output is read");
            (
                output.status,
                String::from_utf8_lossy(&output.stdout).into_owned(),
                String::from_utf8_lossy(&output.stderr).into_owned(),
            )
        }
        Err(_) => {
            let _ = Command::new("kill")
                .args(["-s", "KILL", &pid.to_string()])
                .status();
            panic!("{what} did not exit within {PATIENCE:?}");
        }
    }
}

/// Builds the example (once per test binary, with the same features as this test) and
/// returns the path of its executable.
pub fn example(name: &str) -> PathBuf {
    static BUILT: OnceLock<Mutex<HashMap<String, PathBuf>>> = OnceLock::new();
    let built = BUILT.get_or_init(Default::default);
    let mut built = built.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(path) = built.get(name) {
        return path.clone();
    }
    // `cargo test` builds the examples too, but `cargo test --test echo` does not: build
    // it here (a no-op when it is fresh). `--all-features` matches the CI's test run.
    let output = Command::new(env!("CARGO"))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args([
            "build",
            "--all-features",
            "--message-format=json",
            "--example",
            name,
        ])
        .stderr(Stdio::piped())
        .output()
        .expect("cargo runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "building example {name} failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let name_field = format!("\"name\":\"{name}\"");
    let line = stdout
        .lines()
        .find(|line| {
            line.contains("\"reason\":\"compiler-artifact\"")
                && line.contains("\"kind\":[\"example\"]")
                && line.contains(&name_field)
                && line.contains("\"executable\":\"")
        })
        .unwrap_or_else(|| panic!("no executable for example {name} in cargo's output"));
    let start = line.find("\"executable\":\"").unwrap() + "\"executable\":\"".len();
    let end = start + line[start..].find('"').unwrap();
    let path = PathBuf::from(&line[start..end]);
    built.insert(name.to_owned(), path.clone());
    path
}

/// A running example.
pub struct Server {
    pid: u32,
    /// Where it listens, from its `listening on` line.
    pub addr: SocketAddr,
    /// The exact first line of its stdout.
    pub first_line: String,
    stdout_rest: Receiver<String>,
    stderr_lines: Receiver<String>,
    stderr_seen: Vec<String>,
    exited: Receiver<ExitStatus>,
    status: Option<ExitStatus>,
}

/// How a finished example ended.
#[derive(Debug)]
pub struct Exit {
    pub status: ExitStatus,
    /// All of stderr.
    pub stderr: String,
    /// Everything on stdout after the `listening on` line.
    pub stdout_rest: String,
}

impl Server {
    /// Starts `example` with `args` and reads its `listening on HOST:PORT` line.
    pub fn start(example_name: &str, args: &[&str]) -> Server {
        let mut child = Command::new(example(example_name))
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the example starts");
        let pid = child.id();
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let stderr = BufReader::new(child.stderr.take().unwrap());

        let (line_tx, line_rx) = mpsc::channel();
        let (rest_tx, stdout_rest) = mpsc::channel();
        thread::spawn(move || {
            let mut first = String::new();
            let _ = stdout.read_line(&mut first);
            let _ = line_tx.send(first);
            let mut rest = String::new();
            let _ = stdout.read_to_string(&mut rest);
            let _ = rest_tx.send(rest);
        });
        let (err_tx, stderr_lines) = mpsc::channel();
        thread::spawn(move || {
            for line in stderr.lines() {
                let Ok(line) = line else { break };
                if err_tx.send(line).is_err() {
                    break;
                }
            }
        });
        let (exit_tx, exited) = mpsc::channel();
        thread::spawn(move || {
            if let Ok(status) = child.wait() {
                let _ = exit_tx.send(status);
            }
        });

        let mut server = Server {
            pid,
            addr: SocketAddr::from(([0, 0, 0, 0], 0)),
            first_line: String::new(),
            stdout_rest,
            stderr_lines,
            stderr_seen: Vec::new(),
            exited,
            status: None,
        };
        let first = match line_rx.recv_timeout(PATIENCE) {
            Ok(line) => line,
            Err(_) => panic!("no `listening on` line; stderr: {}", server.drain_stderr()),
        };
        let addr = first
            .strip_suffix('\n')
            .and_then(|l| l.strip_prefix("listening on "))
            .and_then(|a| a.parse().ok());
        match addr {
            Some(addr) => server.addr = addr,
            None => panic!(
                "unexpected first line {first:?}; stderr: {}",
                server.drain_stderr()
            ),
        }
        server.first_line = first.trim_end_matches('\n').to_owned();
        server
    }

    /// Sends `signal` (`"TERM"`, `"INT"`, `"KILL"`) to the example.
    pub fn signal(&self, signal: &str) {
        let status = Command::new("sh")
            .args(["-c", &format!("kill -s {signal} {}", self.pid)])
            .status()
            .expect("sh runs kill");
        assert!(status.success(), "kill -s {signal} failed");
    }

    /// Waits until a stderr line contains `needle`, and returns it.
    pub fn wait_for_stderr(&mut self, needle: &str) -> String {
        let deadline = Instant::now() + PATIENCE;
        if let Some(line) = self.stderr_seen.iter().find(|l| l.contains(needle)) {
            return line.clone();
        }
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.stderr_lines.recv_timeout(left) {
                Ok(line) => {
                    self.stderr_seen.push(line.clone());
                    if line.contains(needle) {
                        return line;
                    }
                }
                Err(RecvTimeoutError::Timeout) => {
                    panic!(
                        "no stderr line with {needle:?}; so far:\n{}",
                        self.stderr_seen.join("\n")
                    )
                }
                Err(RecvTimeoutError::Disconnected) => panic!(
                    "stderr closed without {needle:?}:\n{}",
                    self.stderr_seen.join("\n")
                ),
            }
        }
    }

    /// Whether the process has not exited yet.
    pub fn is_running(&mut self) -> bool {
        if self.status.is_none() {
            self.status = self.exited.try_recv().ok();
        }
        self.status.is_none()
    }

    /// Waits for the exit (failing after `within`) and collects the output.
    pub fn wait_exit(mut self, within: Duration) -> Exit {
        let status = match self.status.take() {
            Some(status) => status,
            None => match self.exited.recv_timeout(within) {
                Ok(status) => status,
                Err(_) => {
                    self.signal("KILL");
                    panic!(
                        "the example did not exit within {within:?}; stderr:\n{}",
                        self.drain_stderr()
                    )
                }
            },
        };
        self.status = Some(status);
        let stderr = self.drain_stderr();
        let stdout_rest = self.stdout_rest.recv_timeout(PATIENCE).unwrap_or_default();
        Exit {
            status,
            stderr,
            stdout_rest,
        }
    }

    /// The stderr seen so far plus whatever is left until it closes.
    fn drain_stderr(&mut self) -> String {
        let deadline = Instant::now() + Duration::from_secs(2);
        while let Ok(line) = self
            .stderr_lines
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
        {
            self.stderr_seen.push(line);
        }
        self.stderr_seen.join("\n")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if self.is_running() {
            // A failed test must not leave the server behind.
            let _ = Command::new("sh")
                .args(["-c", &format!("kill -s KILL {}", self.pid)])
                .status();
        }
    }
}

/// Runs the example to its end with `args` (for flag errors, which exit at once).
pub fn run_to_end(example_name: &str, args: &[&str]) -> (ExitStatus, String, String) {
    let mut command = Command::new(example(example_name));
    command.args(args);
    run_bounded(command, &format!("{example_name} {args:?}"))
}

/// Asserts the contract for bad flags: non-zero, one usage line on stderr, no panic.
pub fn assert_usage_errors(example_name: &str) {
    let cases: &[&[&str]] = &[
        &["--grace", "10parsecs"],
        &["--grace", "10"],
        &["--grace", "-1s"],
        &["--grace"],
        &["--listen", "nowhere"],
        &["--listen", "127.0.0.1"],
        &["--frobnicate"],
        &["extra"],
    ];
    for args in cases {
        let (status, stdout, stderr) = run_to_end(example_name, args);
        assert_eq!(status.code(), Some(64), "{args:?}: {stderr}");
        assert_eq!(
            stderr.lines().count(),
            1,
            "{args:?}: not one line: {stderr:?}"
        );
        assert!(stderr.contains("usage:"), "{args:?}: {stderr:?}");
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr:?}");
        assert!(stdout.is_empty(), "{args:?}: stdout {stdout:?}");
    }
}

/// Asserts that a new connection to the server is refused (its listener is closed).
pub fn assert_refused(server: &Server) {
    match std::net::TcpStream::connect(server.addr) {
        Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::ConnectionRefused, "{e}"),
        Ok(_) => panic!("a new connection was accepted after the listener closed"),
    }
}

/// Silences the panics a probe causes on purpose (their messages contain "review-probe");
/// every other panic (a failed assertion) still prints.
pub fn quiet_probe_panics() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let text = info
                .payload()
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| info.payload().downcast_ref::<String>().cloned())
                .unwrap_or_default();
            if !text.contains("review-probe") {
                default(info);
            }
        }));
    });
}

/// Sets its flag when dropped: whether a future (and what it owned) was dropped.
pub struct DropFlag(pub std::sync::Arc<std::sync::atomic::AtomicBool>);

impl Drop for DropFlag {
    fn drop(&mut self) {
        self.0.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}
