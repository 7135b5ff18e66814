//! File-system operations that never follow a link someone else planted and never block on a
//! file that is not a regular one.
//!
//! Paths a user names (a root, a quarantine, a model) are opened as they are, links included.
//! Below such a folder every component is opened relative to its parent's handle with links
//! refused ([`Dir::descend`]), so swapping a folder for a link between a check and an action
//! redirects nothing. Temporary files are created new and exclusive under an unpredictable name
//! ([`Dir::create_temp`]), and their modes and times are set through the open handle.

use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Component, Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::error::{Error, Result};

/// Opens `path` for reading without blocking (a FIFO cannot hang the caller) and refuses
/// anything but a regular file; with `follow` false a link at the last component is refused too.
/// Returns the file and its length.
pub(crate) fn open_regular(path: &Path, follow: bool) -> Result<(File, u64)> {
    let file = sys::open_read(None, path, follow).map_err(|e| link_error(path, e))?;
    regular(file, path)
}

fn regular(file: File, path: &Path) -> Result<(File, u64)> {
    let meta = file.metadata().map_err(|e| Error::io(path, e))?;
    if !meta.is_file() {
        return Err(Error::NotAFile { path: path.into(), what: describe(&meta.file_type()) });
    }
    Ok((file, meta.len()))
}

/// The whole of a regular file (see [`open_regular`]), refused with `too_large(len)` when it is,
/// or grows while being read to, more than `max` bytes.
pub(crate) fn read_regular(path: &Path, follow: bool, max: u64, too_large: impl Fn(u64) -> Error) -> Result<Vec<u8>> {
    let (file, len) = open_regular(path, follow)?;
    if len > max {
        return Err(too_large(len));
    }
    let mut bytes = Vec::with_capacity(len as usize);
    file.take(max + 1).read_to_end(&mut bytes).map_err(|e| Error::io(path, e))?;
    if bytes.len() as u64 > max {
        return Err(too_large(bytes.len() as u64));
    }
    Ok(bytes)
}

fn describe(t: &std::fs::FileType) -> &'static str {
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        if t.is_fifo() {
            return "a FIFO";
        }
        if t.is_char_device() || t.is_block_device() {
            return "a device";
        }
        if t.is_socket() {
            return "a socket";
        }
    }
    if t.is_dir() {
        "a folder"
    } else if t.is_symlink() {
        "a symbolic link"
    } else {
        "not a regular file"
    }
}

/// A refused link reads as one, not as the system's "too many levels of symbolic links".
fn link_error(path: &Path, e: std::io::Error) -> Error {
    if sys::is_link_refusal(&e) && std::fs::symlink_metadata(path).is_ok_and(|m| m.is_symlink()) {
        Error::NotAFile { path: path.into(), what: "a symbolic link (not followed)" }
    } else {
        Error::io(path, e)
    }
}

/// The components of `rel`, each a plain name: `..`, a root or a prefix is refused.
fn names(rel: &Path) -> Result<Vec<&OsStr>> {
    rel.components()
        .filter(|c| !matches!(c, Component::CurDir))
        .map(|c| match c {
            Component::Normal(n) => Ok(n),
            _ => Err(Error::io(rel, std::io::Error::other("not a plain relative path"))),
        })
        .collect()
}

/// A name no one can guess: `.<name>.twinscan-<pid>-<16 hex digits>` (the pid lets a later run
/// tell a dead process's leftovers from a live one's, see [`Dir::sweep_stale_temps`]).
fn temp_name(name: &OsStr) -> OsString {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos()));
    let mut out = OsString::from(".");
    out.push(name);
    out.push(format!(".twinscan-{}-{:016x}", std::process::id(), h.finish()));
    out
}

