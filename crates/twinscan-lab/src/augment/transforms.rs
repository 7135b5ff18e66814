//! The copies people make of a photo, as seeded transforms of an RGB image.

use image::codecs::jpeg::{JpegDecoder, JpegEncoder};
use image::{imageops, DynamicImage, ImageDecoder, Rgb, RgbImage};

use twinscan::tower::SplitMix64;

/// One kind of copy. [`Transform::apply`] draws its strength from the generator, within the
/// ranges documented on each variant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Transform {
    /// Scaled down to 25-80% of each side.
    Resize,
    /// Re-encoded as JPEG at quality 10-95.
    Reencode,
    /// Cut by up to 30% on each side (at least 10% on one).
    Crop,
    /// One axis stretched by a factor of 0.7-0.87 or 1.15-1.4.
    Aspect,
    /// 12-30% of full scale added to or taken from every channel.
    Brightness,
    /// Contrast around the mean scaled by 0.5-0.8 or 1.25-1.6.
    Contrast,
    /// Channel gains of 0.8-1.2 (a white-balance shift).
    Colour,
    /// Converted to grey.
    Grey,
    /// Gaussian-like blur of 0.4-1.2% of the longer side.
    Blur,
    /// A banner with text-like glyphs along the top or bottom, or glyphs written over the image.
    Caption,
    /// A solid frame of 3-15% of each side around the whole image.
    Border,
    /// Mirrored left to right.
    Mirror,
    /// Rotated by 90, 180 or 270 degrees.
    Rotate,
}

impl Transform {
    /// Every kind, in the order reports list them.
    pub const ALL: [Transform; 13] = [
        Transform::Resize,
        Transform::Reencode,
        Transform::Crop,
        Transform::Aspect,
        Transform::Brightness,
        Transform::Contrast,
        Transform::Colour,
        Transform::Grey,
        Transform::Blur,
        Transform::Caption,
        Transform::Border,
        Transform::Mirror,
        Transform::Rotate,
    ];

