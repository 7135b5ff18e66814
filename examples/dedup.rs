//! Duplicate groups of a folder with the bundled photo tower, the index kept in the user's cache
//! so that a second run embeds only new and changed files:
//!
//! ```sh
//! cargo run --release --example dedup -- examples/photos
//! ```

use twinscan::{Collection, GroupOptions, Model, OpenOptions, RefreshOptions};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let folders: Vec<String> = std::env::args().skip(1).collect();
    if folders.is_empty() {
        return Err("usage: dedup FOLDER...".into());
    }
    let mut photos = Collection::open(Model::bundled()?, &folders, &OpenOptions::default())?;
    let report = photos.refresh(&RefreshOptions::default())?;
    for e in &report.errors {
        eprintln!("skipped: {e}");
    }
    for group in photos.groups(&GroupOptions::default())? {
        println!("keep {}", group.keep().path.display());
        for copy in group.copies() {
            let how = if copy.exact { "exact copy".to_string() } else { format!("distance {:.3}", copy.distance) };
            println!("     {} ({how})", copy.entry.path.display());
        }
    }
    Ok(())
}
