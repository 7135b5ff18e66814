//! Windows of a photo and the random copies that self-supervised training pairs up.

use image::{imageops, RgbImage};

use super::transforms::{uniform, Transform};
use twinscan::tower::SplitMix64;

/// A rectangle inside a photo, in pixels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    /// Left edge.
    pub x: u32,
    /// Top edge.
    pub y: u32,
    /// Width.
    pub w: u32,
    /// Height.
    pub h: u32,
}

impl Window {
    /// Area of the intersection over area of the union.
    pub fn iou(&self, o: &Window) -> f32 {
        let ix = (self.x + self.w).min(o.x + o.w).saturating_sub(self.x.max(o.x));
        let iy = (self.y + self.h).min(o.y + o.h).saturating_sub(self.y.max(o.y));
        let inter = ix as f32 * iy as f32;
        inter / (self.w as f32 * self.h as f32 + o.w as f32 * o.h as f32 - inter).max(1.0)
    }

    /// The window's pixels, shrunk so that the longer side is at most `max_side`.
    pub fn cut(&self, img: &RgbImage, max_side: u32) -> RgbImage {
        let view = imageops::crop_imm(img, self.x, self.y, self.w.max(1), self.h.max(1)).to_image();
        shrink(&view, max_side)
    }

    /// A window of `w x h` at a random place in an image of `iw x ih`, each side `lo..hi` of
    /// the image's.
    pub fn random(iw: u32, ih: u32, (lo, hi): (f32, f32), rng: &mut SplitMix64) -> Window {
        let w = ((iw as f32 * uniform(rng, lo, hi)) as u32).clamp(1, iw);
        let h = ((ih as f32 * uniform(rng, lo, hi)) as u32).clamp(1, ih);
        Window { x: rng.below((iw - w + 1) as usize) as u32, y: rng.below((ih - h + 1) as usize) as u32, w, h }
    }

    /// A burst-like neighbour in an image of `size`: this window moved by a fifth to three
    /// tenths of its size along one axis and up to a tenth along the other, rescaled by up to
    /// 10%, if that fits (the next frame of a burst, hand held).
    pub fn burst(&self, rng: &mut SplitMix64, size: (u32, u32)) -> Option<Window> {
        let step = |r: &mut SplitMix64, lo, hi| uniform(r, lo, hi) * if r.below(2) == 0 { -1.0 } else { 1.0 };
        let (dx, dy) = (step(rng, 0.2, 0.3), step(rng, 0.0, 0.1));
        let shift = if rng.below(2) == 0 { (dx, dy) } else { (dy, dx) };
        self.shifted(shift, uniform(rng, 0.9, 1.1), size)
    }

    /// Whether `other` lies wholly inside this window.
    pub fn contains(&self, other: &Window) -> bool {
        other.x >= self.x
            && other.y >= self.y
            && other.x + other.w <= self.x + self.w
            && other.y + other.h <= self.y + self.h
    }

    /// The part `(x, y, width, height)` of this window's pixels seen at `size` (as
    /// [`Window::cut`] shrinks them), in the photo's pixels; rounded outward, so that a part
    /// is never taken for smaller than it is.
    pub fn part(&self, (x, y, w, h): (u32, u32, u32, u32), size: (u32, u32)) -> Window {
        let (sx, sy) = (f64::from(self.w) / f64::from(size.0.max(1)), f64::from(self.h) / f64::from(size.1.max(1)));
        let (x0, y0) = ((f64::from(x) * sx).floor() as u32, (f64::from(y) * sy).floor() as u32);
        let (x1, y1) = ((f64::from(x + w) * sx).ceil() as u32, (f64::from(y + h) * sy).ceil() as u32);
        Window {
            x: self.x + x0,
            y: self.y + y0,
            w: x1.min(self.w).saturating_sub(x0),
            h: y1.min(self.h).saturating_sub(y0),
        }
    }

