//! `scan`, `outliers` and `query`: folders to an up-to-date index, then duplicate groups,
//! outliers, or the neighbours of new images.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use serde_json::json;
use sha2::{Digest, Sha256};
use twinscan::contain::ContainmentRule;
use twinscan::detect::{duplicate_groups, outliers, Group, Outlier, OutlierRule};
use twinscan::index::{Entry, Index};
use twinscan::scan::{collect_files, update, UpdateOptions, UpdateReport, WalkOptions};
use twinscan::search::{Purpose, Search, SearchKind};
use twinscan::store::{self, FileLock};
use twinscan::{Model, DEFAULT_BATCH};

use super::act::{act, ActArgs};
use super::{json_line, path_text, put_path, report_error, shown, shown_text, ModelArg};
use crate::exit::Code;

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Lines for people.
    Text,
    /// JSON Lines: typed records `group`, `outlier`, `neighbour`, `error`, `summary`.
    Json,
    /// One CSV row per group member, outlier or error.
    Csv,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SearchArg {
    /// Exact below the measured crossover (300,000 images for duplicate groups, 50,000 for
    /// outliers; never for `query`), the HNSW graph from there on.
    Auto,
    /// Compare every pair.
    Exact,
    /// The HNSW graph (approximate; exact anyway for cosine models and with --mirror-rotate).
    Hnsw,
}

impl SearchArg {
    fn kind(self) -> SearchKind {
        match self {
            SearchArg::Auto => SearchKind::Auto,
            SearchArg::Exact => SearchKind::Exact,
            SearchArg::Hnsw => SearchKind::Hnsw,
        }
    }
}

#[derive(clap::Args)]
pub struct IndexArgs {
    #[command(flatten)]
    model: ModelArg,
    /// Index file [default: `$XDG_CACHE_HOME/twinscan/<hash of the folders>.twinscan`, or under
    /// `~/.cache`]. Never written inside the scanned folders unless asked.
    #[arg(long, value_name = "PATH")]
    index: Option<PathBuf>,
    /// Discard the index and embed everything again (needed after a model change).
    #[arg(long)]
    rebuild: bool,
    /// Follow symbolic links (loops are detected and reported).
    #[arg(long)]
    follow_links: bool,
    /// Neighbour search.
    #[arg(long, value_enum, default_value = "auto")]
    search: SearchArg,
    #[arg(long, value_enum, default_value = "text")]
    format: Format,
    /// Same as `--format json`.
    #[arg(long, conflicts_with = "format")]
    json: bool,
    /// Same as `--format csv`.
    #[arg(long, conflicts_with_all = ["format", "json"])]
    csv: bool,
    /// Also write the results as one self-contained HTML page (thumbnails inline).
    #[arg(long, value_name = "PATH")]
    html: Option<PathBuf>,
}

impl IndexArgs {
    fn format(&self) -> Format {
        if self.json {
            Format::Json
        } else if self.csv {
            Format::Csv
        } else {
            self.format
        }
    }
}

#[derive(clap::Args)]
pub struct ScanArgs {
    #[command(flatten)]
    common: IndexArgs,
    /// Distance at or below which two images are duplicates [default: the model's].
    #[arg(long)]
    threshold: Option<f32>,
    /// Group by distance alone: skip the containment check, which joins crops and framed
    /// copies beyond the threshold when one image is a part of the other.
    #[arg(long)]
    no_containment: bool,
    /// Also report outliers.
    #[arg(long)]
    outliers: bool,
    #[command(flatten)]
    outlier: OutlierArgs,
    #[command(flatten)]
    act: ActArgs,
    /// Folders (or files) to scan.
    #[arg(required = true, value_name = "DIR")]
    roots: Vec<PathBuf>,
}

#[derive(clap::Args)]
pub struct OutlierArgs {
    /// Neighbours per outlier score.
    #[arg(long, default_value_t = 5)]
    k: usize,
    /// Flag the N highest scores instead of the robust rule (median + 3 x 1.4826 x MAD).
    #[arg(long, value_name = "N")]
    top: Option<usize>,
}

#[derive(clap::Args)]
pub struct OutliersArgs {
    #[command(flatten)]
    common: IndexArgs,
    #[command(flatten)]
    outlier: OutlierArgs,
    /// Folders (or files) to scan.
    #[arg(required = true, value_name = "DIR")]
    roots: Vec<PathBuf>,
}

