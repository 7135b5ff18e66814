//! Whether one image is a part of another, rescaled: the check that finds crops (and framed
//! copies, whose original is a part of them), which no embedding distance can find without
//! also matching other shots of the same scene.
//!
//! Each image is kept as a small [`Thumb`] (grey, with its colour at a quarter of that size;
//! the scan index stores one per image). [`containment`] places one thumbnail inside the
//! other: every rectangle that keeps the placed image's aspect and at least [`MIN_SIDE`] of
//! each side of the other, at every position, scored by normalised cross-correlation (which
//! ignores brightness and contrast). The search runs on quarter-size thumbnails and refines the
//! best few placements on half-size ones and then at full size, where the best score is the
//! *alignment*. Smooth pictures (skies, gradients) align with many places, so the placement is
//! then checked on the images' fine structure: the same correlation of the high-passed
//! thumbnails (each less its blur), allowing one pixel of misalignment, is the *detail*. And
//! as correlation ignores which levels meet, flat graphics whose shapes line up in grey would
//! pass both: the *colour* compares the colour layout of the placed image with that of where it
//! was placed. A crop passes all three; a burst shot (a quarter of it new) or a smooth
//! lookalike fails the second, a recoloured shape the third.
//!
//! ```
//! use twinscan::contain::{containment, Thumb};
//! let photo = image::RgbImage::from_fn(200, 150, |x, y| image::Rgb([(x * 7 % 251) as u8, (y * 13 % 241) as u8, ((x * y) % 239) as u8]));
//! let crop = image::imageops::crop_imm(&photo, 30, 20, 140, 105).to_image();
//! let c = containment(&Thumb::of_rgb(&photo), &Thumb::of_rgb(&crop));
//! assert!(c.alignment > 0.9 && c.detail > 0.7, "{c:?}");
//! ```

use image::{imageops, DynamicImage, GrayImage, RgbImage};
use serde::{Deserialize, Serialize};

/// Longest side of a thumbnail, in pixels.
pub const THUMB_SIDE: u32 = 64;

/// Least share of each side of the containing image that a placed image may cover: a crop of
/// up to 30% of each side keeps 40%; a little less allows for rounding.
pub const MIN_SIDE: f32 = 0.38;

/// Step between tried sizes, as a share of the containing image's side.
const SIZE_STEP: f32 = 0.0125;

/// Blur (sigma, in thumbnail pixels) whose removal leaves the fine structure.
const DETAIL_SIGMA: f32 = 1.0;

/// Most colour difference a contained pair may show, in [`Containment::colour`]'s levels:
/// twice the most any crop or framed copy of the benchmark suite shows (4.0); 10,000
/// generated flat graphics had 65 pairs that line up in grey, none within 12.
const COLOUR_LIMIT: f32 = 8.0;

/// How far below the rule's alignment a coarse placement may score and still be refined:
/// coarser thumbnails are smoother, so a placement scores higher there, not lower, but for
/// rounding.
const COARSE_SLACK: f32 = 0.1;

/// How much more colour difference a coarse placement may show than the rule allows and still
/// be refined (it lies up to two pixels off where refinement will put it).
const COLOUR_SLACK: f32 = 8.0;

/// How many of the best placements on the coarsest level are refined.
const REFINED: usize = 3;

/// How far (in pixels of the finer level, in size and in position) a refinement looks around
/// a placement from the coarser one: its rounding is one coarse pixel, two here.
const REFINE: f32 = 2.0;

/// A grey thumbnail, longest side [`THUMB_SIDE`], and its colour at a quarter of that size:
/// what [`containment`] compares, small enough to keep in an index (about 3.4 KB).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "ThumbParts", into = "ThumbParts")]
pub struct Thumb {
    image: GrayImage,
    /// Blue and red chroma (Cb, Cr, interleaved), [`CHROMA_DIVISOR`] times smaller per side.
    chroma: Vec<u8>,
}

/// How much smaller the colour is than the grey thumbnail, per side: colour only has to tell
/// an orange shape from a green one, where the grey thumbnail has to place it.
pub const CHROMA_DIVISOR: u32 = 4;

