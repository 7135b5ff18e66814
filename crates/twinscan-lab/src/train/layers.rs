//! Forward and backward passes of each layer kind on image-major batches (`[B, ...]`, one
//! image's activations contiguous, the ONNX layout), parallel over images with rayon.
//!
//! Written by hand rather than as a candle graph: candle allocates, zero-fills and accumulates a
//! gradient buffer for every node, and on the study's tower that bookkeeping, not arithmetic,
//! was most of a training step. Here buffers are reused from step to step and each layer's
//! backward pass is one sweep over its images.

use rayon::prelude::*;

use super::gemm::{matmul, Mat};

/// Images per rayon task where tasks need scratch buffers: enough to amortise them.
const MIN_IMAGES: usize = 8;

/// Geometry of a square convolution on one image.
#[derive(Debug, Clone, Copy)]
pub(super) struct ConvGeo {
    pub c: usize,
    pub h: usize,
    pub w: usize,
    pub o: usize,
    pub k: usize,
    pub stride: usize,
    pub pad: usize,
    pub ho: usize,
    pub wo: usize,
}

impl ConvGeo {
    /// Rows of the column matrix: one per input channel and kernel offset, in the order of the
    /// ONNX weight `[O, C, k, k]`, so the weight is used as stored.
    fn rows(&self) -> usize {
        self.c * self.k * self.k
    }

    fn out_plane(&self) -> usize {
        self.ho * self.wo
    }

    /// For kernel offset `kk` along an axis of `n` inputs and `out` outputs: the outputs whose
    /// input lies inside, and the input of the first of them.
    fn valid(&self, kk: usize, n: usize, out: usize) -> (std::ops::Range<usize>, usize) {
        let s = self.stride;
        let lo = self.pad.saturating_sub(kk).div_ceil(s);
        let hi = (n + self.pad).saturating_sub(kk).div_ceil(s).min(out);
        let lo = lo.min(hi);
        (lo..hi, (lo * s + kk).saturating_sub(self.pad))
    }

    /// `[C, H, W] -> [C*k*k, Ho*Wo]`, zeros where the window leaves the image.
    fn im2col(&self, x: &[f32], cols: &mut [f32]) {
        let (k, s, hw) = (self.k, self.stride, self.out_plane());
        for (row, dst) in cols.chunks_exact_mut(hw).enumerate() {
            let (ch, ky, kx) = (row / (k * k), row / k % k, row % k);
            let plane = &x[ch * self.h * self.w..][..self.h * self.w];
            let (ys, iy0) = self.valid(ky, self.h, self.ho);
            let (xs, ix0) = self.valid(kx, self.w, self.wo);
            if ys.len() < self.ho || xs.len() < self.wo {
                dst.fill(0.0);
            }
            for (n, oy) in ys.enumerate() {
                let line = &plane[(iy0 + n * s) * self.w..][..self.w];
                let out = &mut dst[oy * self.wo..][xs.clone()];
                if s == 1 {
                    out.copy_from_slice(&line[ix0..ix0 + out.len()]);
                } else {
                    for (o, i) in out.iter_mut().zip(line[ix0..].iter().step_by(s)) {
                        *o = *i;
                    }
                }
            }
        }
    }

    /// The adjoint of [`ConvGeo::im2col`]: adds the columns back onto `[C, H, W]`.
    fn col2im(&self, cols: &[f32], x: &mut [f32]) {
        let (k, s, hw) = (self.k, self.stride, self.out_plane());
        x.fill(0.0);
        for (row, src) in cols.chunks_exact(hw).enumerate() {
            let (ch, ky, kx) = (row / (k * k), row / k % k, row % k);
            let plane = &mut x[ch * self.h * self.w..][..self.h * self.w];
            let (ys, iy0) = self.valid(ky, self.h, self.ho);
            let (xs, ix0) = self.valid(kx, self.w, self.wo);
            for (n, oy) in ys.enumerate() {
                let line = &mut plane[(iy0 + n * s) * self.w..][..self.w];
                let g = &src[oy * self.wo..][xs.clone()];
                if s == 1 {
                    add(&mut line[ix0..ix0 + g.len()], g);
                } else {
                    for (o, g) in line[ix0..].iter_mut().step_by(s).zip(g) {
                        *o += g;
                    }
                }
            }
        }
    }
}

