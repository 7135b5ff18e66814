//! The near-duplicate benchmark: from the benchmark part of a photo folder (photos that neither
//! training nor calibration saw, see `twinscan_lab::augment::part_of`) it builds originals, one copy
//! of each kind per original, hard negatives and distractors, and scores a model, with and
//! without mirror/rotation invariance, and the perceptual-hash baseline (pHash from the
//! `image_hasher` crate, Hamming distance <= 10) on every pair.
//!
//! ```sh
//! scripts/fetch-data.sh photos
//! cargo bench --bench near_dup -- [--data data/photos] [--model models/photo.onnx] [--originals 3] [--seed 1] [--grey-margin M|none]
//! ```
//! One more row scores the model with `twinscan::contain`'s containment check on the pairs it
//! misses (default rule; distinct pairs the check adds are listed on stderr).
//! Prints Markdown tables. Duplicate pairs are an original with one of its copies; distinct
//! pairs are any two images of different groups; two copies of one original are not scored.
//! Mirror and rotation copies count toward the overall figures only where invariance is on
//! (their recall is shown everywhere).

use std::error::Error;
use std::path::PathBuf;
use std::time::Instant;

use image::DynamicImage;
use image_hasher::{HashAlg, HasherConfig};
use rayon::prelude::*;
use twinscan::contain::{ContainmentRule, Thumb};
use twinscan::{Invariance, Model};
use twinscan_lab::augment::{
    best_score, build_suite, load_photos, pair_kind, score, select, PairKind, Part, Score, SuiteImage, Transform,
};

struct Args {
    data: PathBuf,
    model: PathBuf,
    originals: usize,
    seed: u64,
    grey_margin: Option<Option<f32>>,
}

fn parse() -> Result<Args, Box<dyn Error>> {
    let mut a = Args {
        data: "data/photos".into(),
        model: "models/photo.onnx".into(),
        originals: 3,
        seed: 1,
        grey_margin: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--data" => a.data = value()?.into(),
            "--model" => a.model = value()?.into(),
            "--originals" => a.originals = value()?.parse()?,
            "--seed" => a.seed = value()?.parse()?,
            "--grey-margin" => a.grey_margin = Some(value()?.parse().ok()),
            "--bench" => {}
            other => return Err(format!("unknown argument {other}").into()),
        }
    }
    Ok(a)
}

struct Row {
    name: String,
    score: Score,
}

fn embed(model: &Model, images: &[DynamicImage]) -> Result<Vec<Vec<f32>>, twinscan::Error> {
    let chunks: Vec<_> = images.par_chunks(32).map(|c| model.embed_images(c)).collect::<Result<_, _>>()?;
    Ok(chunks.into_iter().flatten().collect())
}

/// The suite scored at `threshold` with pairs beyond it also called duplicates where
/// `twinscan::contain`'s default rule finds one image inside the other.
fn with_containment(suite: &[SuiteImage], distance: &(dyn Fn(usize, usize) -> f32 + Sync), threshold: f32) -> Score {
    let rule = ContainmentRule::default();
    let thumbs: Vec<Thumb> = suite.par_iter().map(|s| Thumb::of_rgb(&s.image)).collect();
    let n = suite.len();
    // rank[i][j]: j's place among i's nearest other images.
    let rank: Vec<Vec<usize>> = (0..n)
        .into_par_iter()
        .map(|i| {
            let mut order: Vec<usize> = (0..n).filter(|&j| j != i).collect();
            order.sort_by(|&a, &b| distance(i, a).total_cmp(&distance(i, b)).then(a.cmp(&b)));
            let mut rank = vec![usize::MAX; n];
            for (r, j) in order.into_iter().enumerate() {
                rank[j] = r;
            }
            rank
        })
        .collect();
    let start = Instant::now();
    let checked_pairs = std::sync::atomic::AtomicUsize::new(0);
    let found: std::collections::HashSet<(usize, usize)> = (0..n)
        .into_par_iter()
        .flat_map_iter(|i| {
            let (rank, thumbs, checked_pairs) = (&rank, &thumbs, &checked_pairs);
            (i + 1..n).filter_map(move |j| {
                let d = distance(i, j);
                let r = rank[i][j].min(rank[j][i]);
                let check = rule.checks(d, threshold, r);
                checked_pairs.fetch_add(usize::from(check), std::sync::atomic::Ordering::Relaxed);
                (check && rule.duplicate(d, threshold, r, &thumbs[i], &thumbs[j])).then_some((i, j))
            })
        })
        .collect();
    eprintln!(
        "containment check: {} pairs checked in {:.2} s (all cores)",
        checked_pairs.into_inner(),
        start.elapsed().as_secs_f64()
    );
    for &(i, j) in &found {
        if pair_kind(&suite[i], &suite[j]) == PairKind::Distinct {
            let (a, b) = (&suite[i], &suite[j]);
            eprintln!(
                "containment check: distinct pair {:?} (group {}, shows {:?}) / {:?} (group {}, shows {:?})",
                a.role, a.group, a.shows, b.role, b.group, b.shows
            );
        }
    }
    let checked = |i: usize, j: usize| {
        let d = distance(i, j);
        if found.contains(&(i.min(j), i.max(j))) {
            d.min(threshold)
        } else {
            d
        }
    };
    score(suite, &checked, threshold, false)
}

