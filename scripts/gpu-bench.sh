#!/usr/bin/env bash
# One short run for a lent GPU (issue #22): count kernel launches and time training and
# streaming on wgpu, then find where the time goes: a per-kernel profile of medium RMT
# (the runtime's own kernel log) and the same bench with remem's WGSL kernels turned off
# (REMEM_WGSL_OFF). Writes JSON, tables and the profile to $OUT (or runs/gpu-bench): eight
# files. About 6 minutes on an H200, at most 9.5 (each command has its timeout); STAGES picks a
# subset (bench, profile, off).
#
#   OUT=/tmp/out bash scripts/gpu-bench.sh                 # builds with cargo first
#   BIN=/path/to/remem OUT=/tmp/out bash scripts/gpu-bench.sh   # a binary built elsewhere
#
# A machine without Rust or network takes a binary built on a matching x86-64 Linux:
# `cargo build --release`, then `strip` it and compress it (xz) to carry it.
set -uo pipefail
cd "$(dirname "$0")/.."
out="${OUT:-runs/gpu-bench}"
mkdir -p "$out"
if [ -z "${BIN:-}" ]; then
  cargo build --release --locked || exit 1
  BIN="${CARGO_TARGET_DIR:-target}/release/remem"
fi
stages="${STAGES:-bench,profile,off}"
t0=$(date +%s)
say() { echo "$1 rc=$2 at $(($(date +%s) - t0)) s"; }
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm --format=csv > "$out/bench.md" 2>&1

if [[ $stages == *bench* ]]; then
  # Every model on the two presets of README's H200 table (ARMT too, the kind of
  # configs/gpu/qa1-armt.toml), RMT on `remem train`'s default too.
  timeout 130 "$BIN" bench --device wgpu --presets default,copy-small,medium --train-models rmt \
    --stream-models rmt --stream-tokens 4096,16384 --json "$out/rmt.json" >> "$out/bench.md" 2>&1
  say rmt $?
  timeout 140 "$BIN" bench --device wgpu --presets copy-small,medium \
    --train-models xl,memxl,transformer,infinity,armt --stream-models xl,memxl,infinity,armt \
    --stream-tokens 4096,16384 --json "$out/others.json" >> "$out/bench.md" 2>&1
  say others $?
fi

if [[ $stages == *profile* ]]; then
  # One line per executed kernel with its time (the runtime syncs around each: times are
  # upper bounds, their shares are what counts). scripts/kernel_times.py sums them by kernel.
  for what in stream train; do
    if [ $what = stream ]; then args=(--train-models none --stream-models rmt --stream-tokens 4096)
    else args=(--train-models rmt --stream-models none --train-steps 3); fi
    CUBECL_DEBUG_LOG=/tmp/kernels-$what.log CUBECL_DEBUG_OPTION=profile timeout 50 "$BIN" bench \
      --device wgpu --presets medium "${args[@]}" --json /tmp/profile-$what.json > /dev/null 2>&1
    say "profile $what" $?
    echo "== $what" >> "$out/profile.txt"
    grep -aE '^\| [0-9.]+(ns|µs|ms|s) +\| ' /tmp/kernels-$what.log >> "$out/profile.txt"
  done
fi

if [[ $stages == *off* ]]; then
  # The reference path (Burn's operations) in place of remem's kernels: all of them, then
  # attention's alone, then the inference products' alone.
  for off in all attention affine; do
    REMEM_WGSL_OFF=$off timeout 60 "$BIN" bench --device wgpu --presets copy-small,medium \
      --train-models rmt --stream-models rmt --train-steps 5 --stream-tokens 4096 \
      --json "$out/off-$off.json" >> "$out/off.md" 2>&1
    say "off $off" $?
  done
fi
ls -la "$out"
