//! The near-duplicate suite: originals cut from photos, a copy of each of every
//! [`Transform`] kind, hard negatives (other photos of the same scene) and distractors; and its
//! pairwise scoring. The benchmark runs it on held-out photos; the photo trainer calibrates its
//! threshold on it with other photos.

use image::RgbImage;

use super::photos::Photo;
use super::transforms::{uniform, Transform};
use super::views::{detail, Window, MIN_DETAIL};
use twinscan::tower::SplitMix64;

/// Longest side of the suite's images: a phone photo shared online.
pub const SUITE_SIDE: u32 = 512;

/// What an image of the suite is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// A window of a photo that has copies.
    Original,
    /// A copy of the original of its group.
    Copy(Transform),
    /// Same photo, a window next to an original overlapping it by a fifth to two fifths: a
    /// neighbouring shot of one scene.
    Neighbour,
    /// Same photo, a window moved by a fifth to three tenths of its size and rescaled by up to
    /// 10%: the next frame of a burst.
    Burst,
    /// An unrelated window with no copies.
    Distractor,
}

/// One image of the suite.
#[derive(Debug, Clone)]
pub struct SuiteImage {
    /// Pixels.
    pub image: RgbImage,
    /// What it is.
    pub role: Role,
    /// Images with the same group are duplicates of one another; every hard negative and
    /// distractor has a group of its own.
    pub group: usize,
    /// Which of the photos it was cut from.
    pub photo: usize,
    /// The part of that photo it shows, in the photo's pixels.
    pub shows: Window,
}

