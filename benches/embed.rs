//! Embedding throughput of tract on the study's tower (1x28x28) and the photo-sized tower
//! (3x96x96), for batch sizes 1, 32 and 128 on 1 and 2 threads.
//!
//! Writes the two ONNX files and the input tensor under `bench-out/`, prints one JSON line per
//! configuration. `scripts/bench-embed.sh` runs this and onnxruntime on the same files, inputs and
//! thread counts in one go, and prints the table with the ratio.
//!
//! `cargo bench --bench embed [-- --images N]`

use std::time::Instant;

use rayon::prelude::*;
use twinscan::tower::{self, InputShape, SplitMix64, TowerSpec, TowerWeights};
use twinscan::Model;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let images: usize = args
        .iter()
        .position(|a| a == "--images")
        .and_then(|i| args.get(i + 1))
        .and_then(|s| s.parse().ok())
        .unwrap_or(1024);
    let out = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("bench-out");
    std::fs::create_dir_all(&out).expect("create bench-out/");
    let towers = [
        ("seed-28", TowerSpec::seed(InputShape { channels: 1, height: 28, width: 28 }), images),
        ("compact-96", TowerSpec::compact(InputShape { channels: 3, height: 96, width: 96 }, 128), images / 4),
    ];
    for (name, spec, n) in towers {
        let weights = TowerWeights::seeded(&spec, 1).expect("weights");
        let bytes = tower::write_onnx(&spec, &weights, &tower::untrained_meta(&spec).expect("meta")).expect("onnx");
        std::fs::write(out.join(format!("{name}.onnx")), &bytes).expect("write model");
        let model = Model::from_bytes(&bytes, name).expect("load");
        let len = model.input_len();
        let mut rng = SplitMix64::new(9);
        let input: Vec<f32> = (0..n * len).map(|_| rng.next_f32()).collect();
        let raw: Vec<u8> = input.iter().flat_map(|v| v.to_le_bytes()).collect();
        std::fs::write(out.join(format!("{name}.input.f32")), raw).expect("write input");
        for threads in [1, 2] {
            let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().expect("pool");
            for batch in [1, 32, 128] {
                let run = || {
                    pool.install(|| {
                        input.par_chunks(batch * len).for_each(|chunk| {
                            model.run_batch(chunk, chunk.len() / len).expect("run");
                        })
                    })
                };
                run(); // warm-up: first-call allocations and page faults
                let reps = 3;
                let start = Instant::now();
                for _ in 0..reps {
                    run();
                }
                let per_sec = (reps * n) as f64 / start.elapsed().as_secs_f64();
                println!(
                    "{{\"runtime\":\"tract\",\"tower\":\"{name}\",\"batch\":{batch},\"threads\":{threads},\"images\":{n},\"per_sec\":{per_sec:.1}}}"
                );
            }
        }
    }
}
