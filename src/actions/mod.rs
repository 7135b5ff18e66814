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
//!
//! A journal can only ask for the reverse of what this module does: it records the quarantine
//! and the scanned folders, and [`undo`] refuses a journal whose entries leave them (see the
//! checks in `journal`). Below the folders a user named, every folder is opened without
//! following links and every temporary file is created new under an unguessable name, so a
//! link planted in a quarantine or beside an image redirects nothing.

mod journal;
mod transfer;

use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::detect::Group;
use crate::error::{Error, Result};
use journal::{hex, Record};
use transfer::{Attributes, Place};

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

/// What [`apply`] would do: the action, the scanned folders and one step per image not kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// The action, its quarantine made absolute.
    pub action: Action,
    /// The scanned folders, absolute and resolved; every image acted on lies below one.
    pub roots: Vec<PathBuf>,
    /// The steps, in group order.
    pub steps: Vec<Step>,
}

/// One planned change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    /// 1-based group number, as the scan reports it.
    pub group: usize,
    /// The image acted on (absolute).
    pub path: PathBuf,
    /// The group's image to keep (absolute).
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
    /// Already as asked (a link already in place, a file already restored); nothing changed.
    Unchanged(String),
    /// Left alone, for this reason: the file is not in the state the step or entry expects
    /// (nothing changed).
    Skipped(String),
    /// Tried and failed; the file is as it was.
    Failed(Error),
}

/// `path` made absolute through its deepest existing ancestor (a quarantine may not exist yet),
/// so that links and `..` compare as the file system sees them.
pub fn resolve(path: impl AsRef<Path>) -> Result<PathBuf> {
    let path = path.as_ref();
    let path = std::path::absolute(path).map_err(|e| Error::io(path, e))?;
    let mut rest = Vec::new();
    let mut base = path.as_path();
    loop {
        if let Ok(real) = std::fs::canonicalize(base) {
            return Ok(rest.iter().rev().fold(real, |p: PathBuf, c| p.join(c)));
        }
        match (base.parent(), base.file_name()) {
            (Some(parent), Some(name)) => {
                rest.push(name.to_os_string());
                base = parent;
            }
            _ => return Ok(path),
        }
    }
}

/// Refuses a quarantine inside (or equal to) one of the scanned `roots`: the next scan would
/// find the quarantined images again.
pub fn check_quarantine(dir: impl AsRef<Path>, roots: &[PathBuf]) -> Result<()> {
    let dir = dir.as_ref();
    let dir = resolve(dir)?;
    for root in roots {
        let root = folder_of(root)?;
        if dir.starts_with(&root) {
            return Err(Error::Quarantine {
                path: dir.clone(),
                reason: format!("inside the scanned folder {}", root.display()),
            });
        }
    }
    Ok(())
}

/// The steps that [`apply`] would take for `groups`, scanned from `roots`: one per image that a
/// group does not keep. Refused when a quarantine lies inside one of the `roots`.
pub fn plan(groups: &[Group], action: &Action, roots: &[PathBuf]) -> Result<Plan> {
    let action = match action {
        Action::Quarantine(dir) => {
            check_quarantine(dir, roots)?;
            Action::Quarantine(resolve(dir)?)
        }
        Action::HardLink => Action::HardLink,
    };
    let roots = roots.iter().map(|r| folder_of(r)).collect::<Result<Vec<_>>>()?;
    let mut steps = Vec::new();
    for (g, group) in groups.iter().enumerate() {
        let keep = absolute_below(&group.keep().path, &roots);
        for m in group.copies() {
            let e = m.entry;
            let path = absolute_below(&e.path, &roots);
            let op = match (&path, &keep, &action) {
                (Err(reason), _, _) => Op::Skip(reason.clone()),
                (_, Err(reason), _) => Op::Skip(format!("the kept image: {reason}")),
                (Ok(_), Ok(_), Action::HardLink) if !m.exact => {
                    Op::Skip("not byte-identical to the kept image: a hard link would lose its bytes".into())
                }
                (Ok(_), Ok(_), Action::HardLink) => Op::Link,
                (Ok(p), Ok(_), Action::Quarantine(dir)) => Op::Move(quarantine_path(dir, p)),
            };
            let keep = keep.clone().unwrap_or_else(|_| group.keep().path.clone());
            steps.push(Step {
                group: g + 1,
                path: path.unwrap_or_else(|_| e.path.clone()),
                keep,
                sha256: e.sha256,
                op,
            });
        }
    }
    Ok(Plan { action, roots, steps })
}

