//! The HNSW graphs of a collection, kept beside its index, so that a rescan inserts what is new
//! instead of building the graphs again ([`crate::search`] searches through them).
//!
//! **On disk.** Each save of changed graphs is a generation: a folder `<index>.graph.<n>`, made
//! readable by its owner alone, holding hnsw_rs's dump of each view's graph (`view<i>.hnsw.graph`
//! and `view<i>.hnsw.data`). hnsw_rs opens its files by path, so it is handed the folder through
//! our open handle (`/proc/self/fd`): nobody else can plant a link inside, or swap another folder
//! in under its name. Where the system has no such path, graphs are built for each use and not
//! kept. The index records the generation, the contents inserted and the length and SHA-256 of
//! every file, and is written after them, so a kill at any moment leaves the generation the
//! index names whole; a new generation takes a number no folder has, and other generations are
//! removed once an index naming the new one is written. Failing to write one is reported and
//! keeps the previous one: the graphs are a cache of what the embeddings give.
//!
//! **Loading.** hnsw_rs's loader asserts (and in places ends the process) on a damaged file, so
//! every file is checked against the index's record before the loader reads a byte. A graph
//! that fails a check is built again from the embeddings and the reason reported; one made with
//! other parameters is built again silently.
//!
//! **Removed contents** stay in a graph, never returned (its searches are filtered to the
//! contents present). A graph is built again once removed contents are more than
//! [`REBUILD_SHARE`] of its points, or contents inserted since it was built are: hnsw_rs reloads
//! a graph with a smaller level scale than it was built with (so later points stay in the lowest
//! layer), and an insertion can take an old point's last incoming link.

use std::collections::HashSet;
use std::ffi::{OsStr, OsString};
use std::io::Seek;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};

use hnsw_rs::prelude::{AnnT, HnswIo};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::neighbours::Content;
use crate::safe_fs::Dir;
use crate::search::{self, Graph, Search, L2};
use crate::Model;

/// Share of a kept graph's points that may be removed contents, or contents inserted since it
/// was built, before it is built again: removed ones cost search time and memory, inserted ones
/// slowly flatten the graph, and a rebuild costs as much as inserting every content again.
pub const REBUILD_SHARE: f64 = 0.2;

/// What the index records of the graphs it names.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GraphRecord {
    generation: u64,
    /// The build parameters ([`search::graph_params`]); graphs of others are built again.
    params: (u32, u32),
    /// The contents inserted (by key, sorted), some of which may since have been removed.
    keys: Vec<u64>,
    /// How many points the graphs held when last built from scratch.
    built: u64,
    views: Vec<ViewRecord>,
}

/// One view's graph: where the view is, its two files, and the points it cannot reach.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct ViewRecord {
    offset: u32,
    dim: u32,
    graph: FileSum,
    data: FileSum,
    unreachable: Vec<u64>,
}

/// The length and SHA-256 of a file as written.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
struct FileSum {
    len: u64,
    sha256: [u8; 32],
}

/// A collection's graphs: the generation its index names, and a newer one written but not yet
/// named.
#[derive(Debug, Default)]
pub(crate) struct GraphStore {
    /// The index the graphs are kept beside; `None` keeps nothing (built for each use).
    index: Option<PathBuf>,
    kept: Option<GraphRecord>,
    written: Option<GraphRecord>,
    /// The contents in the graphs being searched, how many points they were built with, and
    /// whether any were inserted.
    pending: Option<(Vec<u64>, u64, bool)>,
    /// Graphs found damaged and built again since last taken.
    notes: Vec<Error>,
}

impl GraphStore {
    /// The graphs kept beside `index` as `kept` records them (none for a collection in memory).
    pub fn new(index: Option<PathBuf>, kept: Option<GraphRecord>) -> GraphStore {
        GraphStore { index, kept, ..GraphStore::default() }
    }

    /// What the next index written must record.
    pub fn record(&self) -> Option<&GraphRecord> {
        self.written.as_ref().or(self.kept.as_ref())
    }

    /// The graphs found damaged (and built again) since the last call.
    pub fn take_notes(&mut self) -> Vec<Error> {
        std::mem::take(&mut self.notes)
    }

