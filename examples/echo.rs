//! The origin's `example_echo`, on smol: an accept loop as a service, one session per
//! connection, drained on SIGINT/SIGTERM.
//!
//! ```text
//! cargo run --example echo -- --listen 127.0.0.1:7878 --grace 10s
//! ```
//!
//! - When ready it prints one line, `listening on HOST:PORT`, to stdout.
//! - Each connection is a session named `conn PEER_ADDR`; every byte it receives is echoed.
//! - The first SIGINT/SIGTERM closes the listener at once (stderr: `echo: draining: listener
//!   closed`); open connections are served until their clients close them, then the process
//!   exits 0.
//! - If the grace period runs out first, the report on stderr names each remaining
//!   connection, and the exit status is 2. A second signal forces that at once.
//! - Bad flags: one usage line on stderr, exit status 64.

use std::io::Write;
use std::process::ExitCode;
use std::sync::Arc;

use async_lifecycle::async_io::BuilderExt;
use async_lifecycle::{Lifecycle, Session, StopSignal, WeakLifecycle};
use smol::net::{TcpListener, TcpStream};
use smol::{Executor, future, io};

#[path = "common/args.rs"]
mod args;
use args::{Args, EXIT_SETUP};

fn main() -> ExitCode {
    let args = match args::from_env("echo") {
        Ok(args) => args,
        Err(code) => return code,
    };
    let ex = Arc::new(Executor::new());
    let code = future::block_on(ex.run(serve(args, ex.clone())));
    ExitCode::from(code)
}

async fn serve(args: Args, ex: Arc<Executor<'static>>) -> u8 {
    let listener = match TcpListener::bind(args.listen).await {
        Ok(listener) => listener,
        Err(e) => {
            eprintln!("echo: cannot listen on {}: {e}", args.listen);
            return EXIT_SETUP;
        }
    };
    let addr = match listener.local_addr() {
        Ok(addr) => addr,
        Err(e) => {
            eprintln!("echo: cannot read the listening address: {e}");
            return EXIT_SETUP;
        }
    };
    let lc = Lifecycle::builder()
        .grace(args.grace)
        .pre_drain(args.pre_drain)
        .smol(ex.clone())
        .build();
    // Signal handlers first: once the line below is printed, a signal must drain, not kill.
    let until_signal = lc.run_until_signal();
    // The service holds a weak handle: it begins sessions, and keeps nothing alive.
    let sessions = lc.downgrade();
    lc.service("accept-loop", move |stop| {
        accept_loop(listener, sessions, ex, stop)
    })
    .expect("a running lifecycle admits services");

    println!("listening on {addr}");
    // Ignored: a closed stdout must not stop the server.
    let _ = std::io::stdout().flush();

    args::exit_status("echo", until_signal.await)
}

/// Accepts connections until the stop, then closes the listener at once.
async fn accept_loop(
    listener: TcpListener,
    lc: WeakLifecycle,
    ex: Arc<Executor<'static>>,
    mut stop: StopSignal,
) -> io::Result<()> {
    loop {
        let stopped = async {
            (&mut stop).await;
            None
        };
        let accepted = async { Some(listener.accept().await) };
        match future::or(stopped, accepted).await {
            None => break,
            Some(Ok((stream, peer))) => match lc.session(format!("conn {peer}")) {
                Ok(session) => ex.spawn(echo(stream, session)).detach(),
                // Accepted just as the stop came: turned away (the connection is closed).
                Err(_refused) => drop(stream),
            },
            // The peer gave up before we accepted it: nothing to serve.
            Some(Err(e))
                if matches!(
                    e.kind(),
                    io::ErrorKind::ConnectionAborted
                        | io::ErrorKind::ConnectionReset
                        | io::ErrorKind::Interrupted
                ) => {}
            // Anything else (out of file descriptors, …) fails the service, which stops the
            // lifecycle and is reported.
            Some(Err(e)) => return Err(e),
        }
    }
    drop(listener);
    eprintln!("echo: draining: listener closed");
    Ok(())
}

/// Echoes every byte back until the client closes its side; the session ends with it.
async fn echo(stream: TcpStream, session: Session) {
    // Errors (a reset) just end the connection.
    let _ = io::copy(stream.clone(), &mut stream.clone()).await;
    drop(session);
}
