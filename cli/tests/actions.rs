//! `scan --quarantine` / `--hardlink`, plan and `--apply`, then `twinscan undo`: on a temporary
//! copy of `examples/photos`, every byte (and mode) of the tree is compared before and after.

mod common;

use std::collections::BTreeMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Output;

use common::{of_type, photos, records, twinscan};

/// Every file under `root`: bytes, permission bits and modification time.
fn snapshot(root: &Path) -> BTreeMap<PathBuf, (Vec<u8>, u32, i64)> {
    let mut files = BTreeMap::new();
    for e in walkdir(root) {
        let meta = std::fs::symlink_metadata(&e).unwrap();
        if meta.is_file() {
            let rel = e.strip_prefix(root).unwrap().to_path_buf();
            files.insert(rel, (std::fs::read(&e).unwrap(), meta.permissions().mode(), meta.mtime()));
        }
    }
    files
}

fn walkdir(root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out
}

/// A copy of the example photos (four duplicate groups, one of them with a byte-identical copy);
/// one file is made read-only so that modes are checked too.
fn tree() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let photos = photos(dir.path());
    std::fs::set_permissions(photos.join("coffee-copy.jpg"), std::fs::Permissions::from_mode(0o444)).unwrap();
    (dir, photos)
}

fn scan(photos: &Path, index: &Path, extra: &[&str]) -> Output {
    let mut args = vec!["scan", "--json", "--index", index.to_str().unwrap()];
    args.extend(extra);
    args.push(photos.to_str().unwrap());
    twinscan(&args)
}

#[test]
fn quarantine_is_planned_then_applied_then_undone_byte_for_byte() {
    let (dir, photos) = tree();
    let (index, quarantine) = (dir.path().join("i.twinscan"), dir.path().join("quarantine"));
    let before = snapshot(&photos);

    let plan = scan(&photos, &index, &["--quarantine", quarantine.to_str().unwrap()]);
    assert_eq!(plan.status.code(), Some(1), "{}", String::from_utf8_lossy(&plan.stderr));
    let planned = records(&plan);
    let actions = of_type(&planned, "action");
    assert_eq!(actions.len(), 6, "ten images in four groups: six not kept");
    assert!(actions.iter().all(|a| a["status"] == "planned" && a["op"] == "move"), "{actions:?}");
    assert_eq!(snapshot(&photos), before, "a plan changes nothing");
    assert!(!quarantine.exists());

    let applied = scan(&photos, &index, &["--quarantine", quarantine.to_str().unwrap(), "--apply"]);
    assert_eq!(applied.status.code(), Some(1), "{}", String::from_utf8_lossy(&applied.stderr));
    let r = records(&applied);
    let done = of_type(&r, "action");
    assert!(done.iter().all(|a| a["status"] == "done"), "{done:?}");
    assert_eq!(snapshot(&photos).len(), before.len() - 6);
    for a in &done {
        let (from, to) = (Path::new(a["path"].as_str().unwrap()), Path::new(a["to"].as_str().unwrap()));
        assert!(!from.exists() && to.starts_with(&quarantine));
        let name = from.strip_prefix(&photos).unwrap();
        assert_eq!(std::fs::read(to).unwrap(), before[name].0, "{} moved intact", name.display());
    }
    let journal = of_type(&r, "journal")[0]["path"].as_str().unwrap().to_string();
    assert!(Path::new(&journal).starts_with(&quarantine));

    let undo = twinscan(&["undo", "--json", &journal]);
    assert_eq!(undo.status.code(), Some(0), "{}", String::from_utf8_lossy(&undo.stderr));
    assert_eq!(of_type(&records(&undo), "restored").len(), 6);
    assert_eq!(snapshot(&photos), before, "every byte, mode and time restored");
    // Undoing again finds everything in place and changes nothing.
    let again = twinscan(&["undo", "--json", &journal]);
    assert_eq!(again.status.code(), Some(0));
    assert_eq!(of_type(&records(&again), "unchanged").len(), 6);
    assert_eq!(snapshot(&photos), before);
}

#[test]
fn hard_links_replace_exact_copies_only_and_undo_separates_them_again() {
    let (dir, photos) = tree();
    // Only files of one owner and mode are linked: the pair read-only alike.
    std::fs::set_permissions(photos.join("coffee.jpg"), std::fs::Permissions::from_mode(0o444)).unwrap();
    let index = dir.path().join("i.twinscan");
    let journal = dir.path().join("links.jsonl");
    let before = snapshot(&photos);
    let out = scan(&photos, &index, &["--hardlink", "--apply", "--journal", journal.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{}", String::from_utf8_lossy(&out.stderr));
    let r = records(&out);
    let actions = of_type(&r, "action");
    let done: Vec<_> = actions.iter().filter(|a| a["status"] == "done").collect();
    assert_eq!(done.len(), 1, "{actions:?}");
    let (copy, keep) =
        (PathBuf::from(done[0]["path"].as_str().unwrap()), PathBuf::from(done[0]["keep"].as_str().unwrap()));
    let mut pair = [copy.file_name().unwrap().to_owned(), keep.file_name().unwrap().to_owned()];
    pair.sort();
    assert_eq!(pair, ["coffee-copy.jpg", "coffee.jpg"], "the byte-identical pair");
    assert!(actions
        .iter()
        .filter(|a| a["status"] != "done")
        .all(|a| a["status"] == "skipped" && a["reason"].as_str().unwrap().contains("not byte-identical")));
    assert_eq!(std::fs::metadata(&copy).unwrap().ino(), std::fs::metadata(&keep).unwrap().ino());
    assert_eq!(
        snapshot(&photos).into_iter().map(|(p, f)| (p, f.0)).collect::<Vec<_>>(),
        before.iter().map(|(p, f)| (p.clone(), f.0.clone())).collect::<Vec<_>>(),
        "same bytes at every path"
    );

    let undo = twinscan(&["undo", journal.to_str().unwrap()]);
    assert_eq!(undo.status.code(), Some(0), "{}", String::from_utf8_lossy(&undo.stderr));
    assert_ne!(std::fs::metadata(&copy).unwrap().ino(), std::fs::metadata(&keep).unwrap().ino());
    assert_eq!(snapshot(&photos), before, "a file of its own again, with its mode and time");
}

#[test]
fn a_quarantine_inside_the_scanned_folder_or_apply_without_an_action_is_refused() {
    let (dir, photos) = tree();
    let index = dir.path().join("i.twinscan");
    let inside = photos.join("q");
    let out = scan(&photos, &index, &["--quarantine", inside.to_str().unwrap(), "--apply"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("inside the scanned folder"));
    let out = scan(&photos, &index, &["--apply"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--apply needs an action"));
    assert!(!inside.exists());
}