    /// Short lowercase name, as reports print it.
    pub fn name(self) -> &'static str {
        match self {
            Transform::Resize => "resize",
            Transform::Reencode => "reencode",
            Transform::Crop => "crop",
            Transform::Aspect => "aspect",
            Transform::Brightness => "brightness",
            Transform::Contrast => "contrast",
            Transform::Colour => "colour",
            Transform::Grey => "grey",
            Transform::Blur => "blur",
            Transform::Caption => "caption",
            Transform::Border => "border",
            Transform::Mirror => "mirror",
            Transform::Rotate => "rotate",
        }
    }

    /// True for mirror and rotation, which a model only matches with invariance on.
    pub fn needs_invariance(self) -> bool {
        matches!(self, Transform::Mirror | Transform::Rotate)
    }

    /// A transformed copy of `img`; the same generator state gives the same copy.
    ///
    /// ```
    /// use twinscan_lab::augment::Transform;
    /// use twinscan::tower::SplitMix64;
    /// let img = image::RgbImage::from_pixel(40, 30, image::Rgb([200, 100, 50]));
    /// let grey = Transform::Grey.apply(&img, &mut SplitMix64::new(1));
    /// assert_eq!(grey.dimensions(), (40, 30));
    /// let p = grey.get_pixel(0, 0);
    /// assert!(p[0] == p[1] && p[1] == p[2]);
    /// ```
    pub fn apply(self, img: &RgbImage, rng: &mut SplitMix64) -> RgbImage {
        self.apply_showing(img, rng).0
    }

    /// [`Transform::apply`], and the part of `img` the copy shows as `(x, y, width, height)`:
    /// all of it but for a crop.
    pub fn apply_showing(self, img: &RgbImage, rng: &mut SplitMix64) -> (RgbImage, (u32, u32, u32, u32)) {
        let (w, h) = img.dimensions();
        let copy = match self {
            Transform::Crop => {
                let mut f = [0.0; 4].map(|_: f32| uniform(rng, 0.0, 0.3));
                if f.iter().all(|x| *x < 0.1) {
                    f[rng.below(4)] = uniform(rng, 0.1, 0.3);
                }
                let (x0, x1) = (scaled(w, f[0]).min(w - 1), w - scaled(w, f[1]).min(w - 1));
                let (y0, y1) = (scaled(h, f[2]).min(h - 1), h - scaled(h, f[3]).min(h - 1));
                let shown = (x0, y0, x1.saturating_sub(x0).max(1), y1.saturating_sub(y0).max(1));
                return (imageops::crop_imm(img, shown.0, shown.1, shown.2, shown.3).to_image(), shown);
            }
            Transform::Resize => {
                let s = uniform(rng, 0.25, 0.8);
                imageops::resize(img, scaled(w, s), scaled(h, s), imageops::FilterType::Triangle)
            }
            Transform::Reencode => reencode(img, 10 + rng.below(86) as u8),
            Transform::Aspect => {
                let f = if rng.below(2) == 0 { uniform(rng, 0.7, 0.87) } else { uniform(rng, 1.15, 1.4) };
                let (nw, nh) = if rng.below(2) == 0 { (scaled(w, f), h) } else { (w, scaled(h, f)) };
                imageops::resize(img, nw, nh, imageops::FilterType::Triangle)
            }
            Transform::Brightness => {
                let d = uniform(rng, 0.12, 0.3) * 255.0 * if rng.below(2) == 0 { -1.0 } else { 1.0 };
                map_channels(img, |_, v| v + d)
            }
            Transform::Contrast => {
                let k = if rng.below(2) == 0 { uniform(rng, 0.5, 0.8) } else { uniform(rng, 1.25, 1.6) };
                let mean = mean_value(img);
                map_channels(img, |_, v| mean + (v - mean) * k)
            }
            Transform::Colour => {
                let gains = [0.0; 3].map(|_: f32| uniform(rng, 0.8, 1.2));
                map_channels(img, |c, v| v * gains[c])
            }
            Transform::Grey => DynamicImage::ImageRgb8(img.clone()).grayscale().to_rgb8(),
            Transform::Blur => imageops::fast_blur(img, (uniform(rng, 0.004, 0.012) * w.max(h) as f32).max(0.8)),
            Transform::Caption => caption(img, rng),
            Transform::Border => border(img, rng),
            Transform::Mirror => imageops::flip_horizontal(img),
            Transform::Rotate => match rng.below(3) {
                0 => imageops::rotate90(img),
                1 => imageops::rotate180(img),
                _ => imageops::rotate270(img),
            },
        };
        (copy, (0, 0, w, h))
    }
}

/// Uniform in `[lo, hi)`.
pub(crate) fn uniform(rng: &mut SplitMix64, lo: f32, hi: f32) -> f32 {
    lo + (hi - lo) * rng.next_f32()
}

fn scaled(n: u32, s: f32) -> u32 {
    ((n as f32 * s).round() as u32).max(1)
}

fn map_channels(img: &RgbImage, f: impl Fn(usize, f32) -> f32) -> RgbImage {
    let mut out = img.clone();
    for px in out.pixels_mut() {
        for c in 0..3 {
            px[c] = f(c, f32::from(px[c])).round().clamp(0.0, 255.0) as u8;
        }
    }
    out
}

fn mean_value(img: &RgbImage) -> f32 {
    let sum: u64 = img.as_raw().iter().map(|v| u64::from(*v)).sum();
    sum as f32 / img.as_raw().len().max(1) as f32
}

/// JPEG round trip. Encoding an in-memory RGB buffer cannot meet a malformed input, so a failure
/// here would be an encoder bug; the copy is then returned unchanged rather than aborting a run.
pub(crate) fn reencode(img: &RgbImage, quality: u8) -> RgbImage {
    let mut bytes = Vec::new();
    if img.write_with_encoder(JpegEncoder::new_with_quality(&mut bytes, quality)).is_err() {
        return img.clone();
    }
    let decoded = JpegDecoder::new(std::io::Cursor::new(&bytes)).and_then(|d| {
        let (w, h) = d.dimensions();
        let mut buf = vec![0; d.total_bytes() as usize];
        d.read_image(&mut buf)?;
        Ok(RgbImage::from_raw(w, h, buf))
    });
    match decoded {
        Ok(Some(out)) => out,
        _ => img.clone(),
    }
}

