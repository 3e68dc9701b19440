//! Loud complaints: every unclean end, panic and abandoned session is emitted at error level
//! through `tracing` (the default feature), naming what it is about.

mod support;

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_lifecycle::{Lifecycle, ManualClock, State};
use futures::executor::LocalPool;
use futures::task::LocalSpawnExt;
use tracing_subscriber::util::SubscriberInitExt;

/// Collects what the subscriber writes.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn unclean_services_panics_and_stragglers_are_logged_at_error_level() {
    let captured = Captured::default();
    let writer = captured.clone();
    let _guard = tracing_subscriber::fmt()
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish()
        .set_default();

    let clock = ManualClock::new();
    let lc = Lifecycle::builder()
        .grace(Duration::from_secs(5))
        .clock(clock.clone())
        .build();
    lc.service("flaky", |stop| async move {
        let stopped = stop.clone();
        stop.await;
        // A unit tail after the panic: a body that only panics has type `!`.
        if stopped.is_stopped() {
            panic!("index out of bounds");
        }
    })
    .unwrap();
    lc.service("deaf", |_stop| futures::future::pending::<()>())
        .unwrap();
    let session = lc.session("conn 10.0.0.7:5123").unwrap();

    let mut pool = LocalPool::new();
    let wait = pool.spawner().spawn_local_with_handle(lc.wait()).unwrap();
    pool.run_until_stalled();
    lc.stop("deploy");
    pool.run_until_stalled();
    clock.advance(Duration::from_secs(5));
    let report = pool.run_until(wait);
    assert_eq!(report.state(), State::Abandoned);
    drop(session);

    let log = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    let errors: Vec<&str> = log.lines().filter(|l| l.contains("ERROR")).collect();
    let has = |needle: &str| errors.iter().any(|l| l.contains(needle));
    assert!(
        has("service ended uncleanly") && has("flaky") && has("index out of bounds"),
        "{log}"
    );
    assert!(has("deaf") && has("abandoned"), "{log}");
    assert!(
        has("session abandoned") && has("conn 10.0.0.7:5123"),
        "{log}"
    );
    assert_eq!(errors.len(), 3, "one complaint each, no more: {log}");
}

/// Defect: with `tracing_subscriber::fmt().with_writer(std::io::stderr)` (as the example
/// installs) and a dead log collector (standard error a pipe nobody reads), the complaint's
/// write panicked inside the finishing step, and `wait()` never resolved. Now the program
/// finishes: the report on stdout, exit status 2.
#[test]
fn a_dead_log_collector_does_not_stop_the_report_or_the_exit_status() {
    use std::process::{Command, Stdio};
    let mut child = Command::new(support::example("basic"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the example starts");
    // The collector dies before anything is logged: every write to stderr is EPIPE.
    drop(child.stderr.take());
    let started = std::time::Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > support::PATIENCE {
            child.kill().unwrap();
            panic!("the example did not finish within {:?}", support::PATIENCE);
        }
        std::thread::park_timeout(Duration::from_millis(20));
    };
    let mut stdout = String::new();
    std::io::Read::read_to_string(&mut child.stdout.take().unwrap(), &mut stdout).unwrap();
    assert_eq!(status.code(), Some(2), "{stdout}");
    assert!(stdout.contains("FAIL producer  abandoned"), "{stdout}");
    assert!(stdout.contains("ABANDONED batch"), "{stdout}");
}