/// A [`Thumb`] as stored: checked when read back, so a damaged index cannot make one whose
/// pixels do not match its size.
#[derive(Serialize, Deserialize)]
struct ThumbParts {
    width: u32,
    height: u32,
    pixels: Vec<u8>,
    chroma: Vec<u8>,
}

/// The size of a `width x height` thumbnail's colour.
fn chroma_size(width: u32, height: u32) -> (u32, u32) {
    (width.div_ceil(CHROMA_DIVISOR), height.div_ceil(CHROMA_DIVISOR))
}

impl TryFrom<ThumbParts> for Thumb {
    type Error = String;

    fn try_from(p: ThumbParts) -> Result<Thumb, String> {
        let (cw, ch) = chroma_size(p.width, p.height);
        let fits = p.width.max(p.height) <= THUMB_SIDE
            && p.width.min(p.height) >= 1
            && p.chroma.len() == 2 * (cw * ch) as usize;
        fits.then(|| GrayImage::from_raw(p.width, p.height, p.pixels))
            .flatten()
            .map(|image| Thumb { image, chroma: p.chroma })
            .ok_or_else(|| format!("thumbnail {}x{} does not match its pixels", p.width, p.height))
    }
}

impl From<Thumb> for ThumbParts {
    fn from(t: Thumb) -> ThumbParts {
        ThumbParts { width: t.image.width(), height: t.image.height(), pixels: t.image.into_raw(), chroma: t.chroma }
    }
}

impl Thumb {
    /// The thumbnail of an image: shrunk by area averaging (enlarged smoothly when smaller
    /// than a thumbnail), then its luma, and its chroma shrunk again.
    pub fn of(image: &DynamicImage) -> Thumb {
        let (w, h) = (image.width(), image.height());
        let small = if w.max(h) > THUMB_SIDE {
            image.thumbnail(THUMB_SIDE, THUMB_SIDE).to_rgb8()
        } else {
            let s = THUMB_SIDE as f32 / w.max(h).max(1) as f32;
            let side = |n: u32| ((n as f32 * s).round() as u32).clamp(1, THUMB_SIDE);
            imageops::resize(&image.to_rgb8(), side(w), side(h), imageops::FilterType::Triangle)
        };
        let (cw, ch) = chroma_size(small.width(), small.height());
        let colour = imageops::thumbnail(&small, cw, ch);
        // BT.601 chroma, as JPEG stores it.
        let chroma = colour
            .pixels()
            .flat_map(|p| {
                let [r, g, b] = p.0.map(f32::from);
                [128.0 - 0.168_736 * r - 0.331_264 * g + 0.5 * b, 128.0 + 0.5 * r - 0.418_688 * g - 0.081_312 * b]
            })
            .map(|v| v.round().clamp(0.0, 255.0) as u8)
            .collect();
        Thumb { image: DynamicImage::ImageRgb8(small).to_luma8(), chroma }
    }

    /// [`Thumb::of`] an RGB image.
    pub fn of_rgb(image: &RgbImage) -> Thumb {
        Thumb::of(&DynamicImage::ImageRgb8(image.clone()))
    }

    /// Mean chroma (Cb, Cr) over a rectangle `[left, top, right, bottom]` given as shares of
    /// the thumbnail's width and height, each colour cell weighted by its overlap.
    fn mean_chroma(&self, [left, top, right, bottom]: [f32; 4]) -> [f32; 2] {
        let (cw, ch) = chroma_size(self.image.width(), self.image.height());
        let overlap = |lo: f32, hi: f32, cell: u32, cells: u32| {
            let (a, b) = (cell as f32 / cells as f32, (cell + 1) as f32 / cells as f32);
            (hi.min(b) - lo.max(a)).max(0.0)
        };
        let (mut total, mut cb, mut cr) = (0.0, 0.0, 0.0);
        for y in 0..ch {
            let wy = overlap(top, bottom, y, ch);
            for x in 0..cw {
                let wxy = wy * overlap(left, right, x, cw);
                if wxy > 0.0 {
                    let at = 2 * (y * cw + x) as usize;
                    total += wxy;
                    cb += wxy * f32::from(self.chroma[at]);
                    cr += wxy * f32::from(self.chroma[at + 1]);
                }
            }
        }
        if total > 0.0 {
            [cb / total, cr / total]
        } else {
            [128.0, 128.0]
        }
    }
}

