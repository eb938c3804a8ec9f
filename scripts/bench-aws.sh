#!/usr/bin/env bash
# Benchmarks the AWS backends end to end against a local moto server: `envrun -- true` with
# 1, 20 and 100 references to Secrets Manager (`type: aws`) and to Parameter Store
# (`type: aws-ssm`), with hyperfine. Target: 100 references cost at most 3x the time of 1
# (they are batched: 5 BatchGetSecretValue calls of 20, 10 GetParameters calls of 10, run
# concurrently).
#
#   scripts/bench-aws.sh                 # 20 runs each
#   BENCH_RUNS=50 scripts/bench-aws.sh
#
# Needs hyperfine (installed with apt-get when missing and running as root) and Python 3
# with venv; moto[server] is installed into the tests' cached virtualenv
# (target/tmp/test-venv). Builds envrun in release with `--features aws`. Runs envrun with
# `--no-mask` (exec mode) so what is measured is startup, the SDK and the calls. Nothing
# leaves the machine: moto listens on 127.0.0.1 and the EC2 metadata service is disabled.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v hyperfine >/dev/null; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        apt-get install -y hyperfine >/dev/null
    else
        echo "bench-aws: hyperfine is not installed (apt-get install hyperfine, or cargo install hyperfine)" >&2
        exit 1
    fi
fi

venv="$PWD/target/tmp/test-venv"
mkdir -p "$venv"
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
if [ ! -e "$venv/.installed-moto_server___5.2.5" ]; then
    flock "$venv/.lock" "$venv/bin/python" -m pip install --quiet --disable-pip-version-check 'moto[server]==5.2.5'
    touch "$venv/.installed-moto_server___5.2.5"
fi

# ENVRUN_BIN=path uses a binary already built with `--features aws` instead.
if [ -n "${ENVRUN_BIN:-}" ]; then
    envrun="$ENVRUN_BIN"
else
    cargo build --release --quiet --features aws
    envrun="$PWD/target/release/envrun"
fi

tmp=$(mktemp -d)
port=$("$venv/bin/python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
"$venv/bin/moto_server" -H 127.0.0.1 -p "$port" >"$tmp/moto.log" 2>&1 &
moto=$!
trap 'kill $moto 2>/dev/null; wait $moto 2>/dev/null; rm -rf "$tmp"' EXIT
for _ in $(seq 100); do
    curl -fsS "http://127.0.0.1:$port/moto-api/" >/dev/null 2>&1 && break
    sleep 0.1
done

export AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing AWS_REGION=us-east-1 AWS_DEFAULT_REGION=us-east-1
export AWS_EC2_METADATA_DISABLED=true
"$venv/bin/python" - "$port" <<'PY'
import sys, boto3
url = f"http://127.0.0.1:{sys.argv[1]}"
sm = boto3.client("secretsmanager", endpoint_url=url)
ssm = boto3.client("ssm", endpoint_url=url)
for i in range(100):
    sm.create_secret(Name=f"bench/s{i:03}", SecretString=f"secret-value-{i:03}")
    ssm.put_parameter(Name=f"/bench/p{i:03}", Value=f"param-value-{i:03}", Type="SecureString")
PY

for n in 1 20 100; do
    for kind in aws aws-ssm; do
        key=s; prefix=bench/
        [ "$kind" = aws-ssm ] && { key=p; prefix=/bench/; }
        {
            printf 'secrets:\n  type: %s\n  endpoint_url: http://127.0.0.1:%s\n  prefix: %s\nenvironment:\n' "$kind" "$port" "$prefix"
            for i in $(seq 0 $((n - 1))); do printf '  V%03d: secret:%s%03d\n' "$i" "$key" "$i"; done
        } >"$tmp/$kind-$n.yaml"
        "$envrun" --no-mask -m "$tmp/$kind-$n.yaml" -- true # fails loudly if anything is wrong
    done
done

hyperfine --warmup 3 --runs "${BENCH_RUNS:-20}" -N \
    --export-markdown "$tmp/result.md" \
    -n "aws 1" "$envrun --no-mask -m $tmp/aws-1.yaml -- true" \
    -n "aws 20" "$envrun --no-mask -m $tmp/aws-20.yaml -- true" \
    -n "aws 100" "$envrun --no-mask -m $tmp/aws-100.yaml -- true" \
    -n "aws-ssm 1" "$envrun --no-mask -m $tmp/aws-ssm-1.yaml -- true" \
    -n "aws-ssm 20" "$envrun --no-mask -m $tmp/aws-ssm-20.yaml -- true" \
    -n "aws-ssm 100" "$envrun --no-mask -m $tmp/aws-ssm-100.yaml -- true"
echo
cat "$tmp/result.md"
