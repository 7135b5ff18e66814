//! Face-style matching: enroll labelled identities, then verify a probe against one label
//! ("is this the one we enrolled?") or identify it among all of them ("who is this?"), with
//! open-set rejection ("unknown") when no label is close enough.
//!
//! A label's distance to a probe is the smallest distance from the probe to any of the label's
//! enrolled embeddings (the way `compare_faces` with several known encodings behaves), under the
//! model's metric and invariance; the model's head turns it into a probability, and the
//! gallery's threshold (the model's calibrated one unless set) decides acceptance.
//!
//! ```
//! use twinscan::gallery::Gallery;
//! use twinscan::tower::{self, InputShape, TowerSpec, TowerWeights};
//! # fn main() -> twinscan::Result<()> {
//! # let spec = TowerSpec::seed(InputShape { channels: 1, height: 28, width: 28 });
//! # let bytes = tower::write_onnx(&spec, &TowerWeights::seeded(&spec, 1)?, &tower::untrained_meta(&spec)?)?;
//! # let model = twinscan::Model::from_bytes(&bytes, "example")?;
//! let mut gallery = Gallery::new(&model);
//! let alice = model.embed_image(&image::DynamicImage::new_luma8(28, 28))?;
//! gallery.enroll(&model, "alice", vec![alice.clone()])?;
//! assert!(gallery.verify(&model, &alice, "alice")?.accepted);
//! let found = gallery.identify(&model, &alice, 3)?;
//! assert_eq!(found.label(), Some("alice"));
//! # Ok(()) }
//! ```
//!
//! A `Gallery` is `Send + Sync`: share it (`Arc<Gallery>`) for concurrent `verify`/`identify`,
//! or put it behind an `RwLock` where enrollment runs beside them.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use image::DynamicImage;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::model::{Embedding, Model};
use crate::store::{short, Format};

/// Version of the gallery layout; a gallery of another version is refused.
pub const GALLERY_VERSION: u32 = 1;

const FORMAT: Format = Format {
    magic: b"TWSCNGAL",
    version: GALLERY_VERSION,
    older: &[],
    name: "gallery",
    error: |path, reason| Error::Gallery { path: path.into(), reason },
};

/// Longest label accepted, in bytes.
pub const MAX_LABEL: usize = 256;

/// Enrolled identities and the model that made their embeddings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Gallery {
    model: String,
    invariance: String,
    embedding_len: usize,
    threshold: Option<f32>,
    identities: BTreeMap<String, Vec<Embedding>>,
}

/// The answer of [`Gallery::verify`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Verification {
    /// Distance from the probe to the label's nearest enrolled embedding.
    pub distance: f32,
    /// Probability that they show the same identity, from the model's head.
    pub probability: f32,
    /// `distance <= threshold`.
    pub accepted: bool,
}

/// One ranked label of [`Gallery::identify`].
#[derive(Debug, Clone, PartialEq)]
pub struct Candidate {
    /// The label.
    pub label: String,
    /// Its distance, probability and whether it is within the threshold.
    pub verification: Verification,
}

/// The answer of [`Gallery::identify`]: the nearest labels, nearest first.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Identification {
    /// Up to `k` labels, nearest first (ties by label).
    pub candidates: Vec<Candidate>,
}

impl Identification {
    /// The identity: the nearest label when it is within the threshold; `None` means
    /// "unknown" (open-set rejection), also for an empty gallery.
    pub fn label(&self) -> Option<&str> {
        self.candidates.first().filter(|c| c.verification.accepted).map(|c| c.label.as_str())
    }
}

/// What [`Gallery::enroll_files`] did.
#[derive(Debug, Default)]
pub struct Enrolled {
    /// Embeddings added.
    pub added: usize,
    /// Files that could not be embedded, each with its reason; nothing of them was added.
    pub failed: Vec<Error>,
}

