#!/usr/bin/env bash
# Starts a provider plugin outside this repository: a project of its own, made from the
# template (plugins/example, Example Cloud) for your vendor id, that builds reproducibly and
# passes the conformance kit against the simulator as it is; then make it your vendor's
# (every TODO(vendor) in src/lib.rs, docs/plugin-authoring.md is the guide).
#
# Usage: scripts/new-plugin.sh <dir> <vendor-id> [--sdk-path PATH | --sdk-git URL --sdk-rev REV]
#
#   <dir>        the new project's folder (must not exist, or be empty)
#   <vendor-id>  your vendor id: lower-case letters, digits and inner hyphens, at most 32,
#                starting with a letter (the crate is <vendor-id>-plugin)
#   --sdk-path   depend on the SDK in a checkout of this repository (default: this one's
#                plugins/sdk)
#   --sdk-git, --sdk-rev
#                depend on the SDK by git: this repository's URL and a commit (or tag)
#
# What you get: Cargo.toml (its own [workspace], the release profile every plugin uses, the
# SDK by path or git), Cargo.lock (every crate at the version this repository's plugins are
# tested with: build with --locked), src/lib.rs, manifest.toml (the host's), sim.toml (the
# kit's, against the simulator), .gitignore. Building the lockfile reads the crates from
# crates.io (and the SDK's repository with --sdk-git) unless cargo has them already.
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
template=$repo/plugins/example

usage() {
    sed -n 's/^# \{0,1\}//; 7,16p' "$0" >&2
    exit 2
}

[[ $# -ge 2 ]] || usage
dir=$1
vendor=$2
shift 2
sdk_path=$repo/plugins/sdk
sdk_git=
sdk_rev=
while [[ $# -gt 0 ]]; do
    case $1 in
        --sdk-path) sdk_path=${2:?--sdk-path needs a path}; shift 2 ;;
        --sdk-git) sdk_git=${2:?--sdk-git needs a URL}; shift 2 ;;
        --sdk-rev) sdk_rev=${2:?--sdk-rev needs a commit or tag}; shift 2 ;;
        *) echo "unknown argument: $1" >&2; usage ;;
    esac
done

if ! [[ $vendor =~ ^[a-z]([a-z0-9-]{0,30}[a-z0-9])?$ ]]; then
    echo "vendor id '$vendor': lower-case letters, digits and inner hyphens, at most 32," \
        "starting with a letter" >&2
    exit 2
fi
if [[ -n $sdk_git || -n $sdk_rev ]]; then
    if [[ -z $sdk_git || -z $sdk_rev ]]; then
        echo "--sdk-git and --sdk-rev go together (a URL and a commit or tag)" >&2
        exit 2
    fi
    sdk_dependency="provider-sdk = { git = \"$sdk_git\", rev = \"$sdk_rev\" }"
else
    sdk_path=$(cd "$sdk_path" 2>/dev/null && pwd) || {
        echo "--sdk-path: no such folder" >&2
        exit 2
    }
    if [[ ! -f $sdk_path/Cargo.toml ]] || ! grep -q '^name = "provider-sdk"' "$sdk_path/Cargo.toml"; then
        echo "--sdk-path $sdk_path is not the provider SDK (plugins/sdk of this repository)" >&2
        exit 2
    fi
    sdk_dependency="provider-sdk = { path = \"$sdk_path\" }"
fi
if [[ -e $dir && -n $(ls -A "$dir") ]]; then
    echo "$dir exists and is not empty" >&2
    exit 2
fi

crate=$vendor-plugin
artifact=${crate//-/_}.wasm
upper=$(tr 'a-z-' 'A-Z_' <<<"$vendor")
camel=$(awk -F- '{ for (i = 1; i <= NF; i++) printf "%s%s", toupper(substr($i, 1, 1)), substr($i, 2) }' <<<"$vendor")Plugin
secret=PLUGIN_SECRET_${upper}_TOKEN

mkdir -p "$dir/src"
dir=$(cd "$dir" && pwd)

sed -e "s/^const VENDOR: &str = \"example\";/const VENDOR: \&str = \"$vendor\";/" \
    -e "s/ExamplePlugin/$camel/g" \
    "$template/src/lib.rs" >"$dir/src/lib.rs"
grep -q "const VENDOR: &str = \"$vendor\";" "$dir/src/lib.rs" || {
    echo "the template's src/lib.rs has no 'const VENDOR' line to change: update this script" >&2
    exit 1
}

sed -e "s/^vendor = \"example\"/vendor = \"$vendor\"/" \
    -e "s/^component = \"example.wasm\"/component = \"$vendor.wasm\"/" \
    -e "s/next to example.wasm/next to $vendor.wasm/" \
    -e "s/PLUGIN_SECRET_EXAMPLE_TOKEN/$secret/g" \
    "$template/manifest.toml" >"$dir/manifest.toml"

sed -e "s/^vendor = \"example\"/vendor = \"$vendor\"/" \
    -e "s|^component = .*|component = \"target/wasm32-wasip2/release/$artifact\"  # the kit replaces it|" \
    -e "s|plugins/target/wasm32-wasip2/release/example_plugin.wasm|target/wasm32-wasip2/release/$artifact|" \
    -e "s|--manifest plugins/example/sim.toml|--manifest sim.toml|" \
    -e "s/PLUGIN_SECRET_EXAMPLE_TOKEN/$secret/g" \
    "$template/sim.toml" >"$dir/sim.toml"

cat >"$dir/Cargo.toml" <<EOF
# The $vendor provider plugin, a WebAssembly component. Started from the provisioner's
# template (scripts/new-plugin.sh); the guide is docs/plugin-authoring.md of that repository.
#
#   cargo build --locked --release --target wasm32-wasip2
#   # -> target/wasm32-wasip2/release/$artifact: copy it into the host's PLUGINS_DIR as
#   #    $vendor.wasm, next to manifest.toml
[package]
name = "$crate"
version = "0.1.0"
edition = "2024"
publish = false

[lib]
# A WebAssembly component.
crate-type = ["cdylib"]

[dependencies]
$sdk_dependency
serde = { version = "1", features = ["derive"] }
serde_json = "1"

# A workspace of its own: built alone, never as part of another.
[workspace]

# Small components: what every bundled plugin uses.
[profile.release]
opt-level = "s"
lto = true
codegen-units = 1
strip = true
EOF

printf '/target\n' >"$dir/.gitignore"

# The lockfile: the repository's, which pins every crate the SDK and the plugins use at the
# version they are tested with, trimmed by cargo to what this project uses (cargo keeps the
# locked versions of every crate still used).
cp "$repo/plugins/Cargo.lock" "$dir/Cargo.lock"
cargo metadata --quiet --format-version 1 --manifest-path "$dir/Cargo.toml" >/dev/null

cat <<EOF
Made $dir: the $vendor plugin, speaking Example Cloud until you change it.
Build it, and run the conformance kit against the simulator (from this repository):
  (cd $dir && cargo build --locked --release --target wasm32-wasip2)
  cargo build --release -p provisioner-conformance -p vendor-sim
  SIM_LISTEN_ADDR=127.0.0.1:18190 target/release/vendor-sim &
  $secret=sim-example-token target/release/provisioner-conformance \\
      $dir/target/wasm32-wasip2/release/$artifact --manifest $dir/sim.toml \\
      --vendor-sim http://127.0.0.1:18190 --sim-vendor example
Then make it your vendor's: every TODO(vendor) in src/lib.rs, and the manifests
(docs/plugin-authoring.md is the guide).
EOF
