//! Self-supervised training of the photo tower: two random copies of one window of a photo are
//! a positive pair, every other image in the batch a negative. The epoch kept, and the
//! duplicate threshold, are chosen on the near-duplicate suite built from photos that training
//! never sees.

use std::time::Instant;

use candle_core::{Device, Tensor};
use candle_nn::optim::{AdamW, Optimizer, ParamsAdamW};
use image::DynamicImage;
use rayon::prelude::*;

use super::loss::{views_loss, Loss};
use super::net::{candle_err, Net};
use super::{provenance, Trained};
use crate::augment::{best_score, detail, random_copy, Photo, Score, SuiteImage, Window, MIN_DETAIL};
use crate::error::{Error, Result};
use twinscan::tower::{self, ModelMeta, SplitMix64, TowerSpec, TowerWeights};
use twinscan::write_input;

/// Longest side of a training window before it is copied: copies are made at about the size
/// the tower's 64x64 input will see, which keeps a step cheap.
const VIEW_SIDE: u32 = 160;

/// Everything that determines a photo training run.
#[derive(Debug, Clone)]
pub struct PhotoConfig {
    /// Tower architecture (RGB input).
    pub spec: TowerSpec,
    /// [`Loss::InfoNce`] or [`Loss::Contrastive`].
    pub loss: Loss,
    /// Epochs.
    pub epochs: usize,
    /// Steps per epoch.
    pub steps: usize,
    /// Windows per step (each gives two views).
    pub batch: usize,
    /// Adam learning rate.
    pub lr: f64,
    /// Share of a step's windows that bring a burst-like neighbour of the same photo
    /// ([`Window::burst`]) as one more window: a hard negative, a different shot of the same
    /// scene. 0 keeps windows of one photo at most half overlapping.
    pub bursts: f32,
    /// Seed of windows, copies and initialisation.
    pub seed: u64,
    /// Data set description for the model's provenance.
    pub dataset: String,
}

/// What one epoch measured.
#[derive(Debug, Clone, PartialEq)]
pub struct PhotoEpoch {
    /// 1-based epoch number.
    pub epoch: usize,
    /// Mean training loss.
    pub loss: f64,
    /// The calibration suite at its best-F1 threshold.
    pub calibration: Score,
    /// Wall time of the training steps.
    pub train_seconds: f64,
}

/// A trained photo tower.
pub type PhotoTrained = Trained<PhotoEpoch>;

/// Embeds the suite with the network in inference mode.
fn embed_suite(net: &Net, suite: &[SuiteImage], meta: &ModelMeta) -> Result<Vec<f32>> {
    let mut out = Vec::with_capacity(suite.len() * meta.embedding_dim);
    for chunk in suite.chunks(256) {
        let images: Vec<DynamicImage> = chunk.iter().map(|s| DynamicImage::ImageRgb8(s.image.clone())).collect();
        out.extend(net.embed(&write_inputs(&images, meta), images.len())?);
    }
    Ok(out)
}

/// The suite's best-F1 score under the model's metric, given its embeddings.
pub fn suite_score(suite: &[SuiteImage], embeddings: &[f32], meta: &ModelMeta, invariant: bool) -> Score {
    let d = meta.embedding_dim;
    let distance = |i: usize, j: usize| {
        meta.metric.distance(&embeddings[i * d..][..d], &embeddings[j * d..][..d]).unwrap_or(f32::INFINITY)
    };
    best_score(suite, &distance, invariant)
}

