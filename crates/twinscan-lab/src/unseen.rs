//! The unseen-class protocol: how well a tower matches and flags images of classes it never saw
//! in training (trained on some labels, measured on the others), as face recognition is measured
//! on people who were not in its training set.
//!
//! Three measurements on the unseen classes' images:
//! - **verification**: balanced test pairs ([`make_pairs`]); ROC AUC, equal error rate and
//!   true-accept rate at 1% and 0.1% false-accept rate;
//! - **identification**: a [`Gallery`] of `n` training images per class (drawn with the seed),
//!   every test image a probe; top-1 accuracy over all classes, then open set: each class in turn
//!   left out of the gallery, the rate at which its probes are rejected ("unknown") and at which
//!   the enrolled classes' probes are accepted with the right label, at two thresholds: the
//!   model's, and a strict one set where the *seen* classes' test pairs have a false-accept rate
//!   of `far` (what an operator can calibrate without the unseen identities);
//! - **anomaly detection**: for each class, its test images are normal and the other unseen
//!   classes' test images anomalies; the score is the mean distance to the `k` nearest training
//!   images of the class; AUROC for the model's embeddings and for raw pixels (Euclidean).

use rayon::prelude::*;

use crate::dataset::{make_pairs, Dataset};
use crate::error::{Error, Result};
use crate::evaluate::{at_far, embed_dataset, equal_error_rate, roc_auc};
use twinscan::gallery::Gallery;
use twinscan::squared_euclidean;
use twinscan::tower::SplitMix64;
use twinscan::Model;

/// What to measure.
#[derive(Debug, Clone, PartialEq)]
pub struct Protocol {
    /// The labels the tower did not see in training.
    pub classes: Vec<u32>,
    /// Balanced verification pairs drawn from the unseen test images.
    pub pairs: usize,
    /// Gallery sizes: training images enrolled per class.
    pub enrolled: Vec<usize>,
    /// Random galleries drawn per size (results are their mean).
    pub trials: usize,
    /// Neighbours whose mean distance is the anomaly score.
    pub k: usize,
    /// Seed of pair and gallery draws.
    pub seed: u64,
    /// False-accept rate on pairs of the seen classes' test images (labels not in `classes`)
    /// that sets the strict threshold.
    pub far: f64,
}

impl Default for Protocol {
    /// Classes 5-9, 50,000 pairs, galleries of 1 and 5 images per class, 5 trials, k = 5, seed 1,
    /// strict threshold at 1% false accepts.
    fn default() -> Protocol {
        Protocol {
            classes: (5..10).collect(),
            pairs: 50_000,
            enrolled: vec![1, 5],
            trials: 5,
            k: 5,
            seed: 1,
            far: 0.01,
        }
    }
}

/// Verification on balanced pairs of unseen-class test images.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct VerificationReport {
    /// Pairs measured (half similar).
    pub pairs: usize,
    /// ROC AUC of `-distance`.
    pub auc: f64,
    /// Equal error rate.
    pub eer: f64,
    /// True-accept rate at 1% false-accept rate.
    pub tar_at_far_1: f64,
    /// True-accept rate at 0.1% false-accept rate.
    pub tar_at_far_01: f64,
    /// Accuracy at the model's threshold (calibrated on the seen classes).
    pub accuracy: f64,
    /// At the strict threshold (when there are seen classes): the rates on these unseen pairs,
    /// to compare with the false-accept rate it was set for.
    pub strict: Option<Rates>,
}

/// Accept rates at one threshold.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rates {
    /// The distance threshold.
    pub threshold: f32,
    /// True-accept rate.
    pub tar: f64,
    /// False-accept rate.
    pub far: f64,
}

/// Open-set identification at one threshold.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct OpenSet {
    /// The distance threshold.
    pub threshold: f32,
    /// Probes of the left-out class answered "unknown".
    pub unknown_rejected: f64,
    /// Probes of enrolled classes accepted with their own label.
    pub known_accepted: f64,
}

/// Identification with galleries of one size.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct IdentificationReport {
    /// Training images enrolled per class.
    pub enrolled: usize,
    /// Closed set, every unseen class enrolled: probes whose nearest label is theirs.
    pub top1: f64,
    /// Open set at the model's threshold.
    pub open: OpenSet,
    /// Open set at the strict threshold, when there are seen classes to set it on.
    pub strict: Option<OpenSet>,
}

