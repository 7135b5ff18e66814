//! Folder-per-class trees: `ROOT/<class>/<image>`.

use std::path::Path;

use rayon::prelude::*;

use super::Dataset;
use crate::error::{Error, Result};
use twinscan::tower::ModelMeta;
use twinscan::{decode_file_for_model, input_pixels, DecodeLimits};

/// Loads every image under `root/<class>/`, brought to the model's input size by its
/// preprocessing. Classes are the sub-folder names in sorted order (label = position). Files that
/// fail to decode are skipped and returned beside the data set, so one bad file costs one image.
pub fn load_folder(
    root: &Path,
    meta: &ModelMeta,
    limits: &DecodeLimits,
) -> Result<(Dataset, Vec<String>, Vec<twinscan::Error>)> {
    let mut classes: Vec<_> = std::fs::read_dir(root)
        .map_err(|e| Error::io(root, e))?
        .filter_map(|e| e.ok())
        .filter(|e| e.path().is_dir())
        .map(|e| e.file_name())
        .collect();
    classes.sort();
    let mut files = Vec::new();
    for (label, class) in classes.iter().enumerate() {
        let dir = root.join(class);
        let mut entries: Vec<_> = std::fs::read_dir(&dir)
            .map_err(|e| Error::io(&dir, e))?
            .filter_map(|e| e.ok())
            .map(|e| e.path())
            .filter(|p| p.is_file())
            .collect();
        entries.sort();
        files.extend(entries.into_iter().map(|p| (p, label as u32)));
    }
    let decoded: Vec<twinscan::Result<(Vec<u8>, u32)>> = files
        .par_iter()
        .map(|(path, label)| decode_file_for_model(path, limits, meta).map(|d| (input_pixels(&d.image, meta), *label)))
        .collect();
    let mut data =
        Dataset { shape: meta.input, pixels: Vec::new(), labels: Vec::new(), source: root.display().to_string() };
    let mut errors = Vec::new();
    for item in decoded {
        match item {
            Ok((pixels, label)) => {
                data.pixels.extend(pixels);
                data.labels.push(label);
            }
            Err(e) => errors.push(e),
        }
    }
    let names = classes.iter().map(|c| c.to_string_lossy().into_owned()).collect();
    Ok((data, names, errors))
}
