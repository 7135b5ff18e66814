//! Every model in `models/` loads through the runtime's validation and, for the MNIST models,
//! tells the example digits apart: the bundled files keep working as the runtime changes.

use std::path::{Path, PathBuf};

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
            ["seven-a.png", "seven-b.png", "one.png"].map(|n| model.embed_file(&digit(n)).unwrap());
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
        let e: Vec<_> = names.iter().map(|n| model.embed_file(&photo(n)).unwrap()).collect();
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
