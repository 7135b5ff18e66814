//! Each distinct image's nearest others, kept with the index: duplicate groups, the containment
//! check and outlier scores are read from these lists, so a rescan recomputes only the lists a
//! change touches.
//!
//! **What a list holds.** For each content (named by the first 8 bytes of its SHA-256, like the
//! containment verdicts) a prefix of the other contents in order of distance, ties by key:
//! every one within the [`Scope`]'s radius and at least its `count` nearest. A list is searched
//! for with twice `count`, so that it can lose some before it falls short. Being a prefix is
//! what makes a list cheap to keep:
//!
//! - a removed content leaves every list; only a list left with fewer than `count` is searched
//!   for again;
//! - an added content gets its list by one search over all, and enters each list it sorts into
//!   (within the radius, or before the list's last);
//! - a rescan with nothing added or removed computes nothing.
//!
//! Answers read a list's first `count` and those within the radius, so with exact search they
//! are the same after any sequence of changes as from lists computed afresh, to the bit. Through
//! the HNSW graph (large collections) they are as good as the graph's searches.

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicU32, Ordering as AtomicOrdering};
use std::sync::Mutex;

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::error::Result;
use crate::graph_files::GraphStore;
use crate::search::{graph_serves, Purpose, Search, SearchKind};
use crate::{squared_euclidean, Model};

/// Nearest others a collection's lists hold at least beyond the radius: what the containment
/// check looks at by default, and the most an outlier score reads from them (a larger `k`
/// searches for itself).
pub const KEPT: usize = 10;

/// Another content in a list.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Near {
    /// The first 8 bytes of its SHA-256 ([`crate::contain::hash_key`]).
    pub key: u64,
    /// The model's distance.
    pub distance: f32,
}

/// What lists hold and how they were found.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Scope {
    /// Every other content within this distance is listed.
    pub radius: f32,
    /// At least this many nearest are listed, however far.
    pub count: usize,
    /// Found by exact search (otherwise through the HNSW graph).
    pub exact: bool,
}

impl Scope {
    /// Whether lists of this scope answer questions that need `need`.
    pub fn covers(&self, need: &Scope) -> bool {
        self.radius >= need.radius && self.count >= need.count && self.exact == need.exact
    }

    /// Whether `search` over `contents` vectors under `model` is exact.
    pub fn exact_search(search: SearchKind, contents: usize, model: &Model) -> bool {
        let graph = match search {
            SearchKind::Exact => false,
            SearchKind::Hnsw => true,
            SearchKind::Auto => contents >= Purpose::Grouping.crossover(),
        };
        !graph || !graph_serves(model)
    }
}

/// One distinct content to list: its key and embedding.
#[derive(Debug, Clone, Copy)]
pub struct Content<'a> {
    /// [`crate::contain::hash_key`] of its SHA-256.
    pub key: u64,
    /// Its embedding.
    pub vector: &'a [f32],
}

/// The lists of a collection's contents (see the module documentation).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Neighbours {
    scope: Option<Scope>,
    lists: BTreeMap<u64, Vec<Near>>,
}

impl Neighbours {
    /// Lists of `contents` (sorted by key, each key once) under `model`, computed afresh.
    pub fn compute(contents: &[Content], model: &Model, scope: Scope) -> Result<Neighbours> {
        let mut lists = Neighbours::default();
        lists.sync(contents, model, scope, &mut GraphStore::default())?;
        Ok(lists)
    }

    /// The scope of the lists, if any were made.
    pub fn scope(&self) -> Option<Scope> {
        self.scope
    }

    /// The list of `key`, nearest first (empty for a key not listed).
    pub fn list(&self, key: u64) -> &[Near] {
        self.lists.get(&key).map_or(&[], Vec::as_slice)
    }

    /// Number of lists.
    pub fn len(&self) -> usize {
        self.lists.len()
    }

    /// Whether there are no lists.
    pub fn is_empty(&self) -> bool {
        self.lists.is_empty()
    }

