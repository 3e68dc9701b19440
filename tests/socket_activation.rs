//! Socket activation (issue 10, item 5): the HTTP examples serve a listening socket passed as
//! fd 3 with `LISTEN_FDS` (systemd's protocol, through the `listenfd` crate), and refuse an
//! inherited fd that is not a listening TCP socket with a clear error and exit 71.
//!
//! With Debian's `systemd-socket-activate` installed, the activation test uses it (it
//! listens, and starts the example on the first connection); otherwise a small Python
//! helper binds the socket and passes it as fd 3. Process tests; a test fails within
//! `support::PATIENCE` rather than hang.
#![cfg(unix)]

mod support;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::{PATIENCE, example};

/// A free loopback port (bound and released: another process could take it in between,
/// which only makes this test fail, never pass wrongly).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `GET /` on a new connection, retried until the port accepts (the activator may not have
/// bound it yet); returns the whole response.
fn get(port: u16) -> String {
    let deadline = Instant::now() + PATIENCE;
    loop {
        match TcpStream::connect(("127.0.0.1", port)) {
            Ok(mut stream) => {
                stream.set_read_timeout(Some(PATIENCE)).unwrap();
                stream
                    .write_all(b"GET / HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n")
                    .unwrap();
                let mut response = String::new();
                stream.read_to_string(&mut response).unwrap();
                return response;
            }
            Err(e) => {
                assert!(Instant::now() < deadline, "never accepted on {port}: {e}");
                std::thread::yield_now();
            }
        }
    }
}

/// The Python helper: binds 127.0.0.1:PORT as fd 3 and execs the rest with `LISTEN_FDS=1`.
const PASS_FD_3: &str = r#"
import os, socket, sys
port = int(sys.argv[1])
s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", port))
s.listen(16)
os.dup2(s.fileno(), 3)
os.set_inheritable(3, True)
os.environ["LISTEN_FDS"] = "1"
os.environ["LISTEN_PID"] = str(os.getpid())
os.execv(sys.argv[2], sys.argv[2:])
"#;

