//! Loading a tower with tract and running it on images.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use image::DynamicImage;
use prost::Message;
use rayon::prelude::*;
use sha2::{Digest, Sha256};
use tract_onnx::pb;
use tract_onnx::prelude::*;

use crate::error::{Error, Result};
use crate::invariance::{orientations, oriented_distance, with_grey, Invariance};
use crate::preprocess::{
    decode_file_for_model, decode_for_model, read_limited, write_input, write_inputs, DecodeLimits, Decoded,
};
use crate::tower::{ModelMeta, PREFIX};

/// An embedding: one tower output, `ModelMeta::embedding_dim` values; under
/// [`Invariance::MirrorRotate`] one such output per orientation, the image as it is first, and
/// for a model with a grey view one more output last (see [`Model::embedding_len`]).
pub type Embedding = Vec<f32>;

/// Images per network call when embedding many files. Large enough to amortise tract's per-call
/// overhead, small enough that a few batches in flight per thread keep memory flat.
pub const DEFAULT_BATCH: usize = 32;

/// The result of comparing two images or embeddings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Comparison {
    /// Distance under the model's metric.
    pub distance: f32,
    /// Probability that the two are similar, from the model's head.
    pub probability: f32,
    /// Whether the distance is at or below the model's calibrated threshold.
    pub similar: bool,
}

/// One tower of a trained twin network, loaded, validated and optimised; cheap to clone and safe
/// to share across threads.
///
/// ```
/// // A digit tower of the repository; `Model::bundled()` is the photo tower.
/// let model = twinscan::Model::open("models/mnist-0-4-compact-proj-supcon.onnx")?;
/// let a = model.embed_file("examples/digits/seven-a.png")?;
/// let b = model.embed_file("examples/digits/seven-b.png")?;
/// let one = model.embed_file("examples/digits/one.png")?;
/// let (same, other) = (model.compare(&a, &b)?, model.compare(&a, &one)?);
/// assert!(same.distance < other.distance);
/// println!("distance {:.3}, p(similar) {:.3}", same.distance, same.probability);
/// # Ok::<(), twinscan::Error>(())
/// ```
#[derive(Clone)]
pub struct Model {
    label: String,
    meta: ModelMeta,
    plans: Arc<Plans>,
    fingerprint: String,
    limits: DecodeLimits,
    invariance: Invariance,
}

impl std::fmt::Debug for Model {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Model").field("label", &self.label).field("fingerprint", &self.fingerprint).finish()
    }
}

fn graph_err(model: &str, reason: impl Into<String>) -> Error {
    Error::ModelGraph { model: model.into(), reason: reason.into(), source: None }
}

/// Dimensions a graph input or output declares; `None` for a symbolic or missing dimension.
fn declared_dims(v: &pb::ValueInfoProto) -> Option<Vec<Option<i64>>> {
    use pb::tensor_shape_proto::dimension::Value;
    match v.r#type.as_ref()?.value.as_ref()? {
        pb::type_proto::Value::TensorType(t) => Some(
            t.shape
                .as_ref()?
                .dim
                .iter()
                .map(|d| match d.value {
                    Some(Value::DimValue(n)) => Some(n),
                    _ => None,
                })
                .collect(),
        ),
    }
}

