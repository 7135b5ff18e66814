//! The one record type of everything the command line reports, serialised as the JSON Lines
//! schema of `docs/cli.md` (`"type"` names the record) and fed to every printer.

use std::collections::BTreeMap;
use std::marker::PhantomData;
use std::path::{Path, PathBuf};

use serde::ser::SerializeMap;
use serde::{Serialize, Serializer};

/// One thing reported.
#[derive(Debug, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Record {
    /// A duplicate group (scan).
    Group(Group),
    /// An image that does not belong (scan --outliers, outliers).
    Outlier(Outlier),
    /// An indexed image near a query image (query).
    Neighbour(Neighbour),
    /// A file that could not be used; the command went on.
    Error(Failure),
    /// What a scan did and found.
    Summary(Summary),
    /// A planned or applied step of a duplicate action.
    Action(Action),
    /// The journal an applied action wrote.
    Journal(Written),
    /// The HTML report written.
    Report(Written),
    /// A journal entry put back (undo).
    Restored(Undone),
    /// A journal entry already in place (undo).
    Unchanged(Undone),
    /// A journal entry left alone (undo).
    Skipped(Undone),
    /// A journal entry that could not be put back (undo).
    Failed(Undone),
    /// An image's embedding (embed).
    Embedding(EmbeddingRecord),
    /// Two images compared (compare).
    Comparison(Comparison),
    /// A model's metadata (info).
    Model(ModelInfo),
    /// Images enrolled under a label (gallery enroll).
    Enrolled(Enrolled),
    /// A probe verified against a label (gallery verify).
    Verification(Verification),
    /// A probe identified among the labels (gallery identify).
    Identification(Identification),
    /// A label and its number of embeddings (gallery list).
    Label(LabelCount),
    /// A gallery's summary (gallery list).
    Gallery(GalleryInfo),
    /// A label removed (gallery remove).
    Removed(LabelCount),
}

/// The name of a path field and of its exact-bytes twin.
pub trait Key {
    /// The field holding the path's text.
    const TEXT: &'static str;
    /// The field holding the exact bytes, present only when the name is not UTF-8.
    const BYTES: &'static str;
}

macro_rules! keys {
    ($($name:ident = $text:literal),* $(,)?) => {$(
        #[derive(Debug)]
        pub struct $name;
        impl Key for $name {
            const TEXT: &'static str = $text;
            const BYTES: &'static str = concat!($text, "_bytes");
        }
    )*};
}

keys!(P = "path", Keep = "keep", To = "to", Query = "query", Probe = "probe", A = "a", B = "b", G = "gallery");

/// A path under the field name `K`: its text, JSON being Unicode, with U+FFFD for bytes that
/// are not UTF-8 (legal on Unix), and then `K_bytes` with the exact bytes, so that two names
/// that differ only there stay apart and a script can open the file. `None` is `null`.
pub struct Named<K>(pub Option<PathBuf>, PhantomData<K>);

impl<K> Named<K> {
    /// The path `p` under this name.
    pub fn of(p: &Path) -> Named<K> {
        Named(Some(p.to_path_buf()), PhantomData)
    }

    /// No path: `null`.
    pub fn none() -> Named<K> {
        Named(None, PhantomData)
    }

    /// The path, if any.
    pub fn path(&self) -> Option<&Path> {
        self.0.as_deref()
    }
}

impl<K> std::fmt::Debug for Named<K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl<K: Key> Serialize for Named<K> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(None)?;
        match &self.0 {
            None => map.serialize_entry(K::TEXT, &())?,
            Some(p) => {
                map.serialize_entry(K::TEXT, &p.to_string_lossy())?;
                if p.to_str().is_none() {
                    map.serialize_entry(K::BYTES, p.as_os_str().as_encoded_bytes())?;
                }
            }
        }
        map.end()
    }
}

/// A duplicate group: the image to keep, then the others by distance to it.
#[derive(Debug, Serialize)]
pub struct Group {
    /// 1-based, in keep order.
    pub id: usize,
    /// Whether every member is a byte-identical copy of the image to keep.
    pub exact: bool,
    #[serde(flatten)]
    pub keep: Named<Keep>,
    pub members: Vec<Member>,
}

/// One member of a group (the image to keep first).
#[derive(Debug, Serialize)]
pub struct Member {
    #[serde(flatten)]
    pub path: Named<P>,
    /// `keep`, `exact` (a byte-identical copy) or `near`.
    pub role: &'static str,
    /// Distance to the image to keep.
    pub distance: f32,
    pub exact: bool,
    /// Joined by the containment check (a crop or framed copy beyond the threshold).
    pub contained: bool,
    pub width: u32,
    pub height: u32,
}