    /// A search of `contents` through graphs holding all of them: the kept ones loaded, with
    /// the contents they lack inserted, or new ones. `None` where the graph cannot serve (the
    /// model's distance, or an embedding that is not finite). `ios` holds the loaders that
    /// loaded graphs borrow from.
    pub fn prepare<'a>(
        &mut self,
        ios: &'a mut Vec<HnswIo>,
        contents: &[Content<'a>],
        model: &'a Model,
    ) -> Option<Search<'a>> {
        let views = model.plain_views()?;
        let len = model.embedding_len();
        if !contents.iter().all(|c| c.vector.len() == len && c.vector.iter().all(|x| x.is_finite())) {
            return None;
        }
        let dim = model.meta().embedding_dim;
        let present: HashSet<u64> = contents.iter().map(|c| c.key).collect();
        let kept = match self.record().cloned() {
            Some(record) => match self.load(ios, &record, &views, dim, &present) {
                Ok(graphs) => Some((graphs, record.keys, record.built)),
                Err(Stale::Damaged(e)) => {
                    self.notes.push(e);
                    None
                }
                Err(Stale::Outgrown) => None,
            },
            None => None,
        };
        let (mut graphs, mut keys, built) = kept.unwrap_or_else(|| {
            let graphs =
                views.iter().map(|&(offset, margin)| Graph::new(offset, dim, margin, contents.len())).collect();
            (graphs, Vec::new(), contents.len() as u64)
        });
        // `keys` is sorted: what is not found in it was never inserted.
        let fresh: Vec<&Content> = contents.iter().filter(|c| keys.binary_search(&c.key).is_err()).collect();
        let new: Vec<(&[f32], usize)> = fresh.iter().map(|c| (c.vector, id(c.key))).collect();
        for graph in &mut graphs {
            graph.insert(&new);
        }
        keys.extend(fresh.iter().map(|c| c.key));
        keys.sort_unstable();
        self.pending = Some((keys, built, !new.is_empty()));
        let ids: Vec<usize> = contents.iter().map(|c| id(c.key)).collect();
        Some(Search::over(contents.iter().map(|c| c.vector).collect(), &ids, model, graphs))
    }

    /// Writes the graphs of `search` (from [`GraphStore::prepare`]) as a new generation when
    /// contents were inserted; nothing is used until [`GraphStore::commit`]. A failure is noted
    /// (see [`GraphStore::take_notes`]) and leaves the kept generation as it was.
    pub fn keep(&mut self, search: Search) {
        let (Some(index), Some((keys, built, true))) = (self.index.clone(), self.pending.take()) else { return };
        match write(&index, self.record().map_or(0, |r| r.generation), search, keys, built) {
            Ok(record) => self.written = Some(record),
            Err(e) => self.notes.push(e),
        }
    }

    /// Takes the written generation as kept (the index at `index` now names it) and removes the
    /// folders of other generations (all of them when it names none, as after a rebuild).
    pub fn commit(&mut self) {
        if let Some(written) = self.written.take() {
            self.kept = Some(written);
        }
        let Some(index) = &self.index else { return };
        let kept = self.kept.as_ref().map(|k| k.generation);
        let Ok((dir, name)) = Dir::open_parent(index) else { return };
        let Ok(entries) = std::fs::read_dir(dir.path()) else { return };
        for entry in entries.flatten() {
            let entry = entry.file_name();
            if generation_of(name, &entry).is_some_and(|g| Some(g) != kept) {
                remove_generation(&dir, &entry);
            }
        }
    }

    /// The kept graphs, checked against `record` before hnsw_rs reads them.
    fn load<'a>(
        &self,
        ios: &'a mut Vec<HnswIo>,
        record: &GraphRecord,
        views: &[(usize, f32)],
        dim: usize,
        present: &HashSet<u64>,
    ) -> std::result::Result<Vec<Graph<'a>>, Stale> {
        let same_views = record.views.len() == views.len()
            && record.views.iter().zip(views).all(|(r, v)| r.offset as usize == v.0 && r.dim as usize == dim);
        let removed = record.keys.iter().filter(|k| !present.contains(k)).count() as f64;
        let inserted = record.keys.len().saturating_sub(record.built as usize) as f64;
        let most = REBUILD_SHARE * record.keys.len() as f64;
        if record.params != search::graph_params() || !same_views || removed > most || inserted > most {
            return Err(Stale::Outgrown);
        }
        let index = self.index.as_deref().ok_or(Stale::Outgrown)?;
        let (dir, name) = Dir::open_parent(index).map_err(Stale::Damaged)?;
        let folder = dir.descend(Path::new(&folder(name, record.generation)), false).map_err(Stale::Damaged)?;
        let damaged = |reason: String| Stale::Damaged(Error::Index { path: folder.path().into(), reason });
        // hnsw_rs reads after our checks: only from a folder nobody else can write to.
        let held = folder.stat_held().map_err(Stale::Damaged)?;
        if !held.owned_by_me || held.shared {
            return Err(damaged("graph folder is not private to its owner".into()));
        }
        let path = folder.held_path().ok_or(Stale::Outgrown)?;
        for (i, view) in record.views.iter().enumerate() {
            for (suffix, want) in [("graph", view.graph), ("data", view.data)] {
                let got = file_sum(&folder, &file_name(i, suffix), false).map_err(Stale::Damaged)?;
                if got != want {
                    let reason = format!("graph file view{i}.hnsw.{suffix} does not match its index (damaged)");
                    return Err(damaged(reason));
                }
            }
        }
        *ios = (0..record.views.len()).map(|i| HnswIo::new(&path, &format!("view{i}"))).collect();
        let mut graphs = Vec::new();
        for ((io, view), &(_, margin)) in ios.iter_mut().zip(&record.views).zip(views) {
            // Moving the borrow in makes the closure FnOnce, so the graph may keep it.
            let loaded = catch_unwind(AssertUnwindSafe(move || {
                let io = io;
                io.load_hnsw::<f32, L2>()
            }));
            let mut hnsw = match loaded {
                Ok(Ok(hnsw)) => hnsw,
                Ok(Err(e)) => return Err(damaged(format!("graph not readable: {e}"))),
                Err(_) => return Err(damaged("graph not readable: hnsw_rs panicked".into())),
            };
            if hnsw.get_nb_point() != record.keys.len() {
                return Err(damaged(format!(
                    "graph holds {} points, its index {}",
                    hnsw.get_nb_point(),
                    record.keys.len()
                )));
            }
            // As `Graph::new` builds (hnsw_rs's loader turns it on).
            hnsw.set_extend_candidates(false);
            let unreachable = view.unreachable.iter().map(|&k| id(k)).collect();
            graphs.push(Graph { offset: view.offset as usize, dim, margin, hnsw, unreachable });
        }
        Ok(graphs)
    }
}