/// Anomaly detection for one unseen class.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AnomalyReport {
    /// The normal class.
    pub class: u32,
    /// AUROC of the kNN score on the model's embeddings.
    pub model_auroc: f64,
    /// AUROC of the same score on raw pixels.
    pub pixel_auroc: f64,
}

/// Everything [`run`] measures.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    /// Verification.
    pub verification: VerificationReport,
    /// Identification, one entry per gallery size.
    pub identification: Vec<IdentificationReport>,
    /// Anomaly detection, one entry per class.
    pub anomaly: Vec<AnomalyReport>,
}

impl Report {
    /// Mean anomaly AUROC over the classes: (model, raw pixels).
    pub fn mean_auroc(&self) -> (f64, f64) {
        let n = self.anomaly.len().max(1) as f64;
        let sum = |f: fn(&AnomalyReport) -> f64| self.anomaly.iter().map(f).sum::<f64>() / n;
        (sum(|a| a.model_auroc), sum(|a| a.pixel_auroc))
    }
}

/// The images of `data` whose label is one of `classes`, as indices, with their label.
fn pick(data: &Dataset, classes: &[u32]) -> (Vec<usize>, Vec<u32>) {
    (0..data.len()).filter(|i| classes.contains(&data.labels[*i])).map(|i| (i, data.labels[i])).unzip()
}

/// Rows of one flat matrix.
struct Rows<'a> {
    flat: &'a [f32],
    len: usize,
}

impl Rows<'_> {
    fn get(&self, i: usize) -> &[f32] {
        &self.flat[i * self.len..(i + 1) * self.len]
    }
}

/// Runs the protocol: `train` supplies gallery and reference images, `test` the probes, pairs
/// and anomaly test images; only images of `protocol.classes` are used.
pub fn run(model: &Model, train: &Dataset, test: &Dataset, protocol: &Protocol) -> Result<Report> {
    let (train_idx, train_labels) = pick(train, &protocol.classes);
    let (test_idx, test_labels) = pick(test, &protocol.classes);
    let present = |labels: &[u32]| protocol.classes.iter().filter(|c| labels.contains(c)).count();
    if protocol.classes.len() < 2
        || present(&train_labels) < protocol.classes.len()
        || present(&test_labels) < protocol.classes.len()
    {
        return Err(Error::Dataset {
            path: test.source.clone().into(),
            reason: format!(
                "the protocol needs training and test images of each of at least two classes {:?}",
                protocol.classes
            ),
        });
    }
    let len = model.embedding_len();
    let train_flat = embed_dataset(model, train, &train_idx)?;
    let test_flat = embed_dataset(model, test, &test_idx)?;
    let (train_rows, test_rows) = (Rows { flat: &train_flat, len }, Rows { flat: &test_flat, len });

    let strict = strict_threshold(model, test, protocol)?;
    let verification = verify(model, &test_rows, &test_labels, protocol, strict)?;
    let identification = protocol
        .enrolled
        .iter()
        .map(|&n| identify(model, (&train_rows, &train_labels), (&test_rows, &test_labels), n, protocol, strict))
        .collect::<Result<_>>()?;

    let pixels = |data: &Dataset, idx: &[usize]| -> Vec<f32> {
        idx.iter().flat_map(|i| data.image(*i).iter().map(|p| f32::from(*p) / 255.0)).collect()
    };
    let (train_px, test_px) = (pixels(train, &train_idx), pixels(test, &test_idx));
    let px_len = train.image_len();
    let (train_px, test_px) = (Rows { flat: &train_px, len: px_len }, Rows { flat: &test_px, len: px_len });
    let euclid = |a: &[f32], b: &[f32]| Ok(squared_euclidean(a, b).sqrt());
    let anomaly = protocol
        .classes
        .iter()
        .map(|&class| {
            let reference: Vec<usize> = (0..train_labels.len()).filter(|i| train_labels[*i] == class).collect();
            let normal: Vec<bool> = test_labels.iter().map(|l| *l == class).collect();
            let model_scores =
                knn_scores(&train_rows, &reference, &test_rows, protocol.k, |a, b| model.distance(a, b))?;
            let pixel_scores = knn_scores(&train_px, &reference, &test_px, protocol.k, euclid)?;
            Ok(AnomalyReport {
                class,
                model_auroc: roc_auc(&model_scores, &normal),
                pixel_auroc: roc_auc(&pixel_scores, &normal),
            })
        })
        .collect::<Result<_>>()?;
    Ok(Report { verification, identification, anomaly })
}

