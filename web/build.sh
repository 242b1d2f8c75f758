#!/usr/bin/env bash
# Build remem's WebAssembly module into web/pkg/, where the page imports it from. Installs the
# wasm32 target and the wasm-bindgen CLI (the version Cargo.lock pins) when they are missing.
# REMEM_WASM_TARGET_DIR: cargo's build directory for the wasm build (default: CARGO_TARGET_DIR or target).
set -euo pipefail
cd "$(dirname "$0")/.."

version=$(sed -n '/^name = "wasm-bindgen"$/{n;s/^version = "\(.*\)"$/\1/p;}' Cargo.lock)
if [ -z "$version" ]; then
  echo "web/build.sh: no wasm-bindgen in Cargo.lock" >&2
  exit 1
fi
if ! rustup target list --installed | grep -qx wasm32-unknown-unknown; then
  rustup target add wasm32-unknown-unknown
fi
target="${REMEM_WASM_TARGET_DIR:-${CARGO_TARGET_DIR:-target}}"
if [ "$(wasm-bindgen --version 2>/dev/null | cut -d' ' -f2)" != "$version" ]; then
  echo "installing wasm-bindgen-cli $version (once)" >&2
  CARGO_TARGET_DIR="$target" cargo install wasm-bindgen-cli --version "$version"
fi

cargo build --profile wasm --locked -p remem-web --target wasm32-unknown-unknown --target-dir "$target"
wasm-bindgen --target web --no-typescript --out-dir web/pkg \
  "$target/wasm32-unknown-unknown/wasm/remem_web.wasm"
wasm=web/pkg/remem_web_bg.wasm
echo "built web/pkg: $(wc -c < "$wasm") bytes of wasm, $(gzip -9 -c "$wasm" | wc -c) gzipped" >&2
