//! `examples/supervisor.rs` as a child process: its exit status, the service it names as the
//! one that tripped the restart intensity, the order in which its services started and saw
//! their stop signals (printed by the services themselves), and its report as a tree.

mod support;

use std::process::{Command, ExitStatus};

/// Runs the example to its end (killing it and failing past `support::PATIENCE`, a bound on
/// failure, never a wait) and returns its exit status, stdout and stderr.
fn run_supervisor() -> (ExitStatus, String, String) {
    support::run_bounded(
        Command::new(support::example("supervisor")),
        "the supervisor example",
    )
}

/// The index of the line that is exactly `line` (the first one), failing with the output.
fn at(lines: &[&str], line: &str) -> usize {
    lines
        .iter()
        .position(|l| *l == line)
        .unwrap_or_else(|| panic!("no line {line:?} in:\n{}", lines.join("\n")))
}

/// Asserts that the exact lines `order` appear in that order.
fn assert_in_order(lines: &[&str], order: &[&str]) {
    for pair in order.windows(2) {
        assert!(
            at(lines, pair[0]) < at(lines, pair[1]),
            "{:?} should come before {:?} in:\n{}",
            pair[0],
            pair[1],
            lines.join("\n")
        );
    }
}

#[test]
fn the_supervisor_example_trips_on_flaky_starts_in_order_stops_in_reverse_and_prints_a_tree() {
    let (status, stdout, stderr) = run_supervisor();
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(status.code(), Some(1), "{stdout}\nstderr:\n{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");

    // The restart storm: `flaky` ran 4 times, and its fourth restart tripped the intensity.
    let cause = "restart intensity exceeded: 4 restarts within 10s, the last of service \"flaky\"";
    at(&lines, &format!("  event: stop requested: {cause}"));
    let report = lines
        .iter()
        .position(|l| l.starts_with("lifecycle terminated after draining"))
        .unwrap_or_else(|| panic!("no report in:\n{stdout}"));
    assert!(
        lines[report].ends_with(&format!("; stop cause: {cause}")),
        "{stdout}"
    );
    assert_in_order(
        &lines,
        &[
            "flaky: run 1: connection refused",
            "  event: service \"flaky\" restarting in 20ms (restart 1)",
            "flaky: run 2: connection refused",
            "  event: service \"flaky\" restarting in 40ms (restart 2)",
            "flaky: run 3: connection refused",
            "  event: service \"flaky\" restarting in 80ms (restart 3)",
            "flaky: run 4: connection refused",
            &format!("  event: stop requested: {cause}"),
        ],
    );
    assert!(
        lines[report..]
            .iter()
            .any(|l| l.starts_with("  FAIL flaky ") && l.contains("restarted 3×")),
        "{stdout}"
    );
    assert_eq!(lines.last(), Some(&"exit code: 1"), "{stdout}");

    // Started in dependency order: each once the one before was ready.
    assert_in_order(
        &lines,
        &[
            "db: opening the pool",
            "db: ready",
            "  event: service \"db\" ready (run 1)",
            "  event: service \"cache\" started (run 1)",
            "  event: service \"api\" started (run 1)",
            "  event: service \"flaky\" started (run 1)",
        ],
    );
    assert_in_order(&lines, &["db: ready", "cache: started", "api: started"]);
    assert_in_order(&lines, &["db: ready", "worker 1: started"]);
    assert_in_order(&lines, &["db: ready", "worker 2: started"]);

    // Stopped in reverse: what each service printed when its own stop signal fired.
    assert_in_order(
        &lines,
        &[
            &format!("  event: stop requested: {cause}"),
            "api: saw its stop signal",
            "cache: saw its stop signal",
            "db: saw its stop signal",
        ],
    );
    assert_in_order(
        &lines,
        &["worker 1: saw its stop signal", "db: saw its stop signal"],
    );
    assert_in_order(
        &lines,
        &["worker 2: saw its stop signal", "db: saw its stop signal"],
    );
    assert_in_order(
        &lines,
        &[
            "api: saw its stop signal",
            "  event: service \"cache\" signalled to stop (its dependents are done)",
            "cache: saw its stop signal",
            "  event: service \"db\" signalled to stop (its dependents are done)",
            "db: saw its stop signal",
        ],
    );

    // The report is a tree: the nested lifecycle's report indented under `workers`.
    let workers = report
        + lines[report..]
            .iter()
            .position(|l| l.starts_with("  ok   workers "))
            .unwrap_or_else(|| panic!("no workers line in the report:\n{stdout}"));
    let subtree: Vec<&str> = lines[workers + 1..]
        .iter()
        .take_while(|l| l.starts_with("       | "))
        .map(|l| &l["       | ".len()..])
        .collect();
    assert!(
        subtree
            .first()
            .is_some_and(|l| l.starts_with("lifecycle terminated")
                && l.ends_with("stop cause: the parent lifecycle is stopping")),
        "{stdout}"
    );
    for worker in ["worker 1", "worker 2"] {
        assert!(
            subtree
                .iter()
                .any(|l| l.starts_with(&format!("  ok   {worker}  stopped"))),
            "{worker} not under workers:\n{stdout}"
        );
    }
    assert_eq!(subtree.last(), Some(&"exit code: 0"), "{stdout}");
    // The workers are in the nested report only, not services of the outer lifecycle.
    assert!(
        !lines[report..]
            .iter()
            .any(|l| l.starts_with("  ok   worker ")),
        "{stdout}"
    );
}
