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
use std::sync::atomic::{AtomicU32, Ordering as AtomicOrdering};
use std::sync::Mutex;

use rayon::prelude::*;

use crate::contain::{ContainmentRule, Verdicts};
use crate::error::{Error, Result};
use crate::index::Entry;
use crate::search::{Hit, Purpose, Search, SearchKind};
use crate::{squared_euclidean, Model};

/// One member of a duplicate group.
#[derive(Debug, Clone, PartialEq)]
pub struct Member<'a> {
    /// The image.
    pub entry: &'a Entry,
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
pub struct Group<'a> {
    /// The members, `members[0]` the image to keep; never fewer than two.
    pub members: Vec<Member<'a>>,
}

impl<'a> Group<'a> {
    /// The image to keep.
    pub fn keep(&self) -> &'a Entry {
        self.members[0].entry
    }

    /// The members other than the image to keep, nearest first.
    pub fn copies(&self) -> &[Member<'a>] {
        &self.members[1..]
    }

    /// Whether every member is a byte-identical copy of the image to keep.
    pub fn exact(&self) -> bool {
        self.members.iter().all(|m| m.exact)
    }
}

/// How [`duplicate_groups`] groups.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GroupOptions {
    /// Distance at or below which two images are duplicates; `None` for the model's calibrated
    /// threshold.
    pub threshold: Option<f32>,
    /// Also join crops and framed copies beyond the threshold (see [`crate::contain`]); `None`
    /// groups by distance alone.
    pub containment: Option<ContainmentRule>,
    /// The neighbour search.
    pub search: SearchKind,
}

impl Default for GroupOptions {
    fn default() -> Self {
        GroupOptions { threshold: None, containment: Some(ContainmentRule::default()), search: SearchKind::Auto }
    }
}

impl GroupOptions {
    /// The threshold in use with `model`: refused unless a finite, non-negative distance.
    pub fn threshold(&self, model: &Model) -> Result<f32> {
        let value = self.threshold.unwrap_or(model.meta().threshold);
        if value.is_finite() && value >= 0.0 {
            Ok(value)
        } else {
            Err(Error::Threshold { value })
        }
    }
}

/// The order in which images are preferred as the one to keep: more pixels, then older, then
/// path.
fn keep_order(a: &Entry, b: &Entry) -> Ordering {
    let pixels = |e: &Entry| u64::from(e.dims.0) * u64::from(e.dims.1);
    pixels(b).cmp(&pixels(a)).then(a.modified_ns.cmp(&b.modified_ns)).then(a.path.cmp(&b.path))
}

/// Duplicate groups among `entries` under `model`'s distance, as `options` say (see the module
/// documentation for the rule). Groups come in the keep order of their first member.
pub fn duplicate_groups<'a>(entries: &'a [Entry], model: &Model, options: &GroupOptions) -> Result<Vec<Group<'a>>> {
    groups_knowing(entries, model, options, &mut Verdicts::default())
}

/// [`duplicate_groups`], taking the containment verdicts from `verdicts` where it has them and
/// adding those it reaches.
pub(crate) fn groups_knowing<'a>(
    entries: &'a [Entry],
    model: &Model,
    options: &GroupOptions,
    verdicts: &mut Verdicts,
) -> Result<Vec<Group<'a>>> {
    let threshold = options.threshold(model)?;
    let rule = options.containment.as_ref();
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
    let vectors: Vec<&[f32]> = reps.iter().map(|&i| entries[i].embedding.as_slice()).collect();
    let found = neighbourhood(&vectors, model, threshold, options)?;
    let near = duplicate_pairs(entries, &reps, found, Checks { threshold, rule, verdicts });
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
                members.push(Member { entry: &entries[copy], distance, exact, contained: contained && !exact });
            }
        };
        add(keep, 0.0, false, &mut grouped);
        let mut joined: Vec<&Link> =
            near.get(&keep).map(|v| v.iter().filter(|n| !grouped[n.entry]).collect()).unwrap_or_default();
        joined.sort_by(|a, b| a.distance.total_cmp(&b.distance).then(a.entry.cmp(&b.entry)));
        for link in joined {
            add(link.entry, link.distance, link.contained, &mut grouped);
        }
        if members.len() > 1 {
            groups.push(Group { members });
        }
    }
    Ok(groups)
}