/// A scanned root resolved; a root that is a single file stands for its folder (its
/// neighbours are not scanned, but the folder is where the actions happen).
fn folder_of(root: &Path) -> Result<PathBuf> {
    let real = std::fs::canonicalize(root).map_err(|e| Error::io(root, e))?;
    match real.parent() {
        Some(parent) if !real.is_dir() => Ok(parent.to_path_buf()),
        _ => Ok(real),
    }
}

/// The absolute path of an image (its folder resolved, the name itself kept, so a link stays
/// the link), which must lie below one of `roots`.
fn absolute_below(path: &Path, roots: &[PathBuf]) -> std::result::Result<PathBuf, String> {
    let name = path.file_name().ok_or("no file name")?;
    let parent = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let abs = std::fs::canonicalize(parent).map_err(|e| format!("cannot resolve its folder: {e}"))?.join(name);
    if roots.iter().any(|r| abs.starts_with(r) && abs != *r) {
        Ok(abs)
    } else {
        Err("outside the scanned folders".into())
    }
}

/// Where the quarantine `dir` keeps the image at the absolute path `path`.
fn quarantine_path(dir: &Path, path: &Path) -> PathBuf {
    let mut to = dir.to_path_buf();
    to.extend(path.components().filter(|c| matches!(c, Component::Normal(_))));
    to
}

/// The scanned folder that `path` lies below.
fn root_of<'a>(roots: &'a [PathBuf], path: &Path) -> Result<&'a Path> {
    roots
        .iter()
        .filter(|r| path.starts_with(r))
        .max_by_key(|r| r.as_os_str().len())
        .map(PathBuf::as_path)
        .ok_or_else(|| journal::error(path, "outside the scanned folders"))
}

/// Carries out `plan`, writing `journal` (a new file; an existing one is never overwritten).
/// Returns one outcome per step; a step that fails or is skipped leaves its file as it was and
/// does not stop the others. `stop` is checked before each step: once it is set, the steps
/// left are skipped (an action is never cut in half).
pub fn apply(plan: &Plan, journal: impl AsRef<Path>, stop: &AtomicBool) -> Result<Vec<Outcome>> {
    let journal = journal.as_ref();
    let (kind, quarantine) = match &plan.action {
        Action::Quarantine(dir) => {
            std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
            (journal::Kind::Quarantine, Some(dir.as_path().into()))
        }
        Action::HardLink => (journal::Kind::Hardlink, None),
    };
    let roots = plan.roots.iter().map(|r| r.as_path().into()).collect();
    let header = Record::Journal { version: journal::VERSION, action: Some(kind), quarantine, roots };
    let mut journal = journal::Writer::create(journal, &header)?;
    let outcomes = plan
        .steps
        .iter()
        .map(|step| {
            if stop.load(Ordering::SeqCst) {
                return Outcome::Skipped("interrupted before this step".into());
            }
            apply_step(plan, step, &mut journal).unwrap_or_else(Outcome::Failed)
        })
        .collect();
    Ok(outcomes)
}

