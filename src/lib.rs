//! twinscan: find near-duplicate and anomalous images with one tower of a trained twin
//! (Siamese) network.
//!
//! A [`Model`] is one tower in an ONNX file whose `twinscan.*` metadata says how to preprocess
//! images and how to read distances. It turns images into embeddings; two images are similar
//! when their embeddings are close, and the model's head turns a distance into the probability
//! that they are.
//!
//! ```
//! use twinscan::tower::{self, InputShape, TowerSpec, TowerWeights};
//! # fn main() -> twinscan::Result<()> {
//! // A tower with seeded random weights, written and loaded back through ONNX.
//! let spec = TowerSpec::seed(InputShape { channels: 1, height: 28, width: 28 });
//! let bytes = tower::write_onnx(&spec, &TowerWeights::seeded(&spec, 1)?, &tower::untrained_meta(&spec)?)?;
//! let model = twinscan::Model::from_bytes(&bytes, "example")?;
//! let a = model.embed_image(&image::DynamicImage::new_luma8(40, 40))?;
//! let b = model.embed_image(&image::DynamicImage::new_luma8(28, 28))?;
//! let c = model.compare(&a, &b)?;
//! assert!(c.distance < 1e-5 && c.similar);
//! # Ok(()) }
//! ```

#![warn(missing_docs)]

pub mod actions;
pub mod augment;
pub mod contain;
pub mod dataset;
mod decode_budget;
pub mod detect;
mod error;
pub mod evaluate;
pub mod gallery;
pub mod index;
mod invariance;
mod jpeg_markers;
mod model;
mod preprocess;
mod safe_fs;
pub mod scan;
pub mod search;
mod similarity;
pub mod store;
pub mod tower;
#[cfg(feature = "train")]
pub mod train;
pub mod unseen;

pub use error::{Error, Result};
pub use invariance::Invariance;
pub use model::{Comparison, Embedding, Model, DEFAULT_BATCH};
pub use preprocess::{
    decode_bytes, decode_file, decode_file_for_model, decode_for_model, input_pixels, normalize, write_input,
    DecodeLimits, Decoded,
};
pub use similarity::{squared_euclidean, Head, Metric};

pub use image;
