//! The HNSW graphs kept beside an index: reused by the next scan, written again only when
//! contents are inserted or removed ones pass their share, checked before hnsw_rs reads them
//! (a damaged, linked or shared folder is built again and reported, never read), and never
//! scanned as images. Answers through them equal exact search's.
#![cfg(unix)]

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use common::busy_picture;
use twinscan::detect::{duplicate_groups, Group};
use twinscan::{Collection, Error, GroupOptions, IndexLocation, Model, OpenOptions, RefreshOptions, SearchKind};

struct Fixture {
    _dir: tempfile::TempDir,
    root: PathBuf,
    index: PathBuf,
    model: Model,
}

impl Fixture {
    /// `n` distinct pictures, each image with a resized copy, and an index `kept.twinscan`
    /// beside the folder (or, `inside`, in it).
    fn new(n: u64, inside: bool) -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("images");
        std::fs::create_dir(&root).unwrap();
        let index = if inside { root.join("kept.twinscan") } else { dir.path().join("kept.twinscan") };
        let fixture = Fixture { _dir: dir, root, index, model: Model::bundled().unwrap() };
        for seed in 0..n {
            fixture.add(seed);
        }
        fixture
    }

    fn add(&self, seed: u64) {
        let image = busy_picture(64, 48, seed);
        image.save(self.root.join(format!("{seed:04}.png"))).unwrap();
        let copy = image::imageops::resize(&image, 56, 42, image::imageops::FilterType::Triangle);
        copy.save(self.root.join(format!("{seed:04}-small.png"))).unwrap();
    }

    fn remove(&self, seed: u64) {
        std::fs::remove_file(self.root.join(format!("{seed:04}.png"))).unwrap();
        std::fs::remove_file(self.root.join(format!("{seed:04}-small.png"))).unwrap();
    }

    /// Opens the collection, refreshes it through the graphs and returns what the refresh
    /// reported, checking that its groups are exact search's.
    fn scan(&self) -> Vec<Error> {
        let open = OpenOptions { index: IndexLocation::File(self.index.clone()), ..OpenOptions::default() };
        let mut collection = Collection::open(self.model.clone(), [&self.root], &open).unwrap();
        let report = collection.refresh(&RefreshOptions { search: SearchKind::Hnsw, ..RefreshOptions::default() });
        let report = report.unwrap();
        assert_eq!(report.not_images, 0, "the graph files are not scanned");
        let kept = collection.groups(&GroupOptions { search: SearchKind::Hnsw, ..GroupOptions::default() }).unwrap();
        let exact = GroupOptions { search: SearchKind::Exact, ..GroupOptions::default() };
        let afresh = duplicate_groups(collection.entries(), collection.thumbs(), &self.model, &exact).unwrap();
        assert_eq!(described(&kept), described(&afresh));
        assert!(!kept.is_empty());
        report.errors
    }

    /// The graph folders beside the index, by name.
    fn folders(&self) -> Vec<String> {
        let own = format!("{}.graph.", self.index.file_name().unwrap().to_string_lossy());
        let mut names: Vec<String> = std::fs::read_dir(self.index.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with(&own))
            .collect();
        names.sort();
        names
    }

    /// The one graph folder, checked to be private to its owner.
    fn folder(&self) -> PathBuf {
        let folders = self.folders();
        assert_eq!(folders.len(), 1, "{folders:?}");
        let path = self.index.parent().unwrap().join(&folders[0]);
        assert_eq!(std::fs::symlink_metadata(&path).unwrap().permissions().mode() & 0o777, 0o700);
        path
    }
}

fn described(groups: &[Group]) -> Vec<Vec<(PathBuf, u32)>> {
    groups.iter().map(|g| g.members.iter().map(|m| (m.entry.path.clone(), m.distance.to_bits())).collect()).collect()
}

/// Whether `errors` is one error about the graph folder `folder` or a file in it.
fn reports_damage(errors: &[Error], folder: &Path) -> bool {
    matches!(errors, [e] if e.path().is_some_and(|p| p.starts_with(folder)))
}

