#!/usr/bin/env bash
# Does whatever set-up is missing, quickly when it is all done already:
# the wasm32-wasip2 target, the plugin components, the binaries, and the Python virtualenv
# with the vendors' official SDKs (for the simulator fidelity checks in tests/sdk).
# Usage: scripts/setup.sh [--release]
set -euo pipefail
cd "$(dirname "$0")/.."

profile_flag=()
[[ "${1:-}" == "--release" ]] && profile_flag=(--release)

if ! command -v cargo >/dev/null; then
    echo "cargo is not installed: install Rust with rustup (https://rustup.rs) first" >&2
    exit 1
fi
if ! rustup target list --installed | grep -qx wasm32-wasip2; then
    echo "==> adding the wasm32-wasip2 target"
    rustup target add wasm32-wasip2
fi
scripts/build-plugins.sh
echo "==> building the programs"
cargo build --workspace --bins "${profile_flag[@]}"

venv=target/sdk-venv
stamp=$venv/.requirements
if ! cmp -s tests/sdk/requirements.txt "$stamp" 2>/dev/null; then
    echo "==> creating the Python virtualenv with the vendors' SDKs ($venv)"
    if ! command -v python3 >/dev/null; then
        echo "python3 is not installed: install Python 3.9 or newer (Debian: apt-get install python3 python3-venv)" >&2
        exit 1
    fi
    rm -rf "$venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --upgrade pip
    "$venv/bin/pip" install --quiet -r tests/sdk/requirements.txt
    cp tests/sdk/requirements.txt "$stamp"
fi
