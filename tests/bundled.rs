//! Every model in `models/` loads through the runtime's validation and, for the MNIST models,
//! tells the example digits apart: the bundled files keep working as the runtime changes.

mod common;

use std::path::{Path, PathBuf};

use image::GenericImageView;
use twinscan::Model;

fn bundled() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("models");
    let mut models: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("models/ exists")
        .map(|e| e.expect("readable entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "onnx"))
        .collect();
    models.sort();
    models
}

#[test]
fn bundled_models_load_with_their_provenance_and_card() {
    let models = bundled();
    assert!(!models.is_empty(), "no bundled models");
    for path in models {
        let model = Model::open(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let p = &model.meta().provenance;
        assert!(!p.tower.is_empty() && !p.dataset.is_empty() && p.epochs > 0, "{}: provenance", path.display());
        assert!(model.meta().threshold > 0.0, "{}: threshold", path.display());
        assert!(path.with_extension("md").exists(), "{}: no model card", path.display());
    }
}

#[test]
fn mnist_models_tell_the_example_digits_apart() {
    let digit = |name: &str| Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/digits").join(name);
    for path in
        bundled().into_iter().filter(|p| p.file_name().is_some_and(|n| n.to_string_lossy().starts_with("mnist-")))
    {
        let model = Model::open(&path).unwrap();
        let [seven_a, seven_b, one] =
            ["seven-a.png", "seven-b.png", "one.png"].map(|n| model.embed_file(digit(n)).unwrap());
        assert!(model.compare(&seven_a, &seven_b).unwrap().similar, "{}: two sevens", path.display());
        assert!(!model.compare(&seven_a, &one).unwrap().similar, "{}: a seven and a one", path.display());
    }
}

#[test]
fn photo_models_match_the_example_copies_and_only_them() {
    let photo = |name: &str| Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/photos").join(name);
    let names = ["coffee.jpg", "coffee-edited.jpg", "astronaut.jpg", "astronaut-framed.jpg", "chelsea.jpg"];
    let copies = [(0, 1), (2, 3)];
    for path in
        bundled().into_iter().filter(|p| p.file_name().is_some_and(|n| n.to_string_lossy().starts_with("photo")))
    {
        let model = Model::open(&path).unwrap();
        let e: Vec<_> = names.iter().map(|n| model.embed_file(photo(n)).unwrap()).collect();
        for i in 0..e.len() {
            for j in i + 1..e.len() {
                let c = model.compare(&e[i], &e[j]).unwrap();
                let want = copies.contains(&(i, j));
                assert_eq!(
                    c.similar,
                    want,
                    "{}: {} vs {} at distance {}",
                    path.display(),
                    names[i],
                    names[j],
                    c.distance
                );
            }
        }
    }
}

/// A full-size photo decoded for the photo model comes out smaller but embeds like its full
/// decode; EXIF orientation still applies; a small one decodes whole.
#[test]
fn large_jpegs_decode_scaled_and_embed_as_when_decoded_whole() {
    let model = Model::open(Path::new(env!("CARGO_MANIFEST_DIR")).join("models/photo.onnx")).unwrap();
    let (meta, limits) = (model.meta(), model.limits());
    let jpeg = |img: &image::RgbImage| {
        let mut bytes = Vec::new();
        img.write_to(&mut std::io::Cursor::new(&mut bytes), image::ImageFormat::Jpeg).unwrap();
        bytes
    };
    let photo = common::busy_picture(2048, 1536, 7);
    let bytes = jpeg(&photo);
    let scaled = twinscan::decode_for_model(&bytes, "photo.jpg", limits, meta).unwrap();
    assert_eq!(scaled.full_size, (2048, 1536));
    assert!(
        scaled.image.width() < 2048 && scaled.image.width() >= 4 * meta.input.width as u32,
        "{:?}",
        scaled.image.dimensions()
    );
    let whole = twinscan::decode_bytes(&bytes, "photo.jpg", limits).unwrap();
    assert_eq!((whole.width(), whole.height()), (2048, 1536));
    let d = model.distance(&model.embed_image(&scaled.image).unwrap(), &model.embed_image(&whole).unwrap()).unwrap();
    assert!(d < 0.2 * meta.threshold, "scaled decode moved the embedding {d}, threshold {}", meta.threshold);

    let tagged = common::with_exif_orientation(&jpeg(&image::imageops::rotate270(&photo)), 6);
    let turned = twinscan::decode_for_model(&tagged, "tagged.jpg", limits, meta).unwrap();
    assert_eq!(turned.full_size, (2048, 1536));
    assert_eq!(turned.image.dimensions(), scaled.image.dimensions());

    let small = common::busy_picture(400, 300, 7);
    let decoded = twinscan::decode_for_model(&jpeg(&small), "small.jpg", limits, meta).unwrap();
    assert_eq!((decoded.full_size, decoded.image.dimensions()), ((400, 300), (400, 300)));
}
