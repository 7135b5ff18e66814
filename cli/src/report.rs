//! `--html`: the scan as one self-contained page to decide by looking. Thumbnails are made
//! here and inlined as data URIs (no network, no external file); the page reads without
//! JavaScript, which only adds a filter and a sort. Every path and message is escaped.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use rayon::prelude::*;
use twinscan::detect::{Group, Outlier};
use twinscan::index::Entry;
use twinscan::DecodeLimits;

/// Longest side of a thumbnail, in pixels, and its JPEG quality: about 2-4 KB an image, so a
/// report of 1,000 groups stays a few megabytes.
const THUMB_SIDE: u32 = 112;
const THUMB_QUALITY: u8 = 70;

/// What a report shows.
pub struct Report<'a> {
    pub roots: &'a [PathBuf],
    /// `None` where the command does not look for them (`outliers` has no groups, `scan`
    /// without `--outliers` no outliers), so the page does not claim there are none.
    pub groups: Option<&'a [Group<'a>]>,
    pub outliers: Option<&'a [Outlier<'a>]>,
    /// (path, kind, message) of each file that failed.
    pub errors: Vec<(String, &'static str, String)>,
    /// (label, value) lines of the summary.
    pub summary: Vec<(&'static str, String)>,
}

/// Characters that could end a text node or an attribute value, as entities.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            _ => out.push(c),
        }
    }
    out
}

fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
        let n = u32::from(b[0]) << 16 | u32::from(b[1]) << 8 | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[(n >> (18 - 6 * i) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// An `<img>` of the file as it is now, or a note of why there is none (moved since, say).
fn thumbnail(path: &Path) -> String {
    let made = twinscan::decode_file(path, &DecodeLimits::default()).map_err(|e| e.to_string()).and_then(|img| {
        let small = img.thumbnail(THUMB_SIDE, THUMB_SIDE).to_rgb8();
        let mut jpeg = Vec::new();
        let encoder = twinscan::image::codecs::jpeg::JpegEncoder::new_with_quality(&mut jpeg, THUMB_QUALITY);
        small.write_with_encoder(encoder).map_err(|e| e.to_string())?;
        Ok((small.width(), small.height(), jpeg))
    });
    let name = escape(&path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default());
    match made {
        Ok((w, h, jpeg)) => {
            format!(r#"<img src="data:image/jpeg;base64,{}" width="{w}" height="{h}" alt="{name}">"#, base64(&jpeg))
        }
        Err(e) => format!(r#"<div class="missing">no thumbnail: {}</div>"#, escape(&e)),
    }
}

fn human_size(bytes: u64) -> String {
    if bytes >= 1 << 20 {
        format!("{:.1} MB", bytes as f64 / f64::from(1 << 20))
    } else {
        format!("{:.1} KB", bytes as f64 / 1024.0)
    }
}

/// One image with its facts; `role` is shown first and names the figure's class.
fn figure(e: &Entry, thumb: &str, role: &str, facts: &[String]) -> String {
    let path = escape(&e.path.to_string_lossy());
    let mut caption = format!(
        r#"<b>{role}</b> <code class="path">{path}</code><br>{}x{} · {}"#,
        e.dims.0,
        e.dims.1,
        human_size(e.size)
    );
    for f in facts {
        let _ = write!(caption, "<br>{f}");
    }
    format!(r#"<figure class="{role}">{thumb}<figcaption>{caption}</figcaption></figure>"#)
}

/// Writes the page to `path` (a new file or one replaced whole).
pub fn write(path: &Path, r: &Report<'_>) -> Result<()> {
    let (groups, outliers) = (r.groups.unwrap_or_default(), r.outliers.unwrap_or_default());
    let mut shown: Vec<&Path> = groups.iter().flat_map(|g| g.members.iter().map(|m| m.entry.path.as_path())).collect();
    for o in outliers {
        shown.push(&o.entry.path);
        shown.extend(o.neighbours.iter().map(|n| n.entry.path.as_path()));
    }
    shown.sort_unstable();
    shown.dedup();
    let thumbs: HashMap<&Path, String> = shown.par_iter().map(|&p| (p, thumbnail(p))).collect();
    let thumb = |e: &Entry| thumbs.get(e.path.as_path()).map_or("", String::as_str);

    let mut html = String::new();
    html.push_str(HEAD);
    let roots: Vec<String> = r.roots.iter().map(|p| format!("<code>{}</code>", escape(&p.to_string_lossy()))).collect();
    let _ = write!(html, "<header><h1>twinscan report</h1><p>{}</p><dl class=\"summary\">", roots.join(" "));
    for (k, v) in &r.summary {
        let _ = write!(html, "<div><dt>{}</dt><dd>{}</dd></div>", escape(k), escape(v));
    }
    html.push_str("</dl></header>\n");
    html.push_str(TOOLS);

    if r.groups.is_some() {
        let _ = writeln!(html, "<section id=\"groups\"><h2>Duplicate groups ({})</h2>", groups.len());
    }
    for (n, g) in groups.iter().enumerate() {
        let paths: Vec<String> = g.members.iter().map(|m| m.entry.path.to_string_lossy().to_lowercase()).collect();
        let exact = if g.exact() { r#" <span class="tag">exact copies</span>"# } else { "" };
        let _ = write!(
            html,
            "<article class=\"group\" data-size=\"{}\" data-order=\"{n}\" data-paths=\"{}\"><h3>Group {}{exact}</h3><div class=\"row\">",
            g.members.len(),
            escape(&paths.join("\n")),
            n + 1
        );
        for (i, m) in g.members.iter().enumerate() {
            let e = m.entry;
            let mut facts = Vec::new();
            if i > 0 {
                facts.push(format!("distance {:.4}", m.distance));
            }
            if i > 0 && m.exact {
                facts.push(r#"<span class="tag">exact copy</span>"#.into());
            }
            if m.contained {
                facts.push(r#"<span class="tag">contained</span>"#.into());
            }
            html.push_str(&figure(e, thumb(e), if i == 0 { "keep" } else { "duplicate" }, &facts));
        }
        html.push_str("</div></article>\n");
    }
    if r.groups.is_some() {
        html.push_str("</section>\n");
    }

    if r.outliers.is_some() {
        let _ = writeln!(html, "<section id=\"outliers\"><h2>Outliers ({}), highest score first</h2>", outliers.len());
        for (n, o) in outliers.iter().enumerate() {
            let e = o.entry;
            let _ = write!(
                html,
                "<article class=\"outlier\" data-size=\"1\" data-order=\"{n}\" data-paths=\"{}\"><h3>score {:.4}</h3><div class=\"row\">",
                escape(&e.path.to_string_lossy().to_lowercase()),
                o.score
            );
            html.push_str(&figure(e, thumb(e), "outlier", &[]));
            for n in &o.neighbours {
                let facts = [format!("distance {:.4}", n.distance)];
                html.push_str(&figure(n.entry, thumb(n.entry), "neighbour", &facts));
            }
            html.push_str("</div></article>\n");
        }
        html.push_str("</section>\n");
    }

    if !r.errors.is_empty() {
        let _ = write!(
            html,
            "<section id=\"errors\"><h2>Errors ({})</h2><table><tr><th>file</th><th>kind</th><th>reason</th></tr>",
            r.errors.len()
        );
        for (path, kind, message) in &r.errors {
            let _ = write!(
                html,
                "<tr><td><code>{}</code></td><td>{kind}</td><td>{}</td></tr>",
                escape(path),
                escape(message)
            );
        }
        html.push_str("</table></section>\n");
    }
    let _ = write!(html, "<footer>twinscan {}</footer>\n{SCRIPT}</body></html>\n", env!("CARGO_PKG_VERSION"));
    std::fs::write(path, html).with_context(|| format!("writing the report {}", path.display()))
}

const HEAD: &str = r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; img-src data:; style-src 'unsafe-inline'; script-src 'unsafe-inline'">
<title>twinscan report</title>
<style>
body { font: 14px/1.4 system-ui, sans-serif; margin: 1.5em; color: #222; background: #fafafa; }
h1 { margin: 0 0 .2em; } h2 { margin-top: 1.5em; border-bottom: 1px solid #ccc; }
h3 { margin: .2em 0 .4em; font-size: 1em; }
dl.summary { display: flex; flex-wrap: wrap; gap: .4em 1.5em; margin: .5em 0; }
dl.summary div { display: flex; gap: .4em; } dt { color: #666; } dd { margin: 0; font-weight: 600; }
article { background: #fff; border: 1px solid #ddd; border-radius: 6px; padding: .6em .8em; margin: .8em 0; }
.row { display: flex; flex-wrap: wrap; gap: .8em; align-items: flex-start; }
figure { margin: 0; width: 15em; } figure img { display: block; border: 1px solid #ccc; background: #eee; }
figure.keep img, figure.outlier img { border: 3px solid #2a7; }
figcaption { font-size: 12px; color: #444; overflow-wrap: anywhere; }
code.path { font-size: 11px; }
.tag { background: #fe9; border-radius: 3px; padding: 0 .3em; font-size: 12px; }
.missing { width: 112px; height: 60px; font-size: 11px; color: #a33; border: 1px dashed #a33; padding: 2px; }
table { border-collapse: collapse; } td, th { border: 1px solid #ddd; padding: .2em .5em; text-align: left; }
.tools { position: sticky; top: 0; background: #fafafa; padding: .4em 0; }
</style></head><body>
"#;

const TOOLS: &str = r#"<div class="tools" id="tools" hidden><label>filter paths <input id="filter" type="search"></label>
<label>sort <select id="sort"><option value="order">as found</option><option value="size">largest group first</option></select></label></div>
"#;

const SCRIPT: &str = r#"<script>
(() => {
  const tools = document.getElementById("tools");
  tools.hidden = false;
  const items = () => [...document.querySelectorAll("article")];
  document.getElementById("filter").addEventListener("input", (e) => {
    const q = e.target.value.toLowerCase();
    for (const a of items()) a.hidden = q !== "" && !a.dataset.paths.includes(q);
  });
  document.getElementById("sort").addEventListener("change", (e) => {
    const key = e.target.value;
    for (const section of document.querySelectorAll("section")) {
      const list = [...section.querySelectorAll(":scope > article")];
      list.sort((a, b) => key === "size" ? b.dataset.size - a.dataset.size : a.dataset.order - b.dataset.order);
      for (const a of list) section.appendChild(a);
    }
  });
  // For people and for the browser test: how many thumbnails the browser could show.
  window.addEventListener("load", () => {
    const imgs = [...document.images];
    document.body.dataset.images = imgs.length;
    document.body.dataset.imagesLoaded = imgs.filter((i) => i.complete && i.naturalWidth > 0).length;
  });
})();
</script>
"#;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_the_standard_examples() {
        for (plain, encoded) in [("", ""), ("f", "Zg=="), ("fo", "Zm8="), ("foo", "Zm9v"), ("foobar", "Zm9vYmFy")] {
            assert_eq!(base64(plain.as_bytes()), encoded);
        }
    }

    #[test]
    fn markup_in_a_name_stays_text() {
        assert_eq!(
            escape(r#"<img src=x onerror="alert(1)">&'"#),
            "&lt;img src=x onerror=&quot;alert(1)&quot;&gt;&amp;&#39;"
        );
    }
}
