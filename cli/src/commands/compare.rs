use std::path::PathBuf;

use anyhow::{Context, Result};
use serde_json::json;

use super::{json_line, path_text, ModelArg};
use crate::exit::Code;

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    model: ModelArg,
    /// One JSON object instead of text.
    #[arg(long)]
    json: bool,
    /// First image.
    a: PathBuf,
    /// Second image.
    b: PathBuf,
}

pub fn run(args: Args) -> Result<Code> {
    let model = args.model.load()?;
    let a = model.embed_file(&args.a).context("first image")?;
    let b = model.embed_file(&args.b).context("second image")?;
    let c = model.compare(&a, &b)?;
    let threshold = model.meta().threshold;
    if args.json {
        json_line(&json!({
            "type": "comparison", "a": path_text(&args.a), "b": path_text(&args.b), "distance": c.distance,
            "probability": c.probability, "threshold": threshold, "similar": c.similar,
        }));
    } else {
        let verdict = if c.similar { "similar" } else { "different" };
        println!("distance     {:.4}  (threshold {threshold:.4})", c.distance);
        println!("probability  {:.4}", c.probability);
        println!("verdict      {verdict}");
    }
    Ok(if c.similar { Code::Found } else { Code::Nothing })
}
