//! The journal of duplicate actions: JSON Lines, a header that records the action, its
//! quarantine and the scanned folders, then one record per action, each flushed to disk before
//! the action starts.
//!
//! A journal is read as untrusted input: it can only ask [`super::undo`] to reverse what this
//! tool does. Every path must be absolute and plain (no `..`), every image must lie below a
//! recorded folder, a move's target must be the quarantine path of its source, an image is
//! never its own kept image, and modes are reduced to permission bits. A journal that fails any
//! of this is refused whole, with the line and the reason.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Component, Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::quarantine_path;
use crate::error::{Error, Result};

/// This build writes and reads version 2. Version 1 recorded neither the quarantine nor the
/// scanned folders, so nothing in it can be checked: it is refused.
pub(super) const VERSION: u32 = 2;

/// Largest journal read: about two million actions.
const MAX_BYTES: u64 = 1 << 30;

/// One journal line.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub(super) enum Record {
    Journal {
        version: u32,
        #[serde(default)]
        action: Option<Kind>,
        #[serde(default)]
        quarantine: Option<JPath>,
        #[serde(default)]
        roots: Vec<JPath>,
    },
    Move {
        from: JPath,
        to: JPath,
        keep: JPath,
        sha256: String,
    },
    Link {
        path: JPath,
        keep: JPath,
        sha256: String,
        mode: u32,
        modified_ns: u64,
    },
}

/// What a journal's actions are.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(super) enum Kind {
    Quarantine,
    Hardlink,
}

