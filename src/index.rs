//! The collection index: per image its path, size, modification time, content hash, embedding
//! and grey thumbnail (for the containment check), plus the fingerprint of the model (and the
//! invariance) that made the embeddings.
//!
//! On disk: the magic `TWSCNIDX`, the format version, the SHA-256 of the payload, then the
//! [`Index`] encoded with postcard, saved atomically (see [`crate::store`]). Writers take a
//! [`FileLock`](crate::store::FileLock) on it first.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::contain::Thumb;
use crate::error::{Error, Result};
use crate::store::{short, Format};

/// Version of the index layout; an index of another version is refused.
pub const INDEX_VERSION: u32 = 2;

const FORMAT: Format = Format {
    magic: b"TWSCNIDX",
    version: INDEX_VERSION,
    name: "index",
    error: |path, reason| Error::Index { path: path.into(), reason },
};

/// One indexed image.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    /// Where it was found.
    #[serde(with = "path_bytes")]
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

/// A path as the bytes of its name, so that names that are not UTF-8 (legal on Unix) are kept
/// exactly. postcard writes bytes as it writes a string (length, then the bytes), so indexes of
/// UTF-8 paths read the same either way.
mod path_bytes {
    use std::path::{Path, PathBuf};

    use serde::{Deserializer, Serializer};

    pub fn serialize<S: Serializer>(path: &Path, s: S) -> Result<S::Ok, S::Error> {
        #[cfg(unix)]
        return s.serialize_bytes(std::os::unix::ffi::OsStrExt::as_bytes(path.as_os_str()));
        #[cfg(not(unix))]
        return match path.to_str() {
            Some(text) => s.serialize_bytes(text.as_bytes()),
            None => Err(serde::ser::Error::custom(format!("{} is not Unicode", path.display()))),
        };
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<PathBuf, D::Error> {
        let bytes = byte_buf(d)?;
        #[cfg(unix)]
        return Ok(PathBuf::from(<std::ffi::OsStr as std::os::unix::ffi::OsStrExt>::from_bytes(&bytes)));
        #[cfg(not(unix))]
        return String::from_utf8(bytes).map(PathBuf::from).map_err(serde::de::Error::custom);
    }

    /// A byte buffer read through `deserialize_byte_buf` (a plain `Vec<u8>` would be read as a
    /// sequence, which postcard encodes the same way but other formats do not).
    fn byte_buf<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = Vec<u8>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a path's bytes")
            }
            fn visit_bytes<E>(self, v: &[u8]) -> Result<Vec<u8>, E> {
                Ok(v.to_vec())
            }
            fn visit_byte_buf<E>(self, v: Vec<u8>) -> Result<Vec<u8>, E> {
                Ok(v)
            }
            fn visit_str<E>(self, v: &str) -> Result<Vec<u8>, E> {
                Ok(v.as_bytes().to_vec())
            }
        }
        d.deserialize_byte_buf(Visitor)
    }
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
        FORMAT.load(path)
    }

    /// [`Index::load`] on bytes in memory; `path` names them in errors.
    pub fn from_bytes(bytes: &[u8], path: &Path) -> Result<Index> {
        FORMAT.read_bytes(bytes, path)
    }

    /// The index's bytes as [`Index::save`] writes them.
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        FORMAT.to_bytes(self)
    }

    /// Writes the index atomically (a crash leaves the old index or the new one).
    pub fn save(&self, path: &Path) -> Result<()> {
        FORMAT.save(self, path)
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
    fn round_trips_and_checks_its_model() {
        // Damage, truncation and locking are tested once, in `store`.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("i.twinscan");
        let index = sample();
        index.save(&path).unwrap();
        assert_eq!(Index::load(&path).unwrap(), index);
        index.check_model(&path, "abc123", "none").unwrap();
        assert!(index.check_model(&path, "other", "none").is_err());
        assert!(index.check_model(&path, "abc123", "mirror-rotate").is_err());
    }

    #[cfg(unix)]
    #[test]
    fn names_that_are_not_utf8_round_trip_and_utf8_ones_are_stored_as_before() {
        use std::os::unix::ffi::OsStrExt;
        let mut index = sample();
        index.entries[0].path = Path::new(std::ffi::OsStr::from_bytes(b"a/\xff\xfe.jpg")).to_path_buf();
        let bytes = index.to_bytes().unwrap();
        assert_eq!(Index::from_bytes(&bytes, Path::new("i")).unwrap(), index);
        // Bytes and strings share postcard's encoding, so indexes written before read the same.
        let as_text = postcard::to_allocvec(&"a/b.jpg").unwrap();
        let as_bytes = postcard::to_allocvec(&Entry { ..sample().entries[0].clone() }).unwrap();
        assert!(as_bytes.starts_with(&as_text));
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
}