/// Balanced pairs of `rows` and their distances.
fn pair_distances(model: &Model, rows: &Rows, labels: &[u32], n: usize, seed: u64) -> Result<(Vec<f32>, Vec<bool>)> {
    let pairs = make_pairs(labels, n, seed);
    let distances =
        pairs.iter().map(|p| model.distance(rows.get(p.a), rows.get(p.b))).collect::<twinscan::Result<_>>()?;
    Ok((distances, pairs.iter().map(|p| p.similar).collect()))
}

/// The threshold at `protocol.far` false accepts on pairs of the seen classes' test images;
/// `None` when fewer than two seen classes have test images.
fn strict_threshold(model: &Model, test: &Dataset, protocol: &Protocol) -> Result<Option<f32>> {
    let (idx, labels): (Vec<usize>, Vec<u32>) =
        (0..test.len()).filter(|i| !protocol.classes.contains(&test.labels[*i])).map(|i| (i, test.labels[i])).unzip();
    let mut seen = labels.clone();
    seen.sort_unstable();
    seen.dedup();
    if seen.len() < 2 {
        return Ok(None);
    }
    let flat = embed_dataset(model, test, &idx)?;
    let rows = Rows { flat: &flat, len: model.embedding_len() };
    let (distances, similar) = pair_distances(model, &rows, &labels, protocol.pairs, protocol.seed.wrapping_add(1))?;
    Ok(Some(at_far(&distances, &similar, protocol.far).0))
}

fn verify(
    model: &Model,
    rows: &Rows,
    labels: &[u32],
    protocol: &Protocol,
    strict: Option<f32>,
) -> Result<VerificationReport> {
    let (distances, similar) = pair_distances(model, rows, labels, protocol.pairs, protocol.seed)?;
    let rate = |want: bool, t: f32| {
        let n = similar.iter().filter(|s| **s == want).count().max(1);
        distances.iter().zip(&similar).filter(|(d, s)| **s == want && **d <= t).count() as f64 / n as f64
    };
    Ok(VerificationReport {
        pairs: distances.len(),
        auc: roc_auc(&distances, &similar),
        eer: equal_error_rate(&distances, &similar),
        tar_at_far_1: at_far(&distances, &similar, 0.01).1,
        tar_at_far_01: at_far(&distances, &similar, 0.001).1,
        accuracy: crate::evaluate::accuracy(&distances, &similar, model.meta().threshold),
        strict: strict.map(|t| Rates { threshold: t, tar: rate(true, t), far: rate(false, t) }),
    })
}

