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

use crate::contain::Thumb;
use crate::error::{Error, Result};
use crate::index::{Entry, Index};
use crate::preprocess::read_limited;
use crate::thumbs::Thumbs;
use crate::Model;

/// Every regular file under `roots` (a root may itself be a file), sorted, and the errors met
/// on the way (unreadable folders, link loops). A file reached by several paths (overlapping
/// roots, `./lib` beside `lib`, a folder link followed, hard links) is listed once, so that it
/// can never be taken for its own copy: by its first path in order, a path that is not itself a
/// link first.
/// `follow_links`: whether symbolic links are followed (loops are detected and reported, not
/// followed forever).
pub fn collect_files(roots: &[impl AsRef<Path>], follow_links: bool) -> (Vec<PathBuf>, Vec<Error>) {
    let (mut found, mut errors) = (Vec::new(), Vec::new());
    for root in roots {
        let root = root.as_ref();
        for item in walkdir::WalkDir::new(root).follow_links(follow_links) {
            match item {
                Ok(e) if e.file_type().is_file() => {
                    let id = e.metadata().ok().and_then(|m| identity(&m));
                    let is_link = e.path_is_symlink();
                    found.push((id, is_link, e.into_path()));
                }
                Ok(_) => {}
                Err(e) => {
                    let path = e.path().unwrap_or(root).to_path_buf();
                    let source = e.into_io_error().unwrap_or_else(|| std::io::Error::other("symbolic link loop"));
                    errors.push(Error::io(path, source));
                }
            }
        }
    }
    found.sort_by(|a, b| (a.1, &a.2).cmp(&(b.1, &b.2)));
    let mut seen = std::collections::HashSet::new();
    let mut files: Vec<PathBuf> =
        found.into_iter().filter(|(id, _, _)| id.is_none_or(|id| seen.insert(id))).map(|(_, _, p)| p).collect();
    files.sort();
    files.dedup();
    (files, errors)
}

/// Device and inode: what makes two paths one file.
#[cfg(unix)]
fn identity(meta: &std::fs::Metadata) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    Some((meta.dev(), meta.ino()))
}

#[cfg(not(unix))]
fn identity(_: &std::fs::Metadata) -> Option<(u64, u64)> {
    None
}

/// How a collection is brought up to date ([`update`], [`crate::Collection::refresh`]).
#[derive(Clone, Copy)]
pub struct RefreshOptions<'a> {
    /// Follow symbolic links while walking and reading (loops are detected and reported);
    /// without, a file that became a link since the walk is refused rather than followed.
    pub follow_links: bool,
    /// Images decoded and embedded together (memory grows with it; the model caps it).
    pub batch: usize,
    /// Once set, the work ends after the current batch; what was embedded until then is kept.
    pub stop: Option<&'a AtomicBool>,
    /// Called as `progress(done, total)` after each batch (`total`: the files to embed).
    pub progress: Option<&'a (dyn Fn(usize, usize) + Sync)>,
    /// The search that keeps each image's nearest others up to date (see
    /// [`crate::neighbours`]); groups and outliers asked with another search find their own.
    pub search: crate::SearchKind,
}

impl Default for RefreshOptions<'_> {
    fn default() -> Self {
        RefreshOptions {
            follow_links: false,
            batch: crate::DEFAULT_BATCH * 4,
            stop: None,
            progress: None,
            search: crate::SearchKind::Auto,
        }
    }
}

impl std::fmt::Debug for RefreshOptions<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RefreshOptions")
            .field("follow_links", &self.follow_links)
            .field("batch", &self.batch)
            .field("stop", &self.stop)
            .field("progress", &self.progress.is_some())
            .field("search", &self.search)
            .finish()
    }
}

/// Size and modification time, the cheap test of whether a file changed.
fn stat(path: &Path, follow: bool) -> Result<(u64, u128)> {
    let meta = if follow { std::fs::metadata(path) } else { std::fs::symlink_metadata(path) };
    let meta = meta.map_err(|e| Error::io(path, e))?;
    let modified = meta.modified().ok().and_then(|t| t.duration_since(UNIX_EPOCH).ok()).map_or(0, |d| d.as_nanos());
    Ok((meta.len(), modified))
}

