//! The library's front door: a collection kept in an index file is refreshed incrementally,
//! locked while open, refused with another model, and enforces the rules the command line
//! relies on (a usable threshold, a quarantine outside the scanned folders).

use std::path::{Path, PathBuf};

use twinscan::actions::Action;
use twinscan::{Collection, Error, GroupOptions, IndexLocation, Invariance, Model, OpenOptions, RefreshOptions};

/// A copy of the example photos in a new folder.
fn photos(dir: &Path) -> PathBuf {
    let to = dir.join("photos");
    std::fs::create_dir(&to).unwrap();
    let from = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/photos");
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
    }
    to
}

fn at(index: &Path) -> OpenOptions {
    OpenOptions { index: IndexLocation::File(index.to_path_buf()), ..OpenOptions::default() }
}

#[test]
fn a_second_refresh_embeds_only_what_changed_and_the_index_is_locked_while_open() {
    let dir = tempfile::tempdir().unwrap();
    let root = photos(dir.path());
    let index = dir.path().join("cache/photos.twinscan");
    let mut first = Collection::open(Model::bundled().unwrap(), [&root], &at(&index)).unwrap();
    let report = first.refresh(&RefreshOptions::default()).unwrap();
    assert_eq!((report.files, report.embedded, report.not_images), (12, 11, 1), "SOURCES.md is not an image");
    assert!(index.exists() && first.index_path() == Some(index.as_path()));
    let locked = Collection::open(Model::bundled().unwrap(), [&root], &at(&index)).unwrap_err();
    assert!(matches!(locked, Error::Locked { .. }), "{locked}");
    drop(first);

    std::fs::remove_file(root.join("page.jpg")).unwrap();
    std::fs::copy(root.join("chelsea.jpg"), root.join("chelsea-again.jpg")).unwrap();
    let mut again = Collection::open(Model::bundled().unwrap(), [&root], &at(&index)).unwrap();
    assert_eq!(again.entries().len(), 11, "loaded from the file");
    let report = again.refresh(&RefreshOptions::default()).unwrap();
    assert_eq!((report.embedded, report.unchanged, report.removed), (1, 10, 1));
    let groups = again.groups(&GroupOptions::default()).unwrap();
    let chelsea = groups.iter().find(|g| g.members.iter().any(|m| m.entry.path.ends_with("chelsea-again.jpg")));
    assert!(chelsea.is_some_and(|g| g.members.len() == 3), "{groups:?}");
}

#[test]
fn an_index_made_by_another_model_or_invariance_is_refused_and_a_rebuild_starts_over() {
    let dir = tempfile::tempdir().unwrap();
    let root = photos(dir.path());
    let index = dir.path().join("photos.twinscan");
    let mut made = Collection::open(Model::bundled().unwrap(), [&root], &at(&index)).unwrap();
    made.refresh(&RefreshOptions::default()).unwrap();
    drop(made);
    let turned = Model::bundled().unwrap().with_invariance(Invariance::MirrorRotate);
    let err = Collection::open(turned.clone(), [&root], &at(&index)).unwrap_err();
    assert!(matches!(err, Error::IndexModel { .. }), "{err}");
    let rebuild = OpenOptions { rebuild: true, ..at(&index) };
    let fresh = Collection::open(turned, [&root], &rebuild).unwrap();
    assert!(fresh.entries().is_empty());
}

