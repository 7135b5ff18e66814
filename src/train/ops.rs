//! Element-wise ops with one-pass backward passes. candle's generic `max` and `relu` backward
//! passes build masks with several full-size temporaries; on the study's tower at batch 1024
//! pairs those passes, not the matrix multiplies, were most of a training step.

use candle_core::{CpuStorage, CustomOp1, CustomOp2, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use super::im2col::f32_slice;

/// 2x2 max pooling with stride 2 on `[C, B, H, W]` (odd trailing rows and columns dropped, as
/// ONNX does). Backward routes each gradient to the first maximum of its window.
pub struct MaxPool2;

impl CustomOp1 for MaxPool2 {
    fn name(&self) -> &'static str {
        "maxpool2"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let (c, b, h, w) = layout.shape().dims4()?;
        let src = f32_slice(storage, layout)?;
        let (h2, w2) = (h / 2, w / 2);
        let mut out = vec![0f32; c * b * h2 * w2];
        out.par_chunks_mut(h2 * w2).enumerate().for_each(|(plane, dst)| {
            let s = &src[plane * h * w..][..h * w];
            for y in 0..h2 {
                for x in 0..w2 {
                    let i = 2 * y * w + 2 * x;
                    dst[y * w2 + x] = s[i].max(s[i + 1]).max(s[i + w]).max(s[i + w + 1]);
                }
            }
        });
        Ok((CpuStorage::F32(out), Shape::from((c, b, h2, w2))))
    }

    fn bwd(&self, arg: &Tensor, _res: &Tensor, grad_res: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(arg.contiguous()?.apply_op2_no_bwd(&grad_res.contiguous()?, &MaxPool2Grad)?))
    }
}

struct MaxPool2Grad;

impl CustomOp2 for MaxPool2Grad {
    fn name(&self) -> &'static str {
        "maxpool2-grad"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        let (c, b, h, w) = l1.shape().dims4()?;
        let (x, g) = (f32_slice(s1, l1)?, f32_slice(s2, l2)?);
        let (h2, w2) = (h / 2, w / 2);
        let mut out = vec![0f32; c * b * h * w];
        out.par_chunks_mut(h * w).enumerate().for_each(|(plane, dst)| {
            let s = &x[plane * h * w..][..h * w];
            let gp = &g[plane * h2 * w2..][..h2 * w2];
            for y in 0..h2 {
                for xx in 0..w2 {
                    let i = 2 * y * w + 2 * xx;
                    let mut best = i;
                    for j in [i + 1, i + w, i + w + 1] {
                        if s[j] > s[best] {
                            best = j;
                        }
                    }
                    dst[best] = gp[y * w2 + xx];
                }
            }
        });
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }
}

/// `max(x, 0)` whose backward is one pass: `grad * (y > 0)`.
pub struct Relu;

impl CustomOp1 for Relu {
    fn name(&self) -> &'static str {
        "relu"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let src = f32_slice(storage, layout)?;
        let out: Vec<f32> = src.par_iter().with_min_len(1 << 14).map(|v| v.max(0.0)).collect();
        Ok((CpuStorage::F32(out), layout.shape().clone()))
    }

    fn bwd(&self, _arg: &Tensor, res: &Tensor, grad_res: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(res.contiguous()?.apply_op2_no_bwd(&grad_res.contiguous()?, &ReluGrad)?))
    }
}

struct ReluGrad;

impl CustomOp2 for ReluGrad {
    fn name(&self) -> &'static str {
        "relu-grad"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        let (y, g) = (f32_slice(s1, l1)?, f32_slice(s2, l2)?);
        let out: Vec<f32> =
            y.par_iter().zip(g).with_min_len(1 << 14).map(|(y, g)| if *y > 0.0 { *g } else { 0.0 }).collect();
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }
}
