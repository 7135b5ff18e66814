//! Unlabelled photo folders for self-supervised training and for the near-duplicate suite.

use std::path::{Path, PathBuf};

use image::{imageops, RgbImage};
use rayon::prelude::*;

use crate::error::{Error, Result};
use twinscan::{decode_file, flatten_rgb, DecodeLimits};

/// One source photo, shrunk so that its shorter side is at most the loader's `short_side`.
#[derive(Debug, Clone)]
pub struct Photo {
    /// The file it came from.
    pub path: PathBuf,
    /// Photos with the same key are variants of one picture (`Elephants.jpg` and
    /// `Elephants_3840.jpg`, `wood-d.webp` and `wood-l.webp`) and land in the same part.
    pub key: String,
    /// The pixels.
    pub image: RgbImage,
}

/// The part of a file name that variants of one picture share: the lowercase stem up to its
/// first `-`, `_`, `.` or digit.
pub fn variant_key(path: &Path) -> String {
    let stem = path.file_stem().map(|s| s.to_string_lossy().to_lowercase()).unwrap_or_default();
    let key: String = stem.chars().take_while(|c| !matches!(c, '-' | '_' | '.') && !c.is_ascii_digit()).collect();
    if key.is_empty() {
        stem
    } else {
        key
    }
}

/// Loads every decodable image under `root` (recursively, sorted by path), shrunk to at most
/// `short_side` pixels on its shorter side. Images smaller than `min_side` on either side are
/// left out; files that fail to decode are returned beside the photos.
pub fn load_photos(root: &Path, short_side: u32, min_side: u32) -> Result<(Vec<Photo>, Vec<Error>)> {
    let mut files = Vec::new();
    collect_files(root, &mut files)?;
    files.sort();
    let limits = DecodeLimits::default();
    let loaded: Vec<Result<Option<Photo>>> = files
        .par_iter()
        .map(|path| {
            let img = flatten_rgb(&decode_file(path, &limits)?);
            let (w, h) = img.dimensions();
            if w.min(h) < min_side {
                return Ok(None);
            }
            let s = short_side as f32 / w.min(h) as f32;
            let image = if s < 1.0 {
                let (nw, nh) = (((w as f32 * s).round() as u32).max(1), ((h as f32 * s).round() as u32).max(1));
                imageops::resize(&img, nw, nh, imageops::FilterType::Triangle)
            } else {
                img
            };
            Ok(Some(Photo { key: variant_key(path), path: path.clone(), image }))
        })
        .collect();
    let (mut photos, mut errors) = (Vec::new(), Vec::new());
    for item in loaded {
        match item {
            Ok(Some(p)) => photos.push(p),
            Ok(None) => {}
            Err(e) => errors.push(e),
        }
    }
    Ok((photos, errors))
}

fn collect_files(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    for entry in std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))? {
        let path = entry.map_err(|e| Error::io(dir, e))?.path();
        if path.is_dir() {
            collect_files(&path, out)?;
        } else if path.is_file() {
            out.push(path);
        }
    }
    Ok(())
}

/// SHA-256 of the photos' names and pixels as loaded, in order: what a model card records of
/// its training data.
pub fn photos_sha256(photos: &[&Photo]) -> String {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    for p in photos {
        h.update(p.path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default().as_bytes());
        h.update(p.image.width().to_le_bytes());
        h.update(p.image.height().to_le_bytes());
        h.update(p.image.as_raw());
    }
    format!("{:x}", h.finalize())
}

/// Which part of a photo collection a photo belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    /// Used to train.
    Train,
    /// Used to pick the epoch and calibrate the threshold.
    Calibrate,
    /// Kept for the benchmark; never seen by training or calibration.
    Benchmark,
}

/// The part a photo falls in: a hash of its [`Photo::key`] (FNV-1a), so the split depends on
/// names only, never on which other files are present. 60% train, 15% calibrate, 25% benchmark.
pub fn part_of(key: &str) -> Part {
    let h = key.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3));
    match h % 20 {
        0..=11 => Part::Train,
        12..=14 => Part::Calibrate,
        _ => Part::Benchmark,
    }
}

/// The photos of one part, one per [`Photo::key`] (the first in path order): variants of one
/// picture (the same scene in other colours, or at another size) would otherwise count as
/// distinct photos, both as in-batch negatives and in the suite.
pub fn select(photos: &[Photo], part: Part) -> Vec<&Photo> {
    let mut seen = std::collections::HashSet::new();
    photos.iter().filter(|p| part_of(&p.key) == part && seen.insert(p.key.as_str())).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn variants_share_a_key() {
        assert_eq!(variant_key(Path::new("a/Elephants_3840x2160.jpg")), "elephants");
        assert_eq!(variant_key(Path::new("Elephants.jpg")), "elephants");
        assert_eq!(variant_key(Path::new("wood-d.webp")), variant_key(Path::new("wood-l.webp")));
        assert_eq!(variant_key(Path::new("2004default.jpg")), "2004default");
    }
}
