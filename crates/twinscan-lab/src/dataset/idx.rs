//! IDX files, the format of MNIST and Fashion-MNIST, raw or gzipped.

use std::io::Read;
use std::path::{Path, PathBuf};

use super::Dataset;
use crate::error::{Error, Result};
use twinscan::tower::InputShape;

fn bad(path: &Path, reason: impl Into<String>) -> Error {
    Error::Dataset { path: path.into(), reason: reason.into() }
}

/// Reads a whole file, gunzipping it when it starts with the gzip magic.
fn read_maybe_gz(path: &Path) -> Result<Vec<u8>> {
    let raw = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    if raw.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(&raw[..])
            .read_to_end(&mut out)
            .map_err(|e| bad(path, format!("bad gzip data: {e}")))?;
        Ok(out)
    } else {
        Ok(raw)
    }
}

/// Parses the IDX header: magic `0 0 8 ndims` (unsigned bytes), then one big-endian `u32` per
/// dimension. Returns the dimensions and the payload, checked to be exactly their product.
fn parse(path: &Path, bytes: &[u8], ndims: u8) -> Result<(Vec<usize>, usize)> {
    if bytes.len() < 4 || bytes[0] != 0 || bytes[1] != 0 || bytes[2] != 8 || bytes[3] != ndims {
        let magic: Vec<u8> = bytes.iter().take(4).copied().collect();
        return Err(bad(
            path,
            format!(
                "bad IDX magic {magic:02x?}, expected [00, 00, 08, {ndims:02x}] (unsigned bytes, {ndims} dimensions)"
            ),
        ));
    }
    let header = 4 + 4 * usize::from(ndims);
    if bytes.len() < header {
        return Err(bad(path, "truncated IDX header"));
    }
    let dims: Vec<usize> = (0..usize::from(ndims))
        .map(|i| u32::from_be_bytes([bytes[4 + 4 * i], bytes[5 + 4 * i], bytes[6 + 4 * i], bytes[7 + 4 * i]]) as usize)
        .collect();
    let expected =
        dims.iter().try_fold(1usize, |acc, d| acc.checked_mul(*d)).ok_or_else(|| bad(path, "dimensions overflow"))?;
    let got = bytes.len() - header;
    if got != expected {
        return Err(bad(path, format!("{dims:?} needs {expected} data bytes, file has {got} (truncated or padded)")));
    }
    Ok((dims, header))
}

/// Reads an IDX image file (`[n, rows, cols]` unsigned bytes): the images and their size.
pub fn read_idx_images(path: &Path) -> Result<(InputShape, Vec<u8>)> {
    let mut bytes = read_maybe_gz(path)?;
    let (dims, header) = parse(path, &bytes, 3)?;
    if dims[1] == 0 || dims[2] == 0 {
        return Err(bad(path, "images of zero size"));
    }
    bytes.drain(..header);
    Ok((InputShape { channels: 1, height: dims[1], width: dims[2] }, bytes))
}

/// Reads an IDX label file (`[n]` unsigned bytes).
pub fn read_idx_labels(path: &Path) -> Result<Vec<u32>> {
    let bytes = read_maybe_gz(path)?;
    let (_, header) = parse(path, &bytes, 1)?;
    Ok(bytes[header..].iter().map(|b| u32::from(*b)).collect())
}

/// Which half of an IDX data set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Split {
    /// `train-*` files.
    Train,
    /// `t10k-*` files.
    Test,
}

fn find(dir: &Path, stem: &str) -> Result<PathBuf> {
    [stem.to_string(), format!("{stem}.gz")]
        .iter()
        .map(|name| dir.join(name))
        .find(|p| p.is_file())
        .ok_or_else(|| bad(dir, format!("no {stem} or {stem}.gz in this folder")))
}

/// Loads `train-*` or `t10k-*` images and labels from a folder laid out as MNIST is
/// (`{train,t10k}-images-idx3-ubyte[.gz]`, `{train,t10k}-labels-idx1-ubyte[.gz]`).
pub fn load_idx_dir(dir: &Path, split: Split) -> Result<Dataset> {
    let prefix = match split {
        Split::Train => "train",
        Split::Test => "t10k",
    };
    let images = find(dir, &format!("{prefix}-images-idx3-ubyte"))?;
    let labels_path = find(dir, &format!("{prefix}-labels-idx1-ubyte"))?;
    let (shape, pixels) = read_idx_images(&images)?;
    let labels = read_idx_labels(&labels_path)?;
    let n = pixels.len() / (shape.height * shape.width);
    if n != labels.len() {
        return Err(bad(&labels_path, format!("{} labels for {n} images in {}", labels.len(), images.display())));
    }
    Ok(Dataset { shape, pixels, labels, source: dir.display().to_string() })
}