/// Convolution forward: `y = W * cols(x) + b` image by image.
pub(super) fn conv_forward(g: &ConvGeo, weight: &[f32], bias: &[f32], x: &[f32], y: &mut [f32]) {
    let (in_len, out_len, hw) = (g.c * g.h * g.w, g.o * g.out_plane(), g.out_plane());
    let w = Mat::new(weight, g.o, g.rows());
    y.par_chunks_mut(out_len).zip(x.par_chunks(in_len)).with_min_len(MIN_IMAGES).for_each_init(
        || vec![0f32; g.rows() * hw],
        |cols, (y, x)| {
            g.im2col(x, cols);
            for (plane, b) in y.chunks_exact_mut(hw).zip(bias) {
                plane.fill(*b);
            }
            matmul(y, w, Mat::new(cols, g.rows(), hw), true);
        },
    );
}

/// Convolution backward: returns `(dW, db)` summed over the batch and, when `dx` is given,
/// writes the input gradient there.
pub(super) fn conv_backward(
    g: &ConvGeo,
    weight: &[f32],
    x: &[f32],
    dy: &[f32],
    dx: Option<&mut [f32]>,
) -> (Vec<f32>, Vec<f32>) {
    let (in_len, out_len, hw, rows) = (g.c * g.h * g.w, g.o * g.out_plane(), g.out_plane(), g.rows());
    let w = Mat::new(weight, g.o, rows);
    // Each task sums its own images in order; `dx` is split the same way when wanted.
    let task = |x: &[f32], dy: &[f32], mut dx: Option<&mut [f32]>| {
        let (mut dw, mut db, mut cols) = (vec![0f32; g.o * rows], vec![0f32; g.o], vec![0f32; rows * hw]);
        for (i, (x, dy)) in x.chunks_exact(in_len).zip(dy.chunks_exact(out_len)).enumerate() {
            g.im2col(x, &mut cols);
            let dym = Mat::new(dy, g.o, hw);
            matmul(&mut dw, dym, Mat::new(&cols, rows, hw).t(), true);
            for (b, plane) in db.iter_mut().zip(dy.chunks_exact(hw)) {
                *b += plane.iter().sum::<f32>();
            }
            if let Some(dx) = dx.as_deref_mut() {
                matmul(&mut cols, w.t(), dym, false);
                g.col2im(&cols, &mut dx[i * in_len..][..in_len]);
            }
        }
        (dw, db)
    };
    let inputs = x.par_chunks(GRAIN * in_len).zip(dy.par_chunks(GRAIN * out_len));
    let parts: Vec<_> = match dx {
        Some(dx) => inputs.zip(dx.par_chunks_mut(GRAIN * in_len)).map(|((x, dy), dx)| task(x, dy, Some(dx))).collect(),
        None => inputs.map(|(x, dy)| task(x, dy, None)).collect(),
    };
    sum_in_order((vec![0.0; g.o * rows], vec![0.0; g.o]), parts)
}

/// Images per task wherever tasks' results are summed: fixed, so that the sums, and with them
/// a whole training run, do not depend on how rayon schedules the tasks.
const GRAIN: usize = 32;

fn sum_in_order(mut total: (Vec<f32>, Vec<f32>), parts: Vec<(Vec<f32>, Vec<f32>)>) -> (Vec<f32>, Vec<f32>) {
    for (a, b) in parts {
        add(&mut total.0, &a);
        add(&mut total.1, &b);
    }
    total
}

fn add(a: &mut [f32], b: &[f32]) {
    for (a, b) in a.iter_mut().zip(b) {
        *a += b;
    }
}

