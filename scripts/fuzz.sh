#!/usr/bin/env bash
# Fuzzes twinscan's parsers of untrusted bytes with cargo-fuzz (libFuzzer; needs a nightly
# toolchain and `cargo install cargo-fuzz`): decode_image (image decoding and preprocessing),
# load_index, load_gallery, model_meta. Seeds come from the examples; a crash input is kept in
# fuzz/artifacts/<target>/ and belongs, once fixed, in fuzz/regressions/<target>/, which
# tests/fuzz_regressions.rs replays on every test run.
# Usage: scripts/fuzz.sh [SECONDS per target, default 600] [TARGET...]
set -euo pipefail
cd "$(dirname "$0")/.."
secs="${1:-600}"
shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(decode_image load_index load_gallery model_meta)

# Seeds: example images; an index and a gallery of them (whole, and as the payload after the
# 44-byte header, marked by a leading odd byte); a model's metadata as key=value lines.
corpus=fuzz/corpus
mkdir -p "$corpus"/{decode_image,load_index,load_gallery,model_meta}
cp examples/digits/*.png examples/gallery/probes/*.png examples/photos/*.jpg "$corpus/decode_image/"
# Seeds need no release build: the dev profile optimises dependencies already.
cargo build -q -p twinscan-cli
bin=./target/debug/twinscan
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
"$bin" scan --index "$tmp/seed.twinscan" examples/digits > /dev/null || true
"$bin" gallery enroll -g "$tmp/seed.twg" -m models/mnist-0-4-compact-proj-supcon.onnx seven examples/gallery/enroll/seven/* > /dev/null
for f in "$tmp/seed.twinscan:load_index" "$tmp/seed.twg:load_gallery"; do
  file="${f%%:*}" target="${f##*:}"
  cp "$file" "$corpus/$target/whole"
  { printf '\001'; tail -c +45 "$file"; } > "$corpus/$target/payload"
done
.venv/bin/python - "$corpus/model_meta/photo" <<'PY'
import sys, onnx
m = onnx.load("models/photo.onnx", load_external_data=False)
open(sys.argv[1], "w").write("".join(f"{p.key}={p.value}\n" for p in m.metadata_props))
PY

# Two targets at a time on two cores.
cd fuzz
for target in "${targets[@]}"; do
  cargo +nightly fuzz build -O "$target"
done
run() {
  cargo +nightly fuzz run -O "$1" "corpus/$1" -- -max_total_time="$secs" -rss_limit_mb=2048 -timeout=20 \
    > "../target/fuzz-$1.log" 2>&1 && echo "$1: no crash in ${secs} s" || echo "$1: FAILED, see target/fuzz-$1.log and fuzz/artifacts/$1/"
}
pids=()
for target in "${targets[@]}"; do
  run "$target" &
  pids+=($!)
  if [ ${#pids[@]} -ge 2 ]; then wait "${pids[0]}"; pids=("${pids[@]:1}"); fi
done
wait
