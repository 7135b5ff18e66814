//! The library's error type.

use std::path::PathBuf;

/// Everything that can go wrong in twinscan. Each variant names the file or model at fault, so a
/// caller processing thousands of files can report one line per failure and carry on.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Reading or writing a file failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying I/O error.
        source: std::io::Error,
    },

    /// The model bytes are not a readable ONNX protobuf.
    #[error("model {model}: not an ONNX model ({reason})")]
    ModelFormat {
        /// Where the model came from (a path, or a label for in-memory bytes).
        model: String,
        /// What the decoder said.
        reason: String,
        /// The protobuf decoder's error, when it failed.
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    },

    /// A `twinscan.` metadata property the runtime needs is absent.
    #[error("model {model}: missing metadata property `{key}` (not a twinscan tower, or written by an older trainer)")]
    MissingMetadata {
        /// Where the model came from.
        model: String,
        /// The missing key, with its `twinscan.` prefix.
        key: String,
    },

    /// A metadata property is present but its value is unusable.
    #[error("model {model}: metadata property `{key}` = {value:?} is invalid: {reason}")]
    InvalidMetadata {
        /// Where the model came from.
        model: String,
        /// The offending key.
        key: String,
        /// Its value as written in the file.
        value: String,
        /// Why it was refused.
        reason: String,
    },

    /// The graph does not have the shape the contract requires (one `[N, C, H, W]` input, one
    /// `[N, D]` output agreeing with the metadata), or tract could not load or optimise it.
    #[error("model {model}: {reason}")]
    ModelGraph {
        /// Where the model came from.
        model: String,
        /// What is wrong.
        reason: String,
        /// tract's error, when tract refused the graph.
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    },

    /// tract failed while running the network.
    #[error("model {model}: inference failed: {reason}")]
    Inference {
        /// Where the model came from.
        model: String,
        /// tract's message.
        reason: String,
        /// tract's error, when there is one to keep.
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    },

    /// The network produced NaN or infinite values.
    #[error("model {model}: produced a non-finite embedding for {}", path.display())]
    NonFinite {
        /// Where the model came from.
        model: String,
        /// The image whose embedding was not finite.
        path: PathBuf,
    },

    /// The image file is empty.
    #[error("{}: empty file", path.display())]
    EmptyImage {
        /// The file.
        path: PathBuf,
    },

    /// The path is not a regular file (a FIFO, a device, a folder, or a symbolic link where none
    /// is followed): it is refused before anything is read, so nothing can hang or read forever.
    #[error("{}: {what}, not a regular file", path.display())]
    NotAFile {
        /// The path.
        path: PathBuf,
        /// What it is instead.
        what: &'static str,
    },

    /// A file is larger than what twinscan reads of its kind.
    #[error("{}: {size} bytes, more than the {limit} read of such a file", path.display())]
    FileTooLarge {
        /// The file.
        path: PathBuf,
        /// Its size (or what was read before giving up).
        size: u64,
        /// The limit.
        limit: u64,
    },

    /// The file's content is not an image format twinscan decodes.
    #[error("{}: not a supported image format", path.display())]
    UnknownFormat {
        /// The file.
        path: PathBuf,
    },

    /// The image exceeds the decoding limits (dimensions or memory); see [`crate::DecodeLimits`].
    #[error("{}: image exceeds decoding limits ({reason})", path.display())]
    ImageTooLarge {
        /// The file.
        path: PathBuf,
        /// Which limit was hit.
        reason: String,
    },

    /// The image is truncated or corrupt.
    #[error("{}: cannot decode image: {reason}", path.display())]
    Decode {
        /// The file.
        path: PathBuf,
        /// The decoder's message.
        reason: String,
        /// The decoder's error, when there is one to keep.
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    },

    /// Two embeddings of different lengths were compared, or an embedding does not fit the model.
    #[error("embedding dimensions differ: {left} vs {right}")]
    DimensionMismatch {
        /// Length of the first vector.
        left: usize,
        /// Length of the second vector.
        right: usize,
    },

    /// An index file is damaged or of another version.
    #[error("index {}: {reason}", path.display())]
    Index {
        /// The index file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },

    /// An index is used with a model other than the one that made its embeddings (or with
    /// another invariance).
    #[error("index made by model {made_by}, not by the model in use {in_use}")]
    IndexModel {
        /// Fingerprint prefix and invariance of the index's model.
        made_by: String,
        /// Fingerprint prefix and invariance of the model in use.
        in_use: String,
    },

    /// A gallery file is damaged, of another version, or holds what no gallery writes.
    #[error("gallery {}: {reason}", path.display())]
    Gallery {
        /// The gallery file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },

    /// A gallery is used with a model other than the one that made its embeddings (or with
    /// another invariance).
    #[error("gallery made by model {made_by}, not by the model in use {in_use}; use that model or enroll again")]
    GalleryModel {
        /// Fingerprint prefix and invariance of the gallery's model.
        made_by: String,
        /// Fingerprint prefix and invariance of the model in use.
        in_use: String,
    },

    /// A label that cannot be enrolled (empty, too long, or with control characters), or one that
    /// the gallery does not hold.
    #[error("label {label:?}: {reason}")]
    Label {
        /// The label as given.
        label: String,
        /// What is wrong.
        reason: String,
    },

    /// An acceptance threshold that is not a finite, non-negative distance.
    #[error("threshold {value} is not a finite, non-negative distance")]
    Threshold {
        /// The value given.
        value: f32,
    },

    /// Another process holds the lock of an index or gallery it is about to rewrite.
    #[error("{}: in use by another twinscan process (lock held)", path.display())]
    Locked {
        /// The index or gallery file.
        path: PathBuf,
    },

    /// A journal of duplicate actions could not be written, read or trusted.
    #[error("{}: {reason}", path.display())]
    Journal {
        /// The journal (or the file being moved, when a copy failed its check).
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },

    /// A quarantine folder that cannot be used (one inside a scanned folder, say).
    #[error("quarantine {}: {reason}", path.display())]
    Quarantine {
        /// The quarantine folder.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },

    /// A tower description is inconsistent (for example a layer that cannot follow the previous
    /// one, or weights of the wrong size).
    #[error("tower {tower}: {reason}")]
    InvalidTower {
        /// The tower's name.
        tower: String,
        /// What is inconsistent.
        reason: String,
    },
}

/// `Result` with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io { path: path.into(), source }
    }

    /// The image or file path this error concerns, if it concerns one.
    pub fn path(&self) -> Option<&std::path::Path> {
        match self {
            Error::Io { path, .. }
            | Error::NonFinite { path, .. }
            | Error::EmptyImage { path }
            | Error::NotAFile { path, .. }
            | Error::FileTooLarge { path, .. }
            | Error::UnknownFormat { path }
            | Error::ImageTooLarge { path, .. }
            | Error::Decode { path, .. }
            | Error::Index { path, .. }
            | Error::Gallery { path, .. }
            | Error::Journal { path, .. }
            | Error::Quarantine { path, .. }
            | Error::Locked { path } => Some(path),
            _ => None,
        }
    }

    /// A short stable name for the kind of failure, for machine-readable output.
    pub fn kind(&self) -> &'static str {
        match self {
            Error::Io { .. } => "io",
            Error::ModelFormat { .. } => "model_format",
            Error::MissingMetadata { .. } => "missing_metadata",
            Error::InvalidMetadata { .. } => "invalid_metadata",
            Error::ModelGraph { .. } => "model_graph",
            Error::Inference { .. } => "inference",
            Error::NonFinite { .. } => "non_finite",
            Error::EmptyImage { .. } => "empty_image",
            Error::NotAFile { .. } => "not_a_file",
            Error::FileTooLarge { .. } => "file_too_large",
            Error::UnknownFormat { .. } => "unknown_format",
            Error::ImageTooLarge { .. } => "image_too_large",
            Error::Decode { .. } => "decode",
            Error::DimensionMismatch { .. } => "dimension_mismatch",
            Error::InvalidTower { .. } => "invalid_tower",
            Error::Index { .. } => "index",
            Error::IndexModel { .. } => "index_model",
            Error::Gallery { .. } => "gallery",
            Error::GalleryModel { .. } => "gallery_model",
            Error::Label { .. } => "label",
            Error::Locked { .. } => "locked",
            Error::Journal { .. } => "journal",
            Error::Quarantine { .. } => "quarantine",
            Error::Threshold { .. } => "threshold",
        }
    }
}
