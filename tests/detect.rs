//! The grouping and outlier rules on hand-made embeddings: no chaining, byte copies always
//! together, the documented image to keep, a robust outlier flag; the same answers through the
//! HNSW graph as by exact search; crops joined by the containment check.

mod common;

use image::imageops;
use twinscan::contain::{ContainmentRule, Thumb};
use twinscan::detect::{duplicate_groups, outliers, GroupOptions, OutlierOptions, OutlierRule};
use twinscan::index::Entry;
use twinscan::search::SearchKind;
use twinscan::thumbs::Thumbs;
use twinscan::tower::{self, TowerSpec, TowerWeights};
use twinscan::Model;

const KINDS: [SearchKind; 2] = [SearchKind::Exact, SearchKind::Hnsw];

fn model() -> Model {
    let spec = TowerSpec::photo(2);
    let meta = tower::untrained_meta(&spec).unwrap();
    Model::from_bytes(&tower::write_onnx(&spec, &TowerWeights::seeded(&spec, 1).unwrap(), &meta).unwrap(), "m").unwrap()
}

fn entry(name: &str, x: f32, pixels: u32, hash: u8) -> Entry {
    Entry { path: name.into(), size: 1, modified_ns: 0, sha256: [hash; 32], dims: (pixels, 1), embedding: vec![x, 0.0] }
}

fn names(members: &[twinscan::detect::Member]) -> Vec<String> {
    members.iter().map(|m| m.entry.path.display().to_string()).collect()
}

/// Grouping at distance 1 by `kind`, with the containment `rule` or without.
fn at_one(kind: SearchKind, rule: Option<ContainmentRule>) -> GroupOptions {
    GroupOptions { threshold: Some(1.0), containment: rule, search: kind }
}

#[test]
fn a_chain_of_near_images_is_not_one_group() {
    for kind in KINDS {
        // a - b - c - d spaced 0.8 apart with threshold 1: only neighbours of the kept image join.
        let entries: Vec<Entry> = ["a", "b", "c", "d"]
            .iter()
            .enumerate()
            .map(|(i, n)| entry(n, i as f32 * 0.8, 100 - i as u32, i as u8))
            .collect();
        let groups = duplicate_groups(&entries, &Thumbs::new(), &model(), &at_one(kind, None)).unwrap();
        let got: Vec<Vec<String>> = groups.iter().map(|g| names(&g.members)).collect();
        assert_eq!(got, vec![vec!["a", "b"], vec!["c", "d"]]);
        assert!((groups[0].members[1].distance - 0.8).abs() < 1e-6);
    }
}

#[test]
fn byte_copies_always_group_and_the_largest_is_kept() {
    for kind in KINDS {
        let entries = vec![
            entry("small", 0.0, 10, 1),
            entry("far-copy", 5.0, 10, 9),
            entry("big", 0.5, 50, 2),
            entry("copy", 9.0, 10, 9),
        ];
        let groups = duplicate_groups(&entries, &Thumbs::new(), &model(), &at_one(kind, None)).unwrap();
        assert_eq!(groups.len(), 2);
        assert_eq!(names(&groups[0].members), vec!["big", "small"], "largest resolution kept");
        let exact = groups.iter().find(|g| g.exact()).expect("the byte copies form a group");
        let mut got = names(&exact.members);
        got.sort();
        assert_eq!(got, vec!["copy", "far-copy"]);
    }
}

#[test]
fn the_odd_one_out_is_flagged() {
    for kind in KINDS {
        let mut entries: Vec<Entry> =
            (0..12).map(|i| entry(&format!("p{i}"), (i % 4) as f32 * 0.1, 10, i as u8)).collect();
        entries.push(entry("odd", 7.0, 10, 99));
        let options = OutlierOptions { k: 3, rule: OutlierRule::Robust, search: kind };
        let found = outliers(&entries, &model(), &options).unwrap();
        assert_eq!(found.iter().map(|o| o.entry.path.display().to_string()).collect::<Vec<_>>(), vec!["odd"]);
        let top = outliers(&entries, &model(), &OutlierOptions { rule: OutlierRule::Top(2), ..options }).unwrap();
        assert_eq!(top.len(), 2);
        assert!(top[0].score >= top[1].score);
    }
}

#[test]
fn the_graph_finds_the_groups_that_exact_search_finds() {
    // 40 tight clusters of 50 points in the plane, far apart: the graph must find every group
    // whole (more members than its first search width of 16) and agree with exact search.
    let mut entries = Vec::new();
    for c in 0..40 {
        for m in 0..50 {
            let x = c as f32 * 10.0 + m as f32 * 0.01;
            let mut sha256 = [0; 32];
            sha256[..8].copy_from_slice(&(entries.len() as u64).to_le_bytes());
            entries.push(Entry {
                path: format!("c{c}-{m}").into(),
                size: 1,
                modified_ns: 0,
                sha256,
                dims: (10, 10),
                embedding: vec![x, (m % 7) as f32 * 0.01],
            });
        }
    }
    let members = |kind| -> Vec<Vec<String>> {
        let groups = duplicate_groups(&entries, &Thumbs::new(), &model(), &at_one(kind, None)).unwrap();
        groups
            .iter()
            .map(|g| {
                let mut v: Vec<String> = names(&g.members);
                v.sort();
                v
            })
            .collect()
    };
    let exact = members(SearchKind::Exact);
    assert_eq!(exact.len(), 40);
    assert!(exact.iter().all(|g| g.len() == 50));
    let graph = members(SearchKind::Hnsw);
    assert!(graph == exact, "the graph groups differ from exact search");
}

#[test]
fn a_crop_beyond_the_threshold_joins_its_original_through_the_containment_check() {
    let rule = ContainmentRule::default();
    let scene = common::busy_picture(600, 450, 7);
    let original = imageops::crop_imm(&scene, 100, 75, 400, 300).to_image();
    let crop = imageops::crop_imm(&original, 90, 60, 260, 200).to_image();
    let burst = imageops::crop_imm(&scene, 200, 90, 400, 300).to_image();
    // Outside the burst shot: a crop of the original's left side.
    let left = imageops::crop_imm(&original, 0, 0, 260, 200).to_image();
    let thumbs = Thumbs::new();
    let with = |name: &str, x: f32, pixels: u32, hash: u8, img: &image::RgbImage| {
        thumbs.insert(&[hash; 32], Thumb::of_rgb(img));
        entry(name, x, pixels, hash)
    };
    // Threshold 1: the crop and the burst shot are beyond it but close enough to check, the
    // far crop is too far to check.
    let entries = vec![
        with("original", 0.0, 120_000, 1, &original),
        with("crop", 1.5, 52_000, 2, &crop),
        with("burst", -1.5, 120_000, 3, &burst),
        with("far-crop", -2.6, 52_000, 4, &left),
    ];
    for kind in KINDS {
        let groups = duplicate_groups(&entries, &thumbs, &model(), &at_one(kind, Some(rule))).unwrap();
        assert_eq!(groups.len(), 1, "{kind:?}");
        assert_eq!(names(&groups[0].members), vec!["original", "crop"]);
        let joined = &groups[0].members[1];
        assert!(joined.contained && !joined.exact && (joined.distance - 1.5).abs() < 1e-6);
        let without = duplicate_groups(&entries, &thumbs, &model(), &at_one(kind, None)).unwrap();
        assert!(without.is_empty(), "no rule, no check");
    }
}
