#!/usr/bin/env python3
"""onnxruntime side of the embedding benchmark; see scripts/bench-embed.sh.

Runs each bench-out/*.onnx on its bench-out/*.input.f32 with the same batch sizes and thread
counts as benches/embed.rs, then prints a Markdown table beside tract's numbers.
Usage: bench_embed_ort.py BENCH_OUT_DIR TRACT_JSONL
"""
import json
import pathlib
import sys
import time

import numpy as np
import onnxruntime as ort

out = pathlib.Path(sys.argv[1])
tract = [json.loads(line) for line in open(sys.argv[2]) if line.startswith("{")]
rows = []
for t in tract:
    model = out / f"{t['tower']}.onnx"
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = t["threads"]
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    sess = ort.InferenceSession(str(model), opts, providers=["CPUExecutionProvider"])
    inp = sess.get_inputs()[0]
    shape = [int(d) for d in inp.shape[1:]]
    x = np.fromfile(out / f"{t['tower']}.input.f32", dtype="<f4").reshape([-1] + shape)
    n, b = x.shape[0], t["batch"]

    def run():
        for i in range(0, n, b):
            sess.run(None, {inp.name: x[i : i + b]})

    run()
    reps = 3
    start = time.perf_counter()
    for _ in range(reps):
        run()
    ort_rate = reps * n / (time.perf_counter() - start)
    rows.append((t["tower"], b, t["threads"], t["per_sec"], ort_rate))

print(f"onnxruntime {ort.__version__}, numpy {np.__version__}")
print()
print("| tower | batch | threads | tract img/s | onnxruntime img/s | tract / ort |")
print("| --- | ---: | ---: | ---: | ---: | ---: |")
for tower, b, th, tr, o in rows:
    print(f"| {tower} | {b} | {th} | {tr:,.0f} | {o:,.0f} | {tr / o:.2f} |")
