#!/usr/bin/env bash
# One short run for a lent GPU (issue #22): build, then count kernel launches and time training
# and streaming on wgpu. Writes JSON and the tables to $OUT (or runs/gpu-bench). Fits a
# 15-minute lease after a warm build; PRESETS, STEPS and TOKENS shorten it further.
#
#   OUT=/tmp/out bash scripts/gpu-bench.sh
set -euo pipefail
cd "$(dirname "$0")/.."
out="${OUT:-runs/gpu-bench}"
mkdir -p "$out"
cargo build --release --locked
bin="${CARGO_TARGET_DIR:-target}/release/remem"
"$bin" bench --device wgpu --presets "${PRESETS:-default,copy-small,medium}" \
  --train-models rmt,xl,infinity --stream-models rmt,xl,infinity \
  --train-steps "${STEPS:-5}" --stream-tokens "${TOKENS:-4096,16384}" \
  --json "$out/gpu-bench.json" | tee "$out/gpu-bench.md"
