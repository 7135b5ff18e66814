//! The collection index: per image its path, size, modification time, content hash and
//! embedding, plus the fingerprint of the model (and the invariance) that made the embeddings,
//! the containment verdicts already reached, each image's nearest others
//! ([`crate::neighbours`]) and where each content's thumbnail is ([`crate::thumbs`]).
//!
//! On disk: the magic `TWSCNIDX`, the format version, the SHA-256 of the payload, then the
//! index encoded with postcard, saved atomically (see [`crate::store`]) after the thumbnails it
//! names, so that it is the last file of a save written. Writers take a
//! [`FileLock`](crate::store::FileLock) on it first.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::contain::{hash_key, Thumb, Verdicts};
use crate::error::{Error, Result};
use crate::graph_files::GraphRecord;
use crate::neighbours::Neighbours;
use crate::store::{short, Format};
use crate::thumbs::{ThumbTable, Thumbs};
use crate::Model;

/// Version of the index layout. Versions 2 (no containment verdicts), 3 (no neighbour lists), 4
/// (thumbnails inside) and 5 (no graphs kept) are read and migrated, their embeddings and
/// thumbnails kept; any other version is refused.
pub const INDEX_VERSION: u32 = 6;

const FORMAT: Format = Format {
    magic: b"TWSCNIDX",
    version: INDEX_VERSION,
    older: &[2, 3, 4, 5],
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
}

/// Every image of a collection and what made their embeddings.
#[derive(Debug, Clone, PartialEq)]
pub struct Index {
    /// [`crate::Model::fingerprint`] of the model.
    pub model: String,
    /// [`crate::Invariance::as_str`] of the embeddings.
    pub invariance: String,
    /// The images, sorted by path.
    pub entries: Vec<Entry>,
    /// The containment checks already made on pairs of these images.
    pub verdicts: Verdicts,
    /// Each distinct image's nearest others.
    pub neighbours: Neighbours,
    /// Each distinct image's thumbnail.
    pub thumbs: Thumbs,
    /// The HNSW graphs kept beside the index, if any ([`crate::graph_files`]).
    pub(crate) graph: Option<GraphRecord>,
}

/// The index as this version stores it (postcard encodes fields by position).
#[derive(Deserialize)]
struct IndexFile {
    model: String,
    invariance: String,
    entries: Vec<Entry>,
    verdicts: Verdicts,
    neighbours: Neighbours,
    thumbs: ThumbTable,
    graph: Option<GraphRecord>,
}

/// [`IndexFile`] borrowed from its parts, for writing.
#[derive(Serialize)]
struct IndexFileRef<'a> {
    model: &'a str,
    invariance: &'a str,
    entries: &'a [Entry],
    verdicts: &'a Verdicts,
    neighbours: &'a Neighbours,
    thumbs: &'a ThumbTable,
    graph: Option<&'a GraphRecord>,
}

/// An entry of formats 2 to 4, its thumbnail inside.
#[derive(Deserialize)]
struct EntryV4 {
    #[serde(with = "path_bytes")]
    path: PathBuf,
    size: u64,
    modified_ns: u128,
    sha256: [u8; 32],
    dims: (u32, u32),
    embedding: Vec<f32>,
    thumb: Thumb,
}

/// Formats 2 to 4: 2 without verdicts, 3 without lists; what a format lacks reads as empty.
#[derive(Deserialize)]
struct IndexV4 {
    model: String,
    invariance: String,
    entries: Vec<EntryV4>,
    #[serde(default)]
    verdicts: Verdicts,
    #[serde(default)]
    neighbours: Neighbours,
}

/// An index as saved, borrowed from its parts, so that a collection can save without
/// assembling one.
pub(crate) struct IndexParts<'a> {
    pub model: &'a str,
    pub invariance: &'a str,
    pub entries: &'a [Entry],
    pub verdicts: &'a Verdicts,
    pub neighbours: &'a Neighbours,
    pub graph: Option<&'a GraphRecord>,
}

