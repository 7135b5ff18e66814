//! Convolution as im2col plus one matrix multiply, so that candle's backward pass is a matrix
//! multiply too (its CPU conv2d backward is the slow part of a straightforward trainer).
//!
//! Activations are laid out `[C, B, H, W]`: the columns of every image in the batch then form
//! one `[k*k*C, B*Ho*Wo]` matrix and a layer is a single large GEMM, with no transposes.

use candle_core::{CpuStorage, CustomOp1, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

/// Geometry of one square convolution window.
#[derive(Debug, Clone, Copy)]
pub struct Window {
    pub kernel: usize,
    pub stride: usize,
    pub padding: usize,
}

impl Window {
    fn out_size(&self, n: usize) -> usize {
        (n + 2 * self.padding - self.kernel) / self.stride + 1
    }

    /// For output position `o` and kernel offset `k`: the input position, if inside the image.
    fn source(&self, o: usize, k: usize, n: usize) -> Option<usize> {
        (o * self.stride + k).checked_sub(self.padding).filter(|i| *i < n)
    }

    /// For kernel offset `k` along an axis of `n` inputs and `out` outputs: the range of output
    /// positions whose input lies inside, and the input position of the first of them.
    fn valid(&self, k: usize, n: usize, out: usize) -> (std::ops::Range<usize>, usize) {
        let s = self.stride;
        let lo = self.padding.saturating_sub(k).div_ceil(s);
        let hi = (n + self.padding).saturating_sub(k).div_ceil(s).min(out);
        let lo = lo.min(hi);
        (lo..hi, (lo * s + k).saturating_sub(self.padding))
    }
}

pub(super) fn f32_slice<'a>(storage: &'a CpuStorage, layout: &Layout) -> Result<&'a [f32]> {
    let (start, end) =
        layout.contiguous_offsets().ok_or_else(|| candle_core::Error::Msg("im2col needs a contiguous input".into()))?;
    match storage {
        CpuStorage::F32(v) => Ok(&v[start..end]),
        _ => Err(candle_core::Error::Msg("im2col works on f32".into())),
    }
}

/// `[C, B, H, W] -> [k*k*C + 1, B*Ho*Wo]`, row `(ky*k + kx)*C + c`; the last row is all ones, so
/// the bias is one more column of the weight matrix and needs no separate pass.
pub struct Im2Col(pub Window);

impl CustomOp1 for Im2Col {
    fn name(&self) -> &'static str {
        "im2col"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let w = self.0;
        let (c, b, h, wd) = layout.shape().dims4()?;
        let src = f32_slice(storage, layout)?;
        let (ho, wo) = (w.out_size(h), w.out_size(wd));
        let cols = b * ho * wo;
        let rows = w.kernel * w.kernel * c;
        let mut out = vec![0f32; (rows + 1) * cols];
        out[rows * cols..].fill(1.0);
        out[..rows * cols].par_chunks_mut(cols).enumerate().for_each(|(row, dst)| {
            let (kk, ch) = (row / c, row % c);
            let (ky, kx) = (kk / w.kernel, kk % w.kernel);
            for bi in 0..b {
                let plane = &src[(ch * b + bi) * h * wd..][..h * wd];
                for oy in 0..ho {
                    let Some(iy) = w.source(oy, ky, h) else { continue };
                    let line = &plane[iy * wd..][..wd];
                    let out_line = &mut dst[(bi * ho + oy) * wo..][..wo];
                    let (range, ix0) = w.valid(kx, wd, wo);
                    let n = range.len();
                    if w.stride == 1 {
                        out_line[range].copy_from_slice(&line[ix0..ix0 + n]);
                    } else {
                        for (o, i) in out_line[range].iter_mut().zip(line[ix0..].iter().step_by(w.stride)) {
                            *o = *i;
                        }
                    }
                }
            }
        });
        Ok((CpuStorage::F32(out), Shape::from((rows + 1, cols))))
    }
}

/// The adjoint of [`Im2Col`]: scatter-adds columns back to `[C, B, H, W]`.
struct Col2Im {
    window: Window,
    c: usize,
    b: usize,
    h: usize,
    w: usize,
}

impl CustomOp1 for Col2Im {
    fn name(&self) -> &'static str {
        "col2im"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let Col2Im { window: w, c, b, h, w: wd } = *self;
        let src = f32_slice(storage, layout)?;
        let (ho, wo) = (w.out_size(h), w.out_size(wd));
        let cols = b * ho * wo;
        let mut out = vec![0f32; c * b * h * wd];
        // Channels are disjoint in the output, so each is accumulated by one task.
        out.par_chunks_mut(b * h * wd).enumerate().for_each(|(ch, dst)| {
            for kk in 0..w.kernel * w.kernel {
                let (ky, kx) = (kk / w.kernel, kk % w.kernel);
                let row = &src[(kk * c + ch) * cols..][..cols];
                for bi in 0..b {
                    let plane = &mut dst[bi * h * wd..][..h * wd];
                    for oy in 0..ho {
                        let Some(iy) = w.source(oy, ky, h) else { continue };
                        let line = &mut plane[iy * wd..][..wd];
                        let in_line = &row[(bi * ho + oy) * wo..][..wo];
                        let (range, ix0) = w.valid(kx, wd, wo);
                        for (o, g) in line[ix0..].iter_mut().step_by(w.stride).zip(&in_line[range]) {
                            *o += g;
                        }
                    }
                }
            }
        });
        Ok((CpuStorage::F32(out), Shape::from((c, b, h, wd))))
    }
}

/// Images per im2col block. The column matrix of a whole batch is 9x the activations (340 MB
/// for the study's second convolution at 2,048 images); built and consumed a block at a time it
/// stays in cache, and the backward pass rebuilds it instead of keeping it.
const BLOCK: usize = 32;

