//! Pair metrics: accuracy at a threshold, the best threshold, ROC AUC, equal error rate,
//! true-accept rate at a false-accept rate, and fitting the head.

use rayon::prelude::*;

use crate::dataset::{Dataset, Pair};
use crate::error::Result;
use twinscan::Head;
use twinscan::Model;

/// Fraction of pairs classified right when "similar" means `distance <= threshold`.
pub fn accuracy(distances: &[f32], similar: &[bool], threshold: f32) -> f64 {
    let right = distances.iter().zip(similar).filter(|(d, s)| (**d <= threshold) == **s).count();
    right as f64 / distances.len().max(1) as f64
}

/// The distance threshold with the highest accuracy on these pairs (midway between neighbouring
/// distances), and that accuracy.
pub fn best_threshold(distances: &[f32], similar: &[bool]) -> (f32, f64) {
    let mut order: Vec<usize> = (0..distances.len()).collect();
    order.sort_by(|a, b| distances[*a].total_cmp(&distances[*b]));
    let negatives = similar.iter().filter(|s| !**s).count();
    // Threshold below everything: all pairs called dissimilar.
    let (mut right, mut best, mut best_t) =
        (negatives, negatives, distances.iter().copied().fold(f32::INFINITY, f32::min) - 1e-6);
    for (k, &i) in order.iter().enumerate() {
        right = if similar[i] { right + 1 } else { right - 1 };
        let next = order.get(k + 1).map(|j| distances[*j]);
        if next == Some(distances[i]) {
            continue; // a threshold cannot split tied distances
        }
        if right > best {
            best = right;
            best_t = next.map_or(distances[i], |n| (distances[i] + n) / 2.0);
        }
    }
    (best_t.max(0.0), best as f64 / distances.len().max(1) as f64)
}

/// Area under the ROC curve of the score `-distance` for telling similar pairs from dissimilar
/// ones (ties count half).
pub fn roc_auc(distances: &[f32], similar: &[bool]) -> f64 {
    let mut order: Vec<usize> = (0..distances.len()).collect();
    order.sort_by(|a, b| distances[*a].total_cmp(&distances[*b]));
    let (pos, neg) = similar.iter().fold((0usize, 0usize), |(p, n), s| if *s { (p + 1, n) } else { (p, n + 1) });
    if pos == 0 || neg == 0 {
        return f64::NAN;
    }
    // Count, for each similar pair, the dissimilar pairs strictly farther, plus half the ties.
    let (mut wins, mut neg_seen, mut k) = (0.0f64, 0usize, 0);
    while k < order.len() {
        let mut end = k;
        while end < order.len() && distances[order[end]] == distances[order[k]] {
            end += 1;
        }
        let group = &order[k..end];
        let (gp, gn) =
            group.iter().fold((0usize, 0usize), |(p, n), i| if similar[*i] { (p + 1, n) } else { (p, n + 1) });
        wins += gp as f64 * ((neg - neg_seen - gn) as f64 + 0.5 * gn as f64);
        neg_seen += gn;
        k = end;
    }
    wins / (pos as f64 * neg as f64)
}

/// Accept rates as the threshold sweeps up through the distances: after each group of tied
/// distances, that distance (the threshold), the fraction of similar pairs accepted (TAR) and of
/// dissimilar ones (FAR); first (-inf, 0, 0), nothing accepted.
fn accept_rates(distances: &[f32], similar: &[bool]) -> Vec<(f32, f64, f64)> {
    let mut order: Vec<usize> = (0..distances.len()).collect();
    order.sort_by(|a, b| distances[*a].total_cmp(&distances[*b]));
    let pos = similar.iter().filter(|s| **s).count().max(1) as f64;
    let neg = similar.iter().filter(|s| !**s).count().max(1) as f64;
    let (mut tp, mut fp) = (0usize, 0usize);
    let mut rates = vec![(f32::NEG_INFINITY, 0.0, 0.0)];
    for (k, &i) in order.iter().enumerate() {
        if similar[i] {
            tp += 1;
        } else {
            fp += 1;
        }
        if order.get(k + 1).map(|j| distances[*j]) != Some(distances[i]) {
            rates.push((distances[i], tp as f64 / pos, fp as f64 / neg));
        }
    }
    rates
}

