//! The `twinscan` command. Argument parsing and rendering only; every capability is a library
//! call.

mod commands;
mod exit;
mod interrupt;
mod output;
mod report;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Find near-duplicate and anomalous images with a trained twin network.
#[derive(Parser)]
#[command(name = "twinscan", version, about, long_about = None, after_help = exit::HELP)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Scan folders for near-duplicate groups (and, with --outliers, images that do not belong),
    /// keeping an index so that a rescan only embeds new and changed files.
    Scan(commands::scan::ScanArgs),
    /// Scan folders and report the images that do not belong.
    Outliers(commands::scan::OutliersArgs),
    /// Nearest neighbours of new images in an existing index, without a rescan.
    Query(commands::scan::QueryArgs),
    /// Put back what `scan --apply` moved or linked, from its journal.
    Undo(commands::act::UndoArgs),
    /// Print the embedding of each image.
    Embed(commands::embed::Args),
    /// Compare two images: distance, probability of being similar, and the verdict.
    Compare(commands::compare::Args),
    /// Show a model's metadata.
    Info(commands::info::Args),
    /// Enroll identities and verify or identify probes against them, face-recognition style.
    Gallery(commands::gallery::Args),
    /// Benchmarks that need data: `match` measures verification, identification and anomaly
    /// detection on classes the tower never saw (lab builds).
    #[cfg(feature = "lab")]
    Bench(commands::bench::Args),
    /// Evaluate a model on IDX data with the origin study's protocol (pair accuracy, ROC AUC;
    /// lab builds).
    #[cfg(feature = "lab")]
    Eval(commands::eval::Args),
    /// Train a tower on labelled images and export it (lab builds).
    #[cfg(feature = "lab")]
    Train(commands::train::Args),
    /// Train the photo tower on a folder of unlabelled photos, self-supervised (lab builds).
    #[cfg(feature = "lab")]
    TrainPhoto(commands::train_photo::Args),
}

fn main() -> ExitCode {
    // Rust ignores SIGPIPE, so a closed pipe (`twinscan scan --json | head`) becomes a write
    // error in the middle of the output; the default action ends the process quietly instead,
    // as for other Unix tools.
    #[cfg(unix)]
    // SAFETY: called first thing, before any other thread exists; SIG_DFL is a valid action.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    interrupt::install();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Scan(args) => commands::scan::run_scan(args),
        Command::Outliers(args) => commands::scan::run_outliers(args),
        Command::Query(args) => commands::scan::run_query(args),
        Command::Undo(args) => commands::act::run_undo(args),
        Command::Embed(args) => commands::embed::run(args),
        Command::Compare(args) => commands::compare::run(args),
        Command::Info(args) => commands::info::run(args),
        Command::Gallery(args) => commands::gallery::run(args),
        #[cfg(feature = "lab")]
        Command::Eval(args) => commands::eval::run(args),
        #[cfg(feature = "lab")]
        Command::Bench(args) => commands::bench::run_bench(args),
        #[cfg(feature = "lab")]
        Command::Train(args) => commands::train::run(args),
        #[cfg(feature = "lab")]
        Command::TrainPhoto(args) => commands::train_photo::run(args),
    };
    match result {
        Ok(code) => code.into(),
        Err(e) => {
            eprintln!("twinscan: error: {}", output::text::shown_text(&message(&e)));
            exit::Code::Error.into()
        }
    }
}

/// The error and its causes, outermost first, each cause left out when the message before it
/// already says it (the library's messages quote the cause they keep as `source()`).
fn message(e: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in e.chain() {
        let part = cause.to_string();
        if !text.contains(&part) {
            if !text.is_empty() {
                text.push_str(": ");
            }
            text.push_str(&part);
        }
    }
    text
}

/// What to do about an index that cannot be used, said where it can be done: on the command line.
fn advice(e: twinscan::Error) -> anyhow::Error {
    match e {
        twinscan::Error::Index { .. } | twinscan::Error::IndexModel { .. } => {
            let text = format!("{e}; rebuild it with `twinscan scan --rebuild`");
            anyhow::Error::new(e).context(text)
        }
        other => other.into(),
    }
}
