//! The `http` example's contract, checked as a client meets it: a child process, real
//! sockets, real signals, HTTP/1.1 written by hand. See `examples/http.rs`. Every test runs
//! against `examples/http.rs` (a `tower::service_fn`) and `examples/axum.rs` (an axum
//! `Router`), both served by `async_lifecycle::serve`: module `http` and module `axum`.

mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use support::{PATIENCE, Server, assert_refused};

/// One HTTP/1.1 client connection.
struct Client {
    reader: BufReader<TcpStream>,
}

#[derive(Debug)]
struct Response {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Response {
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
    fn connect(server: &Server) -> Client {
        let stream = TcpStream::connect(server.addr).unwrap();
        stream.set_read_timeout(Some(PATIENCE)).unwrap();
        Client {
            reader: BufReader::new(stream),
        }
    }

    fn peer_name(&self) -> String {
        self.reader.get_ref().local_addr().unwrap().to_string()
    }

    fn send(&mut self, path: &str) {
        let request = format!("GET {path} HTTP/1.1\r\nHost: test\r\n\r\n");
        self.reader.get_mut().write_all(request.as_bytes()).unwrap();
    }

    fn receive(&mut self) -> Response {
        let mut line = String::new();
        self.reader.read_line(&mut line).unwrap();
        let status = line
            .strip_prefix("HTTP/1.1 ")
            .and_then(|rest| rest.get(..3))
            .and_then(|code| code.parse().ok())
            .unwrap_or_else(|| panic!("not a status line: {line:?}"));
        let mut headers = Vec::new();
        loop {
            line.clear();
            self.reader.read_line(&mut line).unwrap();
            let header = line.trim_end();
            if header.is_empty() {
                break;
            }
            let (name, value) = header.split_once(':').expect("a header line");
            headers.push((name.trim().to_owned(), value.trim().to_owned()));
        }
        let mut response = Response {
            status,
            headers,
            body: String::new(),
        };
        let length: usize = response
            .header("content-length")
            .expect("a content-length")
            .parse()
            .unwrap();
        let mut body = vec![0; length];
        self.reader.read_exact(&mut body).unwrap();
        response.body = String::from_utf8(body).unwrap();
        response
    }

    fn get(&mut self, path: &str) -> Response {
        self.send(path);
        self.receive()
    }

