//! Duplicate groups and outliers over an index's embeddings.
//!
//! **Grouping rule.** Byte-identical files are always one group, marked exact. Otherwise images
//! are taken in keep order (largest resolution, then oldest, then path); an image not yet in a
//! group opens one and becomes the image to keep, and every image not yet in a group that lies
//! within the threshold *of that image* joins it. Membership is judged against the kept image
//! only, never through another member, so a chain of loosely similar images cannot merge into
//! one mega-group: every member is within the threshold of the image to keep.
//!
//! **Outlier rule.** An image's score is its mean distance to its `k` nearest other images. It is
//! flagged when the score exceeds the median score by more than `3 x 1.4826 x MAD` (a robust
//! three-sigma rule), or, with `top`, when it is among the `top` highest scores.

use std::cmp::Ordering;
use std::collections::HashMap;

use rayon::prelude::*;

use crate::error::Result;
use crate::index::Entry;
use crate::{Metric, Model};

/// One member of a duplicate group.
#[derive(Debug, Clone, PartialEq)]
pub struct Member {
    /// Position in the entries.
    pub entry: usize,
    /// Distance to the image to keep (0 for it and for byte-identical copies).
    pub distance: f32,
    /// Byte-identical to the image to keep.
    pub exact: bool,
}

/// A duplicate group: the image to keep first, then the others by distance to it.
#[derive(Debug, Clone, PartialEq)]
pub struct Group {
    /// The members, `members[0]` the image to keep.
    pub members: Vec<Member>,
}

impl Group {
    /// Whether every member is a byte-identical copy of the image to keep.
    pub fn exact(&self) -> bool {
        self.members.iter().all(|m| m.exact)
    }
}

/// The order in which images are preferred as the one to keep: more pixels, then older, then
/// path.
fn keep_order(a: &Entry, b: &Entry) -> Ordering {
    let pixels = |e: &Entry| u64::from(e.dims.0) * u64::from(e.dims.1);
    pixels(b).cmp(&pixels(a)).then(a.modified_ns.cmp(&b.modified_ns)).then(a.path.cmp(&b.path))
}

/// Duplicate groups among `entries` at `threshold` under `model`'s distance (see the module
/// documentation for the rule). Groups come in the keep order of their first member.
pub fn duplicate_groups(entries: &[Entry], model: &Model, threshold: f32) -> Result<Vec<Group>> {
    let mut order: Vec<usize> = (0..entries.len()).collect();
    order.sort_by(|a, b| keep_order(&entries[*a], &entries[*b]));
    // One representative per distinct content; its byte-identical copies follow it.
    let mut by_hash: HashMap<[u8; 32], Vec<usize>> = HashMap::new();
    let mut reps = Vec::new();
    for &i in &order {
        let copies = by_hash.entry(entries[i].sha256).or_default();
        if copies.is_empty() {
            reps.push(i);
        }
        copies.push(i);
    }
    let near = near_pairs(entries, &reps, model, threshold)?;
    let mut grouped = vec![false; entries.len()];
    let mut groups = Vec::new();
    for &keep in &reps {
        if grouped[keep] {
            continue;
        }
        let mut members = Vec::new();
        let mut add = |rep: usize, distance: f32, grouped: &mut Vec<bool>| {
            for &copy in &by_hash[&entries[rep].sha256] {
                grouped[copy] = true;
                let exact = entries[copy].sha256 == entries[keep].sha256;
                members.push(Member { entry: copy, distance: if exact { 0.0 } else { distance }, exact });
            }
        };
        add(keep, 0.0, &mut grouped);
        let mut joined: Vec<(usize, f32)> =
            near.get(&keep).map(|v| v.iter().copied().filter(|(j, _)| !grouped[*j]).collect()).unwrap_or_default();
        joined.sort_by(|a, b| a.1.total_cmp(&b.1).then(a.0.cmp(&b.0)));
        for (j, d) in joined {
            add(j, d, &mut grouped);
        }
        if members.len() > 1 {
            groups.push(Group { members });
        }
    }
    Ok(groups)
}

/// Neighbours within the threshold: `(entry, distance)` pairs.
type Near = Vec<(usize, f32)>;

