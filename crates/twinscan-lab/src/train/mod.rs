//! The trainer (cargo feature `train`): twin-network training on labelled pairs with candle,
//! validation-based checkpointing, threshold calibration, and export to a twinscan ONNX tower.
//!
//! One loop serves every loss. Each step embeds every distinct image of the batch once, then
//! takes the pairs' distances (or, for the triplet loss, all distances within the batch).

mod gemm;
mod layers;
mod loss;
mod net;
mod photo;

use std::time::Instant;

use candle_core::{Device, Tensor, Var};
use candle_nn::optim::{AdamW, Optimizer, ParamsAdamW};
use rayon::prelude::*;

pub use loss::Loss;
pub use net::Net;
pub use photo::{photo_parity, suite_score, train_photos, PhotoConfig, PhotoEpoch, PhotoTrained};

use crate::dataset::{jitter, make_pairs, Dataset, Pair};
use crate::error::{Error, Result};
use crate::evaluate::{accuracy, best_threshold, fit_head};
use net::candle_err;
use twinscan::tower::{self, Layer, ModelMeta, Provenance, SplitMix64, TowerSpec, TowerWeights};
use twinscan::{Head, Metric};

/// Everything that determines a training run; the same config and data give the same model.
#[derive(Debug, Clone)]
pub struct TrainConfig {
    /// Tower architecture.
    pub spec: TowerSpec,
    /// Objective.
    pub loss: Loss,
    /// Epochs (the study: 40).
    pub epochs: usize,
    /// Pairs per step (the study: 1024).
    pub batch: usize,
    /// Adam learning rate (the study: 1e-3).
    pub lr: f64,
    /// Seed of pair sampling, initialisation and shuffling.
    pub seed: u64,
    /// Pairs drawn from the training images (the study: 100,000); the first 70% train, the
    /// rest validate.
    pub pairs: usize,
    /// Per-channel normalisation mean and std written to the model.
    pub mean: Vec<f32>,
    /// See `mean`.
    pub std: Vec<f32>,
    /// Data set description for the model's provenance.
    pub dataset: String,
    /// Strength of the random views of [`Loss::InfoNce`] and [`Loss::SupCon`]
    /// ([`crate::dataset::jitter`]; 1 is its full range); other losses ignore it.
    pub jitter: f32,
}

/// What one epoch measured.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EpochMetrics {
    /// 1-based epoch number.
    pub epoch: usize,
    /// Mean training loss over the epoch's steps.
    pub loss: f64,
    /// Accuracy on the training pairs at this epoch's validation threshold.
    pub train_accuracy: f64,
    /// Accuracy on the validation pairs at the threshold that maximises it.
    pub val_accuracy: f64,
    /// That threshold (a distance).
    pub threshold: f32,
    /// Wall time of the training steps alone.
    pub train_seconds: f64,
}

/// A trained tower: the weights of the best validation epoch and the metadata that describes
/// them; `H` is what each epoch measured ([`EpochMetrics`] for pair training, [`PhotoEpoch`]
/// for the photo trainer).
#[derive(Debug, Clone)]
pub struct Trained<H = EpochMetrics> {
    /// Tower architecture.
    pub spec: TowerSpec,
    /// Weights of the best epoch.
    pub weights: TowerWeights,
    /// Head, threshold and provenance as measured.
    pub meta: ModelMeta,
    /// Per-epoch metrics.
    pub history: Vec<H>,
    /// 1-based epoch whose weights were kept.
    pub best_epoch: usize,
}

impl<H> Trained<H> {
    /// The ONNX file of the trained tower.
    pub fn to_onnx(&self) -> Result<Vec<u8>> {
        Ok(tower::write_onnx(&self.spec, &self.weights, &self.meta)?)
    }
}

fn shuffle<T>(v: &mut [T], rng: &mut SplitMix64) {
    for i in (1..v.len()).rev() {
        v.swap(i, rng.below(i + 1));
    }
}

