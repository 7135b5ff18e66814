#!/usr/bin/env bash
# Embedding benchmark: tract (benches/embed.rs, release build) and onnxruntime on the same ONNX
# files, inputs, batch sizes and thread counts, in one run on one machine. Prints a Markdown table.
# Usage: scripts/bench-embed.sh [IMAGES]   (default 1024 for the 28x28 tower, a quarter for 96x96)
set -euo pipefail
cd "$(dirname "$0")/.."
images="${1:-1024}"
venv="${TWINSCAN_VENV:-.venv}"
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
"$venv/bin/pip" install -q numpy onnxruntime
mkdir -p bench-out
cargo bench --bench embed -- --images "$images" | tee bench-out/tract.jsonl
"$venv/bin/python" scripts/bench_embed_ort.py bench-out bench-out/tract.jsonl
