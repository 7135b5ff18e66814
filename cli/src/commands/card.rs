//! Model cards: how a bundled model was made and what it measured.

use std::path::Path;

use twinscan_lab::evaluate::PairReport;
use twinscan_lab::train::Trained;

pub struct Card<'a> {
    pub trained: &'a Trained,
    pub command: &'a str,
    pub data_checksum: &'a str,
    pub train: PairReport,
    pub test: PairReport,
    pub parity: f32,
    pub seconds: f64,
    pub file: &'a Path,
}

/// The command line as anyone can run it from a checkout: the binary's path replaced by cargo.
pub fn reproducible(command: &str) -> String {
    let program = std::env::args().next().unwrap_or_default();
    command.replacen(&program, "cargo run --release -p twinscan-cli --features lab --", 1)
}

pub fn render(c: &Card) -> String {
    let m = &c.trained.meta;
    let p = &m.provenance;
    let name = c.file.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let mut s = format!("# {name}\n\n");
    s += &format!("Tower `{}`, loss `{}`, data {}.\n\n", p.tower, p.loss, p.dataset);
    s += "## Reproduce\n\n```sh\nscripts/fetch-data.sh\n";
    let command = reproducible(c.command);
    s += &format!("{command}\n```\n\n");
    s += "## Measured\n\n| what | value |\n| --- | --- |\n";
    s += &format!("| training-pair accuracy ({} pairs, at threshold) | {:.4} |\n", c.train.pairs, c.train.accuracy);
    s += &format!("| test-pair accuracy ({} pairs, at threshold) | {:.4} |\n", c.test.pairs, c.test.accuracy);
    s += &format!("| test-pair ROC AUC | {:.4} |\n", c.test.auc);
    s += &format!(
        "| best validation accuracy (epoch {}) | {:.4} |\n",
        c.trained.best_epoch,
        p.accuracy.unwrap_or(f64::NAN)
    );
    s += &format!("| threshold (distance) | {:.5} |\n", m.threshold);
    s += &format!("| head | p = sigmoid({:.4} - {:.4} d) |\n", m.head.a, m.head.b);
    s += &format!("| tract vs candle, max abs difference on 256 test images | {:.1e} |\n", c.parity);
    s += &format!("| seed / epochs | {} / {} |\n", p.seed, p.epochs);
    s += &format!("| training data sha256 | `{}` |\n", c.data_checksum);
    s += &format!("| wall time | {:.0} s |\n\n", c.seconds);
    let stem = c.file.file_stem().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    s += &format!(
        "## Pictures\n\nMade by `scripts/plot-models.sh {stem}` (matplotlib, and onnxruntime for the pairs).\n\n\
         ![training curves]({stem}-curves.png)\n\n![sample test pairs]({stem}-pairs.png)\n\n"
    );
    s += "## Per epoch\n\n| epoch | loss | train acc | val acc | threshold | seconds |\n| ---: | ---: | ---: | ---: | ---: | ---: |\n";
    for e in &c.trained.history {
        s += &format!(
            "| {} | {:.4} | {:.4} | {:.4} | {:.4} | {:.1} |\n",
            e.epoch, e.loss, e.train_accuracy, e.val_accuracy, e.threshold, e.train_seconds
        );
    }
    s
}
