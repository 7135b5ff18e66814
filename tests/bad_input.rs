//! Bad models and bad images: each gets a typed error naming the file, never a panic.

mod common;

use std::path::Path;

use common::*;
use prost::Message;
use twinscan::tower::{self, InputShape, TowerSpec, TowerWeights};
use twinscan::{DecodeLimits, Error, Model};

/// A written tower decoded again, to be damaged field by field (tract's protobuf types, as a
/// user with any ONNX library would edit the file).
fn proto_of(spec: &TowerSpec, weights: &TowerWeights) -> tract_onnx::pb::ModelProto {
    let bytes = tower::write_onnx(spec, weights, &tower::untrained_meta(spec).unwrap()).unwrap();
    tract_onnx::pb::ModelProto::decode(&bytes[..]).unwrap()
}

fn seed_proto() -> tract_onnx::pb::ModelProto {
    let spec = TowerSpec::seed(InputShape { channels: 1, height: 28, width: 28 });
    proto_of(&spec, &TowerWeights::seeded(&spec, 1).unwrap())
}

fn load(proto: &tract_onnx::pb::ModelProto) -> Result<Model, Error> {
    Model::from_bytes(&proto.encode_to_vec(), "test-model")
}

#[test]
fn missing_model_file_is_an_io_error_with_the_path() {
    let err = Model::open("/nonexistent/model.onnx").unwrap_err();
    assert!(matches!(&err, Error::Io { path, .. } if path == Path::new("/nonexistent/model.onnx")), "{err}");
}

#[test]
fn a_file_that_is_not_onnx_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("notes.onnx");
    std::fs::write(&path, b"this is plain text, not a protobuf \xff\xff\xff").unwrap();
    let err = Model::open(&path).unwrap_err();
    assert!(matches!(&err, Error::ModelFormat { model, .. } if model.contains("notes.onnx")), "{err}");
}

#[test]
fn onnx_without_metadata_is_refused_naming_what_is_missing() {
    let mut proto = seed_proto();
    proto.metadata_props.clear();
    let err = load(&proto).unwrap_err();
    assert!(matches!(&err, Error::MissingMetadata { model, .. } if model == "test-model"), "{err}");

    let mut proto = seed_proto();
    proto.metadata_props.retain(|p| p.key != "twinscan.threshold");
    let err = load(&proto).unwrap_err();
    assert!(matches!(&err, Error::MissingMetadata { key, .. } if key == "twinscan.threshold"), "{err}");
}

#[test]
fn malformed_metadata_is_refused_naming_the_key() {
    for (key, value) in [
        ("twinscan.head.b", "-1"),
        ("twinscan.input.channels", "2"),
        ("twinscan.preprocess.std", "0"),
        ("twinscan.distance", "manhattan"),
        ("twinscan.format", "99"),
    ] {
        let mut proto = seed_proto();
        proto.metadata_props.iter_mut().filter(|p| p.key == key).for_each(|p| p.value = value.into());
        let err = load(&proto).unwrap_err();
        assert!(matches!(&err, Error::InvalidMetadata { key: k, .. } if k == key), "{key}: {err}");
    }
}

#[test]
fn wrong_input_rank_or_size_is_refused() {
    let mut proto = seed_proto();
    let input = &mut proto.graph.as_mut().unwrap().input[0];
    let Some(tract_onnx::pb::type_proto::Value::TensorType(t)) = input.r#type.as_mut().unwrap().value.as_mut() else {
        unreachable!()
    };
    t.shape.as_mut().unwrap().dim.pop();
    let err = load(&proto).unwrap_err();
    assert!(matches!(&err, Error::ModelGraph { reason, .. } if reason.contains("rank 3")), "{err}");

    let mut proto = seed_proto();
    proto.metadata_props.iter_mut().filter(|p| p.key == "twinscan.input.height").for_each(|p| p.value = "32".into());
    let err = load(&proto).unwrap_err();
    assert!(matches!(&err, Error::ModelGraph { reason, .. } if reason.contains("H = 28")), "{err}");
}

#[test]
fn embedding_size_disagreeing_with_metadata_is_refused() {
    let mut proto = seed_proto();
    proto.metadata_props.iter_mut().filter(|p| p.key == "twinscan.embedding.dim").for_each(|p| p.value = "64".into());
    let err = load(&proto).unwrap_err();
    assert!(matches!(&err, Error::ModelGraph { .. }), "{err}");
}