fn apply_step(plan: &Plan, step: &Step, journal: &mut journal::Writer) -> Result<Outcome> {
    if let Op::Skip(reason) = &step.op {
        return Ok(Outcome::Skipped(reason.clone()));
    }
    let from = Place::below(root_of(&plan.roots, &step.path)?, &step.path, false)?;
    let keep = Place::below(root_of(&plan.roots, &step.keep)?, &step.keep, false)?;
    // A link (met with --follow-links) is acted on as a link: moved itself, never replaced.
    let is_link = from.is_link()?;
    if matches!(step.op, Op::Link) && (is_link || keep.is_link()?) {
        return Ok(Outcome::Skipped("a symbolic link: left as it is".into()));
    }
    let mut file = from.open_through()?;
    if transfer::sha256(&mut file, &step.path)? != step.sha256 {
        return Ok(Outcome::Skipped("changed since the scan".into()));
    }
    // Without its kept image, this may be the last copy.
    let mut keep_file = match keep.open_through() {
        Err(e) if is_not_found(&e) => {
            return Ok(Outcome::Skipped(format!(
                "the kept image {} is gone; this may be the last copy",
                step.keep.display()
            )))
        }
        other => other?,
    };
    if crate::safe_fs::same_file(&file, &keep_file) {
        return Ok(match step.op {
            Op::Link => Outcome::Unchanged("already a hard link to the kept image".into()),
            _ => Outcome::Skipped("the same file as the kept image".into()),
        });
    }
    match (&step.op, &plan.action) {
        (Op::Move(to), Action::Quarantine(dir)) => {
            let to = Place::below(dir, to, true)?;
            if to.exists()? {
                return Ok(Outcome::Skipped(format!("{} already exists", to.path().display())));
            }
            journal.write(&Record::Move {
                from: step.path.as_path().into(),
                to: to.path().as_path().into(),
                keep: step.keep.as_path().into(),
                sha256: hex(&step.sha256),
            })?;
            if is_link {
                transfer::move_link(&from, &to)?;
            } else {
                transfer::move_file(&from, &mut file, &to, &step.sha256)?;
            }
        }
        (Op::Link, Action::HardLink) => {
            if transfer::sha256(&mut keep_file, &step.keep)? != step.sha256 {
                return Ok(Outcome::Skipped(format!("{} changed since the scan", step.keep.display())));
            }
            let meta = file.metadata().map_err(|e| Error::io(&step.path, e))?;
            let kept = keep_file.metadata().map_err(|e| Error::io(&step.keep, e))?;
            // A link shares one inode: this path would take the kept file's owner and mode.
            if (transfer::owner(&meta), transfer::mode(&meta)) != (transfer::owner(&kept), transfer::mode(&kept)) {
                return Ok(Outcome::Skipped(
                    "owner or mode differs from the kept image's: a link would change them".into(),
                ));
            }
            journal.write(&Record::Link {
                path: step.path.as_path().into(),
                keep: step.keep.as_path().into(),
                sha256: hex(&step.sha256),
                mode: transfer::mode(&meta),
                modified_ns: modified_ns(&meta),
            })?;
            transfer::link_over(&keep, &keep_file, &from)?;
        }
        _ => return Ok(Outcome::Skipped("a step of another action than the plan's".into())),
    }
    Ok(Outcome::Done)
}

fn modified_ns(meta: &std::fs::Metadata) -> u64 {
    meta.modified().ok().and_then(|t| t.duration_since(UNIX_EPOCH).ok()).map_or(0, |d| d.as_nanos() as u64)
}

/// Restores what the journal at `path` records, newest first. Returns each entry's path and
/// outcome. Running it again changes nothing more.
///
/// The journal is refused whole, before anything is touched, when it is writable by other users
/// or belongs to another (non-root) user, when it is of version 1 (which recorded no quarantine
/// or folders to check against), or when any entry asks for something [`apply`] never does:
/// a path outside the recorded folders, a move whose target is not the quarantine path of its
/// image, an image that is its own kept image.
pub fn undo(path: impl AsRef<Path>) -> Result<Vec<(PathBuf, Outcome)>> {
    let path = path.as_ref();
    let checked = journal::read(path)?;
    let mut outcomes = Vec::new();
    for entry in checked.entries.iter().rev() {
        let (target, outcome) = match entry {
            journal::Entry::Move { from, to, sha256 } => {
                (from, undo_move(&checked.roots, checked.quarantine.as_deref(), from, to, sha256))
            }
            journal::Entry::Link { path, keep, sha256, mode, modified_ns } => {
                (path, undo_link(&checked.roots, path, keep, sha256, (*mode, *modified_ns)))
            }
        };
        outcomes.push((target.clone(), outcome.unwrap_or_else(Outcome::Failed)));
    }
    Ok(outcomes)
}

fn is_not_found(e: &Error) -> bool {
    matches!(e, Error::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound)
}