/// How well one image fits inside the other (see the module documentation). The first two
/// scores are correlations in `[-1, 1]`, -1 where no placement could be scored (flat images).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Containment {
    /// Correlation of the grey levels at the best placement.
    pub alignment: f32,
    /// Correlation of the high-passed images at that placement.
    pub detail: f32,
    /// Mean difference of the colour (|Cb| + |Cr|, 0-255 levels) between the placed image and
    /// the part of the other it was placed on; 510 where nothing was placed.
    pub colour: f32,
}

/// When a pair the embedding does not call a duplicate is one by containment. Chosen on the
/// photo tower's calibration suite (`cargo bench --bench near_dup` measures it on the held-out
/// suite): ten neighbours and a distance of up to twice the threshold bring in every crop the
/// suite has there; alignment 0.9 and detail 0.7 lie inside the range (0.85-0.9, 0.6-0.75)
/// that found the most crops with the fewest false positives. The colour limit turns away
/// flat graphics whose shapes line up in grey (see `docs/benchmarks.md`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ContainmentRule {
    /// Only pairs where one is among the other's this many nearest images are checked.
    pub neighbours: usize,
    /// Only pairs within this multiple of the model's threshold are checked.
    pub max_distance: f32,
    /// Least [`Containment::alignment`].
    pub alignment: f32,
    /// Least [`Containment::detail`].
    pub detail: f32,
    /// Most [`Containment::colour`].
    pub colour: f32,
}

impl Default for ContainmentRule {
    fn default() -> Self {
        ContainmentRule { neighbours: 10, max_distance: 2.0, alignment: 0.9, detail: 0.7, colour: COLOUR_LIMIT }
    }
}

impl ContainmentRule {
    /// Whether a pair at `distance` (the model's `threshold`), where one is the other's
    /// `rank`-th nearest image (0 for the nearest), counts as a duplicate: within the
    /// threshold, or close enough to check and one contains the other.
    pub fn duplicate(&self, distance: f32, threshold: f32, rank: usize, a: &Thumb, b: &Thumb) -> bool {
        distance <= threshold || (self.checks(distance, threshold, rank) && self.contains(a, b))
    }

    /// Whether one image is a part of the other by this rule's limits: [`containment`], except
    /// that placements too poor on half-size thumbnails to reach the alignment at full size
    /// are not refined (most pairs end there).
    pub fn contains(&self, a: &Thumb, b: &Thumb) -> bool {
        let gate = Gate { alignment: self.alignment - COARSE_SLACK, colour: self.colour + COLOUR_SLACK };
        self.accepts(&gated(a, b, gate))
    }

    /// Whether every score of `c` is within this rule's limits.
    pub fn accepts(&self, c: &Containment) -> bool {
        c.alignment >= self.alignment && c.detail >= self.detail && c.colour <= self.colour
    }

    /// Whether a pair beyond the threshold is close enough to be checked at all.
    pub fn checks(&self, distance: f32, threshold: f32, rank: usize) -> bool {
        distance > threshold && rank < self.neighbours && distance <= self.max_distance * threshold
    }
}

/// Verdicts of [`ContainmentRule::contains`] already reached, by the pair of images' content: a
/// verdict depends only on the two contents and the rule's limits, so a rescan never repeats
/// one. Kept in the index; reached under other limits, they are forgotten.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Verdicts {
    /// The rule's alignment, detail and colour limits the verdicts were reached under.
    limits: Option<[f32; 3]>,
    /// The first 8 bytes of each image's SHA-256, the smaller first, and whether one image
    /// contains the other. (A wrong verdict would need two contents of one collection to share
    /// 64 bits of their hash.)
    pairs: std::collections::BTreeMap<(u64, u64), bool>,
    /// Verdicts recorded since loading (not saved).
    #[serde(skip)]
    recorded: usize,
}

/// Equal when they hold the same verdicts under the same limits.
impl PartialEq for Verdicts {
    fn eq(&self, other: &Verdicts) -> bool {
        self.limits == other.limits && self.pairs == other.pairs
    }
}

