//! Labelled image sets for training and evaluation: IDX files (MNIST, Fashion-MNIST, raw or
//! gzipped) and folder-per-class trees, and the study's balanced pairs.

mod folder;
mod idx;
mod jitter;
mod pairs;

pub use folder::load_folder;
pub use idx::{load_idx_dir, read_idx_images, read_idx_labels, Split};
pub use jitter::jitter;
pub use pairs::{make_pairs, Pair};

use twinscan::tower::{InputShape, ModelMeta};

/// Images of one size with a label each; pixels are `u8`, channel-major per image.
#[derive(Debug, Clone, PartialEq)]
pub struct Dataset {
    /// Size of every image.
    pub shape: InputShape,
    /// `len() * C * H * W` bytes.
    pub pixels: Vec<u8>,
    /// One label per image.
    pub labels: Vec<u32>,
    /// Where it came from, for model cards.
    pub source: String,
}

impl Dataset {
    /// Number of images.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// True when there is no image.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// Values per image.
    pub fn image_len(&self) -> usize {
        self.shape.channels * self.shape.height * self.shape.width
    }

    /// The raw pixels of image `i`.
    pub fn image(&self, i: usize) -> &[u8] {
        let n = self.image_len();
        &self.pixels[i * n..(i + 1) * n]
    }

    /// Images `indices` as a model input batch `[len, C, H, W]`, normalised as the metadata says
    /// (the arithmetic of [`twinscan::write_input`]).
    pub fn batch(&self, indices: &[usize], meta: &ModelMeta) -> Vec<f32> {
        let n = self.image_len();
        let mut out = vec![0.0; indices.len() * n];
        for (&i, dst) in indices.iter().zip(out.chunks_mut(n)) {
            twinscan::normalize(self.image(i), meta, dst);
        }
        out
    }

    /// SHA-256 (hex) of the pixels and labels, so a model card names exactly the data it used.
    pub fn sha256(&self) -> String {
        use sha2::{Digest, Sha256};
        let mut h = Sha256::new();
        h.update(&self.pixels);
        for l in &self.labels {
            h.update(l.to_le_bytes());
        }
        h.finalize().iter().map(|b| format!("{b:02x}")).collect()
    }

    /// The images whose label satisfies `keep`, in order.
    pub fn filter_labels(&self, keep: impl Fn(u32) -> bool) -> Dataset {
        let idx: Vec<usize> = (0..self.len()).filter(|i| keep(self.labels[*i])).collect();
        Dataset {
            shape: self.shape,
            pixels: idx.iter().flat_map(|i| self.image(*i).iter().copied()).collect(),
            labels: idx.iter().map(|i| self.labels[*i]).collect(),
            source: self.source.clone(),
        }
    }
}
