use std::fmt::Write as _;
use std::io::Write;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use twinscan::tower::TowerSpec;
use twinscan::Model;
use twinscan_lab::augment::{build_suite, grey_margin, load_photos, photos_sha256, select, Part, Score};
use twinscan_lab::train::{photo_parity, train_photos, Loss, PhotoConfig, PhotoEpoch, PhotoTrained};

use crate::exit::Code;

#[derive(Clone, Copy, clap::ValueEnum)]
pub enum PhotoLossArg {
    Infonce,
    Contrastive,
}

#[derive(clap::Args)]
pub struct Args {
    /// Folder of photos (searched recursively); each photo's part (train, calibrate, benchmark)
    /// follows from its file name, so the benchmark's photos are never trained on.
    #[arg(long)]
    data: PathBuf,
    #[arg(long, value_enum, default_value = "infonce")]
    loss: PhotoLossArg,
    /// InfoNCE temperature.
    #[arg(long, default_value_t = 0.1)]
    temperature: f32,
    /// Contrastive margin (distances of normalised embeddings lie in [0, 2]).
    #[arg(long, default_value_t = 1.0)]
    margin: f32,
    #[arg(long, default_value_t = 20)]
    epochs: usize,
    #[arg(long, default_value_t = 40)]
    steps: usize,
    /// Windows per step (each gives two views).
    #[arg(long, default_value_t = 128)]
    batch: usize,
    #[arg(long, default_value_t = 1e-3)]
    lr: f64,
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Embedding size.
    #[arg(long, default_value_t = 128)]
    dim: usize,
    /// Share of each step's windows that bring a burst-like neighbour of the same photo as a
    /// hard negative (0 to 1).
    #[arg(long, default_value_t = 0.0)]
    bursts: f32,
    /// Also compare images as grey, at a margin calibrated on the calibration suite
    /// (`twinscan_lab::augment::grey_margin`): grey and re-lit copies match.
    #[arg(long)]
    grey_view: bool,
    /// Output ONNX file; the model card (.md) and per-epoch metrics (.csv) go beside it.
    #[arg(long, short = 'o')]
    out: PathBuf,
}

/// Originals per calibration photo.
const CALIBRATION_ORIGINALS: usize = 3;
/// Seed of the calibration suite, fixed so that every run calibrates on the same images.
const CALIBRATION_SEED: u64 = 0xca1;

fn score_line(s: &Score) -> String {
    format!(
        "threshold {:.4}  precision {:.4}  recall {:.4}  F1 {:.4}",
        s.threshold,
        s.overall.precision(),
        s.overall.recall(),
        s.overall.f1()
    )
}

pub fn run(args: Args) -> Result<Code> {
    let started = Instant::now();
    let (photos, errors) = load_photos(&args.data, 512, 256)?;
    for e in &errors {
        eprintln!("twinscan: skipped {e}");
    }
    let train = select(&photos, Part::Train);
    let calibrate = select(&photos, Part::Calibrate);
    if train.is_empty() || calibrate.is_empty() {
        bail!(
            "{}: need photos in both the training and the calibration part (found {} and {})",
            args.data.display(),
            train.len(),
            calibrate.len()
        );
    }
    let suite = build_suite(&calibrate, CALIBRATION_ORIGINALS, CALIBRATION_SEED);
    let checksum = photos_sha256(&train);
    let loss = match args.loss {
        PhotoLossArg::Infonce => Loss::InfoNce { temperature: args.temperature },
        PhotoLossArg::Contrastive => Loss::Contrastive { margin: args.margin },
    };
    let config = PhotoConfig {
        spec: TowerSpec::photo(args.dim),
        loss,
        epochs: args.epochs,
        steps: args.steps,
        batch: args.batch,
        lr: args.lr,
        bursts: args.bursts,
        seed: args.seed,
        dataset: format!(
            "{} ({} training photos, pixels sha256 {})",
            args.data.display(),
            train.len(),
            &checksum[..16]
        ),
    };
    eprintln!("{} training photos, {} calibration photos ({} suite images)", train.len(), calibrate.len(), suite.len());
    let mut csv = String::from("epoch,loss,threshold,precision,recall,f1,train_seconds\n");
    let mut trained = train_photos(&config, &train, &suite, &mut |e| {
        eprintln!("epoch {:>3}  loss {:.4}  {}  {:.1} s", e.epoch, e.loss, score_line(&e.calibration), e.train_seconds);
        let _ = writeln!(csv, "{}", epoch_cells(e, 6, 3).join(","));
    })?;
    let mut bytes = trained.to_onnx()?;
    let model = Model::from_bytes(&bytes, &args.out.display().to_string())?;
    let probe = &suite[..suite.len().min(256)];
    let max_diff = photo_parity(&trained, &model, probe)?;
    if max_diff > 1e-4 {
        bail!("exported model differs from the trained network by {max_diff} (limit 1e-4); not written");
    }
    if args.grey_view {
        trained.meta.grey_margin = grey_margin(&model, &suite)?;
        bytes = trained.to_onnx()?;
    }
    if let Some(dir) = args.out.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    std::fs::write(&args.out, &bytes).with_context(|| format!("writing {}", args.out.display()))?;
    std::fs::write(args.out.with_extension("csv"), csv)?;
    let command: Vec<String> = std::env::args().collect();
    let run = Run { command: command.join(" "), checksum, parity: max_diff, seconds: started.elapsed().as_secs_f64() };
    let card = render(&trained, &run, args.bursts, &args.out);
    std::fs::write(args.out.with_extension("md"), card)?;
    let best = &trained.history[trained.best_epoch - 1].calibration;
    writeln!(
        std::io::stdout().lock(),
        "{}: best epoch {}, calibration {}, parity {max_diff:.1e}",
        args.out.display(),
        trained.best_epoch,
        score_line(best)
    )?;
    Ok(Code::Nothing)
}