impl Verdicts {
    /// The verdict on two contents under `rule`, if reached before.
    pub fn get(&self, rule: &ContainmentRule, a: &[u8; 32], b: &[u8; 32]) -> Option<bool> {
        (self.limits == Some(limits(rule))).then(|| self.pairs.get(&key(a, b)).copied()).flatten()
    }

    /// Records a verdict reached under `rule` (forgetting those of other limits).
    pub fn insert(&mut self, rule: &ContainmentRule, a: &[u8; 32], b: &[u8; 32], contained: bool) {
        if self.limits != Some(limits(rule)) {
            self.limits = Some(limits(rule));
            self.pairs.clear();
        }
        self.pairs.insert(key(a, b), contained);
        self.recorded += 1;
    }

    /// How many verdicts were recorded since this value was loaded or made: a count that only
    /// grows, to tell whether there is anything new to save.
    pub fn recorded(&self) -> usize {
        self.recorded
    }

    /// Keeps only the verdicts on pairs of contents in `present` (the others are about images
    /// gone from the collection).
    pub fn retain(&mut self, present: &std::collections::HashSet<u64>) {
        self.pairs.retain(|(a, b), _| present.contains(a) && present.contains(b));
    }

    /// How many verdicts are kept.
    pub fn len(&self) -> usize {
        self.pairs.len()
    }

    /// Whether none is.
    pub fn is_empty(&self) -> bool {
        self.pairs.is_empty()
    }
}

fn limits(rule: &ContainmentRule) -> [f32; 3] {
    [rule.alignment, rule.detail, rule.colour]
}

/// The part of a content hash that [`Verdicts`] keys by.
pub fn hash_key(sha256: &[u8; 32]) -> u64 {
    let mut first = [0; 8];
    first.copy_from_slice(&sha256[..8]);
    u64::from_le_bytes(first)
}

fn key(a: &[u8; 32], b: &[u8; 32]) -> (u64, u64) {
    let (a, b) = (hash_key(a), hash_key(b));
    (a.min(b), a.max(b))
}

/// The better of `a` placed inside `b` and `b` placed inside `a`, by alignment.
pub fn containment(a: &Thumb, b: &Thumb) -> Containment {
    gated(a, b, Gate::OPEN)
}

/// [`containment`], refining only placements that pass `gate` on the coarser levels; where
/// none does, the alignment is the best coarsest score and the detail -1.
fn gated(a: &Thumb, b: &Thumb, gate: Gate) -> Containment {
    let (pa, pb) = (Pyramid::of(a), Pyramid::of(b));
    let (x, y) = (place((b, &pb), (a, &pa), gate), place((a, &pa), (b, &pb), gate));
    if x.alignment >= y.alignment {
        x
    } else {
        y
    }
}

/// Sizes at which `small` may sit inside a `bw x bh` image: its own aspect, from the whole
/// width or height down to [`MIN_SIDE`]; and the whole image, whatever its aspect (a stretched
/// copy).
fn sizes(small: &GrayImage, (bw, bh): (u32, u32)) -> Vec<(u32, u32)> {
    let aspect = small.width() as f32 / small.height().max(1) as f32;
    let mut out = vec![(bw, bh)];
    let steps = ((1.0 - MIN_SIDE) / SIZE_STEP) as usize + 1;
    for k in 0..=steps {
        let f = 1.0 - k as f32 * SIZE_STEP;
        let w = (f * bw as f32).round() as u32;
        out.push((w, (w as f32 / aspect).round() as u32));
        let h = (f * bh as f32).round() as u32;
        out.push(((h as f32 * aspect).round() as u32, h));
    }
    let fits = |&(w, h): &(u32, u32)| {
        w >= 2 && h >= 2 && w <= bw && h <= bh && w as f32 >= MIN_SIDE * bw as f32 && h as f32 >= MIN_SIDE * bh as f32
    };
    out.retain(fits);
    out.sort_unstable();
    out.dedup();
    out
}

/// `small` placed at `w x h`, `(x, y)` inside the other image, and the correlation there.
#[derive(Debug, Clone, Copy)]
struct Placement {
    score: f32,
    x: u32,
    y: u32,
    w: u32,
    h: u32,
}

