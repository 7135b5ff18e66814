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
/// Unix) is written with U+FFFD in place of the bytes it cannot show; [`put_path`] adds the
/// exact bytes beside it.
pub fn path_text(path: &std::path::Path) -> String {
    path.to_string_lossy().into_owned()
}

/// Sets `record[key]` to the path's text and, only when the name is not UTF-8, `record[key +
/// "_bytes"]` to its exact bytes: two names that differ only in bytes U+FFFD stands for stay
/// apart, and a script can open the file.
pub fn put_path(record: &mut serde_json::Value, key: &str, path: &std::path::Path) {
    record[key] = path_text(path).into();
    if path.to_str().is_none() {
        record[format!("{key}_bytes")] = path.as_os_str().as_encoded_bytes().to_vec().into();
    }
}

/// A path for text and CSV output: see [`shown_text`]; bytes that are not UTF-8 appear as
/// `\xNN`, so such a name never prints like its U+FFFD twin.
pub fn shown(path: &std::path::Path) -> String {
    let mut out = String::new();
    for chunk in path.as_os_str().as_encoded_bytes().utf8_chunks() {
        out.push_str(&shown_text(chunk.valid()));
        for b in chunk.invalid() {
            out.push_str(&format!("\\x{b:02x}"));
        }
    }
    out
}

/// Text for a terminal or a line-based reader: control characters (a newline, a terminal
/// escape sequence) and backslashes are escaped (`\n`, `\u{1b}`, `\\`), so that a file name can
/// neither forge output lines nor drive the terminal.
pub fn shown_text(text: &str) -> std::borrow::Cow<'_, str> {
    if !text.contains(|c: char| c.is_control() || c == '\\') {
        return text.into();
    }
    text.chars()
        .map(|c| if c.is_control() || c == '\\' { c.escape_default().to_string() } else { c.to_string() })
        .collect::<String>()
        .into()
}

/// Writes one JSON Lines record to stdout.
pub fn json_line(value: &serde_json::Value) {
    println!("{value}");
}

/// Reports a file that failed: an `error` record with `--json`, else a line on stderr.
pub fn report_error(json: bool, path: &std::path::Path, e: &twinscan::Error) {
    if json {
        let mut record = serde_json::json!({"type": "error", "kind": e.kind(), "error": e.to_string()});
        put_path(&mut record, "path", path);
        json_line(&record);
    } else {
        eprintln!("twinscan: {}", shown_text(&e.to_string()));
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
