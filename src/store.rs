//! The file layout shared by the scan index and the gallery: an 8-byte magic, a little-endian
//! `u32` format version, the SHA-256 of the payload, then the payload (the value encoded with
//! postcard). Saved to a temporary file in the same folder, flushed and renamed over the old one,
//! so a crash leaves the old file or the new one, never half of each. [`FileLock`] keeps two
//! writers of one file apart.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;

use serde::de::DeserializeOwned;
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};
use crate::safe_fs::Dir;

const HEADER: usize = 8 + 4 + 32;

/// One kind of file: its magic, the version this build reads and writes, and how its errors
/// are reported.
pub(crate) struct Format {
    pub magic: &'static [u8; 8],
    pub version: u32,
    /// Older versions this build still reads (and migrates); empty for most files.
    pub older: &'static [u32],
    /// What the file is called in messages ("index", "gallery").
    pub name: &'static str,
    pub error: fn(&Path, String) -> Error,
}

impl Format {
    fn invalid(&self, path: &Path, reason: impl Into<String>) -> Error {
        (self.error)(path, reason.into())
    }

    /// Reads a file and checks its magic, version and checksum; nothing of a file that fails a
    /// check is used.
    pub fn load<T: DeserializeOwned>(&self, path: &Path) -> Result<T> {
        self.current(self.open(crate::safe_fs::open_regular(path, true)?.0, path)?)
    }

    /// [`Format::load`] on bytes in memory; `path` names them in errors.
    pub fn read_bytes<T: DeserializeOwned>(&self, bytes: &[u8], path: &Path) -> Result<T> {
        self.current(self.open(std::io::Cursor::new(bytes), path)?)
    }

    /// The payload as this version's value; an older version is its reader's to migrate.
    fn current<T: DeserializeOwned, R: Read>(&self, (version, payload): (u32, Payload<'_, R>)) -> Result<T> {
        if version != self.version {
            let reason = format!("{} format {version}, read only by its migration", self.name);
            return Err(self.invalid(payload.path, reason));
        }
        payload.decode()
    }

    /// Checks the header (this version or one of the older ones read) and the checksum of the
    /// whole payload, then returns the version and the payload, to be parsed from its start: a
    /// large file is read twice rather than held in memory twice (as bytes and as values).
    pub fn open<'f, R: Read + Seek>(&'f self, mut r: R, path: &'f Path) -> Result<(u32, Payload<'f, R>)> {
        let io = |e| Error::io(path, e);
        let mut header = Vec::with_capacity(HEADER);
        r.by_ref().take(HEADER as u64).read_to_end(&mut header).map_err(io)?;
        if header.len() < HEADER || &header[..8] != self.magic {
            return Err(self.invalid(path, format!("not a twinscan {} (bad magic)", self.name)));
        }
        let version = u32::from_le_bytes([header[8], header[9], header[10], header[11]]);
        if version != self.version && !self.older.contains(&version) {
            let name = self.name;
            return Err(self.invalid(path, format!("{name} format {version}, this build reads {}", self.version)));
        }
        let mut hashed = Hashed { inner: std::io::sink(), hash: Sha256::new(), error: None };
        std::io::copy(&mut r, &mut hashed).map_err(io)?;
        if hashed.hash.finalize().as_slice() != &header[12..HEADER] {
            return Err(self.invalid(path, "checksum mismatch (damaged or truncated)"));
        }
        r.seek(SeekFrom::Start(HEADER as u64)).map_err(io)?;
        Ok((version, Payload { format: self, reader: r, path }))
    }

    /// The bytes [`Format::save`] writes.
    pub fn to_bytes<T: Serialize>(&self, value: &T) -> Result<Vec<u8>> {
        let mut out = Vec::new();
        self.write(value, &mut std::io::Cursor::new(&mut out))
            .map_err(|e| self.invalid(Path::new(&format!("<{}>", self.name)), e.to_string()))?;
        Ok(out)
    }

    /// Writes the header with a blank checksum, streams the payload through the hash, then
    /// fills the checksum in: a large file is never held twice.
    fn write<T: Serialize, W: Write + Seek>(&self, value: &T, out: &mut W) -> std::io::Result<()> {
        out.write_all(self.magic)?;
        out.write_all(&self.version.to_le_bytes())?;
        out.write_all(&[0; 32])?;
        let digest = {
            let mut hashed = Hashed { inner: std::io::BufWriter::new(&mut *out), hash: Sha256::new(), error: None };
            // postcard reports any failed write as "buffer full"; the disk's own error is kept.
            if let Err(e) = postcard::to_io(value, &mut hashed) {
                return Err(hashed.error.take().unwrap_or_else(|| std::io::Error::other(e)));
            }
            hashed.inner.flush()?;
            hashed.hash.clone().finalize()
        };
        out.seek(SeekFrom::Start(12))?;
        out.write_all(&digest)?;
        out.seek(SeekFrom::End(0))?;
        Ok(())
    }

    /// Writes atomically: a new temporary file beside `path` (exclusive, under an unpredictable
    /// name, never through a link; mode 0600), flushed to disk, then renamed over it. Leftovers of
    /// saves whose process died are removed first.
    pub fn save<T: Serialize>(&self, value: &T, path: &Path) -> Result<()> {
        let (dir, name) = Dir::open_parent(path)?;
        dir.sweep_stale_temps(name);
        let (mut file, tmp) = dir.create_temp(name)?;
        let written = self
            .write(value, &mut file)
            .and_then(|()| file.sync_all())
            .and_then(|()| dir.rename(&tmp, &dir, name, true));
        written.map_err(|e| {
            let _ = dir.remove(&tmp);
            Error::io(path, e)
        })
    }
}