/// One epoch's figures, in the order of the CSV header and the card's table: epoch, loss,
/// threshold, precision, recall, F1 with `digits` decimals, then seconds with `second_digits`.
fn epoch_cells(e: &PhotoEpoch, digits: usize, second_digits: usize) -> Vec<String> {
    let c = &e.calibration;
    let mut cells = vec![e.epoch.to_string()];
    for v in [e.loss, f64::from(c.threshold), c.overall.precision(), c.overall.recall(), c.overall.f1()] {
        cells.push(format!("{v:.digits$}"));
    }
    cells.push(format!("{:.second_digits$}", e.train_seconds));
    cells
}

/// How a run went, for its card.
struct Run {
    command: String,
    checksum: String,
    parity: f32,
    seconds: f64,
}

fn render(t: &PhotoTrained, run: &Run, bursts: f32, file: &std::path::Path) -> String {
    let Run { checksum, parity, seconds, .. } = run;
    let p = &t.meta.provenance;
    let name = file.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let best = &t.history[t.best_epoch - 1].calibration;
    let command = super::card::reproducible(&run.command);
    let mut s = format!("# {name}\n\nTower `{}`, loss `{}`, data {}.\n\n", p.tower, p.loss, p.dataset);
    s += &format!("## Reproduce\n\n```sh\nscripts/fetch-data.sh photos\n{command}\n```\n\n");
    s += "Self-supervised: two random copies of one window of a training photo are a positive pair, every other \
          view in the step a negative. The epoch kept and the threshold are chosen by the best F1 on the \
          near-duplicate suite built from the calibration photos (never trained on); the benchmark photos are \
          a third part, see `docs/benchmarks.md`.";
    if bursts > 0.0 {
        s += &format!(
            " A share of {bursts} of the windows bring a burst-like neighbour of the same photo (moved by a fifth \
             to three tenths of its size) as one more window: a hard negative."
        );
    }
    s += "\n\n";
    s += "## Measured (calibration suite)\n\n| what | value |\n| --- | --- |\n";
    s += &format!("| threshold (distance) | {:.5} |\n", t.meta.threshold);
    s += &format!(
        "| precision / recall / F1 at threshold | {:.4} / {:.4} / {:.4} |\n",
        best.overall.precision(),
        best.overall.recall(),
        best.overall.f1()
    );
    for (kind, recall) in &best.per_kind {
        s += &format!("| recall, {} | {:.4} |\n", kind.name(), recall);
    }
    if let Some(m) = t.meta.grey_margin {
        s += &format!("| grey view margin (least distance that adds no false positive) | {m:.5} |\n");
    }
    s += &format!("| best epoch | {} of {} |\n", t.best_epoch, p.epochs);
    s += &format!("| tract vs candle, max abs difference on 256 suite images | {parity:.1e} |\n");
    s += &format!("| seed | {} |\n| training data sha256 | `{checksum}` |\n| wall time | {seconds:.0} s |\n\n", p.seed);
    s += "## Per epoch\n\n| epoch | loss | threshold | precision | recall | F1 | seconds |\n| ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n";
    for e in &t.history {
        s += &format!("| {} |\n", epoch_cells(e, 4, 1).join(" | "));
    }
    s
}
