#!/usr/bin/env bash
# Runs every check and test, doing its own set-up first (toolchain target, plugins,
# binaries, RabbitMQ, PostgreSQL). The README's test command; CI runs it too.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/setup.sh
scripts/ensure-rabbitmq.sh
# The three-node cluster the cluster tests start (scripts/rabbitmq-cluster.sh) goes with
# the run, whether it passes or not.
trap 'scripts/rabbitmq-cluster.sh stop >/dev/null 2>&1 || true' EXIT
scripts/ensure-postgres.sh

echo "==> formatting and lints"
cargo fmt --all --check
(cd plugins && cargo fmt --all --check)
cargo clippy --workspace --all-targets --quiet -- -D warnings
(cd plugins && cargo clippy --target wasm32-wasip2 --quiet -- -D warnings)
# The plugin SDK's tests (SigV4 against AWS's published vectors) and every plugin's, on the host.
(cd plugins && cargo test --quiet --workspace)

echo "==> crate docs (cargo doc, warnings are errors)"
# The libraries others build on, as their users see them: the message contract, the order
# API's client and the plugin SDK.
RUSTDOCFLAGS="-D warnings" cargo doc --no-deps --quiet -p provisioner-contract -p provisioner-api-client
(cd plugins && RUSTDOCFLAGS="-D warnings" cargo doc --no-deps --quiet -p provider-sdk)
# Every crate as its maintainers read it: the services' # Layout maps link their private
# modules, which these docs include.
RUSTDOCFLAGS="-D warnings -A rustdoc::private-intra-doc-links" \
    cargo doc --workspace --no-deps --document-private-items --quiet

scripts/check-compose.sh

echo "==> tests (orders in SQLite; tests/e2e/postgres.rs runs two order-apis on PostgreSQL;"
echo "    tests/e2e/cluster.rs starts the three-node cluster of scripts/rabbitmq-cluster.sh)"
cargo test --workspace

echo "==> the end-to-end tests of the order API again, with the orders in PostgreSQL"
# Left out: tests of the host, plugins and broker alone, which never reach the order store
# in a way of their own (what reaches the vendor, the broker users' permissions), the host
# holding 300 orders in flight (concurrency), the AWS, GCP and Azure plugins (aws, gcp, azure), and the
# module that is PostgreSQL anyway.
TEST_ORDER_STORE=postgres cargo test -p provisioner-tests --test e2e -- \
    --skip conformance:: --skip sandbox:: --skip lease:: --skip drop_in:: \
    --skip postgres:: --skip concurrency:: --skip vendor_inputs:: --skip broker_users:: \
    --skip author_path:: --skip plugin_sdk:: --skip aws:: --skip gcp:: --skip azure:: \
    --skip cluster::

echo "==> benchmark smoke run (tiny sizes, debug build: checks the bench works, not timings)"
target/debug/bench --profile debug pipeline --orders 150 --bare-orders 1000
rm -rf target/accept-latencies
target/debug/bench --profile debug accept --rates 100,300 --secs 2 --warmup-secs 1 --latencies-dir target/accept-latencies
# One line per measured request and a header: 100/s and 300/s for 2 s, both sides.
for side in api bare; do
    for rate in 100 300; do
        lines=$(wc -l < "target/accept-latencies/$side-$rate.csv")
        if [ "$lines" -ne $((rate * 2 + 1)) ]; then
            echo "target/accept-latencies/$side-$rate.csv: $lines lines, not $((rate * 2 + 1))" >&2
            exit 1
        fi
    done
done
target/debug/bench --profile debug lease --leases 200
target/debug/bench --profile debug in-flight --orders 200 --boot-secs 5 --hold-secs 5
target/debug/bench --profile debug plugin-overhead --calls 200 --warmup 20
target/debug/bench --profile debug create-call --calls 50 --warmup 5
target/debug/bench --profile debug page-load --orders 200 --samples 2
target/debug/bench --profile debug recovery --cycles 1 --down-secs 2   # stops and starts RabbitMQ

echo "==> chaos run, small (stops and starts this machine's RabbitMQ application once)"
target/debug/chaos --profile debug --orders 150 --rate 15 --host-kills 10 --api-restarts 2 --placement-every 5 --move-kills 3 \
    --broker-restarts 1 --drain-timeout-secs 300

echo "==> on the three-node cluster: failover smoke run, then chaos with node kills and a rolling restart"
target/debug/bench --profile debug failover --kills 2
target/debug/chaos --profile debug --cluster --orders 300 --rate 15 --host-kills 4 --api-restarts 1 \
    --node-kills 3 --rolling-restarts 1 --drain-timeout-secs 180

echo "==> simulator fidelity: the vendors' official SDKs against vendor-sim"
target/sdk-venv/bin/pytest tests/sdk -q -p no:cacheprovider