/// The windows of one step: a random photo each, a quarter to all of each side, none flatter
/// than [`MIN_DETAIL`] and, among windows of one photo, no two overlapping by more than half
/// (otherwise another draw), so that in-batch negatives are not secretly the same picture;
/// except that a `bursts` share of them is followed by a burst-like neighbour, which overlaps
/// its own window more and is meant as a negative.
fn step_windows(photos: &[&Photo], n: usize, bursts: f32, rng: &mut SplitMix64) -> Result<Vec<(usize, Window)>> {
    let mut out: Vec<(usize, Window)> = Vec::with_capacity(n);
    let mut tries = 0;
    let fits = |out: &[(usize, Window)], p: usize, win: &Window, partner: Option<&Window>| {
        let apart = out.iter().all(|(q, o)| *q != p || Some(o) == partner || o.iou(win) < 0.5);
        apart && detail(&photos[p].image, win) >= MIN_DETAIL
    };
    while out.len() < n {
        tries += 1;
        if tries > 100 * n {
            return Err(Error::training(format!(
                "the training photos have too few detailed windows (found {} of {n})",
                out.len()
            )));
        }
        let p = rng.below(photos.len());
        let size = photos[p].image.dimensions();
        let win = Window::random(size.0, size.1, (0.25, 1.0), rng);
        if !fits(&out, p, &win, None) {
            continue;
        }
        out.push((p, win));
        // Drawn only when asked for, so that a run without bursts draws what it always drew.
        if bursts > 0.0 && out.len() < n && rng.next_f32() < bursts {
            if let Some(b) = win.burst(rng, size).filter(|b| fits(&out, p, b, Some(&win))) {
                out.push((p, b));
            }
        }
    }
    Ok(out)
}

/// Trains the photo tower on `train` photos, choosing the epoch and threshold on `calibration`
/// (a suite from other photos). `progress` sees each epoch as it ends.
pub fn train_photos(
    config: &PhotoConfig,
    train: &[&Photo],
    calibration: &[SuiteImage],
    progress: &mut dyn FnMut(&PhotoEpoch),
) -> Result<PhotoTrained> {
    let invalid = |reason: String| Error::training(reason);
    let spec = &config.spec;
    if spec.input.channels != 3 || !spec.l2_normalized() {
        return Err(invalid("the photo trainer needs an RGB tower with an L2-normalised output".into()));
    }
    if !matches!(config.loss, Loss::InfoNce { .. } | Loss::Contrastive { .. }) {
        return Err(invalid(format!(
            "the photo trainer takes the infonce or contrastive loss, not {}",
            config.loss.name()
        )));
    }
    if !(0.0..=1.0).contains(&config.bursts) {
        return Err(invalid(format!("bursts must lie in 0..=1, not {}", config.bursts)));
    }
    if train.is_empty() || calibration.is_empty() || config.batch < 2 {
        return Err(invalid("need training photos, a calibration suite and at least 2 windows per step".into()));
    }
    let mut meta = tower::untrained_meta(spec)?;
    meta.preprocess.mean = vec![0.5; 3];
    meta.preprocess.std = vec![0.25; 3];
    let net = Net::new(spec, &TowerWeights::seeded(spec, config.seed)?)?;
    let params = ParamsAdamW { lr: config.lr, weight_decay: 0.0, ..Default::default() };
    let mut opt = AdamW::new(net.trainable(), params).map_err(candle_err)?;
    let s = spec.input;
    let mut rng = SplitMix64::new(config.seed ^ 0x0094_0705);
    let mut history = Vec::new();
    let mut best: Option<(f64, usize, TowerWeights, f32)> = None;
    for epoch in 1..=config.epochs {
        let start = Instant::now();
        let mut loss_sum = 0.0;
        for _ in 0..config.steps {
            let windows = step_windows(train, config.batch, config.bursts, &mut rng)?;
            let seeds: Vec<u64> = windows.iter().map(|_| rng.next_u64()).collect();
            let views: Vec<[DynamicImage; 2]> = windows
                .par_iter()
                .zip(&seeds)
                .map(|((p, w), seed)| {
                    let mut r = SplitMix64::new(*seed);
                    let base = w.cut(&train[*p].image, VIEW_SIDE);
                    // Originals meet copies as often as copies meet copies.
                    let a = if r.next_f32() < 0.5 { base.clone() } else { random_copy(&base, &mut r) };
                    let b = random_copy(&base, &mut r);
                    [DynamicImage::ImageRgb8(a), DynamicImage::ImageRgb8(b)]
                })
                .collect();
            let (first, second): (Vec<_>, Vec<_>) = views.into_iter().map(|[a, b]| (a, b)).unzip();
            let mut x = write_inputs(&first, &meta);
            x.extend(write_inputs(&second, &meta));
            let m = 2 * windows.len();
            let x = Tensor::from_vec(x, (m, s.channels, s.height, s.width), &Device::Cpu).map_err(candle_err)?;
            let emb = net.forward_train(&x)?;
            let loss = views_loss(config.loss, &emb, None).map_err(candle_err)?;
            opt.backward_step(&loss).map_err(candle_err)?;
            loss_sum += f64::from(loss.to_scalar::<f32>().map_err(candle_err)?);
        }
        let train_seconds = start.elapsed().as_secs_f64();
        let calibration_score = suite_score(calibration, &embed_suite(&net, calibration, &meta)?, &meta, false);
        let metrics = PhotoEpoch {
            epoch,
            loss: loss_sum / config.steps.max(1) as f64,
            calibration: calibration_score,
            train_seconds,
        };
        progress(&metrics);
        if !metrics.loss.is_finite() {
            return Err(invalid(format!("loss became {} at epoch {epoch}; try a lower learning rate", metrics.loss)));
        }
        let f1 = metrics.calibration.overall.f1();
        if best.as_ref().is_none_or(|b| f1 > b.0) {
            best = Some((f1, epoch, net.weights()?, metrics.calibration.threshold));
        }
        history.push(metrics);
    }
    let Some((f1, best_epoch, weights, threshold)) = best else {
        return Err(invalid("no epoch was run".into()));
    };
    meta.threshold = threshold;
    // The head maps the threshold to probability one half, with a slope that spans the
    // normalised distance range [0, 2].
    meta.head = twinscan::Head { a: 8.0 * threshold, b: 8.0 };
    meta.provenance = provenance(spec, &config.dataset, config.loss, config.epochs, config.seed, f1);
    Ok(Trained { spec: spec.clone(), weights, meta, history, best_epoch })
}

