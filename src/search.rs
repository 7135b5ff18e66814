//! Nearest-neighbour search over embeddings: exact (every vector compared) or through an HNSW
//! graph ([`hnsw_rs`]) for large collections.
//!
//! The graph is built in memory from the vectors each time a search is set up, never stored:
//! the index file stays the single source of truth, so removed images need no tombstones and a
//! damaged graph file can never reach hnsw_rs's loader (which exits the process on one). The
//! graph is used only where the model's distance is the plain Euclidean distance between whole
//! embeddings (an L2 distance, which, unlike hnsw_rs's `DistDot`, is safe on exact duplicates);
//! a cosine model, an index built with orientation invariance or a model with a grey view is
//! searched exactly.

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
    graph: Option<Graph>,
}

/// The HNSW graph and the vectors it cannot be trusted to find.
struct Graph {
    hnsw: Hnsw<'static, f32, L2>,
    /// Vectors whose own search does not find them (HNSW can leave a few points without
    /// incoming links, most often inside tight clusters of copies): every query scores them
    /// exactly, so no answer depends on the graph reaching them.
    unreachable: Vec<usize>,
}

impl std::fmt::Debug for Search<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Search").field("vectors", &self.vectors.len()).field("hnsw", &self.graph.is_some()).finish()
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
        let graph_allowed = wanted
            && !vectors.is_empty()
            && plain_euclidean(model)
            && vectors.iter().all(|v| v.len() == model.embedding_len() && v.iter().all(|x| x.is_finite()));
        let graph = graph_allowed.then(|| build(&vectors));
        Search { vectors, model, graph }
    }

    /// Whether queries go through the HNSW graph.
    pub fn is_hnsw(&self) -> bool {
        self.graph.is_some()
    }

    /// How many vectors the graph could not reach from their own position (searched exactly
    /// by every query); 0 for exact search.
    pub fn unreachable(&self) -> usize {
        self.graph.as_ref().map_or(0, |g| g.unreachable.len())
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
        let mut hits = match &self.graph {
            Some(g) => {
                let mut hits = self.rescored(query, g.search(query, k))?;
                hits.extend(self.rescored(query, g.unreachable.iter().copied())?);
                hits
            }
            None => {
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

    /// Every vector within `radius` of `query`, nearest first. Through the graph, the search
    /// widens (doubling `k`) until its farthest hit lies beyond `radius`, so a large cluster of
    /// copies is found whole.
    pub fn within(&self, query: &[f32], radius: f32) -> Result<Vec<Hit>> {
        let mut hits = match &self.graph {
            Some(g) => {
                let mut k = 16;
                let mut hits = loop {
                    let found = self.rescored(query, g.search(query, k))?;
                    // hnsw_rs may return fewer than `k` hits, so only a hit beyond the radius
                    // (or having asked for everything) ends the widening.
                    if found.iter().any(|h| h.distance > radius) || k >= self.vectors.len() {
                        break found;
                    }
                    k *= 2;
                };
                hits.extend(self.rescored(query, g.unreachable.iter().copied())?);
                hits
            }
            None => self.rescored(query, 0..self.vectors.len())?,
        };
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

/// Whether `model`'s distance is the plain Euclidean distance between whole embeddings (one
/// view: no cosine, no orientations, no grey view), the case the graph serves.
pub(crate) fn plain_euclidean(model: &Model) -> bool {
    model.plain_views().is_some_and(|views| views.len() == 1)
}

/// hnsw_rs's `DistL2`, summed in lanes (its own f32 sum is sequential).
#[derive(Debug, Default, Clone, Copy)]
struct L2;

impl Distance<f32> for L2 {
    fn eval(&self, a: &[f32], b: &[f32]) -> f32 {
        squared_euclidean(a, b).sqrt()
    }
}

/// Inserts the vectors in a seeded random order (an order that follows the data, such as files
/// sorted by name, builds a worse graph), then finds the vectors the graph cannot reach.
fn build(vectors: &[&[f32]]) -> Graph {
    let mut order: Vec<usize> = (0..vectors.len()).collect();
    let mut rng = SplitMix64::new(ORDER_SEED);
    for i in (1..order.len()).rev() {
        order.swap(i, rng.below(i + 1));
    }
    let mut hnsw = Hnsw::new(LINKS, vectors.len(), LAYERS, EF_BUILD, L2);
    let items: Vec<(&[f32], usize)> = order.iter().map(|&i| (vectors[i], i)).collect();
    hnsw.parallel_insert_slice(&items);
    // hnsw_rs's switch from parallel insertion to searching.
    hnsw.set_searching_mode(true);
    let unreachable = (0..vectors.len())
        .into_par_iter()
        .filter(|&i| !hnsw.search(vectors[i], 8, EF_SEARCH).iter().any(|n| n.d_id == i))
        .collect();
    Graph { hnsw, unreachable }
}

impl Graph {
    /// The graph's candidates for the `k` nearest.
    fn search(&self, query: &[f32], k: usize) -> impl Iterator<Item = usize> {
        self.hnsw.search(query, k, EF_SEARCH.max(k)).into_iter().map(|n| n.d_id)
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
        let spec = TowerSpec::photo(dim);
        let (weights, meta) = (TowerWeights::seeded(&spec, 1).unwrap(), tower::untrained_meta(&spec).unwrap());
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