/// Limits a placement must meet on a coarse level to be followed to the next, finer one.
#[derive(Debug, Clone, Copy)]
struct Gate {
    alignment: f32,
    colour: f32,
}

impl Gate {
    /// Every placement is followed.
    const OPEN: Gate = Gate { alignment: -1.0, colour: 510.0 };
}

/// `small` placed inside `big`: every size and position is tried on quarter-size thumbnails,
/// and the best few placements that pass `gate` are refined on the half-size thumbnails, and
/// the best few of those that pass it on the thumbnails themselves (a few percent of the work
/// of searching at full size).
fn place((small_thumb, smalls): (&Thumb, &Pyramid), (big_thumb, bigs): (&Thumb, &Pyramid), gate: Gate) -> Containment {
    let (small, big) = (&small_thumb.image, &big_thumb.image);
    let (smalls, bigs) = (smalls.levels(small), bigs.levels(big));
    let mut found = best_placements(smalls[2], bigs[2]);
    let coarse_best = found.first().map_or(-1.0, |c| c.score);
    for level in [1, 0] {
        let from = bigs[level + 1].dimensions();
        found.retain(|c| c.score >= gate.alignment && colour_gap(small_thumb, big_thumb, c, from) <= gate.colour);
        let levels = Summed::of(bigs[level]);
        found = found.iter().filter_map(|c| refine(smalls[level], bigs[level], &levels, c, from)).collect();
    }
    match found.into_iter().filter(|b| b.score > -1.0).max_by(|a, b| a.score.total_cmp(&b.score)) {
        Some(p) => Containment {
            alignment: p.score,
            detail: detail(small, big, &p),
            colour: colour_gap(small_thumb, big_thumb, &p, big.dimensions()),
        },
        None => Containment { alignment: coarse_best, detail: -1.0, colour: 510.0 },
    }
}

/// A thumbnail at half and at a quarter of its size, made once per pair for both directions.
struct Pyramid {
    half: GrayImage,
    quarter: GrayImage,
}

impl Pyramid {
    fn of(t: &Thumb) -> Pyramid {
        let half = |img: &GrayImage| {
            let (w, h) = img.dimensions();
            resample(img, w.div_ceil(2), h.div_ceil(2))
        };
        let h = half(&t.image);
        Pyramid { quarter: half(&h), half: h }
    }

    /// Full, half and quarter size, finest first.
    fn levels<'a>(&'a self, full: &'a GrayImage) -> [&'a GrayImage; 3] {
        [full, &self.half, &self.quarter]
    }
}

/// The best placement of `small` in `big` (`levels` its sums) near `c`, a placement found on
/// a coarser level of size `from`: sizes and positions within [`REFINE`] pixels of `c`'s,
/// scaled to this level.
fn refine(small: &GrayImage, big: &GrayImage, levels: &Summed, c: &Placement, from: (u32, u32)) -> Option<Placement> {
    let (bw, bh) = big.dimensions();
    let (sx, sy) = (bw as f32 / from.0 as f32, bh as f32 / from.1 as f32);
    let (cx, cy, cw, ch) = (c.x as f32 * sx, c.y as f32 * sy, c.w as f32 * sx, c.h as f32 * sy);
    let near = |v: u32, centre: f32| (v as f32 - centre).abs() <= REFINE;
    let span = |centre: f32, room: u32| (centre - REFINE).max(0.0) as u32..=((centre + REFINE) as u32).min(room);
    let mut best: Option<Placement> = None;
    for (w, h) in sizes(small, (bw, bh)).into_iter().filter(|(w, h)| near(*w, cw) && near(*h, ch)) {
        let t = Template::of(small, w, h);
        for y in span(cy, bh - h) {
            for x in span(cx, bw - w) {
                let score = levels.ncc(&t, x, y);
                if best.is_none_or(|b| score > b.score) {
                    best = Some(Placement { score, x, y, w, h });
                }
            }
        }
    }
    best
}

