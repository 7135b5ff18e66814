//! What the CLI tests share: running the binary and reading its JSON Lines.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;
use twinscan::tower::{self, InputShape, TowerSpec, TowerWeights};

pub fn twinscan(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_twinscan")).args(args).output().expect("run twinscan")
}

/// Runs twinscan from `cwd`, killed after `secs` seconds (a hang fails the test instead of
/// hanging it); `None` when it had to be killed.
pub fn twinscan_within(secs: u64, cwd: &Path, args: &[&str]) -> Option<Output> {
    use std::process::Stdio;
    let mut child = Command::new(env!("CARGO_BIN_EXE_twinscan"))
        .args(args)
        .current_dir(cwd)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run twinscan");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    while child.try_wait().expect("wait for twinscan").is_none() {
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    Some(child.wait_with_output().expect("read twinscan's output"))
}

/// A copy of the example photos in `dir/photos` (four duplicate groups, one of them with a
/// byte-identical pair: coffee.jpg and coffee-copy.jpg).
pub fn photos(dir: &Path) -> PathBuf {
    let photos = dir.join("photos");
    std::fs::create_dir(&photos).unwrap();
    for e in std::fs::read_dir(examples()).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "jpg") {
            std::fs::copy(&p, photos.join(p.file_name().unwrap())).unwrap();
        }
    }
    photos
}

/// A temporary folder on another file system than `near` (tmpfs at /dev/shm, here and in CI),
/// for moves that must copy; `None`, said on stderr, where there is none.
#[cfg(unix)]
pub fn other_file_system(near: &Path) -> Option<tempfile::TempDir> {
    use std::os::unix::fs::MetadataExt;
    let other = tempfile::tempdir_in("/dev/shm").ok()?;
    let dev = |p: &Path| std::fs::metadata(p).map(|m| m.dev()).ok();
    if dev(other.path()) == dev(near) {
        eprintln!("/dev/shm is on the same file system: the cross-device case is not exercised");
        return None;
    }
    Some(other)
}

/// The standard error of a run, as text.
pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
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
