pub mod act;
#[cfg(feature = "lab")]
pub mod bench;
#[cfg(feature = "lab")]
mod card;
pub mod compare;
pub mod embed;
#[cfg(feature = "lab")]
pub mod eval;
pub mod gallery;
pub mod info;
pub mod scan;
#[cfg(feature = "lab")]
pub mod train;
#[cfg(feature = "lab")]
pub mod train_photo;

use std::path::PathBuf;

use anyhow::{Context, Result};
use twinscan::{Invariance, Model};

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
            None => Model::bundled(),
        }
        .context("cannot use the model")?;
        Ok(model.with_invariance(if self.mirror_rotate { Invariance::MirrorRotate } else { Invariance::None }))
    }
}

/// Writes one JSON Lines record of a lab command's report (the product's commands print
/// [`crate::output::Record`]s).
#[cfg(feature = "lab")]
pub fn json_line(value: &serde_json::Value) {
    println!("{value}");
}

/// A set of labels given as ranges and single labels: `0-4`, `0,2,7-9`.
#[cfg(feature = "lab")]
#[derive(Clone, Debug)]
pub struct Classes(pub Vec<u32>);

#[cfg(feature = "lab")]
impl Classes {
    pub fn parse(s: &str) -> Result<Classes, String> {
        let bad = || format!("expected labels like 0-4 or 0,2,7-9, got {s:?}");
        let mut labels = Vec::new();
        for part in s.split(',') {
            let (lo, hi) = part.split_once('-').unwrap_or((part, part));
            let (lo, hi): (u32, u32) = (lo.trim().parse().map_err(|_| bad())?, hi.trim().parse().map_err(|_| bad())?);
            if lo > hi || hi - lo > 1_000_000 {
                return Err(bad());
            }
            labels.extend(lo..=hi);
        }
        labels.sort_unstable();
        labels.dedup();
        Ok(Classes(labels))
    }
}

#[cfg(feature = "lab")]
impl std::fmt::Display for Classes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let labels: Vec<String> = self.0.iter().map(u32::to_string).collect();
        f.write_str(&labels.join(","))
    }
}