/// Per-channel sums of the pair `f(offset, plane)` over a batch laid out `[B, C, hw]`, in f64.
fn channel_sums(c: usize, hw: usize, x: &[f32], f: impl Fn(usize, &[f32]) -> (f32, f32) + Sync) -> Vec<(f64, f64)> {
    let parts: Vec<Vec<(f64, f64)>> = x
        .par_chunks(GRAIN * c * hw)
        .enumerate()
        .map(|(t, images)| {
            let mut acc = vec![(0f64, 0f64); c];
            for (p, plane) in images.chunks_exact(hw).enumerate() {
                let (a, b) = f(t * GRAIN * c * hw + p * hw, plane);
                acc[p % c].0 += f64::from(a);
                acc[p % c].1 += f64::from(b);
            }
            acc
        })
        .collect();
    let mut total = vec![(0f64, 0f64); c];
    for part in parts {
        for (t, p) in total.iter_mut().zip(part) {
            t.0 += p.0;
            t.1 += p.1;
        }
    }
    total
}

/// Batch normalisation with batch statistics over `[B, C, hw]`. Writes the output and the
/// normalised input `xhat`; returns the batch mean and (biased) variance per channel.
pub(super) fn batch_norm_train(
    (c, hw): (usize, usize),
    eps: f32,
    gamma: &[f32],
    beta: &[f32],
    x: &[f32],
    xhat: &mut [f32],
    y: &mut [f32],
) -> (Vec<f32>, Vec<f32>) {
    let n = (x.len() / c.max(1)) as f64;
    let sums = channel_sums(c, hw, x, |_, p| (p.iter().sum(), p.iter().map(|v| v * v).sum()));
    let mean: Vec<f32> = sums.iter().map(|s| (s.0 / n) as f32).collect();
    let var: Vec<f32> = sums.iter().map(|s| (s.1 / n - (s.0 / n).powi(2)).max(0.0) as f32).collect();
    let inv: Vec<f32> = var.iter().map(|v| 1.0 / (v + eps).sqrt()).collect();
    y.par_chunks_mut(c * hw).zip(xhat.par_chunks_mut(c * hw)).zip(x.par_chunks(c * hw)).for_each(|((y, xh), x)| {
        for ch in 0..c {
            let r = ch * hw..(ch + 1) * hw;
            for ((y, xh), x) in y[r.clone()].iter_mut().zip(&mut xh[r.clone()]).zip(&x[r]) {
                *xh = (x - mean[ch]) * inv[ch];
                *y = *xh * gamma[ch] + beta[ch];
            }
        }
    });
    (mean, var)
}

/// Batch normalisation with fixed statistics (inference, as the exported ONNX computes it).
pub(super) fn batch_norm_eval(
    (c, hw): (usize, usize),
    eps: f32,
    [gamma, beta, mean, var]: [&[f32]; 4],
    x: &[f32],
    y: &mut [f32],
) {
    y.par_chunks_mut(c * hw).zip(x.par_chunks(c * hw)).for_each(|(y, x)| {
        for ch in 0..c {
            let scale = gamma[ch] / (var[ch] + eps).sqrt();
            let r = ch * hw..(ch + 1) * hw;
            for (y, x) in y[r.clone()].iter_mut().zip(&x[r]) {
                *y = (x - mean[ch]) * scale + beta[ch];
            }
        }
    });
}

