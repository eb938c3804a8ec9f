#!/usr/bin/env python3
"""Rotation canary: no rotated secret value ever shows unmasked in envrun's output.

A command runs under `envrun --watch INTERVAL --on-change ACTION` and prints, without pause,
its secret from the environment and the content of its `as_file:` variable. Meanwhile the
local store's value is rotated N times at random moments (a random pause of 0 to --max-gap
milliseconds before each `envrun secrets set`), each new value holding a canary. Every byte
envrun writes is searched for pieces of the canary (8 bytes or more), and every line must be
the expected one with each value exactly masked: anything else shows a value, or part of
one, that no mask covered (shown before its mask was added, or read half-replaced).

    cargo build && scripts/rotation-canary.py                   # 10^4 rotations, ~5 minutes
    scripts/rotation-canary.py --rotations 200 --action restart  # a quick run
    scripts/rotation-canary.py --action signal:SIGUSR1 --reader continuous

`--action both` (the default) gives half of the rotations to `signal:SIGUSR1` (the file is
rewritten and the command signalled) and half to `restart`. Under `signal:`, the command
reads its file only when signalled (`--reader on-signal`), or before every line
(`--reader continuous`, also while envrun rewrites it). With `--acknowledge` the next
rotation waits until the command has read the last one, which is what signal mode promises
to serve: the README documents that a read across a replacement (a reader that reads at any
time, or one still reading when the next change comes) can mix two values, part of which
then matches no mask; the other modes measure how often that happens. An empty file read is
counted, not failed: nothing shows.
Exit status: 0 when nothing leaked, 1 when something did (the leaking or unexpected lines
are printed), 2 on a setup failure.
The smaller version of this check runs in CI: tests/watch.rs, rotations_at_random_moments_*.
"""

import argparse
import os
import random
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time

CANARY = "CANARY-7f3e9b1c-d00d-4bad-a55e-0123456789ab"
# Any 8 bytes of the canary in the output mean a value (or a piece of one) was shown: the
# output holds nothing else that could match.
PIECES = [CANARY[i:i + 8] for i in range(len(CANARY) - 7)]

# The command: its environment's value and its file's, masked by envrun, and the generation
# of each (`eg=`, `fg=`: the text before the first `:`, not secret). `continuous` reads the
# file before every line, also while envrun rewrites it; `on-signal` reads it once at the
# start and then only on SIGUSR1, as a program that reloads its key on a signal does.
READERS = {
    "continuous": r"""trap : USR1
echo "start gen=${TOKEN%%:*} pid=$$"
while :; do c=$(cat "$KEYFILE"); printf 'env=%s file=%s eg=%s fg=%s\n' "$TOKEN" "$c" "${TOKEN%%:*}" "${c%%:*}"; done""",
    "on-signal": r"""c=$(cat "$KEYFILE")
trap 'c=$(cat "$KEYFILE")' USR1
echo "start gen=${TOKEN%%:*} pid=$$"
while :; do printf 'env=%s file=%s eg=%s fg=%s\n' "$TOKEN" "$c" "${TOKEN%%:*}" "${c%%:*}"; sleep 0.002; done""",
}
EXPECTED = re.compile(r"^(start gen=\S+ pid=\d+|env=\*\*\* file=\*\*\* eg=\S+ fg=\S+)$")
# A file read while a longer value gave way to a shorter one may be empty (documented):
# nothing shown, so counted but not failed.
EMPTY = re.compile(r"^env=\*\*\* file= eg=\S+ fg=$")


def envrun_env():
    env = {k: v for k, v in os.environ.items() if not k.startswith("ENVRUN_")}
    return env


def set_secret(binary, cwd, value):
    r = subprocess.run(
        [binary, "secrets", "set", "TOKEN"],
        input=value.encode(),
        cwd=cwd,
        env=envrun_env(),
        capture_output=True,
    )
    if r.returncode != 0:
        sys.exit(f"rotation-canary: secrets set failed: {r.stderr.decode(errors='replace')}")


class Output:
    """Collects everything one stream delivers (searched once the run is over)."""

    def __init__(self, stream):
        self.stream = stream
        self.data = bytearray()
        self.lock = threading.Lock()
        self.thread = threading.Thread(target=self.read, daemon=True)
        self.thread.start()

    def read(self):
        while True:
            chunk = os.read(self.stream.fileno(), 65536)
            if not chunk:
                return
            with self.lock:
                self.data += chunk

    def text(self):
        with self.lock:
            return self.data.decode(errors="replace")


