//! The collection index: per image its path, size, modification time, content hash, embedding
//! and grey thumbnail (for the containment check), plus the fingerprint of the model (and the invariance) that made the embeddings.
//!
//! On disk: the magic `TWSCNIDX`, a little-endian `u32` format version, the SHA-256 of the
//! payload, then the payload, the [`Index`] encoded with postcard. Written to a temporary file in
//! the same folder and renamed over the old one, so a crash leaves the old index or the new one,
//! never half of each. A lock file beside it (`<index>.lock`, an OS advisory lock) keeps two
//! writers apart.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::contain::Thumb;
use crate::error::{Error, Result};

const MAGIC: &[u8; 8] = b"TWSCNIDX";
/// Version of the index layout; an index of another version is refused.
pub const INDEX_VERSION: u32 = 2;
const HEADER: usize = 8 + 4 + 32;

/// One indexed image.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    /// Where it was found.
    pub path: PathBuf,
    /// File size in bytes.
    pub size: u64,
    /// Modification time, nanoseconds since the Unix epoch (0 when the platform has none).
    pub modified_ns: u128,
    /// SHA-256 of the file's bytes.
    pub sha256: [u8; 32],
    /// Width and height as shown (EXIF orientation applied), at full size.
    pub dims: (u32, u32),
    /// The embedding ([`crate::Model::embedding_len`] values).
    pub embedding: Vec<f32>,
    /// The grey thumbnail that [`crate::contain`] compares.
    pub thumb: Thumb,
}

/// Every image of a collection and what made their embeddings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Index {
    /// [`crate::Model::fingerprint`] of the model.
    pub model: String,
    /// [`crate::Invariance::as_str`] of the embeddings.
    pub invariance: String,
    /// The images, sorted by path.
    pub entries: Vec<Entry>,
}

fn invalid(path: &Path, reason: impl Into<String>) -> Error {
    Error::Index { path: path.into(), reason: reason.into() }
}

impl Index {
    /// An empty index for embeddings from `model` under `invariance`.
    pub fn new(model: &str, invariance: &str) -> Index {
        Index { model: model.into(), invariance: invariance.into(), entries: Vec::new() }
    }

    /// Reads an index and checks its magic, version and checksum. Nothing of a file that fails a
    /// check is used.
    pub fn load(path: &Path) -> Result<Index> {
        Index::read(File::open(path).map_err(|e| Error::io(path, e))?, path)
    }

    /// [`Index::load`] on bytes in memory; `path` names them in errors.
    pub fn from_bytes(bytes: &[u8], path: &Path) -> Result<Index> {
        Index::read(std::io::Cursor::new(bytes), path)
    }

    /// Checks the header, then hashes the whole payload, then parses it from the start: a
    /// large index is read twice rather than held in memory twice (as bytes and as entries).
    fn read<R: Read + Seek>(mut r: R, path: &Path) -> Result<Index> {
        let io = |e| Error::io(path, e);
        let mut header = Vec::with_capacity(HEADER);
        r.by_ref().take(HEADER as u64).read_to_end(&mut header).map_err(io)?;
        if header.len() < HEADER || &header[..8] != MAGIC {
            return Err(invalid(path, "not a twinscan index (bad magic)"));
        }
        let version = u32::from_le_bytes([header[8], header[9], header[10], header[11]]);
        if version != INDEX_VERSION {
            return Err(invalid(path, format!("index format {version}, this build reads {INDEX_VERSION}")));
        }
        let mut hashed = Hashed { inner: std::io::sink(), hash: Sha256::new() };
        std::io::copy(&mut r, &mut hashed).map_err(io)?;
        if hashed.hash.finalize().as_slice() != &header[12..HEADER] {
            return Err(invalid(path, "checksum mismatch (damaged or truncated)"));
        }
        r.seek(SeekFrom::Start(HEADER as u64)).map_err(io)?;
        // Room for the longest string in an index (a path).
        let mut scratch = vec![0u8; 1 << 16];
        postcard::from_io((std::io::BufReader::new(r), &mut scratch))
            .map(|(index, _)| index)
            .map_err(|e| invalid(path, format!("undecodable: {e}")))
    }