fn activated(example_name: &str) {
    let exe = example(example_name);
    let exe = exe.to_str().unwrap();
    let port = free_port();
    let address = format!("127.0.0.1:{port}");
    let activator = Command::new("sh")
        .args(["-c", "command -v systemd-socket-activate"])
        .output()
        .is_ok_and(|o| o.status.success());
    let mut command = if activator {
        let mut c = Command::new("systemd-socket-activate");
        c.args(["-l", &address, exe, "--grace", "2s"]);
        c
    } else {
        let mut c = Command::new("python3");
        c.args(["-c", PASS_FD_3, &port.to_string(), exe, "--grace", "2s"]);
        c
    };
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the activator starts");
    let response = get(port);
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    let mut stdout = child.stdout.take().unwrap();
    let mut first = [0u8; 64];
    let n = stdout.read(&mut first).unwrap();
    let first = String::from_utf8_lossy(&first[..n]).into_owned();
    assert!(
        first.starts_with(&format!("listening on {address}")),
        "the inherited socket's address: {first:?}"
    );
    // The activator execs the example in its place: its pid is the server's.
    let status = Command::new("kill")
        .args(["-s", "TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let deadline = Instant::now() + PATIENCE;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "the server did not exit");
        std::thread::sleep(Duration::from_millis(10)); // polling a child's exit, not syncing
    };
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    assert_eq!(status.code(), Some(0), "{stderr}");
    assert!(stderr.contains("lifecycle terminated"), "{stderr}");
}

#[test]
fn the_http_example_serves_a_socket_passed_by_systemd() {
    activated("http");
}

#[test]
fn the_axum_example_serves_a_socket_passed_by_systemd() {
    activated("axum");
}

/// Runs `python3 -c ARGS...` (a helper script that passes fds and execs an example) and
/// asserts the example refused its setup: exit 71, nothing on stdout (no `listening on`),
/// `needle` on stderr, which it returns.
fn setup_error(args: &[&str], label: &str, needle: &str) -> String {
    let output = Command::new("python3")
        .arg("-c")
        .args(args)
        .output()
        .expect("python3 runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert_eq!(
        stdout.lines().next(),
        Some("71"),
        "{label}: {stdout} {stderr}"
    );
    assert_eq!(
        stdout.lines().count(),
        1,
        "{label}: nothing served: {stdout}"
    );
    assert!(stderr.contains(needle), "{label}: {stderr}");
    stderr
}

/// fd 3 is a file, not a socket: one clear line, exit 71 (`EX_OSERR`), nothing served.
#[test]
fn an_inherited_fd_that_is_not_a_listening_socket_is_a_clear_error() {
    let script = r#"
import os, subprocess, sys
f = os.open("/dev/null", os.O_RDONLY)
os.dup2(f, 3)
os.set_inheritable(3, True)
env = dict(os.environ, LISTEN_FDS="1")
r = subprocess.run(sys.argv[1:], pass_fds=(3,), env=env, capture_output=True, text=True, timeout=20)
sys.stdout.write(str(r.returncode) + "\n" + r.stdout)
sys.stderr.write(r.stderr)
"#;
    for name in ["http", "axum"] {
        let exe = example(name);
        let stderr = setup_error(
            &[script, exe.to_str().unwrap(), "--grace", "1s"],
            name,
            "the inherited fd 3 (LISTEN_FDS) is not a listening TCP socket",
        );
        assert_eq!(stderr.lines().count(), 1, "{name}: one line: {stderr}");
    }
}

/// Two sockets (`LISTEN_FDS=2`, fds 3 and 4, both listening): the examples serve one, so
/// they say so in one line and exit 71 rather than serve fd 3 and leave fd 4's clients
/// unanswered.
#[test]
fn more_than_one_inherited_socket_is_a_clear_error() {
    let script = r#"
import os, socket, subprocess, sys
socks = []
for fd in (3, 4):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(8)
    os.dup2(s.fileno(), fd)
    os.set_inheritable(fd, True)
    socks.append(s)
env = dict(os.environ, LISTEN_FDS="2")
r = subprocess.run(sys.argv[1:], pass_fds=(3, 4), env=env, capture_output=True, text=True, timeout=20)
sys.stdout.write(str(r.returncode) + "\n" + r.stdout)
sys.stderr.write(r.stderr)
"#;
    for name in ["http", "axum"] {
        let exe = example(name);
        let stderr = setup_error(
            &[script, exe.to_str().unwrap(), "--grace", "1s"],
            name,
            "LISTEN_FDS passes 2 sockets (fds 3 to 4)",
        );
        assert_eq!(stderr.lines().count(), 1, "{name}: one line: {stderr}");
    }
}

/// fd 3 a TCP socket that does not listen — never bound, or connected (what systemd passes
/// with `Accept=yes`): one clear line and exit 71 before anything is printed on stdout.
#[test]
fn an_inherited_tcp_socket_that_does_not_listen_is_a_clear_error() {
    let script = r#"
import os, socket, subprocess, sys
kind = sys.argv[1]
if kind == "unbound":
    s = socket.socket()
else:
    server = socket.socket(); server.bind(("127.0.0.1", 0)); server.listen(1)
    s = socket.create_connection(server.getsockname())
os.dup2(s.fileno(), 3)
os.set_inheritable(3, True)
env = dict(os.environ, LISTEN_FDS="1")
r = subprocess.run(sys.argv[2:], pass_fds=(3,), env=env, capture_output=True, text=True, timeout=20)
sys.stdout.write(str(r.returncode) + "\n" + r.stdout)
sys.stderr.write(r.stderr)
"#;
    for kind in ["unbound", "connected"] {
        let exe = example("http");
        setup_error(
            &[script, kind, exe.to_str().unwrap(), "--grace", "1s"],
            kind,
            "is not a listening TCP socket",
        );
    }
}

/// A pre-drain as long as the grace would leave the drain no time: a usage error.
#[test]
fn a_pre_drain_not_shorter_than_the_grace_is_a_usage_error() {
    let output = Command::new(example("http"))
        .args(["--grace", "2s", "--pre-drain", "2s"])
        .output()
        .expect("the example runs");
    assert_eq!(output.status.code(), Some(64));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("leaves the drain no time"), "{stderr}");
}