fn random_colour(rng: &mut SplitMix64) -> Rgb<u8> {
    match rng.below(3) {
        0 => Rgb([0, 0, 0]),
        1 => Rgb([255, 255, 255]),
        _ => Rgb([0, 0, 0].map(|_: u8| rng.below(256) as u8)),
    }
}

fn border(img: &RgbImage, rng: &mut SplitMix64) -> RgbImage {
    let (w, h) = img.dimensions();
    let uniform_frame = rng.below(2) == 0;
    let f0 = uniform(rng, 0.03, 0.15);
    let mut side = |n: u32| scaled(n, if uniform_frame { f0 } else { uniform(rng, 0.03, 0.15) });
    let (l, r, t, b) = (side(w), side(w), side(h), side(h));
    let mut out = RgbImage::from_pixel(w + l + r, h + t + b, random_colour(rng));
    imageops::replace(&mut out, img, i64::from(l), i64::from(t));
    out
}

/// Writes a line of random 3x5 glyphs, like a caption in an unknown script: what matters to a
/// matcher is the occlusion and the strokes, not the words.
fn caption(img: &RgbImage, rng: &mut SplitMix64) -> RgbImage {
    let (w, h) = img.dimensions();
    let mut out = img.clone();
    let band = scaled(h, uniform(rng, 0.08, 0.15)).max(7);
    let y0 = if rng.below(2) == 0 { 0 } else { h.saturating_sub(band) };
    let banner = rng.below(2) == 0;
    let ink = if banner {
        let fill = random_colour(rng);
        for y in y0..(y0 + band).min(h) {
            for x in 0..w {
                out.put_pixel(x, y, fill);
            }
        }
        if fill[0] as u32 + fill[1] as u32 + fill[2] as u32 > 384 {
            Rgb([0, 0, 0])
        } else {
            Rgb([255, 255, 255])
        }
    } else {
        Rgb([255, 255, 255])
    };
    let cell = (band * 6 / 10 / 5).max(1);
    let (gw, gap) = (3 * cell, cell * 2);
    let ty = y0 + (band - 5 * cell) / 2;
    let chars = ((w as f32 * uniform(rng, 0.4, 0.9)) as u32 / (gw + gap)).max(1);
    let mut x = (w - (chars * (gw + gap)).min(w)) / 2;
    for _ in 0..chars {
        let glyph = (rng.next_u64() & 0x7fff) | 0b010_010_010_010_010; // a vertical stroke, always
        for gy in 0..5 {
            for gx in 0..3 {
                if glyph >> (gy * 3 + gx) & 1 == 1 {
                    for dy in 0..cell {
                        for dx in 0..cell {
                            let (px, py) = (x + gx * cell + dx, ty + gy * cell + dy);
                            if px < w && py < h {
                                out.put_pixel(px, py, ink);
                            }
                        }
                    }
                }
            }
        }
        x += gw + gap;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn photo() -> RgbImage {
        RgbImage::from_fn(120, 80, |x, y| Rgb([(x * 2) as u8, (y * 3) as u8, ((x + y) % 256) as u8]))
    }

    #[test]
    fn every_transform_is_seeded_and_changes_the_image() {
        let img = photo();
        for t in Transform::ALL {
            let a = t.apply(&img, &mut SplitMix64::new(7));
            let b = t.apply(&img, &mut SplitMix64::new(7));
            assert_eq!(a, b, "{} is not reproducible", t.name());
            assert!(a.width() > 0 && a.height() > 0);
            assert!(a != img, "{} left the image unchanged", t.name());
        }
    }

    #[test]
    fn geometry_stays_within_the_documented_ranges() {
        let img = photo();
        for seed in 0..50 {
            let c = Transform::Crop.apply(&img, &mut SplitMix64::new(seed));
            assert!(c.width() >= 48 && c.height() >= 32 && (c.width() < 120 || c.height() < 80));
            let b = Transform::Border.apply(&img, &mut SplitMix64::new(seed));
            assert!(b.width() > 120 && b.height() > 80 && b.width() <= 120 + 36 + 2);
            let r = Transform::Resize.apply(&img, &mut SplitMix64::new(seed));
            assert!(r.width() >= 30 && r.width() <= 96);
        }
    }
}