    /// Brings the lists up to date with `contents` (sorted by key, each key once) under
    /// `scope`: lists of another scope are dropped, removed contents leave, added ones are
    /// searched for and entered, through the graphs of `graphs` unless the scope is exact.
    /// Returns how many lists were computed.
    pub(crate) fn sync(
        &mut self,
        contents: &[Content],
        model: &Model,
        scope: Scope,
        graphs: &mut GraphStore,
    ) -> Result<usize> {
        if self.scope != Some(scope) {
            self.lists.clear();
            self.scope = Some(scope);
        }
        let present: HashSet<u64> = contents.iter().map(|c| c.key).collect();
        let removed: HashSet<u64> = self.lists.keys().filter(|k| !present.contains(k)).copied().collect();
        let added: Vec<usize> = (0..contents.len()).filter(|&i| !self.lists.contains_key(&contents[i].key)).collect();
        if removed.is_empty() && added.is_empty() {
            return Ok(0);
        }
        self.lists.retain(|k, _| !removed.contains(k));
        let mut loaders = Vec::new();
        let graph = if scope.exact { None } else { graphs.prepare(&mut loaders, contents, model) };
        let searcher = Searcher::new(contents, model, scope, graph);
        let computed = self.update(&searcher, &added, &removed)?;
        if let Some(graph) = searcher.graph {
            graphs.keep(graph);
        }
        Ok(computed)
    }

    /// [`Neighbours::sync`] once the removed have left: returns how many lists were computed.
    fn update(&mut self, searcher: &Searcher, added: &[usize], removed: &HashSet<u64>) -> Result<usize> {
        let (contents, scope) = (searcher.contents, searcher.scope);
        if added.len() * 2 >= contents.len() {
            // Mostly new: one pass over all pairs costs less than a search per content.
            let lists = searcher.all()?;
            self.lists = contents.iter().map(|c| c.key).zip(lists).collect();
            return Ok(contents.len());
        }
        let enough = scope.count.min(contents.len() - 1);
        let mut targets = added.to_vec();
        for (i, c) in contents.iter().enumerate() {
            if let Some(list) = self.lists.get_mut(&c.key) {
                let before = list.len();
                list.retain(|n| !removed.contains(&n.key));
                if list.len() < before && list.len() < enough {
                    targets.push(i);
                }
            }
        }
        // How near an added content must come to enter each list that is kept: within the
        // radius, or up to the list's last (a list shorter than `count` holds every other
        // content). Lists searched afresh take nothing.
        let mut cover = vec![f32::NEG_INFINITY; contents.len()];
        let is_target: HashSet<usize> = targets.iter().copied().collect();
        for (i, c) in contents.iter().enumerate() {
            if let Some(list) = self.lists.get(&c.key).filter(|_| !is_target.contains(&i)) {
                cover[i] = match list.last() {
                    Some(last) if list.len() >= scope.count => last.distance.max(scope.radius),
                    _ => f32::INFINITY,
                };
            }
        }
        let is_added: HashSet<usize> = added.iter().copied().collect();
        let reach = Reach::new(&cover);
        let found = searcher.search(&targets, |t| is_added.contains(&t).then_some((&cover[..], &reach)))?;
        let mut touched = HashSet::new();
        for f in found {
            self.lists.insert(contents[f.target].key, f.list);
            for (i, near) in f.entering {
                touched.insert(contents[i].key);
                self.lists.entry(contents[i].key).or_default().push(near);
            }
        }
        for key in touched {
            if let Some(list) = self.lists.get_mut(&key) {
                trim(list, scope);
            }
        }
        Ok(targets.len())
    }

    /// Refuses lists no computation makes (a damaged or forged index): distances that are not
    /// finite and non-negative, lists out of order, a list of itself.
    pub(crate) fn validate(&self) -> std::result::Result<(), String> {
        if let Some(s) = self.scope {
            if !(s.radius.is_finite() && s.radius >= 0.0) {
                return Err(format!("neighbour radius {}", s.radius));
            }
        }
        for (key, list) in &self.lists {
            let in_order = list.windows(2).all(|w| before(&w[0], &w[1]));
            let sound = list.iter().all(|n| n.distance.is_finite() && n.distance >= 0.0 && n.key != *key);
            if !(in_order && sound) {
                return Err(format!("neighbour list of {key:016x} is not one a search makes"));
            }
        }
        Ok(())
    }
}

/// Whether `a` comes strictly before `b`: nearer, ties by key.
fn before(a: &Near, b: &Near) -> bool {
    order(a, b) == std::cmp::Ordering::Less
}

fn order(a: &Near, b: &Near) -> std::cmp::Ordering {
    a.distance.total_cmp(&b.distance).then(a.key.cmp(&b.key))
}

/// Sorts a list and keeps its prefix: everything within the radius, and the [`searched`] nearest.
fn trim(list: &mut Vec<Near>, scope: Scope) {
    list.sort_by(order);
    list.dedup_by_key(|n| n.key);
    let within = list.partition_point(|n| n.distance <= scope.radius);
    list.truncate(within.max(searched(scope)));
}

/// How many nearest a search lists: twice what a list must hold, so that removals seldom
/// make it search again.
fn searched(scope: Scope) -> usize {
    scope.count.saturating_mul(2)
}

