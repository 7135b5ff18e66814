//! Walking folders and bringing an index up to date: new and changed files are embedded (in
//! parallel, a batch at a time, so memory stays flat), unchanged ones keep their embedding, and
//! vanished ones are dropped. Every file that cannot be read or decoded becomes an error record;
//! the scan always finishes.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::UNIX_EPOCH;

use rayon::prelude::*;
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};
use crate::index::{Entry, Index};
use crate::preprocess::{decode_bytes, read_limited, write_input};
use crate::Model;

/// Where to look and how.
#[derive(Debug, Clone, Default)]
pub struct WalkOptions {
    /// Follow symbolic links (loops are detected and reported, not followed forever).
    pub follow_links: bool,
}

/// Every regular file under `roots` (a root may itself be a file), sorted and without
/// repeats, and the errors met on the way (unreadable folders, link loops).
pub fn collect_files(roots: &[PathBuf], options: &WalkOptions) -> (Vec<PathBuf>, Vec<Error>) {
    let (mut files, mut errors) = (Vec::new(), Vec::new());
    for root in roots {
        for item in walkdir::WalkDir::new(root).follow_links(options.follow_links) {
            match item {
                Ok(e) if e.file_type().is_file() => files.push(e.into_path()),
                Ok(_) => {}
                Err(e) => {
                    let path = e.path().unwrap_or(root).to_path_buf();
                    let source = e.into_io_error().unwrap_or_else(|| std::io::Error::other("symbolic link loop"));
                    errors.push(Error::io(path, source));
                }
            }
        }
    }
    files.sort();
    files.dedup();
    (files, errors)
}

/// Size and modification time, the cheap test of whether a file changed.
fn stat(path: &Path) -> Result<(u64, u128)> {
    let meta = std::fs::metadata(path).map_err(|e| Error::io(path, e))?;
    let modified = meta.modified().ok().and_then(|t| t.duration_since(UNIX_EPOCH).ok()).map_or(0, |d| d.as_nanos());
    Ok((meta.len(), modified))
}

/// What [`update`] did.
#[derive(Debug, Default)]
pub struct UpdateReport {
    /// Files embedded now.
    pub embedded: usize,
    /// Files whose entry was kept as it was.
    pub unchanged: usize,
    /// Entries dropped because their file is gone (or no longer among the files).
    pub removed: usize,
    /// Files that are not images (unrecognised content and no image extension): skipped
    /// without an error, as a folder of photos often holds other files too.
    pub not_images: usize,
    /// Files that could not be used, one error each.
    pub errors: Vec<Error>,
    /// Whether `stop` cut the work short (what was embedded until then is kept).
    pub stopped: bool,
}

/// Brings `index` up to date with `files`: entries of files that are gone are dropped, a file
/// whose size and modification time match its entry keeps it, and the rest are read, hashed,
/// decoded and embedded, `batch` at a time. `progress(done, total)` is called after each batch;
/// setting `stop` ends the work after the current batch.
pub fn update(
    index: &mut Index,
    files: &[PathBuf],
    model: &Model,
    batch: usize,
    stop: &AtomicBool,
    progress: &(dyn Fn(usize, usize) + Sync),
) -> UpdateReport {
    let mut report = UpdateReport::default();
    let mut old: HashMap<PathBuf, Entry> = index.entries.drain(..).map(|e| (e.path.clone(), e)).collect();
    let mut todo = Vec::new();
    for path in files {
        match stat(path) {
            Ok((size, modified_ns)) => match old.remove(path) {
                Some(e) if e.size == size && e.modified_ns == modified_ns => {
                    index.entries.push(e);
                    report.unchanged += 1;
                }
                _ => todo.push((path.clone(), size, modified_ns)),
            },
            Err(e) => report.errors.push(e),
        }
    }
    report.removed = old.len();
    let total = todo.len();
    for (n, chunk) in todo.chunks(batch.max(1)).enumerate() {
        if stop.load(Ordering::Relaxed) {
            report.stopped = true;
            break;
        }
        for result in embed_chunk(chunk, model) {
            match result {
                Ok(entry) => {
                    index.entries.push(entry);
                    report.embedded += 1;
                }
                Err(Error::UnknownFormat { path }) if !has_image_extension(&path) => report.not_images += 1,
                Err(e) => report.errors.push(e),
            }
        }
        progress((n * batch.max(1) + chunk.len()).min(total), total);
    }
    index.entries.sort_by(|a, b| a.path.cmp(&b.path));
    report
}

/// Whether the name claims an image format: such a file is reported when its content is not
/// one, any other file is quietly passed over.
fn has_image_extension(path: &Path) -> bool {
    const IMAGE: [&str; 17] = [
        "jpg", "jpeg", "png", "gif", "webp", "bmp", "tif", "tiff", "pnm", "pbm", "pgm", "ppm", "ico", "tga", "qoi",
        "hdr", "jfif",
    ];
    path.extension().and_then(|e| e.to_str()).is_some_and(|e| IMAGE.iter().any(|x| x.eq_ignore_ascii_case(e)))
}

/// Reads, hashes, decodes and embeds one batch; decoding runs one file per task, the network
/// once for the batch.
fn embed_chunk(chunk: &[(PathBuf, u64, u128)], model: &Model) -> Vec<Result<Entry>> {
    let len = model.input_len();
    let decoded: Vec<Result<(Entry, Vec<f32>)>> = chunk
        .par_iter()
        .map(|(path, size, modified_ns)| {
            let limits = model.limits();
            let bytes = read_limited(path, limits)?;
            let sha256: [u8; 32] = Sha256::digest(&bytes).into();
            let img = decode_bytes(&bytes, path, limits)?;
            let mut input = vec![0f32; len];
            write_input(&img, model.meta(), &mut input);
            let entry = Entry {
                path: path.clone(),
                size: *size,
                modified_ns: *modified_ns,
                sha256,
                dims: (img.width(), img.height()),
                embedding: Vec::new(),
            };
            Ok((entry, input))
        })
        .collect();
    model
        .embed_prepared(decoded, |e| e.path.as_path())
        .into_iter()
        .map(|r| r.map(|(entry, embedding)| Entry { embedding, ..entry }))
        .collect()
}