def run(binary, action, reader, rotations, interval, max_gap_ms, rng, acknowledge=False):
    """One envrun under `action` with `rotations` rotations; returns a result dict."""
    with tempfile.TemporaryDirectory(prefix="rotation-canary-") as d:
        set_secret(binary, d, f"g0:{CANARY}-{rng.getrandbits(64):016x}")
        with open(os.path.join(d, "envrun.yaml"), "w") as f:
            f.write("environment:\n  TOKEN: secret:TOKEN\n  KEYFILE: as_file:secret:TOKEN\n")
        envrun = subprocess.Popen(
            [binary, "--watch", interval, "--on-change", action, "--", "sh", "-c", READERS[reader]],
            cwd=d,
            env=envrun_env(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        out, err = Output(envrun.stdout), Output(envrun.stderr)
        deadline = time.monotonic() + 10
        while "start gen=" not in out.text():
            if time.monotonic() > deadline or envrun.poll() is not None:
                envrun.kill()
                sys.exit(f"rotation-canary: the command did not start:\n{err.text()}")
            time.sleep(0.01)
        started = time.monotonic()
        for i in range(1, rotations + 1):
            # The random pause is the input: where the rotation lands relative to the ticks
            # and the command's reads.
            time.sleep(rng.uniform(0, max_gap_ms) / 1000)
            # A random length before the canary: a value shorter than the one it replaces
            # leaves the old one's end (the canary's end) behind if the file is read
            # between its rewrite and its truncation.
            pad = f"{rng.getrandbits(128):032x}"[: rng.randint(0, 32)]
            set_secret(binary, d, f"r{i}:{pad}{CANARY}")
            if acknowledge:
                # The command has read this value (on its signal) before the next one.
                seen, until = f"fg=r{i}\n", time.monotonic() + 10
                while seen not in out.text() and time.monotonic() < until:
                    time.sleep(0.002)
        rotated = time.monotonic() - started
        # Wait for the last value to reach the command, then stop.
        last = f"eg=r{rotations} " if action == "restart" else f"fg=r{rotations}\n"
        deadline = time.monotonic() + 10
        while last not in out.text() and time.monotonic() < deadline:
            time.sleep(0.01)
        reached = last in out.text()
        envrun.send_signal(signal.SIGTERM)
        try:
            envrun.wait(timeout=15)
        except subprocess.TimeoutExpired:
            envrun.kill()
            envrun.wait()
        out.thread.join(5)
        err.thread.join(5)
        stdout, stderr = out.text(), err.text()
        leaks = [
            line
            for line in (stdout + stderr).splitlines()
            if any(p in line for p in PIECES)
        ]
        unexpected = [
            line for line in stdout.splitlines() if not EXPECTED.match(line) and not EMPTY.match(line)
        ]
        empty = sum(1 for line in stdout.splitlines() if EMPTY.match(line))
        return {
            "action": action,
            "rotations": rotations,
            "seconds": rotated,
            "lines": stdout.count("\n"),
            "bytes": len(stdout) + len(stderr),
            "changes": sum(
                1 for line in stderr.splitlines() if line.startswith("envrun:") and "changed" in line
            ),
            "starts": stdout.count("start gen="),
            "reached_last": reached,
            "empty": empty,
            "leaks": leaks,
            "unexpected": unexpected,
            "warnings": [
                line for line in stderr.splitlines() if line.startswith("envrun:") and "changed" not in line
            ],
        }


def main():
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rotations", type=int, default=10_000)
    p.add_argument("--action", default="both", help="restart, signal:SIGUSR1, or both")
    p.add_argument("--reader", default="on-signal", choices=sorted(READERS),
                   help="how the command reads its file under signal:SIGUSR1 (restart: continuous)")
    p.add_argument("--interval", default="100ms", help="--watch interval")
    p.add_argument("--max-gap", type=float, default=20, help="longest pause between rotations, ms")
    p.add_argument("--acknowledge", action="store_true",
                   help="with --reader on-signal: rotate again only once the command has read "
                        "the new value, as signal mode requires (README: a read across a "
                        "replacement can mix two values)")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--bin", default=os.path.join(root, "target", "debug", "envrun"))
    a = p.parse_args()
    a.bin = os.path.abspath(a.bin)  # each run works in a directory of its own
    if not os.access(a.bin, os.X_OK):
        print(f"rotation-canary: no envrun at {a.bin}: run `cargo build` first", file=sys.stderr)
        return 2
    seed = a.seed if a.seed is not None else random.SystemRandom().getrandbits(32)
    rng = random.Random(seed)
    def reader(action):
        return a.reader if action.startswith("signal") else "continuous"
    if a.action == "both":
        plan = [("signal:SIGUSR1", a.rotations // 2), ("restart", a.rotations - a.rotations // 2)]
    else:
        plan = [(a.action, a.rotations)]
    print(f"rotation-canary: seed {seed}, {a.rotations} rotations, --watch {a.interval}, "
          f"pauses 0-{a.max_gap:g} ms, {a.bin}")
    failed = False
    for action, n in plan:
        ack = a.acknowledge and action.startswith("signal") and reader(action) == "on-signal"
        r = run(a.bin, action, reader(action), n, a.interval, a.max_gap, rng, ack)
        print(f"  {action} ({reader(action)} reader{', acknowledged' if ack else ''}): {r['rotations']} rotations in {r['seconds']:.1f} s, "
              f"{r['changes']} changes reported, {r['starts']} command starts, "
              f"{r['lines']} lines ({r['bytes']} bytes) searched: "
              f"{len(r['leaks'])} leaking lines ({len(set(r['leaks']))} distinct), "
              f"{len(r['unexpected'])} unexpected lines ({len(set(r['unexpected']))} distinct), "
              f"{r['empty']} empty reads, "
              f"last value {'reached' if r['reached_last'] else 'NOT reached'} the command")
        for line in sorted(set(r["leaks"]))[:20]:
            print(f"    LEAK: {line}")
        for line in sorted(set(r["unexpected"]) - set(r["leaks"]))[:10]:
            print(f"    unexpected: {line!r}")
        for line in r["warnings"][:10]:
            print(f"    envrun: {line!r}")
        # A line not of the expected form shows part of a value around its mask.
        failed |= bool(r["leaks"]) or bool(r["unexpected"]) or not r["reached_last"]
    print("rotation-canary: " + ("FAILED" if failed else "no canary shown"))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
