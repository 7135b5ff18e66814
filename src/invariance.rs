//! Mirror and rotation invariance by search over orientations: an image is embedded in each
//! orientation of the square's symmetry group (one network run each, one decode), and two images
//! are as far apart as the closest pairing of one as it is with the other in any orientation.
//!
//! Averaging the orientations' embeddings into one was measured first and dropped: it makes
//! every copy of an image embed exactly alike, but pulls distinct images together so much that
//! on the near-duplicate suite recall of crops, borders and brightness fell from 0.3-0.9 to
//! 0.04-0.2 at the threshold that keeps precision.

use crate::tower::ModelMeta;

/// Which geometric copies embeddings should not tell apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Invariance {
    /// Orientation matters (one network run per image).
    #[default]
    None,
    /// Mirror images and 90, 180 and 270 degree rotations match (eight runs per image on a
    /// square input; four, without the quarter turns, on a non-square one).
    MirrorRotate,
}

impl Invariance {
    /// Name on the command line and in indexes.
    pub fn as_str(self) -> &'static str {
        match self {
            Invariance::None => "none",
            Invariance::MirrorRotate => "mirror-rotate",
        }
    }

    /// Network runs per image for an input of `h x w`.
    pub fn runs(self, h: usize, w: usize) -> usize {
        match self {
            Invariance::None => 1,
            Invariance::MirrorRotate if h == w => 8,
            Invariance::MirrorRotate => 4,
        }
    }
}

/// Expands `n` inputs `[n, C, H, W]` into `n * runs` inputs, each image's orientations together:
/// every combination of transposing (square inputs only) and flipping each axis.
pub(crate) fn orientations(input: &[f32], n: usize, (c, h, w): (usize, usize, usize), inv: Invariance) -> Vec<f32> {
    let runs = inv.runs(h, w);
    if runs == 1 {
        return input.to_vec();
    }
    let len = c * h * w;
    let mut out = vec![0f32; n * runs * len];
    for (src, dst) in input.chunks_exact(len).zip(out.chunks_exact_mut(runs * len)) {
        for (k, view) in dst.chunks_exact_mut(len).enumerate() {
            let (transpose, flip_y, flip_x) = (k >= 4, k & 2 != 0, k & 1 != 0);
            for ch in 0..c {
                let (plane, out_plane) = (&src[ch * h * w..][..h * w], &mut view[ch * h * w..][..h * w]);
                for y in 0..h {
                    for x in 0..w {
                        let (sy, sx) = if transpose { (x, y) } else { (y, x) };
                        let sy = if flip_y { h - 1 - sy } else { sy };
                        let sx = if flip_x { w - 1 - sx } else { sx };
                        out_plane[y * w + x] = plane[sy * w + sx];
                    }
                }
            }
        }
    }
    out
}

/// Appends a grey view to each image's views: `views` holds blocks of `runs` inputs of
/// `3 * h * w` values, `input` the images as they are (`meta`'s size, normalised as `meta`
/// says). The grey view is the image's luma (Rec. 709 weights, as `image`'s conversion) in all
/// three channels, normalised like colour.
pub(crate) fn with_grey(views: &[f32], input: &[f32], runs: usize, meta: &ModelMeta) -> Vec<f32> {
    const LUMA: [f32; 3] = [0.2126, 0.7152, 0.0722];
    let (h, w) = (meta.input.height, meta.input.width);
    let (mean, std) = (&meta.preprocess.mean, &meta.preprocess.std);
    let (plane, len) = (h * w, 3 * h * w);
    let mut out = Vec::with_capacity(input.len() / len.max(1) * (runs + 1) * len);
    for (block, image) in views.chunks_exact(runs * len).zip(input.chunks_exact(len)) {
        out.extend_from_slice(block);
        let luma: Vec<f32> =
            (0..plane).map(|i| (0..3).map(|c| LUMA[c] * (image[c * plane + i] * std[c] + mean[c])).sum()).collect();
        for c in 0..3 {
            out.extend(luma.iter().map(|l| (l - mean[c]) / std[c]));
        }
    }
    out
}

/// The distance between two oriented embeddings (`runs` rows of `d` values each, the image as
/// it is first): the smallest distance between either image as it is and the other in any
/// orientation.
pub(crate) fn oriented_distance(a: &[f32], b: &[f32], d: usize, distance: impl Fn(&[f32], &[f32]) -> f32) -> f32 {
    let (a0, b0) = (&a[..d.min(a.len())], &b[..d.min(b.len())]);
    a.chunks_exact(d)
        .map(|ag| distance(ag, b0))
        .chain(b.chunks_exact(d).map(|bg| distance(a0, bg)))
        .fold(f32::INFINITY, f32::min)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn orientations_form_the_symmetry_group() {
        let img: Vec<f32> = (0..9).map(|v| v as f32).collect();
        let all = orientations(&img, 1, (1, 3, 3), Invariance::MirrorRotate);
        assert_eq!(all.len(), 8 * 9);
        let mut views: Vec<Vec<i32>> = all.chunks(9).map(|v| v.iter().map(|x| *x as i32).collect()).collect();
        assert_eq!(views[0], (0..9).collect::<Vec<_>>());
        views.sort();
        views.dedup();
        assert_eq!(views.len(), 8, "eight distinct orientations");
        // A quarter turn of the image yields the same set of orientations.
        let turned: Vec<f32> = (0..9).map(|i| img[(2 - i % 3) * 3 + i / 3]).collect();
        let mut other: Vec<Vec<i32>> = orientations(&turned, 1, (1, 3, 3), Invariance::MirrorRotate)
            .chunks(9)
            .map(|v| v.iter().map(|x| *x as i32).collect())
            .collect();
        other.sort();
        assert_eq!(views, other);
    }

    #[test]
    fn oriented_distance_takes_the_closest_pairing() {
        let l1 = |x: &[f32], y: &[f32]| x.iter().zip(y).map(|(p, q)| (p - q).abs()).sum::<f32>();
        // Two orientations of two 1-d embeddings.
        assert_eq!(oriented_distance(&[0.0, 5.0], &[4.0, 9.0], 1, l1), 1.0); // a turned vs b as is
        assert_eq!(oriented_distance(&[0.0, 5.0], &[9.0, 0.5], 1, l1), 0.5); // a as is vs b turned
        assert_eq!(oriented_distance(&[3.0], &[3.0], 1, l1), 0.0);
    }
}
