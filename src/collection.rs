//! The library's front door: a [`Collection`] is the images of some folders, embedded by one
//! model and kept in an index, with the questions a scan asks of them (duplicate groups,
//! outliers, the neighbours of new images) and the plan of what to do with duplicates.
//!
//! ```
//! use twinscan::{Collection, IndexLocation, Model, OpenOptions, RefreshOptions};
//! let options = OpenOptions { index: IndexLocation::Memory, ..OpenOptions::default() };
//! let mut photos = Collection::open(Model::bundled()?, ["examples/photos"], &options)?;
//! photos.refresh(&RefreshOptions::default())?;
//! let nearest = &photos.query(["examples/photos/coffee.jpg"], &Default::default())[0];
//! assert_eq!(nearest.as_ref().unwrap()[0].distance, 0.0);
//! # Ok::<(), twinscan::Error>(())
//! ```

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};

use sha2::{Digest, Sha256};

use crate::actions::{self, Action, Plan};
use crate::contain::{hash_key, Verdicts};
use crate::detect::{self, Group, GroupOptions, Neighbour, Outlier, OutlierOptions};
use crate::error::{Error, Result};
use crate::graph_files::{self, GraphStore};
use crate::index::{Entry, Index, IndexParts};
use crate::neighbours::{Neighbours, Scope, KEPT};
use crate::scan::{self, RefreshOptions, RefreshReport};
use crate::search::{Purpose, Search, SearchKind};
use crate::store::{self, FileLock};
use crate::Model;

/// Where a collection keeps its index.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum IndexLocation {
    /// `$XDG_CACHE_HOME/twinscan/<hash of the folders>.twinscan` (or under `~/.cache`): one
    /// index per set of folders, never inside them.
    #[default]
    Cache,
    /// This file.
    File(PathBuf),
    /// Nowhere: every refresh of a new collection embeds everything.
    Memory,
}

/// How [`Collection::open`] finds its index.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct OpenOptions {
    /// Where the index is kept.
    pub index: IndexLocation,
    /// Start from an empty index even if one exists (it is replaced at the next refresh).
    pub rebuild: bool,
}

/// How [`Collection::query`] answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueryOptions {
    /// Neighbours per image.
    pub k: usize,
    /// The neighbour search (`Auto` is exact for queries: one pass costs less than a graph).
    pub search: SearchKind,
}

impl Default for QueryOptions {
    fn default() -> Self {
        QueryOptions { k: 10, search: SearchKind::Auto }
    }
}

/// The images of some folders, embedded by one model, kept in an index that a refresh brings
/// up to date (only new and changed files are embedded again). A collection opened with an
/// index file holds that file's lock until it is dropped, so two processes never rewrite one
/// index.
#[derive(Debug)]
pub struct Collection {
    model: Model,
    /// The images and what made them (its verdicts and lists moved to `kept`).
    index: Index,
    /// What is learnt about the images while questions are answered, kept with the index.
    kept: Mutex<Kept>,
    roots: Vec<PathBuf>,
    store: Option<Store>,
}

/// Containment verdicts and neighbour lists: added to and brought up to date while groups and
/// outliers are found, so that a later answer repeats no work.
#[derive(Debug, Default)]
struct Kept {
    verdicts: Verdicts,
    neighbours: Neighbours,
    graphs: GraphStore,
    /// Whether the lists changed since the index was last written.
    unsaved: bool,
}

/// The index file behind a collection.
#[derive(Debug)]
struct Store {
    path: PathBuf,
    /// Held while the collection lives; `None` when opened read-only.
    lock: Option<FileLock>,
    /// Whether the file must be written even if a refresh changes nothing (new or rebuilt).
    unsaved: bool,
}

impl Collection {
    /// The collection of the folders (or single files) `roots` under `model`: its index loaded
    /// (checked, and refused if another model or invariance made it) or started, and locked.
    /// Nothing is walked or embedded until [`Collection::refresh`].
    pub fn open<P: AsRef<Path>>(
        model: Model,
        roots: impl IntoIterator<Item = P>,
        options: &OpenOptions,
    ) -> Result<Collection> {
        let roots: Vec<PathBuf> = roots.into_iter().map(|r| r.as_ref().to_path_buf()).collect();
        let path = match &options.index {
            IndexLocation::Memory => None,
            IndexLocation::File(path) => Some(path.clone()),
            IndexLocation::Cache => Some(cache_path(&roots)?),
        };
        let empty = || Index::new(model.fingerprint(), model.invariance().as_str());
        let Some(path) = path else {
            let index = empty();
            return Ok(Collection::new(model, index, roots, None));
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        }
        let lock = FileLock::acquire(&path)?;
        let unsaved = options.rebuild || !path.exists();
        let index = if unsaved { empty() } else { Index::load(&path)? };
        index.check_model(&model)?;
        let store = Store { path, lock: Some(lock), unsaved };
        Ok(Collection::new(model, index, roots, Some(store)))
    }

