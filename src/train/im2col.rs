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
                    for (ox, o) in out_line.iter_mut().enumerate() {
                        if let Some(ix) = w.source(ox, kx, wd) {
                            *o = line[ix];
                        }
                    }
                }
            }
        });
        Ok((CpuStorage::F32(out), Shape::from((rows + 1, cols))))
    }

    fn bwd(&self, arg: &Tensor, _res: &Tensor, grad_res: &Tensor) -> Result<Option<Tensor>> {
        let (c, b, h, wd) = arg.dims4()?;
        let grad = grad_res.contiguous()?.apply_op1_no_bwd(&Col2Im { window: self.0, c, b, h, w: wd })?;
        Ok(Some(grad))
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
                        for (ox, g) in in_line.iter().enumerate() {
                            if let Some(ix) = w.source(ox, kx, wd) {
                                line[ix] += g;
                            }
                        }
                    }
                }
            }
        });
        Ok((CpuStorage::F32(out), Shape::from((c, b, h, wd))))
    }
}

#[cfg(test)]
mod tests {
    use candle_core::{Device, Tensor, Var};

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
            let ho = (h + 2 * padding - k) / stride + 1;
            let wo = (w + 2 * padding - k) / stride + 1;
            let xc = x.as_tensor().permute((1, 0, 2, 3)).unwrap().contiguous().unwrap();
            let cols = xc.apply_op1(Im2Col(Window { kernel: k, stride, padding })).unwrap();
            let cols = cols.narrow(0, 0, k * k * c).unwrap(); // drop the bias row
            let w2 = wt.as_tensor().permute((0, 2, 3, 1)).unwrap().reshape((o, ())).unwrap();
            let ours = w2.matmul(&cols).unwrap().reshape((o, b, ho, wo)).unwrap().permute((1, 0, 2, 3)).unwrap();
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