#[test]
fn the_rules_an_app_cannot_skip_hold_in_the_library() {
    let dir = tempfile::tempdir().unwrap();
    let root = photos(dir.path());
    let memory = OpenOptions { index: IndexLocation::Memory, ..OpenOptions::default() };
    let mut photos = Collection::open(Model::bundled().unwrap(), [&root], &memory).unwrap();
    photos.refresh(&RefreshOptions::default()).unwrap();
    for value in [f32::NAN, -0.5, f32::INFINITY] {
        let err = photos.groups(&GroupOptions { threshold: Some(value), ..GroupOptions::default() }).unwrap_err();
        assert!(matches!(err, Error::Threshold { .. }), "{value}: {err}");
    }
    let groups = photos.groups(&GroupOptions::default()).unwrap();
    assert_eq!(groups.len(), 4);
    let inside = photos.plan(&groups, &Action::Quarantine(root.join("dups"))).unwrap_err();
    assert!(matches!(inside, Error::Quarantine { .. }), "{inside}");
    let plan = photos.plan(&groups, &Action::Quarantine(dir.path().join("dups"))).unwrap();
    assert_eq!(plan.steps.len(), groups.iter().map(|g| g.copies().len()).sum::<usize>());

    // Read only: answers queries, refuses to refresh.
    let index = dir.path().join("saved.twinscan");
    let mut saved = Collection::open(Model::bundled().unwrap(), [&root], &at(&index)).unwrap();
    saved.refresh(&RefreshOptions::default()).unwrap();
    drop(saved);
    let mut read = Collection::read(Model::bundled().unwrap(), &index).unwrap();
    let answers = read.query([root.join("rocket-small.jpg"), root.join("missing.jpg")], &Default::default());
    let nearest = answers[0].as_ref().unwrap();
    assert!(nearest[0].entry.path.ends_with("rocket-small.jpg") && nearest[0].distance == 0.0);
    assert!(nearest[1].entry.path.ends_with("rocket.jpg"), "{nearest:?}");
    assert!(matches!(answers[1], Err(Error::Io { .. })));
    assert!(matches!(read.refresh(&RefreshOptions::default()), Err(Error::Index { .. })));
}

/// A containment verdict is reached once and kept with the index: a later run takes it from
/// there (here, a verdict planted in the file decides), and a removed image's verdicts go.
#[test]
fn containment_verdicts_are_kept_and_reused() {
    use twinscan::contain::ContainmentRule;
    use twinscan::index::Index;
    let dir = tempfile::tempdir().unwrap();
    let root = photos(dir.path());
    let index = dir.path().join("photos.twinscan");
    let crop_joined = |c: &Collection| {
        let groups = c.groups(&GroupOptions::default()).unwrap();
        groups.iter().flat_map(|g| g.copies()).any(|m| m.entry.path.ends_with("rocket-crop.jpg") && m.contained)
    };
    let mut first = Collection::open(Model::bundled().unwrap(), [&root], &at(&index)).unwrap();
    first.refresh(&RefreshOptions::default()).unwrap();
    assert!(crop_joined(&first), "the crop joins by containment");
    drop(first);
    let mut saved = Index::load(&index).unwrap();
    let checked = saved.verdicts.len();
    assert!(checked > 0, "the checks made are saved");

    // Plant the opposite verdict on the crop's pair: a run that reuses verdicts follows it.
    let sha = |name: &str| saved.entries.iter().find(|e| e.path.ends_with(name)).unwrap().sha256;
    let (rocket, crop) = (sha("rocket.jpg"), sha("rocket-crop.jpg"));
    saved.verdicts.insert(&ContainmentRule::default(), &rocket, &crop, false);
    saved.save(&index).unwrap();
    let again = Collection::open(Model::bundled().unwrap(), [&root], &at(&index)).unwrap();
    assert!(!crop_joined(&again), "the kept verdict decides; the pair is not checked again");
    drop(again);
    assert_eq!(Index::load(&index).unwrap().verdicts.len(), checked, "nothing new to check or save");

    // Another rule's limits: the kept verdicts do not apply.
    let mut strict = Collection::open(Model::bundled().unwrap(), [&root], &at(&index)).unwrap();
    let rule = ContainmentRule { alignment: 0.89, ..ContainmentRule::default() };
    let groups = strict.groups(&GroupOptions { containment: Some(rule), ..GroupOptions::default() }).unwrap();
    assert!(groups.iter().flat_map(|g| g.copies()).any(|m| m.entry.path.ends_with("rocket-crop.jpg")));

    // The crop removed: its verdicts are dropped with it at the next save.
    std::fs::remove_file(root.join("rocket-crop.jpg")).unwrap();
    strict.refresh(&RefreshOptions::default()).unwrap();
    drop(strict);
    let kept = Index::load(&index).unwrap();
    assert!(kept.verdicts.get(&rule, &rocket, &crop).is_none());
}