    fn new(model: Model, mut index: Index, roots: Vec<PathBuf>, store: Option<Store>) -> Collection {
        let verdicts = std::mem::take(&mut index.verdicts);
        let neighbours = std::mem::take(&mut index.neighbours);
        // A read-only collection builds graphs for its own use and keeps none.
        let graph_home = store.as_ref().filter(|s| s.lock.is_some()).map(|s| s.path.clone());
        let graphs = GraphStore::new(graph_home, index.graph.take());
        let kept = Mutex::new(Kept { verdicts, neighbours, graphs, unsaved: false });
        Collection { model, index, kept, roots, store }
    }

    /// An existing index, read only (no lock, no refresh): for queries against a collection
    /// that another process may be scanning.
    pub fn read(model: Model, index: impl AsRef<Path>) -> Result<Collection> {
        let path = index.as_ref().to_path_buf();
        let index = Index::load(&path)?;
        index.check_model(&model)?;
        Ok(Collection::new(model, index, Vec::new(), Some(Store { path, lock: None, unsaved: false })))
    }

    /// Walks the folders and brings the index up to date: new and changed files embedded,
    /// vanished ones dropped, every file that cannot be used reported in the report's errors
    /// (the refresh itself goes on). The index is saved when anything changed, also after a stop.
    pub fn refresh(&mut self, options: &RefreshOptions) -> Result<RefreshReport> {
        if let Some(Store { path, lock: None, .. }) = &self.store {
            return Err(Error::Index { path: path.clone(), reason: "opened read-only".into() });
        }
        let (mut files, walk_errors) = scan::collect_files(&self.roots, options.follow_links);
        if let Some(store) = &self.store {
            // An index kept inside a scanned folder (and its lock and temporary files) is not
            // an image.
            let own = companions(&store.path);
            files.retain(|f| !own(f));
        }
        let mut report = scan::update(&mut self.index, &files, &self.model, options);
        report.errors.splice(0..0, walk_errors);
        let changed = report.embedded > 0 || report.removed > 0;
        let kept = self.kept.get_mut().unwrap_or_else(PoisonError::into_inner);
        if changed {
            let present: HashSet<u64> = self.index.entries.iter().map(|e| hash_key(&e.sha256)).collect();
            kept.verdicts.retain(&present);
        }
        if !report.stopped {
            let contents = detect::contents_of(&self.index.entries);
            let scope = kept_scope(&self.model, options.search, contents.len());
            kept.unsaved |= kept.neighbours.sync(&contents, &self.model, scope, &mut kept.graphs)? > 0;
            report.errors.extend(kept.graphs.take_notes());
        }
        if let Some(store) = self.store.as_mut().filter(|s| s.unsaved || changed || kept.unsaved) {
            write(store, &self.index, kept)?;
            (store.unsaved, kept.unsaved) = (false, false);
        }
        Ok(report)
    }

