#!/usr/bin/env bash
# The set-up of the release programs (bench, chaos): toolchain target, plugins, RabbitMQ,
# release binaries. scripts/bench.sh and scripts/chaos.sh run it first.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/setup.sh
scripts/ensure-rabbitmq.sh

echo "==> building release binaries"
cargo build --release --workspace --bins --quiet
