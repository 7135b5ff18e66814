//! Mirror and rotation invariance: with it on, every orientation of an image matches it; with it
//! off, orientation matters.

mod common;

use image::{imageops, DynamicImage};
use twinscan::tower::{self, TowerSpec, TowerWeights};
use twinscan::{Invariance, Model};

fn photo_model() -> Model {
    let spec = TowerSpec::photo(16);
    let meta = tower::untrained_meta(&spec).unwrap();
    let bytes = tower::write_onnx(&spec, &TowerWeights::seeded(&spec, 5).unwrap(), &meta).unwrap();
    Model::from_bytes(&bytes, "photo-test").unwrap()
}

#[test]
fn every_orientation_matches_with_invariance_on() {
    let img = common::busy_picture(90, 70, 4);
    let copies = [
        imageops::flip_horizontal(&img),
        imageops::flip_vertical(&img),
        imageops::rotate90(&img),
        imageops::rotate180(&img),
        imageops::rotate270(&img),
    ];
    let plain = photo_model();
    let model = plain.clone().with_invariance(Invariance::MirrorRotate);
    assert_eq!(model.invariance(), Invariance::MirrorRotate);
    let base = model.embed_image(&DynamicImage::ImageRgb8(img.clone())).unwrap();
    assert_eq!(base.len(), 8 * 16, "one output per orientation");
    assert_eq!(model.embedding_len(), base.len());
    let other = model.embed_image(&DynamicImage::ImageRgb8(common::busy_picture(90, 70, 5))).unwrap();
    let apart = model.distance(&base, &other).unwrap();
    let mut plain_max = 0.0f32;
    for copy in &copies {
        let copy = DynamicImage::ImageRgb8(copy.clone());
        let d = model.distance(&base, &model.embed_image(&copy).unwrap()).unwrap();
        // Resampling a rotated picture is not bit-identical to rotating the resampled one.
        assert!(d < 0.02 && d < apart / 5.0, "invariant distance {d}, another picture {apart}");
        let p = plain.embed_image(&DynamicImage::ImageRgb8(img.clone())).unwrap();
        plain_max = plain_max.max(plain.distance(&p, &plain.embed_image(&copy).unwrap()).unwrap());
    }
    assert!(plain_max > 0.05, "without invariance orientation should matter (max distance {plain_max})");
}

/// A grey view: a grey copy is as near as the margin, the view comes last and survives the
/// model file, orientations and the grey view combine, and a one-channel model has none.
#[test]
fn a_grey_view_matches_grey_copies_at_its_margin() {
    let margin = 0.1;
    let colour = image::DynamicImage::ImageRgb8(common::busy_picture(90, 70, 4));
    let grey = image::DynamicImage::ImageRgb8(image::DynamicImage::ImageLuma8(colour.to_luma8()).to_rgb8());
    let plain = photo_model();
    let model = plain.clone().with_grey_margin(Some(margin));
    assert_eq!(model.embedding_len(), 2 * 16);
    let (a, b) = (model.embed_image(&colour).unwrap(), model.embed_image(&grey).unwrap());
    // Batches of different sizes run different plans: equal up to float rounding.
    let close = |x: &[f32], y: &[f32]| x.iter().zip(y).all(|(p, q)| (p - q).abs() < 1e-4);
    assert!(close(&a[..16], &plain.embed_image(&colour).unwrap()), "the colour view comes first");
    let colour_apart = plain.distance(&a[..16], &b[..16]).unwrap();
    let d = model.distance(&a, &b).unwrap();
    // Grey of grey is grey up to the copy's rounding to bytes.
    assert!((d - margin).abs() < 0.01 && d < colour_apart, "grey copy at {d}, colour views at {colour_apart}");
    assert_eq!(model.distance(&a, &a).unwrap(), 0.0);

    let both = plain.clone().with_invariance(Invariance::MirrorRotate).with_grey_margin(Some(margin));
    let e = both.embed_image(&colour).unwrap();
    assert_eq!(e.len(), 9 * 16);
    assert!(close(&e[8 * 16..], &a[16..]), "the grey view follows the orientations");

    let mut meta = plain.meta().clone();
    meta.grey_margin = Some(margin);
    let spec = TowerSpec::photo(16);
    let bytes = tower::write_onnx(&spec, &TowerWeights::seeded(&spec, 5).unwrap(), &meta).unwrap();
    let reread = Model::from_bytes(&bytes, "grey-test").unwrap();
    assert_eq!(reread.meta().grey_margin, Some(margin));
    assert_eq!(reread.embedding_len(), 2 * 16);

    let dir = tempfile::tempdir().unwrap();
    let one_channel = Model::open(common::write_seed_model(dir.path())).unwrap().with_grey_margin(Some(margin));
    assert_eq!(one_channel.meta().grey_margin, None);
}
