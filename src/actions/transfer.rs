//! Moving, copying and linking images through folder handles ([`Dir`]), so that a link planted
//! in a quarantine or a scanned folder redirects nothing, and every temporary file is new,
//! exclusive and unguessable.

use std::fs::File;
use std::io::{Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::time::{Duration, UNIX_EPOCH};

use super::journal;
use crate::error::{Error, Result};
pub(super) use crate::safe_fs::sha256;
use crate::safe_fs::Dir;

/// A file in an open folder.
pub(super) struct Place {
    pub dir: Dir,
    pub name: std::ffi::OsString,
}

impl Place {
    /// The place of `path`, which lies below `base` (a folder the user named, opened as named):
    /// every folder between them is opened without following links, and made when `create`.
    pub fn below(base: &Path, path: &Path, create: bool) -> Result<Place> {
        let rel = path.strip_prefix(base).map_err(|_| journal::error(path, "not below its folder"))?;
        let name = rel.file_name().ok_or_else(|| journal::error(path, "no file name"))?.to_os_string();
        let dir = Dir::open(base)?.descend(rel.parent().unwrap_or(Path::new("")), create)?;
        Ok(Place { dir, name })
    }

    pub fn path(&self) -> PathBuf {
        self.dir.join(&self.name)
    }

    /// The regular file here, opened for reading (a link, FIFO or device is refused).
    pub fn open(&self) -> Result<File> {
        self.dir.open_file(&self.name, false)
    }

    /// Whether a symbolic link stands here.
    pub fn is_link(&self) -> Result<bool> {
        Ok(self.dir.stat(&self.name)?.is_some_and(|s| s.is_link))
    }

    /// What stands here, opened for reading: through it when it is a link (the file to hash
    /// and compare), as itself otherwise.
    pub fn open_through(&self) -> Result<File> {
        self.dir.open_file(&self.name, self.is_link()?)
    }

    /// Whether anything (a link included) stands here.
    pub fn exists(&self) -> Result<bool> {
        Ok(self.dir.stat(&self.name)?.is_some())
    }

    /// Whether `file` is what stands here now.
    pub fn holds(&self, file: &File) -> Result<bool> {
        Ok(self.dir.stat(&self.name)?.is_some_and(|s| s.is(file)))
    }
}

/// Moves the file open as `file` from `from` to `to`, never over an existing file. Across file
/// systems it is copied (mode and modification time kept, the copy's hash checked against
/// `sha256`), then the original is removed only if it is still that same file.
pub(super) fn move_file(from: &Place, file: &mut File, to: &Place, sha256: &[u8; 32]) -> Result<()> {
    match from.dir.rename(&from.name, &to.dir, &to.name, false) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::CrossesDevices => {
            let meta = file.metadata().map_err(|e| Error::io(from.path(), e))?;
            copy_into(file, &from.path(), to, Attributes::of(&meta), sha256, false)?;
            if !from.holds(file)? {
                return Err(journal::error(&from.path(), "changed during the copy; the copy is kept beside it"));
            }
            from.dir.remove(&from.name)
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            Err(journal::error(&to.path(), "a file already stands there; nothing moved"))
        }
        Err(e) => Err(Error::io(to.path(), e)),
    }
}

/// Moves the symbolic link at `from` itself (its text unchanged, so a relative link points
/// where it did once it is back) to `to`, never over an existing file. Across file systems it
/// is not moved.
pub(super) fn move_link(from: &Place, to: &Place) -> Result<()> {
    from.dir.rename(&from.name, &to.dir, &to.name, false).map_err(|e| match e.kind() {
        std::io::ErrorKind::CrossesDevices => {
            journal::error(&from.path(), "a symbolic link is not moved to another file system")
        }
        std::io::ErrorKind::AlreadyExists => journal::error(&to.path(), "a file already stands there; nothing moved"),
        _ => Error::io(to.path(), e),
    })
}

/// What a copy keeps of its original: permission bits and modification time always, the owner
/// when the process may give it (as root); otherwise the copy belongs to the user running it.
pub(super) struct Attributes {
    /// Permission bits (masked to 0777).
    pub mode: u32,
    pub modified: Option<std::time::SystemTime>,
    /// User and group ids.
    pub owner: Option<(u32, u32)>,
}

impl Attributes {
    /// The attributes of an existing file.
    pub fn of(meta: &std::fs::Metadata) -> Attributes {
        Attributes { mode: mode(meta), modified: meta.modified().ok(), owner: owner(meta) }
    }