/// The [`REFINED`] best placements of `small` in `big` over every size and position, apart
/// from one another by more than a pixel in size or position.
fn best_placements(small: &GrayImage, big: &GrayImage) -> Vec<Placement> {
    let levels = Summed::of(big);
    let (bw, bh) = big.dimensions();
    let mut per_size: Vec<Placement> = Vec::new();
    for (w, h) in sizes(small, (bw, bh)) {
        let t = Template::of(small, w, h);
        let mut best: Option<Placement> = None;
        for y in 0..=bh - h {
            for x in 0..=bw - w {
                let score = levels.ncc(&t, x, y);
                if best.is_none_or(|b| score > b.score) {
                    best = Some(Placement { score, x, y, w, h });
                }
            }
        }
        per_size.extend(best.filter(|b| b.score > -1.0));
    }
    per_size.sort_by(|a, b| b.score.total_cmp(&a.score));
    let mut chosen: Vec<Placement> = Vec::new();
    for p in per_size {
        let apart = |q: &Placement| p.x.abs_diff(q.x) > 1 || p.y.abs_diff(q.y) > 1 || p.w.abs_diff(q.w) > 1;
        if chosen.len() < REFINED && chosen.iter().all(apart) {
            chosen.push(p);
        }
    }
    chosen
}

/// The placement's correlation on fine structure, allowing one pixel of misalignment. Each
/// side is high-passed as cut, so that an edge just outside the placement (a frame, the rest
/// of the picture) cannot leak into it.
fn detail(small: &GrayImage, big: &GrayImage, p: &Placement) -> f32 {
    let (bw, bh) = big.dimensions();
    let (w, h) = (p.w, p.h);
    let t = high_pass(&resample(small, w, h));
    let mut detail = -1.0f32;
    for dy in -1i64..=1 {
        for dx in -1i64..=1 {
            let (px, py) = (i64::from(p.x) + dx, i64::from(p.y) + dy);
            if px >= 0 && py >= 0 && px + i64::from(w) <= i64::from(bw) && py + i64::from(h) <= i64::from(bh) {
                let cut = imageops::crop_imm(big, px as u32, py as u32, w, h).to_image();
                detail = detail.max(correlation(&high_pass(&cut), &t));
            }
        }
    }
    detail
}

/// Mean colour difference between `small` and the part of `big` where the placement (on a
/// level of size `level`) puts it, compared as colour layouts: the mean colour of each ninth
/// (3 x 3) of both. Means, not single colour samples, so that a busy picture's colour does
/// not depend on where the coarse colour grid happens to cut it.
fn colour_gap(small: &Thumb, big: &Thumb, p: &Placement, level: (u32, u32)) -> f32 {
    let (bw, bh) = (level.0 as f32, level.1 as f32);
    let (x0, y0) = (p.x as f32 / bw, p.y as f32 / bh);
    let (pw, ph) = (p.w as f32 / bw, p.h as f32 / bh);
    let mut sum = 0.0;
    for row in 0..3 {
        for col in 0..3 {
            let part = |x: f32, y: f32, w: f32, h: f32| {
                [
                    x + w * col as f32 / 3.0,
                    y + h * row as f32 / 3.0,
                    x + w * (col + 1) as f32 / 3.0,
                    y + h * (row + 1) as f32 / 3.0,
                ]
            };
            let ([a, b], [c, d]) = (small.mean_chroma(part(0.0, 0.0, 1.0, 1.0)), big.mean_chroma(part(x0, y0, pw, ph)));
            sum += (a - c).abs() + (b - d).abs();
        }
    }
    sum / 9.0
}

/// An image less its blur.
fn high_pass(img: &GrayImage) -> Vec<f32> {
    let blurred = imageops::blur(img, DETAIL_SIGMA);
    img.as_raw().iter().zip(blurred.as_raw()).map(|(a, b)| f32::from(*a) - f32::from(*b)).collect()
}

/// Pearson correlation of two equally long series; -1 where either is flat.
fn correlation(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len() as f64;
    // Sums of squares over thousands of values lose a smooth region's variance in f32.
    let (mut sa, mut saa, mut sb, mut sbb, mut sab) = (0f64, 0f64, 0f64, 0f64, 0f64);
    for (a, b) in a.iter().zip(b) {
        let (a, b) = (f64::from(*a), f64::from(*b));
        sa += a;
        saa += a * a;
        sb += b;
        sbb += b * b;
        sab += a * b;
    }
    let (va, vb) = (saa - sa * sa / n, sbb - sb * sb / n);
    // Below one grey level of spread per pixel there is nothing to correlate.
    if va <= n || vb <= n {
        return -1.0;
    }
    ((sab - sa * sb / n) / (va * vb).sqrt()).clamp(-1.0, 1.0) as f32
}