#[test]
fn weights_that_yield_nan_are_refused() {
    let spec = TowerSpec::seed(InputShape { channels: 1, height: 28, width: 28 });
    let weights = TowerWeights::seeded(&spec, 1).unwrap();
    // The writer refuses non-finite weights, so corrupt them in the encoded protobuf.
    let mut proto = proto_of(&spec, &weights);
    let bias = proto.graph.as_mut().unwrap().initializer.iter_mut().find(|t| t.name == "l0.bias").unwrap();
    bias.raw_data[..4].copy_from_slice(&f32::NAN.to_le_bytes());
    let err = load(&proto).unwrap_err();
    assert!(matches!(&err, Error::ModelGraph { reason, .. } if reason.contains("non-finite")), "{err}");
}

fn model_in(dir: &Path) -> Model {
    Model::open(write_seed_model(dir)).unwrap()
}

#[test]
fn bad_images_each_get_a_typed_error_with_their_path_and_good_ones_still_embed() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let model = model_in(d);

    let good = d.join("good.png");
    picture(64, 48, 1).save(&good).unwrap();
    let empty = d.join("empty.jpg");
    std::fs::write(&empty, b"").unwrap();
    let text = d.join("text.png");
    std::fs::write(&text, b"hello, I am not an image at all").unwrap();
    let truncated = d.join("truncated.png");
    let png = std::fs::read(&good).unwrap();
    std::fs::write(&truncated, &png[..png.len() / 2]).unwrap();
    let truncated_jpeg = d.join("truncated.jpg");
    let mut jpeg = Vec::new();
    image::DynamicImage::ImageRgb8(picture(64, 48, 2))
        .write_to(&mut std::io::Cursor::new(&mut jpeg), image::ImageFormat::Jpeg)
        .unwrap();
    std::fs::write(&truncated_jpeg, &jpeg[..jpeg.len() / 3]).unwrap();
    let missing = d.join("missing.png");
    let huge = d.join("huge.png");
    std::fs::write(&huge, huge_png_header(100_000, 100_000)).unwrap();

    let paths = vec![
        good.clone(),
        empty.clone(),
        text.clone(),
        truncated.clone(),
        truncated_jpeg.clone(),
        missing.clone(),
        huge.clone(),
    ];
    let results = model.embed_paths(&paths);
    assert_eq!(results.len(), paths.len());
    assert_eq!(results[0].as_ref().unwrap().len(), 32);
    let expect = |i: usize, kind: &str| {
        let err = results[i].as_ref().unwrap_err();
        assert_eq!(err.kind(), kind, "{}: {err}", paths[i].display());
        assert_eq!(err.path(), Some(paths[i].as_path()), "{err}");
        assert!(err.to_string().contains(paths[i].file_name().unwrap().to_str().unwrap()), "{err}");
    };
    expect(1, "empty_image");
    expect(2, "unknown_format");
    expect(3, "decode");
    expect(4, "decode");
    expect(5, "io");
    expect(6, "image_too_large");
}

/// A valid PNG signature and IHDR chunk claiming `w x h`, with no pixel data: the classic
/// decompression-bomb probe.
fn huge_png_header(w: u32, h: u32) -> Vec<u8> {
    let mut ihdr = Vec::new();
    ihdr.extend_from_slice(b"IHDR");
    ihdr.extend_from_slice(&w.to_be_bytes());
    ihdr.extend_from_slice(&h.to_be_bytes());
    ihdr.extend_from_slice(&[8, 2, 0, 0, 0]);
    let crc = crc32(&ihdr);
    let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
    out.extend_from_slice(&13u32.to_be_bytes());
    out.extend_from_slice(&ihdr);
    out.extend_from_slice(&crc.to_be_bytes());
    out
}

fn crc32(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 { (crc >> 1) ^ 0xEDB8_8320 } else { crc >> 1 };
        }
    }
    !crc
}

#[test]
fn limits_are_configurable() {
    let dir = tempfile::tempdir().unwrap();
    let model = model_in(dir.path()).with_limits(DecodeLimits { max_pixels: 1000, ..Default::default() });
    let path = dir.path().join("big.png");
    picture(64, 48, 3).save(&path).unwrap();
    let err = model.embed_file(&path).unwrap_err();
    assert_eq!(err.kind(), "image_too_large", "{err}");
    let small = DecodeLimits { max_file_bytes: 10, ..Default::default() };
    let err = twinscan::decode_file(&path, &small).unwrap_err();
    assert_eq!(err.kind(), "image_too_large", "{err}");
}

