#!/usr/bin/env python3
"""The check a user with another ONNX runtime would make, run by .ci/run in a virtualenv.

For each golden tower written by twinscan's writer: onnx.checker.check_model(full_check=True)
passes, the twinscan.* metadata is there, the batch dimension is symbolic, and onnxruntime's
outputs on the recorded inputs match the recorded outputs (which tract also reproduces, see
tests/golden.rs) within 1e-5. Each bundled model in models/ passes the full checker too and
runs in onnxruntime with a finite embedding of its declared size.
"""
import pathlib
import sys

import numpy as np
import onnx
import onnxruntime as ort

GOLDEN = pathlib.Path(__file__).resolve().parent.parent / "golden"
BATCH = 3
TOL = 1e-5

models = sorted(GOLDEN.glob("*.onnx"))
if not models:
    sys.exit("no golden models found")
failed = 0
for path in models:
    stem = path.name[: -len(".onnx")]
    m = onnx.load(str(path))
    onnx.checker.check_model(m, full_check=True)
    keys = {p.key for p in m.metadata_props}
    assert "twinscan.embedding.dim" in keys, f"{stem}: metadata missing"
    batch_dim = m.graph.input[0].type.tensor_type.shape.dim[0]
    assert batch_dim.dim_param, f"{stem}: batch dimension is not symbolic"
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    shape = [BATCH] + [int(d) for d in sess.get_inputs()[0].shape[1:]]
    x = np.fromfile(GOLDEN / f"{stem}.input.f32", dtype="<f4").reshape(shape)
    want = np.fromfile(GOLDEN / f"{stem}.output.f32", dtype="<f4").reshape(BATCH, -1)
    (got,) = sess.run(None, {sess.get_inputs()[0].name: x})
    err = float(np.max(np.abs(got - want)))
    ok = err <= TOL
    failed += not ok
    print(f"{'ok' if ok else 'FAIL'}  {stem}: full_check passed, max |ort - recorded| = {err:.2e}")
for path in sorted((GOLDEN.parent.parent / "models").glob("*.onnx")):
    m = onnx.load(str(path))
    onnx.checker.check_model(m, full_check=True)
    dim = int({p.key: p.value for p in m.metadata_props}["twinscan.embedding.dim"])
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    shape = [2] + [int(d) for d in sess.get_inputs()[0].shape[1:]]
    (got,) = sess.run(None, {"image": np.random.default_rng(0).random(shape, dtype=np.float32)})
    ok = got.shape == (2, dim) and bool(np.isfinite(got).all())
    failed += not ok
    models.append(path)
    print(f"{'ok' if ok else 'FAIL'}  {path.name}: full_check passed, onnxruntime embedding {got.shape}")
print(f"{len(models) - failed} passed, {failed} failed")
sys.exit(1 if failed else 0)