/// The process id in a temporary name that [`Dir::create_temp`] made for `name` (or that
/// versions before it made, `<name>.tmp<pid>`), if `candidate` is one.
pub(crate) fn temp_pid(candidate: &OsStr, name: &OsStr) -> Option<u32> {
    let candidate = candidate.as_encoded_bytes();
    let mut ours = OsString::from(".");
    ours.push(name);
    ours.push(".twinscan-");
    if let Some(rest) = candidate.strip_prefix(ours.as_encoded_bytes()) {
        let (pid, random) = std::str::from_utf8(rest).ok()?.split_once('-')?;
        (random.len() == 16 && random.bytes().all(|b| b.is_ascii_hexdigit())).then_some(())?;
        return pid.parse().ok();
    }
    let mut old = name.to_os_string();
    old.push(".tmp");
    let pid = std::str::from_utf8(candidate.strip_prefix(old.as_encoded_bytes())?).ok()?;
    pid.bytes().all(|b| b.is_ascii_digit()).then(|| pid.parse().ok())?
}

/// Whether two open handles are one file (one device and inode).
pub(crate) fn same_file(a: &File, b: &File) -> bool {
    match (sys::identity(a), sys::identity(b)) {
        (Some(a), Some(b)) => a == b && a != (0, 0),
        _ => false,
    }
}

/// An open folder: the handle every operation below it starts from.
pub(crate) struct Dir {
    handle: sys::Handle,
    path: PathBuf,
}

impl Dir {
    /// Opens the folder at `path` as the user named it (links in it are followed).
    pub fn open(path: &Path) -> Result<Dir> {
        let handle = sys::open_dir(None, path, true).map_err(|e| Error::io(path, e))?;
        Ok(Dir { handle, path: path.into() })
    }

    /// Opens the parent folder of `path` and returns it with the file name.
    pub fn open_parent(path: &Path) -> Result<(Dir, &OsStr)> {
        let name = path.file_name().ok_or_else(|| Error::io(path, std::io::Error::other("no file name")))?;
        let parent = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
        Ok((Dir::open(parent)?, name))
    }

    /// The path of `name` in this folder, for messages and records.
    pub fn join(&self, name: &OsStr) -> PathBuf {
        self.path.join(name)
    }

    /// Opens the folder `rel` below this one a component at a time, refusing links; with
    /// `create`, missing folders are made (mode 0777 less the umask, as `mkdir` does).
    pub fn descend(&self, rel: &Path, create: bool) -> Result<Dir> {
        let mut dir =
            Dir { handle: sys::dup(&self.handle).map_err(|e| Error::io(&self.path, e))?, path: self.path.clone() };
        for name in names(rel)? {
            let path = dir.path.join(name);
            let handle = match sys::open_dir(Some(&dir.handle), Path::new(name), false) {
                Err(e) if create && e.kind() == std::io::ErrorKind::NotFound => {
                    match sys::mkdir(&dir.handle, name, 0o777) {
                        Ok(()) => {}
                        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                        Err(e) => return Err(Error::io(&path, e)),
                    }
                    sys::open_dir(Some(&dir.handle), Path::new(name), false)
                }
                other => other,
            }
            .map_err(|e| link_error(&path, e))?;
            dir = Dir { handle, path };
        }
        Ok(dir)
    }

    /// Makes the new folder `name`, readable and writable by the owner alone, and opens it: for
    /// files written by a library that opens them by path, where nobody else can plant a link.
    /// An existing `name` is an error.
    pub fn make_private(&self, name: &OsStr) -> Result<Dir> {
        let path = self.join(name);
        sys::mkdir(&self.handle, name, 0o700).map_err(|e| Error::io(&path, e))?;
        let handle = sys::open_dir(Some(&self.handle), Path::new(name), false).map_err(|e| link_error(&path, e))?;
        Ok(Dir { handle, path })
    }

    /// Removes the empty folder `name`.
    pub fn remove_dir(&self, name: &OsStr) -> Result<()> {
        sys::rmdir(&self.handle, name).map_err(|e| Error::io(self.join(name), e))
    }

    /// The path of this folder.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The metadata of this folder, through its handle.
    pub fn stat_held(&self) -> Result<Stat> {
        sys::stat_held(&self.handle).map_err(|e| Error::io(&self.path, e))
    }