#[test]
fn exif_orientation_is_applied() {
    // A JPEG whose EXIF says "rotate 90° clockwise" must embed like the rotated pixels.
    let dir = tempfile::tempdir().unwrap();
    let model = model_in(dir.path());
    let upright = image::DynamicImage::ImageRgb8(picture(40, 24, 5));
    let stored = upright.rotate270();
    let mut jpeg = Vec::new();
    stored.write_to(&mut std::io::Cursor::new(&mut jpeg), image::ImageFormat::Jpeg).unwrap();
    let tagged = dir.path().join("tagged.jpg");
    std::fs::write(&tagged, with_exif_orientation(&jpeg, 6)).unwrap();
    let decoded = twinscan::decode_file(&tagged, &DecodeLimits::default()).unwrap();
    assert_eq!((decoded.width(), decoded.height()), (40, 24));
    let plain = dir.path().join("plain.jpg");
    std::fs::write(&plain, &jpeg).unwrap();
    let unrotated = twinscan::decode_file(&plain, &DecodeLimits::default()).unwrap();
    assert_eq!((unrotated.width(), unrotated.height()), (24, 40));
    let a = model.embed_file(&tagged).unwrap();
    let b = model.embed_image(&upright).unwrap();
    assert!(model.distance(&a, &b).unwrap() < model.distance(&model.embed_file(&plain).unwrap(), &b).unwrap());
}

/// A model and `n` pictures in `dir/photos`, as the scan's walk lists them.
fn walked_pictures(dir: &Path, n: usize) -> (Model, Vec<std::path::PathBuf>) {
    use twinscan::scan::collect_files;
    let model = model_in(dir);
    let photos = dir.join("photos");
    std::fs::create_dir(&photos).unwrap();
    for i in 0..n {
        picture(40, 30, 10 + i as u64).save(photos.join(format!("{i}.png"))).unwrap();
    }
    let (files, errors) = collect_files(std::slice::from_ref(&photos), false);
    assert!(errors.is_empty() && files.len() == n);
    (model, files)
}

#[test]
fn files_deleted_during_a_scan_are_one_error_each_and_the_rest_is_indexed() {
    use twinscan::index::Index;
    use twinscan::scan::{update, RefreshOptions};

    let dir = tempfile::tempdir().unwrap();
    let (model, files) = walked_pictures(dir.path(), 6);
    // Gone between the listing and the scan's look at it...
    std::fs::remove_file(&files[1]).unwrap();
    // ...and gone after that look, while the first batch is embedded (one image per batch):
    // decoding runs at most two batches ahead of the network, so the fifth is not read yet.
    let late = files[5].clone();
    let progress = move |done: usize, _: usize| {
        if done == 1 {
            let _ = std::fs::remove_file(&late);
        }
    };
    let mut index = Index::new(model.fingerprint(), model.invariance().as_str());
    let options = RefreshOptions { batch: 1, progress: Some(&progress), ..Default::default() };
    let report = update(&mut index, &files, &model, &options);
    let failed: Vec<_> = report.errors.iter().map(|e| (e.kind(), e.path().unwrap().to_path_buf())).collect();
    assert_eq!(failed, [("io", files[1].clone()), ("io", files[5].clone())]);
    assert_eq!(report.embedded, 4);
    let indexed: Vec<_> = index.entries.iter().map(|e| e.path.clone()).collect();
    assert_eq!(indexed, [&files[0], &files[2], &files[3], &files[4]].map(|p| p.clone()));
}

