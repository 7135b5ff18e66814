//! Shared fixtures: the golden towers and helpers to write models and images into a temp dir.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use twinscan::tower::{self, InputShape, Layer, ParamKind, SplitMix64, TowerSpec, TowerWeights};

/// The golden towers: together they use every layer kind the writer knows.
pub fn golden_specs() -> Vec<TowerSpec> {
    let conv = |out_channels, stride| Layer::Conv2d { out_channels, kernel: 3, stride, padding: 1 };
    vec![
        TowerSpec { name: "golden-seed".into(), ..TowerSpec::seed(InputShape { channels: 1, height: 8, width: 8 }) },
        TowerSpec {
            name: "golden-photo".into(),
            input: InputShape { channels: 3, height: 12, width: 12 },
            layers: vec![
                conv(4, 1),
                Layer::BatchNorm { eps: 1e-5 },
                Layer::Relu,
                Layer::MaxPool2d { kernel: 2, stride: 2 },
                conv(6, 2),
                Layer::Relu,
                Layer::GlobalAvgPool,
                Layer::Flatten,
                Layer::Linear { out_features: 5 },
                Layer::BatchNorm { eps: 1e-3 },
                Layer::Relu,
                Layer::Linear { out_features: 4 },
                Layer::L2Normalize,
            ],
            head: 0,
        },
        TowerSpec {
            name: "golden-avg".into(),
            input: InputShape { channels: 1, height: 12, width: 12 },
            layers: vec![
                conv(4, 1),
                Layer::Relu,
                Layer::AvgPool2d { kernel: 2, stride: 2 },
                // Overlapping windows, and a last row and column that no window reaches.
                Layer::AvgPool2d { kernel: 3, stride: 2 },
                Layer::Flatten,
                Layer::L2Normalize,
            ],
            head: 0,
        },
    ]
}

/// Fixed weights with non-trivial batch-norm statistics, so every parameter matters.
pub fn golden_weights(spec: &TowerSpec) -> TowerWeights {
    let mut w = TowerWeights::seeded(spec, 20261130).expect("valid golden tower");
    let mut rng = SplitMix64::new(42);
    for (p, t) in spec.params().expect("valid golden tower").iter().zip(&mut w.tensors) {
        for v in t.iter_mut() {
            let r = rng.next_f32();
            *v = match p.kind {
                ParamKind::Weight => *v,
                ParamKind::Bias | ParamKind::Beta | ParamKind::RunningMean => r - 0.5,
                ParamKind::Gamma | ParamKind::RunningVar => 0.5 + r,
            };
        }
    }
    w
}

pub fn golden_bytes(spec: &TowerSpec) -> Vec<u8> {
    let meta = tower::untrained_meta(spec).expect("meta");
    tower::write_onnx(spec, &golden_weights(spec), &meta).expect("write")
}

pub fn golden_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden")
}

pub fn read_f32(path: &Path) -> Vec<f32> {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    bytes.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect()
}

pub fn write_f32(path: &Path, values: &[f32]) {
    let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    std::fs::write(path, bytes).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
}

/// A small seeded model on disk, for tests that need any valid model.
pub fn write_seed_model(dir: &Path) -> PathBuf {
    let spec = TowerSpec::seed(InputShape { channels: 1, height: 28, width: 28 });
    let bytes =
        tower::write_onnx(&spec, &TowerWeights::seeded(&spec, 3).unwrap(), &tower::untrained_meta(&spec).unwrap())
            .unwrap();
    let path = dir.join("seed.onnx");
    std::fs::write(&path, bytes).unwrap();
    path
}

/// A deterministic test picture: smooth gradients plus a seeded pattern.
pub fn picture(w: u32, h: u32, seed: u64) -> image::RgbImage {
    let mut rng = SplitMix64::new(seed);
    let (a, b, c) = (rng.next_f32() * 6.0, rng.next_f32() * 6.0, rng.next_f32() * 255.0);
    image::RgbImage::from_fn(w, h, |x, y| {
        let (u, v) = (x as f32 / w as f32, y as f32 / h as f32);
        image::Rgb([((u * a).sin() * 127.0 + 128.0) as u8, ((v * b).cos() * 127.0 + 128.0) as u8, ((u + v) * c) as u8])
    })
}

/// A deterministic picture with plenty of edges: seeded rectangles of seeded colours over a
/// gradient, like a busy photo at a distance.
pub fn busy_picture(w: u32, h: u32, seed: u64) -> image::RgbImage {
    let mut img = picture(w, h, seed);
    let mut rng = SplitMix64::new(seed ^ 0xb05);
    for _ in 0..60 {
        let (x0, y0) = (rng.below(w as usize) as u32, rng.below(h as usize) as u32);
        let (rw, rh) = (1 + rng.below(w as usize / 5) as u32, 1 + rng.below(h as usize / 5) as u32);
        let colour = image::Rgb([rng.below(256) as u8, rng.below(256) as u8, rng.below(256) as u8]);
        for y in y0..(y0 + rh).min(h) {
            for x in x0..(x0 + rw).min(w) {
                img.put_pixel(x, y, colour);
            }
        }
    }
    img
}

/// Inserts an APP1 EXIF segment with one Orientation entry right after the JPEG's SOI marker.
pub fn with_exif_orientation(jpeg: &[u8], orientation: u16) -> Vec<u8> {
    let mut tiff = Vec::new();
    tiff.extend_from_slice(b"MM\x00\x2a\x00\x00\x00\x08"); // big-endian TIFF header, IFD at 8
    tiff.extend_from_slice(&1u16.to_be_bytes()); // one entry
    tiff.extend_from_slice(&0x0112u16.to_be_bytes()); // Orientation
    tiff.extend_from_slice(&3u16.to_be_bytes()); // SHORT
    tiff.extend_from_slice(&1u32.to_be_bytes()); // count
    tiff.extend_from_slice(&orientation.to_be_bytes());
    tiff.extend_from_slice(&[0, 0]);
    tiff.extend_from_slice(&0u32.to_be_bytes()); // no next IFD
    let mut app1 = b"Exif\x00\x00".to_vec();
    app1.extend_from_slice(&tiff);
    let mut out = jpeg[..2].to_vec();
    out.extend_from_slice(&[0xFF, 0xE1]);
    out.extend_from_slice(&((app1.len() + 2) as u16).to_be_bytes());
    out.extend_from_slice(&app1);
    out.extend_from_slice(&jpeg[2..]);
    out
}
