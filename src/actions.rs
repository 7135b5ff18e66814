//! Acting on duplicate groups without losing anything: a [`plan`] first (what would happen to
//! which file), then [`apply`], which moves the images not kept into a quarantine folder or
//! replaces byte-identical copies by hard links to the kept image, and [`undo`], which puts
//! everything back. Nothing is ever deleted.
//!
//! Each file's SHA-256 is checked again just before acting on it, and a file that changed since
//! the scan is skipped. Every action is written to a journal (JSON Lines) and flushed to disk
//! *before* it is carried out, so a journal always covers what was done, even after a crash.
//! [`undo`] reads the file system rather than trusting the journal's order of events: it restores
//! what an entry changed, leaves alone what it finds already restored, and reports (without
//! touching anything) what it finds in a state it did not create.

use std::fs::{self, File, OpenOptions};
use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::path::{Component, Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::detect::Group;
use crate::error::{Error, Result};
use crate::index::Entry;

/// What to do with the images a group does not keep.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Move them under this folder, at their absolute path (`/photos/a.jpg` goes to
    /// `DIR/photos/a.jpg`), so names never collide and the origin stays readable.
    Quarantine(PathBuf),
    /// Replace byte-identical copies by hard links to the kept image (saves their space, keeps
    /// every path working). Near duplicates are skipped: a link would lose their bytes.
    HardLink,
}

/// One planned change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    /// 1-based group number, as the scan reports it.
    pub group: usize,
    /// The image acted on.
    pub path: PathBuf,
    /// The group's image to keep.
    pub keep: PathBuf,
    /// The image's SHA-256 at scan time; [`apply`] skips it if its bytes differ now.
    pub sha256: [u8; 32],
    /// What happens to it.
    pub op: Op,
}

/// What a [`Step`] does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// Move the image to this path.
    Move(PathBuf),
    /// Replace the image by a hard link to the kept one.
    Link,
    /// Leave it, for this reason.
    Skip(String),
}

/// What became of a step or of a journal entry.
#[derive(Debug)]
pub enum Outcome {
    /// Carried out (by [`apply`]) or restored (by [`undo`]).
    Done,
    /// Left alone, for this reason (nothing changed).
    Skipped(String),
    /// Tried and failed; the file is as it was.
    Failed(Error),
}

/// The steps that [`apply`] would take for `groups` of `entries` (the index the groups were
/// found in): one per image that a group does not keep.
pub fn plan(groups: &[Group], entries: &[Entry], action: &Action) -> Vec<Step> {
    let mut steps = Vec::new();
    for (g, group) in groups.iter().enumerate() {
        let keep = &entries[group.members[0].entry];
        for m in &group.members[1..] {
            let e = &entries[m.entry];
            let op = match action {
                Action::HardLink if !m.exact => {
                    Op::Skip("not byte-identical to the kept image: a hard link would lose its bytes".into())
                }
                Action::HardLink => Op::Link,
                Action::Quarantine(dir) => match quarantine_path(dir, &e.path) {
                    Ok(to) => Op::Move(to),
                    Err(reason) => Op::Skip(reason),
                },
            };
            steps.push(Step { group: g + 1, path: e.path.clone(), keep: keep.path.clone(), sha256: e.sha256, op });
        }
    }
    steps
}

fn quarantine_path(dir: &Path, path: &Path) -> std::result::Result<PathBuf, String> {
    let abs = fs::canonicalize(path).map_err(|e| format!("cannot resolve its path: {e}"))?;
    let mut to = dir.to_path_buf();
    to.extend(abs.components().filter(|c| matches!(c, Component::Normal(_))));
    Ok(to)
}

/// One journal line.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
enum Record {
    Journal { version: u32 },
    Move { from: JPath, to: JPath, sha256: String },
    Link { path: JPath, keep: JPath, sha256: String, mode: u32, modified_ns: u64 },
}

const JOURNAL_VERSION: u32 = 1;