fn blocks(batch: usize) -> impl Iterator<Item = (usize, usize)> {
    (0..batch).step_by(BLOCK).map(move |s| (s, BLOCK.min(batch - s)))
}

/// `[O, k*k*C + 1]` weights with the bias as last column, matching the im2col row order.
fn weight_matrix(w: &Tensor, b: &Tensor) -> Result<Tensor> {
    let o = w.dim(0)?;
    let w2 = w.permute((0, 2, 3, 1))?.reshape((o, ()))?;
    Tensor::cat(&[&w2, &b.unsqueeze(1)?], 1)
}

/// Convolution of `x: [C, B, H, W]` with `w: [O, C, k, k]` and bias `b: [O]`, giving
/// `[O, B, Ho, Wo]`. Without `train` no gradient is attached; with `input_grad` false the input
/// gets none (the images).
pub fn conv(x: &Tensor, w: &Tensor, b: &Tensor, window: Window, train: bool, input_grad: bool) -> Result<Tensor> {
    let (_, batch, h, wd) = x.dims4()?;
    let o = w.dim(0)?;
    let (ho, wo) = (window.out_size(h), window.out_size(wd));
    let w2 = weight_matrix(w, b)?;
    let w2d = w2.detach();
    let parts = blocks(batch)
        .map(|(s, n)| {
            let cols = x.narrow(1, s, n)?.contiguous()?.apply_op1_no_bwd(&Im2Col(window))?;
            w2d.matmul(&cols)?.reshape((o, n, ho * wo))
        })
        .collect::<Result<Vec<_>>>()?;
    let y = Tensor::cat(&parts, 1)?;
    let y = if train { y.apply_op3(x, &w2, ConvGrad { window, input_grad })? } else { y };
    y.reshape((o, batch, ho, wo))
}

/// Attaches the convolution's gradients to its output, so candle's graph holds one node per
/// convolution and no column matrix: `dW = sum dY_blk cols_blk^T`, `dX_blk = col2im(W^T dY_blk)`.
struct ConvGrad {
    window: Window,
    input_grad: bool,
}

impl candle_core::CustomOp3 for ConvGrad {
    fn name(&self) -> &'static str {
        "conv-grad"
    }

    /// Passes the product through; `x` and `w2` are arguments only for the graph.
    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        _s2: &CpuStorage,
        _l2: &Layout,
        _s3: &CpuStorage,
        _l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        Ok((CpuStorage::F32(f32_slice(s1, l1)?.to_vec()), l1.shape().clone()))
    }

    fn bwd(
        &self,
        _y: &Tensor,
        x: &Tensor,
        w2: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (c, batch, h, w) = x.dims4()?;
        let o = w2.dim(0)?;
        let grad = grad.reshape((o, batch, ()))?;
        let w2t = w2.t()?;
        let mut grad_w2 = w2.zeros_like()?;
        let mut grad_x = Vec::new();
        for (s, n) in blocks(batch) {
            let g = grad.narrow(1, s, n)?.contiguous()?.reshape((o, ()))?;
            let cols = x.narrow(1, s, n)?.contiguous()?.apply_op1_no_bwd(&Im2Col(self.window))?;
            grad_w2 = (grad_w2 + g.matmul(&cols.t()?)?)?;
            if self.input_grad {
                let col2im = Col2Im { window: self.window, c, b: n, h, w };
                grad_x.push(w2t.matmul(&g)?.apply_op1_no_bwd(&col2im)?);
            }
        }
        let grad_x = if self.input_grad { Some(Tensor::cat(&grad_x, 1)?) } else { None };
        Ok((None, grad_x, Some(grad_w2)))
    }
}

#[cfg(test)]
mod tests {
    use candle_core::{Device, Var};

    use super::*;

    /// The im2col convolution and its gradients agree with candle's own conv2d.
    #[test]
    fn matches_candle_conv2d_forward_and_backward() {
        let dev = Device::Cpu;
        // Sizes where stride 2 tiles exactly: candle's own conv2d backward breaks otherwise.
        let (c, b, h, w, o, k) = (3, 2, 7, 9, 4, 3);
        for (stride, padding) in [(1, 0), (1, 1), (2, 1)] {
            let x = Var::from_tensor(&Tensor::randn(0f32, 1.0, (b, c, h, w), &dev).unwrap()).unwrap();
            let wt = Var::from_tensor(&Tensor::randn(0f32, 1.0, (o, c, k, k), &dev).unwrap()).unwrap();
            let reference = x.as_tensor().conv2d(wt.as_tensor(), padding, stride, 1, 1).unwrap();
            let xc = x.as_tensor().permute((1, 0, 2, 3)).unwrap().contiguous().unwrap();
            let zero_bias = Tensor::zeros(o, candle_core::DType::F32, &dev).unwrap();
            let win = Window { kernel: k, stride, padding };
            let ours = conv(&xc, wt.as_tensor(), &zero_bias, win, true, true).unwrap().permute((1, 0, 2, 3)).unwrap();
            let diff = (&ours - &reference).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
            assert!(diff < 1e-4, "forward differs by {diff}");

            let weights = Tensor::randn(0f32, 1.0, reference.shape(), &dev).unwrap();
            let g_ref = (&reference * &weights).unwrap().sum_all().unwrap().backward().unwrap();
            let g_ours = (&ours * &weights).unwrap().sum_all().unwrap().backward().unwrap();
            for var in [&x, &wt] {
                let (r, u) = (g_ref.get(var).unwrap(), g_ours.get(var).unwrap());
                let diff = (r - u).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
                assert!(diff < 1e-3, "gradient differs by {diff} (stride {stride}, padding {padding})");
            }
        }
    }
}
