#!/usr/bin/env bash
# Starts moto, an independent fake of AWS, in the background with request authentication on
# (every request must be signed with AWS SigV4 by a key it knows), for the AWS plugin: makes
# an IAM user allowed `ec2:*` and an access key for it, writes the key to a shell-sourceable
# file (AWS_ACCESS_KEY_ID=..., AWS_SECRET_ACCESS_KEY=..., AWS_ENDPOINT_URL=...), waits until
# moto answers, and prints its pid (stop it with `kill PID`). The bootstrap is
# tests/aws/moto_server.py, which the Rust tests use too; moto comes from the virtualenv
# that scripts/setup.sh makes (target/sdk-venv).
#
# Usage: scripts/moto.sh [--listen HOST:PORT] [--credentials FILE] [--log FILE]
#   defaults: 127.0.0.1:8091, .dev/moto.env, .dev/moto.log (paths from the repository root)
# Try it (boto3 reads all three variables):
#   (set -a; . .dev/moto.env; target/sdk-venv/bin/python -c \
#     'import boto3; print(boto3.client("ec2", region_name="us-east-1").describe_instances())')
set -euo pipefail
cd "$(dirname "$0")/.."

listen=127.0.0.1:8091
credentials=.dev/moto.env
log=.dev/moto.log
while [[ $# -gt 0 ]]; do
    case $1 in
        --listen) listen=${2:?--listen needs HOST:PORT}; shift 2 ;;
        --credentials) credentials=${2:?--credentials needs a file}; shift 2 ;;
        --log) log=${2:?--log needs a file}; shift 2 ;;
        *) echo "usage: scripts/moto.sh [--listen HOST:PORT] [--credentials FILE] [--log FILE]" >&2; exit 2 ;;
    esac
done

python=target/sdk-venv/bin/python
if ! [[ -x $python ]] || ! "$python" -c 'import moto.server, boto3' 2>/dev/null; then
    echo "moto is not installed in target/sdk-venv: run scripts/setup.sh first" >&2
    exit 1
fi
if (exec 3<>"/dev/tcp/${listen%:*}/${listen##*:}") 2>/dev/null; then
    echo "$listen is already in use: stop what listens there (another moto?) and retry" >&2
    exit 1
fi

mkdir -p "$(dirname "$credentials")" "$(dirname "$log")"
rm -f "$credentials"
"$python" tests/aws/moto_server.py --listen "$listen" --credentials "$credentials" \
    >> "$log" 2>&1 < /dev/null &
pid=$!
# The credentials file appears once the bootstrap has checked that signing works.
for _ in $(seq 1 240); do
    if [[ -s $credentials ]]; then
        echo "$pid"
        exit 0
    fi
    if ! kill -0 "$pid" 2>/dev/null; then
        break
    fi
    sleep 0.25
done
kill -TERM "$pid" 2>/dev/null || true
echo "moto did not become ready on $listen; the end of its log ($log):" >&2
tail -n 20 "$log" >&2
exit 1
