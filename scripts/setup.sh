#!/usr/bin/env bash
# Does whatever set-up is missing, quickly when it is all done already:
# the wasm32-wasip2 target, the plugin components, the binaries.
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
