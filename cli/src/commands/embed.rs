use std::path::PathBuf;

use anyhow::Result;
use serde_json::json;

use super::{json_line, put_path, report_error, shown, ModelArg};
use crate::exit::Code;

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
    let mut failed = 0;
    for (path, result) in args.files.iter().zip(results) {
        match (result, args.json) {
            (Ok(e), true) => {
                let mut record = json!({"type": "embedding", "embedding": e});
                put_path(&mut record, "path", path);
                json_line(&record);
            }
            (Ok(e), false) => {
                let values: Vec<String> = e.iter().map(|v| format!("{v:.6}")).collect();
                println!("{}\t{}", shown(path), values.join(" "));
            }
            (Err(e), json) => {
                failed += 1;
                report_error(json, path, &e);
            }
        }
    }
    Ok(if failed > 0 { Code::Error } else { Code::Nothing })
}