#[derive(clap::Args)]
pub struct QueryArgs {
    #[command(flatten)]
    model: ModelArg,
    /// Index written by `twinscan scan`.
    #[arg(long, value_name = "PATH")]
    index: PathBuf,
    /// Neighbours per image.
    #[arg(long, default_value_t = 10)]
    k: usize,
    /// Neighbour search. `auto` is exact here: one pass over even 100,000 vectors costs less
    /// than building the graph.
    #[arg(long, value_enum, default_value = "auto")]
    search: SearchArg,
    #[arg(long)]
    json: bool,
    /// Images to look up (not added to the index).
    #[arg(required = true, value_name = "IMAGE")]
    images: Vec<PathBuf>,
}

fn default_index(roots: &[PathBuf]) -> Result<PathBuf> {
    let mut names: Vec<String> =
        roots.iter().map(|r| std::fs::canonicalize(r).unwrap_or_else(|_| r.clone()).display().to_string()).collect();
    names.sort();
    let hash = Sha256::digest(names.join("\n").as_bytes());
    let base = match std::env::var_os("XDG_CACHE_HOME").filter(|v| !v.is_empty()) {
        Some(dir) => PathBuf::from(dir),
        None => PathBuf::from(
            std::env::var_os("HOME").context("no HOME or XDG_CACHE_HOME for the default index; pass --index")?,
        )
        .join(".cache"),
    };
    let hex: String = hash.iter().take(8).map(|b| format!("{b:02x}")).collect();
    Ok(base.join("twinscan").join(format!("{hex}.twinscan")))
}