    /// A path that reaches this very folder through its open handle (Linux's `/proc/self/fd`),
    /// for a library that opens files by path: a folder swapped in for this one under its name
    /// cannot redirect it. `None` where the system has no such path.
    pub fn held_path(&self) -> Option<PathBuf> {
        sys::held_path(&self.handle)
    }

    /// The metadata of `name` itself (a link is not followed); `None` when there is none.
    pub fn stat(&self, name: &OsStr) -> Result<Option<Stat>> {
        match sys::stat(&self.handle, name) {
            Ok(s) => Ok(Some(s)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::io(self.join(name), e)),
        }
    }

    /// The text of the symbolic link `name`.
    pub fn read_link(&self, name: &OsStr) -> Result<PathBuf> {
        sys::read_link(&self.handle, name).map_err(|e| Error::io(self.join(name), e))
    }

    /// Opens the regular file `name` for reading; a FIFO or device is refused, and so is a
    /// link unless `follow`.
    pub fn open_file(&self, name: &OsStr, follow: bool) -> Result<File> {
        let path = self.join(name);
        let file = sys::open_read(Some(&self.handle), Path::new(name), follow).map_err(|e| link_error(&path, e))?;
        regular(file, &path).map(|(f, _)| f)
    }

    /// Creates a new file for `name` under an unpredictable temporary name beside it: exclusive,
    /// never through a link, readable and writable by the owner alone until the caller sets its
    /// mode.
    pub fn create_temp(&self, name: &OsStr) -> Result<(File, OsString)> {
        self.new_temp(name, |tmp| sys::create_new(&self.handle, tmp))
    }

    /// Opens `name` for writing, creating it if missing (mode 0666 less the umask), never
    /// through a link and never blocking; anything but a regular file is refused.
    pub fn open_or_create(&self, name: &OsStr) -> Result<File> {
        let path = self.join(name);
        let file = sys::open_or_create(&self.handle, name).map_err(|e| link_error(&path, e))?;
        regular(file, &path).map(|(f, _)| f)
    }

    /// Makes a hard link to `name` (not followed if a link) under a temporary name in `to`.
    pub fn link_temp(&self, name: &OsStr, to: &Dir, for_name: &OsStr) -> Result<OsString> {
        to.new_temp(for_name, |tmp| sys::link(&self.handle, name, &to.handle, tmp)).map(|((), tmp)| tmp)
    }

    /// Runs `make` on fresh temporary names for `name` in this folder until one is free.
    fn new_temp<T>(&self, name: &OsStr, make: impl Fn(&OsStr) -> std::io::Result<T>) -> Result<(T, OsString)> {
        loop {
            let tmp = temp_name(name);
            match make(&tmp) {
                Ok(made) => return Ok((made, tmp)),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(Error::io(self.join(&tmp), e)),
            }
        }
    }

    /// Renames `name` to `to_name` in `to`. Without `replace` an existing target is never
    /// overwritten (the error then has kind `AlreadyExists`).
    pub fn rename(&self, name: &OsStr, to: &Dir, to_name: &OsStr, replace: bool) -> std::io::Result<()> {
        sys::rename(&self.handle, name, &to.handle, to_name, replace)
    }

    /// Removes the entry `name` (a link is removed, not its target).
    pub fn remove(&self, name: &OsStr) -> Result<()> {
        sys::unlink(&self.handle, name).map_err(|e| Error::io(self.join(name), e))
    }

    /// Removes leftovers of [`Dir::create_temp`] for `name` whose process is gone: regular
    /// files of this user only, never through a link. What cannot be removed is left.
    pub fn sweep_stale_temps(&self, name: &OsStr) {
        let Ok(entries) = std::fs::read_dir(&self.path) else { return };
        for entry in entries.flatten() {
            let candidate = entry.file_name();
            let Some(pid) = temp_pid(&candidate, name) else { continue };
            if pid == std::process::id() || sys::process_alive(pid) {
                continue;
            }
            if let Ok(Some(s)) = self.stat(&candidate) {
                if s.is_file && s.owned_by_me {
                    let _ = self.remove(&candidate);
                }
            }
        }
    }
}