/// Builds the suite from `photos`: up to `originals` originals per photo. Windows are placed by
/// seeded rejection sampling: originals and distractors overlap nothing else by more than 10%
/// (intersection over union), hard negatives nothing but their own original by more than 25%,
/// and none is flatter than [`MIN_DETAIL`]. Seeded; the same
/// photos, count and seed give the same images.
pub fn build_suite(photos: &[&Photo], originals: usize, seed: u64) -> Vec<SuiteImage> {
    let mut out = Vec::new();
    let mut group = 0;
    for (n, photo) in photos.iter().enumerate() {
        let mut rng = SplitMix64::new(seed ^ (n as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
        let img = &photo.image;
        let size = img.dimensions();
        let mut taken: Vec<Window> = Vec::new();
        let place = |rng: &mut SplitMix64,
                     taken: &mut Vec<Window>,
                     limit: f32,
                     make: &dyn Fn(&mut SplitMix64) -> Option<Window>| {
            for _ in 0..200 {
                let fits = |w: &Window| taken.iter().all(|t| t.iou(w) < limit) && detail(img, w) >= MIN_DETAIL;
                if let Some(w) = make(rng).filter(fits) {
                    taken.push(w);
                    return Some(w);
                }
            }
            None
        };
        let originals: Vec<Window> = (0..originals)
            .filter_map(|_| place(&mut rng, &mut taken, 0.1, &|r| Some(Window::random(size.0, size.1, (0.4, 0.6), r))))
            .collect();
        for o in &originals {
            let base = o.cut(img, SUITE_SIDE);
            for t in Transform::ALL {
                let (image, part) = t.apply_showing(&base, &mut rng);
                let shows = o.part(part, base.dimensions());
                out.push(SuiteImage { image, role: Role::Copy(t), group, photo: n, shows });
            }
            out.push(SuiteImage { image: base, role: Role::Original, group, photo: n, shows: *o });
            group += 1;
        }
        for o in &originals {
            let step = |r: &mut SplitMix64, lo, hi| uniform(r, lo, hi) * if r.below(2) == 0 { -1.0 } else { 1.0 };
            let neighbour = |r: &mut SplitMix64| {
                let d = step(r, 0.6, 0.8);
                o.shifted(if r.below(2) == 0 { (d, 0.0) } else { (0.0, d) }, 1.0, size)
            };
            let burst = |r: &mut SplitMix64| o.burst(r, size);
            // The window it was placed beside is exempt from the overlap limit by construction.
            let own = taken.iter().position(|t| t == o);
            for (role, make) in
                [(Role::Neighbour, &neighbour as &dyn Fn(&mut SplitMix64) -> Option<Window>), (Role::Burst, &burst)]
            {
                let mut others: Vec<Window> =
                    taken.iter().enumerate().filter(|(i, _)| Some(*i) != own).map(|(_, w)| *w).collect();
                if let Some(w) = place(&mut rng, &mut others, 0.25, make) {
                    taken.push(w);
                    out.push(SuiteImage { image: w.cut(img, SUITE_SIDE), role, group, photo: n, shows: w });
                    group += 1;
                }
            }
        }
        if let Some(w) = place(&mut rng, &mut taken, 0.1, &|r| Some(Window::random(size.0, size.1, (0.3, 0.6), r))) {
            let image = w.cut(img, SUITE_SIDE);
            out.push(SuiteImage { image, role: Role::Distractor, group, photo: n, shows: w });
            group += 1;
        }
    }
    out
}

/// Pair counts at one threshold.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Counts {
    /// Duplicate pairs called duplicates.
    pub tp: usize,
    /// Distinct pairs called duplicates.
    pub fp: usize,
    /// Duplicate pairs missed.
    pub missed: usize,
}

impl Counts {
    /// `tp / (tp + fp)`; 1 when nothing was called a duplicate.
    pub fn precision(&self) -> f64 {
        if self.tp + self.fp == 0 {
            1.0
        } else {
            self.tp as f64 / (self.tp + self.fp) as f64
        }
    }

    /// `tp / (tp + missed)`.
    pub fn recall(&self) -> f64 {
        self.tp as f64 / (self.tp + self.missed).max(1) as f64
    }

    /// Harmonic mean of precision and recall.
    pub fn f1(&self) -> f64 {
        let (p, r) = (self.precision(), self.recall());
        if p + r == 0.0 {
            0.0
        } else {
            2.0 * p * r / (p + r)
        }
    }
}

/// The suite's score at one threshold.
#[derive(Debug, Clone, PartialEq)]
pub struct Score {
    /// The distance at or below which a pair is called a duplicate.
    pub threshold: f32,
    /// Over every scored pair.
    pub overall: Counts,
    /// Recall of original-copy pairs per kind, in [`Transform::ALL`] order.
    pub per_kind: Vec<(Transform, f64)>,
}

/// A scored pair: its distance and, for a duplicate pair, the copy's kind.
struct Scored {
    d: f32,
    kind: Option<Transform>,
    counted: bool,
}

/// How a pair of suite images is scored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PairKind {
    /// An original and its own copy of this kind.
    Duplicate(Transform),
    /// Two distinct pictures.
    Distinct,
    /// Not scored.
    Unscored,
}

/// Which pairs count, and how: an original with its own copy is a duplicate pair; two images of
/// different groups are a distinct pair, unless one shows nothing but a part of the other (a
/// crop copy lying inside another shot of its scene is, pixel for pixel, a crop of that shot
/// too); two copies of one original are not scored (whether a left crop duplicates a right crop
/// is a matter of taste).
pub fn pair_kind(a: &SuiteImage, b: &SuiteImage) -> PairKind {
    if a.group == b.group {
        match (a.role, b.role) {
            (Role::Original, Role::Copy(t)) | (Role::Copy(t), Role::Original) => PairKind::Duplicate(t),
            _ => PairKind::Unscored,
        }
    } else if a.photo == b.photo && (a.shows.contains(&b.shows) || b.shows.contains(&a.shows)) {
        PairKind::Unscored
    } else {
        PairKind::Distinct
    }
}

