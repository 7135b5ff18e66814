//! `gallery enroll|verify|identify|list|remove`: face-style matching against a gallery file.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use twinscan::gallery::Gallery;
use twinscan::store::FileLock;
use twinscan::Model;

use super::ModelArg;
use crate::exit::Code;
use crate::output::record::{self, Failure, LabelCount, Named, Record};
use crate::output::Printer;

#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: GalleryCommand,
}

#[derive(clap::Subcommand)]
enum GalleryCommand {
    /// Add images of a label, creating the gallery and the label when new.
    Enroll(EnrollArgs),
    /// Is each probe the identity enrolled under a label?
    Verify(VerifyArgs),
    /// Who is each probe? The nearest labels, or "unknown" when none is close enough.
    Identify(IdentifyArgs),
    /// The labels and how many images each holds.
    List(ListArgs),
    /// Remove labels and their images from the gallery.
    Remove(RemoveArgs),
}

#[derive(clap::Args)]
struct GalleryArg {
    /// Gallery file; it remembers the model that made it, and must be used with that model.
    #[arg(long, short = 'g', value_name = "PATH")]
    gallery: PathBuf,
    /// JSON Lines instead of text: typed records (`enrolled`, `verification`, `identification`,
    /// `label`, `removed`, `gallery`, `error`).
    #[arg(long)]
    json: bool,
}

#[derive(clap::Args)]
struct EnrollArgs {
    #[command(flatten)]
    gallery: GalleryArg,
    #[command(flatten)]
    model: ModelArg,
    /// The identity's label.
    label: String,
    /// Images of it.
    #[arg(required = true, value_name = "IMAGE")]
    images: Vec<PathBuf>,
}

/// What verify and identify both take: the gallery, its model, and a threshold for this call.
#[derive(clap::Args)]
struct QueryArgs {
    #[command(flatten)]
    gallery: GalleryArg,
    #[command(flatten)]
    model: ModelArg,
    /// Accept at this distance instead of the gallery's threshold (lower is stricter).
    #[arg(long)]
    threshold: Option<f32>,
}

#[derive(clap::Args)]
struct VerifyArgs {
    #[command(flatten)]
    query: QueryArgs,
    /// The claimed identity.
    label: String,
    /// Probe images.
    #[arg(required = true, value_name = "PROBE")]
    probes: Vec<PathBuf>,
}

#[derive(clap::Args)]
struct IdentifyArgs {
    #[command(flatten)]
    query: QueryArgs,
    /// Nearest labels listed per probe.
    #[arg(long, default_value_t = 3)]
    top: usize,
    /// Probe images.
    #[arg(required = true, value_name = "PROBE")]
    probes: Vec<PathBuf>,
}

#[derive(clap::Args)]
struct ListArgs {
    #[command(flatten)]
    gallery: GalleryArg,
}

#[derive(clap::Args)]
struct RemoveArgs {
    #[command(flatten)]
    gallery: GalleryArg,
    /// Labels to remove.
    #[arg(required = true, value_name = "LABEL")]
    labels: Vec<String>,
}

pub fn run(args: Args) -> Result<Code> {
    match args.command {
        GalleryCommand::Enroll(a) => enroll(a),
        GalleryCommand::Verify(a) => verify(a),
        GalleryCommand::Identify(a) => identify(a),
        GalleryCommand::List(a) => list(a),
        GalleryCommand::Remove(a) => remove(a),
    }
}

fn load(path: &Path) -> Result<Gallery> {
    Gallery::load(path).with_context(|| format!("cannot use the gallery {}", path.display()))
}

/// The gallery and the model it must be used with, checked against each other, with the
/// threshold for this call applied.
fn open(args: &QueryArgs) -> Result<(Gallery, Model)> {
    let model = args.model.load()?;
    let mut g = load(&args.gallery.gallery)?;
    g.check_model(&model).with_context(|| format!("cannot use the gallery {}", args.gallery.gallery.display()))?;
    if args.threshold.is_some() {
        g.set_threshold(args.threshold)?;
    } else if let Some(t) = g.looser_threshold(&model) {
        eprintln!(
            "twinscan: warning: the gallery's saved threshold {t} is looser than the model's calibrated {}: \
             it accepts more probes (--threshold overrides it)",
            model.meta().threshold
        );
    }
    Ok((g, model))
}

/// The probes that could be embedded, and whether any could not.
struct Probes {
    embedded: Vec<(PathBuf, Vec<f32>)>,
    failed: bool,
}

