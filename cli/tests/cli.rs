//! The CLI end to end (fd's habit): build a temporary tree, run the binary, assert on its output
//! and exit code.

mod common;

use std::path::{Path, PathBuf};

use twinscan::image;
use twinscan::tower::{self, InputShape, TowerSpec, TowerWeights};

use common::{model, s, twinscan};

fn image(dir: &Path, name: &str, seed: u32) -> PathBuf {
    let img =
        image::RgbImage::from_fn(50, 40, |x, y| image::Rgb([(x * seed) as u8, (y * 3) as u8, ((x + y) * seed) as u8]));
    let path = dir.join(name);
    img.save(&path).unwrap();
    path
}

#[test]
fn embed_json_lines_report_each_file_and_failures_set_exit_code_2() {
    let dir = tempfile::tempdir().unwrap();
    let m = model(dir.path(), 5);
    let a = image(dir.path(), "a.png", 3);
    let bad = dir.path().join("bad.jpg");
    std::fs::write(&bad, b"garbage").unwrap();
    let out = twinscan(&["embed", "--model", s(&m), "--json", s(&a), s(&bad)]);
    assert_eq!(out.status.code(), Some(2), "{}", String::from_utf8_lossy(&out.stderr));
    let lines: Vec<serde_json::Value> =
        String::from_utf8(out.stdout).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[0]["type"], "embedding");
    assert_eq!(lines[0]["path"], s(&a));
    assert_eq!(lines[0]["embedding"].as_array().unwrap().len(), 16);
    assert_eq!(lines[1]["type"], "error");
    assert_eq!(lines[1]["path"], s(&bad));
    assert_eq!(lines[1]["kind"], "unknown_format");
}

#[test]
fn embed_succeeds_with_exit_code_0() {
    let dir = tempfile::tempdir().unwrap();
    let m = model(dir.path(), 5);
    let a = image(dir.path(), "a.png", 3);
    let out = twinscan(&["embed", "-m", s(&m), s(&a)]);
    assert_eq!(out.status.code(), Some(0));
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.starts_with(s(&a)));
    assert_eq!(text.trim().split('\t').nth(1).unwrap().split(' ').count(), 16);
}

#[test]
fn compare_reports_distance_probability_and_verdict() {
    let dir = tempfile::tempdir().unwrap();
    let m = model(dir.path(), 5);
    let a = image(dir.path(), "a.png", 3);
    let a2 = dir.path().join("a-copy.jpg");
    image::open(&a).unwrap().save(&a2).unwrap();
    let out = twinscan(&["compare", "-m", s(&m), "--json", s(&a), s(&a)]);
    assert_eq!(out.status.code(), Some(1), "identical images are similar: exit 1");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["distance"].as_f64().unwrap(), 0.0);
    assert_eq!(v["similar"], true);
    let p = v["probability"].as_f64().unwrap();
    assert!(p > 0.5 && p <= 1.0);

    let out = twinscan(&["compare", "-m", s(&m), s(&a), s(&a2)]);
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("distance") && text.contains("probability") && text.contains("verdict"), "{text}");
}

#[test]
fn unusable_model_is_an_error_with_its_path() {
    let dir = tempfile::tempdir().unwrap();
    let a = image(dir.path(), "a.png", 3);
    let fake = dir.path().join("fake.onnx");
    std::fs::write(&fake, b"not a model").unwrap();
    let out = twinscan(&["compare", "-m", s(&fake), s(&a), s(&a)]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains("fake.onnx") && err.contains("not an ONNX model"), "{err}");
}

#[test]
fn compare_with_an_unreadable_image_names_it() {
    let dir = tempfile::tempdir().unwrap();
    let m = model(dir.path(), 5);
    let a = image(dir.path(), "a.png", 3);
    let out = twinscan(&["compare", "-m", s(&m), s(&a), "/nonexistent/b.png"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8(out.stderr).unwrap().contains("/nonexistent/b.png"));
}

#[cfg(feature = "lab")]
fn write_idx(dir: &Path, prefix: &str, n: u32) {
    let mut images = vec![0, 0, 8, 3];
    for d in [n, 8, 8] {
        images.extend_from_slice(&d.to_be_bytes());
    }
    images.extend((0..n * 64).map(|v| ((v / 64 % 3) * 80 + v % 7) as u8));
    let mut labels = vec![0, 0, 8, 1];
    labels.extend_from_slice(&n.to_be_bytes());
    labels.extend((0..n).map(|v| (v % 3) as u8));
    std::fs::write(dir.join(format!("{prefix}-images-idx3-ubyte")), images).unwrap();
    std::fs::write(dir.join(format!("{prefix}-labels-idx1-ubyte")), labels).unwrap();
}

#[test]
#[cfg(feature = "lab")]
fn eval_reports_the_study_metrics_as_json() {
    let dir = tempfile::tempdir().unwrap();
    write_idx(dir.path(), "train", 30);
    write_idx(dir.path(), "t10k", 12);
    let spec = TowerSpec::seed(InputShape { channels: 1, height: 8, width: 8 });
    let bytes =
        tower::write_onnx(&spec, &TowerWeights::seeded(&spec, 5).unwrap(), &tower::untrained_meta(&spec).unwrap())
            .unwrap();
    let m = dir.path().join("m.onnx");
    std::fs::write(&m, bytes).unwrap();
    let args = [
        "eval",
        "-m",
        s(&m),
        "--data",
        s(dir.path()),
        "--pairs",
        "100",
        "--test-pairs",
        "40",
        "--pair-seed",
        "9",
        "--json",
    ];
    let out = twinscan(&args);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["train"]["pairs"], 100);
    assert_eq!(v["test"]["pairs"], 40);
    for part in ["train", "test"] {
        let acc = v[part]["accuracy"].as_f64().unwrap();
        let auc = v[part]["auc"].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&acc) && (0.0..=1.0).contains(&auc), "{v}");
    }
    // Same pair seed, same numbers.
    assert_eq!(twinscan(&args).stdout, out.stdout);
}

/// The product's commands are always there; the lab's appear only in builds with the `lab`
/// feature (scripts/test.sh checks a build without it as well).
#[test]
fn help_lists_the_product_commands_and_the_lab_only_with_the_lab() {
    let out = twinscan(&["--help"]);
    let help = String::from_utf8_lossy(&out.stdout);
    let listed: Vec<&str> =
        help.lines().filter_map(|l| l.strip_prefix("  ")).filter_map(|l| l.split_whitespace().next()).collect();
    for command in ["scan", "outliers", "query", "undo", "embed", "compare", "info", "gallery"] {
        assert!(listed.contains(&command), "{command} missing from:\n{help}");
    }
    for command in ["train", "train-photo", "eval", "bench"] {
        assert_eq!(listed.contains(&command), cfg!(feature = "lab"), "{command} in:\n{help}");
    }
}
