#!/usr/bin/env bash
# Training speed of the origin study's recipe (seed tower, 70,000 training pairs, batch 1024,
# Adam 1e-3, binary cross-entropy) on MNIST: our trainer and Keras on TensorFlow for CPU, one
# after the other on this machine. Prints seconds per epoch for both.
# Usage: scripts/bench-train.sh [EPOCHS]   (needs scripts/fetch-data.sh mnist first)
set -euo pipefail
cd "$(dirname "$0")/.."
epochs="${1:-2}"
venv="${TWINSCAN_TF_VENV:-.venv-tf}"
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
"$venv/bin/pip" install -q tensorflow-cpu numpy
cargo build --release -q -p twinscan-cli --features lab
out="$(mktemp -d)"
echo "== twinscan (candle)"
./target/release/twinscan train --data data/mnist --dataset mnist --tower seed --loss bce \
  --epochs "$epochs" --test-pairs 1000 -o "$out/bench.onnx" 2>&1 | grep -E "^epoch"
echo "== keras"
TF_CPP_MIN_LOG_LEVEL=2 "$venv/bin/python" scripts/keras_epoch.py data/mnist "$epochs" 2>&1 | grep -E "keras epoch|tensorflow"
rm -rf "$out"
