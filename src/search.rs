//! Nearest-neighbour search over embeddings: exact (every vector compared) or through HNSW
//! graphs ([`hnsw_rs`]) for large collections.
//!
//! The graphs serve models whose distance is the least, over their views, of the Euclidean
//! distance between the views' parts plus the view's margin (one view, or a colour and a grey
//! view): one graph per view (an L2 distance, which, unlike hnsw_rs's `DistDot`, is safe on
//! exact duplicates), candidates from every view, the model's own distance deciding. A cosine
//! model or an index built with orientation invariance is searched exactly. A search set up
//! here builds its graphs in memory; a collection keeps its graphs beside its index
//! ([`crate::graph_files`]) and searches through them with ids that are content keys.

use std::collections::{HashMap, HashSet};
use std::hash::BuildHasherDefault;

use hnsw_rs::prelude::{Distance, FilterT, Hnsw, Neighbour};
use rayon::prelude::*;

use crate::error::Result;
use crate::tower::SplitMix64;
use crate::{squared_euclidean, Model};

/// Which search to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SearchKind {
    /// Exact below the crossover of the [`Purpose`], the HNSW graph from there on (where the
    /// model allows it).
    #[default]
    Auto,
    /// Compare every vector.
    Exact,
    /// The HNSW graph where the model allows it, otherwise exact.
    Hnsw,
}

/// What a search is for: [`SearchKind::Auto`] switches to the graph where that use becomes
/// faster through it, measured with `cargo bench --bench search` (see `docs/benchmarks.md`).
/// hnsw_rs builds about 2,500 points a second on two cores, so the graph pays only for large
/// collections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// Every vector's nearest others (the neighbour lists that groups and outlier scores are
    /// read from).
    Grouping,
    /// A few outside queries: one exact pass costs less than building the graph.
    Query,
}

impl Purpose {
    /// Collections of this many vectors or more use the graph under [`SearchKind::Auto`].
    pub const fn crossover(self) -> usize {
        match self {
            Purpose::Grouping => GROUPING_CROSSOVER,
            Purpose::Query => usize::MAX,
        }
    }
}

const GROUPING_CROSSOVER: usize = 300_000;

/// Links per node in the graph (hnsw_rs's `max_nb_connection`).
const LINKS: usize = 16;
/// Candidate list while building (`ef_construction`).
const EF_BUILD: usize = 64;
/// Smallest candidate list while searching (`ef`); raised to `k` when more are asked.
const EF_SEARCH: usize = 48;
/// hnsw_rs's maximum number of layers.
const LAYERS: usize = 16;
/// Seed of the insertion order.
const ORDER_SEED: u64 = 0x004E_5357;

/// A set of vectors prepared for nearest-neighbour queries under one model's distance.
pub struct Search<'a> {
    vectors: Vec<&'a [f32]>,
    model: &'a Model,
    /// One graph per view of the model; empty for exact search.
    graphs: Vec<Graph<'a>>,
    /// The position of each graph id, where ids are not positions (a kept graph names contents
    /// by key, and may hold removed ones, which no search returns).
    positions: Option<HashMap<usize, usize, BuildHasherDefault<KeyHasher>>>,
}

/// The HNSW graph of one view and the points it cannot be trusted to find.
pub(crate) struct Graph<'b> {
    /// Where the view is in an embedding, and what the model adds to its distance.
    pub offset: usize,
    pub dim: usize,
    pub margin: f32,
    pub hnsw: Hnsw<'b, f32, L2>,
    /// Ids of points whose own search does not find them (HNSW can leave a few points without
    /// incoming links, most often inside tight clusters of copies): every query scores them
    /// exactly, so no answer depends on the graph reaching them.
    pub unreachable: Vec<usize>,
}

impl std::fmt::Debug for Search<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Search").field("vectors", &self.vectors.len()).field("graphs", &self.graphs.len()).finish()
    }
}

