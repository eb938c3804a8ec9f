#!/usr/bin/env python3
"""Measures the keystroke latency envrun's pty mode adds: the time from a key typed into a
terminal to its echo on that terminal, with `cat` on the terminal directly and with
`envrun -- cat` (the child on envrun's pty, its output masked).

    scripts/keystroke-latency.py [ENVRUN] [KEYSTROKES]

ENVRUN defaults to target/release/envrun (build it first: cargo build --release). Each
keystroke is typed only after the previous echo arrived, as a person types. Two cases with
envrun: an ordinary key, and the first character of a secret, which the scrubber holds back
until the child has been silent for the idle flush (50 ms): the worst case by design.
Prints p50, p99 and max in milliseconds.
"""
import os
import pty
import select
import statistics
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
envrun = os.path.abspath(sys.argv[1]) if len(sys.argv) > 1 else os.path.join(ROOT, "target/release/envrun")
count = int(sys.argv[2]) if len(sys.argv) > 2 else 1000
SECRET = "zq-keystroke-latency-secret"


def run(argv, key, cwd):
    """Starts argv on a new pty and times `count` keystrokes of `key`; returns ms."""
    pid, master = pty.fork()
    if pid == 0:
        os.chdir(cwd)
        os.execvp(argv[0], argv)
    # Wait until the child runs (under envrun: the terminal is in raw mode by then), so
    # every echo is the child's and none the outer terminal's.
    got = b""
    while b"ready" not in got:
        r, _, _ = select.select([master], [], [], 5)
        try:
            got += os.read(master, 4096) if r else b""
        except OSError:
            r = None
        if not r:
            raise SystemExit(f"{argv} never started: {got!r}")
    times = []
    warm = 20
    for i in range(count + warm):
        started = time.perf_counter()
        os.write(master, key)
        got = b""
        while key not in got:
            r, _, _ = select.select([master], [], [], 5)
            if not r:
                raise SystemExit(f"no echo after 5 s for keystroke {i} of {argv}")
            got += os.read(master, 4096)
        if i >= warm:
            times.append((time.perf_counter() - started) * 1000)
    os.write(master, b"\r\x04")  # a new line, then ^D: cat sees end of file
    try:
        while os.read(master, 4096):
            pass
    except OSError:
        pass
    os.waitpid(pid, 0)
    os.close(master)
    return times


def summary(name, times):
    times = sorted(times)
    p50 = statistics.median(times)
    p99 = times[int(len(times) * 0.99) - 1]
    print(f"| {name} | {p50:.3f} | {p99:.3f} | {times[-1]:.3f} |")
    return p50, p99


with tempfile.TemporaryDirectory() as d:
    with open(os.path.join(d, "token.txt"), "w") as f:
        f.write(SECRET)
    with open(os.path.join(d, "envrun.yaml"), "w") as f:
        f.write("environment:\n  TOKEN: file:token.txt\n")
    cat = ["sh", "-c", "echo ready; exec cat"]
    env_cmd = [envrun, "--"] + cat
    print(f"{count} keystrokes each; milliseconds from write to echo\n")
    print("| | p50 | p99 | max |")
    print("|---|---:|---:|---:|")
    base = summary("`cat` on the terminal", run(cat, b"x", d))
    masked = summary("`envrun -- cat` (pty mode), an ordinary key", run(env_cmd, b"x", d))
    held = summary(
        "`envrun -- cat`, the first character of a secret",
        run(env_cmd, SECRET[:1].encode(), d),
    )
    print(
        f"\nadded by envrun: p50 {masked[0] - base[0]:.3f} ms, p99 {masked[1] - base[1]:.3f} ms"
    )