#[cfg(unix)]
#[test]
fn files_swapped_for_a_fifo_or_a_device_link_after_the_walk_are_refused_not_read() {
    use twinscan::index::Index;
    use twinscan::scan::{update, RefreshOptions};

    let dir = tempfile::tempdir().unwrap();
    let (model, files) = walked_pictures(dir.path(), 3);
    // After the walk: one file becomes a FIFO nobody writes to, one a link to /dev/zero.
    std::fs::remove_file(&files[0]).unwrap();
    assert!(std::process::Command::new("mkfifo").arg(&files[0]).status().unwrap().success());
    std::fs::remove_file(&files[1]).unwrap();
    std::os::unix::fs::symlink("/dev/zero", &files[1]).unwrap();
    let (done, finished) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut index = Index::new(model.fingerprint(), model.invariance().as_str());
        let options = RefreshOptions { batch: 1, ..Default::default() };
        let report = update(&mut index, &files, &model, &options);
        let failed: Vec<_> = report.errors.iter().map(|e| (e.kind(), e.path().unwrap().to_path_buf())).collect();
        let _ = done.send((failed, report.embedded, files));
    });
    let (failed, embedded, files) =
        finished.recv_timeout(std::time::Duration::from_secs(60)).expect("the scan hung on a FIFO or /dev/zero");
    assert_eq!(embedded, 1);
    let kinds: Vec<_> = failed.iter().map(|(k, _)| *k).collect();
    assert_eq!(failed.iter().map(|(_, p)| p.clone()).collect::<Vec<_>>(), [files[0].clone(), files[1].clone()]);
    // The FIFO is refused as one, the link as a link (links are not followed without
    // --follow-links; followed, it would be refused as a device).
    assert_eq!(kinds, ["not_a_file", "not_a_file"], "{failed:?}");
}

/// The seed tower with `nodes` spliced in before its output: its last node now writes
/// `pre_output`, and the spliced nodes must write the graph's output from it.
fn with_nodes_at_output(nodes: Vec<tract_onnx::pb::NodeProto>) -> tract_onnx::pb::ModelProto {
    let mut proto = seed_proto();
    let graph = proto.graph.as_mut().unwrap();
    let output = graph.output[0].name.clone();
    let last = graph.node.iter_mut().rev().find(|n| n.output.contains(&output)).unwrap();
    last.output = vec!["pre_output".into()];
    last.name = "pre_output".into();
    graph.node.extend(nodes.into_iter().map(|mut n| {
        n.output.iter_mut().filter(|o| *o == "OUT").for_each(|o| *o = output.clone());
        n
    }));
    proto
}

fn node(op: &str, inputs: &[&str], output: &str) -> tract_onnx::pb::NodeProto {
    tract_onnx::pb::NodeProto {
        op_type: op.into(),
        input: inputs.iter().map(|s| s.to_string()).collect(),
        output: vec![output.into()],
        ..Default::default()
    }
}

fn int_attribute(name: &str, ints: Vec<i64>) -> tract_onnx::pb::AttributeProto {
    tract_onnx::pb::AttributeProto {
        name: name.into(),
        ints,
        r#type: tract_onnx::pb::attribute_proto::AttributeType::Ints as i32,
        ..Default::default()
    }
}

#[test]
fn crafted_graphs_are_refused_with_a_reason_not_a_panic_or_an_allocation() {
    use tract_onnx::pb::tensor_proto::DataType;
    // A string stored as raw data.
    let mut strings = seed_proto();
    let g = strings.graph.as_mut().unwrap();
    g.initializer.push(tract_onnx::pb::TensorProto {
        name: "label".into(),
        dims: vec![2],
        data_type: DataType::String as i32,
        raw_data: b"\xff\xff\xff\xff\x00\x01".to_vec(),
        ..Default::default()
    });
    // A float weight whose declared size is not what it stores.
    let mut lying = seed_proto();
    let w = &mut lying.graph.as_mut().unwrap().initializer[0];
    w.dims = vec![1 << 40];
    // A constant of a billion values, and shapes read from data.
    let huge = tract_onnx::pb::TensorProto {
        dims: vec![1 << 20, 1 << 20],
        data_type: DataType::Float as i32,
        ..Default::default()
    };
    let constant = tract_onnx::pb::NodeProto {
        attribute: vec![tract_onnx::pb::AttributeProto {
            name: "value".into(),
            t: Some(huge),
            r#type: tract_onnx::pb::attribute_proto::AttributeType::Tensor as i32,
            ..Default::default()
        }],
        ..node("Constant", &[], "big")
    };
    let cases = [
        ("string", strings, "not float"),
        ("lying size", lying, "stores"),
        ("constant", with_nodes_at_output(vec![constant, node("Identity", &["pre_output"], "OUT")]), "a constant of"),
        (
            "ConstantOfShape",
            with_nodes_at_output(vec![
                node("ConstantOfShape", &["shape"], "x"),
                node("Identity", &["pre_output"], "OUT"),
            ]),
            "ConstantOfShape",
        ),
        (
            "Range",
            with_nodes_at_output(vec![node("Range", &["a", "b", "c"], "x"), node("Identity", &["pre_output"], "OUT")]),
            "Range",
        ),
    ];
    for (what, proto, reason) in cases {
        let err = std::panic::catch_unwind(|| load(&proto)).unwrap_or_else(|_| panic!("{what}: panicked"));
        let err = err.err().unwrap_or_else(|| panic!("{what}: loaded"));
        assert!(matches!(err, Error::ModelGraph { .. }) && err.to_string().contains(reason), "{what}: {err}");
    }
}

