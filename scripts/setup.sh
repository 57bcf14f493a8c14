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

# The web console's browser tests: headless Chromium and its WebDriver from Debian's packages,
# and axe-core (the accessibility checker the tests load into each page) from the npm registry.
if [[ ! -x /usr/bin/chromium || ! -x /usr/bin/chromedriver ]]; then
    echo "==> installing chromium and chromium-driver (Debian packages, for the console's browser tests)"
    if command -v apt-get >/dev/null && [[ $(id -u) == 0 ]]; then
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null
    else
        echo "install Debian's chromium and chromium-driver as root (apt-get install chromium chromium-driver)" >&2
        exit 1
    fi
fi
axe_version=4.10.3
axe_dir=target/axe-core
if [[ ! -f $axe_dir/axe.min.js || $(cat "$axe_dir/.version" 2>/dev/null) != "$axe_version" ]]; then
    echo "==> fetching axe-core $axe_version from the npm registry ($axe_dir)"
    if ! command -v npm >/dev/null; then
        echo "npm is not installed: install Node.js's npm (Debian: apt-get install npm) to fetch axe-core" >&2
        exit 1
    fi
    rm -rf "$axe_dir" && mkdir -p "$axe_dir"
    tarball=$(cd "$axe_dir" && npm pack --silent "axe-core@$axe_version")
    tar -xzf "$axe_dir/$tarball" -C "$axe_dir" package/axe.min.js package/LICENSE
    mv "$axe_dir/package/axe.min.js" "$axe_dir/package/LICENSE" "$axe_dir/"
    rm -rf "$axe_dir/package" "$axe_dir/$tarball"
    echo "$axe_version" > "$axe_dir/.version"
fi
