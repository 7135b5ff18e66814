//! `gallery enroll|verify|identify|list|remove`: face-style matching against a gallery file.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde_json::json;
use twinscan::gallery::{Gallery, Verification};
use twinscan::store::FileLock;
use twinscan::Model;

use super::{json_line, path_text, put_path, report_error, shown, ModelArg};
use crate::exit::Code;

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

/// Embeds the probes; a probe that fails is reported and left out.
fn embed_probes(model: &Model, probes: &[PathBuf], json: bool) -> (Vec<(PathBuf, Vec<f32>)>, bool) {
    let mut ok = Vec::new();
    let mut failed = false;
    for (path, result) in probes.iter().zip(model.embed_paths(probes)) {
        match result {
            Ok(e) => ok.push((path.clone(), e)),
            Err(e) => {
                failed = true;
                report_error(json, path, &e);
            }
        }
    }
    (ok, failed)
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
    for e in &done.failed {
        report_error(args.gallery.json, e.path().unwrap_or(Path::new("")), e);
    }
    if done.added > 0 {
        g.save(path)?;
    }
    let held = g.labels().find(|(l, _)| *l == args.label).map_or(0, |(_, n)| n);
    if args.gallery.json {
        json_line(&json!({
            "type": "enrolled", "label": args.label, "added": done.added, "failed": done.failed.len(),
            "embeddings": held, "gallery": path_text(path),
        }));
    } else {
        println!("{}: {} image(s) enrolled, {held} in all; {} failed", args.label, done.added, done.failed.len());
    }
    Ok(if done.failed.is_empty() { Code::Nothing } else { Code::Error })
}

fn verification_json(v: &Verification) -> serde_json::Value {
    json!({"distance": v.distance, "probability": v.probability, "accepted": v.accepted})
}

fn verify(args: VerifyArgs) -> Result<Code> {
    let json = args.query.gallery.json;
    let (g, model) = open(&args.query)?;
    let (probes, failed) = embed_probes(&model, &args.probes, json);
    let threshold = g.threshold(&model);
    let mut accepted = false;
    for (path, probe) in &probes {
        let v = g.verify(&model, probe, &args.label)?;
        accepted |= v.accepted;
        if json {
            let mut record = verification_json(&v);
            record["type"] = "verification".into();
            put_path(&mut record, "probe", path);
            record["label"] = json!(args.label);
            record["threshold"] = json!(threshold);
            json_line(&record);
        } else {
            let word = if v.accepted { "accepted" } else { "rejected" };
            println!(
                "{}: {word} as {} (distance {:.4}, threshold {threshold:.4}, probability {:.4})",
                shown(path),
                args.label,
                v.distance,
                v.probability
            );
        }
    }
    Ok(verdict(failed, accepted))
}

fn identify(args: IdentifyArgs) -> Result<Code> {
    let json = args.query.gallery.json;
    let (g, model) = open(&args.query)?;
    let (probes, failed) = embed_probes(&model, &args.probes, json);
    let mut identified = false;
    for (path, probe) in &probes {
        let found = g.identify(&model, probe, args.top.max(1))?;
        identified |= found.label().is_some();
        if json {
            let candidates: Vec<serde_json::Value> = found
                .candidates
                .iter()
                .map(|c| {
                    let mut v = verification_json(&c.verification);
                    v["label"] = json!(c.label);
                    v
                })
                .collect();
            let mut record = json!({
                "type": "identification", "label": found.label(),
                "threshold": g.threshold(&model), "candidates": candidates,
            });
            put_path(&mut record, "probe", path);
            json_line(&record);
        } else {
            let answer = found.label().unwrap_or("unknown");
            let ranked: Vec<String> =
                found.candidates.iter().map(|c| format!("{} {:.4}", c.label, c.verification.distance)).collect();
            println!("{}: {answer}  (nearest: {})", shown(path), ranked.join(", "));
        }
    }
    Ok(verdict(failed, identified))
}

fn list(args: ListArgs) -> Result<Code> {
    let g = load(&args.gallery.gallery)?;
    if args.gallery.json {
        for (label, n) in g.labels() {
            json_line(&json!({"type": "label", "label": label, "embeddings": n}));
        }
        json_line(&json!({
            "type": "gallery", "path": path_text(&args.gallery.gallery), "model": g.model(), "labels": g.len(),
            "threshold": g.stored_threshold(),
        }));
    } else {
        for (label, n) in g.labels() {
            println!("{label}\t{n}");
        }
        let threshold = g.stored_threshold().map_or("the model's".into(), |t| format!("{t} (saved)"));
        eprintln!("{} label(s), model {}, threshold {threshold}", g.len(), g.model());
    }
    Ok(Code::Nothing)
}

fn remove(args: RemoveArgs) -> Result<Code> {
    let path = &args.gallery.gallery;
    let _lock = FileLock::acquire(path)?;
    let mut g = load(path)?;
    let (mut missing, mut removed) = (false, false);
    for label in &args.labels {
        let n = g.remove(label);
        missing |= n == 0;
        removed |= n > 0;
        if args.gallery.json {
            json_line(&json!({"type": "removed", "label": label, "embeddings": n}));
        } else if n == 0 {
            eprintln!("twinscan: {label}: not enrolled");
        } else {
            println!("{label}: removed ({n} image(s))");
        }
    }
    if removed {
        g.save(path)?;
    }
    Ok(if missing { Code::Error } else { Code::Nothing })
}
