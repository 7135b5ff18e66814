#[cfg(feature = "train")]
mod card;
pub mod compare;
pub mod embed;
pub mod eval;
pub mod info;
#[cfg(feature = "train")]
pub mod train;

use std::path::PathBuf;

use anyhow::{Context, Result};
use twinscan::Model;

/// `--model` shared by every command that runs a tower.
#[derive(clap::Args)]
pub struct ModelArg {
    /// ONNX tower with twinscan metadata.
    #[arg(long, short = 'm', value_name = "MODEL")]
    pub model: PathBuf,
}

impl ModelArg {
    pub fn load(&self) -> Result<Model> {
        Model::open(&self.model).with_context(|| "cannot use the model".to_string())
    }
}

/// Writes one JSON Lines record to stdout.
pub fn json_line(value: &serde_json::Value) {
    println!("{value}");
}
