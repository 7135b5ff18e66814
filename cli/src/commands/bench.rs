//! `bench match`: the unseen-class protocol (verification, identification, anomaly detection)
//! on IDX data.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result};
use serde_json::json;
use twinscan_lab::dataset::{load_idx_dir, Split};
use twinscan_lab::unseen::{run, OpenSet, Protocol, Report};

use super::{json_line, Classes, ModelArg};
use crate::exit::Code;

#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: Bench,
}

#[derive(clap::Subcommand)]
enum Bench {
    /// Verification, identification and anomaly detection on classes the tower never saw.
    Match(MatchArgs),
}

#[derive(clap::Args)]
struct MatchArgs {
    #[command(flatten)]
    model: ModelArg,
    /// IDX folder (MNIST layout): training images are gallery and anomaly reference, test
    /// images are probes, pairs and anomaly test images.
    #[arg(long)]
    data: PathBuf,
    /// The classes the tower did not see in training.
    #[arg(long, value_parser = Classes::parse, default_value = "5-9")]
    classes: Classes,
    /// Balanced verification pairs.
    #[arg(long, default_value_t = 50_000)]
    pairs: usize,
    /// Random galleries per size (results are their mean).
    #[arg(long, default_value_t = 5)]
    trials: usize,
    /// Neighbours whose mean distance is the anomaly score.
    #[arg(long, default_value_t = 5)]
    k: usize,
    /// Seed of pair and gallery draws.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// False-accept rate on the seen classes' test pairs that sets the strict threshold.
    #[arg(long, default_value_t = 0.01)]
    far: f64,
    /// JSON Lines (`verification`, `identification`, `anomaly`, `summary`) instead of tables.
    #[arg(long)]
    json: bool,
}

pub fn run_bench(args: Args) -> Result<Code> {
    match args.command {
        Bench::Match(args) => run_match(args),
    }
}

fn run_match(args: MatchArgs) -> Result<Code> {
    let started = Instant::now();
    let model = args.model.load()?;
    let train = load_idx_dir(&args.data, Split::Train).context("training images")?;
    let test = load_idx_dir(&args.data, Split::Test).context("test images")?;
    let protocol = Protocol {
        classes: args.classes.0.clone(),
        pairs: args.pairs,
        trials: args.trials,
        k: args.k,
        seed: args.seed,
        far: args.far,
        ..Protocol::default()
    };
    let report = run(&model, &train, &test, &protocol)?;
    let seconds = started.elapsed().as_secs_f64();
    if args.json {
        print_json(&report, model.label(), seconds);
    } else {
        print_text(&report, &args, model.label(), model.meta().threshold, seconds);
    }
    Ok(Code::Nothing)
}

fn print_json(report: &Report, model: &str, seconds: f64) {
    let v = &report.verification;
    let strict = v.strict.map(|s| json!({"threshold": s.threshold, "tar": s.tar, "far": s.far}));
    json_line(&json!({
        "type": "verification", "pairs": v.pairs, "auc": v.auc, "eer": v.eer,
        "tar_at_far_1": v.tar_at_far_1, "tar_at_far_0.1": v.tar_at_far_01, "accuracy": v.accuracy,
        "strict": strict,
    }));
    let open = |o: &OpenSet| json!({"threshold": o.threshold, "unknown_rejected": o.unknown_rejected, "known_accepted": o.known_accepted});
    for r in &report.identification {
        json_line(&json!({
            "type": "identification", "enrolled": r.enrolled, "top1": r.top1,
            "open": open(&r.open), "strict": r.strict.as_ref().map(open),
        }));
    }
    for a in &report.anomaly {
        json_line(&json!({
            "type": "anomaly", "class": a.class, "model_auroc": a.model_auroc, "pixel_auroc": a.pixel_auroc,
        }));
    }
    let (model_mean, pixel_mean) = report.mean_auroc();
    json_line(&json!({
        "type": "summary", "model": model, "mean_model_auroc": model_mean, "mean_pixel_auroc": pixel_mean,
        "seconds": seconds,
    }));
}

fn print_text(report: &Report, args: &MatchArgs, model: &str, model_threshold: f32, seconds: f64) {
    let v = &report.verification;
    println!("model {model}, unseen classes {}, data {}", args.classes, args.data.display());
    println!();
    println!("verification ({} balanced pairs)", v.pairs);
    println!(
        "  ROC AUC {:.4}  EER {:.4}  TAR@FAR 1% {:.4}  TAR@FAR 0.1% {:.4}",
        v.auc, v.eer, v.tar_at_far_1, v.tar_at_far_01
    );
    println!("  accuracy at the model's threshold ({:.4}) {:.4}", model_threshold, v.accuracy);
    if let Some(s) = v.strict {
        let far = args.far;
        println!(
            "  at {:.4}, the seen classes' threshold for FAR {far}: TAR {:.4}, FAR {:.4}",
            s.threshold, s.tar, s.far
        );
    }
    println!();
    println!("identification ({} random galleries per size; open set: each class left out in turn)", args.trials);
    println!(
        "  {:>8}  {:>6}  {:>9}  {:>16}  {:>14}",
        "enrolled", "top-1", "threshold", "unknown rejected", "known accepted"
    );
    let row = |n: &str, top1: &str, o: &OpenSet| {
        println!("  {n:>8}  {top1:>6}  {:>9.4}  {:>16.4}  {:>14.4}", o.threshold, o.unknown_rejected, o.known_accepted);
    };
    for r in &report.identification {
        row(&r.enrolled.to_string(), &format!("{:.4}", r.top1), &r.open);
        if let Some(strict) = &r.strict {
            row("", "", strict);
        }
    }
    println!();
    println!("anomaly detection (mean distance to the {} nearest training images of the class)", args.k);
    println!("  {:>5}  {:>11}  {:>12}", "class", "model AUROC", "pixels AUROC");
    for a in &report.anomaly {
        println!("  {:>5}  {:>11.4}  {:>12.4}", a.class, a.model_auroc, a.pixel_auroc);
    }
    let (model_mean, pixel_mean) = report.mean_auroc();
    println!("  {:>5}  {:>11.4}  {:>12.4}", "mean", model_mean, pixel_mean);
    println!();
    println!("{seconds:.1} s");
}
