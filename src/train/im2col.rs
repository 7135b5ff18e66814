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

fn f32_slice<'a>(storage: &'a CpuStorage, layout: &Layout) -> Result<&'a [f32]> {
    let (start, end) =
        layout.contiguous_offsets().ok_or_else(|| candle_core::Error::Msg("im2col needs a contiguous input".into()))?;
    match storage {
        CpuStorage::F32(v) => Ok(&v[start..end]),
        _ => Err(candle_core::Error::Msg("im2col works on f32".into())),
    }
}

/// `[C, B, H, W] -> [k*k*C, B*Ho*Wo]`, row `(ky*k + kx)*C + c`.
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
        let mut out = vec![0f32; w.kernel * w.kernel * c * cols];
        out.par_chunks_mut(cols).enumerate().for_each(|(row, dst)| {
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
        Ok((CpuStorage::F32(out), Shape::from((w.kernel * w.kernel * c, cols))))
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
