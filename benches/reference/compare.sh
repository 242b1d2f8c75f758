#!/bin/bash
# remem against a plain PyTorch RMT (rmt_torch.py) in the same minutes, on the CPU: each figure
# of `remem bench` (RMT, copy-small and medium, training and streaming 16k tokens) next to the
# same figure from PyTorch, the order alternating between rounds. This machine's speed swings
# by up to 2x within minutes, so only figures taken side by side compare.
#
# Usage: benches/reference/compare.sh [ROUNDS]   (needs python3 with torch; `pip install torch`)
# REMEM names the binary (default: the release build in CARGO_TARGET_DIR or target/).
set -euo pipefail
rounds=${1:-3}
here=$(cd "$(dirname "$0")" && pwd)
remem=${REMEM:-${CARGO_TARGET_DIR:-$here/../../target}/release/remem}
[ -x "$remem" ] || { echo "error: no remem binary at $remem (cargo build --release)" >&2; exit 1; }
python3 -c "import torch" 2>/dev/null || { echo "error: python3 cannot import torch" >&2; exit 1; }
json=$(mktemp)
trap 'rm -f "$json"' EXIT
# Run a command and print its figure lines; if it fails or prints none, show all it said.
figure() {
  local pattern=$1 out
  shift
  if ! out=$("$@" 2>&1) || ! grep -E "$pattern" <<<"$out"; then
    echo "error: '$*' gave no figure:" >&2
    echo "$out" >&2
    exit 1
  fi
}
torch() { figure "^torch" python3 "$here/rmt_torch.py" "$@"; }
ours() { figure "^(train|stream) " "$remem" bench --device cpu --json "$json" "$@"; }
for round in $(seq "$rounds"); do
  echo "round $round"
  for preset in copy-small medium; do
    steps=10; [ "$preset" = medium ] && steps=5
    pair=(
      "ours --presets $preset --train-models rmt --train-steps $steps --stream-models none"
      "torch $preset train $steps"
      "ours --presets $preset --train-models none --stream-models rmt --stream-tokens 16384"
      "torch $preset stream 16384"
    )
    if (( round % 2 == 0 )); then order=(1 0 3 2); else order=(0 1 2 3); fi
    for i in "${order[@]}"; do eval "${pair[$i]}"; done
  done
done
