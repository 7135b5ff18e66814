#!/usr/bin/env bash
# docs/report.png, the README's picture of `--html`: the report of examples/photos rendered by
# headless Chromium, reduced to 256 colours with Pillow (from the test virtualenv).
set -euo pipefail
cd "$(dirname "$0")/.."
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
cargo run --release -q -p twinscan-cli -- scan --outliers --top 1 --index "$tmp/i.twinscan" \
  --html "$tmp/report.html" examples/photos > /dev/null || true
"${TWINSCAN_CHROMIUM:-chromium}" --headless --no-sandbox --disable-gpu --hide-scrollbars \
  --window-size=1000,1620 --screenshot="$tmp/report.png" "file://$tmp/report.html" 2> /dev/null
"${TWINSCAN_VENV:-.venv}/bin/python" -c "
import sys; from PIL import Image
Image.open(sys.argv[1]).convert('RGB').quantize(256).save(sys.argv[2], optimize=True)" "$tmp/report.png" docs/report.png
echo "docs/report.png: $(stat -c %s docs/report.png) bytes"
