#!/usr/bin/env bash
# Benchmarks supervise mode end to end: `envrun -- cat BIGFILE` (the child's output goes
# through envrun's pump and scrubber) against plain `cat BIGFILE`, with hyperfine.
#
#   scripts/bench-supervise.sh              # 1 GiB file, 10 runs each
#   BENCH_SIZE=$((256 << 20)) scripts/...   # another size in bytes
#
# Needs hyperfine (installed with apt-get when missing and running as root). Builds envrun
# in release. Output goes to /dev/null in both commands, so what is measured is the pipe
# and the scrubber, not a terminal. `cat | cat` is the ceiling any pipe sets; `--no-mask`
# is exec mode, for comparison. The machine should be otherwise idle.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v hyperfine >/dev/null; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        apt-get install -y hyperfine >/dev/null
    else
        echo "bench-supervise: hyperfine is not installed (apt-get install hyperfine, or cargo install hyperfine)" >&2
        exit 1
    fi
fi

cargo build --release --quiet
envrun="$PWD/target/release/envrun"
size=${BENCH_SIZE:-$((1 << 30))}

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
head -c "$size" /dev/urandom >"$tmp/big"
# Two secrets, so envrun supervises (masking is on and there is something to mask).
printf 'tok-%s' "$(head -c 24 /dev/urandom | base64)" >"$tmp/token"
printf -- '-----BEGIN KEY-----\n%s\n-----END KEY-----\n' "$(head -c 48 /dev/urandom | base64 -w0)" >"$tmp/key"
cat >"$tmp/envrun.yaml" <<YAML
environment:
  TOKEN: file:token
  KEY: file:key
YAML
cd "$tmp"
cat big >/dev/null # warm the page cache

hyperfine --warmup 1 --runs "${BENCH_RUNS:-10}" \
    --export-markdown "$tmp/result.md" \
    "cat $tmp/big" \
    "cat $tmp/big | cat" \
    "$envrun -- cat $tmp/big" \
    "$envrun --no-mask -- cat $tmp/big"
echo
cat "$tmp/result.md"
