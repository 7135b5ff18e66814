//! A small identification app: enroll one identity per subfolder, then say who each probe is.
//!
//! ```sh
//! cargo run --example match -- --model models/mnist-0-4-compact-proj-supcon.onnx \
//!     examples/gallery/enroll examples/gallery/probes
//! ```
//!
//! `ENROLL_DIR/<label>/*` are the images of `<label>`; every file under `PROBES` (a folder or
//! files) is identified: one line per probe, `name  label  distance`, where the label is
//! `unknown` when no enrolled identity is within the model's threshold. Files that cannot be
//! read are reported on stderr and skipped.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use twinscan::gallery::Gallery;
use twinscan::Model;

fn files(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut out: Vec<PathBuf> =
        std::fs::read_dir(dir)?.filter_map(|e| e.ok().map(|e| e.path())).filter(|p| p.is_file()).collect();
    out.sort();
    Ok(out)
}

fn run(model_path: &Path, enroll_dir: &Path, probes: &[PathBuf]) -> Result<(), Box<dyn std::error::Error>> {
    let model = Model::open(model_path)?;
    let mut gallery = Gallery::new(&model);
    let mut labels: Vec<PathBuf> = std::fs::read_dir(enroll_dir)?.filter_map(|e| e.ok().map(|e| e.path())).collect();
    labels.retain(|p| p.is_dir());
    labels.sort();
    for dir in &labels {
        let label = dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let done = gallery.enroll_files(&model, &label, &files(dir)?)?;
        for e in &done.failed {
            eprintln!("skipped: {e}");
        }
        eprintln!("enrolled {label}: {} image(s)", done.added);
    }
    let mut paths = Vec::new();
    for p in probes {
        if p.is_dir() {
            paths.extend(files(p)?);
        } else {
            paths.push(p.clone());
        }
    }
    for (path, embedding) in paths.iter().zip(model.embed_paths(&paths)) {
        let embedding = match embedding {
            Ok(e) => e,
            Err(e) => {
                eprintln!("skipped: {e}");
                continue;
            }
        };
        let found = gallery.identify(&model, &embedding, 1)?;
        let distance = found.candidates.first().map_or(f32::INFINITY, |c| c.verification.distance);
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        println!("{name}  {}  {distance:.3}", found.label().unwrap_or("unknown"));
    }
    Ok(())
}

fn main() -> ExitCode {
    let mut args: Vec<PathBuf> = std::env::args_os().skip(1).map(PathBuf::from).collect();
    let model = match args.iter().position(|a| a.as_os_str() == "--model") {
        Some(i) if i + 1 < args.len() => {
            let m = args.remove(i + 1);
            args.remove(i);
            m
        }
        _ => PathBuf::from("models/mnist-0-4-compact-proj-supcon.onnx"),
    };
    if args.len() < 2 {
        eprintln!("usage: match [--model MODEL] ENROLL_DIR PROBE...");
        return ExitCode::from(2);
    }
    match run(&model, &args[0], &args[1..]) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("match: {e}");
            ExitCode::from(2)
        }
    }
}
