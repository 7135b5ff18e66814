//! What the attack on the release build found beyond security holes: one file reached by two
//! paths, interrupted actions, lost metadata, indexes and models that pass their checksum but
//! hold what nothing writes, misleading errors and unescaped output. Each test runs the binary.

mod common;

use std::path::{Path, PathBuf};
use std::process::Output;

use common::{of_type, photos, records, s, stderr, twinscan};
use twinscan::index::Index;

fn scan(index: &Path, roots: &[&Path], extra: &[&str]) -> Output {
    let mut args = vec!["scan", "--json", "--index", s(index)];
    args.extend(extra);
    args.extend(roots.iter().map(|r| s(r)));
    twinscan(&args)
}

fn summary(out: &Output) -> serde_json::Value {
    of_type(&records(out), "summary")[0].clone()
}

#[test]
fn an_index_with_empty_nan_or_short_embeddings_is_refused_naming_the_entry() {
    let dir = tempfile::tempdir().unwrap();
    let photos = photos(dir.path());
    let index = dir.path().join("i.twinscan");
    let out = scan(&index, &[&photos], &[]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let good = Index::load(&index).unwrap();
    type Damage = fn(&mut Index);
    let cases: [(&str, Damage); 3] = [
        ("empty embedding", |i| i.entries.iter_mut().for_each(|e| e.embedding.clear())),
        ("non-finite", |i| i.entries[3].embedding[0] = f32::NAN),
        ("embedding of 5 values", |i| i.entries[3].embedding.truncate(5)),
    ];
    for (reason, damage) in cases {
        let mut bad = good.clone();
        damage(&mut bad);
        let path = dir.path().join("bad.twinscan");
        bad.save(&path).unwrap();
        let out = scan(&path, &[&photos], &[]);
        assert_eq!(out.status.code(), Some(2), "{reason}: {}", stderr(&out));
        assert!(stderr(&out).contains(reason), "{reason}: {}", stderr(&out));
        let first = if reason == "empty embedding" { 0 } else { 3 };
        assert!(stderr(&out).contains(s(&good.entries[first].path)), "names the entry: {}", stderr(&out));
        assert!(out.stdout.is_empty(), "no group reported from a refused index");
    }
}

#[test]
fn an_index_inside_the_scanned_folder_hides_only_its_own_files() {
    let dir = tempfile::tempdir().unwrap();
    let photos = photos(dir.path());
    let images = std::fs::read_dir(&photos).unwrap().count();
    // An index named `c` beside coffee.jpg, coffee-copy.jpg, coffee-edited.jpg and chelsea.jpg.
    let index = photos.join("c");
    for _ in 0..2 {
        let out = scan(&index, &[&photos], &[]);
        assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
        let s = summary(&out);
        assert_eq!(s["files"], images, "every image, and not the index or its lock: {s}");
    }
}

/// Runs twinscan with writes limited to `blocks` KiB blocks per file (as a full disk would
/// stop them; SIGXFSZ ignored so that a write fails instead of killing the process).
fn twinscan_with_file_limit(blocks: u32, args: &[&str]) -> Output {
    let script = format!("trap '' XFSZ; ulimit -f {blocks}; exec \"$0\" \"$@\"");
    std::process::Command::new("sh")
        .arg("-c")
        .arg(script)
        .arg(env!("CARGO_BIN_EXE_twinscan"))
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn a_write_that_fails_says_why_and_leaves_no_empty_journal() {
    let dir = tempfile::tempdir().unwrap();
    let photos = photos(dir.path());
    let index = dir.path().join("i.twinscan");
    let out = twinscan_with_file_limit(0, &["scan", "--index", s(&index), s(&photos)]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("File too large"), "the system's reason, not the encoder's: {}", stderr(&out));
    assert!(!stderr(&out).contains("buffer"), "{}", stderr(&out));

    let out = scan(&index, &[&photos], &[]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let journal = dir.path().join("j.jsonl");
    let q = dir.path().join("q");
    let args = ["scan", "--index", s(&index), "--quarantine", s(&q), "--apply", "--journal", s(&journal), s(&photos)];
    let out = twinscan_with_file_limit(0, &args);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("File too large"), "{}", stderr(&out));
    assert!(!journal.exists(), "no zero-byte journal left behind");
    assert_eq!(std::fs::read_dir(&photos).unwrap().count(), 11, "nothing moved without a journal");
}

/// A gallery of the example photos under the built-in model: one label per picture.
fn enrolled(dir: &Path) -> PathBuf {
    let photos = photos(dir);
    let gallery = dir.join("people.twg");
    for name in ["coffee", "rocket"] {
        let out = twinscan(&["gallery", "enroll", "-g", s(&gallery), name, s(&photos.join(format!("{name}.jpg")))]);
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    }
    gallery
}

#[test]
fn labels_with_bidirectional_or_invisible_characters_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let gallery = enrolled(dir.path());
    let photo = common::examples().join("chelsea.jpg");
    for label in ["admin\u{202E}nimda", "\u{2066}root\u{2069}", "ali\u{200B}ce", "bob\u{7}"] {
        let out = twinscan(&["gallery", "enroll", "-g", s(&gallery), label, s(&photo)]);
        assert_eq!(out.status.code(), Some(2), "{label:?}: {}", stderr(&out));
        assert!(stderr(&out).contains("characters"), "{label:?}: {}", stderr(&out));
    }
    let out = twinscan(&["gallery", "list", "-g", s(&gallery), "--json"]);
    assert_eq!(of_type(&records(&out), "label").len(), 2, "nothing enrolled");
}

#[test]
fn a_saved_threshold_looser_than_the_models_is_shown_and_warned_about() {
    let dir = tempfile::tempdir().unwrap();
    let gallery = enrolled(dir.path());
    let mut g = twinscan::gallery::Gallery::load(&gallery).unwrap();
    g.set_threshold(Some(3e38)).unwrap();
    g.save(&gallery).unwrap();

    let out = twinscan(&["gallery", "list", "-g", s(&gallery), "--json"]);
    let r = records(&out);
    let shown = of_type(&r, "gallery")[0]["threshold"].as_f64().expect("the saved threshold shown");
    assert!((shown / 3e38 - 1.0).abs() < 1e-6, "{shown}");
    let probe = common::examples().join("chelsea.jpg");
    let out = twinscan(&["gallery", "identify", "-g", s(&gallery), "--json", s(&probe)]);
    assert!(stderr(&out).contains("looser than the model's calibrated"), "{}", stderr(&out));
    // An explicit threshold replaces it, and then there is nothing to warn about.
    let out = twinscan(&["gallery", "identify", "-g", s(&gallery), "--threshold", "0.1", "--json", s(&probe)]);
    assert!(!stderr(&out).contains("looser"), "{}", stderr(&out));
    assert_eq!(out.status.code(), Some(0), "a cat is neither coffee nor a rocket: {}", stderr(&out));
}

/// A folder holding copies of coffee.jpg under hostile names (and, in `extra`, other files).
fn named_copies(dir: &Path, names: &[&std::ffi::OsStr]) -> PathBuf {
    let folder = dir.join("names");
    std::fs::create_dir(&folder).unwrap();
    for name in names {
        std::fs::copy(common::examples().join("coffee.jpg"), folder.join(name)).unwrap();
    }
    folder
}

#[test]
fn file_names_cannot_forge_output_lines_drive_the_terminal_or_run_in_a_spreadsheet() {
    use std::ffi::OsStr;
    let dir = tempfile::tempdir().unwrap();
    let folder = named_copies(
        dir.path(),
        &[OsStr::new("a.jpg"), OsStr::new("b\n  keep  shadow (1x1).jpg"), OsStr::new("\u{1b}[2J\u{1b}[31mred.jpg")],
    );
    let index = dir.path().join("i.twinscan");
    let out = twinscan(&["scan", "--index", s(&index), s(&folder)]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(!text.lines().any(|l| l.trim_start().starts_with("keep  shadow")), "{text}");
    assert!(text.contains("b\\n  keep  shadow"), "the newline shown escaped: {text}");
    assert!(!text.contains('\u{1b}') && text.contains("\\u{1b}[2J"), "{text}");
    assert_eq!(
        text.lines().filter(|l| l.trim_start().starts_with("keep") || l.trim_start().starts_with("exact")).count(),
        3
    );

    // A folder named like a formula, scanned by a relative path: its cells start with `=`.
    std::fs::rename(&folder, dir.path().join("=SUM(1)")).unwrap();
    let out = common::twinscan_within(300, dir.path(), &["scan", "--csv", "--index", s(&index), "=SUM(1)"]).unwrap();
    let csv = String::from_utf8(out.stdout).unwrap();
    assert!(csv.contains("'=SUM(1)/a.jpg"), "{csv}");
    assert!(!csv.lines().any(|l| l.split(',').any(|cell| cell.trim_start_matches('"').starts_with('='))), "{csv}");
}

#[cfg(target_os = "linux")]
#[test]
fn a_name_that_is_not_utf8_stays_apart_from_its_replacement_character_twin() {
    use std::os::unix::ffi::OsStrExt;
    let dir = tempfile::tempdir().unwrap();
    let raw = std::ffi::OsStr::from_bytes(b"tw\xffin.jpg");
    let twin = std::ffi::OsStr::new("tw\u{fffd}in.jpg");
    let folder = named_copies(dir.path(), &[raw, twin]);
    let index = dir.path().join("i.twinscan");
    let out = scan(&index, &[&folder], &[]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let r = records(&out);
    let group = of_type(&r, "group")[0].clone();
    let mut all = group["members"].as_array().unwrap().clone();
    all.iter_mut().for_each(|m| m["keep"] = serde_json::Value::Null);
    let bytes: Vec<_> = all.iter().map(|m| m["path_bytes"].clone()).collect();
    assert_eq!(bytes.iter().filter(|b| b.is_null()).count(), 1, "only the non-UTF-8 name carries its bytes: {all:?}");
    let exact: Vec<u8> = folder.join(raw).as_os_str().as_bytes().to_vec();
    assert!(bytes.contains(&serde_json::json!(exact)), "{all:?}");

    let out = twinscan(&["scan", "--index", s(&index), s(&folder)]);
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("tw\\xffin.jpg") && text.contains("tw\u{fffd}in.jpg"), "{text}");
}

#[test]
fn empty_marker_files_are_not_errors_and_tga_images_are_read() {
    let dir = tempfile::tempdir().unwrap();
    let photos = photos(dir.path());
    std::fs::write(photos.join(".nomedia"), b"").unwrap();
    std::fs::write(photos.join(".gitkeep"), b"").unwrap();
    std::fs::write(photos.join("empty.jpg"), b"").unwrap();
    twinscan::image::open(photos.join("rocket.jpg")).unwrap().to_rgb8().save(photos.join("rocket.tga")).unwrap();
    let out = scan(&dir.path().join("i.twinscan"), &[&photos], &[]);
    let r = records(&out);
    let errors: Vec<_> = of_type(&r, "error").into_iter().map(|e| e["path"].as_str().unwrap().to_string()).collect();
    assert_eq!(errors, [s(&photos.join("empty.jpg"))], "only the empty file that claims to be an image");
    let sum = summary(&out);
    assert_eq!(sum["not_images"], 2, "the two markers: {sum}");
    let tga = s(&photos.join("rocket.tga")).to_string();
    let grouped =
        of_type(&r, "group").iter().any(|g| g["members"].as_array().unwrap().iter().any(|m| m["path"] == tga));
    assert!(grouped, "the TGA copy of rocket.jpg joins its group");
}

#[test]
fn outliers_with_a_huge_k_use_every_other_image() {
    let dir = tempfile::tempdir().unwrap();
    let photos = photos(dir.path());
    let index = dir.path().join("i.twinscan");
    let huge = usize::MAX.to_string();
    let out = twinscan(&["outliers", "--json", "--index", s(&index), "--top", "1", "--k", &huge, s(&photos)]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let all = twinscan(&["outliers", "--json", "--index", s(&index), "--top", "1", "--k", "10", s(&photos)]);
    assert_eq!(
        of_type(&records(&out), "outlier"),
        of_type(&records(&all), "outlier"),
        "k beyond the images = all of them"
    );
}

/// Starts twinscan and sends it one SIGINT as soon as it handles the signal (read from
/// /proc, so the test does not guess at timing); returns its output.
#[cfg(target_os = "linux")]
fn interrupted(args: &[&str]) -> Output {
    use std::process::{Command, Stdio};
    let child = Command::new(env!("CARGO_BIN_EXE_twinscan"))
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let status = format!("/proc/{}/status", child.id());
    let catches_sigint = || {
        std::fs::read_to_string(&status).ok().and_then(|s| {
            let mask = s.lines().find_map(|l| l.strip_prefix("SigCgt:"))?.trim().to_string();
            u64::from_str_radix(&mask, 16).ok().map(|m| m & (1 << (2 - 1)) != 0)
        })
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while catches_sigint() != Some(true) {
        assert!(std::time::Instant::now() < deadline, "twinscan never handled SIGINT");
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    let sent = Command::new("kill").args(["-INT", &child.id().to_string()]).status().unwrap();
    assert!(sent.success());
    child.wait_with_output().unwrap()
}

#[cfg(target_os = "linux")]
#[test]
fn ctrl_c_during_a_scan_stops_before_any_action_with_exit_130() {
    let dir = tempfile::tempdir().unwrap();
    let photos = photos(dir.path());
    let index = dir.path().join("i.twinscan");
    assert_eq!(scan(&index, &[&photos], &[]).status.code(), Some(1));
    // New images, so that the second scan has embedding to do when Ctrl-C comes.
    let big = twinscan::image::open(photos.join("rocket.jpg")).unwrap().resize(
        2400,
        2400,
        twinscan::image::imageops::Triangle,
    );
    for i in 0..8 {
        big.save(photos.join(format!("big-{i}.png"))).unwrap();
    }
    let before = std::fs::read_dir(&photos).unwrap().count();
    let quarantine = dir.path().join("q");
    let out =
        interrupted(&["scan", "--json", "--index", s(&index), "--quarantine", s(&quarantine), "--apply", s(&photos)]);
    assert_eq!(out.status.code(), Some(130), "{}", stderr(&out));
    assert!(stderr(&out).contains("interrupted"), "{}", stderr(&out));
    assert_eq!(std::fs::read_dir(&photos).unwrap().count(), before, "nothing moved");
    assert!(of_type(&records(&out), "action").is_empty());
    assert_eq!(summary(&out)["interrupted"], true);
    // What was embedded before the interrupt is kept: the index still loads.
    Index::load(&index).unwrap();
}

#[cfg(unix)]
fn is_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    // A file we create belongs to our effective user.
    let probe = tempfile::tempfile().unwrap();
    probe.metadata().unwrap().uid() == 0
}

#[cfg(unix)]
#[test]
fn a_cross_device_quarantine_and_its_undo_keep_time_mode_and_owner() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let dir = tempfile::tempdir().unwrap();
    let photos = photos(dir.path());
    let Some(shm) = common::other_file_system(&photos) else { return };
    let then = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_000_000_000);
    let root = is_root();
    for e in std::fs::read_dir(&photos).unwrap() {
        let p = e.unwrap().path();
        std::fs::File::options().write(true).open(&p).unwrap().set_modified(then).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o640)).unwrap();
        if root {
            std::os::unix::fs::chown(&p, Some(4321), Some(4322)).unwrap();
        }
    }
    let attrs = |p: &Path| {
        let m = std::fs::metadata(p).unwrap();
        (m.modified().unwrap(), m.mode() & 0o7777, (m.uid(), m.gid()))
    };
    let expected = (then, 0o640, if root { (4321, 4322) } else { attrs(&photos.join("coffee.jpg")).2 });
    let index = dir.path().join("i.twinscan");
    let q = shm.path().join("q");
    let out = scan(&index, &[&photos], &["--quarantine", s(&q), "--apply"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let r = records(&out);
    let done = of_type(&r, "action");
    assert_eq!(done.len(), 6);
    for a in &done {
        assert_eq!(attrs(Path::new(a["to"].as_str().unwrap())), expected, "{a}");
    }
    let journal = of_type(&r, "journal")[0]["path"].as_str().unwrap().to_string();
    let out = twinscan(&["undo", &journal]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    for a in &done {
        assert_eq!(attrs(Path::new(a["path"].as_str().unwrap())), expected, "{a}");
    }
}

#[cfg(unix)]
#[test]
fn files_of_another_mode_or_owner_are_not_hard_linked_and_undo_gives_no_file_to_root() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let dir = tempfile::tempdir().unwrap();
    let photos = photos(dir.path());
    let (coffee, copy) = (photos.join("coffee.jpg"), photos.join("coffee-copy.jpg"));
    let index = dir.path().join("i.twinscan");
    let link = |journal: &str| {
        let journal = dir.path().join(journal);
        let out = scan(&index, &[&photos], &["--hardlink", "--apply", "--journal", s(&journal)]);
        assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
        let r = records(&out);
        let exact: Vec<_> = of_type(&r, "action").into_iter().filter(|a| a["op"] == "link").cloned().collect();
        (exact, journal)
    };
    std::fs::set_permissions(&copy, std::fs::Permissions::from_mode(0o600)).unwrap();
    let (exact, _) = link("mode.jsonl");
    assert_eq!(exact.len(), 1);
    assert_eq!(exact[0]["status"], "skipped", "{exact:?}");
    assert!(exact[0]["reason"].as_str().unwrap().contains("owner or mode differs"));
    assert_ne!(std::fs::metadata(&coffee).unwrap().ino(), std::fs::metadata(&copy).unwrap().ino());
    std::fs::set_permissions(&copy, std::fs::Permissions::from_mode(0o644)).unwrap();
    std::fs::set_permissions(&coffee, std::fs::Permissions::from_mode(0o644)).unwrap();
    if !is_root() {
        return;
    }
    std::os::unix::fs::chown(&copy, Some(4321), Some(4321)).unwrap();
    let (exact, _) = link("owner.jsonl");
    assert_eq!(exact[0]["status"], "skipped", "another owner: {exact:?}");
    std::os::unix::fs::chown(&coffee, Some(4321), Some(4321)).unwrap();
    let (exact, journal) = link("same.jsonl");
    assert_eq!(exact[0]["status"], "done", "{exact:?}");
    let out = twinscan(&["undo", s(&journal)]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    for p in [&coffee, &copy] {
        let m = std::fs::metadata(p).unwrap();
        assert_eq!((m.uid(), m.gid(), m.nlink()), (4321, 4321, 1), "{} stays its owner's", p.display());
    }
}

/// `lib/` with the example photos and `lib/2023/` holding one picture found nowhere else.
fn library(dir: &Path) -> (PathBuf, PathBuf) {
    let lib = dir.join("lib");
    std::fs::rename(photos(dir), &lib).unwrap();
    let year = lib.join("2023");
    std::fs::create_dir(&year).unwrap();
    std::fs::rename(lib.join("page.jpg"), year.join("page.jpg")).unwrap();
    (lib, year)
}

#[test]
fn one_file_reached_by_several_paths_is_never_its_own_copy() {
    let dir = tempfile::tempdir().unwrap();
    let (_, year) = library(dir.path());
    let index = dir.path().join("i.twinscan");
    let args = ["scan", "--json", "--index", s(&index), "--quarantine", "q", "--apply", "lib", "lib/2023", "./lib"];
    let out = common::twinscan_within(300, dir.path(), &args).expect("scan finished");
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(year.join("page.jpg").exists(), "the only copy stays");
    let r = records(&out);
    let moved = of_type(&r, "action");
    assert_eq!(moved.len(), 6, "the six real duplicates, nothing more: {moved:?}");
    assert!(moved.iter().all(|a| a["status"] == "done" && !a["path"].as_str().unwrap().contains("page")));
    assert_eq!(summary(&out)["files"], 11, "each file once");
}

#[cfg(unix)]
#[test]
fn with_follow_links_a_folder_link_adds_no_copies_and_a_file_link_moves_as_a_link() {
    use std::os::unix::fs::symlink;
    let dir = tempfile::tempdir().unwrap();
    let (lib, year) = library(dir.path());
    symlink("2023", lib.join("link-2023")).unwrap();
    symlink("coffee.jpg", lib.join("coffee-link.jpg")).unwrap();
    // A link to a copy of rocket.jpg outside the folder, newer, so rocket.jpg is kept.
    let outside = dir.path().join("outside");
    std::fs::create_dir(&outside).unwrap();
    std::fs::copy(lib.join("rocket.jpg"), outside.join("rocket-copy.jpg")).unwrap();
    let later = std::time::UNIX_EPOCH + std::time::Duration::from_secs(2_000_000_000);
    std::fs::File::options().write(true).open(outside.join("rocket-copy.jpg")).unwrap().set_modified(later).unwrap();
    symlink("../outside/rocket-copy.jpg", lib.join("rocket-alias.jpg")).unwrap();

    let index = dir.path().join("i.twinscan");
    let q = dir.path().join("q");
    let out = scan(&index, &[&lib], &["--follow-links", "--quarantine", s(&q), "--apply"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(year.join("page.jpg").exists(), "the only copy stays");
    let r = records(&out);
    let actions = of_type(&r, "action");
    assert!(actions.iter().all(|a| a["status"] == "done"), "{actions:?}");
    let alias =
        actions.iter().find(|a| a["path"].as_str().unwrap().ends_with("rocket-alias.jpg")).expect("the link moved");
    let moved = PathBuf::from(alias["to"].as_str().unwrap());
    assert_eq!(std::fs::read_link(&moved).unwrap(), Path::new("../outside/rocket-copy.jpg"), "moved as a link");
    assert!(outside.join("rocket-copy.jpg").exists(), "its target untouched");
    for a in &actions {
        let p = a["path"].as_str().unwrap();
        assert!(!p.contains("link-2023") && !p.ends_with("coffee-link.jpg"), "no second path of one file: {a}");
    }

    let journal = of_type(&r, "journal")[0]["path"].as_str().unwrap().to_string();
    let out = twinscan(&["undo", "--json", &journal]);
    assert_eq!(out.status.code(), Some(0), "{}{}", stderr(&out), String::from_utf8_lossy(&out.stdout));
    let back = lib.join("rocket-alias.jpg");
    assert_eq!(std::fs::read_link(&back).unwrap(), Path::new("../outside/rocket-copy.jpg"));
    assert!(std::fs::metadata(&back).is_ok(), "the relative link resolves again");
}

/// A 35-byte GIF claiming 32768 x 6103 pixels (just under the 200-megapixel limit): its decoder
/// takes 800 MB before it finds the data missing.
fn gif_bomb() -> Vec<u8> {
    let (w, h) = (32768u16.to_le_bytes(), 6103u16.to_le_bytes());
    let mut gif = b"GIF89a".to_vec();
    gif.extend([w[0], w[1], h[0], h[1], 0x80, 0, 0, 0, 0, 0, 0xff, 0xff, 0xff]);
    gif.extend([0x2c, 0, 0, 0, 0, w[0], w[1], h[0], h[1], 0, 2, 2, 0x4c, 0x01, 0, 0x3b]);
    gif
}

#[test]
fn decompression_bombs_on_many_threads_wait_their_turn_within_one_memory_budget() {
    let dir = tempfile::tempdir().unwrap();
    let photos = photos(dir.path());
    for i in 0..8 {
        std::fs::write(photos.join(format!("bomb-{i}.gif")), gif_bomb()).unwrap();
    }
    let index = dir.path().join("i.twinscan");
    // Eight decoding threads and 6 GB of address space: eight bombs at once need 6.4 GB.
    let script = "ulimit -v 6000000; exec \"$0\" \"$@\"";
    let out = std::process::Command::new("sh")
        .args(["-c", script, env!("CARGO_BIN_EXE_twinscan"), "scan", "--json", "--index", s(&index), s(&photos)])
        .env("RAYON_NUM_THREADS", "8")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "the scan finished: {}", stderr(&out));
    let r = records(&out);
    assert_eq!(of_type(&r, "error").len(), 8, "one error per bomb");
    assert_eq!(summary(&out)["embedded"], 11);
    assert_eq!(Index::load(&index).unwrap().entries.len(), 11, "the index was saved");
}
