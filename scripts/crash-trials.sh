#!/bin/sh
# Kills `envrun secrets set` with SIGKILL many times (default 1000) and checks the store
# after each kill; see tests/secrets_crash.rs. Usage: scripts/crash-trials.sh [TRIALS]
# Replay a failing run with CRASH_SEED=<the seed it printed>.
set -eu
cd "$(dirname "$0")/.."
CRASH_TRIALS="${1:-${CRASH_TRIALS:-1000}}" exec cargo test --test secrets_crash \
    sigkill_during_set -- --nocapture