/// A path in the journal: text when it is UTF-8, its raw bytes otherwise (Unix names are bytes).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(untagged)]
enum JPath {
    Text(String),
    Bytes(Vec<u8>),
}

impl From<&Path> for JPath {
    fn from(p: &Path) -> JPath {
        match p.to_str() {
            Some(s) => JPath::Text(s.into()),
            None => JPath::Bytes(p.as_os_str().as_encoded_bytes().to_vec()),
        }
    }
}

impl JPath {
    fn path(&self) -> Option<PathBuf> {
        match self {
            JPath::Text(s) => Some(PathBuf::from(s)),
            #[cfg(unix)]
            JPath::Bytes(b) => Some(PathBuf::from(<std::ffi::OsStr as std::os::unix::ffi::OsStrExt>::from_bytes(b))),
            #[cfg(not(unix))]
            JPath::Bytes(_) => None,
        }
    }
}

fn hex(hash: &[u8; 32]) -> String {
    hash.iter().map(|b| format!("{b:02x}")).collect()
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| Error::Io { path: path.to_path_buf(), source }
}

fn sha256_of(path: &Path) -> Result<[u8; 32]> {
    let mut file = File::open(path).map_err(io(path))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = file.read(&mut buf).map_err(io(path))?;
        if n == 0 {
            return Ok(hasher.finalize().into());
        }
        hasher.update(&buf[..n]);
    }
}

fn journal_error(path: &Path, reason: impl Into<String>) -> Error {
    Error::Journal { path: path.to_path_buf(), reason: reason.into() }
}

struct Journal {
    file: File,
    path: PathBuf,
}

impl Journal {
    fn create(path: &Path) -> Result<Journal> {
        let file = OpenOptions::new().write(true).create_new(true).open(path).map_err(io(path))?;
        let mut journal = Journal { file, path: path.to_path_buf() };
        journal.write(&Record::Journal { version: JOURNAL_VERSION })?;
        Ok(journal)
    }

    /// Appends a record and waits until it is on disk.
    fn write(&mut self, record: &Record) -> Result<()> {
        let mut line = serde_json::to_vec(record).map_err(|e| journal_error(&self.path, e.to_string()))?;
        line.push(b'\n');
        self.file.write_all(&line).map_err(io(&self.path))?;
        self.file.sync_data().map_err(io(&self.path))
    }
}

/// Carries out `steps` (from [`plan`]), writing `journal` (a new file; an existing one is never
/// overwritten). Returns one outcome per step; a step that fails or is skipped leaves its file
/// as it was and does not stop the others.
pub fn apply(steps: &[Step], journal: &Path) -> Result<Vec<Outcome>> {
    let mut journal = Journal::create(journal)?;
    let mut outcomes = Vec::with_capacity(steps.len());
    for step in steps {
        outcomes.push(match apply_step(step, &mut journal) {
            Ok(outcome) => outcome,
            Err(e) => Outcome::Failed(e),
        });
    }
    Ok(outcomes)
}

fn apply_step(step: &Step, journal: &mut Journal) -> Result<Outcome> {
    if let Op::Skip(reason) = &step.op {
        return Ok(Outcome::Skipped(reason.clone()));
    }
    if sha256_of(&step.path)? != step.sha256 {
        return Ok(Outcome::Skipped("changed since the scan".into()));
    }
    match &step.op {
        Op::Move(to) => {
            if fs::symlink_metadata(to).is_ok() {
                return Ok(Outcome::Skipped(format!("{} already exists", to.display())));
            }
            let parent = to.parent().ok_or_else(|| journal_error(to, "no parent folder"))?;
            fs::create_dir_all(parent).map_err(io(parent))?;
            let sha256 = hex(&step.sha256);
            journal.write(&Record::Move { from: step.path.as_path().into(), to: to.as_path().into(), sha256 })?;
            move_file(&step.path, to, &step.sha256)?;
        }
        Op::Link => {
            if same_file(&step.path, &step.keep) {
                return Ok(Outcome::Skipped("already a hard link to the kept image".into()));
            }
            if sha256_of(&step.keep)? != step.sha256 {
                return Ok(Outcome::Skipped(format!("{} changed since the scan", step.keep.display())));
            }
            let meta = fs::metadata(&step.path).map_err(io(&step.path))?;
            journal.write(&Record::Link {
                path: step.path.as_path().into(),
                keep: step.keep.as_path().into(),
                sha256: hex(&step.sha256),
                mode: mode(&meta),
                modified_ns: modified_ns(&meta),
            })?;
            let tmp = sibling(&step.path, "link");
            fs::hard_link(&step.keep, &tmp).map_err(io(&tmp))?;
            if let Err(e) = fs::rename(&tmp, &step.path) {
                let _ = fs::remove_file(&tmp);
                return Err(io(&step.path)(e));
            }
        }
        Op::Skip(_) => {}
    }
    Ok(Outcome::Done)
}