/// Embeds images `indices` of `data` with the network in inference mode, in chunks, and returns
/// the `[len, D]` embeddings row-major.
pub fn embed_dataset(net: &Net, data: &Dataset, meta: &ModelMeta, indices: &[usize]) -> Result<Vec<f32>> {
    let mut out = Vec::with_capacity(indices.len() * meta.embedding_dim);
    for chunk in indices.chunks(4096) {
        out.extend(net.embed(&data.batch(chunk, meta), chunk.len())?);
    }
    Ok(out)
}

/// Distances of `pairs` given every image's embedding (`all`, `[data.len(), D]`).
fn distances(all: &[f32], d: usize, pairs: &[Pair]) -> Vec<f32> {
    pairs
        .iter()
        .map(|p| Metric::Euclidean.distance(&all[p.a * d..][..d], &all[p.b * d..][..d]).unwrap_or(f32::INFINITY))
        .collect()
}

/// Trains a tower on `data` with the study's protocol: `config.pairs` balanced pairs, the first
/// 70% to train and the last 30% to validate; after each epoch the validation accuracy at its
/// best threshold decides whether this epoch's weights are the ones kept. `progress` sees each
/// epoch's metrics as it ends.
pub fn train(config: &TrainConfig, data: &Dataset, progress: &mut dyn FnMut(&EpochMetrics)) -> Result<Trained> {
    let spec = &config.spec;
    let invalid = |reason: String| Error::training(reason);
    if data.shape != spec.input {
        return Err(invalid(format!("data images are {:?}, the tower takes {:?}", data.shape, spec.input)));
    }
    let views = matches!(config.loss, Loss::InfoNce { .. } | Loss::SupCon { .. });
    if views && spec.layers.last() != Some(&Layer::L2Normalize) {
        return Err(invalid(format!("the {} loss needs a tower with an L2-normalised output", config.loss.name())));
    }
    // A learned logistic head would fit the projection head's distances, not the embedding's.
    let learns_head = config.loss.learns_head() && spec.head == 0;
    let pairs = make_pairs(&data.labels, config.pairs, config.seed);
    let split = pairs.len() * 7 / 10;
    if split == 0 || split == pairs.len() {
        return Err(invalid("too few pairs to train and validate (need two labels and at least 4 pairs)".into()));
    }
    let (train_pairs, val_pairs) = pairs.split_at(split);
    let mut meta = tower::untrained_meta(spec)?;
    meta.preprocess.mean.clone_from(&config.mean);
    meta.preprocess.std.clone_from(&config.std);

    let net = Net::new(spec, &TowerWeights::seeded(spec, config.seed)?)?;
    let dev = Device::Cpu;
    let head_a = Var::new(2.0f32, &dev).map_err(candle_err)?;
    let head_log_b = Var::new(0.0f32, &dev).map_err(candle_err)?;
    let mut vars = net.trainable();
    if learns_head {
        vars.extend([head_a.clone(), head_log_b.clone()]);
    }
    let params = ParamsAdamW { lr: config.lr, weight_decay: 0.0, ..Default::default() };
    let mut opt = AdamW::new(vars, params).map_err(candle_err)?;

    let s = spec.input;
    let d = meta.embedding_dim;
    let all: Vec<usize> = (0..data.len()).collect();
    let mut rng = SplitMix64::new(config.seed ^ 0x5eed);
    let mut order: Vec<usize> = (0..train_pairs.len()).collect();
    let train_y: Vec<bool> = train_pairs.iter().map(|p| p.similar).collect();
    let val_y: Vec<bool> = val_pairs.iter().map(|p| p.similar).collect();
    let mut history = Vec::new();
    let mut best: Option<(f64, usize, TowerWeights, Head, f32)> = None;
    for epoch in 1..=config.epochs {
        shuffle(&mut order, &mut rng);
        let start = Instant::now();
        let (mut loss_sum, mut steps) = (0.0, 0);
        for batch in order.chunks(config.batch.max(1)) {
            let batch: Vec<Pair> = batch.iter().map(|i| train_pairs[*i]).collect();
            if views {
                let loss = views_step(&net, config, &batch, data, &meta, &mut rng)?;
                opt.backward_step(&loss).map_err(candle_err)?;
                loss_sum += f64::from(loss.to_scalar::<f32>().map_err(candle_err)?);
                steps += 1;
                continue;
            }
            let mut images: Vec<usize> = batch.iter().flat_map(|p| [p.a, p.b]).collect();
            images.sort_unstable();
            images.dedup();
            let x = Tensor::from_vec(data.batch(&images, &meta), (images.len(), s.channels, s.height, s.width), &dev)
                .map_err(candle_err)?;
            let emb = net.forward_train(&x)?;
            let pairs = Step { images: &images, batch: &batch, data };
            let loss = step_loss(config.loss, &emb, &pairs, [&head_a, &head_log_b]).map_err(candle_err)?;
            opt.backward_step(&loss).map_err(candle_err)?;
            loss_sum += f64::from(loss.to_scalar::<f32>().map_err(candle_err)?);
            steps += 1;
        }
        let train_seconds = start.elapsed().as_secs_f64();
        let emb = embed_dataset(&net, data, &meta, &all)?;
        let val_d = distances(&emb, d, val_pairs);
        let (threshold, val_accuracy) = best_threshold(&val_d, &val_y);
        let train_d = distances(&emb, d, train_pairs);
        let metrics = EpochMetrics {
            epoch,
            loss: loss_sum / steps.max(1) as f64,
            train_accuracy: accuracy(&train_d, &train_y, threshold),
            val_accuracy,
            threshold,
            train_seconds,
        };
        progress(&metrics);
        history.push(metrics);
        if !metrics.loss.is_finite() {
            return Err(invalid(format!("loss became {} at epoch {epoch}; try a lower learning rate", metrics.loss)));
        }
        if best.as_ref().is_none_or(|b| val_accuracy > b.0) {
            let head = if learns_head {
                let a = head_a.as_tensor().to_scalar::<f32>().map_err(candle_err)?;
                let b = head_log_b.as_tensor().to_scalar::<f32>().map_err(candle_err)?.exp();
                Head { a, b }
            } else {
                fit_head(&train_d, &train_y)
            };
            best = Some((val_accuracy, epoch, net.weights()?, head, threshold));
        }
    }
    let Some((val_accuracy, best_epoch, weights, head, threshold)) = best else {
        return Err(invalid("no epoch was run".into()));
    };
    meta.head = head;
    meta.threshold = threshold;
    meta.provenance = provenance(spec, &config.dataset, config.loss, config.epochs, config.seed, val_accuracy);
    Ok(Trained { spec: spec.clone(), weights, meta, history, best_epoch })
}

