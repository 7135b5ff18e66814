//! The unseen-class protocol on a synthetic data set whose classes are easy to tell apart, with
//! an untrained tower: the plumbing must find what is plainly there, and repeat itself exactly.

use twinscan::tower::{self, InputShape, SplitMix64, TowerSpec, TowerWeights};
use twinscan::Model;
use twinscan_lab::dataset::Dataset;
use twinscan_lab::unseen::{run, Protocol};

const SIDE: usize = 12;

/// `per` noisy images of each of four classes: class c is a bright 6x6 square in quadrant c.
fn data(per: usize, seed: u64) -> Dataset {
    let mut rng = SplitMix64::new(seed);
    let (mut pixels, mut labels) = (Vec::new(), Vec::new());
    for i in 0..4 * per {
        let c = (i % 4) as u32;
        let (qy, qx) = ((c as usize / 2) * 6, (c as usize % 2) * 6);
        for y in 0..SIDE {
            for x in 0..SIDE {
                let inside = (qy..qy + 6).contains(&y) && (qx..qx + 6).contains(&x);
                let noise = rng.below(40) as u8;
                pixels.push(if inside { 200 + noise } else { noise });
            }
        }
        labels.push(c);
    }
    Dataset { shape: InputShape { channels: 1, height: SIDE, width: SIDE }, pixels, labels, source: "synthetic".into() }
}

fn model() -> Model {
    let spec = TowerSpec::seed(InputShape { channels: 1, height: SIDE, width: SIDE });
    let bytes =
        tower::write_onnx(&spec, &TowerWeights::seeded(&spec, 3).unwrap(), &tower::untrained_meta(&spec).unwrap())
            .unwrap();
    Model::from_bytes(&bytes, "untrained").unwrap()
}

#[test]
fn separable_unseen_classes_are_found_and_runs_repeat() {
    let (train, test) = (data(30, 1), data(10, 2));
    let protocol = Protocol { classes: vec![2, 3], pairs: 400, trials: 2, ..Protocol::default() };
    let m = model();
    let report = run(&m, &train, &test, &protocol).unwrap();
    assert_eq!(report, run(&m, &train, &test, &protocol).unwrap(), "same seed, same report");

    let v = report.verification;
    assert_eq!(v.pairs, 400);
    assert!(v.auc > 0.95 && v.eer < 0.1 && v.tar_at_far_1 > 0.5, "{v:?}");
    assert!(v.tar_at_far_01 <= v.tar_at_far_1 && (0.0..=1.0).contains(&v.accuracy));
    assert_eq!(report.identification.iter().map(|r| r.enrolled).collect::<Vec<_>>(), [1, 5]);
    // Classes 0 and 1 are seen: their pairs set the strict threshold at 1% false accepts.
    let strict = v.strict.expect("a seen class to calibrate on");
    assert!(strict.threshold > 0.0 && (0.0..=1.0).contains(&strict.tar) && (0.0..=1.0).contains(&strict.far));
    for r in &report.identification {
        assert!(r.top1 > 0.9, "{r:?}");
        let s = r.strict.expect("strict open set");
        assert_eq!(s.threshold, strict.threshold);
        assert_eq!(r.open.threshold, m.meta().threshold);
        for o in [r.open, s] {
            assert!((0.0..=1.0).contains(&o.unknown_rejected) && (0.0..=1.0).contains(&o.known_accepted), "{r:?}");
        }
        // A stricter threshold rejects at least as many unknown probes.
        if s.threshold <= r.open.threshold {
            assert!(s.unknown_rejected >= r.open.unknown_rejected, "{r:?}");
        }
    }
    assert_eq!(report.anomaly.iter().map(|a| a.class).collect::<Vec<_>>(), [2, 3]);
    for a in &report.anomaly {
        assert_eq!(a.pixel_auroc, 1.0, "{a:?}");
        assert!(a.model_auroc > 0.9, "{a:?}");
    }
    let (model_mean, pixel_mean) = report.mean_auroc();
    assert!(model_mean > 0.9 && pixel_mean == 1.0);
}

#[test]
fn a_class_without_images_is_refused() {
    let (train, test) = (data(5, 1), data(5, 2));
    let protocol = Protocol { classes: vec![2, 7], ..Protocol::default() };
    let err = run(&model(), &train, &test, &protocol).unwrap_err().to_string();
    assert!(err.contains("each of at least two classes"), "{err}");
}
