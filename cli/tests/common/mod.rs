//! What the CLI tests share: running the binary and reading its JSON Lines.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

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
