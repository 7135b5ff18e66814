//! The lab's error type: the runtime's errors, and what only data sets and training add.

use std::path::PathBuf;

/// Everything that can go wrong in the lab.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The runtime failed (a model, an image, an index).
    #[error(transparent)]
    Twinscan(#[from] twinscan::Error),

    /// Reading or writing a file failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying I/O error.
        source: std::io::Error,
    },

    /// A data set file or folder is malformed (bad magic, truncated, counts that disagree).
    #[error("{}: {reason}", path.display())]
    Dataset {
        /// The file or folder.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },

    /// The trainer failed (a tensor operation, the optimiser, or data it cannot use).
    #[error("training failed: {reason}")]
    Training {
        /// What failed.
        reason: String,
        /// candle's error, when candle failed.
        source: Option<candle_core::Error>,
    },
}

/// `Result` with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io { path: path.into(), source }
    }

    /// A training failure that is not candle's.
    pub(crate) fn training(reason: impl Into<String>) -> Self {
        Error::Training { reason: reason.into(), source: None }
    }
}