/// A checked payload, ready to be parsed as the value its version says.
pub(crate) struct Payload<'f, R> {
    format: &'f Format,
    reader: R,
    path: &'f Path,
}

impl<R: Read> Payload<'_, R> {
    /// Parses the payload as a `T`.
    pub fn decode<T: DeserializeOwned>(self) -> Result<T> {
        // Room for the longest string in a file (a path or a label).
        let mut scratch = vec![0u8; 1 << 16];
        postcard::from_io((std::io::BufReader::new(self.reader), &mut scratch))
            .map(|(value, _)| value)
            .map_err(|e| self.format.invalid(self.path, format!("undecodable: {e}")))
    }
}

/// A writer that hashes what passes through it, and keeps the first error it met.
struct Hashed<W: Write> {
    inner: W,
    hash: Sha256,
    error: Option<std::io::Error>,
}

impl<W: Write> Write for Hashed<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self.inner.write(buf) {
            Ok(n) => {
                self.hash.update(&buf[..n]);
                Ok(n)
            }
            Err(e) => {
                let kept = std::io::Error::new(e.kind(), e.to_string());
                self.error.get_or_insert(e);
                Err(kept)
            }
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// The first 12 characters of a model fingerprint, for messages; a file may hold any string
/// there, so this never cuts inside a character.
pub(crate) fn short(fingerprint: &str) -> &str {
    fingerprint.char_indices().nth(12).map_or(fingerprint, |(i, _)| &fingerprint[..i])
}

/// Whether a file named `name` in the folder of `path` belongs to it: `path` itself, its lock,
/// its thumbnail files, its graph folders or one of its temporary files (exactly these names, so an index
/// `photos/c` hides no `c*.jpg`).
pub fn is_companion(path: &Path, name: &std::ffi::OsStr) -> bool {
    let Some(own) = path.file_name() else { return false };
    let mut lock = own.to_os_string();
    lock.push(".lock");
    name == own
        || name == lock
        || crate::safe_fs::temp_pid(name, own).is_some()
        || crate::thumbs::generation_of(own, name).is_some()
        || crate::graph_files::generation_of(own, name).is_some()
}

/// An exclusive lock on an index or gallery file, held until dropped: an OS advisory lock on
/// the file `<path>.lock` beside it, so that two processes never read-modify-write it at once.
#[derive(Debug)]
pub struct FileLock {
    _file: File,
}

impl FileLock {
    /// Takes the lock of the file at `path`, or fails at once when another process holds it.
    /// The lock file is opened without following a link and must be a regular file. Once the
    /// lock is held, temporary files that dead processes left beside `path` are removed.
    pub fn acquire(path: impl AsRef<Path>) -> Result<FileLock> {
        let path = path.as_ref();
        let (dir, name) = Dir::open_parent(path)?;
        let mut lock = name.to_os_string();
        lock.push(".lock");
        let file = dir.open_or_create(&lock)?;
        file.try_lock().map_err(|_| Error::Locked { path: path.into() })?;
        dir.sweep_stale_temps(name);
        Ok(FileLock { _file: file })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEST: Format = Format {
        magic: b"TWSCNTST",
        version: 3,
        older: &[],
        name: "test file",
        error: |path, reason| Error::Index { path: path.into(), reason },
    };

    #[test]
    fn round_trips_and_refuses_damage() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.bin");
        let value = (String::from("label"), vec![0.5f32, -1.0], 7u64);
        TEST.save(&value, &path).unwrap();
        assert_eq!(TEST.load::<(String, Vec<f32>, u64)>(&path).unwrap(), value);
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(bytes, TEST.to_bytes(&value).unwrap());
        for cut in [0, 10, HEADER, bytes.len() - 1] {
            assert!(TEST.read_bytes::<(String, Vec<f32>, u64)>(&bytes[..cut], &path).is_err(), "truncated at {cut}");
        }
        let mut flipped = bytes.clone();
        let last = flipped.len() - 1;
        flipped[last] ^= 1;
        let err = TEST.read_bytes::<(String, Vec<f32>, u64)>(&flipped, &path).unwrap_err().to_string();
        assert!(err.contains("checksum"), "{err}");
        let mut other = bytes.clone();
        other[8..12].copy_from_slice(&2u32.to_le_bytes());
        let err = TEST.read_bytes::<(String, Vec<f32>, u64)>(&other, &path).unwrap_err().to_string();
        assert!(err.contains("test file format 2, this build reads 3"), "{err}");
        let err = TEST.read_bytes::<(String, Vec<f32>, u64)>(b"TWSCNIDX", &path).unwrap_err().to_string();
        assert!(err.contains("bad magic"), "{err}");
    }

    #[cfg(unix)]
    #[test]
    fn a_save_writes_through_no_link_planted_at_a_temporary_name() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("i.twinscan");
        let victim = dir.path().join("victim");
        std::fs::write(&victim, b"victim").unwrap();
        // The name versions before this one used for their temporary file.
        std::os::unix::fs::symlink(&victim, dir.path().join(format!("i.twinscan.tmp{}", std::process::id()))).unwrap();
        TEST.save(&(String::from("x"), vec![1.0f32], 1u64), &path).unwrap();
        assert_eq!(std::fs::read(&victim).unwrap(), b"victim");
        assert!(std::fs::symlink_metadata(&path).unwrap().is_file());
        let leftovers: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n.contains("twinscan-"))
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
    }

    #[test]
    fn a_second_writer_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("i.twinscan");
        let held = FileLock::acquire(&path).unwrap();
        assert!(matches!(FileLock::acquire(&path), Err(Error::Locked { .. })));
        drop(held);
        FileLock::acquire(&path).unwrap();
    }
}
