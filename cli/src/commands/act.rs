//! What `scan` does with duplicate groups when asked (`--quarantine DIR`, `--hardlink`), and
//! `undo JOURNAL`.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use twinscan::actions::{self, Action, Op, Outcome, Step};
use twinscan::detect::Group;
use twinscan::Collection;

use crate::exit::Code;
use crate::output::record::{self, Named, Record, Undone};
use crate::output::{Format, Printer};

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

/// Plans (and with --apply carries out) the action on `groups` of `collection`; the exit code
/// when an action failed or Ctrl-C stopped them.
pub fn act(args: &ActArgs, collection: &Collection, groups: &[Group], printer: &mut Printer) -> Result<Option<Code>> {
    let Some(action) = args.action() else { return Ok(None) };
    let plan = collection.plan(groups, &action)?;
    if !args.apply {
        for step in &plan.steps {
            let (status, reason) = match &step.op {
                Op::Skip(reason) => ("skip", Some(reason.clone())),
                _ => ("planned", None),
            };
            printer.print(&step_record(step, status, reason))?;
        }
        if printer.format() != Format::Json {
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
    for (step, outcome) in plan.steps.iter().zip(outcomes) {
        let (status, reason) = match outcome {
            Outcome::Done => ("done", None),
            Outcome::Unchanged(reason) => ("unchanged", Some(reason)),
            Outcome::Skipped(reason) => ("skipped", Some(reason)),
            Outcome::Failed(e) => {
                failed = true;
                ("failed", Some(e.to_string()))
            }
        };
        printer.print(&step_record(step, status, reason))?;
    }
    printer.print(&Record::Journal(record::Written { path: Named::of(&journal) }))?;
    Ok(if crate::interrupt::requested() { Some(Code::Interrupted) } else { failed.then_some(Code::Error) })
}

fn step_record(step: &Step, status: &'static str, reason: Option<String>) -> Record {
    let (op, to) = match &step.op {
        Op::Move(to) => ("move", Named::of(to)),
        Op::Link => ("link", Named::of(&step.keep)),
        Op::Skip(_) => ("none", Named::none()),
    };
    Record::Action(record::Action {
        status,
        group: step.group,
        op,
        path: Named::of(&step.path),
        keep: Named::of(&step.keep),
        to,
        reason,
    })
}

/// Undoes a journal: exit 0 when every entry is back in place (restored now or before), 2 when
/// any entry could not be restored.
pub fn run_undo(args: UndoArgs) -> Result<Code> {
    let outcomes = actions::undo(&args.journal)?;
    let mut printer = Printer::json_or_text(args.json);
    let mut failed = false;
    for (path, outcome) in outcomes {
        let path = Named::of(&path);
        let record = match outcome {
            Outcome::Done => Record::Restored(Undone { path, reason: None }),
            Outcome::Unchanged(reason) => Record::Unchanged(Undone { path, reason: Some(reason) }),
            Outcome::Skipped(reason) => Record::Skipped(Undone { path, reason: Some(reason) }),
            Outcome::Failed(e) => Record::Failed(Undone { path, reason: Some(e.to_string()) }),
        };
        failed |= matches!(record, Record::Skipped(_) | Record::Failed(_));
        printer.print(&record)?;
    }
    Ok(if failed { Code::Error } else { Code::Nothing })
}