/// Loads the index (or starts one), brings it up to date with the folders, saves it.
fn refresh(args: &IndexArgs, roots: &[PathBuf], model: &Model) -> Result<(Index, UpdateReport, usize)> {
    let path = match &args.index {
        Some(p) => p.clone(),
        None => default_index(roots)?,
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let _lock = FileLock::acquire(&path)?;
    let invariance = model.invariance().as_str();
    let fresh = args.rebuild || !path.exists();
    let mut index = if fresh {
        Index::new(model.fingerprint(), invariance)
    } else {
        let index = Index::load(&path)?;
        index.check_model(&path, model)?;
        index
    };
    let (mut files, walk_errors) = collect_files(roots, &WalkOptions { follow_links: args.follow_links });
    // An index kept inside a scanned folder (and its lock and temporary files) is not an image.
    let dir = std::fs::canonicalize(path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."))).ok();
    let own = |f: &Path| {
        f.file_name().is_some_and(|n| store::is_companion(&path, n))
            && f.parent()
                .and_then(|d| std::fs::canonicalize(if d.as_os_str().is_empty() { Path::new(".") } else { d }).ok())
                == dir
    };
    files.retain(|f| !own(f));
    let bar = std::io::stderr().is_terminal().then(|| {
        let bar = indicatif::ProgressBar::new(0);
        bar.set_style(
            indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} images embedded  {eta} left")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        bar
    });
    let progress = |done: usize, total: usize| {
        if let Some(bar) = &bar {
            bar.set_length(total as u64);
            bar.set_position(done as u64);
        }
    };
    let options = UpdateOptions { batch: DEFAULT_BATCH * 4, follow_links: args.follow_links };
    let mut report = update(&mut index, &files, model, &options, crate::interrupt::flag(), &progress);
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    report.errors.splice(0..0, walk_errors);
    if fresh || report.embedded > 0 || report.removed > 0 {
        index.save(&path)?;
    }
    if report.stopped {
        eprintln!(
            "twinscan: interrupted; {} images embedded so far are saved in {}",
            index.entries.len(),
            path.display()
        );
    }
    Ok((index, report, files.len()))
}

fn print_errors(report: &UpdateReport, format: Format, out: &mut impl Write) -> Result<()> {
    for e in &report.errors {
        let path = e.path().unwrap_or(Path::new(""));
        match format {
            Format::Json => report_error(true, path, e),
            Format::Csv => writeln!(out, "error,,{},,,,,{}", csv(&shown(path)), csv(&shown_text(&e.to_string())))?,
            Format::Text => report_error(false, path, e),
        }
    }
    Ok(())
}

/// A CSV field, quoted when it must be.
/// One CSV cell: quoted when it holds a separator, quote or line break, and prefixed with `'`
/// when it starts like a formula (`=`, `+`, `-`, `@`, tab, carriage return), so that a
/// spreadsheet shows a crafted file name instead of running it.
pub fn csv(s: &str) -> String {
    let s = if s.starts_with(['=', '+', '-', '@', '\t', '\r']) { format!("'{s}") } else { s.to_string() };
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s
    }
}

fn print_groups(groups: &[Group], entries: &[Entry], format: Format, out: &mut impl Write) -> Result<()> {
    for (id, g) in groups.iter().enumerate() {
        let keep = &entries[g.members[0].entry];
        match format {
            Format::Json => {
                let members: Vec<_> = g
                    .members
                    .iter()
                    .map(|m| {
                        let mut member = json!({"distance": m.distance, "exact": m.exact, "contained": m.contained});
                        put_path(&mut member, "path", &entries[m.entry].path);
                        member
                    })
                    .collect();
                let mut record = json!({"type": "group", "id": id + 1, "exact": g.exact(), "members": members});
                put_path(&mut record, "keep", &keep.path);
                json_line(&record);
            }
            Format::Csv => {
                for (i, m) in g.members.iter().enumerate() {
                    let role = if i == 0 { "keep" } else { "duplicate" };
                    let path = shown(&entries[m.entry].path);
                    writeln!(out, "group,{},{},{role},{},{},,", id + 1, csv(&path), m.distance, m.exact)?;
                }
            }
            Format::Text => {
                writeln!(out, "group {}{}", id + 1, if g.exact() { " (exact copies)" } else { "" })?;
                for (i, m) in g.members.iter().enumerate() {
                    let e = &entries[m.entry];
                    let role = if i == 0 {
                        "keep"
                    } else if m.exact {
                        "exact"
                    } else {
                        "near"
                    };
                    let distance = match (i, m.contained) {
                        (0, _) => String::new(),
                        (_, false) => format!("  distance {:.4}", m.distance),
                        (_, true) => format!("  distance {:.4}, contained", m.distance),
                    };
                    writeln!(out, "  {role:<5} {} ({}x{}){distance}", shown(&e.path), e.dims.0, e.dims.1)?;
                }
            }
        }
    }
    Ok(())
}

fn print_outliers(found: &[Outlier], entries: &[Entry], format: Format, out: &mut impl Write) -> Result<()> {
    for o in found {
        let path = &entries[o.entry].path;
        match format {
            Format::Json => {
                let mut record = json!({"type": "outlier", "score": o.score});
                put_path(&mut record, "path", path);
                json_line(&record);
            }
            Format::Csv => writeln!(out, "outlier,,{},,,,{},", csv(&shown(path)), o.score)?,
            Format::Text => writeln!(out, "outlier  score {:.4}  {}", o.score, shown(path))?,
        }
    }
    Ok(())
}

struct Found {
    groups: usize,
    duplicates: usize,
    outliers: usize,
}

fn print_summary(report: &UpdateReport, files: usize, found: &Found, format: Format) {
    let line = json!({
        "type": "summary", "files": files, "embedded": report.embedded, "unchanged": report.unchanged,
        "removed": report.removed, "not_images": report.not_images, "errors": report.errors.len(),
        "interrupted": report.stopped, "groups": found.groups, "duplicates": found.duplicates, "outliers": found.outliers,
    });
    match format {
        Format::Json => json_line(&line),
        _ => eprintln!(
            "twinscan: {files} files: {} embedded, {} unchanged, {} not images, {} errors; {} groups ({} duplicates), {} outliers",
            report.embedded,
            report.unchanged,
            report.not_images,
            report.errors.len(),
            found.groups,
            found.duplicates,
            found.outliers
        ),
    }
}

/// Writes the `--html` page, if asked for.
fn write_html(
    args: &IndexArgs,
    roots: &[PathBuf],
    model: &Model,
    shown: (&Index, Option<&[Group]>, Option<&[Outlier]>),
    report: &UpdateReport,
    (files, found): (usize, &Found),
    started: Instant,
) -> Result<()> {
    let Some(path) = &args.html else { return Ok(()) };
    let (index, groups, outliers) = shown;
    let errors =
        report.errors.iter().map(|e| (e.path().map(path_text).unwrap_or_default(), e.kind(), e.to_string())).collect();
    let summary = vec![
        ("files", files.to_string()),
        ("embedded", report.embedded.to_string()),
        ("unchanged", report.unchanged.to_string()),
        ("not images", report.not_images.to_string()),
        ("errors", report.errors.len().to_string()),
        ("groups", found.groups.to_string()),
        ("duplicates", found.duplicates.to_string()),
        ("outliers", found.outliers.to_string()),
        ("model", model.label().to_string()),
        ("time", format!("{:.1} s", started.elapsed().as_secs_f64())),
    ];
    let page = crate::report::Report { roots, entries: &index.entries, groups, outliers, errors, summary };
    crate::report::write(path, &page)?;
    if args.format() == Format::Json {
        json_line(&json!({"type": "report", "path": path_text(path)}));
    } else {
        eprintln!("twinscan: report written to {}", path.display());
    }
    Ok(())
}

fn rule(args: &OutlierArgs) -> OutlierRule {
    args.top.map_or(OutlierRule::Robust, OutlierRule::Top)
}

pub fn run_scan(args: ScanArgs) -> Result<Code> {
    let started = Instant::now();
    let model = args.common.model.load()?;
    let threshold = args.threshold.unwrap_or(model.meta().threshold);
    if !(threshold.is_finite() && threshold >= 0.0) {
        bail!("--threshold must be a non-negative distance");
    }
    let format = args.common.format();
    args.act.check(&args.roots)?;
    let (index, report, files) = refresh(&args.common, &args.roots, &model)?;
    let search = args.common.search.kind();
    let containment = (!args.no_containment).then(ContainmentRule::default);
    let groups = duplicate_groups(&index.entries, &model, threshold, search, containment.as_ref())?;
    let found_outliers = if args.outliers {
        outliers(&index.entries, &model, args.outlier.k, rule(&args.outlier), search)?
    } else {
        Vec::new()
    };
    let mut out = std::io::stdout().lock();
    if format == Format::Csv {
        writeln!(out, "type,group,path,role,distance,exact,score,error")?;
    }
    print_groups(&groups, &index.entries, format, &mut out)?;
    print_outliers(&found_outliers, &index.entries, format, &mut out)?;
    print_errors(&report, format, &mut out)?;
    let found = Found {
        groups: groups.len(),
        duplicates: groups.iter().map(|g| g.members.len() - 1).sum(),
        outliers: found_outliers.len(),
    };
    print_summary(&report, files, &found, format);
    // Before any action, so that the page shows every file where the scan found it.
    let asked = args.outliers.then_some(found_outliers.as_slice());
    write_html(&args.common, &args.roots, &model, (&index, Some(&groups), asked), &report, (files, &found), started)?;
    if report.stopped {
        if args.act.apply {
            eprintln!("twinscan: interrupted before acting; nothing was moved or linked");
        }
        return Ok(Code::Interrupted);
    }
    if let Some(code) = act(&args.act, &groups, &index.entries, &args.roots, format)? {
        return Ok(code);
    }
    Ok(if found.groups + found.outliers > 0 { Code::Found } else { Code::Nothing })
}

pub fn run_outliers(args: OutliersArgs) -> Result<Code> {
    let started = Instant::now();
    let model = args.common.model.load()?;
    let format = args.common.format();
    let (index, report, files) = refresh(&args.common, &args.roots, &model)?;
    let found_outliers =
        outliers(&index.entries, &model, args.outlier.k, rule(&args.outlier), args.common.search.kind())?;
    let mut out = std::io::stdout().lock();
    if format == Format::Csv {
        writeln!(out, "type,group,path,role,distance,exact,score,error")?;
    }
    print_outliers(&found_outliers, &index.entries, format, &mut out)?;
    print_errors(&report, format, &mut out)?;
    let found = Found { groups: 0, duplicates: 0, outliers: found_outliers.len() };
    print_summary(&report, files, &found, format);
    write_html(
        &args.common,
        &args.roots,
        &model,
        (&index, None, Some(&found_outliers)),
        &report,
        (files, &found),
        started,
    )?;
    if report.stopped {
        return Ok(Code::Interrupted);
    }
    Ok(if found.outliers > 0 { Code::Found } else { Code::Nothing })
}

pub fn run_query(args: QueryArgs) -> Result<Code> {
    let model = args.model.load()?;
    let index = Index::load(&args.index)?;
    index.check_model(&args.index, &model)?;
    let vectors = index.entries.iter().map(|e| e.embedding.as_slice()).collect();
    let search = Search::new(vectors, &model, args.search.kind(), Purpose::Query);
    let mut out = std::io::stdout().lock();
    let (mut failed, mut matched) = (false, false);
    for (path, result) in args.images.iter().zip(model.embed_paths(&args.images)) {
        let embedding = match result {
            Ok(e) => e,
            Err(e) => {
                failed = true;
                report_error(args.json, path, &e);
                continue;
            }
        };
        if !args.json {
            writeln!(out, "{}", shown(path))?;
        }
        for (i, d) in search.nearest(&embedding, args.k)? {
            let p = index.entries[i].path.as_path();
            let similar = d <= model.meta().threshold;
            matched |= similar;
            if args.json {
                let mut record = json!({"type": "neighbour", "distance": d, "similar": similar});
                put_path(&mut record, "query", path);
                put_path(&mut record, "path", p);
                json_line(&record);
            } else {
                writeln!(out, "  {d:.4}  {}{}", shown(p), if similar { "  (duplicate)" } else { "" })?;
            }
        }
    }
    Ok(if failed {
        Code::Error
    } else if matched {
        Code::Found
    } else {
        Code::Nothing
    })
}
