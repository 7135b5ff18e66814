//! Whether one image is a part of another, rescaled: the check that finds crops (and framed
//! copies, whose original is a part of them), which no embedding distance can find without
//! also matching other shots of the same scene.
//!
//! Each image is kept as a small grey [`Thumb`]. [`containment`] places one thumbnail inside
//! the other: every rectangle that keeps the placed image's aspect and at least
//! [`MIN_SIDE`] of each side of the other, at every position, scored by normalised
//! cross-correlation (which ignores brightness and contrast). The best placement's score is
//! the *alignment*. Smooth pictures (skies, gradients) align with many places, so the
//! placement is then checked on the images' fine structure: the same correlation of the
//! high-passed thumbnails (each less its blur), allowing one pixel of misalignment, is the
//! *detail*. A crop scores high on both; a burst shot (a quarter of it new) or a smooth
//! lookalike fails the second.
//!
//! ```
//! use twinscan::contain::{containment, Thumb};
//! let photo = image::RgbImage::from_fn(200, 150, |x, y| image::Rgb([(x * 7 % 251) as u8, (y * 13 % 241) as u8, ((x * y) % 239) as u8]));
//! let crop = image::imageops::crop_imm(&photo, 30, 20, 140, 105).to_image();
//! let c = containment(&Thumb::of_rgb(&photo), &Thumb::of_rgb(&crop));
//! assert!(c.alignment > 0.9 && c.detail > 0.7, "{c:?}");
//! ```

use image::{imageops, DynamicImage, GrayImage, RgbImage};

/// Longest side of a thumbnail, in pixels.
pub const THUMB_SIDE: u32 = 64;

/// Least share of each side of the containing image that a placed image may cover: a crop of
/// up to 30% of each side keeps 40%; a little less allows for rounding.
pub const MIN_SIDE: f32 = 0.38;

/// Step between tried sizes, as a share of the containing image's side.
const SIZE_STEP: f32 = 0.0125;

/// Blur (sigma, in thumbnail pixels) whose removal leaves the fine structure.
const DETAIL_SIGMA: f32 = 1.0;

/// A grey thumbnail, longest side [`THUMB_SIDE`].
#[derive(Debug, Clone, PartialEq)]
pub struct Thumb {
    image: GrayImage,
}

impl Thumb {
    /// The thumbnail of an image (luma, area-weighted shrink).
    pub fn of(image: &DynamicImage) -> Thumb {
        let grey = image.to_luma8();
        let (w, h) = grey.dimensions();
        let s = THUMB_SIDE as f32 / w.max(h).max(1) as f32;
        let side = |n: u32| ((n as f32 * s).round() as u32).max(1);
        Thumb { image: imageops::resize(&grey, side(w), side(h), imageops::FilterType::Triangle) }
    }

    /// [`Thumb::of`] an RGB image.
    pub fn of_rgb(image: &RgbImage) -> Thumb {
        Thumb::of(&DynamicImage::ImageRgb8(image.clone()))
    }
}

/// How well one image fits inside the other (see the module documentation); both scores are
/// correlations in `[-1, 1]`, -1 where no placement could be scored (flat images).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Containment {
    /// Correlation of the grey levels at the best placement.
    pub alignment: f32,
    /// Correlation of the high-passed images at that placement.
    pub detail: f32,
}

impl Containment {
    /// Whether both scores reach their limits.
    pub fn holds(&self, alignment: f32, detail: f32) -> bool {
        self.alignment >= alignment && self.detail >= detail
    }
}

/// When a pair the embedding does not call a duplicate is one by containment. Chosen on the
/// photo tower's calibration suite (`cargo bench --bench near_dup` measures it on the held-out
/// suite): ten neighbours and a distance of up to twice the threshold bring in every crop the
/// suite has there; alignment 0.9 and detail 0.7 lie inside the range (0.85-0.9, 0.6-0.75)
/// that found the most crops with the fewest false positives.
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
}

impl Default for ContainmentRule {
    fn default() -> Self {
        ContainmentRule { neighbours: 10, max_distance: 2.0, alignment: 0.9, detail: 0.7 }
    }
}

impl ContainmentRule {
    /// Whether a pair at `distance` (the model's `threshold`), where one is the other's
    /// `rank`-th nearest image (0 for the nearest), counts as a duplicate: within the
    /// threshold, or close enough to check and one contains the other.
    pub fn duplicate(&self, distance: f32, threshold: f32, rank: usize, a: &Thumb, b: &Thumb) -> bool {
        distance <= threshold
            || (self.checks(distance, threshold, rank) && containment(a, b).holds(self.alignment, self.detail))
    }

