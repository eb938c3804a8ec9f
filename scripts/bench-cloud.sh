#!/usr/bin/env bash
# Benchmarks the gcp and azure backends end to end against the test fakes on loopback:
# `envrun -- true` with 1 and with 100 secret references, with hyperfine. What is measured
# is envrun's own cost (runtime, client, credentials, TLS for azure, concurrency), not the
# cloud's latency: the fakes answer at once.
#
#   scripts/bench-cloud.sh             # both backends, 20 runs each
#   BENCH_RUNS=50 scripts/bench-cloud.sh
#
# Needs hyperfine (installed with apt-get when missing and running as root) and Python 3;
# the fakes need the `cryptography` package, installed into a virtualenv under target/.
# Builds envrun in release with both features. The machine should be otherwise idle.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

if ! command -v hyperfine >/dev/null; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        apt-get install -y hyperfine >/dev/null
    else
        echo "bench-cloud: hyperfine is not installed (apt-get install hyperfine)" >&2
        exit 1
    fi
fi

venv="$root/target/bench-venv"
if [ ! -x "$venv/bin/python" ]; then
    python3 -m venv "$venv"
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check cryptography==48.0.0
fi

cargo build --release --quiet --features gcp,azure
envrun="${CARGO_TARGET_DIR:-$root/target}/release/envrun"
runs=${BENCH_RUNS:-20}

tmp=$(mktemp -d)
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    rm -rf "$tmp"
}
trap cleanup EXIT

free_port() { "$venv/bin/python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_for() { for _ in $(seq 200); do [ -e "$1" ] && return 0; sleep 0.05; done; echo "bench-cloud: $1 never appeared" >&2; exit 1; }

# 100 secrets in each fake.
"$venv/bin/python" - "$tmp" <<'PY'
import json, sys
d = sys.argv[1]
gcp = {"secrets": {f"projects/proj/secrets/k{i}": {"1": {"data": f"value-{i:03}-abcdefgh"}} for i in range(100)}}
azure = {"secrets": {f"k{i}": {"v1": {"value": f"value-{i:03}-abcdefgh"}} for i in range(100)},
         "tenant": "t", "client_id": "c", "client_secret": "bench-secret"}
json.dump(gcp, open(f"{d}/gcp.json", "w"))
json.dump(azure, open(f"{d}/azure.json", "w"))
PY

gport=$(free_port)
"$venv/bin/python" tests/common/gcp_fake.py --port "$gport" --state "$tmp/gcp.json" --sa-out "$tmp/sa.json" 2>/dev/null &
pids+=($!)
aport=$(free_port)
sport=$(free_port)
mkdir "$tmp/az"
"$venv/bin/python" tests/common/azure_fake.py --port "$aport" --stats-port "$sport" --state "$tmp/azure.json" --dir "$tmp/az" 2>/dev/null &
pids+=($!)
wait_for "$tmp/sa.json"
wait_for "$tmp/az/ca.pem"
sleep 0.5

manifest() { # backend count
    local settings
    if [ "$1" = gcp ]; then
        settings="  type: gcp\n  project: proj\n  endpoint: http://127.0.0.1:$gport"
    else
        settings="  type: azure\n  vault_url: https://localhost:$aport\n  ca_file: $tmp/az/ca.pem\n  verify_challenge_resource: false"
    fi
    printf "secrets:\n$settings\nenvironment:\n"
    for i in $(seq 0 $(($2 - 1))); do printf "  K%d: secret:k%d\n" "$i" "$i"; done
}
for b in gcp azure; do
    for n in 1 100; do manifest $b $n >"$tmp/$b-$n.yaml"; done
done

export GOOGLE_APPLICATION_CREDENTIALS="$tmp/sa.json" HOME="$tmp" GCE_METADATA_HOST="127.0.0.1:9"
export AZURE_TENANT_ID=t AZURE_CLIENT_ID=c AZURE_CLIENT_SECRET=bench-secret
export AZURE_AUTHORITY_HOST="https://localhost:$aport"
hyperfine --warmup 2 --runs "$runs" -N \
    -n "gcp, 1 secret" "$envrun -m $tmp/gcp-1.yaml -- true" \
    -n "gcp, 100 secrets" "$envrun -m $tmp/gcp-100.yaml -- true" \
    -n "azure, 1 secret" "$envrun -m $tmp/azure-1.yaml -- true" \
    -n "azure, 100 secrets" "$envrun -m $tmp/azure-100.yaml -- true"
