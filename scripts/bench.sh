#!/usr/bin/env bash
# Runs a benchmark on release builds, doing the set-up first (toolchain target, plugins,
# RabbitMQ, release binaries). Arguments go to the `bench` program, e.g.
#   scripts/bench.sh in-flight --orders 10000 --boot-secs 30
#   scripts/bench.sh --format json in-flight
# BENCHMARKS.md has every command and the figures.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/build-release.sh

# Thousands of orders in flight mean thousands of timers and some hundreds of sockets.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
exec target/release/bench "$@"
