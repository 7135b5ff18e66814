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

use crate::contain::{hash_key, ContainmentRule, Verdicts};
use crate::error::{Error, Result};
use crate::index::Entry;
use crate::neighbours::{self, Neighbours, Scope};
use crate::search::{Hit, SearchKind};
use crate::thumbs::Thumbs;
use crate::Model;

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

    /// What the neighbour lists must hold to group `contents` distinct images with `model`.
    pub(crate) fn scope(&self, model: &Model, contents: usize) -> Result<Scope> {
        Ok(Scope {
            radius: self.threshold(model)?,
            count: self.containment.map_or(0, |r| r.neighbours.min(contents)),
            exact: Scope::exact_search(self.search, contents, model),
        })
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
/// `thumbs` holds the thumbnails the containment check compares.
pub fn duplicate_groups<'a>(
    entries: &'a [Entry],
    thumbs: &Thumbs,
    model: &Model,
    options: &GroupOptions,
) -> Result<Vec<Group<'a>>> {
    let contents = contents_of(entries);
    let lists = Neighbours::compute(&contents, model, options.scope(model, contents.len())?)?;
    let known = Known { lists: &lists, thumbs, verdicts: &mut Verdicts::default() };
    groups_from(entries, model, options, known)
}

/// What grouping reads beside the entries: the neighbour lists, the thumbnails, and the
/// containment verdicts already reached (to which it adds).
pub(crate) struct Known<'k> {
    pub lists: &'k Neighbours,
    pub thumbs: &'k Thumbs,
    pub verdicts: &'k mut Verdicts,
}

/// Each distinct content of `entries` (by key) and its embedding.
pub(crate) fn contents_of(entries: &[Entry]) -> Vec<neighbours::Content<'_>> {
    neighbours::contents(entries.iter().map(|e| (hash_key(&e.sha256), e.embedding.as_slice())))
}

/// [`duplicate_groups`] from neighbour lists that cover `options` (see [`GroupOptions::scope`]),
/// taking the containment verdicts known where there are some and adding those it reaches.
pub(crate) fn groups_from<'a>(
    entries: &'a [Entry],
    model: &Model,
    options: &GroupOptions,
    known: Known,
) -> Result<Vec<Group<'a>>> {
    let Known { lists, thumbs, verdicts } = known;
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
    let found = neighbourhood(entries, &reps, lists, threshold, rule);
    let near = duplicate_pairs(entries, &reps, found, Checks { threshold, rule, verdicts, thumbs })?;
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

/// What grouping needs from the neighbour lists.
struct Neighbourhood {
    /// Pairs of representatives (by position) within the threshold, each unordered pair once.
    near: Vec<Pair>,
    /// Each representative's nearest others (by position in the representatives) within the
    /// containment rule's reach, nearest first, at most the rule's number of neighbours; empty
    /// without a rule.
    nearest: Vec<Vec<Hit>>,
}

/// How pairs beyond the threshold are checked for containment, and the verdicts known.
struct Checks<'r> {
    threshold: f32,
    rule: Option<&'r ContainmentRule>,
    verdicts: &'r mut Verdicts,
    thumbs: &'r Thumbs,
}

/// Each representative's duplicates: the pairs within the threshold, and the pairs beyond it
/// that the rule checks (one is among the other's nearest) and finds contained; a verdict known
/// is not reached again.
fn duplicate_pairs(
    entries: &[Entry],
    reps: &[usize],
    found: Neighbourhood,
    checks: Checks,
) -> Result<HashMap<usize, Vec<Link>>> {
    let Checks { threshold, rule, verdicts, thumbs } = checks;
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
        return Ok(near);
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
    let reached: Vec<(Pair, bool)> = unknown
        .into_par_iter()
        .map(|p| Ok((p, rule.contains(&thumbs.get(&entries[p.a].sha256)?, &thumbs.get(&entries[p.b].sha256)?))))
        .collect::<Result<_>>()?;
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
    Ok(near)
}

/// The pairs within the threshold and each representative's nearest within the rule's reach,
/// read from the lists (by position in `reps`).
fn neighbourhood(
    entries: &[Entry],
    reps: &[usize],
    lists: &Neighbours,
    threshold: f32,
    rule: Option<&ContainmentRule>,
) -> Neighbourhood {
    let (k, reach) = rule.map_or((0, threshold), |r| (r.neighbours, threshold * r.max_distance.max(1.0)));
    let key = |i: usize| hash_key(&entries[i].sha256);
    let position: HashMap<u64, usize> = reps.iter().enumerate().map(|(p, &i)| (key(i), p)).collect();
    let mut found = Neighbourhood { near: Vec::new(), nearest: Vec::with_capacity(reps.len()) };
    for (a, &i) in reps.iter().enumerate() {
        let mut nearest = Vec::new();
        for n in lists.list(key(i)) {
            let Some(&b) = position.get(&n.key) else { continue };
            if n.distance <= threshold {
                found.near.push(Pair::new(a, b, n.distance));
            }
            if nearest.len() < k && n.distance <= reach {
                nearest.push(Hit { index: b, distance: n.distance });
            }
        }
        found.nearest.push(nearest);
    }
    // Each pair is in both lists.
    found.near.sort_by_key(|p| (p.a, p.b));
    found.near.dedup_by_key(|p| (p.a, p.b));
    found
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
    let contents = contents_of(entries);
    let lists = Neighbours::compute(&contents, model, options.scope(model, contents.len()))?;
    Ok(outliers_from(entries, options, &lists))
}

impl OutlierOptions {
    /// What the neighbour lists must hold to score `contents` distinct images with `model`.
    pub(crate) fn scope(&self, model: &Model, contents: usize) -> Scope {
        let count = self.k.clamp(1, contents.max(2) - 1);
        Scope { radius: 0.0, count, exact: Scope::exact_search(self.search, contents, model) }
    }
}

/// [`outliers`] from neighbour lists that cover `options` (see [`OutlierOptions::scope`]): an
/// image's neighbours are the images of the contents in its content's list, in that order.
pub(crate) fn outliers_from<'a>(
    entries: &'a [Entry],
    options: &OutlierOptions,
    lists: &Neighbours,
) -> Vec<Outlier<'a>> {
    let OutlierOptions { k, rule, .. } = *options;
    let mut copies: HashMap<u64, Vec<&Entry>> = HashMap::new();
    for e in entries {
        copies.entry(hash_key(&e.sha256)).or_default().push(e);
    }
    // More neighbours than there are other images is all of them.
    let k = k.clamp(1, entries.len().max(2) - 1);
    let mut all: Vec<Outlier> = entries
        .par_iter()
        .map(|e| {
            let neighbours: Vec<Neighbour> = lists
                .list(hash_key(&e.sha256))
                .iter()
                .flat_map(|n| {
                    copies.get(&n.key).into_iter().flatten().map(|entry| Neighbour { entry, distance: n.distance })
                })
                .take(k)
                .collect();
            let n = neighbours.len().max(1) as f32;
            Outlier { entry: e, score: neighbours.iter().map(|h| h.distance).sum::<f32>() / n, neighbours }
        })
        .collect();
    let scores: Vec<f32> = all.iter().map(|o| o.score).collect();
    // Entries are sorted by path, so ties go by path.
    all.sort_by(|a, b| b.score.total_cmp(&a.score).then(a.entry.path.cmp(&b.entry.path)));
    match rule {
        OutlierRule::Top(n) => all.into_iter().take(n).collect(),
        OutlierRule::Robust => {
            let cut = robust_cut(&scores);
            all.into_iter().filter(|o| o.score > cut).collect()
        }
    }
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