fn undo_move(
    roots: &[PathBuf],
    quarantine: Option<&Path>,
    from: &Path,
    to: &Path,
    sha256: &[u8; 32],
) -> Result<Outcome> {
    let quarantine = quarantine.ok_or_else(|| journal::error(to, "a move in a journal without a quarantine"))?;
    let root = root_of(roots, from)?;
    match Place::below(root, from, false) {
        Ok(place) if place.exists()? => {
            let in_place =
                place.open_through().and_then(|mut f| transfer::sha256(&mut f, from)).is_ok_and(|h| h == *sha256);
            return Ok(if in_place {
                Outcome::Unchanged("already in place".into())
            } else {
                Outcome::Skipped(format!("another file now stands at its place; it is still at {}", to.display()))
            });
        }
        Err(e) if !is_not_found(&e) => return Err(e),
        _ => {}
    }
    let missing = || Outcome::Skipped(format!("{} is missing or changed; nothing restored", to.display()));
    let quarantined = match Place::below(quarantine, to, false) {
        Ok(place) => place,
        Err(e) if is_not_found(&e) => return Ok(missing()),
        Err(e) => return Err(e),
    };
    let is_link = quarantined.is_link()?;
    // A link is checked by what it will point to once back (a relative one dangles in the
    // quarantine).
    let opened = if is_link {
        let text = quarantined.dir.read_link(&quarantined.name)?;
        crate::safe_fs::open_regular(&from.parent().unwrap_or(Path::new("/")).join(text), true).map(|(f, _)| f)
    } else {
        quarantined.open()
    };
    let mut file = match opened {
        Ok(file) => file,
        Err(e) if is_not_found(&e) => return Ok(missing()),
        Err(e) => return Err(e),
    };
    if transfer::sha256(&mut file, to)? != *sha256 {
        return Ok(missing());
    }
    let back = Place::below(root, from, true)?;
    if is_link {
        transfer::move_link(&quarantined, &back)?;
    } else {
        transfer::move_file(&quarantined, &mut file, &back, sha256)?;
    }
    Ok(Outcome::Done)
}

/// `recorded`: the file's mode and modification time when it was linked; its owner was the kept
/// file's (files of different owners are never linked), so the copy takes that.
fn undo_link(roots: &[PathBuf], path: &Path, keep: &Path, sha256: &[u8; 32], recorded: (u32, u64)) -> Result<Outcome> {
    let at = Place::below(root_of(roots, path)?, path, false)?;
    let kept = Place::below(root_of(roots, keep)?, keep, false)?;
    let mut keep_file = kept.open()?;
    if !at.holds(&keep_file)? {
        let own = at.open().and_then(|mut f| transfer::sha256(&mut f, path)).is_ok_and(|h| h == *sha256);
        return Ok(if own {
            Outcome::Unchanged("already a file of its own".into())
        } else {
            Outcome::Skipped("no longer a link to the kept image; left as it is".into())
        });
    }
    if transfer::sha256(&mut keep_file, keep)? != *sha256 {
        return Ok(Outcome::Skipped("the kept image changed since; its bytes are no longer this file's".into()));
    }
    let kept = keep_file.metadata().map_err(|e| Error::io(keep, e))?;
    let attributes = Attributes::recorded(recorded.0, recorded.1, &kept);
    transfer::copy_into(&mut keep_file, keep, &at, attributes, sha256, true)?;
    Ok(Outcome::Done)
}

/// A journal name that sorts by time: `twinscan-journal-<seconds since 1970>.jsonl`.
pub fn journal_name() -> String {
    let secs = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    format!("twinscan-journal-{secs}.jsonl")
}

#[cfg(test)]
mod tests {
    use std::fs;
    use std::io::Write;

    use sha2::{Digest, Sha256};

    use super::*;

    /// A plan of one step in a fresh folder (its own scanned root) holding `keep.png`.
    fn one_step(name: &str, bytes: &[u8], op: impl FnOnce(&Path) -> Op) -> (tempfile::TempDir, Plan) {
        let dir = tempfile::tempdir().unwrap();
        let root = fs::canonicalize(dir.path()).unwrap().join("photos");
        fs::create_dir(&root).unwrap();
        let (path, keep) = (root.join(name), root.join("keep.png"));
        fs::write(&path, bytes).unwrap();
        fs::write(&keep, b"the kept image").unwrap();
        let op = op(&root);
        let action = match &op {
            Op::Move(_) => Action::Quarantine(root.parent().unwrap().join("q")),
            _ => Action::HardLink,
        };
        let step = Step { group: 1, path, keep, sha256: Sha256::digest(bytes).into(), op };
        (dir, Plan { action, roots: vec![root], steps: vec![step] })
    }

    fn quarantined(root: &Path, name: &str) -> Op {
        Op::Move(quarantine_path(&root.parent().unwrap().join("q"), &root.join(name)))
    }

