//! The containment check's thumbnails, by content: kept in a file of their own beside the index
//! (they are three quarters of its bytes) and read only for the pairs a check compares, so they
//! take no memory while a collection is open.
//!
//! On disk, `<index>.thumbs.<generation>`: the magic `TWSCNTHM`, a `u32` format version, then
//! records (a thumbnail encoded with postcard), each located and checked by the index: offset,
//! length and the first 8 bytes of its SHA-256. A save appends new thumbnails past the length the
//! index records (cutting first whatever a killed save appended beyond it); when more than half
//! of the file belongs to images no longer indexed, the live records move to the next generation.
//! The index, written last and atomically, names the generation and the length, so a kill at any
//! moment leaves the previous index with its thumbnails whole. Other generations are removed
//! once the new index is written.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::ffi::OsString;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::contain::{hash_key, Thumb};
use crate::error::{Error, Result};
use crate::safe_fs::Dir;

const MAGIC: &[u8; 8] = b"TWSCNTHM";
const VERSION: u32 = 1;
const HEADER: u64 = 12;
/// No record a thumbnail makes is longer (a 64 x 64 grey image and its colour, with lengths).
const MAX_RECORD: u32 = 16 << 10;
/// Dead bytes a file may hold before it is compacted, beside more dead than live.
const SLACK: u64 = 1 << 20;

/// Where a stored thumbnail is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
struct Stored {
    offset: u64,
    len: u32,
    /// The first 8 bytes of the record's SHA-256.
    check: u64,
}

/// What the index records of the thumbnail file: its generation, its length and where each
/// content's thumbnail is.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct ThumbTable {
    generation: u64,
    length: u64,
    at: BTreeMap<u64, Stored>,
}

/// The thumbnails of a collection's contents: those stored in the file, and those made since
/// the last save (or of a collection kept in memory).
pub struct Thumbs {
    state: Mutex<State>,
}

#[derive(Debug, Clone, Default)]
struct State {
    /// The index the file belongs to; `None` in memory.
    index: Option<PathBuf>,
    table: ThumbTable,
    pending: HashMap<u64, Thumb>,
    /// The open file of the table's generation.
    file: Option<Arc<File>>,
}

impl Default for Thumbs {
    fn default() -> Self {
        Thumbs::new()
    }
}

impl std::fmt::Debug for Thumbs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = self.lock();
        f.debug_struct("Thumbs")
            .field("index", &state.index)
            .field("stored", &state.table.at.len())
            .field("pending", &state.pending.len())
            .finish()
    }
}

impl Clone for Thumbs {
    fn clone(&self) -> Self {
        let state = self.lock();
        Thumbs { state: Mutex::new(State { file: None, ..state.clone() }) }
    }
}

/// Equal when they hold the same thumbnails in the same places.
impl PartialEq for Thumbs {
    fn eq(&self, other: &Thumbs) -> bool {
        let (a, b) = (self.lock(), other.lock());
        a.table == b.table && a.pending == b.pending
    }
}

impl Thumbs {
    /// No thumbnails, kept in memory.
    pub fn new() -> Thumbs {
        Thumbs { state: Mutex::new(State::default()) }
    }