/// The SHA-256 of an open file, read from its start; `path` names it in errors.
pub fn sha256(file: &mut File, path: &Path) -> Result<[u8; 32]> {
    let io = |e| Error::io(path, e);
    file.seek(SeekFrom::Start(0)).map_err(io)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = file.read(&mut buf).map_err(io)?;
        if n == 0 {
            return Ok(hasher.finalize().into());
        }
        hasher.update(&buf[..n]);
    }
}

/// What [`Dir::stat`] tells of an entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Stat {
    pub is_file: bool,
    pub is_dir: bool,
    pub is_link: bool,
    pub dev: u64,
    pub ino: u64,
    pub owned_by_me: bool,
    /// Whether anyone but its owner may write to it.
    pub shared: bool,
}

impl Stat {
    /// Whether `file` (an open handle) is this very entry.
    pub fn is(&self, file: &File) -> bool {
        sys::identity(file).is_some_and(|(dev, ino)| dev == self.dev && ino == self.ino)
    }
}

#[cfg(unix)]
mod sys {
    use std::ffi::OsStr;
    use std::fs::File;
    use std::io;
    use std::os::fd::{AsFd, OwnedFd};
    use std::os::unix::fs::MetadataExt;
    use std::path::{Path, PathBuf};

    use rustix::fs::{AtFlags, Mode, OFlags, CWD};

    use super::Stat;

    pub type Handle = OwnedFd;

