//! Photos and the copies people make of them: seeded transforms, training views, and the
//! near-duplicate suite that benchmarks and calibrates the photo tower.

mod photos;
mod suite;
mod transforms;
mod views;

pub use photos::{load_photos, part_of, photos_sha256, select, variant_key, Part, Photo};
pub use suite::{
    best_score, build_suite, grey_margin, pair_kind, score, Counts, PairKind, Role, Score, SuiteImage, SUITE_SIDE,
};
pub use transforms::Transform;
pub use views::{detail, random_copy, shrink, Window, MIN_DETAIL};
