//! The scenarios of `examples/basic.rs` and `examples/echo.rs` under the simulator, shared
//! by `tests/sim_scenarios.rs` (searches and a proptest) and `fuzz/fuzz_targets/sim.rs`.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_lifecycle::sim::{self, Env, Fault};
use async_lifecycle::{Report, ServiceOutcome};
use futures::future::{Either, select};

/// The report's session accounting: every admitted session ended (completed or panicked) or
/// is named (or counted) as abandoned.
fn nothing_lost(report: &Report) -> sim::Outcome {
    let s = report.sessions();
    let ended = s.completed() + s.panicked() + s.abandoned_count();
    if s.admitted() != ended {
        return Err(format!(
            "{} sessions admitted, {ended} accounted for (completed, panicked or abandoned):\n{report}",
            s.admitted()
        )
        .into());
    }
    Ok(())
}

fn outcome<'r>(report: &'r Report, service: &str) -> Option<&'r ServiceOutcome> {
    report
        .services()
        .iter()
        .find(|s| s.name() == service)
        .map(|s| s.outcome())
}

/// `examples/basic.rs` under the simulator: the worker finishes the job in hand and stops
/// cleanly; the producer ignores its stop, so it is abandoned at the grace with the batch
/// it holds named; exit status 2. The stop is a SIGTERM at a point the scheduler picks,
/// sometimes followed by a second one (which forces) or by a clock jump (a stalled process).
pub async fn basic(env: Env) -> sim::Outcome {
    let lc = env.lifecycle(|b| b.grace(Duration::from_secs(2)));
    let clock = lc.clock().clone();
    let (jobs_tx, jobs_rx) = async_channel::bounded::<u32>(4);
    let finished = Arc::new(Mutex::new(Vec::new()));

    let (worker_clock, done) = (clock.clone(), finished.clone());
    lc.service("worker", move |mut stop| async move {
        // Until the stop (or the queue closed).
        while let Either::Left((Ok(job), _)) =
            select(std::pin::pin!(jobs_rx.recv()), &mut stop).await
        {
            let later = worker_clock.now() + Duration::from_millis(50);
            worker_clock.sleep_until(later).await; // "work"
            done.lock().unwrap().push(job);
        }
        Ok::<(), std::io::Error>(())
    })?;

    let sessions = lc.downgrade();
    lc.service("producer", move |_stop| async move {
        for batch in 1.. {
            let Ok(session) = sessions.session(format!("batch {batch}")) else {
                let later = clock.now() + Duration::from_millis(500);
                clock.sleep_until(later).await;
                continue;
            };
            for job in 0..4 {
                let later = clock.now() + Duration::from_millis(100);
                clock.sleep_until(later).await;
                if jobs_tx.send(batch * 10 + job).await.is_err() {
                    // The worker is gone: hold the batch forever (a straggler).
                    futures::future::pending::<()>().await;
                }
            }
            drop(session);
        }
        Ok::<(), std::io::Error>(())
    })?;

    env.fault(Fault::Signal);
    let then = env.choose(3);
    match then {
        0 => env.fault(Fault::Signal), // a second SIGTERM forces
        // A stall shorter than the grace (a longer one would abandon the worker too, if it
        // lands before the worker saw its stop: the search finds that schedule).
        1 => env.fault(Fault::ClockJump(Duration::from_secs(1))),
        _ => {}
    }
    let report = lc.wait().await;

    nothing_lost(&report)?;
    if report.exit_code() != 2 {
        return Err(format!("exit {} (expected 2):\n{report}", report.exit_code()).into());
    }
    // Clean, or abandoned by the force if the second signal came before it saw the first.
    match outcome(&report, "worker") {
        Some(o) if o.is_clean() => {}
        Some(ServiceOutcome::Abandoned) if then == 0 => {}
        other => return Err(format!("worker ended {other:?}:\n{report}").into()),
    }
    match outcome(&report, "producer") {
        Some(ServiceOutcome::Abandoned) => {}
        other => return Err(format!("producer ended {other:?}:\n{report}").into()),
    }
    // At most the one batch the producer held, by name.
    let abandoned = report.sessions().abandoned();
    if abandoned.len() > 1 || abandoned.iter().any(|s| !s.name().starts_with("batch ")) {
        return Err(format!("abandoned {abandoned:?}:\n{report}").into());
    }
    Ok(())
}

/// One client of the echo scenario: what it is, and what it saw.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Seen {
    /// Every message echoed, then it closed.
    Served,
    /// Its connection was closed before any echo (accepted just as the stop came).
    TurnedAway,
    /// It never closes (a straggler): still waiting when the run ended.
    Waiting,
}

