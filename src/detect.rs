//! Duplicate groups and outliers over an index's embeddings.
//!
//! **Grouping rule.** Byte-identical files are always one group, marked exact. Otherwise images
//! are taken in keep order (largest resolution, then oldest, then path); an image not yet in a
//! group opens one and becomes the image to keep, and every image not yet in a group that lies
//! within the threshold *of that image* joins it. Membership is judged against the kept image
//! only, never through another member, so a chain of loosely similar images cannot merge into
//! one mega-group: every member is within the threshold of the image to keep. With a
//! [`ContainmentRule`], an image beyond the threshold also joins when the rule checks the pair
//! (among each other's nearest, not too far) and one image is a part of the other (a crop, a
//! framed copy): see [`crate::contain`].
//!
//! **Outlier rule.** An image's score is its mean distance to its `k` nearest other images (its
//! own byte-identical copies are not its neighbours). It is flagged when the score exceeds the
//! median score by more than `3 x 1.4826 x MAD` (a robust three-sigma rule), or, with `top`,
//! when it is among the `top` highest scores.

use std::cmp::Ordering;
use std::collections::HashMap;

use rayon::prelude::*;

use crate::contain::{containment, ContainmentRule};
use crate::error::Result;
use crate::index::Entry;
use crate::search::{Purpose, Search, SearchKind};
use crate::{squared_euclidean, Model};

