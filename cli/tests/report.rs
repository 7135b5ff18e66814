//! `--html`: the page is self-contained, escapes what it shows, and renders in headless
//! Chromium with every group and every thumbnail (Debian's `chromium`; `scripts/test.sh`
//! installs it where it can, or set `TWINSCAN_CHROMIUM` to a Chromium binary).

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

use common::{examples, records, twinscan};

/// Scans `dir` with `--json --outliers --top 1 --html`; returns the records and the page.
fn scan_with_report(dir: &Path, work: &Path) -> (Vec<Value>, PathBuf) {
    let (index, page) = (work.join("i.twinscan"), work.join("report.html"));
    let out = twinscan(&[
        "scan",
        "--json",
        "--outliers",
        "--top",
        "1",
        "--index",
        index.to_str().unwrap(),
        "--html",
        page.to_str().unwrap(),
        dir.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", String::from_utf8_lossy(&out.stderr));
    (records(&out), page)
}

#[test]
fn the_page_is_self_contained_and_a_name_cannot_inject_markup() {
    let work = tempfile::tempdir().unwrap();
    let dir = work.path().join("photos");
    std::fs::create_dir(&dir).unwrap();
    for name in ["coffee.jpg", "coffee-copy.jpg", "rocket.jpg", "chelsea.jpg"] {
        std::fs::copy(examples().join(name), dir.join(name)).unwrap();
    }
    let hostile = r#"<img src=x onerror=alert(1)>&"'.jpg"#;
    std::fs::copy(examples().join("rocket-small.jpg"), dir.join(hostile)).unwrap();
    let (r, page) = scan_with_report(&dir, work.path());
    let html = std::fs::read_to_string(page).unwrap();
    assert!(!html.contains("<img src=x"), "raw markup from a file name");
    assert!(html.contains("&lt;img src=x onerror=alert(1)&gt;&amp;&quot;&#39;.jpg"));
    // Every image is inline; nothing is fetched.
    let sources: Vec<&str> = html.split("src=\"").skip(1).collect();
    assert!(!sources.is_empty());
    assert!(sources.iter().all(|s| s.starts_with("data:image/jpeg;base64,")));
    assert!(!html.contains("<link") && !html.contains("http://") && !html.contains("https://"));
    let groups = r.iter().filter(|r| r["type"] == "group").count();
    assert_eq!(html.matches("<article class=\"group\"").count(), groups);
    assert!(html.contains("exact copy"), "the byte-identical coffee is marked");
}

fn chromium() -> String {
    std::env::var("TWINSCAN_CHROMIUM").unwrap_or_else(|_| "chromium".into())
}

/// Loads the page in headless Chromium and returns the DOM after the load event.
fn rendered(page: &Path) -> String {
    let out = Command::new(chromium())
        .args(["--headless", "--no-sandbox", "--disable-gpu", "--virtual-time-budget=10000", "--dump-dom"])
        .arg(format!("file://{}", page.display()))
        .output()
        .unwrap_or_else(|e| panic!("{} not runnable ({e}); scripts/test.sh installs Chromium", chromium()));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

fn attribute(dom: &str, name: &str) -> usize {
    let at = dom.find(&format!("{name}=\"")).unwrap_or_else(|| panic!("no {name} in the page"));
    dom[at + name.len() + 2..].split('"').next().unwrap().parse().unwrap()
}

#[test]
fn the_examples_report_renders_in_chromium_with_every_group_and_thumbnail() {
    let work = tempfile::tempdir().unwrap();
    let (r, page) = scan_with_report(&examples(), work.path());
    let dom = rendered(&page);
    let groups: Vec<&Value> = r.iter().filter(|r| r["type"] == "group").collect();
    assert_eq!(groups.len(), 4);
    assert_eq!(dom.matches("<article class=\"group\"").count(), groups.len());
    for g in &groups {
        for m in g["members"].as_array().unwrap() {
            assert!(dom.contains(m["path"].as_str().unwrap()), "{m} on the page");
        }
    }
    assert!(dom.contains("page.jpg") && dom.contains("class=\"outlier\""), "the outlier is shown");
    // Members of the groups, and the outlier with its five neighbours.
    let expected: usize = groups.iter().map(|g| g["members"].as_array().unwrap().len()).sum::<usize>() + 1 + 5;
    assert_eq!(attribute(&dom, "data-images"), expected);
    assert_eq!(attribute(&dom, "data-images-loaded"), expected, "every thumbnail decodes in the browser");
    assert!(!dom.contains("id=\"tools\" hidden"), "the script ran and showed the filter");
}
