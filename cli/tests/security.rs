//! What an attacker tried on the release build: forged undo journals, links planted where
//! twinscan writes temporary files or quarantines images, FIFOs and devices where it reads, stale
//! temporary files. Each test runs the binary on a temporary tree and checks that nothing outside
//! what the user named was touched.

mod common;

use std::os::unix::fs::{symlink, MetadataExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};
use std::process::Output;

use common::{of_type, photos, records, s, stderr, twinscan, twinscan_within};
use sha2::{Digest, Sha256};

fn sha(bytes: &[u8]) -> String {
    Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

/// A folder's real path (the journal records resolved paths).
fn real(p: &Path) -> PathBuf {
    std::fs::canonicalize(p).unwrap()
}

/// Where quarantine `q` keeps the image at absolute `path`.
fn quarantined(q: &Path, path: &Path) -> PathBuf {
    let mut to = q.to_path_buf();
    to.extend(path.components().filter(|c| matches!(c, Component::Normal(_))));
    to
}

/// A journal as an attacker writes it: mode 0600, owned by the user running undo.
fn write_journal(path: &Path, lines: &[serde_json::Value]) {
    let text: String = lines.iter().map(|l| format!("{l}\n")).collect();
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
}

fn undo(journal: &Path) -> Output {
    twinscan(&["undo", "--json", s(journal)])
}

fn scan(dir: &Path, photos: &Path, extra: &[&str]) -> Output {
    let index = dir.join("i.twinscan");
    let mut args = vec!["scan", "--json", "--index", s(&index)];
    args.extend(extra);
    args.push(s(photos));
    twinscan(&args)
}

/// The journal path a `scan --apply --json` run reports.
fn journal_of(out: &Output) -> PathBuf {
    PathBuf::from(of_type(&records(out), "journal")[0]["path"].as_str().unwrap())
}

#[test]
fn a_version_1_journal_that_would_create_move_and_re_mode_files_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let d = real(dir.path());
    // Create a file anywhere (its parents too), from a file in a folder the attacker writes.
    let planted = d.join("attacker/payload");
    std::fs::create_dir_all(planted.parent().unwrap()).unwrap();
    std::fs::write(&planted, b"payload").unwrap();
    let created = d.join("victim/new/folder/file");
    // Move any file whose hash is known somewhere else.
    let secret = d.join("secret.txt");
    std::fs::write(&secret, b"secret").unwrap();
    let taken = d.join("attacker/taken");
    // Give a file the setuid bit: a hard link pair the attacker names.
    let keep = d.join("keep.bin");
    std::fs::write(&keep, b"linked").unwrap();
    let linked = d.join("linked.bin");
    std::fs::hard_link(&keep, &linked).unwrap();
    let journal = d.join("forged.jsonl");
    write_journal(
        &journal,
        &[
            serde_json::json!({"op": "journal", "version": 1}),
            serde_json::json!({"op": "move", "from": s(&created), "to": s(&planted), "sha256": sha(b"payload")}),
            serde_json::json!({"op": "move", "from": s(&taken), "to": s(&secret), "sha256": sha(b"secret")}),
            serde_json::json!({"op": "link", "path": s(&linked), "keep": s(&keep), "sha256": sha(b"linked"),
                "mode": 0o104755, "modified_ns": 0}),
        ],
    );
    let out = undo(&journal);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("version 1"), "{}", stderr(&out));
    assert!(!d.join("victim").exists(), "no file or folder created");
    assert_eq!(std::fs::read(&secret).unwrap(), b"secret", "nothing moved");
    assert!(!taken.exists());
    assert_eq!(std::fs::metadata(&linked).unwrap().mode() & 0o7000, 0, "no setuid bit");
    assert_eq!(std::fs::metadata(&linked).unwrap().ino(), std::fs::metadata(&keep).unwrap().ino());
}

/// A real quarantine journal of the example photos, and what it recorded.
struct Quarantined {
    dir: tempfile::TempDir,
    photos: PathBuf,
    quarantine: PathBuf,
    journal: PathBuf,
}

