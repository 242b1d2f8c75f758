#!/usr/bin/env bash
# Build the wasm module and serve the page on http://localhost:${PORT:-8080}.
set -euo pipefail
cd "$(dirname "$0")"
bash build.sh
port="${PORT:-8080}"
echo "remem's page: open http://localhost:$port in a browser with WebGPU (Chrome, Edge, Safari 26+)" >&2
echo "or any other (it falls back to the CPU). Ctrl-C stops the server." >&2
exec python3 -m http.server "$port" --bind 127.0.0.1