    /// Whether a pair beyond the threshold is close enough to be checked at all.
    pub fn checks(&self, distance: f32, threshold: f32, rank: usize) -> bool {
        distance > threshold && rank < self.neighbours && distance <= self.max_distance * threshold
    }
}

/// The better of `small` placed inside `big` and `big` placed inside `small`, by alignment.
pub fn containment(a: &Thumb, b: &Thumb) -> Containment {
    let (x, y) = (place(&b.image, &a.image), place(&a.image, &b.image));
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

/// `small` placed inside `big`.
fn place(small: &GrayImage, big: &GrayImage) -> Containment {
    let (bw, bh) = big.dimensions();
    let levels = Plane::of(big.as_raw(), bw);
    let mut best: Option<(f32, u32, u32, usize, usize)> = None;
    for (w, h) in sizes(small, (bw, bh)) {
        let t = imageops::resize(small, w, h, imageops::FilterType::Triangle);
        let t = Plane::of(t.as_raw(), w);
        for y in 0..=(bh - h) as usize {
            for x in 0..=(bw - w) as usize {
                let s = levels.ncc(&t, x, y);
                if best.is_none_or(|b| s > b.0) {
                    best = Some((s, w, h, x, y));
                }
            }
        }
    }
    let Some((alignment, w, h, x, y)) = best.filter(|b| b.0 > -1.0) else {
        return Containment { alignment: -1.0, detail: -1.0 };
    };
    // Each side is high-passed as cut, so that an edge just outside the placement (a frame,
    // the rest of the picture) cannot leak into it.
    let t =
        Plane { values: high_pass(&imageops::resize(small, w, h, imageops::FilterType::Triangle)), width: w as usize };
    let mut detail = -1.0f32;
    for dy in -1i64..=1 {
        for dx in -1i64..=1 {
            let (px, py) = (x as i64 + dx, y as i64 + dy);
            if px >= 0 && py >= 0 && px + i64::from(w) <= i64::from(bw) && py + i64::from(h) <= i64::from(bh) {
                let cut = imageops::crop_imm(big, px as u32, py as u32, w, h).to_image();
                detail = detail.max(Plane { values: high_pass(&cut), width: w as usize }.ncc(&t, 0, 0));
            }
        }
    }
    Containment { alignment, detail }
}

/// An image less its blur.
fn high_pass(img: &GrayImage) -> Vec<f32> {
    let blurred = imageops::blur(img, DETAIL_SIGMA);
    img.as_raw().iter().zip(blurred.as_raw()).map(|(a, b)| f32::from(*a) - f32::from(*b)).collect()
}

/// Row-major values of one channel.
struct Plane {
    values: Vec<f32>,
    width: usize,
}

impl Plane {
    fn of(bytes: &[u8], width: u32) -> Plane {
        Plane { values: bytes.iter().map(|v| f32::from(*v)).collect(), width: width as usize }
    }

    /// Normalised cross-correlation of `t` with the same-sized region of `self` at `(x, y)`;
    /// -1 where either is flat.
    fn ncc(&self, t: &Plane, x: usize, y: usize) -> f32 {
        let (w, h) = (t.width, t.values.len() / t.width.max(1));
        let n = (w * h) as f64;
        // Sums of squares of 255-level values over thousands of pixels lose the variance of a
        // smooth region in f32.
        let (mut sa, mut saa, mut st, mut stt, mut sat) = (0f64, 0f64, 0f64, 0f64, 0f64);
        for r in 0..h {
            let row = &self.values[(y + r) * self.width + x..][..w];
            for (a, b) in row.iter().zip(&t.values[r * w..][..w]) {
                let (a, b) = (f64::from(*a), f64::from(*b));
                sa += a;
                saa += a * a;
                st += b;
                stt += b * b;
                sat += a * b;
            }
        }
        let (va, vt) = (saa - sa * sa / n, stt - st * st / n);
        // Below one grey level of spread per pixel there is nothing to correlate.
        if va <= n || vt <= n {
            return -1.0;
        }
        ((sat - sa * st / n) / (va * vt).sqrt()).clamp(-1.0, 1.0) as f32
    }
}