/// `img` resized to `w x h` by a separable triangle filter, widened by the shrink factor when
/// shrinking (as `imageops::resize` with `FilterType::Triangle`): the search resizes a
/// thumbnail to every tried size, and the general resizer's per-call setup cost more than all
/// the correlations.
fn resample(img: &GrayImage, w: u32, h: u32) -> GrayImage {
    let (sw, sh, w) = (img.width() as usize, img.height() as usize, w as usize);
    let (cols, rows) = (Taps::new(sw, w), Taps::new(sh, h as usize));
    // Rows first into floats, then columns; one rounding at the end.
    let mut across = vec![0f32; sh * w];
    for (y, out) in across.chunks_exact_mut(w).enumerate() {
        let src = &img.as_raw()[y * sw..][..sw];
        for (x, v) in out.iter_mut().enumerate() {
            let (first, weights) = cols.at(x);
            *v = weights.iter().zip(&src[first..]).map(|(k, v)| k * f32::from(*v)).sum();
        }
    }
    let mut out = vec![0u8; w * h as usize];
    for (y, row) in out.chunks_exact_mut(w).enumerate() {
        let (first, weights) = rows.at(y);
        for (x, v) in row.iter_mut().enumerate() {
            let sum: f32 = weights.iter().enumerate().map(|(i, k)| k * across[(first + i) * w + x]).sum();
            *v = sum.round().clamp(0.0, 255.0) as u8;
        }
    }
    GrayImage::from_raw(w as u32, h, out).unwrap_or_else(|| GrayImage::new(w as u32, h))
}

/// The triangle filter's inputs for each output sample along one axis: the first input and
/// the normalised weights of the inputs from there, in one flat table.
struct Taps {
    first: Vec<usize>,
    counts: Vec<usize>,
    weights: Vec<f32>,
    stride: usize,
}

impl Taps {
    fn new(src: usize, dst: usize) -> Taps {
        let ratio = src as f32 / dst.max(1) as f32;
        let support = ratio.max(1.0);
        let stride = 2 * support.ceil() as usize + 2;
        let mut taps = Taps { first: vec![0; dst], counts: vec![0; dst], weights: vec![0.0; dst * stride], stride };
        for i in 0..dst {
            let centre = (i as f32 + 0.5) * ratio;
            let first = ((centre - support).floor().max(0.0) as usize).min(src - 1);
            let last = ((centre + support).ceil() as usize).clamp(first + 1, src).min(first + stride);
            let weights = &mut taps.weights[i * stride..][..last - first];
            for (k, j) in weights.iter_mut().zip(first..last) {
                *k = (1.0 - ((j as f32 + 0.5 - centre) / support).abs()).max(0.0);
            }
            let total: f32 = weights.iter().sum();
            if total > 0.0 {
                weights.iter_mut().for_each(|k| *k /= total);
            } else {
                weights[0] = 1.0;
            }
            (taps.first[i], taps.counts[i]) = (first, last - first);
        }
        taps
    }

    fn at(&self, i: usize) -> (usize, &[f32]) {
        (self.first[i], &self.weights[i * self.stride..][..self.counts[i]])
    }
}

/// `small` resized to one tried size, with the sums its correlations need.
struct Template {
    pixels: Vec<u8>,
    width: usize,
    height: usize,
    sum: i64,
    squares: i64,
}

impl Template {
    fn of(small: &GrayImage, w: u32, h: u32) -> Template {
        let pixels = resample(small, w, h).into_raw();
        let sum = pixels.iter().map(|v| i64::from(*v)).sum();
        let squares = pixels.iter().map(|v| i64::from(*v) * i64::from(*v)).sum();
        Template { pixels, width: w as usize, height: h as usize, sum, squares }
    }
}

/// A grey image with summed-area tables of its levels and their squares: the sums of any
/// window in four lookups, so that each tried position costs one integer dot product.
struct Summed {
    pixels: Vec<u8>,
    width: usize,
    sums: Vec<i64>,
    squares: Vec<i64>,
}