#[derive(Debug, Serialize)]
pub struct Outlier {
    #[serde(flatten)]
    pub path: Named<P>,
    /// Mean distance to its nearest other images.
    pub score: f32,
}

#[derive(Debug, Serialize)]
pub struct Neighbour {
    #[serde(flatten)]
    pub query: Named<Query>,
    #[serde(flatten)]
    pub path: Named<P>,
    pub distance: f32,
    /// Within the model's duplicate threshold.
    pub similar: bool,
}

/// A file that failed: `kind` is `twinscan::Error::kind`, stable for scripts.
#[derive(Debug, Serialize)]
pub struct Failure {
    #[serde(flatten)]
    pub path: Named<P>,
    pub kind: &'static str,
    pub error: String,
}

impl Failure {
    /// The record of a library error about `path`.
    pub fn of(path: &Path, e: &twinscan::Error) -> Failure {
        Failure { path: Named::of(path), kind: e.kind(), error: e.to_string() }
    }
}

#[derive(Debug, Serialize, Default)]
pub struct Summary {
    pub files: usize,
    pub embedded: usize,
    pub unchanged: usize,
    pub removed: usize,
    pub not_images: usize,
    pub errors: usize,
    pub interrupted: bool,
    pub groups: usize,
    pub duplicates: usize,
    pub outliers: usize,
}

#[derive(Debug, Serialize)]
pub struct Action {
    /// `planned`, `skip` (in a plan), `done`, `unchanged`, `skipped` or `failed`.
    pub status: &'static str,
    /// The group's id.
    pub group: usize,
    /// `move`, `link` or `none`.
    pub op: &'static str,
    #[serde(flatten)]
    pub path: Named<P>,
    #[serde(flatten)]
    pub keep: Named<Keep>,
    /// Where the image goes (`null` when it stays).
    #[serde(flatten)]
    pub to: Named<To>,
    pub reason: Option<String>,
}

/// A file the command wrote.
#[derive(Debug, Serialize)]
pub struct Written {
    #[serde(flatten)]
    pub path: Named<P>,
}

#[derive(Debug, Serialize)]
pub struct Undone {
    #[serde(flatten)]
    pub path: Named<P>,
    pub reason: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct EmbeddingRecord {
    #[serde(flatten)]
    pub path: Named<P>,
    pub embedding: Vec<f32>,
}

#[derive(Debug, Serialize)]
pub struct Comparison {
    #[serde(flatten)]
    pub a: Named<A>,
    #[serde(flatten)]
    pub b: Named<B>,
    pub distance: f32,
    pub probability: f32,
    pub threshold: f32,
    pub similar: bool,
}

#[derive(Debug, Serialize)]
pub struct ModelInfo {
    /// The model's file, or `bundled photo.onnx`.
    pub path: String,
    pub fingerprint: String,
    /// The `twinscan.*` properties.
    pub metadata: BTreeMap<String, String>,
}

#[derive(Debug, Serialize)]
pub struct Enrolled {
    pub label: String,
    pub added: usize,
    pub failed: usize,
    /// The label's embeddings now.
    pub embeddings: usize,
    #[serde(flatten)]
    pub gallery: Named<G>,
}

/// A probe against one label.
#[derive(Debug, Serialize)]
pub struct Verification {
    #[serde(flatten)]
    pub probe: Named<Probe>,
    pub label: String,
    pub threshold: f32,
    #[serde(flatten)]
    pub scores: Scores,
}

/// Distance to a label's nearest embedding, the head's probability, and the verdict.
#[derive(Debug, Serialize)]
pub struct Scores {
    pub distance: f32,
    pub probability: f32,
    pub accepted: bool,
}

impl From<&twinscan::gallery::Verification> for Scores {
    fn from(v: &twinscan::gallery::Verification) -> Scores {
        Scores { distance: v.distance, probability: v.probability, accepted: v.accepted }
    }
}

#[derive(Debug, Serialize)]
pub struct Identification {
    #[serde(flatten)]
    pub probe: Named<Probe>,
    /// The answer; `null` for unknown.
    pub label: Option<String>,
    pub threshold: f32,
    pub candidates: Vec<Candidate>,
}

#[derive(Debug, Serialize)]
pub struct Candidate {
    pub label: String,
    #[serde(flatten)]
    pub scores: Scores,
}

#[derive(Debug, Serialize)]
pub struct LabelCount {
    pub label: String,
    pub embeddings: usize,
}

#[derive(Debug, Serialize)]
pub struct GalleryInfo {
    #[serde(flatten)]
    pub path: Named<P>,
    pub model: String,
    pub labels: usize,
    /// The saved threshold; `null` for the model's.
    pub threshold: Option<f32>,
}
