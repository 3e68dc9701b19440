//! The command line shared by the `echo` and `http` examples (their contract is in
//! issue 4 and in each example's docs): `--listen ADDR`, `--grace DURATION` and
//! `--pre-drain DURATION` (`Builder::pre_drain`: keep serving, not ready, that long after the
//! signal before the drain begins; default 0).

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

/// Bad flags (sysexits' `EX_USAGE`).
pub const EXIT_USAGE: u8 = 64;
/// The runtime, the listener or the signal handlers could not be set up (`EX_OSERR`).
pub const EXIT_SETUP: u8 = 71;

#[derive(Debug)]
pub struct Args {
    pub listen: SocketAddr,
    pub grace: Duration,
    pub pre_drain: Duration,
}

/// The flags from the process's arguments. `--help` prints the usage and exits 0; bad flags
/// print one usage line on standard error and exit [`EXIT_USAGE`].
pub fn from_env(program: &str) -> Result<Args, ExitCode> {
    let usage = format!(
        "usage: {program} [--listen ADDR] [--grace DURATION] [--pre-drain DURATION] \
         (defaults: --listen 127.0.0.1:7878 --grace 10s --pre-drain 0s; durations like 500ms, 3s)"
    );
    match parse_args(std::env::args().skip(1)) {
        Ok(Some(args)) => Ok(args),
        Ok(None) => {
            println!("{usage}");
            Err(ExitCode::SUCCESS)
        }
        Err(message) => {
            eprintln!("{program}: {message}; {usage}");
            Err(ExitCode::from(EXIT_USAGE))
        }
    }
}

/// Prints the report on standard error and turns it into the exit status; or, if the signal
/// handlers could not be installed, says so and returns [`EXIT_SETUP`].
pub fn exit_status(program: &str, report: std::io::Result<async_lifecycle::Report>) -> u8 {
    match report {
        Ok(report) => {
            eprintln!("{report}");
            u8::try_from(report.exit_code()).unwrap_or(1)
        }
        Err(e) => {
            eprintln!("{program}: cannot install the signal handlers: {e}");
            EXIT_SETUP
        }
    }
}

/// The flags, or `None` for `--help`.
fn parse_args(mut args: impl Iterator<Item = String>) -> Result<Option<Args>, String> {
    let mut parsed = Args {
        listen: SocketAddr::from(([127, 0, 0, 1], 7878)),
        grace: Duration::from_secs(10),
        pre_drain: Duration::ZERO,
    };
    while let Some(arg) = args.next() {
        let (flag, inline) = match arg.split_once('=') {
            Some((flag, value)) if flag.starts_with("--") => {
                (flag.to_owned(), Some(value.to_owned()))
            }
            _ => (arg, None),
        };
        if flag == "-h" || flag == "--help" {
            return Ok(None);
        }
        if flag != "--listen" && flag != "--grace" && flag != "--pre-drain" {
            return Err(format!("unknown argument {flag:?}"));
        }
        let value = match inline.or_else(|| args.next()) {
            Some(value) => value,
            None => return Err(format!("{flag} needs a value")),
        };
        if flag == "--listen" {
            parsed.listen = value.parse().map_err(|_| {
                format!("invalid --listen {value:?}: expected HOST:PORT, like 127.0.0.1:0")
            })?;
        } else {
            let duration = parse_duration(&value).ok_or_else(|| {
                format!("invalid {flag} {value:?}: expected a duration like 500ms or 3s")
            })?;
            if flag == "--grace" {
                parsed.grace = duration;
            } else {
                parsed.pre_drain = duration;
            }
        }
    }
    if !parsed.pre_drain.is_zero() && parsed.pre_drain >= parsed.grace {
        return Err(format!(
            "--pre-drain {:?} leaves the drain no time: it must be shorter than --grace {:?}",
            parsed.pre_drain, parsed.grace
        ));
    }
    Ok(Some(parsed))
}