/// A duplicate of some image.
struct Link {
    entry: usize,
    distance: f32,
    /// Joined by the containment check.
    contained: bool,
}

/// Two images (by position, `a < b`) and their distance.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Pair {
    a: usize,
    b: usize,
    distance: f32,
}

impl Pair {
    fn new(i: usize, j: usize, distance: f32) -> Pair {
        Pair { a: i.min(j), b: i.max(j), distance }
    }
}

/// What grouping needs from the neighbour search.
struct Neighbourhood {
    /// Pairs of representatives (by position) within the threshold, each unordered pair once.
    near: Vec<Pair>,
    /// With a containment rule, each representative's nearest others (by position in the
    /// representatives) within the rule's reach, nearest first, at most the rule's number of
    /// neighbours; otherwise empty.
    nearest: Vec<Vec<Hit>>,
}

/// How pairs beyond the threshold are checked for containment, and the verdicts known.
struct Checks<'r> {
    threshold: f32,
    rule: Option<&'r ContainmentRule>,
    verdicts: &'r mut Verdicts,
}

/// Each representative's duplicates: the pairs within the threshold, and the pairs beyond it
/// that the rule checks (one is among the other's nearest) and finds contained; a verdict known
/// is not reached again.
fn duplicate_pairs(
    entries: &[Entry],
    reps: &[usize],
    found: Neighbourhood,
    checks: Checks,
) -> HashMap<usize, Vec<Link>> {
    let Checks { threshold, rule, verdicts } = checks;
    let mut near: HashMap<usize, Vec<Link>> = HashMap::new();
    let mut join = |pair: Pair, contained: bool| {
        let distance = pair.distance;
        near.entry(pair.a).or_default().push(Link { entry: pair.b, distance, contained });
        near.entry(pair.b).or_default().push(Link { entry: pair.a, distance, contained });
    };
    for p in found.near {
        join(Pair { a: reps[p.a], b: reps[p.b], distance: p.distance }, false);
    }
    let Some(rule) = rule else {
        return near;
    };
    let mut candidates: Vec<Pair> = Vec::new();
    for (a, list) in found.nearest.iter().enumerate() {
        for (rank, hit) in list.iter().enumerate() {
            if rule.checks(hit.distance, threshold, rank) {
                candidates.push(Pair::new(reps[a], reps[hit.index], hit.distance));
            }
        }
    }
    candidates.sort_by_key(|p| (p.a, p.b));
    candidates.dedup_by_key(|p| (p.a, p.b));
    let hashes = |p: &Pair| (&entries[p.a].sha256, &entries[p.b].sha256);
    let (mut contained, mut unknown) = (Vec::new(), Vec::new());
    for p in candidates {
        let (a, b) = hashes(&p);
        match verdicts.get(rule, a, b) {
            Some(true) => contained.push(p),
            Some(false) => {}
            None => unknown.push(p),
        }
    }
    let reached: Vec<(Pair, bool)> =
        unknown.into_par_iter().map(|p| (p, rule.contains(&entries[p.a].thumb, &entries[p.b].thumb))).collect();
    for (p, verdict) in reached {
        let (a, b) = hashes(&p);
        verdicts.insert(rule, a, b, verdict);
        if verdict {
            contained.push(p);
        }
    }
    contained.sort_by_key(|p| (p.a, p.b));
    for pair in contained {
        join(pair, true);
    }
    near
}

