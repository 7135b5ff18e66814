use std::path::PathBuf;

use anyhow::{Context, Result};

use super::ModelArg;
use crate::exit::Code;
use crate::output::record::{Comparison, Named, Record};
use crate::output::Printer;

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
    let record = Comparison {
        a: Named::of(&args.a),
        b: Named::of(&args.b),
        distance: c.distance,
        probability: c.probability,
        threshold: model.meta().threshold,
        similar: c.similar,
    };
    Printer::json_or_text(args.json).print(&Record::Comparison(record))?;
    Ok(if c.similar { Code::Found } else { Code::Nothing })
}
