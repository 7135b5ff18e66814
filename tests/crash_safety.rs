//! Index and gallery files against crashes: a process killed (SIGKILL) in the middle of a save
//! leaves the previous file loadable, the index with every thumbnail it names, whether the save
//! was appending thumbnails, moving them to a new generation or writing the index; a collection
//! killed while saving its HNSW graphs keeps the generation its index names. (A second writer
//! process: cli/tests/gallery.rs.)
#![cfg(unix)]

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::*;
use twinscan::gallery::Gallery;
use twinscan::index::Index;
use twinscan::tower::SplitMix64;
use twinscan::{Collection, IndexLocation, Model, OpenOptions, RefreshOptions, SearchKind};

/// Set in the child process: `index:PATH`, `gallery:PATH` or `collection:ROOT:INDEX`.
const CHILD: &str = "TWINSCAN_CRASH_CHILD";

/// An index of `n` entries of distinct contents (copies of eight real entries under other names
/// and hashes, each with its thumbnail, about 4.5 KB in all), so that a save takes long enough
/// to be killed in the middle.
fn big_index(model: &Model, dir: &Path, n: usize) -> Index {
    let images: Vec<PathBuf> = (0..8)
        .map(|i| {
            let image = dir.join(format!("{i}.png"));
            picture(48, 32, i).save(&image).unwrap();
            image
        })
        .collect();
    let mut index = Index::new(model.fingerprint(), model.invariance().as_str());
    twinscan::scan::update(&mut index, &images, model, &twinscan::scan::RefreshOptions::default());
    let real = std::mem::take(&mut index.entries);
    for i in 0..n {
        let mut e = real[i % real.len()].clone();
        index.thumbs.insert(&unique(i), index.thumbs.get(&e.sha256).unwrap());
        e.path = PathBuf::from(format!("/photos/{i:08}.png"));
        e.sha256 = unique(i);
        index.entries.push(e);
    }
    index
}

/// A content hash of its own for entry `i`.
fn unique(i: usize) -> [u8; 32] {
    let mut sha256 = [0xA5; 32];
    sha256[..8].copy_from_slice(&(i as u64).to_le_bytes());
    sha256
}

/// Checks that the index at `path` is `full` or its first third (the two the saver child
/// writes), with every thumbnail readable and as it was.
fn assert_whole(path: &Path, full: &Index) {
    let loaded = Index::load(path).expect("the index survives");
    let n = loaded.entries.len();
    assert!(n == full.entries.len() || n == full.entries.len() / 3, "{n} entries");
    assert_eq!(loaded.entries, full.entries[..n]);
    for e in &loaded.entries {
        let thumb = loaded.thumbs.get(&e.sha256).expect("every thumbnail survives");
        assert!(thumb == full.thumbs.get(&e.sha256).unwrap(), "{}", e.path.display());
    }
}

fn big_gallery(model: &Model, n: usize) -> Gallery {
    let mut g = Gallery::new(model);
    let mut rng = SplitMix64::new(7);
    for label in 0..n / 100 {
        let embeddings = (0..100).map(|_| (0..model.embedding_len()).map(|_| rng.next_f32()).collect()).collect();
        g.enroll(model, &format!("person-{label}"), embeddings).unwrap();
    }
    g
}

/// The child: saves the file it finds there, again and again, until it is killed.
#[test]
#[ignore = "a child process of a_save_killed_midway_leaves_the_previous_file_loadable"]
fn saver_child() {
    let Ok(spec) = std::env::var(CHILD) else { return };
    let parts: Vec<&str> = spec.split(':').collect();
    let path = Path::new(parts[1]);
    match parts[0] {
        "index" => {
            // Dropping two thirds moves the rest to a new generation of the thumbnail file;
            // bringing them back appends their thumbnails.
            let full = Index::load(path).unwrap();
            let thumbs: Vec<_> = full.entries.iter().map(|e| (e.sha256, full.thumbs.get(&e.sha256).unwrap())).collect();
            let mut index = full.clone();
            loop {
                index.entries.truncate(full.entries.len() / 3);
                index.save(path).unwrap();
                index.entries = full.entries.clone();
                for (sha256, thumb) in &thumbs {
                    index.thumbs.insert(sha256, thumb.clone());
                }
                index.save(path).unwrap();
            }
        }
        "collection" => {
            // A new picture each time: one content removed, one inserted, the graphs saved.
            let open = OpenOptions { index: IndexLocation::File(parts[2].into()), ..OpenOptions::default() };
            let mut collection = Collection::open(Model::bundled().unwrap(), [path], &open).unwrap();
            for i in 0.. {
                // Written beside the folder and moved in, so a kill leaves no half picture.
                let next = path.with_extension("png");
                busy_picture(64, 48, 1_000_000 + i).save(&next).unwrap();
                std::fs::rename(&next, path.join("churn.png")).unwrap();
                collection.refresh(&through_graphs()).unwrap();
            }
        }
        _ => {
            let gallery = Gallery::load(path).unwrap();
            loop {
                gallery.save(path).unwrap();
            }
        }
    }
}