/// The neighbour search for grouping. Exact search visits each unordered pair once; through the
/// HNSW graph each representative asks for its neighbours within the threshold (a pair found
/// from either side is kept once) and, with a rule, for its nearest.
fn neighbourhood(vectors: &[&[f32]], model: &Model, threshold: f32, options: &GroupOptions) -> Result<Neighbourhood> {
    let search = Search::new(vectors.to_vec(), model, options.search, Purpose::Grouping);
    let (k, reach) =
        options.containment.as_ref().map_or((0, threshold), |r| (r.neighbours, threshold * r.max_distance.max(1.0)));
    if !search.is_hnsw() {
        return exact_neighbourhood(vectors, model, threshold, Reach { k, distance: reach });
    }
    let rows: Vec<Result<(Vec<Pair>, Vec<Hit>)>> = (0..vectors.len())
        .into_par_iter()
        .map(|a| {
            let near = search.within(vectors[a], threshold)?;
            let near = near.into_iter().filter(|h| h.index != a).map(|h| Pair::new(a, h.index, h.distance)).collect();
            let nearest = if k == 0 { Vec::new() } else { search.nearest(vectors[a], k + 1)? };
            Ok((near, nearest.into_iter().filter(|h| h.index != a && h.distance <= reach).take(k).collect()))
        })
        .collect();
    let mut seen = std::collections::HashSet::new();
    let mut found = Neighbourhood { near: Vec::new(), nearest: Vec::new() };
    for row in rows {
        let (near, nearest) = row?;
        found.near.extend(near.into_iter().filter(|p: &Pair| seen.insert((p.a, p.b))));
        found.nearest.push(nearest);
    }
    Ok(found)
}

/// The `k` nearest offered so far within some reach, by distance then position, whatever the
/// order of the offers; shared between the threads of an exact search.
struct Nearest {
    k: usize,
    /// The distance of the `k`-th nearest once there are `k` (as `f32` bits), so that most
    /// offers are turned away without taking the lock.
    bound: AtomicU32,
    list: Mutex<Vec<(f32, usize)>>,
}

impl Nearest {
    fn new(k: usize) -> Nearest {
        Nearest { k, bound: AtomicU32::new(f32::INFINITY.to_bits()), list: Mutex::new(Vec::with_capacity(k)) }
    }

    fn offer(&self, d: f32, j: usize) {
        if self.k == 0 || d > f32::from_bits(self.bound.load(AtomicOrdering::Relaxed)) {
            return;
        }
        let mut list = self.list.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let later = |x: &(f32, usize), y: &(f32, usize)| x.0.total_cmp(&y.0).then(x.1.cmp(&y.1));
        if list.len() < self.k {
            list.push((d, j));
        } else if let Some((at, worst)) = list.iter().copied().enumerate().max_by(|x, y| later(&x.1, &y.1)) {
            if later(&(d, j), &worst) == Ordering::Less {
                list[at] = (d, j);
            }
        }
        if list.len() == self.k {
            let worst = list.iter().map(|x| x.0).fold(f32::NEG_INFINITY, f32::max);
            self.bound.store(worst.to_bits(), AtomicOrdering::Relaxed);
        }
    }

    fn into_sorted(self) -> Vec<Hit> {
        let mut list = self.list.into_inner().unwrap_or_else(std::sync::PoisonError::into_inner);
        list.sort_by(|x, y| x.0.total_cmp(&y.0).then(x.1.cmp(&y.1)));
        list.into_iter().map(|(distance, index)| Hit { index, distance }).collect()
    }
}

/// How many nearest neighbours the containment check looks at, and how far.
#[derive(Debug, Clone, Copy)]
struct Reach {
    k: usize,
    distance: f32,
}