/// A vector found by a search.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Hit {
    /// Position in the searched vectors.
    pub index: usize,
    /// The model's distance to the query.
    pub distance: f32,
}

impl<'a> Search<'a> {
    /// Prepares `vectors` (embeddings of `model`) for search of the given kind and purpose.
    pub fn new(vectors: Vec<&'a [f32]>, model: &'a Model, kind: SearchKind, purpose: Purpose) -> Search<'a> {
        let wanted = match kind {
            SearchKind::Auto => vectors.len() >= purpose.crossover(),
            SearchKind::Exact => false,
            SearchKind::Hnsw => true,
        };
        // Cheapest test first: exact search never scans the vectors here.
        let views = model.plain_views().filter(|_| {
            wanted
                && !vectors.is_empty()
                && vectors.iter().all(|v| v.len() == model.embedding_len() && v.iter().all(|x| x.is_finite()))
        });
        let dim = model.meta().embedding_dim;
        let items: Vec<(&[f32], usize)> = vectors.iter().enumerate().map(|(i, v)| (*v, i)).collect();
        let graphs = views
            .unwrap_or_default()
            .into_iter()
            .map(|(offset, margin)| {
                let mut graph = Graph::new(offset, dim, margin, vectors.len());
                graph.insert(&items);
                graph
            })
            .collect();
        Search { vectors, model, graphs, positions: None }
    }

    /// `vectors`, named `ids`, searched through `graphs` (whose points are named by those ids;
    /// points of other ids are never returned).
    pub(crate) fn over(vectors: Vec<&'a [f32]>, ids: &[usize], model: &'a Model, graphs: Vec<Graph<'a>>) -> Search<'a> {
        let positions = Some(ids.iter().enumerate().map(|(i, id)| (*id, i)).collect());
        Search { vectors, model, graphs, positions }
    }

    /// The graphs searched through, for keeping.
    pub(crate) fn into_graphs(self) -> Vec<Graph<'a>> {
        self.graphs
    }

    /// The position of the point the graphs name `id`, unless it is not among the vectors.
    fn position(&self, id: usize) -> Option<usize> {
        match &self.positions {
            Some(positions) => positions.get(&id).copied(),
            None => (id < self.vectors.len()).then_some(id),
        }
    }

    /// The positions of a graph's points that every query scores exactly.
    fn unreachable<'s>(&'s self, g: &'s Graph) -> impl Iterator<Item = usize> + use<'s, 'a> {
        g.unreachable.iter().filter_map(|&id| self.position(id))
    }

    /// Whether queries go through the HNSW graph.
    pub fn is_hnsw(&self) -> bool {
        !self.graphs.is_empty()
    }

    /// How many vectors a view's graph could not reach from their own position (searched
    /// exactly by every query), over the views; 0 for exact search.
    pub fn unreachable_count(&self) -> usize {
        self.graphs.iter().map(|g| self.unreachable(g).count()).sum()
    }

    /// Number of vectors searched.
    pub fn len(&self) -> usize {
        self.vectors.len()
    }

    /// Whether there is nothing to search.
    pub fn is_empty(&self) -> bool {
        self.vectors.is_empty()
    }

    /// The `k` nearest vectors to `query`, nearest first (ties by position). A query that is
    /// itself one of the vectors finds itself at distance 0.
    pub fn nearest(&self, query: &[f32], k: usize) -> Result<Vec<Hit>> {
        let k = k.min(self.vectors.len());
        if k == 0 {
            return Ok(Vec::new());
        }
        let mut hits = match self.graphs.is_empty() {
            // The k nearest under the least of the views' distances are each among the k
            // nearest of some view.
            false => {
                let mut hits = Vec::new();
                for g in &self.graphs {
                    hits.extend(self.rescored(query, self.found(self.graph_search(g, query, k)))?);
                    hits.extend(self.rescored(query, self.unreachable(g))?);
                }
                sort_hits(&mut hits);
                hits
            }
            true => {
                let mut all = self.rescored(query, 0..self.vectors.len())?;
                if all.len() > k {
                    all.select_nth_unstable_by(k - 1, nearer);
                    all.truncate(k);
                }
                all
            }
        };
        sort_hits(&mut hits);
        hits.truncate(k);
        Ok(hits)
    }

    /// Every vector within `radius` of `query`, nearest first. Through the graph, each view's
    /// search widens (doubling `k`) until its farthest hit lies beyond the radius less the
    /// view's margin, so a large cluster of copies is found whole.
    pub fn within(&self, query: &[f32], radius: f32) -> Result<Vec<Hit>> {
        let mut hits = Vec::new();
        for g in self.graphs.iter().filter(|g| g.margin <= radius) {
            let reach = radius - g.margin;
            let mut k = 16;
            let found = loop {
                let found = self.graph_search(g, query, k);
                // hnsw_rs may return fewer than `k` hits, so only a hit beyond the reach (or
                // having asked for everything) ends the widening.
                if found.iter().any(|n| n.distance > reach) || k >= g.hnsw.get_nb_point() {
                    break found;
                }
                k *= 2;
            };
            hits.extend(self.rescored(query, self.found(found))?);
            hits.extend(self.rescored(query, self.unreachable(g))?);
        }
        if self.graphs.is_empty() {
            hits = self.rescored(query, 0..self.vectors.len())?;
        }
        hits.retain(|h| h.distance <= radius);
        sort_hits(&mut hits);
        Ok(hits)
    }

    /// A graph's candidates for the `k` nearest to `query`: of the points among the vectors
    /// only, where the graph holds others (removed since it was kept).
    fn graph_search(&self, g: &Graph, query: &[f32], k: usize) -> Vec<Neighbour> {
        match &self.positions {
            Some(positions) if positions.len() < g.hnsw.get_nb_point() => {
                let live = |id: &usize| positions.contains_key(id);
                g.search(query, k, Some(&live))
            }
            _ => g.search(query, k, None),
        }
    }

    /// The positions of a graph's hits that are among the vectors.
    fn found<'s>(&'s self, hits: Vec<Neighbour>) -> impl Iterator<Item = usize> + use<'s, 'a> {
        hits.into_iter().filter_map(|n| self.position(n.d_id))
    }

    /// The model's own distance to each candidate (the graph's is only used to find them).
    fn rescored(&self, query: &[f32], candidates: impl Iterator<Item = usize>) -> Result<Vec<Hit>> {
        candidates
            .filter_map(|i| self.vectors.get(i).map(|v| (i, *v)))
            .map(|(index, v)| Ok(Hit { index, distance: self.model.distance(query, v)? }))
            .collect()
    }
}

