//! twinscan's lab: what makes and measures towers, kept out of the runtime crate so that an app
//! that only embeds and searches never compiles it.
//!
//! - [`dataset`]: labelled images (IDX files, class folders), pairs and jitter;
//! - [`augment`]: the photo augmentation suite (copies, crops, edits) and its scoring;
//! - [`evaluate`]: the origin study's pair protocol (accuracy, ROC AUC, calibration);
//! - [`unseen`]: verification, identification and anomaly detection on classes a tower never saw;
//! - [`train`]: the candle trainer and its export to a twinscan ONNX tower.

#![warn(missing_docs)]

pub mod augment;
pub mod dataset;
mod error;
pub mod evaluate;
pub mod train;
pub mod unseen;

pub use error::{Error, Result};