fn main() -> Result<(), Box<dyn Error>> {
    // cargo runs a bench in its package's folder; paths given are the repository's, as before
    // the lab had its own crate.
    std::env::set_current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))?;
    let args = parse()?;
    let (photos, errors) = load_photos(&args.data, 1024, 256)?;
    for e in errors {
        eprintln!("skipped {e}");
    }
    let held_out = select(&photos, Part::Benchmark);
    let suite: Vec<SuiteImage> = build_suite(&held_out, args.originals, args.seed);
    let images: Vec<DynamicImage> = suite.iter().map(|s| DynamicImage::ImageRgb8(s.image.clone())).collect();
    let originals = suite.iter().filter(|s| s.role == twinscan_lab::augment::Role::Original).count();
    println!(
        "Near-duplicate suite: {} held-out photos, {originals} originals, {} images, seed {}; model {}\n",
        held_out.len(),
        suite.len(),
        args.seed,
        args.model.display()
    );

    let mut rows = Vec::new();
    let mut timing = Vec::new();
    for inv in [Invariance::None, Invariance::MirrorRotate] {
        let mut model = Model::open(&args.model)?.with_invariance(inv);
        if let Some(margin) = args.grey_margin {
            model = model.with_grey_margin(margin);
        }
        let start = Instant::now();
        let emb = embed(&model, &images)?;
        timing.push((inv, start.elapsed().as_secs_f64() * 1e3 / images.len() as f64));
        let distance = |i: usize, j: usize| model.distance(&emb[i], &emb[j]).unwrap_or(f32::INFINITY);
        let on = inv != Invariance::None;
        let label = if on { "model, invariance on" } else { "model" };
        rows.push(Row {
            name: format!("{label}, default threshold"),
            score: score(&suite, &distance, model.meta().threshold, on),
        });
        rows.push(Row { name: format!("{label}, best threshold"), score: best_score(&suite, &distance, on) });
        if !on {
            let score = with_containment(&suite, &distance, model.meta().threshold);
            rows.push(Row { name: "model + containment check, default threshold".into(), score });
        }
    }
    let hasher = HasherConfig::new().hash_size(8, 8).preproc_dct().hash_alg(HashAlg::Mean).to_hasher();
    let start = Instant::now();
    let hashes: Vec<_> = images.par_iter().map(|img| hasher.hash_image(img)).collect();
    let phash_ms = start.elapsed().as_secs_f64() * 1e3 / images.len() as f64;
    let hamming = |i: usize, j: usize| hashes[i].dist(&hashes[j]) as f32;
    for on in [false, true] {
        let kinds = if on { "all kinds" } else { "without mirror/rotate" };
        rows.push(Row { name: format!("pHash <= 10, {kinds}"), score: score(&suite, &hamming, 10.0, on) });
        rows.push(Row { name: format!("pHash, best threshold, {kinds}"), score: best_score(&suite, &hamming, on) });
    }

    println!("| scorer | threshold | precision | recall | F1 | TP | FP | missed |\n| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
    for r in &rows {
        let c = r.score.overall;
        println!(
            "| {} | {:.4} | {:.4} | {:.4} | {:.4} | {} | {} | {} |",
            r.name,
            r.score.threshold,
            c.precision(),
            c.recall(),
            c.f1(),
            c.tp,
            c.fp,
            c.missed
        );
    }
    println!("\nRecall per kind of copy (original-copy pairs):\n");
    let cols: Vec<&Row> = rows.iter().filter(|r| !r.name.contains("without")).collect();
    println!("| kind | {} |", cols.iter().map(|r| r.name.as_str()).collect::<Vec<_>>().join(" | "));
    println!("| --- |{}", " ---: |".repeat(cols.len()));
    for (k, kind) in Transform::ALL.iter().enumerate() {
        let cells: Vec<String> = cols.iter().map(|r| format!("{:.3}", r.score.per_kind[k].1)).collect();
        println!("| {} | {} |", kind.name(), cells.join(" | "));
    }
    println!("\nEmbedding cost per in-memory image (preprocess + network, all cores):");
    for (inv, ms) in timing {
        println!("- invariance {}: {ms:.2} ms", inv.as_str());
    }
    println!("- pHash: {phash_ms:.2} ms");
    Ok(())
}