    #[test]
    fn files_already_linked_are_left_as_they_are() {
        let (dir, plan) = one_step("b.png", b"same", |_| Op::Link);
        let s = &plan.steps[0];
        fs::remove_file(&s.keep).unwrap();
        fs::hard_link(&s.path, &s.keep).unwrap();
        let journal = dir.path().join("j.jsonl");
        let out = apply(&plan, &journal, &AtomicBool::new(false)).unwrap();
        assert!(matches!(&out[0], Outcome::Unchanged(r) if r.contains("already")), "{out:?}");
        assert!(undo(&journal).unwrap().is_empty(), "nothing journalled, nothing undone");
    }

    #[test]
    fn a_file_changed_since_the_scan_is_skipped_and_left_alone() {
        let (dir, plan) = one_step("a.png", b"scanned", |root| quarantined(root, "a.png"));
        let s = &plan.steps[0];
        fs::write(&s.path, b"edited since").unwrap();
        let out = apply(&plan, dir.path().join("j.jsonl"), &AtomicBool::new(false)).unwrap();
        assert!(matches!(&out[0], Outcome::Skipped(r) if r.contains("changed")), "{out:?}");
        assert_eq!(fs::read(&s.path).unwrap(), b"edited since");
        let Op::Move(to) = &s.op else { unreachable!() };
        assert!(!to.exists());
    }

    #[test]
    fn undo_leaves_a_file_that_took_the_old_place_and_reports_it() {
        let (dir, plan) = one_step("a.png", b"original", |root| quarantined(root, "a.png"));
        let s = &plan.steps[0];
        let journal = dir.path().join("j.jsonl");
        assert!(matches!(apply(&plan, &journal, &AtomicBool::new(false)).unwrap()[0], Outcome::Done));
        fs::write(&s.path, b"a new file").unwrap();
        let out = undo(&journal).unwrap();
        assert!(matches!(&out[0].1, Outcome::Skipped(r) if r.contains("another file")), "{out:?}");
        assert_eq!(fs::read(&s.path).unwrap(), b"a new file");
        let Op::Move(to) = &s.op else { unreachable!() };
        assert_eq!(fs::read(to).unwrap(), b"original");
    }

    #[test]
    fn a_journal_cut_short_by_a_crash_still_undoes_what_it_records() {
        let (dir, plan) = one_step("a.png", b"original", |root| quarantined(root, "a.png"));
        let journal = dir.path().join("j.jsonl");
        apply(&plan, &journal, &AtomicBool::new(false)).unwrap();
        // The record of an action that never started, half written.
        let mut f = fs::OpenOptions::new().append(true).open(&journal).unwrap();
        f.write_all(br#"{"op":"move","from":"/x/b.p"#).unwrap();
        let out = undo(&journal).unwrap();
        assert_eq!(out.len(), 1);
        assert!(matches!(out[0].1, Outcome::Done));
        assert_eq!(fs::read(&plan.steps[0].path).unwrap(), b"original");
    }

    #[test]
    fn no_duplicate_moves_while_its_kept_image_is_gone() {
        let (dir, plan) = one_step("a.png", b"original", |root| quarantined(root, "a.png"));
        fs::remove_file(&plan.steps[0].keep).unwrap();
        let out = apply(&plan, dir.path().join("j.jsonl"), &AtomicBool::new(false)).unwrap();
        assert!(matches!(&out[0], Outcome::Skipped(r) if r.contains("last copy")), "{out:?}");
        assert_eq!(fs::read(&plan.steps[0].path).unwrap(), b"original");
    }

    #[test]
    fn once_stopped_no_further_step_starts() {
        let (dir, plan) = one_step("a.png", b"original", |root| quarantined(root, "a.png"));
        let out = apply(&plan, dir.path().join("j.jsonl"), &AtomicBool::new(true)).unwrap();
        assert!(matches!(&out[0], Outcome::Skipped(r) if r.contains("interrupted")), "{out:?}");
        assert_eq!(fs::read(&plan.steps[0].path).unwrap(), b"original");
    }

    #[test]
    fn an_existing_journal_is_never_overwritten_and_a_stranger_file_is_not_undone() {
        let dir = tempfile::tempdir().unwrap();
        let journal = dir.path().join("notes.txt");
        fs::write(&journal, "my notes\n").unwrap();
        let plan = Plan { action: Action::HardLink, roots: vec![dir.path().into()], steps: vec![] };
        assert!(matches!(apply(&plan, &journal, &AtomicBool::new(false)), Err(Error::Io { .. })));
        assert_eq!(fs::read_to_string(&journal).unwrap(), "my notes\n");
        assert!(matches!(undo(&journal), Err(Error::Journal { .. })));
    }
}
