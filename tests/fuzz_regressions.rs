//! Replays every input kept in `fuzz/regressions/<target>/` (crashes the fuzzers found, after
//! the fix) through the fuzz targets' own code (`fuzz/harness.rs`), plus a few hostile inputs
//! of each kind, so a fixed crash stays fixed without a nightly toolchain.

#[path = "../fuzz/harness.rs"]
mod harness;

use std::path::Path;

type Target = fn(&[u8]);

const TARGETS: [(&str, Target); 4] = [
    ("decode_image", harness::decode_image),
    ("load_index", harness::load_index),
    ("load_gallery", harness::load_gallery),
    ("model_meta", harness::model_meta),
];

#[test]
fn every_kept_fuzz_input_runs_to_an_answer() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/regressions");
    let mut replayed = 0;
    for (name, target) in TARGETS {
        let Ok(dir) = std::fs::read_dir(root.join(name)) else { continue };
        for entry in dir {
            let path = entry.expect("readable regressions folder").path();
            target(&std::fs::read(&path).expect("readable regression input"));
            replayed += 1;
        }
    }
    eprintln!("{replayed} regression inputs replayed");
}

#[test]
fn hostile_inputs_of_every_kind_run_to_an_answer() {
    let png = std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/digits/one.png")).unwrap();
    let mut inputs: Vec<Vec<u8>> = vec![vec![], vec![0], vec![1], vec![0xff; 100], b"TWSCNIDX".to_vec()];
    inputs.extend((1..png.len()).step_by(7).map(|n| png[..n].to_vec()));
    // Payloads behind a valid header (odd first byte): length prefixes claiming billions.
    inputs.push([&[1u8][..], &[0xff, 0xff, 0xff, 0xff, 0x0f], &[0xff; 20]].concat());
    inputs.push(b"twinscan.format=1\ntwinscan.input.height=99999999999999999999\n".to_vec());
    for (_, target) in TARGETS {
        for input in &inputs {
            target(input);
        }
    }
}