/// What a trained model records of how it was made; `accuracy` is what chose its epoch.
fn provenance(spec: &TowerSpec, dataset: &str, loss: Loss, epochs: usize, seed: u64, accuracy: f64) -> Provenance {
    Provenance {
        tower: spec.name.clone(),
        dataset: dataset.into(),
        loss: loss.name().into(),
        epochs: epochs as u32,
        seed,
        trainer_version: env!("CARGO_PKG_VERSION").into(),
        accuracy: Some(accuracy),
    }
}

/// A step on views: the first image of each pair, seen twice through [`jitter`], each view's
/// partner the positive and every other view a negative; [`Loss::SupCon`] also takes the
/// views of images with the same label as positives. (InfoNCE uses labels only where every
/// loss does: to choose the epoch and calibrate the threshold on the validation pairs.)
fn views_step(
    net: &Net,
    config: &TrainConfig,
    batch: &[Pair],
    data: &Dataset,
    meta: &ModelMeta,
    rng: &mut SplitMix64,
) -> Result<Tensor> {
    let (s, k) = (data.shape, config.jitter);
    let seeds: Vec<u64> = batch.iter().map(|_| rng.next_u64()).collect();
    let views: Vec<[Vec<u8>; 2]> = batch
        .par_iter()
        .zip(&seeds)
        .map(|(p, seed)| {
            let mut r = SplitMix64::new(*seed);
            [jitter(data.image(p.a), s, k, &mut r), jitter(data.image(p.a), s, k, &mut r)]
        })
        .collect();
    let n = data.image_len();
    let mut x = vec![0.0; 2 * batch.len() * n];
    let (first, second) = x.split_at_mut(batch.len() * n);
    for ((v, a), b) in views.iter().zip(first.chunks_mut(n)).zip(second.chunks_mut(n)) {
        twinscan::normalize(&v[0], meta, a);
        twinscan::normalize(&v[1], meta, b);
    }
    let x = Tensor::from_vec(x, (2 * batch.len(), s.channels, s.height, s.width), &Device::Cpu).map_err(candle_err)?;
    let emb = net.forward_train(&x)?;
    let labels: Vec<u32> = batch.iter().map(|p| data.labels[p.a]).collect();
    loss::views_loss(config.loss, &emb, Some(&labels)).map_err(candle_err)
}

