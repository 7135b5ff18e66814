#!/usr/bin/env bash
# Pictures for bundled models' cards (training curves, sample test pairs): runs
# scripts/plot_model.py for models/NAME.onnx in a virtualenv with matplotlib and onnxruntime.
# Usage: scripts/plot-models.sh [NAME...]   (default: every model in models/; needs the data)
set -euo pipefail
cd "$(dirname "$0")/.."
venv="${TWINSCAN_PLOT_VENV:-.venv-plot}"
if ! "$venv/bin/python" -c "import onnx, onnxruntime, matplotlib, PIL" 2>/dev/null; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q --disable-pip-version-check onnx onnxruntime numpy matplotlib pillow
fi
names=("$@")
if [ ${#names[@]} -eq 0 ]; then
  for f in models/*.onnx; do names+=("$(basename "$f" .onnx)"); done
fi
for name in "${names[@]}"; do
  case "$name" in
    fashion-*) data=data/fashion-mnist ;;
    mnist-*) data=data/mnist ;;
    photo*) echo "plot-models: $name is scored by crates/twinscan-lab/benches/near_dup.rs, no pair pictures"; continue ;;
    *) echo "plot-models: no test data known for $name" >&2; exit 2 ;;
  esac
  "$venv/bin/python" scripts/plot_model.py "models/$name.onnx" "$data"
done
