//! `examples/sim_race.rs` as a child process, as its user runs it: the search finds the
//! planted race within its 1,000 runs and prints `replay:` and `trace:` lines with exit 1;
//! `--replay TOKEN` (and the `ASYNC_LIFECYCLE_SIM_REPLAY` variable) reproduce it with the
//! identical trace line and exit 1; `--fixed` passes 10,000 schedules with exit 0; bad
//! arguments are one usage line and exit 64. The environment variables as CI sets them: empty
//! counts as unset, garbage is refused with a message naming the variable.

mod support;

use std::process::Command;

struct Output {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

/// Runs the example with `args` (and `env`) to its end, killing it and failing past
/// `support::PATIENCE` (a bound on failure, never a wait).
fn sim_race(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(support::example("sim_race"));
    command
        .args(args)
        .env_remove("ASYNC_LIFECYCLE_SIM_REPLAY")
        .env_remove("ASYNC_LIFECYCLE_SIM_SEED")
        .envs(env.iter().copied());
    let (status, stdout, stderr) = support::run_bounded(command, &format!("sim_race {args:?}"));
    Output {
        code: status.code(),
        stdout,
        stderr,
    }
}

/// The value of the one line that begins with `prefix`.
fn line<'a>(output: &'a Output, prefix: &str) -> &'a str {
    let found: Vec<&str> = output
        .stdout
        .lines()
        .filter_map(|l| l.strip_prefix(prefix))
        .collect();
    assert_eq!(
        found.len(),
        1,
        "one {prefix:?} line expected in:\n{}\nstderr:\n{}",
        output.stdout,
        output.stderr
    );
    found[0]
}

#[test]
fn the_search_finds_the_race_and_its_token_replays_it_with_the_same_trace() {
    let found = sim_race(&[], &[]);
    assert_eq!(found.code, Some(1), "{}\n{}", found.stdout, found.stderr);
    assert!(
        found
            .stdout
            .contains("taken off the queue after the stop and lost"),
        "{}",
        found.stdout
    );
    // Within the 1,000 runs it searches (the run index is printed from 0).
    let run = found
        .stdout
        .lines()
        .find_map(|l| l.trim().strip_prefix("run "))
        .and_then(|l| l.split(' ').next())
        .and_then(|n| n.parse::<u64>().ok())
        .unwrap_or_else(|| panic!("no run index in:\n{}", found.stdout));
    assert!(run < 1000, "{run}");
    let token = line(&found, "replay: ");
    let trace = line(&found, "trace: ");
    assert!(token.starts_with("v1-"), "{token}");
    assert_eq!(trace.len(), 16, "{trace}");
    assert!(trace.bytes().all(|b| b.is_ascii_hexdigit()), "{trace}");
    assert!(found.stderr.is_empty(), "{}", found.stderr);

    let replayed = sim_race(&["--replay", token], &[]);
    assert_eq!(replayed.code, Some(1), "{}", replayed.stdout);
    assert_eq!(line(&replayed, "replay: "), token);
    assert_eq!(line(&replayed, "trace: "), trace);
    assert!(replayed.stdout.contains("lost"), "{}", replayed.stdout);

    // The search honours the replay variable: the same run, the same trace.
    let from_env = sim_race(&[], &[("ASYNC_LIFECYCLE_SIM_REPLAY", token)]);
    assert_eq!(from_env.code, Some(1), "{}", from_env.stdout);
    assert_eq!(line(&from_env, "trace: "), trace);
}

/// `ASYNC_LIFECYCLE_SIM_REPLAY=` (a CI template's "no token") and an empty seed variable
/// count as unset: the search runs as if they were not there. A bad value panics, naming
/// the variable.
#[test]
fn empty_variables_count_as_unset_and_bad_ones_are_refused() {
    let plain = sim_race(&[], &[]);
    assert_eq!(plain.code, Some(1), "{}\n{}", plain.stdout, plain.stderr);
    for env in [
        &[("ASYNC_LIFECYCLE_SIM_REPLAY", "")][..],
        &[
            ("ASYNC_LIFECYCLE_SIM_REPLAY", " "),
            ("ASYNC_LIFECYCLE_SIM_SEED", ""),
        ],
    ] {
        let found = sim_race(&[], env);
        assert_eq!(
            found.code,
            Some(1),
            "{env:?}: {}\n{}",
            found.stdout,
            found.stderr
        );
        assert_eq!(
            line(&found, "replay: "),
            line(&plain, "replay: "),
            "{env:?}"
        );
        assert_eq!(line(&found, "trace: "), line(&plain, "trace: "), "{env:?}");
    }
    for (var, value, message) in [
        (
            "ASYNC_LIFECYCLE_SIM_REPLAY",
            "v1-random-zzz",
            "ASYNC_LIFECYCLE_SIM_REPLAY: bad replay token \"v1-random-zzz\"",
        ),
        (
            "ASYNC_LIFECYCLE_SIM_SEED",
            "ten",
            "ASYNC_LIFECYCLE_SIM_SEED=\"ten\": not a number",
        ),
    ] {
        let refused = sim_race(&[], &[(var, value)]);
        assert_eq!(refused.code, Some(101), "{var}: {}", refused.stdout);
        assert!(
            refused.stderr.contains(message),
            "{var}: {}",
            refused.stderr
        );
    }
}

#[test]
fn the_fixed_worker_passes_ten_thousand_schedules() {
    let fixed = sim_race(&["--fixed"], &[]);
    assert_eq!(fixed.code, Some(0), "{}\n{}", fixed.stdout, fixed.stderr);
    assert!(
        fixed.stdout.contains("10000 runs passed"),
        "{}",
        fixed.stdout
    );
    assert!(!fixed.stdout.contains("replay: "), "{}", fixed.stdout);
}

#[test]
fn bad_arguments_are_one_usage_line_and_exit_64() {
    for args in [
        &["--frobnicate"][..],
        &["--replay"],
        &["--replay", "not-a-token"],
        &["--replay", "v1-random-s1", "extra"],
        &["--fixed", "--fixed"],
    ] {
        let output = sim_race(args, &[]);
        assert_eq!(output.code, Some(64), "{args:?}: {}", output.stdout);
        assert!(output.stdout.is_empty(), "{args:?}: {}", output.stdout);
        let lines: Vec<&str> = output.stderr.lines().collect();
        assert_eq!(lines.len(), 1, "{args:?}: {}", output.stderr);
        assert!(lines[0].starts_with("usage: sim_race"), "{}", lines[0]);
    }
}