/// Checks the declared graph interface against the metadata before tract sees it, so a wrong
/// model is refused with a message about shapes rather than a tract internals error.
fn check_interface(label: &str, graph: &pb::GraphProto, meta: &ModelMeta) -> Result<()> {
    let initializers: std::collections::HashSet<&str> = graph.initializer.iter().map(|t| t.name.as_str()).collect();
    let inputs: Vec<_> = graph.input.iter().filter(|i| !initializers.contains(i.name.as_str())).collect();
    let [input] = inputs.as_slice() else {
        return Err(graph_err(
            label,
            format!("graph has {} inputs, expected one image input [N, C, H, W]", inputs.len()),
        ));
    };
    let [output] = graph.output.as_slice() else {
        return Err(graph_err(
            label,
            format!("graph has {} outputs, expected one embedding output [N, D]", graph.output.len()),
        ));
    };
    let expect_in = [meta.input.channels, meta.input.height, meta.input.width].map(|d| d as i64);
    match declared_dims(input) {
        Some(d) if d.len() == 4 => {
            for (i, (got, want)) in d[1..].iter().zip(expect_in).enumerate() {
                if got.is_some_and(|g| g != want) {
                    let axis = ["C", "H", "W"][i];
                    return Err(graph_err(
                        label,
                        format!("input `{}` has {axis} = {}, metadata says {want}", input.name, got.unwrap_or(0)),
                    ));
                }
            }
        }
        Some(d) => {
            return Err(graph_err(
                label,
                format!("input `{}` has rank {}, expected 4 ([N, C, H, W])", input.name, d.len()),
            ));
        }
        None => return Err(graph_err(label, format!("input `{}` declares no tensor shape", input.name))),
    }
    match declared_dims(output) {
        Some(d) if d.len() != 2 => {
            Err(graph_err(label, format!("output `{}` has rank {}, expected 2 ([N, D])", output.name, d.len())))
        }
        Some(d) if d[1].is_some_and(|g| g != meta.embedding_dim as i64) => Err(graph_err(
            label,
            format!("output `{}` has D = {:?}, metadata says {}", output.name, d[1], meta.embedding_dim),
        )),
        _ => Ok(()),
    }
}

/// Largest weight tensor accepted, in values (a gigabyte of floats); no tower comes near it.
const MAX_WEIGHT_VALUES: u64 = 1 << 28;

/// The number of values a tensor of `dims` holds; `None` for a negative dimension or an overflow.
fn values(dims: &[i64]) -> Option<u64> {
    dims.iter().try_fold(1u64, |n, &d| u64::try_from(d).ok().and_then(|d| n.checked_mul(d)))
}

/// Refuses weights no tower has: initializers that are not float (a string stored as raw data
/// made tract panic), whose declared size does not match their data or exceeds
/// [`MAX_WEIGHT_VALUES`], or that hold NaN or infinity (such a model embeds garbage even where
/// a ReLU hides it from a probe).
fn check_weights(label: &str, graph: &pb::GraphProto) -> Result<()> {
    let float = pb::tensor_proto::DataType::Float as i32;
    for t in &graph.initializer {
        if t.data_type != float {
            return Err(graph_err(label, format!("weight `{}` is not float (data type {})", t.name, t.data_type)));
        }
        let declared = values(&t.dims);
        let stored = (t.raw_data.len() / 4 + t.float_data.len()) as u64;
        if declared.is_none_or(|n| n != stored || n > MAX_WEIGHT_VALUES) || t.raw_data.len() % 4 != 0 {
            return Err(graph_err(
                label,
                format!("weight `{}` declares {:?} but stores {stored} values", t.name, t.dims),
            ));
        }
        let raw = t.raw_data.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]));
        if raw.chain(t.float_data.iter().copied()).any(|v| !v.is_finite()) {
            return Err(graph_err(label, format!("weight `{}` holds non-finite values", t.name)));
        }
    }
    Ok(())
}

/// Operators whose output size is read from data: folding them as constants made tract
/// allocate whatever a crafted file asked for (and running out of memory aborts the process).
/// No tower uses them, nor constants beyond [`MAX_WEIGHT_VALUES`].
fn check_nodes(label: &str, graph: &pb::GraphProto) -> Result<()> {
    const SIZED_BY_DATA: [&str; 4] = ["ConstantOfShape", "Range", "Expand", "Tile"];
    for node in &graph.node {
        if SIZED_BY_DATA.contains(&node.op_type.as_str()) || !node.domain.is_empty() {
            return Err(graph_err(label, format!("operator {} is not part of a tower", node.op_type)));
        }
        for a in node.attribute.iter().filter_map(|a| a.t.as_ref()) {
            if values(&a.dims).is_none_or(|n| n > MAX_WEIGHT_VALUES) {
                return Err(graph_err(label, format!("a constant of {:?} values in {}", a.dims, node.op_type)));
            }
        }
    }
    Ok(())
}

