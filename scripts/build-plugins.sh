#!/usr/bin/env bash
# Builds every plugin under plugins/ for wasm32-wasip2 and copies each component to
# target/plugins/<vendor>.wasm (the crate `<vendor>-plugin` gives `<vendor>.wasm`); builds
# the test plugins (tests/fixtures) to target/test-plugins/<name>.wasm.
set -euo pipefail
cd "$(dirname "$0")/.."

echo "==> building the plugins (wasm32-wasip2)"
cargo build --manifest-path plugins/Cargo.toml --target wasm32-wasip2 --release
mkdir -p target/plugins
for manifest in plugins/*/Cargo.toml; do
    grep -qF 'crate-type = ["cdylib"]' "$manifest" || continue
    crate=$(sed -n 's/^name = "\(.*\)"/\1/p' "$manifest" | head -n 1)
    vendor=${crate%-plugin}
    artifact="plugins/target/wasm32-wasip2/release/${crate//-/_}.wasm"
    cp "$artifact" "target/plugins/$vendor.wasm"
    echo "    target/plugins/$vendor.wasm ($(wc -c < "$artifact") bytes)"
done

echo "==> building the test plugins (tests/fixtures)"
mkdir -p target/test-plugins
for fixture in hostile future legacy broken v02 v03 v04 v05; do
    cargo build --manifest-path "tests/fixtures/$fixture-plugin/Cargo.toml" \
        --target wasm32-wasip2 --release --target-dir plugins/target
    cp "plugins/target/wasm32-wasip2/release/${fixture}_plugin.wasm" "target/test-plugins/$fixture.wasm"
done