fn quarantine_run() -> Quarantined {
    let dir = tempfile::tempdir().unwrap();
    let photos = real(&photos(dir.path()));
    let quarantine = real(dir.path()).join("q");
    let out = scan(dir.path(), &photos, &["--quarantine", s(&quarantine), "--apply"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let journal = journal_of(&out);
    Quarantined { dir, photos, quarantine, journal }
}

fn journal_lines(journal: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(journal).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

#[test]
fn a_journal_entry_that_leaves_the_quarantine_or_the_scanned_folders_refuses_the_journal() {
    let q = quarantine_run();
    let d = real(q.dir.path());
    let lines = journal_lines(&q.journal);
    assert_eq!(lines[0]["version"], 2);
    assert_eq!(lines[0]["quarantine"], s(&q.quarantine));
    assert_eq!(lines[0]["roots"][0], s(&q.photos));
    let good = &lines[1];

    // A file with a known hash put where an entry's target would be.
    let outside = d.join("elsewhere/new.jpg");
    let payload = quarantined(&q.quarantine, &outside);
    std::fs::create_dir_all(payload.parent().unwrap()).unwrap();
    std::fs::write(&payload, b"payload").unwrap();
    let victim = d.join("victim.jpg");
    std::fs::write(&victim, b"victim").unwrap();
    let into_photos = q.photos.join("sub/new.jpg");

    let relabel = |name: &str, edit: &dyn Fn(&mut serde_json::Value)| {
        let mut forged = good.clone();
        edit(&mut forged);
        let journal = d.join(format!("{name}.jsonl"));
        write_journal(&journal, &[lines[0].clone(), forged]);
        journal
    };
    let cases = [
        (
            relabel("outside", &|r| {
                r["from"] = s(&outside).into();
                r["to"] = s(&payload).into();
                r["sha256"] = sha(b"payload").into();
            }),
            "outside the scanned folders",
        ),
        (
            relabel("not-its-quarantine-path", &|r| {
                r["from"] = s(&into_photos).into();
                r["to"] = s(&victim).into();
                r["sha256"] = sha(b"victim").into();
            }),
            "not the quarantine path",
        ),
        (
            relabel("dot-dot", &|r| {
                let from = format!("{}/../elsewhere/new.jpg", s(&q.photos));
                r["to"] = s(&quarantined(&q.quarantine, Path::new(&from))).into();
                r["from"] = from.into();
            }),
            "not a plain absolute path",
        ),
        (
            relabel("own-keep", &|r| {
                r["keep"] = r["from"].clone();
            }),
            "its own kept image",
        ),
        (
            relabel("relative", &|r| {
                r["from"] = "photos/a.jpg".into();
            }),
            "not a plain absolute path",
        ),
    ];
    for (journal, reason) in &cases {
        let out = undo(journal);
        assert_eq!(out.status.code(), Some(2), "{}: {}", journal.display(), stderr(&out));
        assert!(stderr(&out).contains(reason), "{}: {}", journal.display(), stderr(&out));
        assert!(out.stdout.is_empty(), "refused before anything was touched");
    }
    assert!(!outside.exists() && !d.join("elsewhere").exists());
    assert!(!into_photos.exists() && !q.photos.join("sub").exists());
    assert_eq!(std::fs::read(&victim).unwrap(), b"victim");
    assert_eq!(std::fs::read(&payload).unwrap(), b"payload");

    // A header that moves the quarantine into a scanned folder.
    let mut header = lines[0].clone();
    header["quarantine"] = s(&q.photos.join("q")).into();
    let journal = d.join("quarantine-inside.jsonl");
    write_journal(&journal, &[header, good.clone()]);
    let out = undo(&journal);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("inside a scanned folder"), "{}", stderr(&out));

    // The genuine journal is still undone, but not while others may write it.
    std::fs::set_permissions(&q.journal, std::fs::Permissions::from_mode(0o666)).unwrap();
    let out = undo(&q.journal);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("writable by other users"), "{}", stderr(&out));
    std::fs::set_permissions(&q.journal, std::fs::Permissions::from_mode(0o600)).unwrap();
    let out = undo(&q.journal);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(of_type(&records(&out), "restored").len(), 6);
}

#[test]
fn undo_gives_a_restored_file_its_permission_bits_only() {
    let dir = tempfile::tempdir().unwrap();
    let photos = photos(dir.path());
    let journal = real(dir.path()).join("links.jsonl");
    let out = scan(dir.path(), &photos, &["--hardlink", "--apply", "--journal", s(&journal)]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let mut lines = journal_lines(&journal);
    assert_eq!(lines[1]["op"], "link");
    lines[1]["mode"] = 0o106755.into();
    write_journal(&journal, &lines);
    let out = undo(&journal);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let path = PathBuf::from(lines[1]["path"].as_str().unwrap());
    assert_eq!(std::fs::metadata(&path).unwrap().mode() & 0o7777, 0o755);
    assert_eq!(std::fs::metadata(&path).unwrap().nlink(), 1, "a file of its own again");
}

#[test]
fn a_link_planted_at_the_old_restore_temp_name_is_not_written_through() {
    let dir = tempfile::tempdir().unwrap();
    let photos = photos(dir.path());
    let journal = dir.path().join("links.jsonl");
    let out = scan(dir.path(), &photos, &["--hardlink", "--apply", "--journal", s(&journal)]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let linked = PathBuf::from(journal_lines(&journal)[1]["path"].as_str().unwrap());
    let victim = dir.path().join("victim.txt");
    std::fs::write(&victim, b"victim").unwrap();
    let name = linked.file_name().unwrap().to_str().unwrap();
    let planted = linked.with_file_name(format!(".{name}.twinscan-restore"));
    symlink(&victim, &planted).unwrap();

    let out = undo(&journal);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(std::fs::read(&victim).unwrap(), b"victim");
    let meta = std::fs::symlink_metadata(&linked).unwrap();
    assert!(meta.is_file() && meta.nlink() == 1, "a regular file of its own, not the planted link");
    assert!(std::fs::symlink_metadata(&planted).unwrap().is_symlink(), "the planted link left as it was");
}

#[test]
fn a_cross_device_quarantine_copies_through_no_planted_link() {
    let dir = tempfile::tempdir().unwrap();
    let photos = real(&photos(dir.path()));
    let Some(shm) = common::other_file_system(&photos) else { return };
    let quarantine = real(shm.path()).join("q");
    let victim = dir.path().join("victim.txt");
    std::fs::write(&victim, b"victim").unwrap();
    // Today's plan shows each target; a link waits at every old temporary name.
    let plan = scan(dir.path(), &photos, &["--quarantine", s(&quarantine)]);
    for action in of_type(&records(&plan), "action") {
        let to = PathBuf::from(action["to"].as_str().unwrap());
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        let name = to.file_name().unwrap().to_str().unwrap();
        symlink(&victim, to.with_file_name(format!(".{name}.twinscan-copy"))).unwrap();
    }
    let before: Vec<_> = std::fs::read_dir(&photos).unwrap().map(|e| e.unwrap().path()).collect();
    let out = scan(dir.path(), &photos, &["--quarantine", s(&quarantine), "--apply"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let r = records(&out);
    let done = of_type(&r, "action");
    assert!(done.iter().all(|a| a["status"] == "done"), "{done:?}");
    assert_eq!(std::fs::read(&victim).unwrap(), b"victim");
    for a in &done {
        let to = Path::new(a["to"].as_str().unwrap());
        assert!(std::fs::symlink_metadata(to).unwrap().is_file());
    }
    let out = undo(&journal_of(&out));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let after: Vec<_> = std::fs::read_dir(&photos).unwrap().map(|e| e.unwrap().path()).collect();
    assert_eq!(after.len(), before.len());
    assert_eq!(std::fs::read(&victim).unwrap(), b"victim");
}

#[test]
fn a_lock_file_that_is_a_link_is_refused_and_not_followed() {
    let dir = tempfile::tempdir().unwrap();
    let photos = photos(dir.path());
    let target = dir.path().join("made-through-the-link");
    symlink(&target, dir.path().join("i.twinscan.lock")).unwrap();
    let out = scan(dir.path(), &photos, &[]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("symbolic link"), "{}", stderr(&out));
    assert!(!target.exists());
}

#[test]
fn a_link_inside_the_quarantine_does_not_take_images_out_of_it() {
    let dir = tempfile::tempdir().unwrap();
    let photos = real(&photos(dir.path()));
    let quarantine = real(dir.path()).join("q");
    let outside = real(dir.path()).join("outside");
    std::fs::create_dir_all(&outside).unwrap();
    // q/<first component of the photos' path> -> outside
    let first = photos.components().find_map(|c| match c {
        Component::Normal(n) => Some(n.to_owned()),
        _ => None,
    });
    std::fs::create_dir_all(&quarantine).unwrap();
    symlink(&outside, quarantine.join(first.unwrap())).unwrap();
    let before = std::fs::read_dir(&photos).unwrap().count();
    let out = scan(dir.path(), &photos, &["--quarantine", s(&quarantine), "--apply"]);
    assert_eq!(out.status.code(), Some(2), "an action failed: {}", stderr(&out));
    let r = records(&out);
    let actions = of_type(&r, "action");
    assert!(
        actions.iter().all(|a| a["status"] == "failed" && a["reason"].as_str().unwrap().contains("symbolic link")),
        "{actions:?}"
    );
    assert_eq!(std::fs::read_dir(&outside).unwrap().count(), 0, "nothing moved through the link");
    assert_eq!(std::fs::read_dir(&photos).unwrap().count(), before, "every image still in place");
}

/// A FIFO in `dir` (nothing ever writes to it: reading it would wait forever).
fn fifo(dir: &Path) -> PathBuf {
    let path = dir.join("fifo.jpg");
    let made = std::process::Command::new("mkfifo").arg(&path).status().unwrap();
    assert!(made.success());
    path
}

#[test]
fn fifos_and_devices_named_on_the_command_line_are_refused_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = fifo(dir.path());
    let model = common::model(dir.path(), 1);
    let photo = common::examples().join("coffee.jpg");
    let (fifo, zero, model, photo) = (s(&fifo), "/dev/zero", s(&model), s(&photo));
    let runs: [&[&str]; 9] = [
        &["embed", "--model", model, fifo],
        &["embed", "--model", model, zero],
        &["compare", "--model", model, photo, zero],
        &["info", "--model", fifo],
        &["info", "--model", zero],
        &["undo", fifo],
        &["undo", zero],
        &["query", "--index", fifo, photo],
        &["gallery", "list", "--gallery", zero],
    ];
    for args in runs {
        let out = twinscan_within(60, dir.path(), args).unwrap_or_else(|| panic!("{args:?} hung"));
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
        let text = format!("{}{}", stderr(&out), String::from_utf8_lossy(&out.stdout));
        assert!(text.contains("not a regular file"), "{args:?}: {text}");
    }
}

#[test]
fn journal_paths_are_absolute_so_undo_works_from_any_folder_and_says_when_nothing_came_back() {
    let dir = tempfile::tempdir().unwrap();
    let photos = photos(dir.path());
    let before = std::fs::read_dir(&photos).unwrap().count();
    let out = twinscan_within(
        300,
        dir.path(),
        &["scan", "--json", "--index", "i.twinscan", "--quarantine", "q", "--apply", "--journal", "j.jsonl", "photos"],
    )
    .expect("scan finished");
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let journal = journal_of(&out);
    assert_eq!(journal, real(dir.path()).join("j.jsonl"), "the journal's path is reported absolute");
    assert_eq!(std::fs::read_dir(&photos).unwrap().count(), before - 6);

    // The quarantine moved away: nothing can be restored, and undo says so with its exit code.
    std::fs::rename(dir.path().join("q"), dir.path().join("q-moved")).unwrap();
    let elsewhere = tempfile::tempdir().unwrap();
    let out = twinscan_within(60, elsewhere.path(), &["undo", "--json", s(&journal)]).unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert_eq!(of_type(&records(&out), "skipped").len(), 6);

    std::fs::rename(dir.path().join("q-moved"), dir.path().join("q")).unwrap();
    let out = twinscan_within(60, elsewhere.path(), &["undo", "--json", s(&journal)]).unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(of_type(&records(&out), "restored").len(), 6);
    assert_eq!(std::fs::read_dir(&photos).unwrap().count(), before);
}

/// The pid of a process that has ended.
fn dead_pid() -> u32 {
    let mut child = std::process::Command::new("true").spawn().unwrap();
    let pid = child.id();
    child.wait().unwrap();
    pid
}

#[test]
fn stale_temporary_files_of_dead_saves_are_swept_and_nothing_else() {
    let dir = tempfile::tempdir().unwrap();
    let photos = photos(dir.path());
    let out = scan(dir.path(), &photos, &[]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let dead = dead_pid();
    let at = |name: String| dir.path().join(name);
    let stale = [at(format!(".i.twinscan.twinscan-{dead}-0123456789abcdef")), at(format!("i.twinscan.tmp{dead}"))];
    for p in &stale {
        std::fs::write(p, b"half an index").unwrap();
    }
    let live = at(format!(".i.twinscan.twinscan-{}-0123456789abcdef", std::process::id()));
    std::fs::write(&live, b"a save in progress").unwrap();
    let victim = dir.path().join("victim.txt");
    std::fs::write(&victim, b"victim").unwrap();
    let link = at(format!(".i.twinscan.twinscan-{dead}-fedcba9876543210"));
    symlink(&victim, &link).unwrap();
    let other = at(format!(".other.twinscan.twinscan-{dead}-0123456789abcdef"));
    std::fs::write(&other, b"another file's").unwrap();

    let out = scan(dir.path(), &photos, &[]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    for p in &stale {
        assert!(!p.exists(), "{} swept", p.display());
    }
    assert!(live.exists(), "a live process's temporary file is left");
    assert!(other.exists(), "another file's temporary files are left");
    assert!(std::fs::symlink_metadata(&link).unwrap().is_symlink(), "a link is neither followed nor removed");
    assert_eq!(std::fs::read(&victim).unwrap(), b"victim");
}