    fn at(dir: Option<&OwnedFd>) -> std::os::fd::BorrowedFd<'_> {
        dir.map_or(CWD, |d| d.as_fd())
    }

    fn nofollow(follow: bool) -> OFlags {
        if follow {
            OFlags::empty()
        } else {
            OFlags::NOFOLLOW
        }
    }

    pub fn open_read(dir: Option<&OwnedFd>, path: &Path, follow: bool) -> io::Result<File> {
        let flags = OFlags::RDONLY | OFlags::NONBLOCK | OFlags::CLOEXEC | OFlags::NOCTTY | nofollow(follow);
        let fd = rustix::fs::openat(at(dir), path, flags, Mode::empty())?;
        Ok(File::from(fd))
    }

    pub fn open_dir(dir: Option<&OwnedFd>, path: &Path, follow: bool) -> io::Result<OwnedFd> {
        let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC | nofollow(follow);
        Ok(rustix::fs::openat(at(dir), path, flags, Mode::empty())?)
    }

    pub fn dup(fd: &OwnedFd) -> io::Result<OwnedFd> {
        fd.try_clone()
    }

    pub fn mkdir(dir: &OwnedFd, name: &OsStr, mode: u32) -> io::Result<()> {
        Ok(rustix::fs::mkdirat(dir, name, Mode::from_bits_truncate(mode))?)
    }

    pub fn rmdir(dir: &OwnedFd, name: &OsStr) -> io::Result<()> {
        Ok(rustix::fs::unlinkat(dir, name, AtFlags::REMOVEDIR)?)
    }

    pub fn create_new(dir: &OwnedFd, name: &OsStr) -> io::Result<File> {
        let flags = OFlags::RDWR | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        Ok(File::from(rustix::fs::openat(dir, name, flags, Mode::from_bits_truncate(0o600))?))
    }

    pub fn open_or_create(dir: &OwnedFd, name: &OsStr) -> io::Result<File> {
        let flags = OFlags::WRONLY | OFlags::CREATE | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC;
        Ok(File::from(rustix::fs::openat(dir, name, flags, Mode::from_bits_truncate(0o666))?))
    }

    pub fn stat(dir: &OwnedFd, name: &OsStr) -> io::Result<Stat> {
        stat_of(rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW)?)
    }

    pub fn stat_held(dir: &OwnedFd) -> io::Result<Stat> {
        stat_of(rustix::fs::fstat(dir)?)
    }

    /// Linux's name for an open folder: paths below it resolve through the handle.
    pub fn held_path(dir: &OwnedFd) -> Option<PathBuf> {
        use std::os::fd::AsRawFd;
        let path = PathBuf::from(format!("/proc/self/fd/{}", dir.as_raw_fd()));
        let same = |a: &rustix::fs::Stat, b: &rustix::fs::Stat| a.st_dev == b.st_dev && a.st_ino == b.st_ino;
        let (held, named) = (rustix::fs::fstat(dir).ok()?, rustix::fs::stat(&path).ok()?);
        same(&held, &named).then_some(path)
    }

    fn stat_of(s: rustix::fs::Stat) -> io::Result<Stat> {
        let kind = rustix::fs::FileType::from_raw_mode(s.st_mode);
        Ok(Stat {
            is_file: kind == rustix::fs::FileType::RegularFile,
            is_dir: kind == rustix::fs::FileType::Directory,
            is_link: kind == rustix::fs::FileType::Symlink,
            dev: s.st_dev,
            ino: s.st_ino,
            owned_by_me: s.st_uid == rustix::process::geteuid().as_raw(),
            shared: s.st_mode & 0o022 != 0,
        })
    }

    pub fn identity(file: &File) -> Option<(u64, u64)> {
        file.metadata().ok().map(|m| (m.dev(), m.ino()))
    }

    pub fn link(dir: &OwnedFd, name: &OsStr, to: &OwnedFd, to_name: &OsStr) -> io::Result<()> {
        Ok(rustix::fs::linkat(dir, name, to, to_name, AtFlags::empty())?)
    }

    pub fn read_link(dir: &OwnedFd, name: &OsStr) -> io::Result<std::path::PathBuf> {
        use std::os::unix::ffi::OsStringExt;
        let text = rustix::fs::readlinkat(dir, name, Vec::new())?;
        Ok(std::ffi::OsString::from_vec(text.into_bytes()).into())
    }

    pub fn rename(dir: &OwnedFd, name: &OsStr, to: &OwnedFd, to_name: &OsStr, replace: bool) -> io::Result<()> {
        if replace {
            return Ok(rustix::fs::renameat(dir, name, to, to_name)?);
        }
        #[cfg(any(target_os = "linux", target_os = "android"))]
        {
            match rustix::fs::renameat_with(dir, name, to, to_name, rustix::fs::RenameFlags::NOREPLACE) {
                // File systems without RENAME_NOREPLACE fall back to checking first.
                Err(rustix::io::Errno::INVAL | rustix::io::Errno::NOSYS) => {}
                other => return Ok(other?),
            }
        }
        match rustix::fs::statat(to, to_name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(_) => Err(io::ErrorKind::AlreadyExists.into()),
            Err(rustix::io::Errno::NOENT) => Ok(rustix::fs::renameat(dir, name, to, to_name)?),
            Err(e) => Err(e.into()),
        }
    }

    pub fn unlink(dir: &OwnedFd, name: &OsStr) -> io::Result<()> {
        Ok(rustix::fs::unlinkat(dir, name, AtFlags::empty())?)
    }

    pub fn is_link_refusal(e: &io::Error) -> bool {
        // O_NOFOLLOW on a link: ELOOP; O_DIRECTORY|O_NOFOLLOW on a link may give ENOTDIR.
        matches!(rustix::io::Errno::from_io_error(e), Some(rustix::io::Errno::LOOP | rustix::io::Errno::NOTDIR))
    }

    pub fn process_alive(pid: u32) -> bool {
        let Some(pid) = i32::try_from(pid).ok().and_then(rustix::process::Pid::from_raw) else { return false };
        // EPERM: it exists but belongs to someone else.
        !matches!(rustix::process::test_kill_process(pid), Err(rustix::io::Errno::SRCH))
    }
}