/// The scored pairs (see [`pair_kind`]). Mirror and rotation copies only count toward the
/// overall figures when `invariant`; their recall is reported either way.
fn scored_pairs(suite: &[SuiteImage], distance: &dyn Fn(usize, usize) -> f32, invariant: bool) -> Vec<Scored> {
    let mut pairs = Vec::new();
    for i in 0..suite.len() {
        for j in i + 1..suite.len() {
            let kind = match pair_kind(&suite[i], &suite[j]) {
                PairKind::Duplicate(t) => Some(t),
                PairKind::Distinct => None,
                PairKind::Unscored => continue,
            };
            let counted = kind.is_none_or(|t| invariant || !t.needs_invariance());
            pairs.push(Scored { d: distance(i, j), kind, counted });
        }
    }
    pairs
}

fn score_at(pairs: &[Scored], threshold: f32) -> Score {
    let mut overall = Counts::default();
    let mut kinds = vec![(0usize, 0usize); Transform::ALL.len()];
    for p in pairs {
        let hit = p.d <= threshold;
        if let Some(t) = p.kind {
            let k = &mut kinds[Transform::ALL.iter().position(|x| *x == t).unwrap_or(0)];
            k.0 += usize::from(hit);
            k.1 += 1;
        }
        if !p.counted {
            continue;
        }
        match (p.kind.is_some(), hit) {
            (true, true) => overall.tp += 1,
            (true, false) => overall.missed += 1,
            (false, true) => overall.fp += 1,
            (false, false) => {}
        }
    }
    let per_kind = Transform::ALL.iter().zip(kinds).map(|(t, (hit, n))| (*t, hit as f64 / n.max(1) as f64)).collect();
    Score { threshold, overall, per_kind }
}

/// Scores the suite at `threshold`; `distance(i, j)` is the distance between images `i` and
/// `j`.
pub fn score(suite: &[SuiteImage], distance: &dyn Fn(usize, usize) -> f32, threshold: f32, invariant: bool) -> Score {
    score_at(&scored_pairs(suite, distance, invariant), threshold)
}

/// The grey view's margin for `model` on a calibration `suite`: the smallest of 0, 5%, ...,
/// 50% of the model's threshold at which comparing the images also as grey finds more
/// duplicate pairs at the threshold and adds no false positive (smaller margins find more and
/// risk more). `None` when no margin does, or for a one-channel model.
pub fn grey_margin(model: &twinscan::Model, suite: &[SuiteImage]) -> crate::Result<Option<f32>> {
    let with_grey = model.clone().with_grey_margin(Some(0.0));
    if with_grey.meta().grey_margin.is_none() {
        return Ok(None);
    }
    let images: Vec<image::DynamicImage> =
        suite.iter().map(|s| image::DynamicImage::ImageRgb8(s.image.clone())).collect();
    let mut embeddings = Vec::with_capacity(images.len());
    for chunk in images.chunks(twinscan::DEFAULT_BATCH) {
        embeddings.extend(with_grey.embed_images(chunk)?);
    }
    let (d, metric, threshold) = (model.meta().embedding_dim, model.meta().metric, model.meta().threshold);
    let (colour_len, invariant) = (with_grey.embedding_len() - d, model.invariance() != twinscan::Invariance::None);
    let colour_only = model.clone().with_grey_margin(None);
    let colour = |i: usize, j: usize| colour_only.distance(&embeddings[i][..colour_len], &embeddings[j][..colour_len]);
    let grey = |i: usize, j: usize| metric.distance(&embeddings[i][colour_len..], &embeddings[j][colour_len..]);
    let far = |r: twinscan::Result<f32>| r.unwrap_or(f32::INFINITY);
    let base = score(suite, &|i, j| far(colour(i, j)), threshold, invariant).overall;
    for step in 0..=10 {
        let margin = threshold * step as f32 * 0.05;
        let both = |i: usize, j: usize| far(colour(i, j)).min(far(grey(i, j)) + margin);
        let s = score(suite, &both, threshold, invariant).overall;
        if s.fp <= base.fp && s.tp > base.tp {
            return Ok(Some(margin));
        }
    }
    Ok(None)
}