fn identify(
    model: &Model,
    (train, train_labels): (&Rows, &[u32]),
    (test, test_labels): (&Rows, &[u32]),
    n: usize,
    protocol: &Protocol,
    strict: Option<f32>,
) -> Result<IdentificationReport> {
    let classes = &protocol.classes;
    let thresholds: Vec<Option<f32>> = std::iter::once(None).chain(strict.map(Some)).collect();
    let truth: Vec<String> = test_labels.iter().map(u32::to_string).collect();
    let mut top1 = 0.0;
    // Per threshold: summed rejection and acceptance rates.
    let mut open = vec![(0.0, 0.0); thresholds.len()];
    for trial in 0..protocol.trials {
        let mut rng = SplitMix64::new(protocol.seed ^ ((n as u64) << 32) ^ trial as u64);
        // n distinct training images per class, a partial Fisher-Yates shuffle of its images.
        let chosen: Vec<Vec<usize>> = classes
            .iter()
            .map(|c| {
                let mut own: Vec<usize> = (0..train_labels.len()).filter(|i| train_labels[*i] == *c).collect();
                for j in 0..n.min(own.len()) {
                    let k = j + rng.below(own.len() - j);
                    own.swap(j, k);
                }
                own.truncate(n);
                own
            })
            .collect();
        let gallery = |left_out: Option<u32>, threshold: Option<f32>| -> Result<Gallery> {
            let mut g = Gallery::new(model);
            g.set_threshold(threshold)?;
            for (c, images) in classes.iter().zip(&chosen).filter(|(c, _)| Some(**c) != left_out) {
                g.enroll(model, &c.to_string(), images.iter().map(|i| train.get(*i).to_vec()).collect())?;
            }
            Ok(g)
        };
        // Each probe's answer from one gallery: (nearest label, accepted label).
        let answers = |g: &Gallery| -> Result<Vec<(Option<String>, Option<String>)>> {
            (0..test_labels.len())
                .into_par_iter()
                .map(|i| {
                    let found = g.identify(model, test.get(i), 1)?;
                    Ok((found.candidates.first().map(|c| c.label.clone()), found.label().map(String::from)))
                })
                .collect()
        };
        let closed = answers(&gallery(None, None)?)?;
        top1 += closed.iter().zip(&truth).filter(|((nearest, _), t)| nearest.as_ref() == Some(*t)).count() as f64
            / truth.len() as f64;
        for (threshold, sums) in thresholds.iter().zip(&mut open) {
            for &left_out in classes {
                let answered = answers(&gallery(Some(left_out), *threshold)?)?;
                let (mut unknown, mut rejected, mut known, mut accepted) = (0, 0, 0, 0);
                for ((_, label), (t, l)) in answered.iter().zip(truth.iter().zip(test_labels)) {
                    if *l == left_out {
                        unknown += 1;
                        rejected += usize::from(label.is_none());
                    } else {
                        known += 1;
                        accepted += usize::from(label.as_ref() == Some(t));
                    }
                }
                sums.0 += rejected as f64 / unknown.max(1) as f64;
                sums.1 += accepted as f64 / known.max(1) as f64;
            }
        }
    }
    let trials = protocol.trials.max(1) as f64;
    let runs = trials * classes.len() as f64;
    let mut open = thresholds.iter().zip(open).map(|(t, (rejected, accepted))| OpenSet {
        threshold: t.unwrap_or(model.meta().threshold),
        unknown_rejected: rejected / runs,
        known_accepted: accepted / runs,
    });
    let at_model = open.next().unwrap_or(OpenSet {
        threshold: model.meta().threshold,
        unknown_rejected: 0.0,
        known_accepted: 0.0,
    });
    Ok(IdentificationReport { enrolled: n, top1: top1 / trials, open: at_model, strict: open.next() })
}

/// For each row of `queries`, the mean of its `k` smallest distances to the rows `reference`
/// of `refs`.
fn knn_scores(
    refs: &Rows,
    reference: &[usize],
    queries: &Rows,
    k: usize,
    distance: impl Fn(&[f32], &[f32]) -> twinscan::Result<f32> + Sync,
) -> twinscan::Result<Vec<f32>> {
    let k = k.clamp(1, reference.len().max(1));
    let n = queries.flat.len() / queries.len.max(1);
    (0..n)
        .into_par_iter()
        .map(|q| {
            let query = queries.get(q);
            // The k smallest so far, ascending; k is small, so insertion beats a heap.
            let mut best: Vec<f32> = Vec::with_capacity(k + 1);
            for &r in reference {
                let d = distance(query, refs.get(r))?;
                if best.len() < k || d < best[k - 1] {
                    let at = best.partition_point(|b| *b <= d);
                    best.insert(at, d);
                    best.truncate(k);
                }
            }
            Ok(best.iter().sum::<f32>() / best.len().max(1) as f32)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn knn_scores_are_the_mean_of_the_k_nearest() {
        let refs = [0.0f32, 1.0, 2.0, 10.0];
        let queries = [0.0f32, 9.0];
        let (r, q) = (Rows { flat: &refs, len: 1 }, Rows { flat: &queries, len: 1 });
        let abs = |a: &[f32], b: &[f32]| Ok((a[0] - b[0]).abs());
        assert_eq!(knn_scores(&r, &[0, 1, 2, 3], &q, 2, abs).unwrap(), [0.5, 4.0]);
        // Only the reference rows count; k larger than the reference is all of it.
        assert_eq!(knn_scores(&r, &[3], &q, 5, abs).unwrap(), [10.0, 1.0]);
    }
}
