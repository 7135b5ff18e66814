//! twinscan: find near-duplicate and anomalous images with one tower of a trained twin
//! (Siamese) network.
//!
//! # High level
//!
//! A [`Collection`] is the images of some folders, embedded by a [`Model`] and kept in an index
//! that a refresh brings up to date; ask it for duplicate groups, outliers, or the neighbours of
//! new images. With the bundled photo tower, on the repository's example photos:
//!
//! ```
//! use twinscan::{Collection, GroupOptions, IndexLocation, Model, OpenOptions, OutlierOptions, OutlierRule, RefreshOptions};
//!
//! // The bundled photo tower; an index kept in memory (IndexLocation::Cache persists it, so that a
//! // rescan embeds only new and changed files).
//! let options = OpenOptions { index: IndexLocation::Memory, ..OpenOptions::default() };
//! let mut photos = Collection::open(Model::bundled()?, ["examples/photos"], &options)?;
//! let report = photos.refresh(&RefreshOptions::default())?;
//! assert_eq!(report.embedded, 11);
//! for group in photos.groups(&GroupOptions::default())? {
//!     println!("keep {}", group.keep().path.display());
//!     for copy in group.copies() {
//!         println!("  {} (distance {:.3})", copy.entry.path.display(), copy.distance);
//!     }
//! }
//! let odd = photos.outliers(&OutlierOptions { rule: OutlierRule::Top(1), ..OutlierOptions::default() })?;
//! println!("does not belong: {}", odd[0].entry.path.display());
//! # Ok::<(), twinscan::Error>(())
//! ```
//!
//! # Lower level
//!
//! A [`Model`] is one tower in an ONNX file whose `twinscan.*` metadata says how to preprocess
//! images and how to read distances ([`tower`] describes the contract). It turns images into
//! embeddings; two images are similar when their embeddings are close, and the model's head
//! turns a distance into the probability that they are:
//!
//! ```
//! # fn main() -> twinscan::Result<()> {
//! let model = twinscan::Model::bundled()?;
//! let a = model.embed_file("examples/photos/coffee.jpg")?;
//! let b = model.embed_file("examples/photos/coffee-copy.jpg")?;
//! let c = model.compare(&a, &b)?;
//! assert!(c.similar, "distance {}, probability {}", c.distance, c.probability);
//! # Ok(()) }
//! ```
//!
//! [`gallery`] enrolls labelled identities and verifies or identifies probes, face-recognition
//! style; [`actions`] plans, applies and undoes what to do with duplicates (quarantine or hard
//! links, journalled). Every failure is an [`Error`] that names the file or model at fault.
//! The trainer, data sets and study protocols live in the `twinscan-lab` crate.

#![warn(missing_docs)]

pub mod actions;
mod collection;
pub mod contain;
mod decode_budget;
pub mod detect;
mod error;
pub mod gallery;
pub mod graph_files;
pub mod index;
mod invariance;
mod jpeg_markers;
mod model;
pub mod neighbours;
mod preprocess;
mod safe_fs;
pub mod scan;
pub mod search;
mod similarity;
pub mod store;
pub mod thumbs;
pub mod tower;

pub use collection::{cache_path, Collection, IndexLocation, OpenOptions, QueryOptions};
pub use detect::{GroupOptions, OutlierOptions, OutlierRule};
pub use error::{Error, Result};
pub use invariance::Invariance;
pub use model::{Comparison, Embedding, Model, DEFAULT_BATCH};
pub use preprocess::{
    decode_bytes, decode_file, decode_file_for_model, decode_for_model, flatten_rgb, input_pixels, normalize,
    write_input, DecodeLimits, Decoded,
};
pub use scan::{RefreshOptions, RefreshReport};
pub use search::SearchKind;
pub use similarity::{squared_euclidean, Head, Metric};

pub use image;

/// The README's examples, compiled and run as doc tests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;

/// The library guide's examples, compiled (and run where they can) as doc tests.
#[cfg(doctest)]
#[doc = include_str!("../docs/library.md")]
pub struct LibraryGuideDoctests;
