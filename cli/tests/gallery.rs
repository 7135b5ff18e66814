//! `twinscan gallery` end to end on a temporary gallery: enroll, list, verify, identify with
//! open-set rejection, remove; a gallery of another model and a damaged one are refused.

mod common;

use std::path::{Path, PathBuf};

use twinscan::image;

use common::{model, records as json, s, twinscan};

fn image(dir: &Path, name: &str, seed: u32) -> PathBuf {
    let img = image::RgbImage::from_fn(40, 40, |x, y| {
        image::Rgb([(x * seed) as u8, (y * seed * 3) as u8, ((x + y) * seed * 7) as u8])
    });
    let path = dir.join(name);
    img.save(&path).unwrap();
    path
}

#[test]
fn enroll_list_verify_identify_remove() {
    let dir = tempfile::tempdir().unwrap();
    let (m, g) = (model(dir.path(), 5), dir.path().join("people.twg"));
    let (a, b, c) = (image(dir.path(), "a.png", 3), image(dir.path(), "b.png", 11), image(dir.path(), "c.png", 29));
    let bad = dir.path().join("bad.jpg");
    std::fs::write(&bad, b"not an image").unwrap();
    let gallery = |args: &[&str]| {
        let mut all = vec!["gallery"];
        all.extend_from_slice(&args[..1]);
        all.extend_from_slice(&["-g", s(&g), "--json"]);
        all.extend_from_slice(&args[1..]);
        twinscan(&all)
    };

    // A file that fails is an error record and exit 2; the others are enrolled and saved.
    let out = gallery(&["enroll", "--model", s(&m), "alice", s(&a), s(&bad)]);
    assert_eq!(out.status.code(), Some(2), "{}", String::from_utf8_lossy(&out.stderr));
    let records = json(&out);
    assert_eq!(records[0]["type"], "error");
    assert_eq!(records[0]["path"], s(&bad));
    assert_eq!((records[1]["type"].as_str(), records[1]["added"].as_u64()), (Some("enrolled"), Some(1)));
    assert_eq!(gallery(&["enroll", "--model", s(&m), "bob", s(&b)]).status.code(), Some(0));

    let list = json(&gallery(&["list"]));
    assert_eq!(list.len(), 3);
    assert_eq!((list[0]["label"].as_str(), list[0]["embeddings"].as_u64()), (Some("alice"), Some(1)));
    assert_eq!(list[1]["label"], "bob");
    assert_eq!(list[2]["labels"], 2);

    // The enrolled image itself is at distance 0: accepted at any threshold (exit 1, found).
    let out = gallery(&["verify", "--model", s(&m), "alice", s(&a)]);
    assert_eq!(out.status.code(), Some(1));
    let v = &json(&out)[0];
    assert_eq!((v["type"].as_str(), v["accepted"].as_bool()), (Some("verification"), Some(true)));
    assert!(v["distance"].as_f64().unwrap() < 1e-5);
    let out = gallery(&["verify", "--model", s(&m), "--threshold", "0.000001", "alice", s(&b)]);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(json(&out)[0]["accepted"], false);
    let out = gallery(&["verify", "--model", s(&m), "carol", s(&a)]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not enrolled"));

    let out = gallery(&["identify", "--model", s(&m), "--top", "2", s(&b)]);
    assert_eq!(out.status.code(), Some(1));
    let found = &json(&out)[0];
    assert_eq!((found["type"].as_str(), found["label"].as_str()), (Some("identification"), Some("bob")));
    assert_eq!(found["candidates"].as_array().unwrap().len(), 2);
    assert_eq!(found["candidates"][0]["label"], "bob");
    // Open set: nothing within a tiny threshold of an image never enrolled.
    let out = gallery(&["identify", "--model", s(&m), "--threshold", "0.000001", s(&c)]);
    assert_eq!(out.status.code(), Some(0));
    assert!(json(&out)[0]["label"].is_null());

    let out = gallery(&["remove", "bob", "carol"]);
    assert_eq!(out.status.code(), Some(2), "carol was never enrolled");
    let removed = json(&out);
    assert_eq!((removed[0]["label"].as_str(), removed[0]["embeddings"].as_u64()), (Some("bob"), Some(1)));
    assert_eq!(removed[1]["embeddings"], 0);
    assert_eq!(json(&gallery(&["list"])).len(), 2);
}

#[test]
fn another_model_and_damage_are_refused_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let (m, other, g) = (model(dir.path(), 5), model(dir.path(), 6), dir.path().join("g.twg"));
    let a = image(dir.path(), "a.png", 3);
    let ok = twinscan(&["gallery", "enroll", "-g", s(&g), "--model", s(&m), "alice", s(&a)]);
    assert_eq!(ok.status.code(), Some(0), "{}", String::from_utf8_lossy(&ok.stderr));

    for args in [
        vec!["gallery", "identify", "-g", s(&g), "--model", s(&other), s(&a)],
        vec!["gallery", "enroll", "-g", s(&g), "--model", s(&other), "bob", s(&a)],
    ] {
        let out = twinscan(&args);
        assert_eq!(out.status.code(), Some(2));
        assert!(String::from_utf8_lossy(&out.stderr).contains("not by the model in use"), "{out:?}");
    }

    let mut bytes = std::fs::read(&g).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0x40;
    std::fs::write(&g, &bytes).unwrap();
    let out = twinscan(&["gallery", "list", "-g", s(&g)]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("checksum"), "{out:?}");
    // Enrolling into a damaged gallery must not replace it with a fresh one.
    let out = twinscan(&["gallery", "enroll", "-g", s(&g), "--model", s(&m), "bob", s(&a)]);
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(std::fs::read(&g).unwrap(), bytes);
}

#[test]
fn a_second_writer_process_is_refused_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (m, g, index) = (model(dir.path(), 5), dir.path().join("g.twg"), dir.path().join("i.twinscan"));
    let a = image(dir.path(), "a.png", 3);
    let ok = twinscan(&["gallery", "enroll", "-g", s(&g), "--model", s(&m), "alice", s(&a)]);
    assert_eq!(ok.status.code(), Some(0), "{}", String::from_utf8_lossy(&ok.stderr));
    let scanned = twinscan(&["scan", "--model", s(&m), "--index", s(&index), s(&a)]);
    assert_eq!(scanned.status.code(), Some(0), "{}", String::from_utf8_lossy(&scanned.stderr));
    let before = (std::fs::read(&g).unwrap(), std::fs::read(&index).unwrap());

    // This process is the first writer: it holds both locks while the CLI tries.
    let _held = (twinscan::store::FileLock::acquire(&g).unwrap(), twinscan::store::FileLock::acquire(&index).unwrap());
    for args in [
        vec!["gallery", "enroll", "-g", s(&g), "--model", s(&m), "bob", s(&a)],
        vec!["gallery", "remove", "-g", s(&g), "alice"],
        vec!["scan", "--model", s(&m), "--index", s(&index), "--rebuild", s(&a)],
    ] {
        let out = twinscan(&args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(String::from_utf8_lossy(&out.stderr).contains("in use by another twinscan process"), "{out:?}");
    }
    assert_eq!((std::fs::read(&g).unwrap(), std::fs::read(&index).unwrap()), before, "nothing written");
}