/// Batch normalisation backward (batch statistics): returns `(dgamma, dbeta)`.
pub(super) fn batch_norm_backward(
    (c, hw): (usize, usize),
    eps: f32,
    gamma: &[f32],
    var: &[f32],
    xhat: &[f32],
    dy: &[f32],
    dx: Option<&mut [f32]>,
) -> (Vec<f32>, Vec<f32>) {
    let n = (dy.len() / c.max(1)) as f32;
    let sums = channel_sums(c, hw, dy, |start, p| {
        (p.iter().sum(), p.iter().zip(&xhat[start..][..hw]).map(|(g, x)| g * x).sum())
    });
    let dbeta: Vec<f32> = sums.iter().map(|s| s.0 as f32).collect();
    let dgamma: Vec<f32> = sums.iter().map(|s| s.1 as f32).collect();
    let Some(dx) = dx else { return (dgamma, dbeta) };
    dx.par_chunks_mut(c * hw).zip(dy.par_chunks(c * hw)).zip(xhat.par_chunks(c * hw)).for_each(|((dx, dy), xh)| {
        for ch in 0..c {
            let k = gamma[ch] / (var[ch] + eps).sqrt();
            let (mb, mg) = (dbeta[ch] / n, dgamma[ch] / n);
            let r = ch * hw..(ch + 1) * hw;
            for ((dx, dy), xh) in dx[r.clone()].iter_mut().zip(&dy[r.clone()]).zip(&xh[r]) {
                *dx = k * (dy - mb - xh * mg);
            }
        }
    });
    (dgamma, dbeta)
}

/// Values per rayon task of the element-wise layers.
const ELEMENTS: usize = 1 << 14;

pub(super) fn relu_forward(x: &[f32], y: &mut [f32]) {
    y.par_chunks_mut(ELEMENTS).zip(x.par_chunks(ELEMENTS)).for_each(|(y, x)| {
        for (y, x) in y.iter_mut().zip(x) {
            *y = x.max(0.0);
        }
    });
}

/// Uses the output: where it is positive the gradient passes.
pub(super) fn relu_backward(y: &[f32], dy: &[f32], dx: &mut [f32]) {
    dx.par_chunks_mut(ELEMENTS).zip(dy.par_chunks(ELEMENTS)).zip(y.par_chunks(ELEMENTS)).for_each(|((dx, dy), y)| {
        for ((dx, dy), y) in dx.iter_mut().zip(dy).zip(y) {
            *dx = if *y > 0.0 { *dy } else { 0.0 };
        }
    });
}

/// Geometry of a pooling on one image.
#[derive(Debug, Clone, Copy)]
pub(super) struct PoolGeo {
    pub h: usize,
    pub w: usize,
    pub k: usize,
    pub stride: usize,
    pub ho: usize,
    pub wo: usize,
}

/// Max pooling; `arg` receives, for each output, the index of its maximum within its plane
/// (the first one on ties).
pub(super) fn max_pool_forward(g: &PoolGeo, x: &[f32], y: &mut [f32], arg: &mut [u32]) {
    let (hw, ohw) = (g.h * g.w, g.ho * g.wo);
    y.par_chunks_mut(ohw).zip(arg.par_chunks_mut(ohw)).zip(x.par_chunks(hw)).with_min_len(64).for_each(
        |((y, arg), x)| {
            if g.k == 2 && g.stride == 2 {
                return max_pool_2x2(g, x, y, arg);
            }
            for oy in 0..g.ho {
                for ox in 0..g.wo {
                    let mut best = oy * g.stride * g.w + ox * g.stride;
                    for ky in 0..g.k {
                        for kx in 0..g.k {
                            let i = (oy * g.stride + ky) * g.w + ox * g.stride + kx;
                            if x[i] > x[best] {
                                best = i;
                            }
                        }
                    }
                    y[oy * g.wo + ox] = x[best];
                    arg[oy * g.wo + ox] = best as u32;
                }
            }
        },
    );
}

/// The common case, without the general loop's data-dependent branches.
fn max_pool_2x2(g: &PoolGeo, x: &[f32], y: &mut [f32], arg: &mut [u32]) {
    for oy in 0..g.ho {
        let top = 2 * oy * g.w;
        let (r0, r1) = (&x[top..][..2 * g.wo], &x[top + g.w..][..2 * g.wo]);
        let (y, arg) = (&mut y[oy * g.wo..][..g.wo], &mut arg[oy * g.wo..][..g.wo]);
        for ox in 0..g.wo {
            let candidates = [(r0[2 * ox], 0), (r0[2 * ox + 1], 1), (r1[2 * ox], g.w), (r1[2 * ox + 1], g.w + 1)];
            let (v, at) = candidates[1..].iter().fold(candidates[0], |b, c| if c.0 > b.0 { *c } else { b });
            y[ox] = v;
            arg[ox] = (top + 2 * ox + at) as u32;
        }
    }
}

