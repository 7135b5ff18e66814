#[cfg(feature = "train")]
mod card;
pub mod compare;
pub mod embed;
pub mod eval;
pub mod info;
pub mod scan;
#[cfg(feature = "train")]
pub mod train;
#[cfg(feature = "train")]
pub mod train_photo;

use std::path::PathBuf;

use anyhow::{Context, Result};
use twinscan::{Invariance, Model};

/// The default model, built into the binary: the photo tower.
const DEFAULT_MODEL: &[u8] = include_bytes!("../../../models/photo.onnx");

/// `--model` shared by every command that runs a tower.
#[derive(clap::Args)]
pub struct ModelArg {
    /// ONNX tower with twinscan metadata [default: the built-in photo tower, models/photo.onnx].
    #[arg(long, short = 'm', value_name = "MODEL")]
    pub model: Option<PathBuf>,
    /// Also match mirrored and rotated copies: each image is embedded in its eight
    /// orientations and the embeddings averaged (eight network runs per image, one decode).
    #[arg(long)]
    pub mirror_rotate: bool,
}

impl ModelArg {
    pub fn load(&self) -> Result<Model> {
        let model = match &self.model {
            Some(path) => Model::open(path),
            None => Model::from_bytes(DEFAULT_MODEL, "built-in photo.onnx"),
        }
        .context("cannot use the model")?;
        Ok(model.with_invariance(if self.mirror_rotate { Invariance::MirrorRotate } else { Invariance::None }))
    }
}

/// Writes one JSON Lines record to stdout.
pub fn json_line(value: &serde_json::Value) {
    println!("{value}");
}