/// A searched list and the kept lists its content enters (by position, with the entry).
struct Found {
    target: usize,
    list: Vec<Near>,
    entering: Vec<(usize, Near)>,
}

/// Where the lists that an added content may enter are: those whose cover is at most `radius`
/// are found by a search within it; the few wider ones (contents far from all others) are
/// compared one by one.
struct Reach {
    radius: f32,
    wide: Vec<usize>,
}

impl Reach {
    fn new(cover: &[f32]) -> Reach {
        let mut finite: Vec<f32> = cover.iter().copied().filter(|c| c.is_finite()).collect();
        finite.sort_by(f32::total_cmp);
        // The cover of all but the widest hundredth.
        let radius = finite.get(finite.len() * 99 / 100).copied().unwrap_or(0.0).max(0.0);
        let wide = (0..cover.len()).filter(|&i| cover[i] > radius).collect();
        Reach { radius, wide }
    }
}

/// The search that makes lists: every pair compared, or the HNSW graph.
struct Searcher<'a> {
    contents: &'a [Content<'a>],
    model: &'a Model,
    scope: Scope,
    /// The model's views as `(offset, margin)` where its distance is plain Euclidean per view.
    views: Option<Vec<(usize, f32)>>,
    graph: Option<Search<'a>>,
}

impl<'a> Searcher<'a> {
    /// A search of `contents`: through `graph` where given, otherwise exact.
    fn new(contents: &'a [Content<'a>], model: &'a Model, scope: Scope, graph: Option<Search<'a>>) -> Searcher<'a> {
        let len = model.embedding_len();
        let views = model.plain_views().filter(|_| contents.iter().all(|c| c.vector.len() == len));
        Searcher { contents, model, scope, views, graph }
    }

    /// The model's distance, computed the same way for every pair (and either order), so that
    /// lists kept up to date and lists computed afresh agree to the bit.
    fn distance(&self, x: &[f32], y: &[f32]) -> Result<f32> {
        match &self.views {
            Some(views) => Ok(view_distance(x, y, views, self.model.meta().embedding_dim)),
            None => self.model.distance(x, y),
        }
    }

    /// Every content's list.
    fn all(&self) -> Result<Vec<Vec<Near>>> {
        if let (None, Some(views)) = (&self.graph, &self.views) {
            return Ok(self.all_pairs(views));
        }
        let all: Vec<usize> = (0..self.contents.len()).collect();
        Ok(self.search(&all, |_| None)?.into_iter().map(|f| f.list).collect())
    }

    /// The lists of `targets`, each with the kept lists it enters where `enter` gives their
    /// covers. Exact search compares a block of targets with each vector in one pass, so that
    /// the vectors are read from memory once per block rather than once per target.
    fn search<'c>(
        &self,
        targets: &[usize],
        enter: impl Fn(usize) -> Option<(&'c [f32], &'c Reach)> + Sync,
    ) -> Result<Vec<Found>> {
        const BLOCK: usize = 32;
        if let Some(graph) = &self.graph {
            return targets.par_iter().map(|&t| self.one(graph, t, enter(t))).collect();
        }
        let blocks: Vec<Result<Vec<Found>>> = targets
            .par_chunks(BLOCK)
            .map(|block| {
                let mut scans: Vec<Scan> = block.iter().map(|&t| Scan::new(t, self.scope, enter(t))).collect();
                for (i, c) in self.contents.iter().enumerate() {
                    for scan in &mut scans {
                        if i != scan.found.target {
                            let d = self.distance(self.contents[scan.found.target].vector, c.vector)?;
                            scan.offer(self.contents, i, d);
                        }
                    }
                }
                Ok(scans.into_iter().map(|s| s.finish()).collect())
            })
            .collect();
        Ok(blocks.into_iter().collect::<Result<Vec<_>>>()?.into_iter().flatten().collect())
    }

    /// The list of content `t` through the graph, and with `enter` (each kept list's cover),
    /// the kept lists it enters.
    fn one(&self, graph: &Search, t: usize, enter: Option<(&[f32], &Reach)>) -> Result<Found> {
        let (contents, scope) = (self.contents, self.scope);
        let x = contents[t].vector;
        let mut hits = graph.nearest(x, searched(scope) + 1)?;
        hits.extend(graph.within(x, scope.radius)?);
        let mut seen = HashSet::new();
        let mut list: Vec<Near> = hits
            .into_iter()
            .filter(|h| h.index != t && seen.insert(h.index))
            .map(|h| Near { key: contents[h.index].key, distance: h.distance })
            .collect();
        let mut entering = Vec::new();
        if let Some((cover, reach)) = enter {
            let mut candidates: Vec<(usize, f32)> =
                graph.within(x, reach.radius)?.into_iter().map(|h| (h.index, h.distance)).collect();
            for &i in &reach.wide {
                candidates.push((i, self.model.distance(x, contents[i].vector)?));
            }
            candidates.sort_by_key(|c| c.0);
            candidates.dedup_by_key(|c| c.0);
            for (i, d) in candidates {
                if i != t && d <= cover[i] {
                    entering.push((i, Near { key: contents[t].key, distance: d }));
                }
            }
        }
        trim(&mut list, scope);
        Ok(Found { target: t, list, entering })
    }

    /// Every list by exact search over all pairs, each pair compared once: the vectors in one
    /// contiguous matrix, compared in blocks of rows so that each column vector is loaded once
    /// per block rather than once per row.
    fn all_pairs(&self, views: &[(usize, f32)]) -> Vec<Vec<Near>> {
        let (contents, scope) = (self.contents, self.scope);
        let n = contents.len();
        let (dim, len) = (self.model.meta().embedding_dim, self.model.embedding_len());
        let nearest: Vec<Nearest> = (0..n).map(|_| Nearest::new(searched(scope))).collect();
        const ROWS: usize = 32;
        let matrix: Vec<f32> = contents.iter().flat_map(|c| c.vector.iter().copied()).collect();
        let row = |a: usize| &matrix[a * len..][..len];
        let within: Vec<Vec<(usize, usize, f32)>> = (0..n.div_ceil(ROWS))
            .into_par_iter()
            .map(|block| {
                let first = block * ROWS;
                let rows = first..(first + ROWS).min(n);
                let mut hits = Vec::new();
                for b in first + 1..n {
                    let y = row(b);
                    for a in rows.start..rows.end.min(b) {
                        let d = view_distance(row(a), y, views, dim);
                        if d <= scope.radius {
                            hits.push((a, b, d));
                        }
                        nearest[a].offer(d, b);
                        nearest[b].offer(d, a);
                    }
                }
                hits
            })
            .collect();
        let mut lists: Vec<Vec<Near>> = nearest
            .into_iter()
            .map(|n| n.into_list().into_iter().map(|(distance, i)| Near { key: contents[i].key, distance }).collect())
            .collect();
        for (a, b, distance) in within.into_iter().flatten() {
            lists[a].push(Near { key: contents[b].key, distance });
            lists[b].push(Near { key: contents[a].key, distance });
        }
        lists.par_iter_mut().for_each(|l| trim(l, scope));
        lists
    }
}

