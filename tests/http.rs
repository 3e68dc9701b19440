//! The `http` example's contract, checked as a client meets it: a child process, real
//! sockets, real signals, HTTP/1.1 written by hand. See `examples/http.rs`.

mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
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

#[test]
fn answers_ok_and_sleeps_on_one_kept_alive_connection() {
    let server = Server::start("http", &["--listen", "127.0.0.1:0", "--grace", "10s"]);
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
    // One connection and four requests.
    assert!(
        exit.stderr.contains("5 admitted, 5 completed, 0 refused"),
        "{}",
        exit.stderr
    );
}

#[test]
fn in_flight_requests_finish_and_kept_alive_connections_close_politely() {
    let mut server = Server::start("http", &["--listen", "127.0.0.1:0", "--grace", "30s"]);
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

#[test]
fn grace_expiry_names_the_stragglers_with_their_peer_addresses() {
    let server = Server::start("http", &["--listen", "127.0.0.1:0", "--grace", "400ms"]);
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

#[test]
fn a_second_signal_forces_the_exit_within_a_second() {
    let mut server = Server::start("http", &["--listen", "127.0.0.1:0", "--grace", "60s"]);
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

#[test]
fn defaults_are_127_0_0_1_7878_and_10s() {
    let mut server = Server::start("http", &[]);
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

#[test]
fn bad_flags_get_one_usage_line_and_no_panic() {
    support::assert_usage_errors("http");
}
