//! What `scan` does with duplicate groups when asked (`--quarantine DIR`, `--hardlink`), and
//! `undo JOURNAL`.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use serde_json::json;
use twinscan::actions::{self, Action, Op, Outcome, Step};
use twinscan::detect::Group;
use twinscan::index::Entry;

use super::scan::{csv, Format};
use super::{json_line, path_text, put_path, shown, shown_text};
use crate::exit::Code;

#[derive(clap::Args)]
pub struct ActArgs {
    /// Plan to move every image a group does not keep into DIR, at its absolute path under DIR
    /// (outside the scanned folders). Nothing moves without --apply.
    #[arg(long, value_name = "DIR", conflicts_with = "hardlink")]
    quarantine: Option<PathBuf>,
    /// Plan to replace byte-identical copies by hard links to the kept image (near duplicates
    /// are left alone). Nothing changes without --apply.
    #[arg(long)]
    hardlink: bool,
    /// Carry out the plan: each file's hash is checked first (a changed file is skipped) and
    /// each action is journalled for `twinscan undo`. Nothing is ever deleted.
    #[arg(long)]
    pub apply: bool,
    /// Journal to write [default: twinscan-journal-<time>.jsonl in the quarantine folder, or
    /// in the current folder with --hardlink].
    #[arg(long, value_name = "PATH", requires = "apply")]
    journal: Option<PathBuf>,
}

#[derive(clap::Args)]
pub struct UndoArgs {
    /// JSON Lines records (`restored`, `skipped`, `failed`) instead of text.
    #[arg(long)]
    json: bool,
    /// Journal written by `scan --apply`.
    #[arg(value_name = "JOURNAL")]
    journal: PathBuf,
}

impl ActArgs {
    fn action(&self) -> Option<Action> {
        match (&self.quarantine, self.hardlink) {
            (Some(dir), _) => Some(Action::Quarantine(dir.clone())),
            (None, true) => Some(Action::HardLink),
            (None, false) => None,
        }
    }

    /// Refuses what would defeat the scan next time: a quarantine inside a scanned folder.
    pub fn check(&self, roots: &[PathBuf]) -> Result<()> {
        if self.apply && self.action().is_none() {
            bail!("--apply needs an action: --quarantine DIR or --hardlink");
        }
        if let Some(dir) = &self.quarantine {
            actions::check_quarantine(dir, roots)?;
        }
        Ok(())
    }
}

/// Plans (and with --apply carries out) the action on `groups`; the exit code when an action
/// failed or Ctrl-C stopped them.
pub fn act(
    args: &ActArgs,
    groups: &[Group],
    entries: &[Entry],
    roots: &[PathBuf],
    format: Format,
) -> Result<Option<Code>> {
    let json = format == Format::Json;
    let Some(action) = args.action() else { return Ok(None) };
    let plan = actions::plan(groups, entries, &action, roots)?;
    if !args.apply {
        for step in &plan.steps {
            let (status, reason) = match &step.op {
                Op::Skip(reason) => ("skip", Some(reason.as_str())),
                _ => ("planned", None),
            };
            print_step(step, status, reason, format);
        }
        if !json {
            eprintln!("twinscan: a plan only; nothing changed (--apply carries it out)");
        }
        return Ok(None);
    }
    let journal = match (&args.journal, &action) {
        (Some(path), _) => path.clone(),
        (None, Action::Quarantine(dir)) => {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
            dir.join(actions::journal_name())
        }
        (None, Action::HardLink) => PathBuf::from(actions::journal_name()),
    };
    // Absolute, so that the `undo` it suggests works from any folder.
    let journal = std::path::absolute(&journal).with_context(|| format!("resolving {}", journal.display()))?;
    let outcomes = actions::apply(&plan, &journal, crate::interrupt::flag())?;
    let mut failed = false;
    for (step, outcome) in plan.steps.iter().zip(&outcomes) {
        match outcome {
            Outcome::Done => print_step(step, "done", None, format),
            Outcome::Unchanged(reason) => print_step(step, "unchanged", Some(reason), format),
            Outcome::Skipped(reason) => print_step(step, "skipped", Some(reason), format),
            Outcome::Failed(e) => {
                failed = true;
                print_step(step, "failed", Some(&e.to_string()), format);
            }
        }
    }
    if json {
        json_line(&json!({"type": "journal", "path": path_text(&journal)}));
    } else {
        eprintln!("twinscan: journal {} (twinscan undo {0} puts everything back)", shown(&journal));
    }
    Ok(if crate::interrupt::requested() { Some(Code::Interrupted) } else { failed.then_some(Code::Error) })
}

fn print_step(step: &Step, status: &str, reason: Option<&str>, format: Format) {
    let (op, to) = match &step.op {
        Op::Move(to) => ("move", Some(to.as_path())),
        Op::Link => ("link", Some(step.keep.as_path())),
        Op::Skip(_) => ("none", None),
    };
    if format == Format::Json {
        let mut record = json!({"type": "action", "status": status, "group": step.group, "op": op, "reason": reason});
        put_path(&mut record, "path", &step.path);
        put_path(&mut record, "keep", &step.keep);
        match to {
            Some(to) => put_path(&mut record, "to", to),
            None => record["to"] = serde_json::Value::Null,
        }
        json_line(&record);
        return;
    }
    let path = shown(&step.path);
    let what = match (&step.op, to) {
        (Op::Move(_), Some(to)) => format!("move {path} -> {}", shown(to)),
        (Op::Link, Some(keep)) => format!("link {path} -> {}", shown(keep)),
        _ => path.clone(),
    };
    let detail = match reason {
        Some(reason) => format!("{what}  ({})", shown_text(reason)),
        None => what,
    };
    if format == Format::Csv {
        // The scan's columns: type, group, path, role (the status), ..., error (what and why).
        println!("action,{},{},{status},,,,{}", step.group, csv(&path), csv(&detail));
    } else {
        println!("{status:<8} {detail}");
    }
}

/// Undoes a journal: exit 0 when every entry is back in place (restored now or before), 2 when
/// any entry could not be restored.
pub fn run_undo(args: UndoArgs) -> Result<Code> {
    let outcomes = actions::undo(&args.journal)?;
    let mut failed = false;
    for (path, outcome) in &outcomes {
        let (status, reason) = match outcome {
            Outcome::Done => ("restored", None),
            Outcome::Unchanged(reason) => ("unchanged", Some(reason.clone())),
            Outcome::Skipped(reason) => {
                failed = true;
                ("skipped", Some(reason.clone()))
            }
            Outcome::Failed(e) => {
                failed = true;
                ("failed", Some(e.to_string()))
            }
        };
        if args.json {
            let mut record = json!({"type": status, "reason": reason});
            put_path(&mut record, "path", path);
            json_line(&record);
        } else if let Some(reason) = reason {
            println!("{status:<8} {}  ({})", shown(path), shown_text(&reason));
        } else {
            println!("{status:<8} {}", shown(path));
        }
    }
    Ok(if failed { Code::Error } else { Code::Nothing })
}