/// `500ms`, `3s`, `1.5s`, `2m`, `1h`.
fn parse_duration(text: &str) -> Option<Duration> {
    let split = text.find(|c: char| !(c.is_ascii_digit() || c == '.'))?;
    let (number, unit) = text.split_at(split);
    let number: f64 = number.parse().ok()?;
    let seconds = match unit {
        "ms" => number / 1000.0,
        "s" => number,
        "m" => number * 60.0,
        "h" => number * 3600.0,
        _ => return None,
    };
    Duration::try_from_secs_f64(seconds).ok()
}

/// The socket systemd (or `systemd-socket-activate`, `systemfd`) passed as fd 3 when
/// `LISTEN_FDS` is set (socket activation; `--listen` is then ignored), checked to be a
/// listening TCP socket; `None` without `LISTEN_FDS`. Call it first thing in `main`, before
/// any thread starts: `listenfd` unsets the `LISTEN_*` variables, and changing the
/// environment while other threads may read it is unsound. More than one socket, or one that
/// is not a listening TCP socket, is an error that says so (the caller exits [`EXIT_SETUP`]).
#[allow(dead_code, reason = "the echo example binds its own (smol) listener")]
pub fn inherited(program: &str) -> Result<Option<std::net::TcpListener>, String> {
    let mut inherited = listenfd::ListenFd::from_env();
    match inherited.len() {
        0 => return Ok(None),
        1 => {}
        n => {
            return Err(format!(
                "{program}: LISTEN_FDS passes {n} sockets (fds 3 to {}); this server serves one: \
                 pass it a single socket",
                n + 2
            ));
        }
    }
    let not_listening = |e: std::io::Error| {
        format!("{program}: the inherited fd 3 (LISTEN_FDS) is not a listening TCP socket: {e}")
    };
    let listener = match inherited.take_tcp_listener(0) {
        Ok(Some(listener)) => listener,
        Ok(None) => return Err(format!("{program}: LISTEN_FDS is set but fd 3 was taken")),
        Err(e) => return Err(not_listening(e)),
    };
    // `listenfd` checks that fd 3 is a TCP stream socket, not that it listens: a bound,
    // unbound or connected one (systemd's `Accept=yes`) would fail at the first accept.
    // Unbound: refused here; bound or listening: `listen` (in `listener`) makes it (or keeps
    // it) listening; connected: `listen` fails (EINVAL).
    match listener.local_addr() {
        Ok(addr) if addr.port() != 0 => Ok(Some(listener)),
        Ok(_) => Err(not_listening(std::io::Error::other("it is not bound"))),
        Err(e) => Err(not_listening(e)),
    }
}

/// The listening socket: `inherited` (from [`inherited`]), made a tokio listener, else a new
/// one bound to `--listen`. Returns the listener and its address.
#[allow(dead_code, reason = "the echo example binds its own (smol) listener")]
pub async fn listener(
    program: &str,
    args: &Args,
    inherited: Option<std::net::TcpListener>,
) -> Result<(tokio::net::TcpListener, std::net::SocketAddr), String> {
    let listener = match inherited {
        Some(listener) => {
            let not_listening = |e: std::io::Error| {
                format!(
                    "{program}: the inherited fd 3 (LISTEN_FDS) is not a listening TCP socket: {e}"
                )
            };
            listener.set_nonblocking(true).map_err(not_listening)?;
            let socket = tokio::net::TcpSocket::from_std_stream(std::net::TcpStream::from(
                std::os::fd::OwnedFd::from(listener),
            ));
            socket.listen(1024).map_err(not_listening)?
        }
        None => tokio::net::TcpListener::bind(args.listen)
            .await
            .map_err(|e| format!("{program}: cannot listen on {}: {e}", args.listen))?,
    };
    let addr = listener
        .local_addr()
        .map_err(|e| format!("{program}: cannot read the listening address: {e}"))?;
    Ok((listener, addr))
}