    /// The thumbnails `table` says the file of the index at `index` holds, and `pending` ones
    /// not yet stored.
    pub(crate) fn stored(index: Option<&Path>, table: ThumbTable, pending: HashMap<u64, Thumb>) -> Thumbs {
        let state = State { index: index.map(Path::to_path_buf), table, pending, file: None };
        Thumbs { state: Mutex::new(state) }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Adds the thumbnail of the content with this SHA-256 (kept in memory until saved).
    pub fn insert(&self, sha256: &[u8; 32], thumb: Thumb) {
        let key = hash_key(sha256);
        let mut state = self.lock();
        if !state.table.at.contains_key(&key) {
            state.pending.insert(key, thumb);
        }
    }

    /// Whether there is a thumbnail of the content with this SHA-256.
    pub fn contains(&self, sha256: &[u8; 32]) -> bool {
        let key = hash_key(sha256);
        let state = self.lock();
        state.pending.contains_key(&key) || state.table.at.contains_key(&key)
    }

    /// Number of contents with a thumbnail.
    pub fn len(&self) -> usize {
        let state = self.lock();
        state.table.at.len() + state.pending.keys().filter(|k| !state.table.at.contains_key(k)).count()
    }

    /// Where the stored thumbnails are.
    pub(crate) fn table(&self) -> ThumbTable {
        self.lock().table.clone()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The thumbnail of the content with this SHA-256, read from the file (and checked) when
    /// it is stored there.
    pub fn get(&self, sha256: &[u8; 32]) -> Result<Thumb> {
        let key = hash_key(sha256);
        let (stored, file, path) = {
            let mut state = self.lock();
            if let Some(thumb) = state.pending.get(&key) {
                return Ok(thumb.clone());
            }
            let path = state.file_path(state.table.generation);
            let Some((stored, path)) = state.table.at.get(&key).copied().zip(path) else {
                let missing = format!("no thumbnail of content {key:016x}");
                return Err(Error::Index { path: state.index.clone().unwrap_or_default(), reason: missing });
            };
            let file = match &state.file {
                Some(file) => file.clone(),
                None => {
                    let file = Arc::new(open_checked(&path, state.table.length)?);
                    state.file = Some(file.clone());
                    file
                }
            };
            (stored, file, path)
        };
        read_record(&file, stored).map_err(|reason| Error::Index { path, reason })
    }

    /// Stores the thumbnails of `live` contents not yet in the file of the index at `index` and
    /// returns the table the index must record; nothing is used until [`Thumbs::commit`].
    pub(crate) fn flush(&self, index: &Path, live: &HashSet<u64>) -> Result<ThumbTable> {
        let state = self.lock();
        let source = state.table.clone();
        let mut new: Vec<(u64, Vec<u8>)> = state
            .pending
            .iter()
            .filter(|(k, _)| live.contains(k) && !source.at.contains_key(k))
            .map(|(k, t)| postcard::to_allocvec(t).map(|bytes| (*k, bytes)))
            .collect::<std::result::Result<_, _>>()
            .map_err(|e| Error::Index { path: index.into(), reason: format!("thumbnail not encodable: {e}") })?;
        new.sort_by_key(|(k, _)| *k);
        let kept: BTreeMap<u64, Stored> =
            source.at.iter().filter(|(k, _)| live.contains(k)).map(|(k, s)| (*k, *s)).collect();
        let live_bytes: u64 = kept.values().map(|s| u64::from(s.len)).sum();
        let dead = source.length.saturating_sub(HEADER + live_bytes);
        let same_index = state.index.as_deref() == Some(index);
        let (dir, name) = Dir::open_parent(index)?;
        if same_index && source.length >= HEADER && dead <= live_bytes.max(SLACK) {
            let table = ThumbTable { at: kept, ..source };
            if new.is_empty() {
                return Ok(table);
            }
            // Appended past what the index records.
            let path = dir.join(&thumbs_name(name, table.generation));
            let mut file = dir.open_or_create(&thumbs_name(name, table.generation))?;
            let size = file.metadata().map_err(|e| Error::io(&path, e))?.len();
            if size < table.length {
                let reason = "thumbnail file shorter than its index says".into();
                return Err(Error::Index { path, reason });
            }
            let mut table = table;
            append(&mut file, &mut table, &new).map_err(|e| Error::io(&path, e))?;
            return Ok(table);
        }
        // A new generation: the live records copied, then the new ones.
        let mut records = Vec::with_capacity(kept.len() + new.len());
        if let (false, Some(path)) = (kept.is_empty(), state.file_path(source.generation)) {
            let file = match &state.file {
                Some(file) => file.clone(),
                None => Arc::new(open_checked(&path, source.length)?),
            };
            for (key, stored) in &kept {
                let bytes = read_bytes(&file, *stored).map_err(|reason| Error::Index { path: path.clone(), reason })?;
                records.push((*key, bytes));
            }
        }
        drop(state);
        records.extend(new);
        let generation = if same_index { source.generation + 1 } else { 1 };
        let (mut file, tmp) = dir.create_temp(name)?;
        let mut table = ThumbTable { generation, length: HEADER, at: BTreeMap::new() };
        let target = thumbs_name(name, generation);
        let written = file
            .write_all(MAGIC)
            .and_then(|()| file.write_all(&VERSION.to_le_bytes()))
            .and_then(|()| append(&mut file, &mut table, &records))
            .and_then(|()| dir.rename(&tmp, &dir, &target, true));
        written.map_err(|e| {
            let _ = dir.remove(&tmp);
            Error::io(dir.join(&target), e)
        })?;
        Ok(table)
    }

    /// Takes `table` (recorded by the index just written at `index`) as the stored thumbnails,
    /// forgets the pending ones and removes the files of other generations.
    pub(crate) fn commit(&self, index: &Path, table: ThumbTable) {
        let mut state = self.lock();
        if state.index.as_deref() != Some(index) || state.table.generation != table.generation {
            state.file = None;
        }
        state.index = Some(index.to_path_buf());
        state.pending.clear();
        let generation = table.generation;
        state.table = table;
        drop(state);
        if let Ok((dir, name)) = Dir::open_parent(index) {
            for (_, stale) in generations(&dir, name).into_iter().filter(|(g, _)| *g != generation) {
                let _ = dir.remove(&stale);
            }
        }
    }

    /// Refuses a table no save writes: records outside the file or longer than any thumbnail.
    pub(crate) fn validate(table: &ThumbTable) -> std::result::Result<(), String> {
        for (key, s) in &table.at {
            let end = s.offset.checked_add(u64::from(s.len));
            if s.offset < HEADER || s.len > MAX_RECORD || end.is_none_or(|end| end > table.length) {
                return Err(format!("thumbnail of {key:016x} lies outside its file"));
            }
        }
        Ok(())
    }
}

impl State {
    /// The file of generation `generation` of the index, if kept in a file.
    fn file_path(&self, generation: u64) -> Option<PathBuf> {
        let index = self.index.as_ref()?;
        Some(index.with_file_name(thumbs_name(index.file_name()?, generation)))
    }
}

/// The name of generation `generation`'s file beside the index named `index`.
fn thumbs_name(index: &std::ffi::OsStr, generation: u64) -> OsString {
    let mut name = index.to_os_string();
    name.push(format!(".thumbs.{generation}"));
    name
}

/// The generation a file named `name` is of, when it is one of the index named `index`.
pub(crate) fn generation_of(index: &std::ffi::OsStr, name: &std::ffi::OsStr) -> Option<u64> {
    let (index, name) = (index.as_encoded_bytes(), name.as_encoded_bytes());
    let rest = name.strip_prefix(index)?.strip_prefix(b".thumbs.")?;
    let digits = std::str::from_utf8(rest).ok().filter(|d| !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit()))?;
    digits.parse().ok()
}

/// The thumbnail files beside the index named `index` in `dir`.
fn generations(dir: &Dir, index: &std::ffi::OsStr) -> Vec<(u64, OsString)> {
    let Ok(entries) = std::fs::read_dir(dir.join(std::ffi::OsStr::new(""))) else { return Vec::new() };
    entries.flatten().filter_map(|e| generation_of(index, &e.file_name()).map(|g| (g, e.file_name()))).collect()
}

/// Writes `records` at the table's length (cutting what lies beyond), flushes them to disk and
/// records where they are.
fn append(file: &mut File, table: &mut ThumbTable, records: &[(u64, Vec<u8>)]) -> std::io::Result<()> {
    file.set_len(table.length)?;
    file.seek(SeekFrom::Start(table.length))?;
    let mut out = std::io::BufWriter::new(&mut *file);
    let mut offset = table.length;
    for (key, bytes) in records {
        out.write_all(bytes)?;
        let check = hash_key(&Sha256::digest(bytes).into());
        let len = u32::try_from(bytes.len()).map_err(std::io::Error::other)?;
        table.at.insert(*key, Stored { offset, len, check });
        offset += u64::from(len);
    }
    out.flush()?;
    drop(out);
    file.sync_all()?;
    table.length = offset;
    Ok(())
}

/// Opens a thumbnail file (never through a link) and checks its header and that it holds at
/// least `length` bytes.
fn open_checked(path: &Path, length: u64) -> Result<File> {
    let (mut file, size) = crate::safe_fs::open_regular(path, false)?;
    let invalid = |reason: &str| Error::Index { path: path.into(), reason: reason.into() };
    let mut header = [0u8; HEADER as usize];
    file.read_exact(&mut header).map_err(|_| invalid("thumbnail file too short"))?;
    if &header[..8] != MAGIC || header[8..12] != VERSION.to_le_bytes() {
        return Err(invalid("not a thumbnail file of this format"));
    }
    if size < length {
        return Err(invalid("thumbnail file shorter than its index says"));
    }
    Ok(file)
}

/// A record's bytes, checked against the index.
fn read_bytes(file: &File, stored: Stored) -> std::result::Result<Vec<u8>, String> {
    let mut bytes = vec![0u8; stored.len as usize];
    read_at(file, &mut bytes, stored.offset).map_err(|e| format!("thumbnail unreadable: {e}"))?;
    if hash_key(&Sha256::digest(&bytes).into()) != stored.check {
        return Err(format!("thumbnail at byte {} fails its checksum", stored.offset));
    }
    Ok(bytes)
}

fn read_record(file: &File, stored: Stored) -> std::result::Result<Thumb, String> {
    let bytes = read_bytes(file, stored)?;
    postcard::from_bytes(&bytes).map_err(|e| format!("thumbnail at byte {} undecodable: {e}", stored.offset))
}

#[cfg(unix)]
fn read_at(file: &File, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
    std::os::unix::fs::FileExt::read_exact_at(file, buf, offset)
}

#[cfg(not(unix))]
fn read_at(file: &File, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
    let mut file = file;
    file.seek(SeekFrom::Start(offset))?;
    file.read_exact(buf)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::index::{Entry, Index};
    use crate::tower::SplitMix64;

    fn sha(i: usize) -> [u8; 32] {
        let mut sha256 = [3; 32];
        sha256[..8].copy_from_slice(&(i as u64).to_le_bytes());
        sha256
    }

    /// A thumbnail of noise (about 5 KB stored).
    fn noise(rng: &mut SplitMix64) -> Thumb {
        let pixels = (0..64 * 64 * 3).map(|_| rng.below(256) as u8).collect();
        Thumb::of_rgb(&image::RgbImage::from_raw(64, 64, pixels).unwrap())
    }

    fn files(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> =
            std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
        names.sort();
        names
    }

    #[test]
    fn thumbnails_are_appended_moved_to_a_new_generation_and_refused_when_damaged() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("i.twinscan");
        let mut rng = SplitMix64::new(5);
        let thumbs: Vec<Thumb> = (0..600).map(|_| noise(&mut rng)).collect();
        let mut index = Index::new("m", "none");
        let add = |index: &mut Index, range: std::ops::Range<usize>| {
            for i in range {
                let path = PathBuf::from(format!("{i:04}.png"));
                index.entries.push(Entry {
                    path,
                    size: 1,
                    modified_ns: 0,
                    sha256: sha(i),
                    dims: (1, 1),
                    embedding: vec![0.0],
                });
                index.thumbs.insert(&sha(i), thumbs[i].clone());
            }
        };
        add(&mut index, 0..300);
        index.save(&path).unwrap();
        let size = |g: u64| std::fs::metadata(dir.path().join(format!("i.twinscan.thumbs.{g}"))).unwrap().len();
        let first = size(1);
        add(&mut index, 300..600);
        index.save(&path).unwrap();
        assert!(size(1) > first, "appended to the same generation");
        assert_eq!(files(dir.path()), ["i.twinscan", "i.twinscan.thumbs.1"]);
        // Two thirds gone: the rest move to generation 2 and generation 1 is removed.
        index.entries.truncate(200);
        index.save(&path).unwrap();
        assert_eq!(files(dir.path()), ["i.twinscan", "i.twinscan.thumbs.2"]);
        assert!(size(2) < first, "only the live thumbnails moved");
        let loaded = Index::load(&path).unwrap();
        for i in (0..200).step_by(7) {
            assert!(loaded.thumbs.get(&sha(i)).unwrap() == thumbs[i]);
        }
        assert!(loaded.thumbs.get(&sha(400)).is_err(), "a removed image has no thumbnail");
        // A damaged record is refused by its checksum, a cut file as a whole.
        let file = dir.path().join("i.twinscan.thumbs.2");
        let mut bytes = std::fs::read(&file).unwrap();
        let at = bytes.len() / 2;
        bytes[at] ^= 0x40;
        std::fs::write(&file, &bytes).unwrap();
        let damaged = Index::load(&path).unwrap();
        let errors: Vec<String> =
            (0..200).filter_map(|i| damaged.thumbs.get(&sha(i)).err()).map(|e| e.to_string()).collect();
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(errors[0].contains("fails its checksum") && errors[0].contains("thumbs.2"), "{}", errors[0]);
        std::fs::write(&file, &bytes[..at]).unwrap();
        let err = Index::load(&path).unwrap().thumbs.get(&sha(0)).unwrap_err().to_string();
        assert!(err.contains("shorter than its index says"), "{err}");
    }
}