/// Writes `search`'s graphs as a generation above `kept` and every folder there is, and returns
/// its record. (A folder no index names is left by a save killed before its index was written,
/// but the index on disk may name one this collection does not know, after a rebuild, and a
/// kill before the next save must leave that one whole.)
fn write(index: &Path, kept: u64, search: Search, keys: Vec<u64>, built: u64) -> Result<GraphRecord> {
    let (dir, name) = Dir::open_parent(index)?;
    let mut last = kept;
    for entry in std::fs::read_dir(dir.path()).map_err(|e| Error::io(dir.path(), e))?.flatten() {
        last = last.max(generation_of(name, &entry.file_name()).unwrap_or(0));
    }
    let no_number = || Error::Index { path: index.into(), reason: "no graph generation number left".into() };
    let generation = last.checked_add(1).ok_or_else(no_number)?;
    let folder_name = folder(name, generation);
    let folder = dir.make_private(&folder_name)?;
    let dumped = dump(&folder, &search.into_graphs());
    let views = dumped.inspect_err(|_| remove_generation(&dir, &folder_name))?;
    Ok(GraphRecord { generation, params: search::graph_params(), keys, built, views })
}

/// hnsw_rs's dump of each of `graphs` into `folder`, which it reaches through our handle, with
/// the files flushed to the disk.
fn dump(folder: &Dir, graphs: &[Graph]) -> Result<Vec<ViewRecord>> {
    let failed = |reason: String| Error::Index { path: folder.path().into(), reason };
    let held = folder.held_path().ok_or_else(|| failed("no path through the folder's handle".into()))?;
    let mut views = Vec::new();
    for (i, graph) in graphs.iter().enumerate() {
        let base = format!("view{i}");
        match catch_unwind(AssertUnwindSafe(|| graph.hnsw.file_dump(&held, &base))) {
            Ok(Ok(name)) if name == base => {}
            Ok(Ok(name)) => return Err(failed(format!("graph written as {name}, not {base}"))),
            Ok(Err(e)) => return Err(failed(format!("graph not written: {e}"))),
            Err(_) => return Err(failed("graph not written: hnsw_rs panicked".into())),
        }
        let sum = |suffix: &str| file_sum(folder, &file_name(i, suffix), true);
        views.push(ViewRecord {
            offset: u32::try_from(graph.offset).map_err(|_| failed("view offset out of range".into()))?,
            dim: u32::try_from(graph.dim).map_err(|_| failed("view size out of range".into()))?,
            graph: sum("graph")?,
            data: sum("data")?,
            unreachable: graph.unreachable.iter().map(|&id| id as u64).collect(),
        });
    }
    Ok(views)
}

