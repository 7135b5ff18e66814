//! Exit codes, as a type so every command returns one of the documented values.

use std::process::ExitCode;

/// The documented exit codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Code {
    /// The command ran and found nothing to report (compare: not similar).
    Nothing = 0,
    /// The command ran and found something (compare: similar).
    Found = 1,
    /// Bad arguments, an unusable model, or some inputs failed.
    Error = 2,
}

impl From<Code> for ExitCode {
    fn from(c: Code) -> ExitCode {
        ExitCode::from(c as u8)
    }
}

pub const HELP: &str = "Exit codes:
  0  success; nothing found (compare: the images are not similar)
  1  success; something found (compare: the images are similar)
  2  error: bad arguments, unusable model, or at least one input failed (its error is reported)";