/// Elsewhere the same operations by path: links are checked for before each step rather than
/// refused by the kernel, which leaves a race that the Unix build does not have.
#[cfg(not(unix))]
mod sys {
    use std::ffi::OsStr;
    use std::fs::{File, OpenOptions};
    use std::io;
    use std::path::{Path, PathBuf};

    use super::Stat;

    pub type Handle = PathBuf;

    fn full(dir: Option<&PathBuf>, path: &Path) -> PathBuf {
        dir.map_or_else(|| path.to_path_buf(), |d| d.join(path))
    }

    fn no_link(path: &Path, follow: bool) -> io::Result<()> {
        match std::fs::symlink_metadata(path) {
            Ok(m) if !follow && m.is_symlink() => Err(io::Error::other("a symbolic link (not followed)")),
            _ => Ok(()),
        }
    }

    pub fn open_read(dir: Option<&PathBuf>, path: &Path, follow: bool) -> io::Result<File> {
        let path = full(dir, path);
        no_link(&path, follow)?;
        File::open(path)
    }

    pub fn open_dir(dir: Option<&PathBuf>, path: &Path, follow: bool) -> io::Result<PathBuf> {
        let path = full(dir, path);
        no_link(&path, follow)?;
        if std::fs::metadata(&path)?.is_dir() {
            Ok(path)
        } else {
            Err(io::ErrorKind::NotADirectory.into())
        }
    }

    pub fn dup(dir: &PathBuf) -> io::Result<PathBuf> {
        Ok(dir.clone())
    }

    pub fn mkdir(dir: &PathBuf, name: &OsStr, _mode: u32) -> io::Result<()> {
        std::fs::create_dir(dir.join(name))
    }

    pub fn rmdir(dir: &PathBuf, name: &OsStr) -> io::Result<()> {
        std::fs::remove_dir(dir.join(name))
    }

    pub fn create_new(dir: &PathBuf, name: &OsStr) -> io::Result<File> {
        OpenOptions::new().read(true).write(true).create_new(true).open(dir.join(name))
    }

    pub fn open_or_create(dir: &PathBuf, name: &OsStr) -> io::Result<File> {
        no_link(&dir.join(name), false)?;
        OpenOptions::new().write(true).create(true).truncate(false).open(dir.join(name))
    }

    pub fn held_path(_: &PathBuf) -> Option<PathBuf> {
        None
    }

    pub fn stat_held(dir: &PathBuf) -> io::Result<Stat> {
        stat(dir, OsStr::new("."))
    }

    pub fn stat(dir: &PathBuf, name: &OsStr) -> io::Result<Stat> {
        let m = std::fs::symlink_metadata(dir.join(name))?;
        Ok(Stat {
            is_file: m.is_file(),
            is_dir: m.is_dir(),
            is_link: m.is_symlink(),
            dev: 0,
            ino: 0,
            owned_by_me: true,
            shared: false,
        })
    }

    pub fn identity(_: &File) -> Option<(u64, u64)> {
        Some((0, 0))
    }

    pub fn link(dir: &PathBuf, name: &OsStr, to: &PathBuf, to_name: &OsStr) -> io::Result<()> {
        std::fs::hard_link(dir.join(name), to.join(to_name))
    }

    pub fn read_link(dir: &PathBuf, name: &OsStr) -> io::Result<PathBuf> {
        std::fs::read_link(dir.join(name))
    }

    pub fn rename(dir: &PathBuf, name: &OsStr, to: &PathBuf, to_name: &OsStr, replace: bool) -> io::Result<()> {
        if !replace && std::fs::symlink_metadata(to.join(to_name)).is_ok() {
            return Err(io::ErrorKind::AlreadyExists.into());
        }
        std::fs::rename(dir.join(name), to.join(to_name))
    }

    pub fn unlink(dir: &PathBuf, name: &OsStr) -> io::Result<()> {
        std::fs::remove_file(dir.join(name))
    }

    pub fn is_link_refusal(_: &io::Error) -> bool {
        false
    }

    pub fn process_alive(_: u32) -> bool {
        true
    }
}
