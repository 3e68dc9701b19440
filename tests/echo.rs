//! The `echo` example's contract, checked as a client meets it: a child process, real
//! sockets, real signals. See `examples/echo.rs`.

mod support;

use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::time::{Duration, Instant};

use support::{PATIENCE, Server, assert_refused};

/// Sends `text` and reads the same bytes back.
fn round_trip(stream: &mut TcpStream, text: &str) {
    stream.write_all(text.as_bytes()).unwrap();
    let mut back = vec![0; text.len()];
    stream.read_exact(&mut back).unwrap();
    assert_eq!(String::from_utf8(back).unwrap(), text);
}

fn connect(server: &Server) -> TcpStream {
    let stream = TcpStream::connect(server.addr).unwrap();
    stream.set_read_timeout(Some(PATIENCE)).unwrap();
    stream
}

#[test]
fn serves_open_connections_until_their_clients_close_then_exits_0() {
    let mut server = Server::start("echo", &["--listen", "127.0.0.1:0", "--grace", "30s"]);
    assert_eq!(server.first_line, format!("listening on {}", server.addr));
    assert_eq!(server.addr.ip().to_string(), "127.0.0.1");
    assert_ne!(server.addr.port(), 0);

    let mut a = connect(&server);
    let mut b = connect(&server);
    round_trip(&mut a, "hello from a\n");
    round_trip(&mut b, "hello from b\n");

    server.signal("TERM");
    server.wait_for_stderr("listener closed");
    assert_refused(&server);

    // Still served, every byte, while draining.
    round_trip(&mut a, "still here\n");
    round_trip(&mut b, &"x".repeat(100_000));
    drop(a);
    assert!(server.is_running(), "exited with a connection still open");
    round_trip(&mut b, "last words\n");
    b.shutdown(Shutdown::Write).unwrap();
    let mut rest = Vec::new();
    b.read_to_end(&mut rest).unwrap(); // the server closes its side after ours
    assert!(rest.is_empty());

    let exit = server.wait_exit(PATIENCE);
    assert_eq!(exit.status.code(), Some(0), "{}", exit.stderr);
    assert!(
        exit.stdout_rest.is_empty(),
        "more than one stdout line: {:?}",
        exit.stdout_rest
    );
    assert!(
        exit.stderr.contains("lifecycle terminated"),
        "{}",
        exit.stderr
    );
    assert!(exit.stderr.contains("received SIGTERM"), "{}", exit.stderr);
    assert!(
        exit.stderr.contains("2 admitted, 2 completed, 0 refused"),
        "{}",
        exit.stderr
    );
}

#[test]
fn grace_expiry_names_each_remaining_connection_and_exits_non_zero() {
    let server = Server::start("echo", &["--listen", "127.0.0.1:0", "--grace", "400ms"]);
    let mut a = connect(&server);
    let mut b = connect(&server);
    round_trip(&mut a, "a");
    round_trip(&mut b, "b");

    let signalled = Instant::now();
    server.signal("INT");
    let exit = server.wait_exit(PATIENCE);
    let took = signalled.elapsed();

    assert_eq!(exit.status.code(), Some(2), "{}", exit.stderr);
    assert!(
        took >= Duration::from_millis(400),
        "exited after {took:?}, before the grace ran out"
    );
    assert!(
        exit.stderr.contains("lifecycle abandoned"),
        "{}",
        exit.stderr
    );
    assert!(exit.stderr.contains("received SIGINT"), "{}", exit.stderr);
    for client in [&a, &b] {
        let name = format!("conn {}", client.local_addr().unwrap());
        assert!(
            exit.stderr.contains(&name),
            "{name} not named:\n{}",
            exit.stderr
        );
    }
}

#[test]
fn a_second_signal_forces_the_exit_within_a_second() {
    let mut server = Server::start("echo", &["--listen", "127.0.0.1:0", "--grace", "60s"]);
    let mut a = connect(&server);
    round_trip(&mut a, "a");

    server.signal("TERM");
    server.wait_for_stderr("listener closed");
    let forced = Instant::now();
    server.signal("TERM");
    let exit = server.wait_exit(Duration::from_secs(1));
    let took = forced.elapsed();

    assert!(took < Duration::from_secs(1), "took {took:?}");
    assert_eq!(exit.status.code(), Some(2), "{}", exit.stderr);
    assert!(exit.stderr.contains("(forced)"), "{}", exit.stderr);
    let name = format!("conn {}", a.local_addr().unwrap());
    assert!(
        exit.stderr.contains(&name),
        "{name} not named:\n{}",
        exit.stderr
    );
}

#[test]
fn defaults_are_127_0_0_1_7878_and_10s() {
    let mut server = Server::start("echo", &[]);
    assert_eq!(server.first_line, "listening on 127.0.0.1:7878");
    let mut a = connect(&server);
    round_trip(&mut a, "a");
    server.signal("INT");
    server.wait_for_stderr("listener closed");
    server.signal("INT");
    let exit = server.wait_exit(PATIENCE);
    assert_eq!(exit.status.code(), Some(2), "{}", exit.stderr);
    assert!(exit.stderr.contains("of 10.000s grace"), "{}", exit.stderr);
}

#[test]
fn durations_and_inline_flags_are_understood() {
    let server = Server::start("echo", &["--listen=127.0.0.1:0", "--grace=1.5s"]);
    server.signal("TERM");
    let exit = server.wait_exit(PATIENCE);
    assert_eq!(exit.status.code(), Some(0), "{}", exit.stderr);
    assert!(exit.stderr.contains("of 1.500s grace"), "{}", exit.stderr);
}

#[test]
fn bad_flags_get_one_usage_line_and_no_panic() {
    support::assert_usage_errors("echo");
}