/// One member of a duplicate group.
#[derive(Debug, Clone, PartialEq)]
pub struct Member {
    /// Position in the entries.
    pub entry: usize,
    /// Distance to the image to keep (0 for it and for byte-identical copies).
    pub distance: f32,
    /// Byte-identical to the image to keep.
    pub exact: bool,
    /// Joined by the containment check: beyond the threshold, but one of it and the image to
    /// keep is a part of the other.
    pub contained: bool,
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

/// Duplicate groups among `entries` at `threshold` under `model`'s distance, with the
/// containment check of `rule` where given (see the module documentation for the rule),
/// neighbours found by a search of the given kind. Groups come in the keep order of their first
/// member.
pub fn duplicate_groups(
    entries: &[Entry],
    model: &Model,
    threshold: f32,
    kind: SearchKind,
    rule: Option<&ContainmentRule>,
) -> Result<Vec<Group>> {
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
    let radius = rule.map_or(threshold, |r| threshold * r.max_distance.max(1.0));
    let near = duplicate_pairs(entries, near_pairs(entries, &reps, model, radius, kind)?, threshold, rule);
    let mut grouped = vec![false; entries.len()];
    let mut groups = Vec::new();
    for &keep in &reps {
        if grouped[keep] {
            continue;
        }
        let mut members = Vec::new();
        let mut add = |rep: usize, distance: f32, contained: bool, grouped: &mut Vec<bool>| {
            for &copy in &by_hash[&entries[rep].sha256] {
                grouped[copy] = true;
                let exact = entries[copy].sha256 == entries[keep].sha256;
                let distance = if exact { 0.0 } else { distance };
                members.push(Member { entry: copy, distance, exact, contained: contained && !exact });
            }
        };
        add(keep, 0.0, false, &mut grouped);
        let mut joined: Vec<&Neighbour> =
            near.get(&keep).map(|v| v.iter().filter(|n| !grouped[n.0]).collect()).unwrap_or_default();
        joined.sort_by(|a, b| a.1.total_cmp(&b.1).then(a.0.cmp(&b.0)));
        for &(j, d, contained) in joined {
            add(j, d, contained, &mut grouped);
        }
        if members.len() > 1 {
            groups.push(Group { members });
        }
    }
    Ok(groups)
}

/// A duplicate of some image: `(entry, distance, joined by containment)`.
type Neighbour = (usize, f32, bool);

/// Two entries within the search radius and their distance.
type Pair = (usize, usize, f32);

/// Each representative's duplicates among `pairs` (each unordered pair once): the pairs within
/// `threshold`, and those beyond it that `rule` checks (by the rank of each in the other's
/// nearest) and finds contained.
fn duplicate_pairs(
    entries: &[Entry],
    pairs: Vec<Pair>,
    threshold: f32,
    rule: Option<&ContainmentRule>,
) -> HashMap<usize, Vec<Neighbour>> {
    let mut near: HashMap<usize, Vec<Neighbour>> = HashMap::new();
    let mut beyond: Vec<Pair> = Vec::new();
    for (i, j, d) in pairs {
        if d <= threshold {
            near.entry(i).or_default().push((j, d, false));
            near.entry(j).or_default().push((i, d, false));
        } else {
            beyond.push((i, j, d));
        }
    }
    let Some(rule) = rule.filter(|_| !beyond.is_empty()) else {
        return near;
    };
    // Each image's neighbours, nearest first, to rank its pairs by.
    let mut ranked: HashMap<usize, Vec<(f32, usize)>> = HashMap::new();
    for (i, list) in &near {
        ranked.entry(*i).or_default().extend(list.iter().map(|n| (n.1, n.0)));
    }
    for &(i, j, d) in &beyond {
        ranked.entry(i).or_default().push((d, j));
        ranked.entry(j).or_default().push((d, i));
    }
    let mut rank: HashMap<(usize, usize), usize> = HashMap::new();
    for (i, list) in &mut ranked {
        list.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
        for (r, (_, j)) in list.iter().enumerate().take(rule.neighbours) {
            let slot = rank.entry((*i.min(j), *i.max(j))).or_insert(r);
            *slot = (*slot).min(r);
        }
    }
    let contained: Vec<Pair> = beyond
        .into_par_iter()
        .filter(|&(i, j, d)| {
            rank.get(&(i, j)).is_some_and(|&r| rule.checks(d, threshold, r))
                && containment(&entries[i].thumb, &entries[j].thumb).holds(rule.alignment, rule.detail)
        })
        .collect();
    for (i, j, d) in contained {
        near.entry(i).or_default().push((j, d, true));
        near.entry(j).or_default().push((i, d, true));
    }
    near
}

/// Every unordered pair of representatives within `radius`, once. Exact search visits each
/// pair once; through the HNSW graph each representative asks for its neighbours within the
/// radius, and a pair found from either side is kept once.
fn near_pairs(entries: &[Entry], reps: &[usize], model: &Model, radius: f32, kind: SearchKind) -> Result<Vec<Pair>> {
    let search =
        Search::new(reps.iter().map(|&i| entries[i].embedding.as_slice()).collect(), model, kind, Purpose::Grouping);
    let rows: Vec<Result<Vec<Pair>>> = if search.is_hnsw() {
        (0..reps.len())
            .into_par_iter()
            .map(|a| {
                let hits = search.within(&entries[reps[a]].embedding, radius)?;
                Ok(hits.into_iter().filter(|(b, _)| *b != a).map(|(b, d)| (reps[a], reps[b], d)).collect())
            })
            .collect()
    } else {
        exact_pairs(entries, reps, model, radius)
    };
    let mut seen = std::collections::HashSet::new();
    let mut pairs = Vec::new();
    for row in rows {
        let ordered = row?.into_iter().map(|(i, j, d)| (i.min(j), i.max(j), d));
        pairs.extend(ordered.filter(|p| seen.insert((p.0, p.1))));
    }
    Ok(pairs)
}

/// Exact search for [`near_pairs`]. Where the model's distance is plain Euclidean per view (the
/// usual case, see `Model::plain_views`), views are compared by squared distance against the
/// squared threshold less their margin.
fn exact_pairs(entries: &[Entry], reps: &[usize], model: &Model, threshold: f32) -> Vec<Result<Vec<Pair>>> {
    let (dim, len) = (model.meta().embedding_dim, model.embedding_len());
    let views = model.plain_views().filter(|_| reps.iter().all(|&i| entries[i].embedding.len() == len));
    let Some(views) = views else {
        return (0..reps.len())
            .into_par_iter()
            .map(|a| {
                let x = &entries[reps[a]].embedding;
                let mut hits = Vec::new();
                for &j in &reps[a + 1..] {
                    let d = model.distance(x, &entries[j].embedding)?;
                    if d <= threshold {
                        hits.push((reps[a], j, d));
                    }
                }
                Ok(hits)
            })
            .collect();
    };
    // (offset, margin, squared radius) of each view that can reach the threshold at all.
    let views: Vec<(usize, f32, f32)> = views
        .into_iter()
        .filter(|(_, margin)| *margin <= threshold)
        .map(|(offset, margin)| (offset, margin, (threshold - margin) * (threshold - margin)))
        .collect();
    // One contiguous matrix, compared in blocks of rows: each column vector is loaded once per
    // block rather than once per row, which keeps the loop out of main memory.
    const ROWS: usize = 32;
    let matrix: Vec<f32> = reps.iter().flat_map(|&i| entries[i].embedding.iter().copied()).collect();
    let row = |a: usize| &matrix[a * len..][..len];
    (0..reps.len().div_ceil(ROWS))
        .into_par_iter()
        .map(|block| {
            let first = block * ROWS;
            let rows = first..(first + ROWS).min(reps.len());
            let mut hits = Vec::new();
            for b in first + 1..reps.len() {
                let y = row(b);
                for a in rows.start..rows.end.min(b) {
                    let x = row(a);
                    let mut best = f32::INFINITY;
                    for &(offset, margin, r2) in &views {
                        let sq = squared_euclidean(&x[offset..][..dim], &y[offset..][..dim]);
                        if sq <= r2 {
                            best = best.min(sq.sqrt() + margin);
                        }
                    }
                    if best <= threshold {
                        hits.push((reps[a], reps[b], best));
                    }
                }
            }
            Ok(hits)
        })
        .collect()
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

/// Outliers among `entries`: scores from the `k` nearest neighbours, found by a search of the
/// given kind, flagged by `rule`, highest score first.
pub fn outliers(
    entries: &[Entry],
    model: &Model,
    k: usize,
    rule: OutlierRule,
    kind: SearchKind,
) -> Result<Vec<Outlier>> {
    let mut copies: HashMap<[u8; 32], usize> = HashMap::new();
    for e in entries {
        *copies.entry(e.sha256).or_default() += 1;
    }
    let search =
        Search::new(entries.iter().map(|e| e.embedding.as_slice()).collect(), model, kind, Purpose::Neighbours);
    let k = k.max(1);
    let scores: Vec<Result<f32>> = entries
        .par_iter()
        .map(|e| {
            // Its own byte copies (itself included) come first, at distance 0; skip past them.
            let hits = search.nearest(&e.embedding, k + copies[&e.sha256])?;
            let d: Vec<f32> =
                hits.into_iter().filter(|(j, _)| entries[*j].sha256 != e.sha256).map(|h| h.1).take(k).collect();
            Ok(if d.is_empty() { 0.0 } else { d.iter().sum::<f32>() / d.len() as f32 })
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

    #[test]
    fn block_comparison_of_views_agrees_with_the_models_distance() {
        use crate::tower::{self, SplitMix64, TowerSpec, TowerWeights};
        let spec = TowerSpec::photo(4);
        let mut meta = tower::untrained_meta(&spec).unwrap();
        meta.grey_margin = Some(0.3);
        let bytes = tower::write_onnx(&spec, &TowerWeights::seeded(&spec, 1).unwrap(), &meta).unwrap();
        let model = Model::from_bytes(&bytes, "m").unwrap();
        assert_eq!(model.embedding_len(), 8);
        let mut rng = SplitMix64::new(4);
        let entries: Vec<Entry> = (0..150u8)
            .map(|i| Entry {
                path: format!("{i}.png").into(),
                size: 1,
                modified_ns: 0,
                sha256: [i; 32],
                dims: (1, 1),
                embedding: (0..8).map(|_| rng.next_f32()).collect(),
                thumb: crate::contain::Thumb::of(&image::DynamicImage::new_luma8(1, 1)),
            })
            .collect();
        let reps: Vec<usize> = (0..entries.len()).collect();
        let threshold = 0.5;
        let mut fast: Vec<Pair> =
            exact_pairs(&entries, &reps, &model, threshold).into_iter().flat_map(|r| r.unwrap()).collect();
        fast.sort_by_key(|p| (p.0, p.1));
        let mut slow = Vec::new();
        let mut by_grey = 0;
        for a in 0..entries.len() {
            for b in a + 1..entries.len() {
                let (x, y) = (&entries[a].embedding, &entries[b].embedding);
                let d = model.distance(x, y).unwrap();
                if d <= threshold {
                    slow.push((a, b, d));
                    by_grey += usize::from(crate::squared_euclidean(&x[..4], &y[..4]).sqrt() > threshold);
                }
            }
        }
        assert!(by_grey > 0 && slow.len() > by_grey, "{} pairs, {by_grey} only through the grey view", slow.len());
        assert_eq!(fast.len(), slow.len());
        for (f, s) in fast.iter().zip(&slow) {
            assert!(f.0 == s.0 && f.1 == s.1 && (f.2 - s.2).abs() < 1e-5, "{f:?} vs {s:?}");
        }
    }
}
