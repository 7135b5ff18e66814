use std::path::PathBuf;

use anyhow::Result;
use serde_json::json;
use twinscan_lab::dataset::{load_idx_dir, make_pairs, Split};
use twinscan_lab::evaluate::evaluate_pairs;

use super::{json_line, ModelArg};
use crate::exit::Code;

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    model: ModelArg,
    /// IDX folder (MNIST layout: train-* and t10k-* files, raw or gzipped).
    #[arg(long)]
    data: PathBuf,
    /// Seed of the pairs; pick one the model never saw during selection.
    #[arg(long, default_value_t = 1)]
    pair_seed: u64,
    /// Pairs drawn from the training images.
    #[arg(long, default_value_t = 100_000)]
    pairs: usize,
    /// Pairs drawn from the test images.
    #[arg(long, default_value_t = 50_000)]
    test_pairs: usize,
    /// One JSON object instead of text.
    #[arg(long)]
    json: bool,
}

/// The study's evaluation: accuracy at the model's threshold on training and test pairs, plus
/// ROC AUC. Pairs are drawn as `train` draws them, so `--pair-seed` equal to the training seed
/// reproduces the model card's numbers.
pub fn run(args: Args) -> Result<Code> {
    let model = args.model.load()?;
    let train = load_idx_dir(&args.data, Split::Train)?;
    let test = load_idx_dir(&args.data, Split::Test)?;
    let tr = evaluate_pairs(&model, &train, &make_pairs(&train.labels, args.pairs, args.pair_seed))?;
    let te = evaluate_pairs(&model, &test, &make_pairs(&test.labels, args.test_pairs, args.pair_seed.wrapping_add(1)))?;
    if args.json {
        json_line(&json!({
            "type": "evaluation", "model": model.label(), "data": args.data, "pair_seed": args.pair_seed,
            "threshold": model.meta().threshold,
            "train": {"pairs": tr.pairs, "accuracy": tr.accuracy, "auc": tr.auc},
            "test": {"pairs": te.pairs, "accuracy": te.accuracy, "auc": te.auc},
        }));
    } else {
        println!("model      {}", model.label());
        println!("threshold  {:.5}", model.meta().threshold);
        println!("train      {} pairs  accuracy {:.4}  AUC {:.4}", tr.pairs, tr.accuracy, tr.auc);
        println!("test       {} pairs  accuracy {:.4}  AUC {:.4}", te.pairs, te.accuracy, te.auc);
    }
    Ok(Code::Nothing)
}
