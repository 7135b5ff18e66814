//! The images of a folder that least belong with the others, highest outlier score first,
//! with the bundled photo tower (the index kept in memory):
//!
//! ```sh
//! cargo run --release --example outliers -- examples/photos 3
//! ```

use twinscan::{Collection, IndexLocation, Model, OpenOptions, OutlierOptions, OutlierRule, RefreshOptions};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let (Some(folder), top) = (args.next(), args.next()) else {
        return Err("usage: outliers FOLDER [N]".into());
    };
    // The N highest scores; without N, the robust rule (median + 3 x 1.4826 x MAD).
    let rule = match top {
        Some(n) => OutlierRule::Top(n.parse()?),
        None => OutlierRule::Robust,
    };
    let open = OpenOptions { index: IndexLocation::Memory, ..OpenOptions::default() };
    let mut photos = Collection::open(Model::bundled()?, [folder], &open)?;
    photos.refresh(&RefreshOptions::default())?;
    for odd in photos.outliers(&OutlierOptions { rule, ..OutlierOptions::default() })? {
        let nearest = odd.neighbours.first().map(|n| n.entry.path.display().to_string()).unwrap_or_default();
        println!("{:.4}  {}  (nearest: {nearest})", odd.score, odd.entry.path.display());
    }
    Ok(())
}
