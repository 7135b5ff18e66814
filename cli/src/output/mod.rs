//! Output: every command builds [`Record`]s and hands them to one [`Printer`], which writes
//! them as text for people, JSON Lines or CSV; the formats cannot drift apart.

mod csv;
pub mod record;
pub mod text;

use std::io::Write;

use anyhow::Result;
pub use record::Record;

/// How records are written.
#[derive(Clone, Copy, PartialEq, Eq, Debug, clap::ValueEnum)]
pub enum Format {
    /// Lines for people.
    Text,
    /// JSON Lines, one record per line (schema: docs/cli.md).
    Json,
    /// One CSV row per group member, outlier, neighbour, action or error.
    Csv,
}

/// Writes records in one format: results on stdout, and (in text and CSV) notes such as the
/// summary on stderr.
pub struct Printer {
    format: Format,
    /// Whether the CSV header is out.
    header: bool,
    /// The query whose neighbours text is listing, so that its name heads them once.
    query: Option<std::path::PathBuf>,
}

impl Printer {
    /// A printer for `format`.
    pub fn new(format: Format) -> Printer {
        Printer { format, header: false, query: None }
    }

    /// A printer for JSON Lines when `json`, else text.
    pub fn json_or_text(json: bool) -> Printer {
        Printer::new(if json { Format::Json } else { Format::Text })
    }

    /// The format.
    pub fn format(&self) -> Format {
        self.format
    }

    /// Writes one record.
    pub fn print(&mut self, record: &Record) -> Result<()> {
        let mut out = std::io::stdout().lock();
        match self.format {
            Format::Json => writeln!(out, "{}", serde_json::to_string(record)?)?,
            Format::Csv => match csv::rows(record)? {
                Some(rows) => {
                    if !self.header {
                        writeln!(out, "{}", csv::HEADER.join(","))?;
                        self.header = true;
                    }
                    for row in rows {
                        writeln!(out, "{row}")?;
                    }
                }
                None => text::write(record, &mut out)?,
            },
            Format::Text => {
                if let Record::Neighbour(n) = record {
                    if n.query.path() != self.query.as_deref() {
                        self.query = n.query.path().map(Into::into);
                        writeln!(out, "{}", n.query.path().map(text::shown).unwrap_or_default())?;
                    }
                }
                text::write(record, &mut out)?
            }
        }
        Ok(())
    }
}
