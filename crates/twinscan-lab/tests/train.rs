//! The trainer on a small synthetic data set (CI never runs a full training): the exported ONNX
//! run by tract matches candle's forward pass, runs are reproducible from their seed, and
//! training learns something. Needs the `train` feature.

#[path = "../../../tests/common/mod.rs"]
mod common;

use twinscan::tower::{InputShape, SplitMix64, TowerSpec};
use twinscan::Model;
use twinscan_lab::dataset::Dataset;
use twinscan_lab::train::{parity, train, Loss, TrainConfig, Trained};

const SIDE: usize = 12;

/// Three classes of 12x12 grey images (horizontal stripes, vertical stripes, a blob) with seeded
/// noise and random phase, so the classes are learnable but no two images are equal.
fn synthetic(n_per_class: usize, seed: u64) -> Dataset {
    let mut rng = SplitMix64::new(seed);
    let (mut pixels, mut labels) = (Vec::new(), Vec::new());
    for i in 0..3 * n_per_class {
        let class = (i % 3) as u32;
        let phase = rng.below(4);
        for y in 0..SIDE {
            for x in 0..SIDE {
                let on = match class {
                    0 => (y + phase) % 4 < 2,
                    1 => (x + phase) % 4 < 2,
                    _ => (x as i64 - 6).pow(2) + (y as i64 - 6).pow(2) < (9 + phase as i64 * 2),
                };
                let noise = rng.below(60) as i64;
                pixels.push((if on { 200 } else { 30 } + noise - 30).clamp(0, 255) as u8);
            }
        }
        labels.push(class);
    }
    Dataset { shape: InputShape { channels: 1, height: SIDE, width: SIDE }, pixels, labels, source: "synthetic".into() }
}

fn config(spec: TowerSpec, loss: Loss, seed: u64) -> TrainConfig {
    TrainConfig {
        spec,
        loss,
        epochs: 3,
        batch: 32,
        lr: 3e-3,
        seed,
        pairs: 400,
        mean: vec![0.5],
        std: vec![0.25],
        dataset: "synthetic".into(),
        jitter: 1.0,
    }
}

fn run(cfg: &TrainConfig, data: &Dataset) -> Trained {
    train(cfg, data, &mut |_| {}).expect("training runs")
}

fn assert_parity(trained: &Trained, data: &Dataset) -> Model {
    let model = Model::from_bytes(&trained.to_onnx().unwrap(), "trained").unwrap();
    let idx: Vec<usize> = (0..data.len().min(256)).collect();
    let diff = parity(trained, &model, data, &idx).unwrap();
    assert!(diff <= 1e-4, "tract and candle differ by {diff}");
    model
}

#[test]
fn seed_tower_exports_what_it_trained_and_learns() {
    let data = synthetic(40, 1);
    let spec = TowerSpec::seed(InputShape { channels: 1, height: SIDE, width: SIDE });
    for loss in [Loss::Bce, Loss::Mse, Loss::Contrastive { margin: 1.0 }] {
        let trained = run(&config(spec.clone(), loss, 7), &data);
        assert_eq!(trained.history.len(), 3);
        let model = assert_parity(&trained, &data);
        let first = trained.history[0].loss;
        let last = trained.history.last().unwrap().loss;
        assert!(last < first, "{}: loss did not fall ({first} -> {last})", loss.name());
        let best = trained.history.iter().map(|e| e.val_accuracy).fold(0.0, f64::max);
        assert!(best > 0.6, "{}: best validation accuracy {best}", loss.name());
        assert_eq!(model.meta().provenance.loss, loss.name());
        assert!(model.meta().head.b > 0.0);
    }
}

#[test]
fn batch_norm_tower_with_l2_output_and_triplet_loss_keeps_parity() {
    let data = synthetic(30, 2);
    let spec = TowerSpec::compact(InputShape { channels: 1, height: SIDE, width: SIDE }, 8).normalized();
    assert_eq!(spec.name, "compact-l2");
    let trained = run(&config(spec, Loss::Triplet { margin: 0.5 }, 3), &data);
    let model = assert_parity(&trained, &data);
    assert!(model.meta().l2_normalized);
}

#[test]
fn same_seed_same_model_other_seed_other_model() {
    let data = synthetic(20, 3);
    let spec = TowerSpec::seed(InputShape { channels: 1, height: SIDE, width: SIDE });
    let a = run(&config(spec.clone(), Loss::Bce, 11), &data);
    let b = run(&config(spec.clone(), Loss::Bce, 11), &data);
    let c = run(&config(spec, Loss::Bce, 12), &data);
    assert_eq!(a.to_onnx().unwrap(), b.to_onnx().unwrap());
    assert_ne!(a.weights, c.weights);
}

#[test]
fn views_losses_train_on_labelled_data_reproducibly_and_need_a_normalised_tower() {
    let data = synthetic(30, 4);
    let spec = TowerSpec::compact(InputShape { channels: 1, height: SIDE, width: SIDE }, 8);
    for loss in [Loss::InfoNce { temperature: 0.1 }, Loss::SupCon { temperature: 0.1 }] {
        let err = train(&config(spec.clone(), loss, 5), &data, &mut |_| {}).unwrap_err().to_string();
        assert!(err.contains("L2-normalised"), "{err}");
        let trained = run(&config(spec.clone().normalized(), loss, 5), &data);
        let again = run(&config(spec.clone().normalized(), loss, 5), &data);
        assert_eq!(trained.to_onnx().unwrap(), again.to_onnx().unwrap(), "{}: seeded views", loss.name());
        let model = assert_parity(&trained, &data);
        assert_eq!(model.meta().provenance.loss, loss.name());
        let first = trained.history[0].loss;
        assert!(
            trained.history.iter().all(|e| e.loss.is_finite()) && trained.history[2].loss < first,
            "{}",
            loss.name()
        );
    }
}

#[test]
fn a_projection_head_is_trained_but_left_out_of_the_model() {
    let data = synthetic(30, 5);
    let spec = TowerSpec::compact_projected(InputShape { channels: 1, height: SIDE, width: SIDE }, 8);
    let features = spec.embedding_dim().unwrap();
    assert_eq!(features, 64 * 3 * 3, "64 channels averaged on a 3x3 grid of 12x12 images");
    for loss in [Loss::SupCon { temperature: 0.1 }, Loss::Bce] {
        let trained = run(&config(spec.clone(), loss, 5), &data);
        let model = assert_parity(&trained, &data);
        assert_eq!(model.meta().embedding_dim, features, "{}: the head's 8 values are not the embedding", loss.name());
        assert!(model.meta().l2_normalized);
        let best = trained.history.iter().map(|e| e.val_accuracy).fold(0.0, f64::max);
        assert!(best > 0.6, "{}: best validation accuracy {best}", loss.name());
        assert!(model.meta().head.b > 0.0, "{}: head fitted on the embedding's distances", loss.name());
    }
}
