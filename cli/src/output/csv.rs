//! Records as CSV rows: the JSON fields, one column each, and a group as one row per member with
//! the group's fields repeated (`id` as `group`, `exact` as `group_exact`). Records that are not
//! results (the summary, files written) go to stderr as text.

use anyhow::Result;
use serde_json::{Map, Value};

use super::record::Record;
use super::text::{shown_bytes, shown_text};

/// The columns, for every record that has rows.
pub const HEADER: [&str; 20] = [
    "type",
    "group",
    "group_exact",
    "keep",
    "path",
    "role",
    "distance",
    "exact",
    "contained",
    "width",
    "height",
    "score",
    "query",
    "similar",
    "status",
    "op",
    "to",
    "kind",
    "error",
    "reason",
];

/// The CSV rows of `record`, or `None` when it is not a result.
pub fn rows(record: &Record) -> Result<Option<Vec<String>>> {
    let fields = match serde_json::to_value(record)? {
        Value::Object(fields) => fields,
        _ => return Ok(None),
    };
    let rows = match fields.get("type").and_then(Value::as_str) {
        Some("group") => {
            let mut group = fields.clone();
            let members = group.remove("members");
            rename(&mut group, "id", "group");
            rename(&mut group, "exact", "group_exact");
            let members = members.as_ref().and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default();
            members
                .iter()
                .filter_map(Value::as_object)
                .map(|m| {
                    let mut row = group.clone();
                    row.extend(m.clone());
                    line(&row)
                })
                .collect()
        }
        Some("outlier" | "neighbour" | "action" | "error") => vec![line(&fields)],
        _ => return Ok(None),
    };
    Ok(Some(rows))
}

fn rename(fields: &mut Map<String, Value>, from: &str, to: &str) {
    if let Some(v) = fields.remove(from) {
        fields.insert(to.into(), v);
    }
}

fn line(fields: &Map<String, Value>) -> String {
    let cells: Vec<String> = HEADER.iter().map(|column| cell(&text(fields, column))).collect();
    cells.join(",")
}

/// A field's text: a path from its exact bytes where JSON has them (`\xNN` for bytes that are
/// not UTF-8), control characters escaped.
fn text(fields: &Map<String, Value>, column: &str) -> String {
    if let Some(Value::Array(bytes)) = fields.get(&format!("{column}_bytes")) {
        let bytes: Vec<u8> = bytes.iter().filter_map(Value::as_u64).map(|b| b as u8).collect();
        return shown_bytes(&bytes);
    }
    match fields.get(column) {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) => shown_text(s).into_owned(),
        // Every float in a record is an f32: written as JSON writes it, not widened to f64.
        Some(Value::Number(n)) if n.is_f64() => {
            n.as_f64().and_then(|x| serde_json::to_string(&(x as f32)).ok()).unwrap_or_default()
        }
        Some(other) => other.to_string(),
    }
}

/// One CSV cell: quoted when it holds a separator, quote or line break, and prefixed with `'`
/// when it starts like a formula (`=`, `+`, `-`, `@`, tab, carriage return), so that a
/// spreadsheet shows a crafted file name instead of running it.
fn cell(s: &str) -> String {
    let s = if s.starts_with(['=', '+', '-', '@', '\t', '\r']) { format!("'{s}") } else { s.to_string() };
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s
    }
}