    /// Recorded mode and time, with the owner of `like` (a file that has the original's owner).
    pub fn recorded(mode: u32, modified_ns: u64, like: &std::fs::Metadata) -> Attributes {
        Attributes { mode, modified: Some(UNIX_EPOCH + Duration::from_nanos(modified_ns)), owner: owner(like) }
    }
}

/// Copies `source` into a new temporary file beside `to`, sets its mode and time through the
/// handle, checks its hash, then renames it to `to` (over an existing file only when `replace`).
pub(super) fn copy_into(
    source: &mut File,
    source_path: &Path,
    to: &Place,
    attributes: Attributes,
    sha256: &[u8; 32],
    replace: bool,
) -> Result<()> {
    let (mut tmp, tmp_name) = to.dir.create_temp(&to.name)?;
    let tmp_path = to.dir.join(&tmp_name);
    let copied = (|| {
        source.seek(SeekFrom::Start(0)).map_err(|e| Error::io(source_path, e))?;
        std::io::copy(source, &mut tmp).map_err(|e| Error::io(&tmp_path, e))?;
        set_owner(&tmp, attributes.owner).map_err(|e| Error::io(&tmp_path, e))?;
        set_mode(&tmp, attributes.mode).map_err(|e| Error::io(&tmp_path, e))?;
        if let Some(t) = attributes.modified {
            tmp.set_modified(t).map_err(|e| Error::io(&tmp_path, e))?;
        }
        tmp.sync_all().map_err(|e| Error::io(&tmp_path, e))?;
        if self::sha256(&mut tmp, &tmp_path)? != *sha256 {
            return Err(journal::error(source_path, "the copy differs from the original"));
        }
        to.dir.rename(&tmp_name, &to.dir, &to.name, replace).map_err(|e| match e.kind() {
            std::io::ErrorKind::AlreadyExists => journal::error(&to.path(), "a file already stands there"),
            _ => Error::io(to.path(), e),
        })
    })();
    if copied.is_err() {
        let _ = to.dir.remove(&tmp_name);
    }
    copied
}

/// Replaces `at` by a hard link to `keep` (both open, both checked by the caller): the link is
/// made under a temporary name, checked to be `keep_file`, then renamed over `at`.
pub(super) fn link_over(keep: &Place, keep_file: &File, at: &Place) -> Result<()> {
    let tmp = keep.dir.link_temp(&keep.name, &at.dir, &at.name)?;
    let done = (|| {
        if !at.dir.stat(&tmp)?.is_some_and(|s| s.is(keep_file)) {
            return Err(journal::error(&keep.path(), "changed while it was linked; nothing replaced"));
        }
        at.dir.rename(&tmp, &at.dir, &at.name, true).map_err(|e| Error::io(at.path(), e))
    })();
    if done.is_err() {
        let _ = at.dir.remove(&tmp);
    }
    done
}

#[cfg(unix)]
pub(super) fn mode(meta: &std::fs::Metadata) -> u32 {
    std::os::unix::fs::PermissionsExt::mode(&meta.permissions()) & 0o777
}

#[cfg(not(unix))]
pub(super) fn mode(meta: &std::fs::Metadata) -> u32 {
    if meta.permissions().readonly() {
        0o444
    } else {
        0o644
    }
}

#[cfg(unix)]
pub(super) fn owner(meta: &std::fs::Metadata) -> Option<(u32, u32)> {
    use std::os::unix::fs::MetadataExt;
    Some((meta.uid(), meta.gid()))
}

#[cfg(not(unix))]
pub(super) fn owner(_: &std::fs::Metadata) -> Option<(u32, u32)> {
    None
}

/// Gives `file` the owner, where the process may (as root; a user cannot give files away, and
/// their copies stay theirs). Before the mode: changing the owner clears set-id bits.
#[cfg(unix)]
fn set_owner(file: &File, owner: Option<(u32, u32)>) -> std::io::Result<()> {
    match owner {
        Some((uid, gid)) if rustix::process::geteuid().is_root() => {
            std::os::unix::fs::fchown(file, Some(uid), Some(gid))
        }
        _ => Ok(()),
    }
}

#[cfg(not(unix))]
fn set_owner(_: &File, _: Option<(u32, u32)>) -> std::io::Result<()> {
    Ok(())
}

#[cfg(unix)]
fn set_mode(file: &File, mode: u32) -> std::io::Result<()> {
    file.set_permissions(std::os::unix::fs::PermissionsExt::from_mode(mode & 0o777))
}

#[cfg(not(unix))]
fn set_mode(file: &File, mode: u32) -> std::io::Result<()> {
    let mut p = file.metadata()?.permissions();
    p.set_readonly(mode & 0o222 == 0);
    file.set_permissions(p)
}