/// A temporary name beside `path`, for a file that replaces it by rename.
fn sibling(path: &Path, what: &str) -> PathBuf {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    path.with_file_name(format!(".{name}.twinscan-{what}"))
}

/// Renames `from` to `to`; across file systems, copies (checking the copy's hash), then removes
/// `from`.
fn move_file(from: &Path, to: &Path, sha256: &[u8; 32]) -> Result<()> {
    match fs::rename(from, to) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == ErrorKind::CrossesDevices => {
            let tmp = sibling(to, "copy");
            let copied = fs::copy(from, &tmp).map_err(io(&tmp)).and_then(|_| {
                File::open(&tmp).and_then(|f| f.sync_all()).map_err(io(&tmp))?;
                if sha256_of(&tmp)? != *sha256 {
                    return Err(journal_error(&tmp, "the copy differs from the original"));
                }
                fs::rename(&tmp, to).map_err(io(to))
            });
            if let Err(e) = copied {
                let _ = fs::remove_file(&tmp);
                return Err(e);
            }
            fs::remove_file(from).map_err(io(from))
        }
        Err(e) => Err(io(to)(e)),
    }
}

#[cfg(unix)]
fn mode(meta: &fs::Metadata) -> u32 {
    std::os::unix::fs::PermissionsExt::mode(&meta.permissions())
}

#[cfg(not(unix))]
fn mode(meta: &fs::Metadata) -> u32 {
    u32::from(meta.permissions().readonly())
}

fn modified_ns(meta: &fs::Metadata) -> u64 {
    meta.modified().ok().and_then(|t| t.duration_since(UNIX_EPOCH).ok()).map_or(0, |d| d.as_nanos() as u64)
}

#[cfg(unix)]
fn same_file(a: &Path, b: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (fs::metadata(a), fs::metadata(b)) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}

#[cfg(not(unix))]
fn same_file(_: &Path, _: &Path) -> bool {
    false
}

/// Restores what the journal at `path` records, newest first. Returns each entry's path and
/// outcome. Running it again changes nothing more.
pub fn undo(path: &Path) -> Result<Vec<(PathBuf, Outcome)>> {
    let file = File::open(path).map_err(io(path))?;
    let mut records = Vec::new();
    for (n, line) in BufReader::new(file).lines().enumerate() {
        let line = line.map_err(io(path))?;
        if line.trim().is_empty() {
            continue;
        }
        // A crash can cut the last line short; it was written before its action, so the action
        // never started.
        match serde_json::from_str::<Record>(&line) {
            Ok(r) => records.push(r),
            Err(e) if n == 0 => return Err(journal_error(path, format!("not a twinscan journal: {e}"))),
            Err(_) => continue,
        }
    }
    match records.first() {
        Some(Record::Journal { version: JOURNAL_VERSION }) => {}
        Some(Record::Journal { version }) => {
            return Err(journal_error(path, format!("journal version {version}, this build reads {JOURNAL_VERSION}")))
        }
        _ => return Err(journal_error(path, "not a twinscan journal: no header line")),
    }
    let mut outcomes = Vec::new();
    for record in records.iter().rev() {
        let unreadable = || journal_error(path, "a path this platform cannot represent");
        let (target, outcome) = match record {
            Record::Journal { .. } => continue,
            Record::Move { from, to, sha256 } => {
                let (from, to) = (from.path().ok_or_else(unreadable)?, to.path().ok_or_else(unreadable)?);
                let outcome = undo_move(&from, &to, sha256);
                (from, outcome)
            }
            Record::Link { path: p, keep, sha256, mode, modified_ns } => {
                let (p, keep) = (p.path().ok_or_else(unreadable)?, keep.path().ok_or_else(unreadable)?);
                let outcome = undo_link(&p, &keep, sha256, *mode, *modified_ns);
                (p, outcome)
            }
        };
        outcomes.push((target, outcome.unwrap_or_else(Outcome::Failed)));
    }
    Ok(outcomes)
}

