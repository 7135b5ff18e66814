//! The photo trainer on synthetic photos (CI never runs a full training): the export matches
//! candle within 1e-4, a run is reproducible from its seed, and the calibration picks a
//! threshold. Needs the `train` feature.

#[path = "../../../tests/common/mod.rs"]
mod common;

use twinscan::tower::TowerSpec;
use twinscan::Model;
use twinscan_lab::augment::{build_suite, Photo};
use twinscan_lab::train::{photo_parity, train_photos, Loss, PhotoConfig, PhotoTrained};

fn photos(seeds: std::ops::Range<u64>) -> Vec<Photo> {
    seeds
        .map(|s| Photo {
            path: format!("p{s}.png").into(),
            key: format!("p{s}"),
            image: common::busy_picture(240, 180, s),
        })
        .collect()
}

fn run(loss: Loss, seed: u64, bursts: f32) -> (PhotoTrained, Vec<u8>) {
    let train = photos(0..4);
    let calibrate = photos(10..12);
    let suite = build_suite(&calibrate.iter().collect::<Vec<_>>(), 1, 3);
    let config = PhotoConfig {
        spec: TowerSpec::photo(16),
        loss,
        epochs: 2,
        steps: 2,
        batch: 6,
        lr: 1e-3,
        bursts,
        seed,
        dataset: "synthetic".into(),
    };
    let mut epochs = 0;
    let trained = train_photos(&config, &train.iter().collect::<Vec<_>>(), &suite, &mut |_| epochs += 1).unwrap();
    assert_eq!(epochs, 2);
    let bytes = trained.to_onnx().unwrap();
    let model = Model::from_bytes(&bytes, "trained").unwrap();
    let parity = photo_parity(&trained, &model, &suite).unwrap();
    assert!(parity <= 1e-4, "tract vs candle {parity}");
    (trained, bytes)
}

#[test]
fn photo_training_exports_what_it_trained_and_reproduces() {
    let (trained, bytes) = run(Loss::InfoNce { temperature: 0.1 }, 7, 0.0);
    assert!(trained.history.iter().all(|e| e.loss.is_finite() && e.loss > 0.0));
    let t = trained.meta.threshold;
    assert!(t > 0.0 && t <= 2.0, "threshold {t} outside the normalised distance range");
    assert_eq!(trained.meta.provenance.loss, "infonce");
    let (_, again) = run(Loss::InfoNce { temperature: 0.1 }, 7, 0.0);
    assert_eq!(bytes, again, "same seed, same model");
    let (_, other) = run(Loss::Contrastive { margin: 1.0 }, 7, 0.0);
    assert_ne!(bytes, other);
    let (_, bursts) = run(Loss::InfoNce { temperature: 0.1 }, 7, 0.5);
    let (_, bursts_again) = run(Loss::InfoNce { temperature: 0.1 }, 7, 0.5);
    assert_eq!(bursts, bursts_again, "hard negatives are seeded too");
    assert_ne!(bytes, bursts);
}

#[test]
fn photo_training_refuses_a_pair_loss() {
    let train = photos(0..2);
    let suite = build_suite(&photos(10..11).iter().collect::<Vec<_>>(), 1, 3);
    let config = PhotoConfig {
        spec: TowerSpec::photo(8),
        loss: Loss::Bce,
        epochs: 1,
        steps: 1,
        batch: 4,
        lr: 1e-3,
        bursts: 0.0,
        seed: 1,
        dataset: "synthetic".into(),
    };
    let err = train_photos(&config, &train.iter().collect::<Vec<_>>(), &suite, &mut |_| {}).unwrap_err();
    assert!(err.to_string().contains("infonce or contrastive"), "{err}");
}
