//! Records as lines for people: results on stdout, notes (errors, the summary, files written)
//! on stderr. File names are escaped so that they can neither forge lines nor drive the
//! terminal.

use std::borrow::Cow;
use std::io::Write;
use std::path::Path;

use anyhow::Result;

use super::record::{Named, Record};

/// A path for text and CSV: see [`shown_text`]; bytes that are not UTF-8 appear as `\xNN`, so
/// such a name never prints like its U+FFFD twin.
pub fn shown(path: &Path) -> String {
    shown_bytes(path.as_os_str().as_encoded_bytes())
}

/// [`shown`] on a name's bytes.
pub fn shown_bytes(bytes: &[u8]) -> String {
    let mut out = String::new();
    for chunk in bytes.utf8_chunks() {
        out.push_str(&shown_text(chunk.valid()));
        for b in chunk.invalid() {
            out.push_str(&format!("\\x{b:02x}"));
        }
    }
    out
}

/// Text for a terminal or a line-based reader: control characters (a newline, a terminal
/// escape sequence) and backslashes are escaped (`\n`, `\u{1b}`, `\\`).
pub fn shown_text(text: &str) -> Cow<'_, str> {
    if !text.contains(|c: char| c.is_control() || c == '\\') {
        return text.into();
    }
    text.chars()
        .map(|c| if c.is_control() || c == '\\' { c.escape_default().to_string() } else { c.to_string() })
        .collect::<String>()
        .into()
}

fn path<K>(p: &Named<K>) -> String {
    p.path().map(shown).unwrap_or_default()
}

/// `  (reason)` when there is one.
fn because(reason: &Option<String>) -> String {
    reason.as_deref().map(|r| format!("  ({})", shown_text(r))).unwrap_or_default()
}

/// Writes `record` as text: results to `out`, notes to stderr.
pub fn write(record: &Record, out: &mut impl Write) -> Result<()> {
    match record {
        Record::Group(g) => {
            writeln!(out, "group {}{}", g.id, if g.exact { " (exact copies)" } else { "" })?;
            for m in &g.members {
                let distance = match (m.role, m.contained) {
                    ("keep", _) => String::new(),
                    (_, false) => format!("  distance {:.4}", m.distance),
                    (_, true) => format!("  distance {:.4}, contained", m.distance),
                };
                writeln!(out, "  {:<5} {} ({}x{}){distance}", m.role, path(&m.path), m.width, m.height)?;
            }
        }
        Record::Outlier(o) => writeln!(out, "outlier  score {:.4}  {}", o.score, path(&o.path))?,
        Record::Neighbour(n) => {
            let duplicate = if n.similar { "  (duplicate)" } else { "" };
            writeln!(out, "  {:.4}  {}{duplicate}", n.distance, path(&n.path))?
        }
        Record::Error(e) => eprintln!("twinscan: {}", shown_text(&e.error)),
        Record::Summary(s) => eprintln!(
            "twinscan: {} files: {} embedded, {} unchanged, {} not images, {} errors; {} groups ({} duplicates), {} outliers",
            s.files, s.embedded, s.unchanged, s.not_images, s.errors, s.groups, s.duplicates, s.outliers
        ),
        Record::Action(a) => {
            let what = match a.op {
                "move" => format!("move {} -> {}", path(&a.path), path(&a.to)),
                "link" => format!("link {} -> {}", path(&a.path), path(&a.keep)),
                _ => path(&a.path),
            };
            writeln!(out, "{:<8} {what}{}", a.status, because(&a.reason))?
        }
        Record::Journal(j) => {
            let p = path(&j.path);
            eprintln!("twinscan: journal {p} (twinscan undo {p} puts everything back)")
        }
        Record::Report(r) => eprintln!("twinscan: report written to {}", path(&r.path)),
        Record::Restored(u) => writeln!(out, "restored {}{}", path(&u.path), because(&u.reason))?,
        Record::Unchanged(u) => writeln!(out, "unchanged {}{}", path(&u.path), because(&u.reason))?,
        Record::Skipped(u) => writeln!(out, "skipped  {}{}", path(&u.path), because(&u.reason))?,
        Record::Failed(u) => writeln!(out, "failed   {}{}", path(&u.path), because(&u.reason))?,
        Record::Embedding(e) => {
            let values: Vec<String> = e.embedding.iter().map(|v| format!("{v:.6}")).collect();
            writeln!(out, "{}\t{}", path(&e.path), values.join(" "))?
        }
        Record::Comparison(c) => {
            let verdict = if c.similar { "similar" } else { "different" };
            writeln!(out, "distance     {:.4}  (threshold {:.4})", c.distance, c.threshold)?;
            writeln!(out, "probability  {:.4}", c.probability)?;
            writeln!(out, "verdict      {verdict}")?
        }
        Record::Model(m) => {
            writeln!(out, "model        {}", shown_text(&m.path))?;
            writeln!(out, "fingerprint  {}", m.fingerprint)?;
            for (k, v) in &m.metadata {
                writeln!(out, "{k} = {}", shown_text(v))?;
            }
        }
        Record::Enrolled(e) => writeln!(
            out,
            "{}: {} image(s) enrolled, {} in all; {} failed",
            shown_text(&e.label),
            e.added,
            e.embeddings,
            e.failed
        )?,
        Record::Verification(v) => {
            let word = if v.scores.accepted { "accepted" } else { "rejected" };
            writeln!(
                out,
                "{}: {word} as {} (distance {:.4}, threshold {:.4}, probability {:.4})",
                path(&v.probe),
                shown_text(&v.label),
                v.scores.distance,
                v.threshold,
                v.scores.probability
            )?
        }
        Record::Identification(i) => {
            let answer = i.label.as_deref().unwrap_or("unknown");
            let ranked: Vec<String> =
                i.candidates.iter().map(|c| format!("{} {:.4}", shown_text(&c.label), c.scores.distance)).collect();
            writeln!(out, "{}: {}  (nearest: {})", path(&i.probe), shown_text(answer), ranked.join(", "))?
        }
        Record::Label(l) => writeln!(out, "{}\t{}", shown_text(&l.label), l.embeddings)?,
        Record::Gallery(g) => {
            let threshold = g.threshold.map_or("the model's".into(), |t| format!("{t} (saved)"));
            eprintln!("{} label(s), model {}, threshold {threshold}", g.labels, g.model)
        }
        Record::Removed(r) if r.embeddings == 0 => eprintln!("twinscan: {}: not enrolled", shown_text(&r.label)),
        Record::Removed(r) => writeln!(out, "{}: removed ({} image(s))", shown_text(&r.label), r.embeddings)?,
    }
    Ok(())
}