/// The bundled photo tower: models/photo.onnx, as its card says it was trained.
#[cfg(feature = "bundled")]
const BUNDLED: &[u8] = include_bytes!("../models/photo.onnx");

impl Model {
    /// The photo tower that ships inside the library (cargo feature `bundled`, on by default),
    /// for near-duplicate photos (re-encoded, resized, cropped, framed, re-lit); its card is
    /// `models/photo.md`.
    ///
    /// ```
    /// let model = twinscan::Model::bundled()?;
    /// assert_eq!(model.meta().input.channels, 3);
    /// # Ok::<(), twinscan::Error>(())
    /// ```
    #[cfg(feature = "bundled")]
    pub fn bundled() -> Result<Model> {
        Self::from_bytes(BUNDLED, "bundled photo.onnx")
    }

    /// Loads a model file. See [`Model::from_bytes`].
    pub fn open(path: impl AsRef<Path>) -> Result<Model> {
        let path = path.as_ref();
        // Protocol buffers cannot exceed 2 GiB; a FIFO or device named here is refused, not read.
        const MAX_BYTES: u64 = 2 << 30;
        let bytes = crate::safe_fs::read_regular(path, true, MAX_BYTES, |size| Error::FileTooLarge {
            path: path.into(),
            size,
            limit: MAX_BYTES,
        })?;
        Self::from_bytes(&bytes, &path.display().to_string())
    }