/// Routes each output gradient to its window's maximum.
pub(super) fn max_pool_backward(g: &PoolGeo, arg: &[u32], dy: &[f32], dx: &mut [f32]) {
    let (hw, ohw) = (g.h * g.w, g.ho * g.wo);
    dx.par_chunks_mut(hw).zip(dy.par_chunks(ohw)).zip(arg.par_chunks(ohw)).with_min_len(64).for_each(
        |((dx, dy), arg)| {
            dx.fill(0.0);
            for (g, a) in dy.iter().zip(arg) {
                dx[*a as usize] += g;
            }
        },
    );
}

/// Average pooling (windows that overlap the edge are left out, as ONNX's floor mode does).
pub(super) fn avg_pool_forward(g: &PoolGeo, x: &[f32], y: &mut [f32]) {
    let (hw, ohw, area) = (g.h * g.w, g.ho * g.wo, (g.k * g.k) as f32);
    y.par_chunks_mut(ohw).zip(x.par_chunks(hw)).with_min_len(64).for_each(|(y, x)| {
        for oy in 0..g.ho {
            for ox in 0..g.wo {
                let window = (0..g.k).flat_map(|ky| {
                    let row = (oy * g.stride + ky) * g.w + ox * g.stride;
                    &x[row..row + g.k]
                });
                y[oy * g.wo + ox] = window.sum::<f32>() / area;
            }
        }
    });
}

/// Spreads each output gradient evenly over its window.
pub(super) fn avg_pool_backward(g: &PoolGeo, dy: &[f32], dx: &mut [f32]) {
    let (hw, ohw, area) = (g.h * g.w, g.ho * g.wo, (g.k * g.k) as f32);
    dx.par_chunks_mut(hw).zip(dy.par_chunks(ohw)).with_min_len(64).for_each(|(dx, dy)| {
        dx.fill(0.0);
        for oy in 0..g.ho {
            for ox in 0..g.wo {
                let share = dy[oy * g.wo + ox] / area;
                for ky in 0..g.k {
                    let row = (oy * g.stride + ky) * g.w + ox * g.stride;
                    dx[row..row + g.k].iter_mut().for_each(|d| *d += share);
                }
            }
        }
    });
}

pub(super) fn global_avg_pool_forward(hw: usize, x: &[f32], y: &mut [f32]) {
    for (y, plane) in y.iter_mut().zip(x.chunks_exact(hw)) {
        *y = plane.iter().sum::<f32>() / hw as f32;
    }
}

pub(super) fn global_avg_pool_backward(hw: usize, dy: &[f32], dx: &mut [f32]) {
    for (g, plane) in dy.iter().zip(dx.chunks_exact_mut(hw)) {
        plane.fill(g / hw as f32);
    }
}

/// Rows per rayon task of the fully connected layers.
const ROWS: usize = 64;

/// `y = x W^T + b` on `[B, i]`, with `W: [o, i]`.
pub(super) fn linear_forward((i, o): (usize, usize), weight: &[f32], bias: &[f32], x: &[f32], y: &mut [f32]) {
    let w = Mat::new(weight, o, i);
    y.par_chunks_mut(ROWS * o).zip(x.par_chunks(ROWS * i)).for_each(|(y, x)| {
        for row in y.chunks_exact_mut(o) {
            row.copy_from_slice(bias);
        }
        matmul(y, Mat::new(x, x.len() / i, i), w.t(), true);
    });
}

