#!/usr/bin/env python3
"""Load test: SIGTERM in the middle of real keep-alive HTTP load, and nothing is lost.

Runs `examples/http` (or `--example axum`: `examples/axum`, the same contract on an axum
`Router`) on a loopback port, loads it with `wrk` (Debian's package, installed
here if missing) over kept-alive connections — a mix of `GET /` and `GET /sleep?ms=N` —
sends SIGTERM half-way, and checks:

- no request that was sent on a connection is lost: every one is answered (no reset, no
  connection closed without a response, no timeout);
- every answer is a 200;
- the `/sleep` requests in flight at SIGTERM are answered 200 (they are the ones answered
  with `Connection: close`, which the server adds once draining began);
- the server exits 0, its report saying `terminated`.

New connections turned away after the listener closed are expected and counted apart.

Why wrk and not hey: hey is built on Go's HTTP client, which silently retries an idempotent
request on a new connection when a reused one fails — it would hide exactly the losses this
test counts. wrk never retries.

How wrk's counters are read: `scripts/load.lua` counts every request wrk generates and
every response it parses. wrk reconnects a connection the server closed; once the listener
is closed, that connect is refused, and wrk (whose connects are non-blocking) only learns it
when it writes the request it generated for the new connection: a refused connection shows
up as one write error and one request sent. On an established connection, wrk writes a
request only after the previous response, so a request the server dropped (closed or reset
before answering) shows up as a read error or a timeout, never as a write error. Hence:
refused = write errors + connect errors; lost = sent - answered - refused write errors,
which also catches a request that went unanswered without any error.

Only loopback addresses are used; every run is bounded in time.
"""

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LUA = os.path.join(ROOT, "scripts", "load.lua")


def ensure_wrk():
    if shutil.which("wrk"):
        return
    apt = ["apt-get"] if os.geteuid() == 0 else ["sudo", "-n", "apt-get"]
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    print("installing wrk with apt-get", flush=True)
    if subprocess.run(apt + ["install", "-y", "-qq", "wrk"], env=env).returncode != 0:
        subprocess.run(apt + ["update", "-qq"], env=env, check=True)
        subprocess.run(apt + ["install", "-y", "-qq", "wrk"], env=env, check=True)
    if not shutil.which("wrk"):
        sys.exit("load: wrk is not installed and could not be installed")


def build_example(name):
    """Builds examples/NAME and returns the path of its executable."""
    out = subprocess.run(
        ["cargo", "build", "--all-features", "--example", name, "--message-format=json"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        check=True,
        text=True,
    ).stdout
    for line in out.splitlines():
        msg = json.loads(line)
        target = msg.get("target", {})
        if (
            msg.get("reason") == "compiler-artifact"
            and target.get("name") == name
            and "example" in target.get("kind", [])
            and msg.get("executable")
        ):
            return msg["executable"]
    sys.exit(f"load: cargo did not report the {name} example's executable")


def run_round(exe, number, conns, sleep_every, sleep_ms, term_after):
    server = subprocess.Popen(
        [exe, "--listen", "127.0.0.1:0", "--grace", "30s"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    stderr_lines = []
    collector = threading.Thread(
        target=lambda: stderr_lines.extend(server.stderr), daemon=True
    )
    collector.start()
    first = server.stdout.readline().strip()
    if not first.startswith("listening on 127.0.0.1:"):
        server.kill()
        sys.exit(f"load: unexpected first line {first!r}")
    addr = first.removeprefix("listening on ")

    wrk = subprocess.Popen(
        [
            "wrk",
            "-t2",
            f"-c{conns}",
            f"-d{int(term_after) + 60}s",
            "--timeout",
            "10s",
            "-s",
            LUA,
            f"http://{addr}/",
            "--",
            str(sleep_every),
            str(sleep_ms),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    time.sleep(term_after)  # the load itself: this long before the signal
    server.send_signal(signal.SIGTERM)
    signalled = time.monotonic()
    try:
        code = server.wait(timeout=60)
    except subprocess.TimeoutExpired:
        server.kill()
        wrk.kill()
        sys.exit("load: the server did not exit within 60 s of SIGTERM")
    drained = time.monotonic() - signalled
    # Nothing can be answered any more: stop wrk, which then prints its counts.
    wrk.send_signal(signal.SIGINT)
    try:
        out, _ = wrk.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        wrk.kill()
        sys.exit("load: wrk did not stop")
    collector.join(timeout=5)
    report = "".join(stderr_lines)

    result = None
    for line in out.splitlines():
        if line.startswith("LOAD-RESULT "):
            result = json.loads(line.removeprefix("LOAD-RESULT "))
    if result is None:
        sys.exit(f"load: no result from wrk:\n{out}")

    r = result
    refused_attempts = r["errors_write"]
    refused = refused_attempts + r["errors_connect"]
    sent = r["sent"] - refused_attempts  # requests sent on connections that were open
    lost = sent - r["answered"]
    checks = [
        ("no request lost", lost == 0 and r["errors_read"] == 0 and r["errors_timeout"] == 0),
        ("every answer a 200", r["not_ok"] == 0 and r["errors_status"] == 0),
        ("/sleep requests were in flight at SIGTERM", r["sleeps_closing"] > 0),
        ("server exit status 0", code == 0),
        ("report says terminated", "lifecycle terminated" in report),
    ]
    print(
        f"round {number}: {conns} connections, about 1 request in {sleep_every} is "
        f"/sleep?ms={sleep_ms // 2}..{sleep_ms * 3 // 2}, SIGTERM after {term_after:.1f} s\n"
        f"  requests sent on open connections : {sent}\n"
        f"  answered                          : {r['answered']} "
        f"(200: {r['ok']}, other: {r['not_ok']}; {r['closing']} with Connection: close)\n"
        f"  /sleep in flight at SIGTERM, 200  : {r['sleeps_closing']}\n"
        f"  lost                              : {lost} "
        f"(read errors {r['errors_read']}, timeouts {r['errors_timeout']})\n"
        f"  new connections refused           : {refused} "
        f"(after the listener closed; wrk retries them in a loop)\n"
        f"  server                            : exit {code}, {drained:.2f} s after SIGTERM\n"
        f"  p99 latency                       : {r['latency_p99_us'] / 1000:.1f} ms",
        flush=True,
    )
    failed = [name for name, ok in checks if not ok]
    for name in failed:
        print(f"  FAILED: {name}")
    if failed:
        print("  server stderr:\n" + report)
        print("  wrk output:\n" + out)
    return not failed


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--load-seconds", type=float, default=10.0,
                        help="load before the SIGTERM, per round")
    parser.add_argument("--example", choices=["http", "axum"], default="http",
                        help="the server: examples/http (hyper + a service_fn) or "
                        "examples/axum (an axum Router), both on async_lifecycle::serve")
    args = parser.parse_args()

    ensure_wrk()
    exe = build_example(args.example)
    print(f"load: examples/{args.example}", flush=True)
    # (connections, one /sleep in N requests, its duration in ms)
    mixes = [(64, 4, 300), (128, 2, 1000), (32, 8, 50)]
    ok = True
    for number in range(1, args.rounds + 1):
        conns, every, ms = mixes[(number - 1) % len(mixes)]
        ok &= run_round(exe, number, conns, every, ms, args.load_seconds)
    print(f"load ({args.example}): PASSED" if ok else f"load ({args.example}): FAILED",
          flush=True)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
