pub mod act;
pub mod bench;
#[cfg(feature = "train")]
mod card;
pub mod compare;
pub mod embed;
pub mod eval;
pub mod gallery;
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

/// A path for a JSON record: JSON strings are Unicode, so a name that is not UTF-8 (legal on
/// Unix) is written with U+FFFD in place of the bytes it cannot show, as text output shows it.
pub fn path_text(path: &std::path::Path) -> String {
    path.to_string_lossy().into_owned()
}

/// Writes one JSON Lines record to stdout.
pub fn json_line(value: &serde_json::Value) {
    println!("{value}");
}

/// Reports a file that failed: an `error` record with `--json`, else a line on stderr.
pub fn report_error(json: bool, path: &std::path::Path, e: &twinscan::Error) {
    if json {
        json_line(
            &serde_json::json!({"type": "error", "path": path_text(path), "kind": e.kind(), "error": e.to_string()}),
        );
    } else {
        eprintln!("twinscan: {e}");
    }
}

/// A set of labels given as ranges and single labels: `0-4`, `0,2,7-9`.
#[derive(Clone, Debug)]
pub struct Classes(pub Vec<u32>);

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

impl std::fmt::Display for Classes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let labels: Vec<String> = self.0.iter().map(u32::to_string).collect();
        f.write_str(&labels.join(","))
    }
}