/// Exact search for [`neighbourhood`] over the representatives' `vectors`: the pairs within
/// `threshold` and each one's `reach.k` nearest within `reach.distance`. Where the model's
/// distance is plain Euclidean per view (the usual case, see `Model::plain_views`), views are
/// compared by squared distance against the squared reach less their margin, in blocks.
fn exact_neighbourhood(vectors: &[&[f32]], model: &Model, threshold: f32, reach: Reach) -> Result<Neighbourhood> {
    let (k, reach) = (reach.k, reach.distance);
    let n = vectors.len();
    let nearest: Vec<Nearest> = (0..n).map(|_| Nearest::new(k)).collect();
    let visit = |a: usize, b: usize, d: f32, hits: &mut Vec<Pair>| {
        if d <= threshold {
            hits.push(Pair { a, b, distance: d });
        }
        if d <= reach {
            nearest[a].offer(d, b);
            nearest[b].offer(d, a);
        }
    };
    let (dim, len) = (model.meta().embedding_dim, model.embedding_len());
    let views = model.plain_views().filter(|_| vectors.iter().all(|v| v.len() == len));
    let rows: Vec<Result<Vec<Pair>>> = match views {
        None => (0..n)
            .into_par_iter()
            .map(|a| {
                let mut hits = Vec::new();
                for b in a + 1..n {
                    visit(a, b, model.distance(vectors[a], vectors[b])?, &mut hits);
                }
                Ok(hits)
            })
            .collect(),
        Some(views) => {
            // (offset, margin, squared radius) of each view that can come within reach at all.
            let views: Vec<(usize, f32, f32)> = views
                .into_iter()
                .filter(|(_, margin)| *margin <= reach)
                .map(|(offset, margin)| (offset, margin, (reach - margin) * (reach - margin)))
                .collect();
            // One contiguous matrix, compared in blocks of rows: each column vector is loaded
            // once per block rather than once per row, which keeps the loop out of main memory.
            const ROWS: usize = 32;
            let matrix: Vec<f32> = vectors.iter().flat_map(|v| v.iter().copied()).collect();
            let row = |a: usize| &matrix[a * len..][..len];
            (0..n.div_ceil(ROWS))
                .into_par_iter()
                .map(|block| {
                    let first = block * ROWS;
                    let rows = first..(first + ROWS).min(n);
                    let mut hits = Vec::new();
                    for b in first + 1..n {
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
                            visit(a, b, best, &mut hits);
                        }
                    }
                    Ok(hits)
                })
                .collect()
        }
    };
    let mut near = Vec::new();
    for row in rows {
        near.extend(row?);
    }
    Ok(Neighbourhood { near, nearest: nearest.into_iter().map(Nearest::into_sorted).collect() })
}

/// An image's outlier score.
#[derive(Debug, Clone, PartialEq)]
pub struct Outlier<'a> {
    /// The image.
    pub entry: &'a Entry,
    /// Mean distance to its `k` nearest other images.
    pub score: f32,
    /// Those neighbours, nearest first.
    pub neighbours: Vec<Neighbour<'a>>,
}

/// An image near another (an outlier's neighbour, a query's answer).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Neighbour<'a> {
    /// The image.
    pub entry: &'a Entry,
    /// Its distance.
    pub distance: f32,
}

/// How outliers are flagged.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum OutlierRule {
    /// Score above median + 3 x 1.4826 x MAD of all scores.
    Robust,
    /// The `n` highest scores.
    Top(usize),
}

/// How [`outliers`] scores and flags.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct OutlierOptions {
    /// Neighbours per score (clamped to what the collection has).
    pub k: usize,
    /// Which scores are flagged.
    pub rule: OutlierRule,
    /// The neighbour search.
    pub search: SearchKind,
}

impl Default for OutlierOptions {
    fn default() -> Self {
        OutlierOptions { k: 5, rule: OutlierRule::Robust, search: SearchKind::Auto }
    }
}