impl IndexParts<'_> {
    /// Writes the thumbnails `thumbs` has not stored yet, then the index atomically (see
    /// [`Index::save`]).
    pub fn save(&self, thumbs: &Thumbs, path: &Path) -> Result<()> {
        let live: HashSet<u64> = self.entries.iter().map(|e| hash_key(&e.sha256)).collect();
        let table = thumbs.flush(path, &live)?;
        FORMAT.save(&self.file(&table), path)?;
        thumbs.commit(path, table);
        Ok(())
    }

    fn file<'a>(&'a self, thumbs: &'a ThumbTable) -> IndexFileRef<'a> {
        let IndexParts { model, invariance, entries, verdicts, neighbours, graph } = *self;
        IndexFileRef { model, invariance, entries, verdicts, neighbours, thumbs, graph }
    }
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
        Index {
            model: model.into(),
            invariance: invariance.into(),
            entries: Vec::new(),
            verdicts: Verdicts::default(),
            neighbours: Neighbours::default(),
            thumbs: Thumbs::new(),
            graph: None,
        }
    }

    /// Reads an index and checks its magic, version, checksum and contents (entries sorted by
    /// path without repeats, every embedding non-empty, finite and as long as the others).
    /// Nothing of a file that fails a check is used.
    pub fn load(path: impl AsRef<Path>) -> Result<Index> {
        let path = path.as_ref();
        let index = Index::read(crate::safe_fs::open_regular(path, true)?.0, path)?;
        index.validate(path)?;
        Ok(index)
    }

    /// [`Index::load`] on bytes in memory; `path` names them in errors.
    pub fn from_bytes(bytes: &[u8], path: impl AsRef<Path>) -> Result<Index> {
        let path = path.as_ref();
        let index = Index::read(std::io::Cursor::new(bytes), path)?;
        index.validate(path)?;
        Ok(index)
    }

    /// This version's index, or an older one migrated (what it lacks starts empty; its
    /// thumbnails wait to be stored at the next save).
    fn read<R: std::io::Read + std::io::Seek>(r: R, path: &Path) -> Result<Index> {
        let (version, payload) = FORMAT.open(r, path)?;
        if version >= 5 {
            let f: IndexFile = match version {
                5 => {
                    let (model, invariance, entries, verdicts, neighbours, thumbs) = payload.decode()?;
                    IndexFile { model, invariance, entries, verdicts, neighbours, thumbs, graph: None }
                }
                _ => payload.decode()?,
            };
            Thumbs::validate(&f.thumbs).map_err(|reason| invalid(path, reason))?;
            if let Some(graph) = &f.graph {
                crate::graph_files::validate(graph).map_err(|reason| invalid(path, reason))?;
            }
            let thumbs = Thumbs::stored(Some(path), f.thumbs, HashMap::new());
            let IndexFile { model, invariance, entries, verdicts, neighbours, graph, .. } = f;
            return Ok(Index { model, invariance, entries, verdicts, neighbours, thumbs, graph });
        }
        let old: IndexV4 = match version {
            2 => {
                let (model, invariance, entries) = payload.decode()?;
                IndexV4 { model, invariance, entries, verdicts: Verdicts::default(), neighbours: Neighbours::default() }
            }
            3 => {
                let (model, invariance, entries, verdicts) = payload.decode()?;
                IndexV4 { model, invariance, entries, verdicts, neighbours: Neighbours::default() }
            }
            _ => payload.decode()?,
        };
        let mut pending = HashMap::new();
        let entries = old
            .entries
            .into_iter()
            .map(|e| {
                pending.insert(hash_key(&e.sha256), e.thumb);
                let EntryV4 { path, size, modified_ns, sha256, dims, embedding, .. } = e;
                Entry { path, size, modified_ns, sha256, dims, embedding }
            })
            .collect();
        let thumbs = Thumbs::stored(Some(path), ThumbTable::default(), pending);
        let (model, invariance, verdicts, neighbours) = (old.model, old.invariance, old.verdicts, old.neighbours);
        Ok(Index { model, invariance, entries, verdicts, neighbours, thumbs, graph: None })
    }

    /// A checksum only proves that a file is what was written; this refuses what no scan writes
    /// (empty or NaN embeddings would group every image at distance 0), naming the entry.
    fn validate(&self, path: &Path) -> Result<()> {
        let len = self.entries.first().map_or(0, |e| e.embedding.len());
        for (i, e) in self.entries.iter().enumerate() {
            let bad = |what: String| Err(invalid(path, format!("entry {}: {what}", e.path.display())));
            if e.embedding.is_empty() {
                return bad("empty embedding".into());
            }
            if e.embedding.len() != len {
                return bad(format!("embedding of {} values where the others have {len}", e.embedding.len()));
            }
            if e.embedding.iter().any(|v| !v.is_finite()) {
                return bad("embedding holds non-finite values".into());
            }
            if i > 0 && self.entries[i - 1].path >= e.path {
                return bad("out of order or repeated".into());
            }
        }
        self.neighbours.validate().map_err(|reason| invalid(path, reason))
    }

    /// The index file's bytes as [`Index::save`] writes them, naming the thumbnails stored
    /// so far (not those waiting for a save).
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        FORMAT.to_bytes(&self.parts().file(&self.thumbs.table()))
    }

    /// Writes the thumbnails not yet stored, then the index atomically: a crash leaves the old
    /// index (with its thumbnails) or the new one.
    pub fn save(&self, path: impl AsRef<Path>) -> Result<()> {
        self.parts().save(&self.thumbs, path.as_ref())
    }

    fn parts(&self) -> IndexParts<'_> {
        IndexParts {
            model: &self.model,
            invariance: &self.invariance,
            entries: &self.entries,
            verdicts: &self.verdicts,
            neighbours: &self.neighbours,
            // Graphs are kept beside the index a collection saves; one saved this way (perhaps
            // elsewhere) names none and builds them again when first needed.
            graph: None,
        }
    }

    /// Checks that the embeddings came from `model` (under its invariance) and have its length.
    pub fn check_model(&self, model: &Model) -> Result<()> {
        let invariance = model.invariance().as_str();
        let (fingerprint, len) = (model.fingerprint(), model.embedding_len());
        let made_by = format!("{} ({})", short(&self.model), self.invariance);
        let in_use = format!("{} ({})", short(fingerprint), invariance);
        if let Some(e) = self.entries.iter().find(|e| e.embedding.len() != len) {
            let got = e.embedding.len();
            return Err(Error::IndexModel {
                made_by: format!("{made_by} with embeddings of {got} values"),
                in_use: format!("{in_use} making {len}"),
            });
        }
        if self.model != fingerprint || self.invariance != invariance {
            return Err(Error::IndexModel { made_by, in_use });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A model making embeddings of two values.
    fn model() -> Model {
        use crate::tower::{self, InputShape, Layer, TowerSpec, TowerWeights};
        let mut spec = TowerSpec::seed(InputShape { channels: 1, height: 8, width: 8 });
        spec.layers.push(Layer::Linear { out_features: 2 });
        let meta = tower::untrained_meta(&spec).unwrap();
        Model::from_bytes(&tower::write_onnx(&spec, &TowerWeights::seeded(&spec, 1).unwrap(), &meta).unwrap(), "m")
            .unwrap()
    }

    fn thumb() -> Thumb {
        Thumb::of(&image::DynamicImage::new_luma8(8, 6))
    }

    fn sample() -> Index {
        let mut index = Index::new("abc123", "none");
        index.entries.push(Entry {
            path: "a/b.jpg".into(),
            size: 10,
            modified_ns: 5,
            sha256: [7; 32],
            dims: (4, 3),
            embedding: vec![0.5, -1.0],
        });
        index.thumbs.insert(&[7; 32], thumb());
        index
    }

    #[test]
    fn round_trips_and_checks_its_model() {
        // Damage, truncation and locking are tested once, in `store`.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("i.twinscan");
        let index = sample();
        index.save(&path).unwrap();
        let loaded = Index::load(&path).unwrap();
        assert_eq!(loaded, index);
        assert_eq!(loaded.thumbs.get(&[7; 32]).unwrap(), thumb(), "read back from its own file");
        let model = model();
        let index = Index { model: model.fingerprint().into(), ..index };
        index.check_model(&model).unwrap();
        assert!(Index { model: "other".into(), ..index.clone() }.check_model(&model).is_err());
        assert!(Index { invariance: "mirror-rotate".into(), ..index.clone() }.check_model(&model).is_err());
        let mut longer = index.clone();
        longer.entries[0].embedding.push(0.0);
        let err = longer.check_model(&model).unwrap_err().to_string();
        assert!(err.contains("with embeddings of 3 values") && err.contains("making 2"), "{err}");
    }

    #[test]
    fn entries_no_scan_writes_are_refused_with_their_name() {
        let mut second = sample().entries[0].clone();
        second.path = "a/c.jpg".into();
        type Damage = fn(&mut Index);
        let cases: [(&str, Damage); 4] = [
            ("a/c.jpg: empty embedding", |i| i.entries[1].embedding.clear()),
            ("a/c.jpg: embedding of 1 values where the others have 2", |i| i.entries[1].embedding.truncate(1)),
            ("a/c.jpg: embedding holds non-finite values", |i| i.entries[1].embedding[0] = f32::NAN),
            ("a/b.jpg: out of order or repeated", |i| i.entries[1].path = "a/b.jpg".into()),
        ];
        for (reason, damage) in cases {
            let mut index = sample();
            index.entries.push(second.clone());
            Index::from_bytes(&index.to_bytes().unwrap(), Path::new("i")).unwrap();
            damage(&mut index);
            let err = Index::from_bytes(&index.to_bytes().unwrap(), Path::new("i")).unwrap_err().to_string();
            assert!(err.contains(reason), "{err}");
        }
    }

    #[cfg(unix)]
    #[test]
    fn names_that_are_not_utf8_round_trip_and_utf8_ones_are_stored_as_before() {
        use std::os::unix::ffi::OsStrExt;
        let mut index = sample();
        index.entries[0].path = Path::new(std::ffi::OsStr::from_bytes(b"a/\xff\xfe.jpg")).to_path_buf();
        let bytes = index.to_bytes().unwrap();
        assert_eq!(Index::from_bytes(&bytes, Path::new("i")).unwrap().entries, index.entries);
        // Bytes and strings share postcard's encoding, so indexes written before read the same.
        let as_text = postcard::to_allocvec(&"a/b.jpg").unwrap();
        let as_bytes = postcard::to_allocvec(&Entry { ..sample().entries[0].clone() }).unwrap();
        assert!(as_bytes.starts_with(&as_text));
    }

    #[test]
    fn an_index_of_another_format_is_refused_naming_both_versions() {
        let path = Path::new("old.twinscan");
        let mut bytes = sample().to_bytes().unwrap();
        // Format 1 had no thumbnails: its entries cannot be read as this format's.
        bytes[8..12].copy_from_slice(&1u32.to_le_bytes());
        let err = Index::from_bytes(&bytes, path).unwrap_err();
        // An `Index` error, which the command line answers with its way out (a rebuild).
        assert!(matches!(err, Error::Index { .. }), "{err:?}");
        let want = format!("index format 1, this build reads {INDEX_VERSION}");
        assert!(err.to_string().contains(&want), "{err}");
    }

    #[test]
    fn an_index_of_format_5_reads_as_one_without_graphs() {
        use sha2::{Digest, Sha256};
        let index = sample();
        let bytes = index.to_bytes().unwrap();
        // Format 6 appended the graph record; postcard writes an absent one as a single 0.
        let (head, payload) = bytes.split_at(44);
        let (last, old_payload) = payload.split_last().unwrap();
        assert_eq!(*last, 0);
        let mut old = head[..8].to_vec();
        old.extend(5u32.to_le_bytes());
        old.extend(Sha256::digest(old_payload));
        old.extend(old_payload);
        let read = Index::from_bytes(&old, Path::new("v5.twinscan")).unwrap();
        assert_eq!((&read.model, &read.invariance, &read.entries), (&index.model, &index.invariance, &index.entries));
        assert!(read.graph.is_none());
    }

    #[test]
    fn indexes_of_formats_2_to_4_are_migrated_keeping_their_entries_and_thumbnails() {
        use sha2::{Digest, Sha256};
        let old = sample();
        // Formats 2 to 4 kept each thumbnail inside its entry; 2 had no verdicts, 3 no lists.
        let e = &old.entries[0];
        let entries = vec![("a/b.jpg", e.size, e.modified_ns, e.sha256, e.dims, &e.embedding, thumb())];
        let head = (&old.model, &old.invariance, &entries);
        let payloads = [
            (2u32, postcard::to_allocvec(&head).unwrap()),
            (3, postcard::to_allocvec(&(head.0, head.1, head.2, &old.verdicts)).unwrap()),
            (4, postcard::to_allocvec(&(head.0, head.1, head.2, &old.verdicts, &old.neighbours)).unwrap()),
        ];
        let dir = tempfile::tempdir().unwrap();
        for (version, payload) in payloads {
            let mut bytes = b"TWSCNIDX".to_vec();
            bytes.extend(version.to_le_bytes());
            bytes.extend(Sha256::digest(&payload));
            bytes.extend(payload);
            let migrated = Index::from_bytes(&bytes, Path::new("old.twinscan")).unwrap();
            assert_eq!(migrated, old, "format {version}");
            assert!(migrated.verdicts.is_empty() && migrated.neighbours.is_empty());
            let path = dir.path().join(format!("v{version}.twinscan"));
            migrated.save(&path).unwrap();
            assert_eq!(Index::load(&path).unwrap().thumbs.get(&[7; 32]).unwrap(), thumb(), "format {version}");
        }
    }
}