/// For each representative, the other representatives within `threshold`, by exact search
/// over each unordered pair once. Plain Euclidean embeddings (the usual case) are compared by
/// squared distance against the squared threshold, a loop the compiler vectorises.
fn near_pairs(entries: &[Entry], reps: &[usize], model: &Model, threshold: f32) -> Result<HashMap<usize, Near>> {
    let plain = model.meta().metric == Metric::Euclidean && model.embedding_len() == model.meta().embedding_dim;
    let t2 = threshold * threshold;
    let rows: Vec<Result<Vec<(usize, usize, f32)>>> = (0..reps.len())
        .into_par_iter()
        .map(|a| {
            let (i, x) = (reps[a], &entries[reps[a]].embedding);
            let mut hits = Vec::new();
            for &j in &reps[a + 1..] {
                let y = &entries[j].embedding;
                let d = if plain && x.len() == y.len() {
                    let sq: f32 = x.iter().zip(y).map(|(p, q)| (p - q) * (p - q)).sum();
                    if sq > t2 {
                        continue;
                    }
                    sq.sqrt()
                } else {
                    model.distance(x, y)?
                };
                if d <= threshold {
                    hits.push((i, j, d));
                }
            }
            Ok(hits)
        })
        .collect();
    let mut near: HashMap<usize, Near> = HashMap::new();
    for row in rows {
        for (i, j, d) in row? {
            near.entry(i).or_default().push((j, d));
            near.entry(j).or_default().push((i, d));
        }
    }
    Ok(near)
}

/// An image's outlier score.
#[derive(Debug, Clone, PartialEq)]
pub struct Outlier {
    /// Position in the entries.
    pub entry: usize,
    /// Mean distance to its `k` nearest other images.
    pub score: f32,
}

/// How outliers are flagged.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum OutlierRule {
    /// Score above median + 3 x 1.4826 x MAD of all scores.
    Robust,
    /// The `n` highest scores.
    Top(usize),
}

/// Outliers among `entries`: scores from the `k` nearest neighbours (byte-identical copies
/// count once), flagged by `rule`, highest score first.
pub fn outliers(entries: &[Entry], model: &Model, k: usize, rule: OutlierRule) -> Result<Vec<Outlier>> {
    let scores: Vec<Result<f32>> = (0..entries.len())
        .into_par_iter()
        .map(|i| {
            let mut d = Vec::with_capacity(entries.len());
            for (j, e) in entries.iter().enumerate() {
                if j != i && e.sha256 != entries[i].sha256 {
                    d.push(model.distance(&entries[i].embedding, &e.embedding)?);
                }
            }
            let k = k.max(1).min(d.len());
            if k == 0 {
                return Ok(0.0);
            }
            d.select_nth_unstable_by(k - 1, f32::total_cmp);
            Ok(d[..k].iter().sum::<f32>() / k as f32)
        })
        .collect();
    let scores: Vec<f32> = scores.into_iter().collect::<Result<_>>()?;
    let mut all: Vec<Outlier> = scores.iter().enumerate().map(|(entry, &score)| Outlier { entry, score }).collect();
    all.sort_by(|a, b| b.score.total_cmp(&a.score).then(a.entry.cmp(&b.entry)));
    Ok(match rule {
        OutlierRule::Top(n) => all.into_iter().take(n).collect(),
        OutlierRule::Robust => {
            let cut = robust_cut(&scores);
            all.into_iter().filter(|o| o.score > cut).collect()
        }
    })
}

/// `median + 3 x 1.4826 x MAD`: three standard deviations for normal data, unmoved by the
/// outliers themselves.
fn robust_cut(scores: &[f32]) -> f32 {
    let median = |v: &mut Vec<f32>| {
        v.sort_by(f32::total_cmp);
        match v.len() {
            0 => 0.0,
            n if n % 2 == 1 => v[n / 2],
            n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
        }
    };
    let m = median(&mut scores.to_vec());
    let mad = median(&mut scores.iter().map(|s| (s - m).abs()).collect());
    m + 3.0 * 1.4826 * mad
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn robust_cut_ignores_the_outlier_itself() {
        let mut scores: Vec<f32> = (0..20).map(|i| 1.0 + (i % 5) as f32 * 0.01).collect();
        scores.push(10.0);
        let cut = robust_cut(&scores);
        assert!(cut > 1.04 && cut < 2.0, "cut {cut}");
    }
}