/// Outliers among `entries` under `model`'s distance, as `options` say, highest score first.
pub fn outliers<'a>(entries: &'a [Entry], model: &Model, options: &OutlierOptions) -> Result<Vec<Outlier<'a>>> {
    let OutlierOptions { k, rule, search: kind } = *options;
    let mut copies: HashMap<[u8; 32], usize> = HashMap::new();
    for e in entries {
        *copies.entry(e.sha256).or_default() += 1;
    }
    let search =
        Search::new(entries.iter().map(|e| e.embedding.as_slice()).collect(), model, kind, Purpose::Neighbours);
    // More neighbours than there are other images is all of them (and k + copies cannot wrap).
    let k = k.clamp(1, entries.len().max(2) - 1);
    let scored: Vec<Result<Outlier>> = entries
        .par_iter()
        .map(|e| {
            // Its own byte copies (itself included) come first, at distance 0; skip past them.
            let hits = search.nearest(&e.embedding, k + copies[&e.sha256])?;
            let neighbours: Vec<Neighbour> = hits
                .into_iter()
                .map(|h| Neighbour { entry: &entries[h.index], distance: h.distance })
                .filter(|n| n.entry.sha256 != e.sha256)
                .take(k)
                .collect();
            let n = neighbours.len().max(1) as f32;
            Ok(Outlier { entry: e, score: neighbours.iter().map(|h| h.distance).sum::<f32>() / n, neighbours })
        })
        .collect();
    let mut all: Vec<Outlier> = scored.into_iter().collect::<Result<_>>()?;
    let scores: Vec<f32> = all.iter().map(|o| o.score).collect();
    // Entries are sorted by path, so ties go by path.
    all.sort_by(|a, b| b.score.total_cmp(&a.score).then(a.entry.path.cmp(&b.entry.path)));
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
    fn block_comparison_of_views_agrees_with_the_models_distance_and_ranks_the_nearest() {
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
        let vectors: Vec<&[f32]> = entries.iter().map(|e| e.embedding.as_slice()).collect();
        let (threshold, k, reach) = (0.5, 12, 0.55);
        let found = exact_neighbourhood(&vectors, &model, threshold, Reach { k, distance: reach }).unwrap();
        let mut fast = found.near;
        fast.sort_by_key(|p| (p.a, p.b));
        let mut slow = Vec::new();
        let mut by_grey = 0;
        for a in 0..entries.len() {
            for b in a + 1..entries.len() {
                let (x, y) = (&entries[a].embedding, &entries[b].embedding);
                let d = model.distance(x, y).unwrap();
                if d <= threshold {
                    slow.push(Pair { a, b, distance: d });
                    by_grey += usize::from(crate::squared_euclidean(&x[..4], &y[..4]).sqrt() > threshold);
                }
            }
        }
        // Each one's k nearest within reach, by distance then position.
        for (a, got) in found.nearest.iter().enumerate() {
            let mut all: Vec<(usize, f32)> = (0..entries.len())
                .filter(|&b| b != a)
                .map(|b| (b, model.distance(vectors[a], vectors[b]).unwrap()))
                .filter(|h| h.1 <= reach)
                .collect();
            all.sort_by(|x, y| x.1.total_cmp(&y.1).then(x.0.cmp(&y.0)));
            all.truncate(k);
            assert_eq!(got.iter().map(|h| h.index).collect::<Vec<_>>(), all.iter().map(|h| h.0).collect::<Vec<_>>());
            assert!(got.iter().zip(&all).all(|(g, w)| (g.distance - w.1).abs() < 1e-5));
        }
        let lens: Vec<usize> = found.nearest.iter().map(Vec::len).collect();
        assert!(lens.contains(&k) && lens.iter().any(|&l| l < k), "{lens:?}");
        assert!(by_grey > 0 && slow.len() > by_grey, "{} pairs, {by_grey} only through the grey view", slow.len());
        assert_eq!(fast.len(), slow.len());
        for (f, s) in fast.iter().zip(&slow) {
            assert!(f.a == s.a && f.b == s.b && (f.distance - s.distance).abs() < 1e-5, "{f:?} vs {s:?}");
        }
    }
}
