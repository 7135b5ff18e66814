//! Neighbour search: exact against the HNSW graph, on embedding-like vectors.
//!
//! ```sh
//! cargo bench --bench search -- [--sizes 1000,3000,10000,30000,100000] [--queries 500] [--seed 1]
//!     [--index PATH]
//! ```
//! Vectors: the bundled model's two views of 128 values each, L2-normalised: the colour view
//! drawn around a 16-dimensional latent space through a fixed random map (photo embeddings are
//! far from uniform on the sphere), the grey view near it; one in ten with one to three near
//! copies (distance 0.1 to 0.4 in each view). With `--index`, the embeddings of an index made by
//! the bundled model instead (real embeddings; the last `--queries` of them are the queries).
//! Distances and threshold are the bundled photo model's. Per size it reports: duplicate grouping by exact search and through the graph
//! (graph build included) and whether both found the same pairs; outlier scores (k = 5) each way;
//! the graph's build time and the
//! vectors it could not reach; recall@10 of the graph against exact search and the time of one
//! query each way. Seeded; prints a Markdown table.

use std::error::Error;
use std::time::Instant;

use twinscan::detect::{duplicate_groups, outliers, GroupOptions, OutlierOptions};
use twinscan::index::Entry;
use twinscan::search::{Purpose, Search, SearchKind};
use twinscan::thumbs::Thumbs;
use twinscan::tower::SplitMix64;
use twinscan::Model;

const DIM: usize = 128;
const LATENT: usize = 16;

struct Args {
    sizes: Vec<usize>,
    queries: usize,
    seed: u64,
    index: Option<std::path::PathBuf>,
}

fn parse() -> Result<Args, Box<dyn Error>> {
    let mut a = Args { sizes: vec![1000, 3000, 10_000, 30_000, 100_000], queries: 500, seed: 1, index: None };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--sizes" => a.sizes = value()?.split(',').map(str::parse).collect::<Result<_, _>>()?,
            "--queries" => a.queries = value()?.parse()?,
            "--seed" => a.seed = value()?.parse()?,
            "--index" => a.index = Some(value()?.into()),
            "--bench" => {}
            other => return Err(format!("unknown argument {other}").into()),
        }
    }
    Ok(a)
}

fn gaussian(rng: &mut SplitMix64) -> f32 {
    // Box-Muller.
    let u = rng.next_f32().max(1e-7);
    let v = rng.next_f32();
    (-2.0 * u.ln()).sqrt() * (std::f32::consts::TAU * v).cos()
}

fn normalised(mut v: Vec<f32>) -> Vec<f32> {
    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-12);
    v.iter_mut().for_each(|x| *x /= n);
    v
}

struct Generator {
    map: Vec<f32>,
    rng: SplitMix64,
}

impl Generator {
    fn new(seed: u64) -> Generator {
        let mut rng = SplitMix64::new(seed);
        let map = (0..DIM * LATENT).map(|_| gaussian(&mut rng)).collect();
        Generator { map, rng }
    }

    /// A colour view and a grey view near it.
    fn vector(&mut self) -> Vec<f32> {
        let z: Vec<f32> = (0..LATENT).map(|_| gaussian(&mut self.rng)).collect();
        let v: Vec<f32> = (0..DIM)
            .map(|r| self.map[r * LATENT..][..LATENT].iter().zip(&z).map(|(m, x)| m * x).sum::<f32>() * 0.25)
            .map(|x| x + 0.3 * gaussian(&mut self.rng))
            .collect();
        let colour = normalised(v);
        let grey = self.view_near(&colour, 0.3);
        [colour, grey].concat()
    }

    /// A copy of one view `v` at a distance of about `d`.
    fn view_near(&mut self, v: &[f32], d: f32) -> Vec<f32> {
        let noise: Vec<f32> = normalised((0..DIM).map(|_| gaussian(&mut self.rng)).collect());
        normalised(v.iter().zip(&noise).map(|(a, b)| a + d * b).collect())
    }

    /// A copy of `v` at a distance of about `d` in each view.
    fn near(&mut self, v: &[f32], d: f32) -> Vec<f32> {
        let (colour, grey) = v.split_at(DIM);
        [self.view_near(colour, d), self.view_near(grey, d)].concat()
    }

    fn collection(&mut self, n: usize) -> Vec<Vec<f32>> {
        let mut out = Vec::with_capacity(n);
        while out.len() < n {
            let v = self.vector();
            if self.rng.below(10) == 0 {
                for _ in 0..1 + self.rng.below(3) {
                    let d = 0.1 + 0.3 * self.rng.next_f32();
                    out.push(self.near(&v, d));
                }
            }
            out.push(v);
        }
        out.truncate(n);
        out
    }
}