    /// The index's bytes as [`Index::save`] writes them.
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        let mut out = Vec::new();
        self.write(&mut std::io::Cursor::new(&mut out)).map_err(|e| invalid(Path::new("<index>"), e.to_string()))?;
        Ok(out)
    }

    /// Writes the header with a blank checksum, streams the payload through the hash, then
    /// fills the checksum in: a large index (thumbnails are most of it) is never held twice.
    fn write<W: Write + Seek>(&self, out: &mut W) -> std::io::Result<()> {
        out.write_all(MAGIC)?;
        out.write_all(&INDEX_VERSION.to_le_bytes())?;
        out.write_all(&[0; 32])?;
        let digest = {
            let mut hashed = Hashed { inner: std::io::BufWriter::new(&mut *out), hash: Sha256::new() };
            postcard::to_io(self, &mut hashed).map_err(std::io::Error::other)?;
            hashed.inner.flush()?;
            hashed.hash.clone().finalize()
        };
        out.seek(SeekFrom::Start(12))?;
        out.write_all(&digest)?;
        out.seek(SeekFrom::End(0))?;
        Ok(())
    }

    /// Writes the index atomically: a temporary file beside `path`, flushed to disk, then
    /// renamed over it.
    pub fn save(&self, path: &Path) -> Result<()> {
        let tmp = temp_path(path);
        let write = || -> std::io::Result<()> {
            let mut f = File::create(&tmp)?;
            self.write(&mut f)?;
            f.sync_all()?;
            std::fs::rename(&tmp, path)
        };
        write().map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            Error::io(path, e)
        })
    }

    /// Checks that the embeddings came from `model` under `invariance`.
    pub fn check_model(&self, path: &Path, model: &str, invariance: &str) -> Result<()> {
        if self.model != model || self.invariance != invariance {
            return Err(invalid(
                path,
                format!(
                    "made by model {} ({}), not by the model in use {} ({})",
                    short(&self.model),
                    self.invariance,
                    short(model),
                    invariance
                ),
            ));
        }
        Ok(())
    }
}

/// A writer that hashes what passes through it.
struct Hashed<W: Write> {
    inner: W,
    hash: Sha256,
}

impl<W: Write> Write for Hashed<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hash.update(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

fn short(fingerprint: &str) -> &str {
    &fingerprint[..fingerprint.len().min(12)]
}

fn temp_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().map(|n| n.to_os_string()).unwrap_or_default();
    name.push(format!(".tmp{}", std::process::id()));
    path.with_file_name(name)
}

/// An exclusive lock on an index, held until dropped.
#[derive(Debug)]
pub struct IndexLock {
    _file: File,
}

impl IndexLock {
    /// Takes the lock of the index at `path` (the file `<path>.lock`), or fails at once when
    /// another process holds it.
    pub fn acquire(path: &Path) -> Result<IndexLock> {
        let mut name = path.file_name().map(|n| n.to_os_string()).unwrap_or_default();
        name.push(".lock");
        let lock_path = path.with_file_name(name);
        let file = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| Error::io(&lock_path, e))?;
        file.try_lock().map_err(|_| invalid(path, "in use by another twinscan process (lock held)"))?;
        Ok(IndexLock { _file: file })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Index {
        let mut index = Index::new("abc123", "none");
        index.entries.push(Entry {
            path: "a/b.jpg".into(),
            size: 10,
            modified_ns: 5,
            sha256: [7; 32],
            dims: (4, 3),
            embedding: vec![0.5, -1.0],
            thumb: Thumb::of(&image::DynamicImage::new_luma8(8, 6)),
        });
        index
    }

    #[test]
    fn round_trips_and_refuses_damage() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("i.twinscan");
        let index = sample();
        index.save(&path).unwrap();
        assert_eq!(Index::load(&path).unwrap(), index);
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(bytes, index.to_bytes().unwrap());
        for cut in [0, 10, HEADER, bytes.len() - 1] {
            assert!(Index::from_bytes(&bytes[..cut], &path).is_err(), "truncated at {cut}");
        }
        let mut flipped = bytes.clone();
        let last = flipped.len() - 1;
        flipped[last] ^= 1;
        let err = Index::from_bytes(&flipped, &path).unwrap_err().to_string();
        assert!(err.contains("checksum"), "{err}");
        assert!(index.check_model(&path, "other", "none").is_err());
        assert!(index.check_model(&path, "abc123", "mirror-rotate").is_err());
    }

    #[test]
    fn an_index_of_another_format_is_refused_with_the_way_out() {
        let path = Path::new("old.twinscan");
        let mut bytes = sample().to_bytes().unwrap();
        // Format 1 had no thumbnails: its entries cannot be read as this format's.
        bytes[8..12].copy_from_slice(&1u32.to_le_bytes());
        let err = Index::from_bytes(&bytes, path).unwrap_err().to_string();
        assert!(err.contains("index format 1, this build reads 2") && err.contains("--rebuild"), "{err}");
    }

    #[test]
    fn a_second_writer_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("i.twinscan");
        let held = IndexLock::acquire(&path).unwrap();
        assert!(IndexLock::acquire(&path).is_err());
        drop(held);
        IndexLock::acquire(&path).unwrap();
    }
}