    /// Reads until the server closes the connection; returns what came before.
    fn read_to_close(&mut self) -> Vec<u8> {
        let mut rest = Vec::new();
        self.reader.read_to_end(&mut rest).unwrap();
        rest
    }
}

fn answers_ok_and_sleeps_on_one_kept_alive_connection(example: &str) {
    let server = Server::start(example, &["--listen", "127.0.0.1:0", "--grace", "10s"]);
    assert_eq!(server.first_line, format!("listening on {}", server.addr));

    let mut client = Client::connect(&server);
    let ok = client.get("/");
    assert_eq!((ok.status, ok.body.as_str()), (200, "ok"));
    assert!(!ok.closes());

    let asked = Instant::now();
    let slept = client.get("/sleep?ms=300");
    assert_eq!((slept.status, slept.body.as_str()), (200, "ok"));
    assert!(
        asked.elapsed() >= Duration::from_millis(300),
        "answered after {:?}",
        asked.elapsed()
    );

    assert_eq!(client.get("/nowhere").status, 404);
    assert_eq!(client.get("/sleep?ms=soon").status, 400);

    server.signal("TERM");
    // The idle kept-alive connection is closed gracefully after the linger.
    assert!(client.read_to_close().is_empty());
    let exit = server.wait_exit(PATIENCE);
    assert_eq!(exit.status.code(), Some(0), "{}", exit.stderr);
    assert!(
        exit.stdout_rest.is_empty(),
        "more than one stdout line: {:?}",
        exit.stdout_rest
    );
    // One connection, four requests, and the session `serve` holds while it listens (the
    // parent of the connections it takes from the backlog at the stop).
    assert!(
        exit.stderr.contains("6 admitted, 6 completed, 0 refused"),
        "{}",
        exit.stderr
    );
}

fn in_flight_requests_finish_and_kept_alive_connections_close_politely(example: &str) {
    let mut server = Server::start(example, &["--listen", "127.0.0.1:0", "--grace", "30s"]);
    let mut slow = Client::connect(&server);
    let mut idle = Client::connect(&server);
    // Both connections are accepted and have been served once.
    assert_eq!(slow.get("/").status, 200);
    assert_eq!(idle.get("/").status, 200);
    slow.send("/sleep?ms=1500");
    // A request on the other connection, answered after the slow one was sent.
    assert_eq!(idle.get("/").status, 200);

    server.signal("TERM");
    server.wait_for_stderr("listener closed");
    assert_refused(&server);

    // A request on a kept-alive connection while draining is answered, with
    // `Connection: close`, and then the connection ends.
    let late = idle.get("/");
    assert_eq!((late.status, late.body.as_str()), (200, "ok"));
    assert!(late.closes(), "{late:?}");
    assert!(idle.read_to_close().is_empty());

    // The request in flight at the signal is answered in full.
    let slept = slow.receive();
    assert_eq!((slept.status, slept.body.as_str()), (200, "ok"));
    assert!(slept.closes(), "{slept:?}");
    assert!(slow.read_to_close().is_empty());

    let exit = server.wait_exit(PATIENCE);
    assert_eq!(exit.status.code(), Some(0), "{}", exit.stderr);
    assert!(
        exit.stderr.contains("lifecycle terminated"),
        "{}",
        exit.stderr
    );
    assert!(exit.stderr.contains("received SIGTERM"), "{}", exit.stderr);
}

fn grace_expiry_names_the_stragglers_with_their_peer_addresses(example: &str) {
    let server = Server::start(example, &["--listen", "127.0.0.1:0", "--grace", "400ms"]);
    let mut client = Client::connect(&server);
    assert_eq!(client.get("/").status, 200);
    client.send("/sleep?ms=60000");
    let mut other = Client::connect(&server);
    assert_eq!(other.get("/").status, 200);

    let signalled = Instant::now();
    server.signal("INT");
    let exit = server.wait_exit(PATIENCE);
    let took = signalled.elapsed();

    assert_eq!(exit.status.code(), Some(2), "{}", exit.stderr);
    assert!(took >= Duration::from_millis(400), "exited after {took:?}");
    assert!(
        exit.stderr.contains("lifecycle abandoned"),
        "{}",
        exit.stderr
    );
    let peer = client.peer_name();
    assert!(
        exit.stderr.contains(&format!("conn {peer}")),
        "{peer} not named:\n{}",
        exit.stderr
    );
    assert!(
        exit.stderr
            .contains(&format!("GET /sleep?ms=60000 from {peer}")),
        "the request was not named:\n{}",
        exit.stderr
    );
}

fn a_second_signal_forces_the_exit_within_a_second(example: &str) {
    let mut server = Server::start(example, &["--listen", "127.0.0.1:0", "--grace", "60s"]);
    let mut client = Client::connect(&server);
    assert_eq!(client.get("/").status, 200);
    client.send("/sleep?ms=60000");
    let mut other = Client::connect(&server);
    assert_eq!(other.get("/").status, 200);

    server.signal("TERM");
    server.wait_for_stderr("listener closed");
    let forced = Instant::now();
    server.signal("TERM");
    let exit = server.wait_exit(Duration::from_secs(1));
    let took = forced.elapsed();

    assert!(took < Duration::from_secs(1), "took {took:?}");
    assert_eq!(exit.status.code(), Some(2), "{}", exit.stderr);
    assert!(exit.stderr.contains("(forced)"), "{}", exit.stderr);
    let peer = client.peer_name();
    assert!(
        exit.stderr.contains(&format!("conn {peer}")),
        "{peer} not named:\n{}",
        exit.stderr
    );
}

fn defaults_are_127_0_0_1_7878_and_10s(example: &str) {
    // Both examples' runs of this test want the same port: one at a time.
    static PORT_7878: Mutex<()> = Mutex::new(());
    let _port = PORT_7878.lock().unwrap_or_else(|e| e.into_inner());
    let mut server = Server::start(example, &[]);
    assert_eq!(server.first_line, "listening on 127.0.0.1:7878");
    let mut client = Client::connect(&server);
    assert_eq!(client.get("/").status, 200);
    client.send("/sleep?ms=60000");
    let mut other = Client::connect(&server);
    assert_eq!(other.get("/").status, 200);
    server.signal("INT");
    server.wait_for_stderr("listener closed");
    server.signal("INT");
    let exit = server.wait_exit(PATIENCE);
    assert_eq!(exit.status.code(), Some(2), "{}", exit.stderr);
    assert!(exit.stderr.contains("of 10.000s grace"), "{}", exit.stderr);
}

fn bad_flags_get_one_usage_line_and_no_panic(example: &str) {
    support::assert_usage_errors(example);
}

fn a_client_stalled_mid_request_is_named_at_the_grace(example: &str) {
    let server = Server::start(example, &["--listen", "127.0.0.1:0", "--grace", "600ms"]);
    let mut stalled = Client::connect(&server);
    // One request answered (hyper itself waits for a first request; not for a later one),
    // then half a request head, and then nothing.
    assert_eq!(stalled.get("/").status, 200);
    stalled
        .reader
        .get_mut()
        .write_all(b"GET /sleep?ms=1 HTTP/1.1\r\nHost: te")
        .unwrap();
    // A served connection, so the half request has surely been read by now.
    let mut other = Client::connect(&server);
    assert_eq!(other.get("/").status, 200);

    let signalled = Instant::now();
    server.signal("TERM");
    let exit = server.wait_exit(PATIENCE);
    let took = signalled.elapsed();

    // Not cut off at the linger (150 ms): waited for until the grace ran out.
    assert_eq!(exit.status.code(), Some(2), "{}", exit.stderr);
    assert!(took >= Duration::from_millis(600), "exited after {took:?}");
    assert!(
        exit.stderr.contains("lifecycle abandoned"),
        "{}",
        exit.stderr
    );
    let peer = stalled.peer_name();
    assert!(
        exit.stderr.contains(&format!("conn {peer}")),
        "the stalled connection {peer} is not named:\n{}",
        exit.stderr
    );
    assert!(!exit.stderr.contains("panicked at"), "{}", exit.stderr);
}

fn a_request_half_sent_at_the_signal_is_answered_after_the_linger(example: &str) {
    let mut server = Server::start(example, &["--listen", "127.0.0.1:0", "--grace", "4s"]);
    let mut client = Client::connect(&server);
    assert_eq!(client.get("/").status, 200);
    client
        .reader
        .get_mut()
        .write_all(b"GET / HTTP/1.1\r\nHo")
        .unwrap();
    thread_sleep(Duration::from_millis(100));

    server.signal("TERM");
    server.wait_for_stderr("listener closed");
    // Past the linger (a quarter of the grace, capped at 1 s): an idle connection would be
    // closed by now, this one is waited for.
    thread_sleep(Duration::from_millis(1300));
    client
        .reader
        .get_mut()
        .write_all(b"st: test\r\n\r\n")
        .unwrap();
    let late = client.receive();
    assert_eq!((late.status, late.body.as_str()), (200, "ok"));
    assert!(late.closes(), "{late:?}");
    assert!(client.read_to_close().is_empty());

    let exit = server.wait_exit(PATIENCE);
    assert_eq!(exit.status.code(), Some(0), "{}", exit.stderr);
}

fn ready_answers_200_then_503_once_stopping(example: &str) {
    let mut server = Server::start(example, &["--listen", "127.0.0.1:0", "--grace", "30s"]);
    let mut client = Client::connect(&server);
    let ready = client.get("/ready");
    assert_eq!((ready.status, ready.body.as_str()), (200, "ok"));

    server.signal("TERM");
    server.wait_for_stderr("listener closed");
    // On the kept-alive connection, within the linger.
    let stopping = client.get("/ready");
    assert_eq!(stopping.status, 503, "{stopping:?}");
    assert_eq!(stopping.body, "stopping: received SIGTERM");
    assert!(stopping.closes(), "{stopping:?}");

    let exit = server.wait_exit(PATIENCE);
    assert_eq!(exit.status.code(), Some(0), "{}", exit.stderr);
}

fn thread_sleep(duration: Duration) {
    std::thread::sleep(duration);
}

/// Each contract test, once per example.
macro_rules! against_both_examples {
    ($($test:ident),* $(,)?) => {
        mod http {
            $(#[test]
            fn $test() {
                super::$test("http");
            })*
        }
        mod axum {
            $(#[test]
            fn $test() {
                super::$test("axum");
            })*
        }
    };
}

against_both_examples!(
    answers_ok_and_sleeps_on_one_kept_alive_connection,
    in_flight_requests_finish_and_kept_alive_connections_close_politely,
    grace_expiry_names_the_stragglers_with_their_peer_addresses,
    a_second_signal_forces_the_exit_within_a_second,
    defaults_are_127_0_0_1_7878_and_10s,
    bad_flags_get_one_usage_line_and_no_panic,
    a_client_stalled_mid_request_is_named_at_the_grace,
    a_request_half_sent_at_the_signal_is_answered_after_the_linger,
    ready_answers_200_then_503_once_stopping,
);