/// Equal error rate: where the false-accept rate meets the false-reject rate as the threshold
/// sweeps (the mean of the two at the threshold where they are closest).
///
/// ```
/// // One dissimilar pair nearer than one of four similar ones: FAR 0.25 = FRR 0.25.
/// let eer = twinscan_lab::evaluate::equal_error_rate(&[0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8], &[true, true, true, false, true, false, false, false]);
/// assert!((eer - 0.25).abs() < 1e-9);
/// ```
pub fn equal_error_rate(distances: &[f32], similar: &[bool]) -> f64 {
    accept_rates(distances, similar)
        .into_iter()
        .map(|(_, tar, far)| (far - (1.0 - tar), (far + 1.0 - tar) / 2.0))
        .min_by(|a, b| a.0.abs().total_cmp(&b.0.abs()))
        .map_or(f64::NAN, |(_, eer)| eer)
}

/// The largest distance threshold whose false-accept rate is at most `far` (pairs at or below
/// it accepted; 0 when even that accepts too many), and the true-accept rate there.
pub fn at_far(distances: &[f32], similar: &[bool], far: f64) -> (f32, f64) {
    accept_rates(distances, similar)
        .into_iter()
        .rev()
        .find(|(_, _, f)| *f <= far)
        .map_or((0.0, 0.0), |(t, tar, _)| (t.max(0.0), tar))
}

/// Fits `p = sigmoid(a - b * d)` to the pairs by Newton's method on the log-likelihood (1-D
/// logistic regression), keeping `b` positive so the head stays monotone.
pub fn fit_head(distances: &[f32], similar: &[bool]) -> Head {
    let (mut a, mut b) = (0.0f64, 1.0f64);
    for _ in 0..50 {
        let (mut ga, mut gb, mut haa, mut hab, mut hbb) = (0.0, 0.0, 1e-9, 0.0, 1e-9);
        for (d, s) in distances.iter().zip(similar) {
            let d = f64::from(*d);
            let p = 1.0 / (1.0 + (-(a - b * d)).exp());
            let r = if *s { 1.0 } else { 0.0 } - p;
            let w = p * (1.0 - p);
            ga += r;
            gb -= r * d;
            haa += w;
            hab -= w * d;
            hbb += w * d * d;
        }
        let det = haa * hbb - hab * hab;
        if det.abs() < 1e-12 {
            break;
        }
        let (da, db) = ((hbb * ga - hab * gb) / det, (haa * gb - hab * ga) / det);
        a += da;
        b = (b + db).max(1e-6);
        if da.abs() + db.abs() < 1e-9 {
            break;
        }
    }
    Head { a: a as f32, b: b as f32 }
}

/// What [`evaluate_pairs`] measures.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PairReport {
    /// Pairs evaluated.
    pub pairs: usize,
    /// Accuracy at the model's threshold.
    pub accuracy: f64,
    /// ROC AUC of `-distance`.
    pub auc: f64,
}

/// Embeds images `indices` of `data`; [`Model::embedding_len`] values per image, in order.
pub fn embed_dataset(model: &Model, data: &Dataset, indices: &[usize]) -> Result<Vec<f32>> {
    let chunks: Vec<Vec<f32>> = indices
        .par_chunks(256)
        .map(|chunk| model.embed_inputs(&data.batch(chunk, model.meta()), chunk.len()))
        .collect::<twinscan::Result<_>>()?;
    Ok(chunks.concat())
}