/// What a refresh ([`update`]) did.
#[derive(Debug, Default)]
pub struct RefreshReport {
    /// Files found (each file once, however many paths lead to it).
    pub files: usize,
    /// Files embedded now.
    pub embedded: usize,
    /// Files whose entry was kept as it was.
    pub unchanged: usize,
    /// Entries dropped because their file is gone (or no longer among the files).
    pub removed: usize,
    /// Files that are not images (unrecognised or empty content and no image extension): skipped
    /// without an error, as a folder of photos often holds other files too.
    pub not_images: usize,
    /// Files that could not be used, one error each.
    pub errors: Vec<Error>,
    /// Whether `stop` cut the work short (what was embedded until then is kept).
    pub stopped: bool,
}

/// Brings `index` up to date with `files`: entries of files that are gone are dropped, a file
/// whose size and modification time match its entry keeps it, and the rest are read, hashed,
/// decoded and embedded, `options.batch` at a time.
pub fn update(index: &mut Index, files: &[PathBuf], model: &Model, options: &RefreshOptions) -> RefreshReport {
    let mut report = RefreshReport { files: files.len(), ..RefreshReport::default() };
    let mut old: HashMap<PathBuf, Entry> = index.entries.drain(..).map(|e| (e.path.clone(), e)).collect();
    let mut todo = Vec::new();
    for path in files {
        match stat(path, options.follow_links) {
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
    // The network runs on its own thread while rayon decodes the next batch; taking turns
    // left a core idle through every network call.
    let (entries, thumbs, counts) = (&mut index.entries, &index.thumbs, &mut report);
    report.stopped = std::thread::scope(|s| {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        s.spawn(move || {
            let mut done = 0;
            for decoded in rx {
                let embedded = embed_decoded(decoded, model);
                done += embedded.len();
                for result in embedded {
                    match result {
                        Ok(entry) => {
                            entries.push(entry);
                            counts.embedded += 1;
                        }
                        // Empty markers (.nomedia, .gitkeep) are not images either.
                        Err(Error::UnknownFormat { path } | Error::EmptyImage { path })
                            if !has_image_extension(&path) =>
                        {
                            counts.not_images += 1
                        }
                        Err(e) => counts.errors.push(e),
                    }
                }
                if let Some(progress) = options.progress {
                    progress(done, total);
                }
            }
        });
        for chunk in todo.chunks(model.batch_for(options.batch)) {
            if options.stop.is_some_and(|stop| stop.load(Ordering::Relaxed)) {
                return true;
            }
            if tx.send(decode_chunk(chunk, model, options.follow_links, thumbs)).is_err() {
                break; // the network thread is gone; the scope re-raises its panic
            }
        }
        false
    });
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

/// Reads, hashes and decodes one batch into model inputs, one file per task; the thumbnails of
/// contents new to `thumbs` go there.
fn decode_chunk(
    chunk: &[(PathBuf, u64, u128)],
    model: &Model,
    follow: bool,
    thumbs: &Thumbs,
) -> Vec<Result<(Entry, Vec<f32>)>> {
    chunk
        .par_iter()
        .map(|(path, size, modified_ns)| {
            let bytes = read_limited(path, model.limits(), follow)?;
            let sha256: [u8; 32] = Sha256::digest(&bytes).into();
            let (input, decoded) = model.input_from_bytes(&bytes, path)?;
            let entry = Entry {
                path: path.clone(),
                size: *size,
                modified_ns: *modified_ns,
                sha256,
                dims: decoded.full_size,
                embedding: Vec::new(),
            };
            if !thumbs.contains(&sha256) {
                thumbs.insert(&sha256, Thumb::of(&decoded.image));
            }
            Ok((entry, input))
        })
        .collect()
}

/// Runs the network once over a decoded batch.
fn embed_decoded(decoded: Vec<Result<(Entry, Vec<f32>)>>, model: &Model) -> Vec<Result<Entry>> {
    model
        .embed_prepared(decoded, |e| e.path.as_path())
        .into_iter()
        .map(|r| r.map(|(entry, embedding)| Entry { embedding, ..entry }))
        .collect()
}