/// Whether the graph serves `model`: its distance is Euclidean per view (no cosine, no
/// orientations).
pub(crate) fn graph_serves(model: &Model) -> bool {
    model.plain_views().is_some()
}

/// The hasher of graph ids that are content keys: those are already uniform hashes, and a graph
/// search asks whether each point it visits is live, so SipHash over them would cost more than
/// the search's own work.
#[derive(Default)]
pub(crate) struct KeyHasher(u64);

impl std::hash::Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }

    fn write_usize(&mut self, n: usize) {
        self.0 = n as u64;
    }
}

/// hnsw_rs's `DistL2`, summed in lanes (its own f32 sum is sequential).
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct L2;

impl Distance<f32> for L2 {
    fn eval(&self, a: &[f32], b: &[f32]) -> f32 {
        squared_euclidean(a, b).sqrt()
    }
}

/// The parameters a graph is built with (links per node, candidate list while building), which
/// a kept graph must share to be used.
pub(crate) fn graph_params() -> (u32, u32) {
    (LINKS as u32, EF_BUILD as u32)
}

impl<'b> Graph<'b> {
    /// An empty graph of the view at `offset` (`dim` values, `margin` added to its distance),
    /// sized for about `capacity` points.
    pub fn new(offset: usize, dim: usize, margin: f32, capacity: usize) -> Graph<'b> {
        let hnsw = Hnsw::new(LINKS, capacity.max(1), LAYERS, EF_BUILD, L2);
        Graph { offset, dim, margin, hnsw, unreachable: Vec::new() }
    }

    /// Inserts `items` (whole embeddings, each with its id) in a seeded random order (an order
    /// that follows the data, such as files sorted by name, builds a worse graph), then notes
    /// those of them it cannot reach.
    pub fn insert(&mut self, items: &[(&[f32], usize)]) {
        if items.is_empty() {
            return;
        }
        let (offset, dim, before) = (self.offset, self.dim, self.hnsw.get_nb_point());
        let mut order: Vec<(&[f32], usize)> =
            items.iter().filter_map(|&(v, id)| Some((v.get(offset..offset + dim)?, id))).collect();
        let mut rng = SplitMix64::new(ORDER_SEED);
        for i in (1..order.len()).rev() {
            order.swap(i, rng.below(i + 1));
        }
        self.hnsw.parallel_insert_slice(&order);
        let hnsw = &self.hnsw;
        let lost: Vec<usize> = order
            .par_iter()
            .filter(|(v, id)| !hnsw.search(v, 8, EF_SEARCH).iter().any(|n| n.d_id == *id))
            .map(|(_, id)| *id)
            .collect();
        self.unreachable.extend(lost);
        if before > 0 {
            // Linking a new point can drop an old one from a neighbour's full list: one left with
            // no incoming link in the lowest layer is scored exactly from now on.
            let known: HashSet<usize> = self.unreachable.iter().copied().collect();
            let orphans: Vec<usize> = self.orphans().into_iter().filter(|id| !known.contains(id)).collect();
            self.unreachable.extend(orphans);
        }
    }

    /// The ids of points that no other point links to in the lowest layer.
    fn orphans(&self) -> Vec<usize> {
        let points: Vec<_> = self.hnsw.get_point_indexation().into_iter().collect();
        let linked: HashSet<usize> = points
            .par_iter()
            .map(|p| p.get_neighborhood_id().first().map_or_else(Vec::new, |l| l.iter().map(|n| n.d_id).collect()))
            .flatten_iter()
            .collect();
        points.iter().map(|p| p.get_origin_id()).filter(|id| !linked.contains(id)).collect()
    }

    /// The graph's candidates for the `k` nearest to `query` (a whole embedding) in its view,
    /// with their distance in the view.
    fn search(&self, query: &[f32], k: usize, filter: Option<&dyn FilterT>) -> Vec<Neighbour> {
        query
            .get(self.offset..self.offset + self.dim)
            .map_or_else(Vec::new, |q| self.hnsw.search_possible_filter(q, k, EF_SEARCH.max(k), filter))
    }
}