/// A path in the journal: text when it is UTF-8, its raw bytes otherwise (Unix names are bytes).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(untagged)]
pub(super) enum JPath {
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

pub(super) fn hex(hash: &[u8; 32]) -> String {
    hash.iter().map(|b| format!("{b:02x}")).collect()
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

pub(super) fn error(path: &Path, reason: impl Into<String>) -> Error {
    Error::Journal { path: path.to_path_buf(), reason: reason.into() }
}

/// A journal being written.
pub(super) struct Writer {
    file: File,
    path: PathBuf,
}

impl Writer {
    /// Creates the journal (a new file, readable and writable by its owner alone) and writes
    /// its header.
    pub fn create(path: &Path, header: &Record) -> Result<Writer> {
        let mut options = OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let file = options.open(path).map_err(|e| Error::io(path, e))?;
        let mut journal = Writer { file, path: path.to_path_buf() };
        // A journal that could not even take its header (a full disk) records nothing: no
        // empty file is left behind.
        if let Err(e) = journal.write(header) {
            let _ = std::fs::remove_file(path);
            return Err(e);
        }
        Ok(journal)
    }

    /// Appends a record and waits until it is on disk.
    pub fn write(&mut self, record: &Record) -> Result<()> {
        let mut line = serde_json::to_vec(record).map_err(|e| error(&self.path, e.to_string()))?;
        line.push(b'\n');
        self.file.write_all(&line).map_err(|e| Error::io(&self.path, e))?;
        self.file.sync_data().map_err(|e| Error::io(&self.path, e))
    }
}

/// A checked journal entry, ready to be undone.
#[derive(Debug)]
pub(super) enum Entry {
    /// `from` was moved to `to`, the quarantine path of `from`.
    Move { from: PathBuf, to: PathBuf, sha256: [u8; 32] },
    /// `path` was replaced by a hard link to `keep`; `mode` is permission bits only.
    Link { path: PathBuf, keep: PathBuf, sha256: [u8; 32], mode: u32, modified_ns: u64 },
}

/// A journal read and checked: its quarantine (for moves), its scanned folders and entries.
#[derive(Debug)]
pub(super) struct Checked {
    pub quarantine: Option<PathBuf>,
    pub roots: Vec<PathBuf>,
    pub entries: Vec<Entry>,
}

/// Reads the journal at `path` and checks every line (see the module's doc); a crash can cut
/// the last line short, and such a line (its action never started) is passed over.
pub(super) fn read(path: &Path) -> Result<Checked> {
    let (file, _) = crate::safe_fs::open_regular(path, true)?;
    check_owner(&file, path)?;
    let mut lines = Vec::new();
    let mut reader = BufReader::new(file.take(MAX_BYTES + 1));
    let mut read = 0u64;
    loop {
        let mut line = String::new();
        let n = reader.read_line(&mut line).map_err(|e| Error::io(path, e))?;
        if n == 0 {
            break;
        }
        read += n as u64;
        if read > MAX_BYTES {
            return Err(Error::FileTooLarge { path: path.into(), size: read, limit: MAX_BYTES });
        }
        lines.push(line);
    }
    // The header first: an older format is refused for its version, not for its lines.
    let header = lines.first().map(|l| serde_json::from_str::<Record>(l));
    let (kind, quarantine, roots) = match header {
        Some(Ok(Record::Journal { version: VERSION, action: Some(kind), quarantine, roots })) => {
            (kind, quarantine, roots)
        }
        Some(Ok(Record::Journal { version: 1, .. })) => {
            return Err(error(
                path,
                "journal version 1 records neither its quarantine nor its folders, so its entries cannot be \
                 checked; refused (each line still names what was moved where)",
            ))
        }
        Some(Ok(Record::Journal { version, .. })) => {
            return Err(error(path, format!("journal version {version}, this build reads {VERSION}")))
        }
        Some(Err(e)) => return Err(error(path, format!("not a twinscan journal: {e}"))),
        _ => return Err(error(path, "not a twinscan journal: no header line")),
    };
    let last = lines.iter().rposition(|l| !l.trim().is_empty());
    let mut records = Vec::new();
    for (n, line) in lines.iter().enumerate().skip(1) {
        if line.trim().is_empty() {
            continue;
        }
        match serde_json::from_str::<Record>(line) {
            Ok(r) => records.push((n + 1, r)),
            Err(_) if Some(n) == last && !line.ends_with('\n') => {}
            Err(e) => return Err(error(path, format!("line {}: {e}", n + 1))),
        }
    }
    let line_error = |n: usize, reason: &str| error(path, format!("line {n}: {reason}"));
    let roots = roots
        .iter()
        .map(|r| plain_absolute(r).ok_or_else(|| line_error(1, "a scanned folder is not a plain absolute path")))
        .collect::<Result<Vec<_>>>()?;
    if roots.is_empty() {
        return Err(line_error(1, "no scanned folder recorded"));
    }
    let quarantine = match (kind, quarantine) {
        (Kind::Quarantine, Some(q)) => {
            let q = plain_absolute(&q).ok_or_else(|| line_error(1, "the quarantine is not a plain absolute path"))?;
            if roots.iter().any(|r| q.starts_with(r)) {
                return Err(line_error(1, "the quarantine lies inside a scanned folder"));
            }
            Some(q)
        }
        (Kind::Quarantine, None) => return Err(line_error(1, "a quarantine journal without its quarantine")),
        (Kind::Hardlink, _) => None,
    };
    let below_root = |p: &JPath, n: usize, what: &str| -> Result<PathBuf> {
        let p = plain_absolute(p).ok_or_else(|| line_error(n, &format!("{what} is not a plain absolute path")))?;
        if !roots.iter().any(|r| p.starts_with(r) && p != *r) {
            return Err(line_error(n, &format!("{what} {} lies outside the scanned folders", p.display())));
        }
        Ok(p)
    };
    let hash = |s: &str, n: usize| unhex(s).ok_or_else(|| line_error(n, &format!("bad sha256 {s:?}")));
    let mut entries = Vec::new();
    for (n, record) in records {
        let entry = match (record, &quarantine) {
            (Record::Move { from, to, keep, sha256 }, Some(q)) => {
                let (from, keep) = (below_root(&from, n, "the moved image")?, below_root(&keep, n, "the kept image")?);
                if from == keep {
                    return Err(line_error(n, "an image is its own kept image"));
                }
                let to = to.path().ok_or_else(|| line_error(n, "a path this platform cannot represent"))?;
                if to != quarantine_path(q, &from) {
                    return Err(line_error(n, &format!("{} is not the quarantine path of its image", to.display())));
                }
                Entry::Move { sha256: hash(&sha256, n)?, from, to }
            }
            (Record::Link { path: p, keep, sha256, mode, modified_ns }, None) => {
                let (p, keep) = (below_root(&p, n, "the linked image")?, below_root(&keep, n, "the kept image")?);
                if p == keep {
                    return Err(line_error(n, "an image is its own kept image"));
                }
                Entry::Link { path: p, keep, sha256: hash(&sha256, n)?, mode: mode & 0o777, modified_ns }
            }
            (Record::Journal { .. }, _) => return Err(line_error(n, "a second header")),
            (_, _) => return Err(line_error(n, "an action of another kind than the journal's")),
        };
        entries.push(entry);
    }
    Ok(Checked { quarantine, roots, entries })
}

/// An absolute path with no `.` or `..` in it, so that `starts_with` means "lies below".
fn plain_absolute(p: &JPath) -> Option<PathBuf> {
    let p = p.path()?;
    let plain = p.components().all(|c| matches!(c, Component::Normal(_) | Component::RootDir | Component::Prefix(_)));
    (p.is_absolute() && plain).then_some(p)
}

/// A journal others can write, or that belongs to another user (root's excepted), could say
/// anything: refused.
#[cfg(unix)]
fn check_owner(file: &File, path: &Path) -> Result<()> {
    use std::os::unix::fs::MetadataExt;
    let meta = file.metadata().map_err(|e| Error::io(path, e))?;
    if meta.mode() & 0o022 != 0 {
        return Err(error(path, format!("writable by other users (mode {:o}); refused", meta.mode() & 0o777)));
    }
    let me = rustix::process::geteuid().as_raw();
    if meta.uid() != me && meta.uid() != 0 {
        return Err(error(path, format!("belongs to user {}, not to this user ({me}); refused", meta.uid())));
    }
    Ok(())
}

#[cfg(not(unix))]
fn check_owner(_: &File, _: &Path) -> Result<()> {
    Ok(())
}