fn has_hash(path: &Path, sha256: &str) -> bool {
    sha256_of(path).is_ok_and(|h| hex(&h) == sha256)
}

fn unhex(s: &str) -> Option<[u8; 32]> {
    let mut out = [0u8; 32];
    if s.len() != 64 {
        return None;
    }
    for (b, pair) in out.iter_mut().zip(s.as_bytes().chunks(2)) {
        *b = u8::from_str_radix(std::str::from_utf8(pair).ok()?, 16).ok()?;
    }
    Some(out)
}

fn undo_move(from: &Path, to: &Path, sha256: &str) -> Result<Outcome> {
    let from_exists = fs::symlink_metadata(from).is_ok();
    if from_exists && has_hash(from, sha256) {
        return Ok(Outcome::Skipped("already in place".into()));
    }
    if from_exists {
        return Ok(Outcome::Skipped(format!("another file now stands at its place; it is still at {}", to.display())));
    }
    if !has_hash(to, sha256) {
        return Ok(Outcome::Skipped(format!("{} is missing or changed; nothing restored", to.display())));
    }
    if let Some(parent) = from.parent().filter(|p| !p.as_os_str().is_empty()) {
        fs::create_dir_all(parent).map_err(io(parent))?;
    }
    let hash = unhex(sha256).ok_or_else(|| journal_error(to, format!("bad sha256 {sha256:?} in the journal")))?;
    move_file(to, from, &hash)?;
    Ok(Outcome::Done)
}

fn undo_link(path: &Path, keep: &Path, sha256: &str, mode: u32, modified_ns: u64) -> Result<Outcome> {
    if !same_file(path, keep) {
        return Ok(if has_hash(path, sha256) {
            Outcome::Skipped("already a file of its own".into())
        } else {
            Outcome::Skipped("no longer a link to the kept image; left as it is".into())
        });
    }
    if !has_hash(keep, sha256) {
        return Ok(Outcome::Skipped("the kept image changed since; its bytes are no longer this file's".into()));
    }
    let tmp = sibling(path, "restore");
    let restored = fs::copy(keep, &tmp).map_err(io(&tmp)).and_then(|_| {
        let file = OpenOptions::new().write(true).open(&tmp).map_err(io(&tmp))?;
        file.set_modified(UNIX_EPOCH + std::time::Duration::from_nanos(modified_ns)).map_err(io(&tmp))?;
        file.sync_all().map_err(io(&tmp))?;
        set_mode(&tmp, mode)?;
        fs::rename(&tmp, path).map_err(io(path))
    });
    if let Err(e) = restored {
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }
    Ok(Outcome::Done)
}

#[cfg(unix)]
fn set_mode(path: &Path, mode: u32) -> Result<()> {
    fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(mode)).map_err(io(path))
}

#[cfg(not(unix))]
fn set_mode(path: &Path, mode: u32) -> Result<()> {
    let mut p = fs::metadata(path).map_err(io(path))?.permissions();
    p.set_readonly(mode != 0);
    fs::set_permissions(path, p).map_err(io(path))
}

