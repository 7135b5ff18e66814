//! Exit codes, as a type so every command returns one of the documented values.

use std::process::ExitCode;

/// The documented exit codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Code {
    /// The command ran and found nothing to report (compare: not similar; scan: no duplicate
    /// group or outlier).
    Nothing = 0,
    /// The command ran and found something (compare: similar; scan: at least one group or
    /// outlier; query: at least one duplicate).
    Found = 1,
    /// Bad arguments, an unusable model, index or journal, (embed, compare, query) an input
    /// failed, an action of `scan --apply` failed, or `undo` left an entry unrestored.
    Error = 2,
    /// Stopped by Ctrl-C: what was done before is saved (and journalled); no action was taken
    /// after it.
    Interrupted = 130,
}

impl From<Code> for ExitCode {
    fn from(c: Code) -> ExitCode {
        ExitCode::from(c as u8)
    }
}

pub const HELP: &str = "Exit codes:
  0  success; nothing found (compare: not similar; scan/outliers: no group or outlier)
  1  success; something found (compare: similar; scan/outliers: groups or outliers; query: a duplicate)
  2  error: bad arguments, unusable model or index, an input of embed/compare/query failed,
     an action of scan --apply failed, or undo could not restore an entry (it restores all it
     can first; scan and outliers report unreadable files as error records and still finish)
  130 interrupted by Ctrl-C: the index keeps what was embedded, no action starts after it (a
     second Ctrl-C ends the process at once)";
