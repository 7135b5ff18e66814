//! Golden model tests (tract's habit): a tower with fixed weights written by our writer, run by
//! tract on recorded inputs, must give the recorded outputs. The outputs were recorded with
//! onnxruntime, an independent implementation, by `scripts/golden.py`;
//! `tests/python/check_onnx.py` checks the same files with onnx's full checker and onnxruntime.
//!
//! Regenerate after a deliberate format change: `TWINSCAN_BLESS=1 cargo test --test golden`,
//! then `python3 scripts/golden.py` (needs onnxruntime) to record the outputs.

mod common;

use common::*;
use twinscan::tower::{SplitMix64, TowerSpec};
use twinscan::Model;

const BATCH: usize = 3;
const TOLERANCE: f32 = 1e-5;

fn file(spec: &TowerSpec, suffix: &str) -> std::path::PathBuf {
    golden_dir().join(format!("{}.{suffix}", spec.name))
}

#[test]
fn writer_output_is_the_committed_file() {
    for spec in golden_specs() {
        let bytes = golden_bytes(&spec);
        if std::env::var_os("TWINSCAN_BLESS").is_some() {
            std::fs::write(file(&spec, "onnx"), &bytes).unwrap();
            let n = BATCH * spec.input.channels * spec.input.height * spec.input.width;
            let mut rng = SplitMix64::new(7);
            let input: Vec<f32> = (0..n).map(|_| rng.next_f32() * 2.0 - 1.0).collect();
            write_f32(&file(&spec, "input.f32"), &input);
        }
        let committed = std::fs::read(file(&spec, "onnx")).unwrap();
        assert!(committed == bytes, "{}: the writer no longer produces the committed bytes", spec.name);
    }
}

fn assert_close(name: &str, got: &[f32], want: &[f32]) {
    assert_eq!(got.len(), want.len(), "{name}: output length");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!((g - w).abs() <= TOLERANCE, "{name}: value {i}: tract {g}, recorded {w}");
    }
}

#[test]
fn tract_matches_recorded_outputs_through_every_loading_path() {
    for spec in golden_specs() {
        let input = read_f32(&file(&spec, "input.f32"));
        let want = read_f32(&file(&spec, "output.f32"));
        let from_path = Model::open(file(&spec, "onnx")).unwrap();
        let from_bytes = Model::from_bytes(&std::fs::read(file(&spec, "onnx")).unwrap(), &spec.name).unwrap();
        for model in [&from_path, &from_bytes] {
            assert_close(&spec.name, &model.run_batch(&input, BATCH).unwrap(), &want);
            // The symbolic batch: one image at a time gives the same rows.
            let per = input.len() / BATCH;
            let d = want.len() / BATCH;
            for i in 0..BATCH {
                let row = model.run_batch(&input[i * per..(i + 1) * per], 1).unwrap();
                assert_close(&spec.name, &row, &want[i * d..(i + 1) * d]);
            }
        }
        assert_eq!(from_path.fingerprint(), from_bytes.fingerprint());
    }
}