/// A connection: the client's messages in, the echoes out.
type Conn = (async_channel::Receiver<u32>, async_channel::Sender<u32>);

/// `examples/echo.rs` under the simulator: an accept loop as a service takes connections
/// from a channel (the listener) and echoes each on a task of its own under a session named
/// `conn N`; at the stop it stops accepting. Three clients connect at points the scheduler
/// picks and send three messages each; one of them (chosen per run) never closes. Exit 0 if
/// no straggler was admitted, else 2 with exactly it named.
pub async fn echo(env: Env) -> sim::Outcome {
    let lc = env.lifecycle(|b| b.grace(Duration::from_secs(10)));
    let (listener_tx, listener_rx) = async_channel::unbounded::<(u32, Conn)>();
    let sessions = lc.downgrade();
    let spawner = env.clone();
    lc.service("accept-loop", move |mut stop| async move {
        loop {
            let (peer, (from_client, to_client)) =
                match select(std::pin::pin!(listener_rx.recv()), &mut stop).await {
                    Either::Left((Ok(conn), _)) => conn,
                    Either::Left((Err(_), _)) | Either::Right(((), _)) => break,
                };
            match sessions.session(format!("conn {peer}")) {
                Ok(session) => {
                    spawner.spawn(format!("echo {peer}"), async move {
                        while let Ok(message) = from_client.recv().await {
                            if to_client.send(message).await.is_err() {
                                break;
                            }
                        }
                        drop(session);
                    });
                }
                // Accepted just as the stop came: turned away (the connection is closed).
                Err(_refused) => drop((from_client, to_client)),
            }
        }
        // The listener closes: connections not yet accepted are refused.
        drop(listener_rx);
        Ok::<(), std::io::Error>(())
    })?;

    let stubborn = env.choose(3) as u32;
    let seen: Arc<Mutex<Vec<Option<Seen>>>> = Arc::new(Mutex::new(vec![None; 3]));
    for peer in 0..3u32 {
        let (listener, seen) = (listener_tx.clone(), seen.clone());
        env.spawn(format!("client {peer}"), async move {
            sim::yield_now().await;
            let (to_server, from_client) = async_channel::unbounded();
            let (to_client, from_server) = async_channel::unbounded();
            if listener
                .send((peer, (from_client, to_client)))
                .await
                .is_err()
            {
                seen.lock().unwrap()[peer as usize] = Some(Seen::TurnedAway);
                return;
            }
            let mut echoed = 0;
            for message in 0..3 {
                if to_server.send(message).await.is_err() {
                    break;
                }
                match from_server.recv().await {
                    Ok(echo) if echo == message => echoed += 1,
                    Ok(other) => panic!("client {peer} sent {message}, got {other} back"),
                    Err(_) => break,
                }
            }
            let outcome = match echoed {
                3 if peer == stubborn => Seen::Waiting,
                3 => Seen::Served,
                0 => Seen::TurnedAway,
                n => panic!("client {peer}: its connection closed after {n} of 3 echoes"),
            };
            seen.lock().unwrap()[peer as usize] = Some(outcome);
            if outcome == Seen::Waiting {
                // Holds its connection open forever.
                futures::future::pending::<()>().await;
            }
        });
    }
    drop(listener_tx);
    env.fault(Fault::Signal);
    let report = lc.wait().await;

    nothing_lost(&report)?;
    let seen = seen.lock().unwrap().clone();
    let abandoned: Vec<&str> = report
        .sessions()
        .abandoned()
        .iter()
        .map(|s| s.name())
        .collect();
    let straggler = format!("conn {stubborn}");
    // The stubborn client was served (it is waiting): its connection is the one named.
    let admitted_straggler = seen[stubborn as usize] == Some(Seen::Waiting);
    let expected: Vec<&str> = if admitted_straggler {
        vec![&straggler]
    } else {
        vec![]
    };
    if abandoned != expected {
        return Err(format!("clients saw {seen:?}; abandoned {abandoned:?}:\n{report}").into());
    }
    let code = if admitted_straggler { 2 } else { 0 };
    if report.exit_code() != code {
        return Err(format!("exit {} (expected {code}):\n{report}", report.exit_code()).into());
    }
    match outcome(&report, "accept-loop") {
        Some(o) if o.is_clean() => Ok(()),
        other => Err(format!("accept loop ended {other:?}:\n{report}").into()),
    }
}