/// Nearest first, ties by position, each vector once (an unreachable vector can also come
/// from the graph).
fn sort_hits(hits: &mut Vec<Hit>) {
    hits.sort_by(nearer);
    hits.dedup_by_key(|h| h.index);
}

/// Nearer first, ties by position.
fn nearer(a: &Hit, b: &Hit) -> std::cmp::Ordering {
    a.distance.total_cmp(&b.distance).then(a.index.cmp(&b.index))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tower::{self, TowerSpec, TowerWeights};

    fn model(dim: usize) -> Model {
        with_grey(dim, None)
    }

    /// A model of `dim` values per view, with a grey view at `margin`.
    fn with_grey(dim: usize, margin: Option<f32>) -> Model {
        let spec = TowerSpec::photo(dim);
        let (weights, mut meta) = (TowerWeights::seeded(&spec, 1).unwrap(), tower::untrained_meta(&spec).unwrap());
        meta.grey_margin = margin;
        Model::from_bytes(&tower::write_onnx(&spec, &weights, &meta).unwrap(), "m").unwrap()
    }

    fn vectors(n: usize, dim: usize, seed: u64) -> Vec<Vec<f32>> {
        let mut rng = SplitMix64::new(seed);
        (0..n).map(|_| (0..dim).map(|_| rng.next_f32() - 0.5).collect()).collect()
    }

    #[test]
    fn the_graph_agrees_with_exact_search() {
        let (model, data) = (model(8), vectors(3000, 8, 1));
        let slices: Vec<&[f32]> = data.iter().map(Vec::as_slice).collect();
        let exact = Search::new(slices.clone(), &model, SearchKind::Exact, Purpose::Query);
        let graph = Search::new(slices, &model, SearchKind::Hnsw, Purpose::Query);
        assert!(graph.is_hnsw() && !exact.is_hnsw());
        let (mut found, mut asked) = (0, 0);
        for q in vectors(200, 8, 2) {
            let truth = exact.nearest(&q, 10).unwrap();
            let got = graph.nearest(&q, 10).unwrap();
            assert!(got.windows(2).all(|w| w[0].distance <= w[1].distance), "nearest first");
            found += got.iter().filter(|h| truth.contains(h)).count();
            asked += truth.len();
            let radius = truth[4].distance;
            let inside = graph.within(&q, radius).unwrap();
            assert!(inside.iter().all(|h| h.distance <= radius));
        }
        assert!(found as f64 >= 0.95 * asked as f64, "recall@10 {found}/{asked}");
        // An indexed vector finds itself first.
        assert_eq!(graph.nearest(&data[17], 1).unwrap()[0], Hit { index: 17, distance: 0.0 });
    }

    #[test]
    fn with_a_grey_view_the_graphs_of_both_views_find_what_exact_search_finds() {
        let model = with_grey(8, Some(0.2));
        // Half the vectors near the query in colour only, half in grey only.
        let mut data = vectors(2000, 16, 3);
        let query: Vec<f32> = vectors(1, 16, 4).remove(0);
        for (i, v) in data.iter_mut().enumerate().take(40) {
            let view = if i % 2 == 0 { 0..8 } else { 8..16 };
            for j in view {
                v[j] = query[j] + (i as f32) * 0.001;
            }
        }
        let slices: Vec<&[f32]> = data.iter().map(Vec::as_slice).collect();
        let exact = Search::new(slices.clone(), &model, SearchKind::Exact, Purpose::Query);
        let graph = Search::new(slices, &model, SearchKind::Hnsw, Purpose::Query);
        assert!(graph.is_hnsw());
        assert_eq!(graph.nearest(&query, 30).unwrap(), exact.nearest(&query, 30).unwrap());
        let within = exact.within(&query, 0.3).unwrap();
        assert!(within.len() >= 30, "{}", within.len());
        assert_eq!(graph.within(&query, 0.3).unwrap(), within);
    }

    #[test]
    fn edge_cases_answer_without_the_graph() {
        let model = model(2);
        let empty = Search::new(Vec::new(), &model, SearchKind::Hnsw, Purpose::Query);
        assert!(empty.is_empty() && empty.nearest(&[0.0, 0.0], 3).unwrap().is_empty());
        let data = [[0.0, 0.0], [f32::NAN, 1.0], [3.0, 4.0]];
        let search = Search::new(data.iter().map(|v| v.as_slice()).collect(), &model, SearchKind::Hnsw, Purpose::Query);
        assert!(!search.is_hnsw(), "a non-finite vector keeps the graph out");
        assert_eq!(search.nearest(&[0.0, 0.0], 10).unwrap().len(), 3, "k beyond the collection");
        assert_eq!(
            search.within(&[0.0, 0.0], 5.0).unwrap(),
            vec![Hit { index: 0, distance: 0.0 }, Hit { index: 2, distance: 5.0 }]
        );
        let wrong = search.nearest(&[0.0], 1);
        assert!(wrong.is_err(), "a query of another length is an error");
    }
}
