#!/usr/bin/env bash
# What the masker costs end to end, with hyperfine and GNU time (release build):
#
# 1. startup: `envrun -- true` with 100 and 1,000 secrets in the local store, in supervise
#    mode and with --no-mask, next to the dotenvy CLI with the same values in a .env
#    (if `dotenvy` is on PATH: cargo install dotenvy --features cli); BENCH_ROUNDS rounds
#    of hyperfine (default 5), the median of the rounds' medians, and the load average;
# 2. first output: `envrun -- sh -c 'echo $S0'` (the automaton is built when the first
#    output arrives) against `envrun -- true`; and the latency of the first masked line:
#    the child prints its clock (`date +%s.%N`, run by the shell it starts) and then a
#    secret, and a reader stamps the arrival of that line;
# 3. build cost and peak RSS: one 128 KiB value, and 100 values totalling 1 MiB, printed
#    once (so the automaton is built), against --no-mask (never built);
# 4. peak RSS supervising 500 MB of log text with 100 secrets.
#
#   scripts/bench-masks.sh        # BENCH_RUNS=N rounds each (default 10)
set -euo pipefail
cd "$(dirname "$0")/.."

for tool in hyperfine /usr/bin/time; do
    command -v "$tool" >/dev/null || { echo "bench-masks: $tool is not installed" >&2; exit 1; }
done
cargo build --release --quiet
envrun="$PWD/target/release/envrun"
runs=${BENCH_RUNS:-10}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# A store of N secrets (32 random alphanumerics each) and the same values in a .env.
make_store() {
    local dir=$1 n=$2
    mkdir -p "$dir"
    (
        cd "$dir"
        : >envrun.yaml
        : >values.env
        echo "environment:" >>envrun.yaml
        for i in $(seq 0 $((n - 1))); do
            v=$(head -c 64 /dev/urandom | base64 -w0 | tr -dc 'A-Za-z0-9' | head -c 32)
            export "SECRET_S$i=$v"
            echo "  S$i: secret:S$i" >>envrun.yaml
            echo "S$i=$v" >>values.env
        done
        "$envrun" secrets import >/dev/null
        for i in $(seq 0 $((n - 1))); do unset "SECRET_S$i"; done
    )
}

rss_kib() { # peak RSS of a command, in KiB
    /usr/bin/time -f '%M' "$@" 2>&1 >/dev/null | tail -1
}

load() { cut -d' ' -f1 /proc/loadavg; }

# Median, over rounds, of each command's median (hyperfine JSON files as arguments).
median_of_rounds() {
    python3 - "$@" <<'PY'
import json, statistics, sys
rounds = [json.load(open(f))["results"] for f in sys.argv[1:]]
for i, r in enumerate(rounds[0]):
    ms = [x[i]["median"] * 1000 for x in rounds]
    print("| `%s` | %.2f ms | %s |" % (r["command"].split("/")[-1], statistics.median(ms), " ".join("%.2f" % m for m in ms)))
PY
}

# The first masked line's latency: the child's clock when it printed, to its arrival here.
first_line() {
    python3 - "$envrun" "$1" <<'PY'
import statistics, subprocess, sys, time
envrun, rounds = sys.argv[1], int(sys.argv[2])
lat = []
for _ in range(rounds):
    p = subprocess.Popen([envrun, "--", "sh", "-c", 'date +%s.%N; echo "$S0"'], stdout=subprocess.PIPE)
    line = p.stdout.readline()
    arrived = time.time()
    rest = p.stdout.read()
    p.wait()
    assert b"***" in rest, "the secret was not masked"
    lat.append((arrived - float(line)) * 1000)
print("first masked line after the child's clock: median %.2f ms (min %.2f, max %.2f, %d runs)"
      % (statistics.median(lat), min(lat), max(lat), rounds))
PY
}

rounds=${BENCH_ROUNDS:-5}
echo "## startup (median of $rounds rounds of hyperfine medians)"
for n in 100 1000; do
    make_store "$tmp/s$n" "$n"
    cd "$tmp/s$n"
    cmds=("$envrun --no-mask -- true" "$envrun -- true" "$envrun -- sh -c 'echo \$S0'")
    if command -v dotenvy >/dev/null; then
        cmds+=("dotenvy -f values.env true")
    fi
    before=$(load)
    files=()
    for r in $(seq "$rounds"); do
        hyperfine -N --warmup 2 --runs "$runs" --export-json "$tmp/start$n-$r.json" "${cmds[@]}" >/dev/null
        files+=("$tmp/start$n-$r.json")
    done
    echo "### $n secrets (load average $before before, $(load) after)"
    echo "| command | median | rounds |"
    echo "|---|---:|---|"
    median_of_rounds "${files[@]}"
    first_line 50
    cd - >/dev/null
done

echo
echo "## build cost and peak RSS"
mkdir -p "$tmp/big"
cd "$tmp/big"
pem() { # a PEM-like value of about $1 bytes
    printf -- '-----BEGIN CERTIFICATE-----\n'
    head -c $(($1 * 3 / 4)) /dev/urandom | base64 -w 64
    printf -- '-----END CERTIFICATE-----\n'
}
# under the 128 KiB limit with its line breaks and armour
pem $((120 * 1024)) >ca.pem
{
    echo "environment:"
    echo "  CA: file:ca.pem"
} >one.yaml
{
    echo "environment:"
    for i in $(seq 0 99); do
        pem 7700 >"k$i.pem" # about 10.5 KB each, 1 MiB in all
        echo "  K$i: file:k$i.pem"
    done
} >hundred.yaml
printf '| values | `--no-mask -- true` | `-- echo x` (builds) | peak RSS no-mask | peak RSS built |\n|---|---:|---:|---:|---:|\n'
for m in one hundred; do
    hyperfine -N --warmup 2 --runs "$runs" --export-json "$tmp/$m.json" \
        "$envrun --manifest $m.yaml --no-mask -- true" \
        "$envrun --manifest $m.yaml -- echo x" >/dev/null
    times=$(python3 -c "import json,sys; r=json.load(open('$tmp/$m.json'))['results']; print(' | '.join('%.1f ms' % (x['median']*1000) for x in r))")
    a=$(rss_kib "$envrun" --manifest "$m.yaml" --no-mask -- true)
    b=$(rss_kib "$envrun" --manifest "$m.yaml" -- echo x)
    echo "| $m | $times | $((a / 1024)) MiB | $((b / 1024)) MiB |"
done
cd - >/dev/null

echo
echo "## peak RSS supervising 500 MB of log text, 100 secrets"
cd "$tmp/s100"
line='2024-05-01T12:00:00.000Z INFO http::server request_id=4f1c2e9a77aa0b3c method=GET path=/api/v1/users/123 status=200'
kib=$(rss_kib "$envrun" -- sh -c "yes '$line' | head -c 500000000")
echo "envrun -- (500 MB of output): $((kib / 1024)) MiB peak RSS"