#[test]
fn a_tower_that_mixes_the_batch_is_refused() {
    // Each embedding minus the batch's mean: alone an image embeds to zero, in company not.
    let mean = tract_onnx::pb::NodeProto {
        attribute: vec![int_attribute("axes", vec![0])],
        ..node("ReduceMean", &["pre_output"], "mean")
    };
    let proto = with_nodes_at_output(vec![mean, node("Sub", &["pre_output", "mean"], "OUT")]);
    let err = load(&proto).unwrap_err();
    assert!(err.to_string().contains("depends on the other images in its batch"), "{err}");
}

#[test]
fn batches_are_sized_by_the_bytes_of_their_input() {
    use twinscan::tower::Layer;
    let big = TowerSpec {
        name: "wide-input".into(),
        input: InputShape { channels: 3, height: 1024, width: 1024 },
        layers: vec![
            Layer::Conv2d { out_channels: 2, kernel: 3, stride: 4, padding: 1 },
            Layer::GlobalAvgPool,
            Layer::Flatten,
            Layer::Linear { out_features: 4 },
        ],
        head: 0,
    };
    let bytes = tower::write_onnx(&big, &TowerWeights::seeded(&big, 1).unwrap(), &tower::untrained_meta(&big).unwrap())
        .unwrap();
    let model = Model::from_bytes(&bytes, "wide").unwrap();
    // 12 MiB of input per image: five fit in 64 MiB.
    assert_eq!(model.batch_for(128), 5);
    assert_eq!(model.batch_for(3), 3);
    let small = load(&seed_proto()).unwrap();
    assert_eq!(small.batch_for(128), 128);
    assert_eq!(small.batch_for(0), 1);
}

#[test]
fn an_image_that_alone_needs_more_than_the_memory_budget_is_its_own_error() {
    // A PNG header claiming 15000 x 13000 RGBA at 16 bits (195 megapixels, under the pixel
    // limit): 1.5 GB decoded, counted twice, over the 2 GiB budget.
    let mut ihdr = b"IHDR".to_vec();
    ihdr.extend(15000u32.to_be_bytes());
    ihdr.extend(13000u32.to_be_bytes());
    ihdr.extend([16, 6, 0, 0, 0]);
    let mut crc = flate2::Crc::new();
    crc.update(&ihdr);
    let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
    png.extend(13u32.to_be_bytes());
    png.extend(&ihdr);
    png.extend(crc.sum().to_be_bytes());
    for (kind, data) in [(&b"IDAT"[..], &b"x\x9c\x03\x00\x00\x00\x00\x01"[..]), (b"IEND", b"")] {
        let mut crc = flate2::Crc::new();
        crc.update(kind);
        crc.update(data);
        png.extend((data.len() as u32).to_be_bytes());
        png.extend(kind);
        png.extend(data);
        png.extend(crc.sum().to_be_bytes());
    }
    let limits = DecodeLimits { max_alloc: 8 << 30, ..Default::default() };
    let err = twinscan::decode_bytes(&png, Path::new("claims.png"), &limits).unwrap_err();
    assert!(matches!(&err, Error::ImageTooLarge { reason, .. } if reason.contains("emory")), "{err}");
}

/// A caller can reach the decoder's or the protobuf reader's own error behind ours.
#[test]
fn errors_keep_their_cause_as_source() {
    use std::error::Error as _;
    let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
    png.extend([0u8, 0, 0, 13, b'I', b'H', b'D', b'R', 0, 0, 0, 0, 0, 0, 0, 0, 8, 2, 0, 0, 0, 1, 2, 3, 4]);
    let err = twinscan::decode_bytes(&png, "zero.png", &DecodeLimits::default()).unwrap_err();
    assert!(matches!(err, Error::Decode { .. }), "{err}");
    assert!(err.source().is_some(), "{err:?}");
    let err = Model::from_bytes(&[0xff; 16], "junk").unwrap_err();
    assert!(matches!(err, Error::ModelFormat { .. }), "{err}");
    assert!(err.source().is_some_and(|s| err.to_string().contains(&s.to_string())), "{err:?}");
}