    /// Loads a model from ONNX bytes; `label` names it in errors. Reads and validates the
    /// `twinscan.*` metadata and the graph's interface, then optimises the graph once for a
    /// symbolic batch size and runs a probe to refuse weights that yield NaN.
    pub fn from_bytes(bytes: &[u8], label: &str) -> Result<Model> {
        let proto = pb::ModelProto::decode(bytes).map_err(|e| Error::ModelFormat {
            model: label.into(),
            reason: e.to_string(),
            source: Some(e.into()),
        })?;
        let Some(graph) = proto.graph.as_ref() else {
            return Err(Error::ModelFormat {
                model: label.into(),
                reason: "no graph in the file".into(),
                source: None,
            });
        };
        let props: HashMap<String, String> = proto
            .metadata_props
            .iter()
            .filter(|p| p.key.starts_with(PREFIX))
            .map(|p| (p.key.clone(), p.value.clone()))
            .collect();
        if props.is_empty() {
            return Err(Error::MissingMetadata { model: label.into(), key: format!("{PREFIX}*") });
        }
        let meta = ModelMeta::from_properties(label, &props)?;
        check_interface(label, graph, &meta)?;
        check_weights(label, graph)?;
        check_nodes(label, graph)?;

        // tract is a large parser of hostile bytes too: a panic in it costs this model, not
        // the process (as for the image decoders).
        let plans = std::panic::catch_unwind(|| Plans::new(&proto, &meta))
            .map_err(|_| graph_err(label, "tract panicked while loading the graph"))?
            .map_err(|e| Error::ModelGraph {
                model: label.into(),
                reason: format!("tract cannot load the graph: {e:#}"),
                source: Some(e.into()),
            })?;
        let fingerprint = Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect();
        let model = Model {
            label: label.into(),
            meta,
            plans: Arc::new(plans),
            fingerprint,
            limits: DecodeLimits::default(),
            invariance: Invariance::None,
        };
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| model.probe()))
            .map_err(|_| graph_err(label, "tract panicked while running the probe"))??;
        Ok(model)
    }

    /// Runs the network on a blank image and on a pattern, alone and together: outputs must be
    /// finite, and an image's embedding must not depend on what else is in its batch (the scan
    /// batches images freely). The symbolic plan serves every batch size, so no plan is built.
    fn probe(&self) -> Result<()> {
        let len = self.input_len();
        let pattern: Vec<f32> = (0..len).map(|i| (i % 7) as f32 / 7.0 - 0.4).collect();
        let blank = self.run_on(&self.plans.symbolic, &vec![0.0; len], 1)?;
        if blank.iter().any(|v| !v.is_finite()) {
            return Err(graph_err(&self.label, "produces non-finite outputs on a blank image (broken weights?)"));
        }
        let alone = self.run_on(&self.plans.symbolic, &pattern, 1)?;
        let together = self.run_on(&self.plans.symbolic, &[pattern, vec![0.0; len]].concat(), 2)?;
        let same = |a: &[f32], b: &[f32]| a.iter().zip(b).all(|(x, y)| (x - y).abs() <= 1e-4 * (1.0 + x.abs()));
        let (first, second) = together.split_at(alone.len());
        if !same(&alone, first) || !same(&blank, second) {
            return Err(graph_err(&self.label, "an image's embedding depends on the other images in its batch"));
        }
        Ok(())
    }

    /// The model's metadata.
    pub fn meta(&self) -> &ModelMeta {
        &self.meta
    }

    /// The path or label the model was loaded from.
    pub fn label(&self) -> &str {
        &self.label
    }

    /// SHA-256 of the model file, hex: identifies which model produced a set of embeddings;
    /// `+grey=M` follows when [`Model::with_grey_margin`] changed the grey view.
    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }

    /// Replaces the image decoding limits.
    pub fn with_limits(mut self, limits: DecodeLimits) -> Model {
        self.limits = limits;
        self
    }

    /// Makes embeddings invariant to mirroring and rotation (or not); see [`Invariance`].
    pub fn with_invariance(mut self, invariance: Invariance) -> Model {
        self.invariance = invariance;
        self
    }

    /// Compares images also as grey, at `margin` (see `ModelMeta::grey_margin`), or not
    /// (`None`), whatever the model file says; for calibration and experiments. A one-channel
    /// model has no grey view.
    pub fn with_grey_margin(mut self, margin: Option<f32>) -> Model {
        let margin = margin.filter(|m| m.is_finite() && *m >= 0.0 && self.meta.input.channels == 3);
        if margin != self.meta.grey_margin {
            // Embeddings change length and meaning: an index must not take them for the file's.
            let file = self.fingerprint.split('+').next().unwrap_or_default().to_string();
            self.fingerprint = format!("{file}+grey={}", margin.map_or("none".into(), |m| m.to_string()));
        }
        self.meta.grey_margin = margin;
        self
    }

    /// The invariance in force.
    pub fn invariance(&self) -> Invariance {
        self.invariance
    }

    /// Values in one embedding: the tower's output size, times the orientations the model's
    /// [`Invariance`] covers, plus one for the grey view where the model has one.
    pub fn embedding_len(&self) -> usize {
        self.meta.embedding_dim * self.views()
    }

    /// Where the model's distance is the least, over its views, of the plain Euclidean
    /// distance between the two images' embeddings of that view plus the view's margin: each
    /// view's `(offset, margin)` in the embedding. `None` for a cosine model or one with
    /// orientations (their distance pairs different views). Grouping uses it to compare views
    /// in blocks, as fast as a one-view model.
    pub(crate) fn plain_views(&self) -> Option<Vec<(usize, f32)>> {
        if self.meta.metric != crate::Metric::Euclidean || self.invariance != Invariance::None {
            return None;
        }
        let mut views = vec![(0, 0.0)];
        views.extend(self.meta.grey_margin.map(|m| (self.meta.embedding_dim, m)));
        Some(views)
    }

    /// Network runs per image: orientations, then the grey view.
    fn views(&self) -> usize {
        let m = &self.meta.input;
        self.invariance.runs(m.height, m.width) + usize::from(self.meta.grey_margin.is_some())
    }

    /// The decoding limits in force.
    pub fn limits(&self) -> &DecodeLimits {
        &self.limits
    }

    /// Values in one image's input tensor (`C * H * W`).
    pub fn input_len(&self) -> usize {
        self.meta.input.channels * self.meta.input.height * self.meta.input.width
    }

    /// Runs the network on `n` preprocessed images laid out `[n, C, H, W]` and returns the
    /// `[n, D]` outputs, row-major: the raw network, without [`Invariance`]. One call runs on
    /// the calling thread.
    pub fn run_batch(&self, input: &[f32], n: usize) -> Result<Vec<f32>> {
        let plan = self.plans.get(n).map_err(|e| Error::Inference {
            model: self.label.clone(),
            reason: format!("{e:#}"),
            source: Some(e.into()),
        })?;
        self.run_on(&plan, input, n)
    }

    fn run_on(&self, plan: &Arc<TypedRunnableModel>, input: &[f32], n: usize) -> Result<Vec<f32>> {
        let m = &self.meta.input;
        let infer = |reason: String| Error::Inference { model: self.label.clone(), reason, source: None };
        if input.len() != n * self.input_len() {
            return Err(infer(format!("batch of {n} needs {} values, got {}", n * self.input_len(), input.len())));
        }
        let tensor =
            Tensor::from_shape(&[n, m.channels, m.height, m.width], input).map_err(|e| infer(e.to_string()))?;
        let out = plan.run(tvec!(tensor.into_tvalue())).map_err(|e| infer(format!("{e:#}")))?;
        let plain = out[0].try_as_plain_ram().map_err(|e| infer(e.to_string()))?;
        let view = plain.as_slice::<f32>().map_err(|e| infer(e.to_string()))?;
        if view.len() != n * self.meta.embedding_dim {
            return Err(infer(format!("output has {} values, expected {n} x {}", view.len(), self.meta.embedding_dim)));
        }
        Ok(view.to_vec())
    }

    /// Embeds `n` preprocessed images (`[n, C, H, W]`, as [`write_input`] makes them) under the
    /// model's [`Invariance`]; `[n, L]` out, row-major, `L` = [`Model::embedding_len`].
    pub fn embed_inputs(&self, input: &[f32], n: usize) -> Result<Vec<f32>> {
        let m = &self.meta.input;
        let runs = self.invariance.runs(m.height, m.width);
        if self.views() == 1 {
            return self.run_rows(input, n);
        }
        let mut all = orientations(input, n, (m.channels, m.height, m.width), self.invariance);
        if self.meta.grey_margin.is_some() && input.len() == n * self.input_len() {
            all = with_grey(&all, input, runs, &self.meta);
        }
        self.run_rows(&all, n * self.views())
    }

    /// [`Model::run_batch`] in pieces of at least [`MIN_PIECE`] rows, one per rayon thread, in
    /// parallel: one tract call keeps to one thread, so a scan's network thread would otherwise
    /// leave the other cores to decoding alone and be the bottleneck on small images.
    fn run_rows(&self, input: &[f32], rows: usize) -> Result<Vec<f32>> {
        let pieces = rayon::current_num_threads().min(rows / MIN_PIECE).max(1);
        let len = self.input_len();
        if pieces == 1 || input.len() != rows * len {
            return self.run_batch(input, rows);
        }
        let per = rows.div_ceil(pieces) * len;
        let outs: Vec<Result<Vec<f32>>> = input.par_chunks(per).map(|c| self.run_batch(c, c.len() / len)).collect();
        let mut out = Vec::with_capacity(rows * self.meta.embedding_dim);
        for o in outs {
            out.extend(o?);
        }
        Ok(out)
    }

    /// Embeds decoded images as one batch.
    pub fn embed_images(&self, images: &[DynamicImage]) -> Result<Vec<Embedding>> {
        let out = self.embed_inputs(&write_inputs(images, &self.meta), images.len())?;
        Ok(out.chunks(self.embedding_len().max(1)).map(<[f32]>::to_vec).collect())
    }

    /// Embeds one decoded image.
    pub fn embed_image(&self, image: &DynamicImage) -> Result<Embedding> {
        let mut out = self.embed_images(std::slice::from_ref(image))?;
        Ok(out.pop().unwrap_or_default())
    }

    /// Decodes and embeds one file.
    pub fn embed_file(&self, path: impl AsRef<Path>) -> Result<Embedding> {
        let path = path.as_ref();
        let embedding = self.embed_image(&decode_file_for_model(path, &self.limits, &self.meta)?.image)?;
        if embedding.iter().any(|v| !v.is_finite()) {
            return Err(Error::NonFinite { model: self.label.clone(), path: path.into() });
        }
        Ok(embedding)
    }

    /// The number of images to decode and run together, at most `requested`, so that their
    /// input tensors stay under 64 MiB: 128 photos for the bundled tower, one image at a time for
    /// a tower taking 4096 x 4096 (whose activations are larger still).
    pub fn batch_for(&self, requested: usize) -> usize {
        const BATCH_INPUT_BYTES: usize = 64 << 20;
        let per_image = (self.input_len() * std::mem::size_of::<f32>() * self.views()).max(1);
        requested.clamp(1, (BATCH_INPUT_BYTES / per_image).max(1))
    }

    /// Decodes and embeds many files, in parallel over rayon's pool, `batch` images per network
    /// call (see [`Model::batch_for`]). Returns one result per path, in order: a file that cannot be read or decoded gets
    /// its error and the others are unaffected.
    pub fn embed_paths_batched<P: AsRef<Path> + Sync>(&self, paths: &[P], batch: usize) -> Vec<Result<Embedding>> {
        paths
            .par_chunks(self.batch_for(batch))
            .flat_map_iter(|chunk| {
                // Decoding dominates for photos, so each image is decoded on its own task.
                let prepared: Vec<Result<(&Path, Vec<f32>)>> = chunk
                    .par_iter()
                    .map(|path| {
                        let path = path.as_ref();
                        Ok((path, self.input_from_bytes(&read_limited(path, &self.limits, true)?, path)?.0))
                    })
                    .collect();
                self.embed_prepared(prepared, |p| p).into_iter().map(|r| r.map(|(_, e)| e))
            })
            .collect()
    }

    /// Decodes an image's bytes for this model (`path` names it in errors) and returns its
    /// input tensor (`C * H * W` values) and the decoded image.
    pub(crate) fn input_from_bytes(&self, bytes: &[u8], path: &Path) -> Result<(Vec<f32>, Decoded)> {
        let decoded = decode_for_model(bytes, path, &self.limits, &self.meta)?;
        let mut input = vec![0.0; self.input_len()];
        write_input(&decoded.image, &self.meta, &mut input);
        Ok((input, decoded))
    }

    /// Runs the network once over the inputs that were prepared and pairs each item with its
    /// embedding; an item whose preparation failed keeps its error, and a non-finite embedding
    /// becomes one, naming `path(item)`.
    pub(crate) fn embed_prepared<T>(
        &self,
        prepared: Vec<Result<(T, Vec<f32>)>>,
        path: impl Fn(&T) -> &Path,
    ) -> Vec<Result<(T, Embedding)>> {
        let n = prepared.iter().filter(|r| r.is_ok()).count();
        let packed: Vec<f32> =
            prepared.iter().filter_map(|r| r.as_ref().ok()).flat_map(|(_, x)| x.iter().copied()).collect();
        let ran = if n == 0 { Ok(Vec::new()) } else { self.embed_inputs(&packed, n) };
        let d = self.embedding_len();
        let mut row = 0;
        prepared
            .into_iter()
            .map(|r| {
                let (item, _) = r?;
                let out = ran.as_ref().map_err(|e| Error::Inference {
                    model: self.label.clone(),
                    reason: e.to_string(),
                    source: None,
                })?;
                let embedding = out[row * d..(row + 1) * d].to_vec();
                row += 1;
                if embedding.iter().any(|v| !v.is_finite()) {
                    return Err(Error::NonFinite { model: self.label.clone(), path: path(&item).to_path_buf() });
                }
                Ok((item, embedding))
            })
            .collect()
    }

    /// [`Model::embed_paths_batched`] with [`DEFAULT_BATCH`].
    pub fn embed_paths<P: AsRef<Path> + Sync>(&self, paths: &[P]) -> Vec<Result<Embedding>> {
        self.embed_paths_batched(paths, DEFAULT_BATCH)
    }

    /// Distance between two embeddings under the model's metric; under
    /// [`Invariance::MirrorRotate`], the smallest distance between either image as it is and the
    /// other in any orientation; with a grey view, the least of that and the grey views'
    /// distance plus the model's margin.
    pub fn distance(&self, a: &[f32], b: &[f32]) -> Result<f32> {
        let (d, len) = (self.meta.embedding_dim, self.embedding_len());
        if len == d || a.len() != len || b.len() != len {
            return self.meta.metric.distance(a, b);
        }
        let metric = self.meta.metric;
        let (colour, grey) = match self.meta.grey_margin {
            Some(margin) => (len - d, Some(margin)),
            None => (len, None),
        };
        let (ac, bc) = (&a[..colour], &b[..colour]);
        let mut best = oriented_distance(ac, bc, d, |x, y| metric.distance(x, y).unwrap_or(f32::INFINITY));
        if let Some(margin) = grey {
            best = best.min(metric.distance(&a[colour..], &b[colour..])? + margin);
        }
        Ok(best)
    }

    /// Distance, probability and verdict for two embeddings.
    pub fn compare(&self, a: &[f32], b: &[f32]) -> Result<Comparison> {
        let distance = self.distance(a, b)?;
        Ok(Comparison {
            distance,
            probability: self.meta.probability(distance),
            similar: distance <= self.meta.threshold,
        })
    }
}