/// Embeds every image a pair uses (each once) with the model and returns the pairs' distances.
pub fn pair_distances(model: &Model, data: &Dataset, pairs: &[Pair]) -> Result<Vec<f32>> {
    let mut used: Vec<usize> = pairs.iter().flat_map(|p| [p.a, p.b]).collect();
    used.sort_unstable();
    used.dedup();
    let d = model.embedding_len();
    let flat = embed_dataset(model, data, &used)?;
    let row = |i: usize| {
        let k = used.binary_search(&i).unwrap_or(0);
        &flat[k * d..(k + 1) * d]
    };
    Ok(pairs.iter().map(|p| model.distance(row(p.a), row(p.b))).collect::<twinscan::Result<_>>()?)
}

/// The study's evaluation on `pairs`: accuracy at the model's threshold, and ROC AUC.
pub fn evaluate_pairs(model: &Model, data: &Dataset, pairs: &[Pair]) -> Result<PairReport> {
    let distances = pair_distances(model, data, pairs)?;
    let similar: Vec<bool> = pairs.iter().map(|p| p.similar).collect();
    Ok(PairReport {
        pairs: pairs.len(),
        accuracy: accuracy(&distances, &similar, model.meta().threshold),
        auc: roc_auc(&distances, &similar),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auc_counts_ties_half_and_orders_correctly() {
        assert_eq!(roc_auc(&[0.1, 0.2, 0.3, 0.4], &[true, true, false, false]), 1.0);
        assert_eq!(roc_auc(&[0.1, 0.2, 0.3, 0.4], &[false, false, true, true]), 0.0);
        assert_eq!(roc_auc(&[0.5, 0.5], &[true, false]), 0.5);
        // one similar pair beats one of two dissimilar ones: 0.5
        assert_eq!(roc_auc(&[0.1, 0.2, 0.3], &[false, true, false]), 0.5);
    }

    #[test]
    fn equal_error_rate_and_tar_at_far_follow_the_sweep() {
        // Separable: no error at all.
        let (d, s) = ([0.1, 0.2, 0.9, 1.0], [true, true, false, false]);
        assert_eq!(equal_error_rate(&d, &s), 0.0);
        assert_eq!(at_far(&d, &s, 0.0), (0.2, 1.0));
        // 10 similar at 1..=10, 10 dissimilar at 6..=15 (ties at 6..=10 move both rates).
        let d: Vec<f32> = (1..=10).chain(6..=15).map(|x| x as f32).collect();
        let s: Vec<bool> = (0..20).map(|i| i < 10).collect();
        assert_eq!(at_far(&d, &s, 0.0), (5.0, 0.5));
        assert_eq!(at_far(&d, &s, 0.1), (6.0, 0.6));
        assert_eq!(at_far(&d, &s, 1.0).1, 1.0);
        // At 7: TAR 0.7 (FRR 0.3), FAR 0.2; at 8: FRR 0.2, FAR 0.3; both ~0.25 apart, mean 0.25.
        assert!((equal_error_rate(&d, &s) - 0.25).abs() < 1e-9);
    }

    #[test]
    fn best_threshold_separates_separable_pairs() {
        let d = [0.1, 0.2, 0.9, 1.0];
        let s = [true, true, false, false];
        let (t, acc) = best_threshold(&d, &s);
        assert_eq!(acc, 1.0);
        assert!(t > 0.2 && t < 0.9, "{t}");
        assert_eq!(accuracy(&d, &s, t), 1.0);
    }

    #[test]
    fn fitted_head_is_monotone_and_crosses_half_between_the_classes() {
        let d: Vec<f32> = (0..200).map(|i| i as f32 / 100.0).collect();
        let s: Vec<bool> = (0..200).map(|i| if i % 10 == 0 { i >= 100 } else { i < 100 }).collect();
        let h = fit_head(&d, &s);
        assert!(h.b > 0.0);
        let mid = h.distance_at(0.5);
        assert!((0.8..1.2).contains(&mid), "{h:?} crosses 0.5 at {mid}");
    }
}
