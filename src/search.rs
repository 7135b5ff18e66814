//! Nearest-neighbour search over embeddings: exact (every vector compared) or through an HNSW
//! graph ([`hnsw_rs`]) for large collections.
//!
//! The graph is built in memory from the vectors each time a search is set up, never stored:
//! the index file stays the single source of truth, so removed images need no tombstones and a
//! damaged graph file can never reach hnsw_rs's loader (which exits the process on one). The
//! graph serves models whose distance is the least, over their views, of the Euclidean distance
//! between the views' parts plus the view's margin (one view, or a colour and a grey view): one
//! graph per view (an L2 distance, which, unlike hnsw_rs's `DistDot`, is safe on exact
//! duplicates), candidates from every view, the model's own distance deciding. A cosine model or
//! an index built with orientation invariance is searched exactly.

use hnsw_rs::prelude::{Distance, Hnsw};
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
    graphs: Vec<Graph>,
}

/// The HNSW graph of one view and the vectors it cannot be trusted to find.
struct Graph {
    /// Where the view is in an embedding, and what the model adds to its distance.
    offset: usize,
    dim: usize,
    margin: f32,
    hnsw: Hnsw<'static, f32, L2>,
    /// Vectors whose own search does not find them (HNSW can leave a few points without
    /// incoming links, most often inside tight clusters of copies): every query scores them
    /// exactly, so no answer depends on the graph reaching them.
    unreachable: Vec<usize>,
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
        let graphs = views
            .unwrap_or_default()
            .into_iter()
            .map(|(offset, margin)| build(&vectors, offset, dim, margin))
            .collect();
        Search { vectors, model, graphs }
    }

    /// Whether queries go through the HNSW graph.
    pub fn is_hnsw(&self) -> bool {
        !self.graphs.is_empty()
    }

    /// How many vectors a view's graph could not reach from their own position (searched
    /// exactly by every query), over the views; 0 for exact search.
    pub fn unreachable(&self) -> usize {
        self.graphs.iter().map(|g| g.unreachable.len()).sum()
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
                    hits.extend(self.rescored(query, g.search(query, k).into_iter().map(|n| n.d_id))?);
                    hits.extend(self.rescored(query, g.unreachable.iter().copied())?);
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
                let found = g.search(query, k);
                // hnsw_rs may return fewer than `k` hits, so only a hit beyond the reach (or
                // having asked for everything) ends the widening.
                if found.iter().any(|n| n.distance > reach) || k >= self.vectors.len() {
                    break found;
                }
                k *= 2;
            };
            hits.extend(self.rescored(query, found.into_iter().map(|n| n.d_id))?);
            hits.extend(self.rescored(query, g.unreachable.iter().copied())?);
        }
        if self.graphs.is_empty() {
            hits = self.rescored(query, 0..self.vectors.len())?;
        }
        hits.retain(|h| h.distance <= radius);
        sort_hits(&mut hits);
        Ok(hits)
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

/// hnsw_rs's `DistL2`, summed in lanes (its own f32 sum is sequential).
#[derive(Debug, Default, Clone, Copy)]
struct L2;

impl Distance<f32> for L2 {
    fn eval(&self, a: &[f32], b: &[f32]) -> f32 {
        squared_euclidean(a, b).sqrt()
    }
}

/// The graph of the view at `offset` (`dim` values, `margin` added to its distance): the
/// vectors inserted in a seeded random order (an order that follows the data, such as files
/// sorted by name, builds a worse graph), then the vectors it cannot reach found.
fn build(vectors: &[&[f32]], offset: usize, dim: usize, margin: f32) -> Graph {
    let view = |i: usize| &vectors[i][offset..][..dim];
    let mut order: Vec<usize> = (0..vectors.len()).collect();
    let mut rng = SplitMix64::new(ORDER_SEED);
    for i in (1..order.len()).rev() {
        order.swap(i, rng.below(i + 1));
    }
    let mut hnsw = Hnsw::new(LINKS, vectors.len(), LAYERS, EF_BUILD, L2);
    let items: Vec<(&[f32], usize)> = order.iter().map(|&i| (view(i), i)).collect();
    hnsw.parallel_insert_slice(&items);
    // hnsw_rs's switch from parallel insertion to searching.
    hnsw.set_searching_mode(true);
    let unreachable = (0..vectors.len())
        .into_par_iter()
        .filter(|&i| !hnsw.search(view(i), 8, EF_SEARCH).iter().any(|n| n.d_id == i))
        .collect();
    Graph { offset, dim, margin, hnsw, unreachable }
}

impl Graph {
    /// The graph's candidates for the `k` nearest to `query` (a whole embedding) in its view,
    /// with their distance in the view.
    fn search(&self, query: &[f32], k: usize) -> Vec<hnsw_rs::prelude::Neighbour> {
        query
            .get(self.offset..self.offset + self.dim)
            .map_or_else(Vec::new, |q| self.hnsw.search(q, k, EF_SEARCH.max(k)))
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