/// Largest absolute difference between the candle network (inference mode) and the exported
/// ONNX run by tract, over `images`.
pub fn photo_parity(trained: &PhotoTrained, model: &twinscan::Model, images: &[SuiteImage]) -> Result<f32> {
    let net = Net::new(&trained.spec, &trained.weights)?;
    let ours = embed_suite(&net, images, &trained.meta)?;
    let decoded: Vec<DynamicImage> = images.iter().map(|s| DynamicImage::ImageRgb8(s.image.clone())).collect();
    let theirs = model.run_batch(&write_inputs(&decoded, model.meta()), images.len())?;
    Ok(ours.iter().zip(&theirs).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max))
}

/// The model inputs of several images, `[n, C, H, W]`, prepared in parallel.
fn write_inputs(images: &[image::DynamicImage], meta: &ModelMeta) -> Vec<f32> {
    let len = meta.input.channels * meta.input.height * meta.input.width;
    let mut out = vec![0f32; images.len() * len];
    out.par_chunks_mut(len.max(1)).zip(images).for_each(|(o, img)| write_input(img, meta, o));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_windows_come_as_close_neighbours_only_when_asked_for() {
        let image = image::RgbImage::from_fn(300, 200, |x, y| {
            image::Rgb([(x * 7 % 256) as u8, (y * 5 % 256) as u8, ((x * y) % 256) as u8])
        });
        let photo = Photo { path: "p.png".into(), key: "p".into(), image };
        let photos = [&photo];
        let windows = |bursts: f32| step_windows(&photos, 24, bursts, &mut SplitMix64::new(5)).unwrap();
        let close = |w: &[(usize, Window)]| w.windows(2).filter(|p| p[0].1.iou(&p[1].1) >= 0.35).count();
        let (plain, bursts) = (windows(0.0), windows(1.0));
        for w in [&plain, &bursts] {
            assert_eq!(w.len(), 24);
            assert!(w.iter().all(|(_, w)| w.x + w.w <= 300 && w.y + w.h <= 200));
        }
        for (i, a) in plain.iter().enumerate() {
            assert!(plain[i + 1..].iter().all(|b| a.1.iou(&b.1) < 0.5), "without bursts, windows stay apart");
        }
        assert!(
            close(&bursts) >= close(&plain) + 6,
            "{} close pairs with bursts, {} without",
            close(&bursts),
            close(&plain)
        );
    }
}
