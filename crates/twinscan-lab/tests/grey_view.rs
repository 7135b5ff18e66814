//! The grey view of the bundled photo tower on the lab's augmentation suite.

use std::path::{Path, PathBuf};

use twinscan::Model;
use twinscan_lab::augment::{build_suite, grey_margin, load_photos, score, Score, Transform};

fn repository() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The bundled photo model carries a grey view. On a suite built from the example photos (which
/// neither training nor calibration saw), at its shipped margin, every grey copy is found and
/// no false positive is added to the colour view's, through `Model::distance`; and whatever
/// margin `grey_margin` picks on that suite finds more pairs with no more false positives.
#[test]
fn the_grey_view_finds_grey_copies_without_adding_false_positives() {
    let model = Model::open(repository().join("models/photo.onnx")).unwrap();
    let threshold = model.meta().threshold;
    let shipped = model.meta().grey_margin.expect("the bundled model has a grey view");
    assert!(shipped > 0.0 && shipped < threshold, "shipped margin {shipped}");
    let (photos, errors) = load_photos(&repository().join("examples/photos"), 256, 128).unwrap();
    assert!(errors.iter().all(|e| e.to_string().contains("SOURCES.md")), "{errors:?}");
    let originals: Vec<_> = photos.iter().filter(|p| !p.key.contains('-')).collect();
    let suite = build_suite(&originals, 2, 7);
    let images: Vec<_> = suite.iter().map(|s| image::DynamicImage::ImageRgb8(s.image.clone())).collect();
    let scored = |m: &Model| {
        let e = m.embed_images(&images).unwrap();
        score(&suite, &|i, j| m.distance(&e[i], &e[j]).unwrap(), threshold, false)
    };
    let grey = |s: &Score| s.per_kind.iter().find(|(t, _)| *t == Transform::Grey).map_or(0.0, |k| k.1);
    let (colour, both) = (scored(&model.clone().with_grey_margin(None)), scored(&model));
    assert_eq!(grey(&both), 1.0, "grey copies found: {both:?}");
    assert!(both.overall.tp >= colour.overall.tp && both.overall.fp <= colour.overall.fp, "{colour:?} / {both:?}");
    if let Some(margin) = grey_margin(&model, &suite).unwrap() {
        assert!((0.0..=0.5 * threshold).contains(&margin), "margin {margin}");
        let picked = scored(&model.clone().with_grey_margin(Some(margin))).overall;
        assert!(picked.tp > colour.overall.tp && picked.fp <= colour.overall.fp, "{colour:?} / {picked:?}");
    }
}