/// One target's exact search in progress: only what can still be in its list is kept (nearer
/// than the nearest so far at the list's length, or within the radius), trimmed whenever it
/// doubles.
struct Scan<'c> {
    found: Found,
    scope: Scope,
    cover: Option<&'c [f32]>,
    bound: f32,
    limit: usize,
}

impl<'c> Scan<'c> {
    fn new(target: usize, scope: Scope, enter: Option<(&'c [f32], &'c Reach)>) -> Scan<'c> {
        let found = Found { target, list: Vec::new(), entering: Vec::new() };
        Scan { found, scope, cover: enter.map(|e| e.0), bound: f32::INFINITY, limit: 2 * searched(scope) + 64 }
    }

    fn offer(&mut self, contents: &[Content], i: usize, d: f32) {
        if d <= self.bound || d <= self.scope.radius {
            self.found.list.push(Near { key: contents[i].key, distance: d });
            if self.found.list.len() >= self.limit {
                let length = searched(self.scope);
                trim(&mut self.found.list, self.scope);
                self.bound = self.found.list.get(length.wrapping_sub(1)).map_or(f32::INFINITY, |n| n.distance);
                self.limit = 2 * self.found.list.len().max(length) + 64;
            }
        }
        if self.cover.is_some_and(|cover| d <= cover[i]) {
            self.found.entering.push((i, Near { key: contents[self.found.target].key, distance: d }));
        }
    }

    fn finish(mut self) -> Found {
        trim(&mut self.found.list, self.scope);
        self.found
    }
}

/// The least, over the views, of the Euclidean distance between the two embeddings' parts plus
/// the view's margin.
fn view_distance(x: &[f32], y: &[f32], views: &[(usize, f32)], dim: usize) -> f32 {
    let mut best = f32::INFINITY;
    for &(offset, margin) in views {
        best = best.min(squared_euclidean(&x[offset..][..dim], &y[offset..][..dim]).sqrt() + margin);
    }
    best
}