/// Why kept graphs are not used.
enum Stale {
    /// Too many removed points, other parameters or another model: built again, nothing to say.
    Outgrown,
    /// A file is missing or does not match the index: built again and reported.
    Damaged(Error),
}

/// The id a content's points have in the graphs: its key.
fn id(key: u64) -> usize {
    key as usize
}

/// Refuses a record no save writes.
pub(crate) fn validate(record: &GraphRecord) -> std::result::Result<(), String> {
    if !record.keys.windows(2).all(|w| w[0] < w[1]) {
        return Err("graph contents out of order".into());
    }
    if record.built > record.keys.len() as u64 {
        return Err("graph built with more points than it holds".into());
    }
    let known: HashSet<u64> = record.keys.iter().copied().collect();
    if record.views.iter().any(|v| v.unreachable.iter().any(|k| !known.contains(k))) {
        return Err("graph names a point it does not hold".into());
    }
    Ok(())
}

/// The length and SHA-256 of `name` in `folder`, read without following a link; with `sync`,
/// flushed to the disk first.
fn file_sum(folder: &Dir, name: &OsStr, sync: bool) -> Result<FileSum> {
    let path = folder.join(name);
    let mut file = folder.open_file(name, false)?;
    if sync {
        file.sync_all().map_err(|e| Error::io(&path, e))?;
    }
    let sha256 = crate::safe_fs::sha256(&mut file, &path)?;
    // Read to its end: where it stands is its length.
    let len = file.stream_position().map_err(|e| Error::io(&path, e))?;
    Ok(FileSum { len, sha256 })
}

/// `view<i>.hnsw.<suffix>`, as hnsw_rs names a dump.
fn file_name(view: usize, suffix: &str) -> OsString {
    format!("view{view}.hnsw.{suffix}").into()
}

/// The folder of generation `generation` beside the index named `index`.
fn folder(index: &OsStr, generation: u64) -> OsString {
    let mut name = index.to_os_string();
    name.push(format!(".graph.{generation}"));
    name
}

/// The generation a folder named `name` is of, when it is one of the index named `index`.
pub(crate) fn generation_of(index: &OsStr, name: &OsStr) -> Option<u64> {
    let rest = name.as_encoded_bytes().strip_prefix(index.as_encoded_bytes())?.strip_prefix(b".graph.")?;
    let digits = std::str::from_utf8(rest).ok().filter(|d| !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit()))?;
    digits.parse().ok()
}

/// Removes a generation's folder: only the files a dump writes, then the folder if that left
/// it empty; a link in its place is removed, never followed.
fn remove_generation(dir: &Dir, name: &OsStr) {
    match dir.stat(name) {
        Ok(Some(s)) if s.is_dir && s.owned_by_me => {}
        Ok(Some(s)) if s.is_link => {
            let _ = dir.remove(name);
            return;
        }
        _ => return,
    }
    if let Ok(folder) = dir.descend(Path::new(name), false) {
        if let Ok(entries) = std::fs::read_dir(folder.path()) {
            for entry in entries.flatten() {
                let file = entry.file_name();
                let ours = file.to_str().is_some_and(|f| {
                    f.strip_prefix("view").and_then(|r| r.split_once(".hnsw.")).is_some_and(|(n, suffix)| {
                        !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()) && matches!(suffix, "graph" | "data")
                    })
                });
                if ours {
                    let _ = folder.remove(&file);
                }
            }
        }
    }
    let _ = dir.remove_dir(name);
}
