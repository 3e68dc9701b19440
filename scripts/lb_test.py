#!/usr/bin/env python3
"""Kubernetes' endpoint-removal race, with a fake load balancer: nothing fails at a deploy.

A load balancer (or kube-proxy) learns that a pod is going away from its readiness probe, a
little after the pod got SIGTERM. A server that stops accepting at the signal refuses the
requests routed to it in between (kubernetes#89263). With `Builder::pre_drain` the server keeps
serving, not ready, long enough for the balancer to take it out first.

This script runs `examples/http` (or `--example axum`) with `--pre-drain`, and plays the
balancer: it polls `GET /ready` every 100 ms and keeps routing to the backend until 1 s after
the probe first fails. Client threads send `GET /` through it (each request on a new
connection, as a balancer's health-agnostic retry-free client would) until it stops routing;
SIGTERM lands mid-load. It checks:

- every request routed to the backend is answered 200 — none refused, reset or lost;
- requests were answered after SIGTERM (the pre-drain served them);
- the server exits 0.

`--control` runs the same without a pre-drain and expects refusals: it shows the race is real
and that this test would catch it.

Only the standard library; loopback only; bounded in time.
"""

import argparse
import http.client
import json
import os
import signal
import subprocess
import sys
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def build_example(name):
    out = subprocess.run(
        ["cargo", "build", "--all-features", "--example", name, "--message-format=json"],
        cwd=ROOT,
        check=True,
        stdout=subprocess.PIPE,
        text=True,
    ).stdout
    for line in out.splitlines():
        msg = json.loads(line)
        if msg.get("reason") == "compiler-artifact" and msg["target"]["name"] == name:
            if msg.get("executable"):
                return msg["executable"]
    sys.exit(f"lb_test: cargo did not report the {name} example's executable")


def get(addr, path, timeout=5.0):
    host, port = addr.rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=timeout)
    try:
        conn.request("GET", path, headers={"Connection": "close"})
        response = conn.getresponse()
        response.read()
        return response.status
    finally:
        conn.close()


def run(exe, pre_drain, clients):
    server = subprocess.Popen(
        [exe, "--listen", "127.0.0.1:0", "--grace", "10s", "--pre-drain", pre_drain],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    first = server.stdout.readline().strip()
    if not first.startswith("listening on 127.0.0.1:"):
        server.kill()
        sys.exit(f"lb_test: unexpected first line {first!r}")
    addr = first.removeprefix("listening on ")

    lock = threading.Lock()
    state = {"routing": True, "unready_at": None, "ok": 0, "failed": [], "after_term": 0}
    term_at = [None]

    def balancer():
        while True:
            try:
                ready = get(addr, "/ready", timeout=1.0) == 200
            except OSError:
                ready = False
            now = time.monotonic()
            with lock:
                if not ready and state["unready_at"] is None:
                    state["unready_at"] = now
                if state["unready_at"] is not None and now >= state["unready_at"] + 1.0:
                    state["routing"] = False
                    return
            time.sleep(0.1)

    def client():
        while True:
            with lock:
                if not state["routing"]:
                    return
            try:
                status = get(addr, "/")
                with lock:
                    if status == 200:
                        state["ok"] += 1
                        if term_at[0] is not None:
                            state["after_term"] += 1
                    else:
                        state["failed"].append(f"status {status}")
            except OSError as e:
                with lock:
                    state["failed"].append(f"{type(e).__name__}: {e}")

    threads = [threading.Thread(target=balancer)] + [
        threading.Thread(target=client) for _ in range(clients)
    ]
    for t in threads:
        t.start()
    time.sleep(1.0)
    term_at[0] = time.monotonic()
    server.send_signal(signal.SIGTERM)
    for t in threads:
        t.join(timeout=30)
    try:
        code = server.wait(timeout=30)
    except subprocess.TimeoutExpired:
        server.kill()
        sys.exit("lb_test: the server did not exit within 30 s")
    stderr = server.stderr.read()
    return code, state, stderr


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--example", default="http", choices=["http", "axum"])
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument(
        "--control",
        action="store_true",
        help="no pre-drain: expect refusals (shows the race is real)",
    )
    args = parser.parse_args()
    exe = build_example(args.example)
    pre_drain = "0s" if args.control else "2s"
    code, state, stderr = run(exe, pre_drain, args.clients)
    failed = state["failed"]
    print(
        f"lb_test {args.example} (pre-drain {pre_drain}): {state['ok']} answered 200 "
        f"({state['after_term']} after SIGTERM), {len(failed)} failed, server exit {code}"
    )
    if args.control:
        if not failed:
            sys.exit("lb_test --control: no request failed without a pre-drain; the test "
                     "cannot tell the race from its fix")
        return
    if failed:
        print(stderr, file=sys.stderr)
        sys.exit(f"lb_test: {len(failed)} requests failed, e.g. {failed[:3]}")
    if state["after_term"] == 0:
        sys.exit("lb_test: nothing was answered after SIGTERM: the pre-drain served nothing")
    if code != 0:
        print(stderr, file=sys.stderr)
        sys.exit(f"lb_test: the server exited {code}")


if __name__ == "__main__":
    main()