/// Returns `(dW, db)`; writes `dx` when given.
pub(super) fn linear_backward(
    (i, o): (usize, usize),
    weight: &[f32],
    x: &[f32],
    dy: &[f32],
    dx: Option<&mut [f32]>,
) -> (Vec<f32>, Vec<f32>) {
    if let Some(dx) = dx {
        let w = Mat::new(weight, o, i);
        dx.par_chunks_mut(ROWS * i).zip(dy.par_chunks(ROWS * o)).for_each(|(dx, dy)| {
            matmul(dx, Mat::new(dy, dy.len() / o, o), w, false);
        });
    }
    let parts = x
        .par_chunks(ROWS * i)
        .zip(dy.par_chunks(ROWS * o))
        .map(|(x, dy)| {
            let (mut dw, mut db) = (vec![0f32; o * i], vec![0f32; o]);
            let rows = x.len() / i;
            matmul(&mut dw, Mat::new(dy, rows, o).t(), Mat::new(x, rows, i), false);
            for row in dy.chunks_exact(o) {
                add(&mut db, row);
            }
            (dw, db)
        })
        .collect();
    sum_in_order((vec![0.0; o * i], vec![0.0; o]), parts)
}

/// Norms below this are raised to it, as in the exported graph.
const NORM_FLOOR: f32 = 1e-12;

/// Rows divided by their norms; `norms` receives each row's norm before the floor.
pub(super) fn l2_forward(d: usize, x: &[f32], y: &mut [f32], norms: &mut [f32]) {
    for ((y, x), n) in y.chunks_exact_mut(d).zip(x.chunks_exact(d)).zip(norms.iter_mut()) {
        *n = x.iter().map(|v| v * v).sum::<f32>().sqrt();
        let scale = 1.0 / n.max(NORM_FLOOR);
        for (y, x) in y.iter_mut().zip(x) {
            *y = x * scale;
        }
    }
}

pub(super) fn l2_backward(d: usize, y: &[f32], norms: &[f32], dy: &[f32], dx: &mut [f32]) {
    for (((dx, dy), y), n) in dx.chunks_exact_mut(d).zip(dy.chunks_exact(d)).zip(y.chunks_exact(d)).zip(norms) {
        // Below the floor the layer is a fixed scaling, so only its factor remains.
        let along = if *n > NORM_FLOOR { y.iter().zip(dy).map(|(y, g)| y * g).sum() } else { 0.0 };
        for ((dx, dy), y) in dx.iter_mut().zip(dy).zip(y) {
            *dx = (dy - y * along) / n.max(NORM_FLOOR);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Overlapping windows, which the candle reference in `net` does not cover: the forward
    /// against a direct sum, the backward as the forward's adjoint (<Ax, y> = <x, A'y>).
    #[test]
    fn overlapping_average_pooling_and_its_adjoint() {
        let g = PoolGeo { h: 6, w: 5, k: 3, stride: 2, ho: 2, wo: 2 };
        let x: Vec<f32> = (0..2 * 30).map(|i| ((i * 7) % 11) as f32 - 5.0).collect();
        let mut y = vec![0.0; 2 * 4];
        avg_pool_forward(&g, &x, &mut y);
        let plane = &x[30..];
        let direct: f32 = (2..5).flat_map(|r| (2..5).map(move |c| plane[r * 5 + c])).sum::<f32>() / 9.0;
        assert!((y[4 + 3] - direct).abs() < 1e-6, "{} vs {direct}", y[7]);
        let dy: Vec<f32> = (0..8).map(|i| i as f32 * 0.5 - 1.0).collect();
        let mut dx = vec![f32::NAN; 60];
        avg_pool_backward(&g, &dy, &mut dx);
        let dot = |a: &[f32], b: &[f32]| a.iter().zip(b).map(|(a, b)| a * b).sum::<f32>();
        assert!((dot(&y, &dy) - dot(&x, &dx)).abs() < 1e-4);
        assert_eq!(dx[5 * 5 + 4], 0.0, "the last row is in no window");
    }
}