/// The threshold with the best overall F1 (the smallest such distance), and its score.
pub fn best_score(suite: &[SuiteImage], distance: &dyn Fn(usize, usize) -> f32, invariant: bool) -> Score {
    let pairs = scored_pairs(suite, distance, invariant);
    let mut order: Vec<&Scored> = pairs.iter().filter(|p| p.counted && p.d.is_finite()).collect();
    order.sort_by(|a, b| a.d.total_cmp(&b.d));
    let positives = order.iter().filter(|p| p.kind.is_some()).count();
    let (mut tp, mut fp, mut best, mut best_f1) = (0usize, 0usize, f32::NEG_INFINITY, -1.0);
    for (i, p) in order.iter().enumerate() {
        if p.kind.is_some() {
            tp += 1;
        } else {
            fp += 1;
        }
        if order.get(i + 1).is_some_and(|n| n.d == p.d) {
            continue;
        }
        let f1 = 2.0 * tp as f64 / (2 * tp + fp + (positives - tp)) as f64;
        if f1 > best_f1 {
            (best_f1, best) = (f1, p.d);
        }
    }
    score_at(&pairs, best)
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::Rgb;

    fn photo(seed: u32) -> Photo {
        let image = RgbImage::from_fn(400, 300, |x, y| {
            Rgb([(x * seed % 251) as u8, (y * 7 % 253) as u8, ((x ^ y) % 256) as u8])
        });
        Photo { path: format!("p{seed}.png").into(), key: format!("p{seed}"), image }
    }

    #[test]
    fn a_crop_inside_another_shot_is_not_scored_against_it() {
        let at = |x, y, w, h| Window { x, y, w, h };
        let image = |role, group, shows| SuiteImage { image: RgbImage::new(1, 1), role, group, photo: 0, shows };
        let original = at(0, 0, 100, 100);
        // Cut at 50 px, the crop's part (30..45) is 60..90 of the photo: inside the burst.
        let shows = original.part((30, 30, 15, 15), (50, 50));
        assert_eq!(shows, at(60, 60, 30, 30));
        let burst = at(50, 50, 100, 100);
        assert!(burst.contains(&shows) && !burst.contains(&original));
        let mut suite = vec![
            image(Role::Original, 0, original),
            image(Role::Copy(Transform::Crop), 0, shows),
            image(Role::Burst, 1, burst),
        ];
        let all = |_: usize, _: usize| 0.0;
        let s = score(&suite, &all, 0.5, false).overall;
        assert_eq!((s.tp, s.fp), (1, 1), "original-crop found, original-burst wrong, crop-burst not scored");
        suite[2].photo = 1;
        assert_eq!(score(&suite, &all, 0.5, false).overall.fp, 2, "another photo's window is another picture");
    }

    #[test]
    fn suite_has_every_role_and_scores_a_perfect_oracle_perfectly() {
        let photos = [photo(3), photo(5), photo(7)];
        let refs: Vec<&Photo> = photos.iter().collect();
        let suite = build_suite(&refs, 1, 9);
        for role in [Role::Original, Role::Neighbour, Role::Burst, Role::Distractor, Role::Copy(Transform::Crop)] {
            assert!(suite.iter().any(|s| s.role == role), "{role:?} missing");
        }
        let oracle = |i: usize, j: usize| if suite[i].group == suite[j].group { 0.0 } else { 1.0 };
        let s = score(&suite, &oracle, 0.5, true);
        assert_eq!((s.overall.precision(), s.overall.recall()), (1.0, 1.0));
        let best = best_score(&suite, &oracle, false);
        assert_eq!(best.overall.f1(), 1.0);
        // Without invariance, mirror and rotation copies leave the overall count.
        assert!(best.overall.tp < s.overall.tp);
        let blind = |_: usize, _: usize| 1.0;
        let none = score(&suite, &blind, 0.5, true);
        assert_eq!((none.overall.tp, none.overall.fp), (0, 0));
        assert!(none.per_kind.iter().all(|(_, r)| *r == 0.0));
    }
}