/// Characters that change how a label is shown without showing themselves: bidirectional
/// overrides, embeddings and isolates, the Arabic letter mark, zero-width characters and the byte
/// order mark (a label "admin" followed by U+202E would display as another name).
fn is_invisible_format(c: char) -> bool {
    matches!(c, '\u{061C}' | '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2060}'..='\u{206F}' | '\u{FEFF}' | '\u{FFF9}'..='\u{FFFB}')
}

fn check_label(label: &str) -> Result<()> {
    let bad = |reason: &str| Err(Error::Label { label: label.into(), reason: reason.into() });
    if label.trim().is_empty() {
        bad("empty")
    } else if label.len() > MAX_LABEL {
        bad("longer than 256 bytes")
    } else if label.chars().any(|c| c.is_control() || is_invisible_format(c)) {
        bad("contains control, bidirectional or invisible formatting characters")
    } else {
        Ok(())
    }
}

impl Gallery {
    /// An empty gallery for embeddings from `model` (and its invariance).
    pub fn new(model: &Model) -> Gallery {
        Gallery {
            model: model.fingerprint().into(),
            invariance: model.invariance().as_str().into(),
            embedding_len: model.embedding_len(),
            threshold: None,
            identities: BTreeMap::new(),
        }
    }

    /// Reads a gallery and checks its magic, version, checksum and contents (every embedding of
    /// the stated length and finite, every label valid). Use it with the model that made it:
    /// every query checks [`Gallery::check_model`].
    pub fn load(path: impl AsRef<Path>) -> Result<Gallery> {
        let path = path.as_ref();
        let gallery: Gallery = FORMAT.load(path)?;
        gallery.validate(path)?;
        Ok(gallery)
    }

    /// [`Gallery::load`] on bytes in memory; `path` names them in errors.
    pub fn from_bytes(bytes: &[u8], path: impl AsRef<Path>) -> Result<Gallery> {
        let path = path.as_ref();
        let gallery: Gallery = FORMAT.read_bytes(bytes, path)?;
        gallery.validate(path)?;
        Ok(gallery)
    }