/// The `k` nearest offered so far, by distance then position (positions follow keys), whatever
/// the order of the offers; shared between the threads of an exact search.
struct Nearest {
    k: usize,
    /// The distance of the `k`-th nearest once there are `k` (as `f32` bits), so that most
    /// offers are turned away without taking the lock.
    bound: AtomicU32,
    list: Mutex<Vec<(f32, usize)>>,
}

impl Nearest {
    fn new(k: usize) -> Nearest {
        Nearest { k, bound: AtomicU32::new(f32::INFINITY.to_bits()), list: Mutex::new(Vec::new()) }
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
            if later(&(d, j), &worst) == std::cmp::Ordering::Less {
                list[at] = (d, j);
            }
        }
        if list.len() == self.k {
            let worst = list.iter().map(|x| x.0).fold(f32::NEG_INFINITY, f32::max);
            self.bound.store(worst.to_bits(), AtomicOrdering::Relaxed);
        }
    }

    fn into_list(self) -> Vec<(f32, usize)> {
        self.list.into_inner().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// `items` (key and embedding) as [`Content`]s sorted by key, each key once.
pub fn contents<'a>(items: impl IntoIterator<Item = (u64, &'a [f32])>) -> Vec<Content<'a>> {
    let mut all: Vec<Content> = items.into_iter().map(|(key, vector)| Content { key, vector }).collect();
    all.sort_by_key(|c| c.key);
    all.dedup_by_key(|c| c.key);
    all
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tower::{self, SplitMix64, TowerSpec, TowerWeights};

    /// A model of embeddings of 8 values: a colour view and a grey view of 4 (margin 0.3).
    fn model() -> Model {
        let spec = TowerSpec::photo(4);
        let mut meta = tower::untrained_meta(&spec).unwrap();
        meta.grey_margin = Some(0.3);
        let bytes = tower::write_onnx(&spec, &TowerWeights::seeded(&spec, 1).unwrap(), &meta).unwrap();
        Model::from_bytes(&bytes, "m").unwrap()
    }

    /// Checks that every list is a prefix of all other contents by distance then key, holding
    /// at least those within the radius and the `count` nearest.
    fn assert_by_definition(lists: &Neighbours, contents: &[Content], model: &Model, scope: Scope) {
        let searcher = Searcher::new(contents, model, scope, None);
        assert_eq!(lists.len(), contents.len());
        for a in contents {
            let mut all: Vec<Near> = contents
                .iter()
                .filter(|b| b.key != a.key)
                .map(|b| Near { key: b.key, distance: searcher.distance(a.vector, b.vector).unwrap() })
                .collect();
            all.sort_by(order);
            let list = lists.list(a.key);
            let within = all.iter().filter(|n| n.distance <= scope.radius).count();
            assert!(list.len() >= within.max(scope.count.min(all.len())), "{} of {}", list.len(), all.len());
            assert_eq!(list, &all[..list.len()]);
        }
    }

    #[test]
    fn lists_kept_through_changes_equal_lists_computed_afresh() {
        let model = model();
        assert_eq!(model.embedding_len(), 8);
        let mut rng = SplitMix64::new(9);
        // Keys in no particular order, and every tenth vector a copy of the one before, so that
        // ties of distance are decided by key.
        let mut pool: Vec<(u64, Vec<f32>)> = Vec::new();
        for i in 0..300u64 {
            let v = match pool.last() {
                Some((_, last)) if i % 10 == 0 => last.clone(),
                _ => (0..8).map(|_| rng.next_f32()).collect(),
            };
            pool.push((i * 7919 % 1000, v));
        }
        let scope = Scope { radius: 0.45, count: 6, exact: true };
        let mut live: Vec<usize> = (0..120).collect();
        let mut kept = Neighbours::default();
        for _ in 0..12 {
            let contents = contents(live.iter().map(|&i| (pool[i].0, pool[i].1.as_slice())));
            kept.sync(&contents, &model, scope, &mut GraphStore::default()).unwrap();
            assert_by_definition(&kept, &contents, &model, scope);
            assert_by_definition(&Neighbours::compute(&contents, &model, scope).unwrap(), &contents, &model, scope);
            kept.validate().unwrap();
            // Remove a few, add a few.
            for _ in 0..rng.below(8) {
                live.remove(rng.below(live.len()));
            }
            for _ in 0..rng.below(8) {
                let i = rng.below(pool.len());
                if !live.contains(&i) {
                    live.push(i);
                }
            }
        }
        let lens: Vec<usize> = kept.lists.values().map(Vec::len).collect();
        assert!(lens.iter().any(|&l| l > 12), "some lists reach past the search by the radius: {lens:?}");
        assert!(lens.iter().any(|&l| l < 12), "some lists lost some and were not searched again: {lens:?}");
    }
}
