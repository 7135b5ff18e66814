//! The tower contract between the trainer and the runtime: an architecture description, its
//! weights, the metadata the runtime needs, and the ONNX writer.

mod meta;
mod onnx;
mod spec;
mod weights;

pub use meta::{Filter, ModelMeta, Preprocess, Provenance, ResizeRule, FORMAT_VERSION, PREFIX};
pub use onnx::{write_onnx, BATCH_DIM, INPUT_NAME, OPSET, OUTPUT_NAME};
pub use spec::{Activation, InputShape, Layer, ParamKind, ParamSpec, TowerSpec};
pub use weights::{SplitMix64, TowerWeights};

use crate::error::Result;
use crate::similarity::{Head, Metric};

/// Metadata for a tower that has not been trained or calibrated: inputs scaled to `[0, 1]`,
/// stretch resize, and a head and threshold that are placeholders. Benchmarks and tests use it;
/// the trainer replaces the head, threshold and provenance with measured values.
pub fn untrained_meta(spec: &TowerSpec) -> Result<ModelMeta> {
    let c = spec.input.channels;
    let l2 = spec.l2_normalized();
    Ok(ModelMeta {
        input: spec.input,
        preprocess: Preprocess {
            resize: ResizeRule::Stretch,
            filter: Filter::Triangle,
            mean: vec![0.0; c],
            std: vec![1.0; c],
        },
        embedding_dim: spec.embedding_dim()?,
        l2_normalized: l2,
        metric: Metric::Euclidean,
        head: Head { a: 4.0, b: 8.0 },
        threshold: 0.5,
        grey_margin: None,
        provenance: Provenance {
            tower: spec.name.clone(),
            dataset: "none".into(),
            loss: "none".into(),
            epochs: 0,
            seed: 0,
            trainer_version: env!("CARGO_PKG_VERSION").into(),
            accuracy: None,
        },
    })
}
