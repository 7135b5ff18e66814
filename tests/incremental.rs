//! A collection kept up to date through seeded random additions, modifications and deletions
//! answers exactly as the same images examined afresh: the same groups (members, distances,
//! containment) and the same outlier scores, with exact search and with the graph forced on.

use std::path::PathBuf;

use twinscan::detect::{duplicate_groups, outliers, Group, Outlier, OutlierOptions};
use twinscan::image::{imageops, DynamicImage, Rgb, RgbImage};
use twinscan::tower::SplitMix64;
use twinscan::{Collection, GroupOptions, IndexLocation, Model, OpenOptions, RefreshOptions, SearchKind};

/// A picture of random rectangles.
fn picture(rng: &mut SplitMix64) -> RgbImage {
    let mut image = RgbImage::from_pixel(48, 48, Rgb([rng.below(256) as u8, 128, rng.below(256) as u8]));
    for _ in 0..6 {
        let colour = Rgb([rng.below(256) as u8, rng.below(256) as u8, rng.below(256) as u8]);
        let (x, y) = (rng.below(40) as u32, rng.below(40) as u32);
        let (w, h) = (4 + rng.below(20) as u32, 4 + rng.below(20) as u32);
        for (px, py, p) in image.enumerate_pixels_mut() {
            if px >= x && px < x + w && py >= y && py < y + h {
                *p = colour;
            }
        }
    }
    image
}

/// PNG files of pictures and their variants (smaller, brighter, cropped), as bytes.
fn pool(seed: u64) -> Vec<Vec<u8>> {
    let mut rng = SplitMix64::new(seed);
    let png = |image: DynamicImage| {
        let mut bytes = std::io::Cursor::new(Vec::new());
        image.write_to(&mut bytes, twinscan::image::ImageFormat::Png).unwrap();
        bytes.into_inner()
    };
    let mut files = Vec::new();
    for _ in 0..60 {
        let image = DynamicImage::ImageRgb8(picture(&mut rng));
        files.push(png(image.resize_exact(40, 40, imageops::FilterType::Triangle)));
        files.push(png(image.brighten(12)));
        files.push(png(image.crop_imm(4, 6, 34, 36)));
        files.push(png(image));
    }
    files
}

/// What a group says, by path.
fn described(groups: &[Group]) -> Vec<Vec<(PathBuf, u32, bool, bool)>> {
    let member = |m: &twinscan::detect::Member| (m.entry.path.clone(), m.distance.to_bits(), m.exact, m.contained);
    groups.iter().map(|g| g.members.iter().map(member).collect()).collect()
}

fn scored(outliers: &[Outlier]) -> Vec<(PathBuf, u32)> {
    outliers.iter().map(|o| (o.entry.path.clone(), o.score.to_bits())).collect()
}

fn kept_up_to_date_equals_afresh(model: Model, search: SearchKind, seed: u64) {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("images");
    std::fs::create_dir(&root).unwrap();
    let pool = pool(seed);
    let mut rng = SplitMix64::new(seed);
    let mut present: Vec<usize> = Vec::new();
    let name = |slot: usize| root.join(format!("{slot:03}.png"));
    let write = |slot: usize, file: usize| std::fs::write(name(slot), &pool[file]).unwrap();
    // Slots are file names; a slot's picture changes when it is modified.
    let mut next_slot = 0;
    let mut add = |present: &mut Vec<usize>, rng: &mut SplitMix64, n: usize| {
        for _ in 0..n {
            write(next_slot, rng.below(pool.len()));
            present.push(next_slot);
            next_slot += 1;
        }
    };
    add(&mut present, &mut rng, 150);
    // A byte copy, whose pair is always exact.
    std::fs::copy(name(0), root.join("copy.png")).unwrap();
    let index = dir.path().join("kept.twinscan");
    let open = OpenOptions { index: IndexLocation::File(index), ..OpenOptions::default() };
    let groups = GroupOptions { search, ..GroupOptions::default() };
    let scores = OutlierOptions { k: 4, search, ..OutlierOptions::default() };
    let refresh = RefreshOptions { search, ..RefreshOptions::default() };
    for step in 0..6 {
        // Each step opens the collection again, as a later scan would.
        let mut collection = Collection::open(model.clone(), [&root], &open).unwrap();
        let report = collection.refresh(&refresh).unwrap();
        assert!(report.errors.is_empty(), "{:?}", report.errors);
        let entries = collection.entries();
        let kept = collection.groups(&groups).unwrap();
        let afresh = duplicate_groups(entries, collection.thumbs(), &model, &groups).unwrap();
        assert_eq!(described(&kept), described(&afresh), "groups at step {step}");
        assert!(kept.iter().any(|g| g.members.iter().any(|m| m.contained)), "a crop joins by containment");
        let kept = collection.outliers(&scores).unwrap();
        let afresh = outliers(entries, &model, &scores).unwrap();
        assert_eq!(scored(&kept), scored(&afresh), "outliers at step {step}");
        let all = OutlierOptions { rule: twinscan::detect::OutlierRule::Top(usize::MAX), ..scores };
        assert_eq!(scored(&collection.outliers(&all).unwrap()), scored(&outliers(entries, &model, &all).unwrap()));
        drop(collection);
        for _ in 0..1 + rng.below(12) {
            let slot = present.swap_remove(rng.below(present.len()));
            std::fs::remove_file(name(slot)).unwrap();
        }
        for _ in 0..rng.below(8) {
            write(present[rng.below(present.len())], rng.below(pool.len()));
        }
        let added = rng.below(12);
        add(&mut present, &mut rng, added);
    }
}

/// The bundled model: a colour and a grey view.
#[test]
fn kept_lists_equal_fresh_ones_with_exact_search() {
    kept_up_to_date_equals_afresh(Model::bundled().unwrap(), SearchKind::Exact, 1);
}

/// The bundled model through its two views' graphs.
#[test]
fn kept_lists_equal_fresh_ones_through_the_graph() {
    kept_up_to_date_equals_afresh(Model::bundled().unwrap(), SearchKind::Hnsw, 2);
}

/// The bundled tower without its grey view: one view, one graph.
#[test]
fn kept_lists_equal_fresh_ones_through_the_graph_of_one_view() {
    kept_up_to_date_equals_afresh(Model::bundled().unwrap().with_grey_margin(None), SearchKind::Hnsw, 3);
}
