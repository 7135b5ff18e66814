//! What the CLI tests share: running the binary and reading its JSON Lines.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;
use twinscan::tower::{self, InputShape, TowerSpec, TowerWeights};

pub fn twinscan(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_twinscan")).args(args).output().expect("run twinscan")
}

/// `examples/photos`: four planted groups of copies and one picture that does not belong.
pub fn examples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/photos")
}

/// The JSON Lines records of a run's stdout.
pub fn records(out: &Output) -> Vec<Value> {
    String::from_utf8_lossy(&out.stdout).lines().map(|l| serde_json::from_str(l).expect("JSON line")).collect()
}

pub fn of_type<'a>(records: &'a [Value], t: &str) -> Vec<&'a Value> {
    records.iter().filter(|r| r["type"] == t).collect()
}

/// A small untrained RGB tower (compact, 32x32, 16 values) written as `tower<seed>.onnx`.
pub fn model(dir: &Path, seed: u64) -> PathBuf {
    let spec = TowerSpec::compact(InputShape { channels: 3, height: 32, width: 32 }, 16);
    let bytes =
        tower::write_onnx(&spec, &TowerWeights::seeded(&spec, seed).unwrap(), &tower::untrained_meta(&spec).unwrap())
            .unwrap();
    let path = dir.join(format!("tower{seed}.onnx"));
    std::fs::write(&path, bytes).unwrap();
    path
}

/// A path as the `&str` an argument list takes.
pub fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}