/// Embeds the probes; a probe that fails is reported and left out.
fn embed_probes(model: &Model, probes: &[PathBuf], printer: &mut Printer) -> Result<Probes> {
    let mut done = Probes { embedded: Vec::new(), failed: false };
    for (path, result) in probes.iter().zip(model.embed_paths(probes)) {
        match result {
            Ok(e) => done.embedded.push((path.clone(), e)),
            Err(e) => {
                done.failed = true;
                printer.print(&Record::Error(Failure::of(path, &e)))?;
            }
        }
    }
    Ok(done)
}

/// Error when a probe failed, else found or nothing.
fn verdict(failed: bool, found: bool) -> Code {
    if failed {
        Code::Error
    } else if found {
        Code::Found
    } else {
        Code::Nothing
    }
}

fn enroll(args: EnrollArgs) -> Result<Code> {
    let path = &args.gallery.gallery;
    let model = args.model.load()?;
    let _lock = FileLock::acquire(path)?;
    let mut g = if path.exists() { load(path)? } else { Gallery::new(&model) };
    g.check_model(&model).with_context(|| format!("cannot use the gallery {}", path.display()))?;
    let done = g.enroll_files(&model, &args.label, &args.images)?;
    let mut printer = Printer::json_or_text(args.gallery.json);
    for e in &done.failed {
        printer.print(&Record::Error(Failure::of(e.path().unwrap_or(Path::new("")), e)))?;
    }
    if done.added > 0 {
        g.save(path)?;
    }
    let held = g.labels().find(|(l, _)| *l == args.label).map_or(0, |(_, n)| n);
    printer.print(&Record::Enrolled(record::Enrolled {
        label: args.label.clone(),
        added: done.added,
        failed: done.failed.len(),
        embeddings: held,
        gallery: Named::of(path),
    }))?;
    Ok(if done.failed.is_empty() { Code::Nothing } else { Code::Error })
}

fn verify(args: VerifyArgs) -> Result<Code> {
    let mut printer = Printer::json_or_text(args.query.gallery.json);
    let (g, model) = open(&args.query)?;
    let probes = embed_probes(&model, &args.probes, &mut printer)?;
    let threshold = g.threshold(&model);
    let mut accepted = false;
    for (path, probe) in &probes.embedded {
        let v = g.verify(&model, probe, &args.label)?;
        accepted |= v.accepted;
        printer.print(&Record::Verification(record::Verification {
            probe: Named::of(path),
            label: args.label.clone(),
            threshold,
            scores: (&v).into(),
        }))?;
    }
    Ok(verdict(probes.failed, accepted))
}

fn identify(args: IdentifyArgs) -> Result<Code> {
    let mut printer = Printer::json_or_text(args.query.gallery.json);
    let (g, model) = open(&args.query)?;
    let probes = embed_probes(&model, &args.probes, &mut printer)?;
    let mut identified = false;
    for (path, probe) in &probes.embedded {
        let found = g.identify(&model, probe, args.top.max(1))?;
        identified |= found.label().is_some();
        let candidates = found
            .candidates
            .iter()
            .map(|c| record::Candidate { label: c.label.clone(), scores: (&c.verification).into() })
            .collect();
        printer.print(&Record::Identification(record::Identification {
            probe: Named::of(path),
            label: found.label().map(String::from),
            threshold: g.threshold(&model),
            candidates,
        }))?;
    }
    Ok(verdict(probes.failed, identified))
}

fn list(args: ListArgs) -> Result<Code> {
    let g = load(&args.gallery.gallery)?;
    let mut printer = Printer::json_or_text(args.gallery.json);
    for (label, n) in g.labels() {
        printer.print(&Record::Label(LabelCount { label: label.into(), embeddings: n }))?;
    }
    printer.print(&Record::Gallery(record::GalleryInfo {
        path: Named::of(&args.gallery.gallery),
        model: g.model().into(),
        labels: g.len(),
        threshold: g.stored_threshold(),
    }))?;
    Ok(Code::Nothing)
}

fn remove(args: RemoveArgs) -> Result<Code> {
    let path = &args.gallery.gallery;
    let _lock = FileLock::acquire(path)?;
    let mut g = load(path)?;
    let (mut missing, mut removed) = (false, false);
    let mut printer = Printer::json_or_text(args.gallery.json);
    for label in &args.labels {
        let n = g.remove(label);
        missing |= n == 0;
        removed |= n > 0;
        printer.print(&Record::Removed(LabelCount { label: label.clone(), embeddings: n }))?;
    }
    if removed {
        g.save(path)?;
    }
    Ok(if missing { Code::Error } else { Code::Nothing })
}
