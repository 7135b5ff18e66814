//! What each fuzz target runs on its input, shared with the regression test
//! (`tests/fuzz_regressions.rs`), which replays every input kept in `fuzz/regressions/`.
//! Every function must return (an `Err` is fine) for every input: a panic, an abort or a hang is
//! a bug.
// Each target uses one of these functions.
#![allow(dead_code)]

use std::collections::HashMap;
use std::path::Path;

use sha2::{Digest, Sha256};
use twinscan::gallery::{Gallery, GALLERY_VERSION};
use twinscan::index::{Index, INDEX_VERSION};
use twinscan::tower::{self, InputShape, ModelMeta, TowerSpec};
use twinscan::DecodeLimits;

/// Limits small enough that the fuzzer's memory cap is never the reason a run stops.
fn limits() -> DecodeLimits {
    DecodeLimits {
        max_file_bytes: 1 << 20,
        max_side: 4096,
        max_pixels: 4_000_000,
        max_alloc: 256 << 20,
        ..Default::default()
    }
}

fn meta(channels: usize, side: usize) -> ModelMeta {
    let spec = TowerSpec::seed(InputShape { channels, height: side, width: side });
    tower::untrained_meta(&spec).expect("a valid tower")
}

/// Decoding and preprocessing an image file, for a grey 28-pixel and an RGB 64-pixel model.
pub fn decode_image(data: &[u8]) {
    for m in [meta(1, 28), meta(3, 64)] {
        if let Ok(decoded) = twinscan::decode_for_model(data, Path::new("fuzz.img"), &limits(), &m) {
            let _ = decoded;
        }
    }
}

/// The file a store would write for `payload` (magic, version, checksum), so that the fuzzer
/// reaches the payload's parser and not only the checksum test.
fn framed(magic: &[u8; 8], version: u32, payload: &[u8]) -> Vec<u8> {
    let mut out = magic.to_vec();
    out.extend(version.to_le_bytes());
    out.extend(Sha256::digest(payload));
    out.extend(payload);
    out
}

/// Loading an index: the input as a whole file when its first byte is even, else as the payload
/// of a file with a valid header.
pub fn load_index(data: &[u8]) {
    let path = Path::new("fuzz.twinscan");
    let _ = match data.split_first() {
        Some((b, rest)) if b & 1 == 1 => Index::from_bytes(&framed(b"TWSCNIDX", INDEX_VERSION, rest), path),
        _ => Index::from_bytes(data, path),
    };
}

/// Loading a gallery, as [`load_index`] does.
pub fn load_gallery(data: &[u8]) {
    let path = Path::new("fuzz.twg");
    let _ = match data.split_first() {
        Some((b, rest)) if b & 1 == 1 => Gallery::from_bytes(&framed(b"TWSCNGAL", GALLERY_VERSION, rest), path),
        _ => Gallery::from_bytes(data, path),
    };
}

/// Parsing a model's metadata: the input as `key=value` lines, the properties an ONNX file
/// carries; a parsed one is used the way the runtime uses it.
pub fn model_meta(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let props: HashMap<String, String> =
        text.lines().filter_map(|l| l.split_once('=')).map(|(k, v)| (k.to_string(), v.to_string())).collect();
    if let Ok(meta) = ModelMeta::from_properties("fuzz", &props) {
        let _ = meta.probability(meta.threshold);
        let _ = meta.to_properties();
    }
}