    /// Duplicate groups (see [`crate::detect`] for the rule). The containment checks made are
    /// kept with the index (saved when there are new ones), so that no pair is checked twice.
    pub fn groups(&self, options: &GroupOptions) -> Result<Vec<Group<'_>>> {
        let entries = &self.index.entries;
        self.answer(
            options.search,
            |n| options.scope(&self.model, n),
            |lists, verdicts| {
                let known = detect::Known { lists, thumbs: &self.index.thumbs, verdicts };
                detect::groups_from(entries, &self.model, options, known)
            },
        )
    }

    /// Runs `answer` on neighbour lists that cover what `need` says (given the number of
    /// distinct images): the kept ones, brought up to date first, where they do; otherwise
    /// lists computed for this question alone. Writes the index when the lists changed or new
    /// verdicts were reached (unless read-only).
    fn answer<T>(
        &self,
        search: SearchKind,
        need: impl FnOnce(usize) -> Result<Scope>,
        answer: impl FnOnce(&Neighbours, &mut Verdicts) -> Result<T>,
    ) -> Result<T> {
        let contents = detect::contents_of(&self.index.entries);
        let (need, kept_scope) = (need(contents.len())?, kept_scope(&self.model, search, contents.len()));
        let mut kept = self.kept.lock().unwrap_or_else(PoisonError::into_inner);
        let kept = &mut *kept;
        let known = kept.verdicts.recorded();
        let out = if kept_scope.covers(&need) {
            kept.unsaved |= kept.neighbours.sync(&contents, &self.model, kept_scope, &mut kept.graphs)? > 0;
            answer(&kept.neighbours, &mut kept.verdicts)?
        } else {
            answer(&Neighbours::compute(&contents, &self.model, need)?, &mut kept.verdicts)?
        };
        let writable = self.store.as_ref().filter(|s| s.lock.is_some());
        if let Some(store) = writable.filter(|_| kept.unsaved || kept.verdicts.recorded() != known) {
            write(store, &self.index, kept)?;
            kept.unsaved = false;
        }
        Ok(out)
    }

    /// Outliers, highest score first (see [`crate::detect`] for the rule).
    pub fn outliers(&self, options: &OutlierOptions) -> Result<Vec<Outlier<'_>>> {
        let entries = &self.index.entries;
        self.answer(
            options.search,
            |n| Ok(options.scope(&self.model, n)),
            |lists, _| Ok(detect::outliers_from(entries, options, lists)),
        )
    }

    /// The nearest indexed images of each of `images` (which are not added), nearest first:
    /// one result per image, so that one unreadable image does not hide the others' answers.
    pub fn query<P: AsRef<Path>>(
        &self,
        images: impl IntoIterator<Item = P>,
        options: &QueryOptions,
    ) -> Vec<Result<Vec<Neighbour<'_>>>> {
        let paths: Vec<PathBuf> = images.into_iter().map(|p| p.as_ref().to_path_buf()).collect();
        let entries = &self.index.entries;
        let vectors = entries.iter().map(|e| e.embedding.as_slice()).collect();
        let search = Search::new(vectors, &self.model, options.search, Purpose::Query);
        self.model
            .embed_paths(&paths)
            .into_iter()
            .map(|embedding| {
                let hits = search.nearest(&embedding?, options.k)?;
                Ok(hits.into_iter().map(|h| Neighbour { entry: &entries[h.index], distance: h.distance }).collect())
            })
            .collect()
    }

    /// What `action` would do with `groups` (found in this collection): one step per image a
    /// group does not keep. Refused when a quarantine lies inside a scanned folder; carry it out
    /// with [`actions::apply`].
    pub fn plan(&self, groups: &[Group], action: &Action) -> Result<Plan> {
        actions::plan(groups, action, &self.roots)
    }

    /// The images, sorted by path.
    pub fn entries(&self) -> &[Entry] {
        &self.index.entries
    }

    /// The images' thumbnails, by content (what the containment check compares).
    pub fn thumbs(&self) -> &crate::thumbs::Thumbs {
        &self.index.thumbs
    }

    /// The model that embeds the images.
    pub fn model(&self) -> &Model {
        &self.model
    }

    /// The scanned folders, as given.
    pub fn roots(&self) -> &[PathBuf] {
        &self.roots
    }

    /// The index file, unless the collection is kept in memory.
    pub fn index_path(&self) -> Option<&Path> {
        self.store.as_ref().map(|s| s.path.as_path())
    }
}

/// Writes `index` with what is kept to its store.
fn write(store: &Store, index: &Index, kept: &mut Kept) -> Result<()> {
    let parts = IndexParts {
        model: &index.model,
        invariance: &index.invariance,
        entries: &index.entries,
        verdicts: &kept.verdicts,
        neighbours: &kept.neighbours,
        graph: kept.graphs.record(),
    };
    parts.save(&index.thumbs, &store.path)?;
    kept.graphs.commit();
    Ok(())
}

/// The lists a collection keeps, found with `search` among `contents` distinct images: all
/// within the model's threshold and the [`KEPT`] nearest.
fn kept_scope(model: &Model, search: SearchKind, contents: usize) -> Scope {
    Scope { radius: model.meta().threshold, count: KEPT, exact: Scope::exact_search(search, contents, model) }
}

/// The cache's index for `roots`: one per set of folders, named by a hash of their resolved
/// paths.
pub fn cache_path(roots: &[PathBuf]) -> Result<PathBuf> {
    let mut names: Vec<String> =
        roots.iter().map(|r| std::fs::canonicalize(r).unwrap_or_else(|_| r.clone()).display().to_string()).collect();
    names.sort();
    let hash = Sha256::digest(names.join("\n").as_bytes());
    let base = match std::env::var_os("XDG_CACHE_HOME").filter(|v| !v.is_empty()) {
        Some(dir) => PathBuf::from(dir),
        None => match std::env::var_os("HOME").filter(|v| !v.is_empty()) {
            Some(home) => PathBuf::from(home).join(".cache"),
            None => {
                let unset = std::io::Error::new(std::io::ErrorKind::NotFound, "neither XDG_CACHE_HOME nor HOME is set");
                return Err(Error::io("~/.cache", unset));
            }
        },
    };
    let hex: String = hash.iter().take(8).map(|b| format!("{b:02x}")).collect();
    Ok(base.join("twinscan").join(format!("{hex}.twinscan")))
}

/// Whether a path is one of the index's own files ([`store::is_companion`]) or a file in one of
/// its graph folders.
fn companions(index: &Path) -> impl Fn(&Path) -> bool + '_ {
    let folder = |p: &Path| {
        let dir = p.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
        std::fs::canonicalize(dir).ok()
    };
    let home = folder(index);
    let own = index.file_name().unwrap_or_default();
    move |f: &Path| {
        let in_graph = |dir: &Path| dir.file_name().is_some_and(|d| graph_files::generation_of(own, d).is_some());
        let (beside, name) = match f.parent() {
            Some(dir) if in_graph(dir) => (dir, dir.file_name()),
            _ => (f, f.file_name().filter(|n| store::is_companion(index, n))),
        };
        name.is_some() && folder(beside) == home
    }
}
