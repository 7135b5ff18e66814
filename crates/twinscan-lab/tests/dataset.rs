//! IDX loading (raw and gzipped), refusal of corrupt files, and the study's pairs.

use std::io::Write;
use std::path::Path;

use twinscan_lab::dataset::{load_idx_dir, make_pairs, read_idx_images, read_idx_labels, Split};
use twinscan_lab::Error;

fn idx(ndims: u8, dims: &[u32], data: &[u8]) -> Vec<u8> {
    let mut out = vec![0, 0, 8, ndims];
    for d in dims {
        out.extend_from_slice(&d.to_be_bytes());
    }
    out.extend_from_slice(data);
    out
}

fn gz(bytes: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

fn write_set(dir: &Path, prefix: &str, n: u32, labels: u32, gzip: bool) {
    let images = idx(3, &[n, 2, 3], &(0..n * 6).map(|v| v as u8).collect::<Vec<_>>());
    let labels = idx(1, &[labels], &(0..labels).map(|v| (v % 3) as u8).collect::<Vec<_>>());
    let (images, labels, ext) = if gzip { (gz(&images), gz(&labels), ".gz") } else { (images, labels, "") };
    std::fs::write(dir.join(format!("{prefix}-images-idx3-ubyte{ext}")), images).unwrap();
    std::fs::write(dir.join(format!("{prefix}-labels-idx1-ubyte{ext}")), labels).unwrap();
}

#[test]
fn raw_and_gzipped_idx_load_the_same() {
    let dir = tempfile::tempdir().unwrap();
    write_set(dir.path(), "train", 5, 5, false);
    write_set(dir.path(), "t10k", 5, 5, true);
    let a = load_idx_dir(dir.path(), Split::Train).unwrap();
    let b = load_idx_dir(dir.path(), Split::Test).unwrap();
    assert_eq!(a.len(), 5);
    assert_eq!((a.shape.height, a.shape.width), (2, 3));
    assert_eq!(a.pixels, b.pixels);
    assert_eq!(a.labels, vec![0, 1, 2, 0, 1]);
}

fn dataset_error(e: Error) -> (std::path::PathBuf, String) {
    match e {
        Error::Dataset { path, reason } => (path, reason),
        other => panic!("expected a dataset error, got {other}"),
    }
}

#[test]
fn corrupt_files_are_refused_naming_file_and_problem() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let bad_magic = d.join("bad-magic");
    std::fs::write(&bad_magic, [0x89, b'P', b'N', b'G', 0, 0, 0, 0]).unwrap();
    let (path, reason) = dataset_error(read_idx_images(&bad_magic).unwrap_err());
    assert_eq!(path, bad_magic);
    assert!(reason.contains("magic"), "{reason}");

    let truncated = d.join("truncated");
    let mut bytes = idx(3, &[4, 2, 2], &[0; 16]);
    bytes.truncate(bytes.len() - 3);
    std::fs::write(&truncated, bytes).unwrap();
    let (_, reason) = dataset_error(read_idx_images(&truncated).unwrap_err());
    assert!(reason.contains("truncated"), "{reason}");

    let short_header = d.join("short-header");
    std::fs::write(&short_header, [0, 0, 8, 3, 0, 0]).unwrap();
    assert!(read_idx_images(&short_header).is_err());

    let labels_as_images = d.join("labels");
    std::fs::write(&labels_as_images, idx(1, &[3], &[1, 2, 3])).unwrap();
    assert!(read_idx_images(&labels_as_images).is_err());
    assert_eq!(read_idx_labels(&labels_as_images).unwrap(), vec![1, 2, 3]);

    let bad_gzip = d.join("bad.gz");
    std::fs::write(&bad_gzip, [0x1f, 0x8b, 8, 0, 1, 2, 3]).unwrap();
    let (_, reason) = dataset_error(read_idx_labels(&bad_gzip).unwrap_err());
    assert!(reason.contains("gzip"), "{reason}");
}

#[test]
fn image_and_label_counts_must_agree() {
    let dir = tempfile::tempdir().unwrap();
    write_set(dir.path(), "train", 5, 4, false);
    let (path, reason) = dataset_error(load_idx_dir(dir.path(), Split::Train).unwrap_err());
    assert!(path.ends_with("train-labels-idx1-ubyte"));
    assert!(reason.contains("4 labels for 5 images"), "{reason}");
    let (_, reason) = dataset_error(load_idx_dir(dir.path(), Split::Test).unwrap_err());
    assert!(reason.contains("t10k-images-idx3-ubyte"), "{reason}");
}

#[test]
fn pairs_are_balanced_seeded_and_correctly_labelled() {
    let labels: Vec<u32> = (0..500).map(|i| (i * 7 % 10) as u32).collect();
    let pairs = make_pairs(&labels, 1000, 3);
    assert_eq!(pairs, make_pairs(&labels, 1000, 3));
    assert_ne!(pairs, make_pairs(&labels, 1000, 4));
    let split = 700;
    for part in [&pairs[..split], &pairs[split..]] {
        let similar = part.iter().filter(|p| p.similar).count();
        assert_eq!(similar * 2, part.len(), "balanced in both the training and the validation part");
    }
    for p in &pairs {
        assert_eq!(labels[p.a] == labels[p.b], p.similar);
        assert!(!p.similar || p.a != p.b);
    }
    assert!(make_pairs(&[1, 1, 1], 10, 0).is_empty(), "one label cannot make dissimilar pairs");
}