/// A journal name that sorts by time: `twinscan-journal-<seconds since 1970>.jsonl`.
pub fn journal_name() -> String {
    let secs = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    format!("twinscan-journal-{secs}.jsonl")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step(dir: &Path, name: &str, bytes: &[u8], op: Op) -> Step {
        let path = dir.join(name);
        fs::write(&path, bytes).unwrap();
        Step { group: 1, path, keep: dir.join("keep.png"), sha256: Sha256::digest(bytes).into(), op }
    }

    #[test]
    fn files_already_linked_are_left_as_they_are() {
        let dir = tempfile::tempdir().unwrap();
        let keep = dir.path().join("keep.png");
        fs::write(&keep, b"same").unwrap();
        let s = Step {
            group: 1,
            path: dir.path().join("b.png"),
            keep: keep.clone(),
            sha256: Sha256::digest(b"same").into(),
            op: Op::Link,
        };
        fs::hard_link(&keep, &s.path).unwrap();
        let journal = dir.path().join("j.jsonl");
        let out = apply(std::slice::from_ref(&s), &journal).unwrap();
        assert!(matches!(&out[0], Outcome::Skipped(r) if r.contains("already")), "{out:?}");
        assert!(undo(&journal).unwrap().is_empty(), "nothing journalled, nothing undone");
        assert!(same_file(&s.path, &keep));
    }

    #[test]
    fn a_file_changed_since_the_scan_is_skipped_and_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let to = dir.path().join("q/a.png");
        let s = step(dir.path(), "a.png", b"scanned", Op::Move(to.clone()));
        fs::write(&s.path, b"edited since").unwrap();
        let out = apply(std::slice::from_ref(&s), &dir.path().join("j.jsonl")).unwrap();
        assert!(matches!(&out[0], Outcome::Skipped(r) if r.contains("changed")), "{out:?}");
        assert_eq!(fs::read(&s.path).unwrap(), b"edited since");
        assert!(!to.exists());
    }

    #[test]
    fn undo_leaves_a_file_that_took_the_old_place_and_reports_it() {
        let dir = tempfile::tempdir().unwrap();
        let to = dir.path().join("q/a.png");
        let s = step(dir.path(), "a.png", b"original", Op::Move(to.clone()));
        let journal = dir.path().join("j.jsonl");
        assert!(matches!(apply(std::slice::from_ref(&s), &journal).unwrap()[0], Outcome::Done));
        fs::write(&s.path, b"a new file").unwrap();
        let out = undo(&journal).unwrap();
        assert!(matches!(&out[0].1, Outcome::Skipped(r) if r.contains("another file")), "{out:?}");
        assert_eq!(fs::read(&s.path).unwrap(), b"a new file");
        assert_eq!(fs::read(&to).unwrap(), b"original");
    }

    #[test]
    fn a_journal_cut_short_by_a_crash_still_undoes_what_it_records() {
        let dir = tempfile::tempdir().unwrap();
        let s = step(dir.path(), "a.png", b"original", Op::Move(dir.path().join("q/a.png")));
        let journal = dir.path().join("j.jsonl");
        apply(std::slice::from_ref(&s), &journal).unwrap();
        // The record of an action that never started, half written.
        let mut f = OpenOptions::new().append(true).open(&journal).unwrap();
        f.write_all(br#"{"op":"move","from":"/x/b.p"#).unwrap();
        let out = undo(&journal).unwrap();
        assert_eq!(out.len(), 1);
        assert!(matches!(out[0].1, Outcome::Done));
        assert_eq!(fs::read(&s.path).unwrap(), b"original");
    }

    #[test]
    fn an_existing_journal_is_never_overwritten_and_a_stranger_file_is_not_undone() {
        let dir = tempfile::tempdir().unwrap();
        let journal = dir.path().join("notes.txt");
        fs::write(&journal, "my notes\n").unwrap();
        assert!(matches!(apply(&[], &journal), Err(Error::Io { .. })));
        assert_eq!(fs::read_to_string(&journal).unwrap(), "my notes\n");
        assert!(matches!(undo(&journal), Err(Error::Journal { .. })));
    }
}
