use std::path::PathBuf;

use anyhow::Result;

use super::ModelArg;
use crate::exit::Code;
use crate::output::record::{EmbeddingRecord, Failure, Named, Record};
use crate::output::Printer;

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    model: ModelArg,
    /// JSON Lines: `{"path", "embedding"}` or `{"path", "error", "kind"}` per file.
    #[arg(long)]
    json: bool,
    /// Images to embed.
    #[arg(required = true, value_name = "FILE")]
    files: Vec<PathBuf>,
}

pub fn run(args: Args) -> Result<Code> {
    let model = args.model.load()?;
    let results = model.embed_paths(&args.files);
    let mut printer = Printer::json_or_text(args.json);
    let mut failed = 0;
    for (path, result) in args.files.iter().zip(results) {
        let record = match result {
            Ok(embedding) => Record::Embedding(EmbeddingRecord { path: Named::of(path), embedding }),
            Err(e) => {
                failed += 1;
                Record::Error(Failure::of(path, &e))
            }
        };
        printer.print(&record)?;
    }
    Ok(if failed > 0 { Code::Error } else { Code::Nothing })
}
