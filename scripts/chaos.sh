#!/usr/bin/env bash
# Runs the chaos test on release builds, doing the set-up first. It stops and starts this
# machine's RabbitMQ application (rabbitmqctl stop_app/start_app): run it only where you
# may do that, and not beside other users of the broker. Arguments go to `chaos`, e.g.
#   scripts/chaos.sh --orders 2000
#   scripts/chaos.sh --orders 500 --host-kills 20 --json
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/build-release.sh

exec target/release/chaos "$@"