impl Summed {
    fn of(img: &GrayImage) -> Summed {
        let (w, h) = (img.width() as usize, img.height() as usize);
        let stride = w + 1;
        let (mut sums, mut squares) = (vec![0i64; stride * (h + 1)], vec![0i64; stride * (h + 1)]);
        for y in 0..h {
            let (mut row, mut row_sq) = (0i64, 0i64);
            for x in 0..w {
                let v = i64::from(img.as_raw()[y * w + x]);
                row += v;
                row_sq += v * v;
                sums[(y + 1) * stride + x + 1] = sums[y * stride + x + 1] + row;
                squares[(y + 1) * stride + x + 1] = squares[y * stride + x + 1] + row_sq;
            }
        }
        Summed { pixels: img.as_raw().clone(), width: w, sums, squares }
    }

    fn window(&self, table: &[i64], x: usize, y: usize, w: usize, h: usize) -> i64 {
        let s = self.width + 1;
        table[(y + h) * s + x + w] + table[y * s + x] - table[y * s + x + w] - table[(y + h) * s + x]
    }

    /// Normalised cross-correlation of `t` with the region of the same size at `(x, y)`; -1
    /// where either is flat. Exact: every sum is an integer.
    fn ncc(&self, t: &Template, x: u32, y: u32) -> f32 {
        let (x, y, w, h) = (x as usize, y as usize, t.width, t.height);
        let mut dot = 0i64;
        for r in 0..h {
            let row = &self.pixels[(y + r) * self.width + x..][..w];
            // One row's products of 8-bit levels fit a u32 (w <= THUMB_SIDE); this loop is
            // where the search spends its time, and the narrow sum vectorises.
            let s: u32 = row.iter().zip(&t.pixels[r * w..][..w]).map(|(a, b)| u32::from(*a) * u32::from(*b)).sum();
            dot += i64::from(s);
        }
        let n = (w * h) as i64;
        let (sa, saa) = (self.window(&self.sums, x, y, w, h), self.window(&self.squares, x, y, w, h));
        // n times the variances and the covariance, exactly.
        let (va, vt) = (n * saa - sa * sa, n * t.squares - t.sum * t.sum);
        // Below one grey level of spread per pixel there is nothing to correlate.
        if va <= n * n || vt <= n * n {
            return -1.0;
        }
        let cov = n * dot - sa * t.sum;
        (cov as f64 / ((va as f64) * (vt as f64)).sqrt()).clamp(-1.0, 1.0) as f32
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resampling_follows_the_triangle_filter() {
        let img = GrayImage::from_fn(64, 48, |x, y| image::Luma([((x * 37 + y * 11) % 256) as u8]));
        for (w, h) in [(64, 48), (32, 24), (25, 19), (16, 12), (7, 5), (80, 50), (1, 1)] {
            let ours = resample(&img, w, h);
            let theirs = imageops::resize(&img, w, h, imageops::FilterType::Triangle);
            let worst = ours.as_raw().iter().zip(theirs.as_raw()).map(|(a, b)| a.abs_diff(*b)).max().unwrap_or(0);
            assert!(worst <= 2, "{w}x{h}: differs by {worst}");
        }
    }

    #[test]
    fn a_stored_thumbnail_must_match_its_size() {
        let thumb = Thumb::of(&DynamicImage::new_luma8(200, 100));
        assert_eq!(thumb.image.dimensions(), (THUMB_SIDE, THUMB_SIDE / 2));
        let bytes = postcard::to_allocvec(&thumb).unwrap();
        assert_eq!(postcard::from_bytes::<Thumb>(&bytes).unwrap(), thumb);
        for (width, height, len) in [(10, 10, 99), (0, 5, 0), (THUMB_SIDE + 1, 1, THUMB_SIDE as usize + 1)] {
            let parts = ThumbParts { width, height, pixels: vec![0; len], chroma: vec![128; 2] };
            let bytes = postcard::to_allocvec(&parts).unwrap();
            assert!(postcard::from_bytes::<Thumb>(&bytes).is_err(), "{width}x{height} with {len} pixels");
        }
    }
}
