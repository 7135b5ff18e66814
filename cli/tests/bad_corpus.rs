//! The bad-input corpus (`tests/corpus/make_bad_corpus.py`, Pillow) scanned end to end: no
//! panic, the scan finishes, each bad file is exactly one error record with its path and reason,
//! the good copies (every format and layout) are grouped as the corpus says, and a rescan finds
//! the same. Needs the virtualenv that `scripts/test.sh` makes (`.venv`, or `$TWINSCAN_VENV`).

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use common::records;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn make_corpus(out: &Path) {
    let venv = std::env::var_os("TWINSCAN_VENV").map_or_else(|| root().join(".venv"), PathBuf::from);
    let status = Command::new(venv.join("bin/python"))
        .arg(root().join("tests/corpus/make_bad_corpus.py"))
        .arg(out)
        .args(["--seed", "1"])
        .status()
        .expect("the test virtualenv's python (scripts/test.sh makes it)");
    assert!(status.success(), "make_bad_corpus.py failed (Pillow and numpy come with scripts/test.sh)");
}

/// Runs twinscan, killing it after two minutes: a FIFO in the corpus must not hang the scan.
fn twinscan(args: &[&str]) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_twinscan"))
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run twinscan");
    let start = Instant::now();
    while child.try_wait().expect("wait").is_none() {
        if start.elapsed() > Duration::from_secs(120) {
            let _ = child.kill();
            panic!("twinscan {args:?} hung");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    child.wait_with_output().expect("output")
}

struct Expected {
    errors: BTreeSet<String>,
    groups: BTreeSet<Vec<String>>,
    silent: Vec<String>,
}

/// What the manifest says the scan must report; paths as the JSON output writes them.
fn expected(corpus: &Path) -> Expected {
    let manifest: Vec<Value> =
        serde_json::from_slice(&std::fs::read(corpus.join("manifest.json")).unwrap()).expect("manifest");
    let (mut errors, mut groups, mut silent) = (BTreeSet::new(), BTreeMap::<String, Vec<String>>::new(), Vec::new());
    for e in manifest {
        let hex = e["name_hex"].as_str().unwrap();
        let name: Vec<u8> =
            (0..hex.len()).step_by(2).map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap()).collect();
        let path = corpus.join(std::ffi::OsStr::from_bytes(&name));
        let text = path.to_string_lossy().into_owned();
        let mut expect = e["expect"].as_str().unwrap();
        if expect == "unreadable" {
            // Root reads it anyway; then it is an image like the others.
            expect = if std::fs::File::open(&path).is_ok() { "image" } else { "error" };
        }
        match expect {
            "error" => drop(errors.insert(text)),
            "image" => groups.entry(e["group"].as_str().unwrap().to_string()).or_default().push(text),
            _ => silent.push(text),
        }
    }
    let groups = groups
        .into_values()
        .filter(|g| g.len() > 1)
        .map(|mut g| {
            g.sort();
            g
        })
        .collect();
    Expected { errors, groups, silent }
}

fn found_groups(records: &[Value]) -> BTreeSet<Vec<String>> {
    records
        .iter()
        .filter(|r| r["type"] == "group")
        .map(|g| {
            let mut m: Vec<String> =
                g["members"].as_array().unwrap().iter().map(|m| m["path"].as_str().unwrap().to_string()).collect();
            m.sort();
            m
        })
        .collect()
}

#[test]
fn the_bad_input_corpus_is_scanned_to_the_end_with_one_error_per_bad_file() {
    let dir = tempfile::tempdir().unwrap();
    let corpus = dir.path().join("corpus");
    make_corpus(&corpus);
    let want = expected(&corpus);
    let index = dir.path().join("corpus.twinscan");
    let args = ["scan", "--json", "--follow-links", "--index", index.to_str().unwrap(), corpus.to_str().unwrap()];
    for run in ["first scan", "rescan"] {
        let out = twinscan(&args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{run}: groups found, bad files reported, exit 1\n{stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
        let r = records(&out);
        let mut errors: Vec<String> = Vec::new();
        for e in r.iter().filter(|r| r["type"] == "error") {
            assert!(!e["error"].as_str().unwrap().is_empty() && !e["kind"].as_str().unwrap().is_empty(), "{e}");
            errors.push(e["path"].as_str().unwrap().to_string());
        }
        errors.sort();
        assert_eq!(errors, want.errors.iter().cloned().collect::<Vec<_>>(), "{run}: one error record per bad file");
        assert_eq!(found_groups(&r), want.groups, "{run}: good files grouped as made");
        let all = String::from_utf8_lossy(&out.stdout);
        for s in &want.silent {
            assert!(!all.contains(s.as_str()), "{run}: {s} is not a file to report");
        }
        let summary = r.iter().find(|r| r["type"] == "summary").expect("a summary");
        assert_eq!(summary["interrupted"], false);
        if run == "rescan" {
            assert_eq!(summary["embedded"], 0, "nothing changed: {summary}");
        }
    }
}