/// Fewest rows [`Model::run_rows`] gives one thread: smaller pieces cost more in per-call
/// overhead than they gain.
const MIN_PIECE: usize = 16;

/// Optimised plans per batch size. tract optimises a graph with a symbolic batch much less well
/// than one with a concrete batch (3-6x slower here, see docs/benchmarks.md), so each batch size
/// that occurs gets its own plan, built once; past `MAX_PLANS` sizes the symbolic plan serves.
struct Plans {
    decluttered: TypedModel,
    batch: Symbol,
    symbolic: Arc<TypedRunnableModel>,
    by_size: std::sync::RwLock<HashMap<usize, Arc<TypedRunnableModel>>>,
}

const MAX_PLANS: usize = 16;

impl Plans {
    fn new(proto: &pb::ModelProto, meta: &ModelMeta) -> TractResult<Plans> {
        let mut model = tract_onnx::onnx().model_for_proto_model(proto)?;
        let batch = model.symbols.sym(crate::tower::BATCH_DIM);
        let m = &meta.input;
        let shape = tvec!(batch.to_dim(), m.channels.to_dim(), m.height.to_dim(), m.width.to_dim());
        model.set_input_fact(0, InferenceFact::dt_shape(f32::datum_type(), shape))?;
        let decluttered = model.into_typed()?.into_decluttered()?;
        let out = decluttered.output_fact(0)?;
        let rank = out.shape.rank();
        if rank != 2 {
            tract_onnx::tract_hir::internal::bail!("output has rank {rank}, expected 2 ([N, D])");
        }
        if out.shape[1] != meta.embedding_dim.to_dim() {
            tract_onnx::tract_hir::internal::bail!(
                "output has D = {}, metadata says {}",
                out.shape[1],
                meta.embedding_dim
            );
        }
        let symbolic = decluttered.clone().into_optimized()?.into_runnable()?;
        Ok(Plans { decluttered, batch, symbolic, by_size: Default::default() })
    }

    fn get(&self, n: usize) -> TractResult<Arc<TypedRunnableModel>> {
        if let Some(plan) = self.by_size.read().ok().and_then(|m| m.get(&n).cloned()) {
            return Ok(plan);
        }
        if self.by_size.read().map_or(true, |m| m.len() >= MAX_PLANS) {
            return Ok(self.symbolic.clone());
        }
        let values = HashMap::from([(self.batch.clone(), TDim::Val(n as i64))]);
        let plan = self.decluttered.set_symbols(&values)?.into_optimized()?.into_runnable()?;
        if let Ok(mut m) = self.by_size.write() {
            m.insert(n, plan.clone());
        }
        Ok(plan)
    }
}
