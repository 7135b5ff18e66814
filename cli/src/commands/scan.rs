//! `scan`, `outliers` and `query`: folders to an up-to-date index, then duplicate groups,
//! outliers, or the neighbours of new images.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result};
use twinscan::contain::ContainmentRule;
use twinscan::detect::{Group, Outlier};
use twinscan::{
    Collection, GroupOptions, IndexLocation, Model, OpenOptions, OutlierOptions, OutlierRule, QueryOptions,
    RefreshOptions, RefreshReport, SearchKind,
};

use super::act::{act, ActArgs};
use super::ModelArg;
use crate::exit::Code;
use crate::output::record::{self, Failure, Named, Record, Summary};
use crate::output::{Format, Printer};

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SearchArg {
    /// Exact below the measured crossover (300,000 distinct images; never for `query`), the
    /// HNSW graph from there on.
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

/// Opens the collection of `roots` and brings it up to date, drawing progress on a terminal.
fn refresh(args: &IndexArgs, roots: &[PathBuf], model: Model) -> Result<(Collection, RefreshReport)> {
    let index = match &args.index {
        Some(path) => path.clone(),
        None => twinscan::cache_path(roots).context("no folder for the default index; pass --index")?,
    };
    let index = IndexLocation::File(index);
    let open = OpenOptions { index, rebuild: args.rebuild };
    let mut collection = Collection::open(model, roots, &open).map_err(crate::advice)?;
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
    let options = RefreshOptions {
        follow_links: args.follow_links,
        stop: Some(crate::interrupt::flag()),
        progress: Some(&progress),
        search: args.search.kind(),
        ..RefreshOptions::default()
    };
    let report = collection.refresh(&options)?;
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    if report.stopped {
        let kept = collection.index_path().map(|p| format!(" are saved in {}", p.display())).unwrap_or_default();
        eprintln!("twinscan: interrupted; {} images embedded so far{kept}", collection.entries().len());
    }
    Ok((collection, report))
}

/// Prints the groups, outliers, errors and summary of a scan.
fn print_found(
    printer: &mut Printer,
    groups: &[Group],
    outliers: &[Outlier],
    report: &RefreshReport,
) -> Result<Summary> {
    for (i, g) in groups.iter().enumerate() {
        printer.print(&group_record(i + 1, g))?;
    }
    for o in outliers {
        printer.print(&Record::Outlier(record::Outlier { path: Named::of(&o.entry.path), score: o.score }))?;
    }
    for e in &report.errors {
        printer.print(&Record::Error(Failure::of(e.path().unwrap_or(std::path::Path::new("")), e)))?;
    }
    let summary = Summary {
        files: report.files,
        embedded: report.embedded,
        unchanged: report.unchanged,
        removed: report.removed,
        not_images: report.not_images,
        errors: report.errors.len(),
        interrupted: report.stopped,
        groups: groups.len(),
        duplicates: groups.iter().map(|g| g.copies().len()).sum(),
        outliers: outliers.len(),
    };
    Ok(summary)
}

fn group_record(id: usize, g: &Group) -> Record {
    let members = g
        .members
        .iter()
        .enumerate()
        .map(|(i, m)| record::Member {
            path: Named::of(&m.entry.path),
            role: match (i, m.exact) {
                (0, _) => "keep",
                (_, true) => "exact",
                (_, false) => "near",
            },
            distance: m.distance,
            exact: m.exact,
            contained: m.contained,
            width: m.entry.dims.0,
            height: m.entry.dims.1,
        })
        .collect();
    Record::Group(record::Group { id, exact: g.exact(), keep: Named::of(&g.keep().path), members })
}

/// Writes the `--html` page, if asked for.
fn write_html(
    args: &IndexArgs,
    collection: &Collection,
    found: (Option<&[Group]>, Option<&[Outlier]>),
    report: &RefreshReport,
    summary: &Summary,
    started: Instant,
) -> Result<Option<Record>> {
    let Some(path) = &args.html else { return Ok(None) };
    let errors = report
        .errors
        .iter()
        .map(|e| (e.path().map(|p| p.to_string_lossy().into_owned()).unwrap_or_default(), e.kind(), e.to_string()))
        .collect();
    let lines = vec![
        ("files", summary.files.to_string()),
        ("embedded", summary.embedded.to_string()),
        ("unchanged", summary.unchanged.to_string()),
        ("not images", summary.not_images.to_string()),
        ("errors", summary.errors.to_string()),
        ("groups", summary.groups.to_string()),
        ("duplicates", summary.duplicates.to_string()),
        ("outliers", summary.outliers.to_string()),
        ("model", collection.model().label().to_string()),
        ("time", format!("{:.1} s", started.elapsed().as_secs_f64())),
    ];
    let (groups, outliers) = found;
    let page = crate::report::Report { roots: collection.roots(), groups, outliers, errors, summary: lines };
    crate::report::write(path, &page)?;
    Ok(Some(Record::Report(record::Written { path: Named::of(path) })))
}

fn outlier_options(args: &OutlierArgs, search: SearchKind) -> OutlierOptions {
    OutlierOptions { k: args.k, rule: args.top.map_or(OutlierRule::Robust, OutlierRule::Top), search }
}

pub fn run_scan(args: ScanArgs) -> Result<Code> {
    let started = Instant::now();
    let model = args.common.model.load()?;
    let options = GroupOptions {
        threshold: args.threshold,
        containment: (!args.no_containment).then(ContainmentRule::default),
        search: args.common.search.kind(),
    };
    // Refused before a long scan rather than after it (the library checks again).
    options.threshold(&model).context("--threshold")?;
    args.act.check(&args.roots)?;
    let mut printer = Printer::new(args.common.format());
    let (collection, report) = refresh(&args.common, &args.roots, model)?;
    let groups = collection.groups(&options)?;
    let outliers = match args.outliers {
        true => collection.outliers(&outlier_options(&args.outlier, args.common.search.kind()))?,
        false => Vec::new(),
    };
    let summary = print_found(&mut printer, &groups, &outliers, &report)?;
    let found = summary.groups + summary.outliers;
    // Before any action, so that the page shows every file where the scan found it.
    let shown = (Some(groups.as_slice()), args.outliers.then_some(outliers.as_slice()));
    let page = write_html(&args.common, &collection, shown, &report, &summary, started)?;
    printer.print(&Record::Summary(summary))?;
    if let Some(page) = page {
        printer.print(&page)?;
    }
    if report.stopped {
        if args.act.apply {
            eprintln!("twinscan: interrupted before acting; nothing was moved or linked");
        }
        return Ok(Code::Interrupted);
    }
    if let Some(code) = act(&args.act, &collection, &groups, &mut printer)? {
        return Ok(code);
    }
    Ok(if found > 0 { Code::Found } else { Code::Nothing })
}

pub fn run_outliers(args: OutliersArgs) -> Result<Code> {
    let started = Instant::now();
    let model = args.common.model.load()?;
    let mut printer = Printer::new(args.common.format());
    let (collection, report) = refresh(&args.common, &args.roots, model)?;
    let outliers = collection.outliers(&outlier_options(&args.outlier, args.common.search.kind()))?;
    let summary = print_found(&mut printer, &[], &outliers, &report)?;
    let found = summary.outliers;
    let page = write_html(&args.common, &collection, (None, Some(&outliers)), &report, &summary, started)?;
    printer.print(&Record::Summary(summary))?;
    if let Some(page) = page {
        printer.print(&page)?;
    }
    if report.stopped {
        return Ok(Code::Interrupted);
    }
    Ok(if found > 0 { Code::Found } else { Code::Nothing })
}

pub fn run_query(args: QueryArgs) -> Result<Code> {
    let model = args.model.load()?;
    let collection = Collection::read(model, &args.index).map_err(crate::advice)?;
    let threshold = collection.model().meta().threshold;
    let mut printer = Printer::json_or_text(args.json);
    let options = QueryOptions { k: args.k, search: args.search.kind() };
    let (mut failed, mut matched) = (false, false);
    for (query, answer) in args.images.iter().zip(collection.query(&args.images, &options)) {
        match answer {
            Err(e) => {
                failed = true;
                printer.print(&Record::Error(Failure::of(query, &e)))?;
            }
            Ok(neighbours) => {
                for n in neighbours {
                    let similar = n.distance <= threshold;
                    matched |= similar;
                    printer.print(&Record::Neighbour(record::Neighbour {
                        query: Named::of(query),
                        path: Named::of(&n.entry.path),
                        distance: n.distance,
                        similar,
                    }))?;
                }
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