fn entries(vectors: &[Vec<f32>]) -> Vec<Entry> {
    vectors
        .iter()
        .enumerate()
        .map(|(i, v)| {
            let mut sha256 = [0; 32];
            sha256[..8].copy_from_slice(&(i as u64).to_le_bytes());
            Entry {
                path: format!("{i:06}.jpg").into(),
                size: 1,
                modified_ns: 0,
                sha256,
                dims: (64, 64),
                embedding: v.clone(),
            }
        })
        .collect()
}

/// Kept image and member of every duplicate pair (by path), sorted.
type Pairs = Vec<(std::path::PathBuf, std::path::PathBuf)>;

fn pairs(entries: &[Entry], model: &Model, kind: SearchKind) -> Result<(Pairs, f64), Box<dyn Error>> {
    let start = Instant::now();
    // By distance alone: no containment check, so no thumbnails.
    let options = GroupOptions { containment: None, search: kind, ..GroupOptions::default() };
    let groups = duplicate_groups(entries, &Thumbs::new(), model, &options)?;
    let seconds = start.elapsed().as_secs_f64();
    let mut out: Pairs =
        groups.iter().flat_map(|g| g.copies().iter().map(|m| (g.keep().path.clone(), m.entry.path.clone()))).collect();
    out.sort();
    Ok((out, seconds))
}

fn main() -> Result<(), Box<dyn Error>> {
    let args = parse()?;
    let model = Model::bundled()?;
    println!(
        "{} cores; threshold {:.4}; {} queries per size, seed {}\n",
        rayon::current_num_threads(),
        model.meta().threshold,
        args.queries,
        args.seed
    );
    println!(
        "| vectors | group, exact | group, HNSW | same pairs | outliers, exact | outliers, HNSW | build | unreachable | recall@10 | query, exact | query, HNSW |"
    );
    println!("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
    let real = match &args.index {
        Some(path) => {
            Some(twinscan::index::Index::load(path)?.entries.into_iter().map(|e| e.embedding).collect::<Vec<_>>())
        }
        None => None,
    };
    for &n in &args.sizes {
        let (vectors, queries) = match &real {
            Some(all) => {
                let (collection, queries) = all.split_at(all.len().saturating_sub(args.queries));
                (collection[..n.min(collection.len())].to_vec(), queries.to_vec())
            }
            None => {
                let mut generator = Generator::new(args.seed);
                let vectors = generator.collection(n);
                (vectors, (0..args.queries).map(|_| generator.vector()).collect())
            }
        };
        let n = vectors.len();
        let entries = entries(&vectors);
        let (exact_pairs, exact_s) = pairs(&entries, &model, SearchKind::Exact)?;
        let (graph_pairs, graph_s) = pairs(&entries, &model, SearchKind::Hnsw)?;
        let found = graph_pairs.iter().filter(|p| exact_pairs.binary_search(p).is_ok()).count();
        let timed = |kind| -> Result<f64, twinscan::Error> {
            let start = Instant::now();
            outliers(&entries, &model, &OutlierOptions { search: kind, ..OutlierOptions::default() })?;
            Ok(start.elapsed().as_secs_f64())
        };
        let (outliers_exact, outliers_graph) = (timed(SearchKind::Exact)?, timed(SearchKind::Hnsw)?);

        let slices: Vec<&[f32]> = vectors.iter().map(Vec::as_slice).collect();
        let exact = Search::new(slices.clone(), &model, SearchKind::Exact, Purpose::Query);
        let start = Instant::now();
        let graph = Search::new(slices, &model, SearchKind::Hnsw, Purpose::Query);
        let build_s = start.elapsed().as_secs_f64();
        let (mut exact_s_q, mut graph_s_q, mut hits) = (0.0, 0.0, 0);
        for q in &queries {
            let t = Instant::now();
            let truth = exact.nearest(q, 10)?;
            exact_s_q += t.elapsed().as_secs_f64();
            let t = Instant::now();
            let got = graph.nearest(q, 10)?;
            graph_s_q += t.elapsed().as_secs_f64();
            hits += got.iter().filter(|h| truth.iter().any(|t| t.index == h.index)).count();
        }
        let per = |s: f64| s * 1e3 / queries.len().max(1) as f64;
        println!(
            "| {n} | {exact_s:.2} s | {graph_s:.2} s | {found} of {} | {outliers_exact:.2} s | {outliers_graph:.2} s | {build_s:.2} s | {} | {:.4} | {:.3} ms | {:.3} ms |",
            exact_pairs.len(),
            graph.unreachable_count(),
            hits as f64 / (10 * queries.len()).max(1) as f64,
            per(exact_s_q),
            per(graph_s_q)
        );
    }
    Ok(())
}
