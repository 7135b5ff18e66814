#!/usr/bin/env bash
# The project's test command: Rust tests for the whole workspace, then the ONNX cross-check a user
# with another runtime would make (onnx full checker + onnxruntime), in a virtualenv it creates
# (the bad-input corpus test makes its files with that virtualenv's Pillow).
set -euo pipefail
cd "$(dirname "$0")/.."
venv="${TWINSCAN_VENV:-.venv}"
if ! "$venv/bin/python" -c "import onnx, onnxruntime, numpy, PIL" 2>/dev/null; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q --disable-pip-version-check -r tests/python/requirements.txt
fi
# The report test renders a page in headless Chromium (Debian's package; elsewhere set
# TWINSCAN_CHROMIUM to a Chromium binary).
if [ -z "${TWINSCAN_CHROMIUM:-}" ] && ! command -v chromium >/dev/null; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium chromium-driver
  else
    echo "scripts/test.sh: install chromium (apt-get install chromium chromium-driver) for the report test" >&2
  fi
fi
cargo test --workspace --all-features --locked
# examples/match.rs, the gallery app, on its fixtures: each probe's answer (first two columns)
# as examples/gallery/expected.txt records it. `cargo test` has just built it; `cargo run` would
# build it again (features unify differently without the CLI package: tract rebuilt, minutes).
"${CARGO_TARGET_DIR:-target}/debug/examples/match" examples/gallery/enroll examples/gallery/probes > "${CARGO_TARGET_DIR:-target}/match.out"
diff <(awk '{print $1, $2}' "${CARGO_TARGET_DIR:-target}/match.out") examples/gallery/expected.txt
# examples/dedup.rs and examples/outliers.rs, the front door's apps, on the example photos: the
# four planted groups (examples/photos/SOURCES.md), and page.jpg as the odd one out.
groups=$("${CARGO_TARGET_DIR:-target}/debug/examples/dedup" examples/photos)
[ "$(grep -c "^keep " <<<"$groups")" = 4 ] && grep -q "coffee-edited.jpg" <<<"$groups"
"${CARGO_TARGET_DIR:-target}/debug/examples/outliers" examples/photos 1 | grep -q "examples/photos/page.jpg"
"$venv/bin/python" tests/python/check_onnx.py
