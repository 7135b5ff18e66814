#!/usr/bin/env bash
# The project's test command: Rust tests for the whole workspace, then the ONNX cross-check a user
# with another runtime would make (onnx full checker + onnxruntime), in a virtualenv it creates.
set -euo pipefail
cd "$(dirname "$0")/.."
venv="${TWINSCAN_VENV:-.venv}"
if ! "$venv/bin/python" -c "import onnx, onnxruntime, numpy" 2>/dev/null; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q --disable-pip-version-check -r tests/python/requirements.txt
fi
cargo test --workspace --features train --locked
# examples/match.rs, the gallery app, on its fixtures: each probe's answer (first two columns)
# as examples/gallery/expected.txt records it. With the tests' features, so that it reuses their
# build (without them, feature unification rebuilds tract).
cargo run --locked -q --features train --example match -- examples/gallery/enroll examples/gallery/probes > target/match.out
diff <(awk '{print $1, $2}' target/match.out) examples/gallery/expected.txt
"$venv/bin/python" tests/python/check_onnx.py