#[test]
fn a_kept_graph_is_reused_and_written_again_only_when_contents_are_inserted() {
    let f = Fixture::new(40, false);
    assert!(f.scan().is_empty());
    let first = f.folder();
    // Nothing changed: nothing written.
    assert!(f.scan().is_empty());
    assert_eq!(f.folder(), first);
    // One removed (under the rebuild share): never returned, nothing written.
    f.remove(3);
    assert!(f.scan().is_empty());
    assert_eq!(f.folder(), first);
    // One added: the next generation, the previous one gone.
    f.add(100);
    assert!(f.scan().is_empty());
    let second = f.folder();
    assert_ne!(second, first);
    // A generation nothing names (a killed save's, or the one an older index names): the next
    // one is numbered above it, so it is never overwritten, and it goes once that is named.
    let stray = f.index.with_file_name("kept.twinscan.graph.40");
    std::fs::create_dir(&stray).unwrap();
    f.add(101);
    assert!(f.scan().is_empty());
    let second = f.folder();
    assert!(second.ends_with("kept.twinscan.graph.41"), "{second:?}");
    // Removed points past the share: built again without them.
    for seed in 4..20 {
        f.remove(seed);
    }
    assert!(f.scan().is_empty());
    assert_ne!(f.folder(), second);
    // A rebuild searched exactly keeps no graph, and leaves none behind.
    let open = OpenOptions { index: IndexLocation::File(f.index.clone()), rebuild: true };
    let mut collection = Collection::open(f.model.clone(), [&f.root], &open).unwrap();
    let exact = RefreshOptions { search: SearchKind::Exact, ..RefreshOptions::default() };
    assert!(collection.refresh(&exact).unwrap().errors.is_empty());
    assert_eq!(f.folders(), Vec::<String>::new());
}

#[test]
fn a_damaged_graph_file_is_never_read_but_built_again_and_reported() {
    let f = Fixture::new(30, false);
    assert!(f.scan().is_empty());
    type Damage = fn(&Path);
    let damages: [(&str, Damage); 4] = [
        ("a flipped byte", |p| {
            let mut bytes = std::fs::read(p).unwrap();
            let mid = bytes.len() / 2;
            bytes[mid] ^= 0x40;
            std::fs::write(p, bytes).unwrap();
        }),
        ("a truncated file", |p| {
            let bytes = std::fs::read(p).unwrap();
            std::fs::write(p, &bytes[..bytes.len() / 3]).unwrap();
        }),
        ("an emptied file", |p| std::fs::write(p, b"").unwrap()),
        ("a missing file", |p| std::fs::remove_file(p).unwrap()),
    ];
    for (seed, (what, damage)) in (200..).zip(damages) {
        for file in ["view0.hnsw.graph", "view1.hnsw.data"] {
            let folder = f.folder();
            damage(&folder.join(file));
            // Something to insert, so the graphs are loaded.
            f.add(seed * 10 + file.len() as u64);
            let errors = f.scan();
            assert!(reports_damage(&errors, &folder), "{what} in {file}: {errors:?}");
            assert!(errors[0].to_string().contains("view"), "{errors:?}");
            assert_ne!(f.folder(), folder, "{what} in {file}");
            f.add(seed * 10 + 1 + file.len() as u64);
            assert!(f.scan().is_empty(), "the rebuilt graphs load");
        }
    }
}

#[test]
fn a_graph_folder_others_may_write_or_a_link_in_its_place_is_not_read() {
    let f = Fixture::new(30, false);
    assert!(f.scan().is_empty());
    // Writable by others: someone could swap a file between our check and hnsw_rs's read.
    let folder = f.folder();
    std::fs::set_permissions(&folder, std::fs::Permissions::from_mode(0o777)).unwrap();
    f.add(300);
    let errors = f.scan();
    assert!(matches!(&errors[..], [Error::Index { path, .. }] if path == &folder), "{errors:?}");
    assert!(!folder.exists(), "the refused folder is removed once a new one is named");
    // A link to a copy elsewhere: refused, removed, and what it points to left alone.
    let folder = f.folder();
    let elsewhere = f.root.parent().unwrap().join("elsewhere");
    std::fs::rename(&folder, &elsewhere).unwrap();
    std::os::unix::fs::symlink(&elsewhere, &folder).unwrap();
    f.add(301);
    let errors = f.scan();
    assert!(reports_damage(&errors, &folder), "{errors:?}");
    assert!(std::fs::symlink_metadata(&folder).is_err(), "the link is removed");
    let left: Vec<_> = std::fs::read_dir(&elsewhere).unwrap().collect();
    assert_eq!(left.len(), 4, "the link's target is not touched");
}

#[test]
fn graph_files_beside_an_index_inside_the_scanned_folder_are_not_scanned() {
    let f = Fixture::new(20, true);
    assert!(f.scan().is_empty());
    f.add(400);
    assert!(f.scan().is_empty());
    let folder = f.folder();
    assert!(folder.starts_with(&f.root) && folder.join("view0.hnsw.graph").exists());
    let open = OpenOptions { index: IndexLocation::File(f.index.clone()), ..OpenOptions::default() };
    let collection = Collection::open(f.model.clone(), [&f.root], &open).unwrap();
    assert!(collection.entries().iter().all(|e| e.path.extension().is_some_and(|x| x == "png")));
}