fn through_graphs() -> RefreshOptions<'static> {
    RefreshOptions { search: SearchKind::Hnsw, ..RefreshOptions::default() }
}

/// Opens the collection of `root` at `index` and refreshes it through the graphs.
fn refresh_through_graphs(root: &Path, index: &Path) -> twinscan::RefreshReport {
    let open = OpenOptions { index: IndexLocation::File(index.into()), ..OpenOptions::default() };
    let mut collection = Collection::open(Model::bundled().unwrap(), [root], &open).unwrap();
    collection.refresh(&through_graphs()).unwrap()
}

/// Starts the saver child on `spec`, kills it (SIGKILL) after `from` ms and up to `spread` more.
fn kill_saver(spec: &str, rng: &mut SplitMix64, from: u64, spread: usize) {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "saver_child", "--ignored", "--test-threads", "1"])
        .env(CHILD, spec)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(from + rng.below(spread) as u64));
    child.kill().unwrap();
    child.wait().unwrap();
}

#[test]
fn a_graph_save_killed_midway_leaves_the_generation_the_index_names() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("images");
    std::fs::create_dir(&root).unwrap();
    for seed in 0..600 {
        busy_picture(64, 48, seed).save(root.join(format!("{seed:04}.png"))).unwrap();
    }
    let index = dir.path().join("c.twinscan");
    assert!(refresh_through_graphs(&root, &index).errors.is_empty());
    let beside = |prefix: &str| {
        std::fs::read_dir(dir.path())
            .unwrap()
            .filter(|e| e.as_ref().unwrap().file_name().to_string_lossy().starts_with(prefix))
            .count()
    };
    let graph_folders = || beside("c.twinscan.graph.");
    let (mut rng, mut cut_short) = (SplitMix64::new(2), 0);
    for _ in 0..12 {
        // The child takes about half a second to start and load before its first save, then
        // saves the graphs five times a second, most of each refresh.
        kill_saver(&format!("collection:{}:{}", root.display(), index.display()), &mut rng, 500, 1000);
        // A second folder or a temporary index: killed between writing a generation and
        // naming it, or between naming it and removing the one before.
        cut_short += usize::from(graph_folders() > 1 || beside(".c.twinscan.") > 0);
        let report = refresh_through_graphs(&root, &index);
        assert!(report.errors.is_empty(), "the named graphs load: {:?}", report.errors);
        assert_eq!(graph_folders(), 1);
    }
    eprintln!("{cut_short} of 12 kills landed inside a graph save");
    assert!(cut_short > 0, "no kill landed during a save; the test proved nothing");
}

#[test]
fn a_save_killed_midway_leaves_the_previous_file_loadable() {
    let dir = tempfile::tempdir().unwrap();
    let model = Model::open(write_seed_model(dir.path())).unwrap();
    let (index_path, gallery_path) = (dir.path().join("big.twinscan"), dir.path().join("big.twg"));
    let index = big_index(&model, dir.path(), 5_000);
    index.save(&index_path).unwrap();
    let gallery = big_gallery(&model, 100_000);
    gallery.save(&gallery_path).unwrap();
    let mut rng = SplitMix64::new(1);
    let mut cut_short = 0;
    for (kind, path) in [("index", &index_path), ("gallery", &gallery_path)] {
        for _ in 0..6 {
            kill_saver(&format!("{kind}:{}", path.display()), &mut rng, 100, 400);
            // What the killed save left half written, if it was writing.
            let temps: Vec<_> = std::fs::read_dir(dir.path())
                .unwrap()
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.file_name().is_some_and(|n| n.to_string_lossy().starts_with(".big.")))
                .collect();
            cut_short += temps.len();
            for t in temps {
                std::fs::remove_file(t).unwrap();
            }
            match kind {
                "index" => assert_whole(path, &index),
                _ => assert_eq!(Gallery::load(path).expect("the gallery survives").len(), gallery.len()),
            }
        }
    }
    // Saves take most of the child's life, so most kills land inside one.
    eprintln!("{cut_short} of 12 kills left a save half written");
    assert!(cut_short > 0, "no kill landed during a save; the test proved nothing");
}
