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