/// What a step's loss is taken over: the distinct images embedded (rows of the embedding), the
/// batch's pairs, and their data set (for labels).
struct Step<'a> {
    images: &'a [usize],
    batch: &'a [Pair],
    data: &'a Dataset,
}

/// `[head_a, head_log_b]`: the learned head `p = sigmoid(a - exp(log_b) * d)`.
fn step_loss(loss: Loss, emb: &Tensor, step: &Step, [head_a, head_log_b]: [&Var; 2]) -> candle_core::Result<Tensor> {
    let Step { images, batch, data } = *step;
    let pos = |i: usize| images.binary_search(&i).unwrap_or(0) as u32;
    if let Loss::Triplet { margin } = loss {
        let n = images.len();
        let labels: Vec<u32> = images.iter().map(|i| data.labels[*i]).collect();
        let same: Vec<f32> = (0..n * n).map(|k| f32::from(u8::from(labels[k / n] == labels[k % n]))).collect();
        let same = Tensor::from_vec(same, (n, n), emb.device())?;
        return loss::triplet_loss(emb, &same, margin);
    }
    let ia = Tensor::from_vec(batch.iter().map(|p| pos(p.a)).collect::<Vec<_>>(), batch.len(), emb.device())?;
    let ib = Tensor::from_vec(batch.iter().map(|p| pos(p.b)).collect::<Vec<_>>(), batch.len(), emb.device())?;
    let d = loss::row_distance(&emb.index_select(&ia, 0)?, &emb.index_select(&ib, 0)?)?;
    let y = Tensor::from_vec(
        batch.iter().map(|p| f32::from(u8::from(p.similar))).collect::<Vec<_>>(),
        batch.len(),
        emb.device(),
    )?;
    let z = d.broadcast_mul(&head_log_b.as_tensor().exp()?)?.neg()?.broadcast_add(head_a.as_tensor())?;
    loss::pair_loss(loss, &d, &y, &z)
}

/// Largest absolute difference between the candle network (inference mode) and the exported
/// ONNX run by tract, over images `indices` of `data`.
pub fn parity(trained: &Trained, model: &twinscan::Model, data: &Dataset, indices: &[usize]) -> Result<f32> {
    let net = Net::new(&trained.spec, &trained.weights)?;
    let ours = embed_dataset(&net, data, &trained.meta, indices)?;
    let theirs = model.run_batch(&data.batch(indices, model.meta()), indices.len())?;
    Ok(ours.iter().zip(&theirs).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max))
}
