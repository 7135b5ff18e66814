#!/usr/bin/env python3
"""Record the golden outputs: run each tests/golden/*.onnx in onnxruntime on its recorded input.

The Rust golden test then checks that tract reproduces these numbers. Usage:
    python3 scripts/golden.py        (needs numpy and onnxruntime)
"""
import pathlib

import numpy as np
import onnxruntime as ort

GOLDEN = pathlib.Path(__file__).resolve().parent.parent / "tests" / "golden"
BATCH = 3

for model in sorted(GOLDEN.glob("*.onnx")):
    stem = model.name[: -len(".onnx")]
    sess = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    shape = [BATCH] + [int(d) for d in sess.get_inputs()[0].shape[1:]]
    x = np.fromfile(GOLDEN / f"{stem}.input.f32", dtype="<f4").reshape(shape)
    (y,) = sess.run(None, {sess.get_inputs()[0].name: x})
    y.astype("<f4").tofile(GOLDEN / f"{stem}.output.f32")
    print(f"{stem}: input {list(x.shape)} -> output {list(y.shape)}")