    /// The gallery's bytes as [`Gallery::save`] writes them.
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        FORMAT.to_bytes(self)
    }

    /// Writes the gallery atomically (a crash leaves the old file or the new one). Writers that
    /// may run at once should hold a [`FileLock`](crate::store::FileLock) on `path`.
    pub fn save(&self, path: impl AsRef<Path>) -> Result<()> {
        let path = path.as_ref();
        FORMAT.save(self, path)
    }

    /// A checksum only proves that a file is what was written; this refuses what no gallery
    /// writes, such as a file crafted to pass the checksum.
    fn validate(&self, path: &Path) -> Result<()> {
        let bad = |reason: String| Err(Error::Gallery { path: path.into(), reason });
        if let Some(t) = self.threshold.filter(|t| !t.is_finite() || *t < 0.0) {
            return bad(format!("threshold {t} is not a non-negative number"));
        }
        for (label, embeddings) in &self.identities {
            check_label(label).or_else(|e| bad(e.to_string()))?;
            if embeddings.is_empty() {
                return bad(format!("label {label:?} has no embedding"));
            }
            for e in embeddings {
                if e.len() != self.embedding_len || e.iter().any(|v| !v.is_finite()) {
                    return bad(format!("label {label:?} has an embedding of the wrong length or not finite"));
                }
            }
        }
        Ok(())
    }

    /// Checks that the gallery's embeddings came from `model` under its invariance, with the
    /// length it makes.
    pub fn check_model(&self, model: &Model) -> Result<()> {
        let invariance = model.invariance().as_str();
        if self.model != model.fingerprint() || self.invariance != invariance {
            return Err(Error::GalleryModel {
                made_by: format!("{} ({})", short(&self.model), self.invariance),
                in_use: format!("{} ({invariance})", short(model.fingerprint())),
            });
        }
        if self.embedding_len != model.embedding_len() {
            return Err(Error::DimensionMismatch { left: self.embedding_len, right: model.embedding_len() });
        }
        Ok(())
    }

    /// [`crate::Model::fingerprint`] of the model that made the embeddings.
    pub fn model(&self) -> &str {
        &self.model
    }

    /// The acceptance threshold: the one set with [`Gallery::set_threshold`], else the model's
    /// calibrated one.
    pub fn threshold(&self, model: &Model) -> f32 {
        self.threshold.unwrap_or(model.meta().threshold)
    }

    /// The threshold saved with the gallery, if one was set; `None` means the model's.
    pub fn stored_threshold(&self) -> Option<f32> {
        self.threshold
    }

    /// The saved threshold when it accepts more than `model`'s calibrated one: a gallery file
    /// can carry any threshold (a huge one accepts every probe), so callers should show it.
    pub fn looser_threshold(&self, model: &Model) -> Option<f32> {
        self.threshold.filter(|t| *t > model.meta().threshold)
    }

    /// Sets the acceptance threshold (a distance; lower is stricter), or `None` for the model's.
    /// It is saved with the gallery.
    pub fn set_threshold(&mut self, threshold: Option<f32>) -> Result<()> {
        if let Some(t) = threshold.filter(|t| !t.is_finite() || *t < 0.0) {
            return Err(Error::Threshold { value: t });
        }
        self.threshold = threshold;
        Ok(())
    }

    /// The labels and how many embeddings each holds, in label order.
    pub fn labels(&self) -> impl Iterator<Item = (&str, usize)> {
        self.identities.iter().map(|(l, e)| (l.as_str(), e.len()))
    }

    /// Number of labels.
    pub fn len(&self) -> usize {
        self.identities.len()
    }

    /// True when no label is enrolled.
    pub fn is_empty(&self) -> bool {
        self.identities.is_empty()
    }

    /// Adds embeddings (made by `model`) to `label`, creating it when new. All or nothing: an
    /// embedding of the wrong length or with a non-finite value refuses the whole call.
    pub fn enroll(&mut self, model: &Model, label: &str, embeddings: Vec<Embedding>) -> Result<usize> {
        self.check_model(model)?;
        check_label(label)?;
        for e in &embeddings {
            if e.len() != self.embedding_len {
                return Err(Error::DimensionMismatch { left: e.len(), right: self.embedding_len });
            }
            if e.iter().any(|v| !v.is_finite()) {
                return Err(Error::NonFinite { model: model.label().into(), path: PathBuf::from(label) });
            }
        }
        let n = embeddings.len();
        if n > 0 {
            self.identities.entry(label.into()).or_default().extend(embeddings);
        }
        Ok(n)
    }

    /// Embeds `images` with `model` and enrolls them under `label`.
    pub fn enroll_images(&mut self, model: &Model, label: &str, images: &[DynamicImage]) -> Result<usize> {
        self.check_model(model)?;
        check_label(label)?;
        let embeddings = model.embed_images(images)?;
        self.enroll(model, label, embeddings)
    }

    /// Embeds image files with `model` and enrolls those that decode under `label`; a file that
    /// fails is reported in [`Enrolled::failed`] and the others are still enrolled.
    pub fn enroll_files<P: AsRef<Path> + Sync>(&mut self, model: &Model, label: &str, paths: &[P]) -> Result<Enrolled> {
        self.check_model(model)?;
        check_label(label)?;
        let mut done = Enrolled::default();
        let mut embeddings = Vec::new();
        for result in model.embed_paths(paths) {
            match result {
                Ok(e) => embeddings.push(e),
                Err(e) => done.failed.push(e),
            }
        }
        done.added = self.enroll(model, label, embeddings)?;
        Ok(done)
    }

    /// Removes a label and its embeddings; returns how many embeddings it held (0 when absent).
    pub fn remove(&mut self, label: &str) -> usize {
        self.identities.remove(label).map_or(0, |e| e.len())
    }

    fn verification(&self, model: &Model, probe: &[f32], embeddings: &[Embedding]) -> Result<Verification> {
        let mut distance = f32::INFINITY;
        for e in embeddings {
            distance = distance.min(model.distance(probe, e)?);
        }
        Ok(Verification {
            distance,
            probability: model.meta().probability(distance),
            accepted: distance <= self.threshold(model),
        })
    }

    fn check_probe(&self, model: &Model, probe: &[f32]) -> Result<()> {
        self.check_model(model)?;
        if probe.len() != self.embedding_len {
            return Err(Error::DimensionMismatch { left: probe.len(), right: self.embedding_len });
        }
        Ok(())
    }

    /// Is `probe` (an embedding from `model`) the identity enrolled as `label`?
    pub fn verify(&self, model: &Model, probe: &[f32], label: &str) -> Result<Verification> {
        self.check_probe(model, probe)?;
        let embeddings = self
            .identities
            .get(label)
            .ok_or_else(|| Error::Label { label: label.into(), reason: "not enrolled".into() })?;
        self.verification(model, probe, embeddings)
    }

    /// The `k` labels nearest to `probe`, nearest first; [`Identification::label`] is the answer
    /// with open-set rejection. Every enrolled embedding is compared (exact; a gallery of 10,000
    /// embeddings of 64 values is a few milliseconds).
    pub fn identify(&self, model: &Model, probe: &[f32], k: usize) -> Result<Identification> {
        self.check_probe(model, probe)?;
        let mut candidates = self
            .identities
            .iter()
            .map(|(label, embeddings)| {
                Ok(Candidate { label: label.clone(), verification: self.verification(model, probe, embeddings)? })
            })
            .collect::<Result<Vec<_>>>()?;
        // Stable sort on labels already in order: ties go to the smaller label.
        candidates.sort_by(|a, b| a.verification.distance.total_cmp(&b.verification.distance));
        candidates.truncate(k);
        Ok(Identification { candidates })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tower::{self, InputShape, TowerSpec, TowerWeights};

    fn model(seed: u64) -> Model {
        let spec = TowerSpec::seed(InputShape { channels: 1, height: 8, width: 8 });
        let bytes = tower::write_onnx(
            &spec,
            &TowerWeights::seeded(&spec, seed).unwrap(),
            &tower::untrained_meta(&spec).unwrap(),
        )
        .unwrap();
        Model::from_bytes(&bytes, "test").unwrap()
    }

    /// Embeddings placed by hand: `alice` near the origin, `bob` far along the first axis.
    fn gallery(m: &Model) -> Gallery {
        let d = m.embedding_len();
        let at = |x: f32| {
            let mut e = vec![0.0; d];
            e[0] = x;
            e
        };
        let mut g = Gallery::new(m);
        g.set_threshold(Some(1.0)).unwrap();
        g.enroll(m, "alice", vec![at(0.0), at(0.2)]).unwrap();
        g.enroll(m, "bob", vec![at(10.0)]).unwrap();
        g
    }

    fn probe(m: &Model, x: f32) -> Embedding {
        let mut e = vec![0.0; m.embedding_len()];
        e[0] = x;
        e
    }

    #[test]
    fn verifies_and_identifies_with_open_set_rejection() {
        let m = model(1);
        let g = gallery(&m);
        let v = g.verify(&m, &probe(&m, 0.5), "alice").unwrap();
        assert!((v.distance - 0.3).abs() < 1e-5 && v.accepted, "{v:?}");
        assert!(!g.verify(&m, &probe(&m, 0.5), "bob").unwrap().accepted);
        assert!(matches!(g.verify(&m, &probe(&m, 0.5), "carol"), Err(Error::Label { .. })));

        let found = g.identify(&m, &probe(&m, 9.5), 5).unwrap();
        assert_eq!(found.label(), Some("bob"));
        assert_eq!(found.candidates.iter().map(|c| c.label.as_str()).collect::<Vec<_>>(), ["bob", "alice"]);
        assert_eq!(g.identify(&m, &probe(&m, 9.5), 1).unwrap().candidates.len(), 1);
        // Between the two, farther than the threshold from both: unknown, still ranked.
        let unknown = g.identify(&m, &probe(&m, 5.0), 2).unwrap();
        assert_eq!(unknown.label(), None);
        assert_eq!(unknown.candidates[0].label, "alice");
        assert_eq!(Gallery::new(&m).identify(&m, &probe(&m, 0.0), 3).unwrap().label(), None);
    }

    #[test]
    fn enrollment_is_checked_and_removal_counts() {
        let m = model(1);
        let mut g = gallery(&m);
        assert!(matches!(g.enroll(&m, "x", vec![vec![0.0; 3]]), Err(Error::DimensionMismatch { .. })));
        let mut nan = probe(&m, 0.0);
        nan[1] = f32::NAN;
        assert!(g.enroll(&m, "x", vec![probe(&m, 1.0), nan]).is_err());
        for label in ["", "  ", "a\nb", &"x".repeat(MAX_LABEL + 1)] {
            assert!(matches!(g.enroll(&m, label, vec![probe(&m, 1.0)]), Err(Error::Label { .. })), "{label:?}");
        }
        assert_eq!(g.labels().collect::<Vec<_>>(), [("alice", 2), ("bob", 1)]);
        assert_eq!(g.remove("alice"), 2);
        assert_eq!(g.remove("alice"), 0);
        assert_eq!(g.len(), 1);
    }

    #[test]
    fn another_model_is_refused() {
        let (m, other) = (model(1), model(2));
        let g = gallery(&m);
        let err = g.identify(&other, &probe(&m, 0.0), 1).unwrap_err().to_string();
        assert!(err.contains("not by the model in use"), "{err}");
        assert!(Gallery::new(&m)
            .enroll(&m.clone().with_invariance(crate::Invariance::MirrorRotate), "a", vec![])
            .is_err());
    }

    #[test]
    fn saves_loads_and_refuses_what_no_gallery_writes() {
        let m = model(1);
        let g = gallery(&m);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("g.twg");
        g.save(&path).unwrap();
        assert_eq!(Gallery::load(&path).unwrap(), g);
        let mut bad = g.clone();
        bad.identities.insert("carol".into(), vec![vec![1.0; 2]]);
        let err = Gallery::from_bytes(&bad.to_bytes().unwrap(), &path).unwrap_err().to_string();
        assert!(err.contains("wrong length"), "{err}");
        bad.identities.insert("carol".into(), vec![]);
        assert!(Gallery::from_bytes(&bad.to_bytes().unwrap(), &path).is_err());
        let mut bytes = g.to_bytes().unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        assert!(matches!(Gallery::from_bytes(&bytes, &path), Err(Error::Gallery { .. })));
    }

    #[test]
    fn a_gallery_whose_embedding_length_is_not_the_models_is_refused() {
        let m = model(1);
        let mut g = gallery(&m);
        g.embedding_len += 1;
        for e in g.identities.values_mut().flatten() {
            e.push(0.0);
        }
        let g = Gallery::from_bytes(&g.to_bytes().unwrap(), Path::new("g")).unwrap();
        assert!(matches!(g.check_model(&m), Err(Error::DimensionMismatch { .. })));
    }

    #[test]
    fn concurrent_reads_agree_with_one_thread() {
        let m = model(1);
        let g = std::sync::Arc::new(gallery(&m));
        let probes: Vec<f32> = (0..64).map(|i| i as f32 * 0.2).collect();
        let alone: Vec<Option<String>> =
            probes.iter().map(|x| g.identify(&m, &probe(&m, *x), 2).unwrap().label().map(String::from)).collect();
        std::thread::scope(|s| {
            let handles: Vec<_> = (0..4)
                .map(|_| {
                    s.spawn(|| {
                        probes
                            .iter()
                            .map(|x| g.identify(&m, &probe(&m, *x), 2).unwrap().label().map(String::from))
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            for h in handles {
                assert_eq!(h.join().unwrap(), alone);
            }
        });
    }
}