    /// This window moved by `(dx, dy)` of its own size and scaled by `s`, if it still fits in
    /// an image of `iw x ih`.
    pub fn shifted(&self, (dx, dy): (f32, f32), s: f32, (iw, ih): (u32, u32)) -> Option<Window> {
        let (w, h) = ((self.w as f32 * s) as u32, (self.h as f32 * s) as u32);
        let x = self.x as f32 + dx * self.w as f32;
        let y = self.y as f32 + dy * self.h as f32;
        (x >= 0.0 && y >= 0.0 && x as u32 + w <= iw && y as u32 + h <= ih && w > 0 && h > 0).then_some(Window {
            x: x as u32,
            y: y as u32,
            w,
            h,
        })
    }
}

/// Windows with less [`detail`] than this (blank sky, smooth gradients, flat colour) are not
/// used: any two of them look alike to every matcher, so they measure the data, not the model.
pub const MIN_DETAIL: f32 = 4.0;

/// Mean absolute difference between neighbouring pixels of the window seen at 64x64 in grey, on
/// the 0-255 scale (twice that, summed over both axes): about 0-3 for a smooth gradient, 10-30
/// for a typical photo.
pub fn detail(img: &RgbImage, w: &Window) -> f32 {
    let view = imageops::crop_imm(img, w.x, w.y, w.w.max(1), w.h.max(1)).to_image();
    let small = imageops::resize(&view, 64, 64, imageops::FilterType::Triangle);
    let grey = image::DynamicImage::ImageRgb8(small).to_luma8();
    let px = |x: u32, y: u32| f32::from(grey.get_pixel(x, y)[0]);
    let (mut dx, mut dy) = (0.0, 0.0);
    for y in 0..64 {
        for x in 0..64 {
            if x > 0 {
                dx += (px(x, y) - px(x - 1, y)).abs();
            }
            if y > 0 {
                dy += (px(x, y) - px(x, y - 1)).abs();
            }
        }
    }
    (dx + dy) / (64.0 * 63.0)
}

/// `img` shrunk (never enlarged) so that its longer side is at most `max_side`.
pub fn shrink(img: &RgbImage, max_side: u32) -> RgbImage {
    let (w, h) = img.dimensions();
    if w.max(h) <= max_side {
        return img.clone();
    }
    let s = max_side as f32 / w.max(h) as f32;
    let (nw, nh) = (((w as f32 * s).round() as u32).max(1), ((h as f32 * s).round() as u32).max(1));
    imageops::resize(img, nw, nh, imageops::FilterType::Triangle)
}

/// A random copy of `base` for training: each kind of [`Transform`] except mirror and
/// rotation, independently, with its own probability, in the order people apply them (edit the
/// geometry, annotate, adjust colours, then save smaller).
pub fn random_copy(base: &RgbImage, rng: &mut SplitMix64) -> RgbImage {
    const CHAIN: [(Transform, f32); 11] = [
        (Transform::Crop, 0.7),
        (Transform::Aspect, 0.2),
        (Transform::Border, 0.3),
        (Transform::Caption, 0.3),
        (Transform::Brightness, 0.4),
        (Transform::Contrast, 0.3),
        (Transform::Colour, 0.3),
        (Transform::Grey, 0.25),
        (Transform::Blur, 0.25),
        (Transform::Resize, 0.3),
        (Transform::Reencode, 0.4),
    ];
    let mut img = base.clone();
    for (t, p) in CHAIN {
        if rng.next_f32() < p {
            img = t.apply(&img, rng);
        }
    }
    img
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_fit_and_overlap_as_measured() {
        let mut rng = SplitMix64::new(3);
        for _ in 0..100 {
            let w = Window::random(300, 200, (0.3, 0.7), &mut rng);
            assert!(w.x + w.w <= 300 && w.y + w.h <= 200);
            assert!((w.iou(&w) - 1.0).abs() < 1e-6);
            if let Some(s) = w.shifted((0.5, 0.0), 1.0, (300, 200)) {
                assert!((w.iou(&s) - 1.0 / 3.0).abs() < 0.05, "half-shift iou {}", w.iou(&s));
            }
        }
    }
}
