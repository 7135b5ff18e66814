use anyhow::Result;
use serde_json::json;

use super::{json_line, ModelArg};
use crate::exit::Code;

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
    let props = model.meta().to_properties();
    if args.json {
        let map: serde_json::Map<_, _> = props.into_iter().map(|(k, v)| (k, json!(v))).collect();
        json_line(
            &json!({"type": "model", "path": model.label(), "fingerprint": model.fingerprint(), "metadata": map}),
        );
    } else {
        println!("model        {}", model.label());
        println!("fingerprint  {}", model.fingerprint());
        for (k, v) in props {
            println!("{k} = {v}");
        }
    }
    Ok(Code::Nothing)
}
