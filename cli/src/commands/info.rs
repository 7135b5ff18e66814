use anyhow::Result;

use super::ModelArg;
use crate::exit::Code;
use crate::output::record::{ModelInfo, Record};
use crate::output::Printer;

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    model: ModelArg,
    /// One JSON object instead of text.
    #[arg(long)]
    json: bool,
}

pub fn run(args: Args) -> Result<Code> {
    let model = args.model.load()?;
    let info = ModelInfo {
        path: model.label().to_string(),
        fingerprint: model.fingerprint().to_string(),
        metadata: model.meta().to_properties().into_iter().collect(),
    };
    Printer::json_or_text(args.json).print(&Record::Model(info))?;
    Ok(Code::Nothing)
}
