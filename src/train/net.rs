//! A [`TowerSpec`] as a trainable candle network, with parameters initialised from and exported
//! to [`TowerWeights`] in the same order, so the ONNX file holds exactly what was trained.

use candle_core::{DType, Device, Tensor, Var, D};

use super::im2col::{conv, Window};
use super::ops::{MaxPool2, Relu};
use crate::error::{Error, Result};
use crate::tower::{Layer, ParamKind, TowerSpec, TowerWeights};

/// The layers in the order training runs them: `ReLU, MaxPool` becomes `MaxPool, ReLU`, which
/// computes the same (both are monotone) with the ReLU on a quarter of the values.
fn training_order(layers: &[Layer]) -> Vec<Layer> {
    let mut out = layers.to_vec();
    for i in 1..out.len() {
        if out[i - 1] == Layer::Relu && matches!(out[i], Layer::MaxPool2d { .. }) {
            out.swap(i - 1, i);
        }
    }
    out
}

pub(crate) fn candle_err(e: candle_core::Error) -> Error {
    Error::Training { reason: e.to_string() }
}

/// Momentum of the batch-norm running statistics (PyTorch's convention).
const BN_MOMENTUM: f64 = 0.1;

/// The trainable tower.
pub struct Net {
    spec: TowerSpec,
    /// Learned parameters, [`TowerSpec::params`] order; running statistics are stored here too
    /// but updated by hand, never by the optimiser.
    params: Vec<Var>,
    kinds: Vec<ParamKind>,
}

impl Net {
    /// Builds the network with the given initial weights.
    pub fn new(spec: &TowerSpec, weights: &TowerWeights) -> Result<Net> {
        weights.validate(spec)?;
        let params = spec.params()?;
        for layer in &spec.layers {
            if let Layer::MaxPool2d { kernel, stride } = layer {
                if *kernel != 2 || *stride != 2 {
                    return Err(Error::InvalidTower {
                        tower: spec.name.clone(),
                        reason: "the trainer supports 2x2 max pooling with stride 2".into(),
                    });
                }
            }
        }
        let vars = params
            .iter()
            .zip(&weights.tensors)
            .map(|(p, t)| Var::from_vec(t.clone(), p.dims.clone(), &Device::Cpu))
            .collect::<candle_core::Result<Vec<_>>>()
            .map_err(candle_err)?;
        Ok(Net { spec: spec.clone(), params: vars, kinds: params.iter().map(|p| p.kind).collect() })
    }

    /// The variables the optimiser updates (running statistics excluded).
    pub fn trainable(&self) -> Vec<Var> {
        self.params
            .iter()
            .zip(&self.kinds)
            .filter(|(_, k)| !matches!(k, ParamKind::RunningMean | ParamKind::RunningVar))
            .map(|(v, _)| v.clone())
            .collect()
    }

    /// Current values, ready for the ONNX writer.
    pub fn weights(&self) -> Result<TowerWeights> {
        let tensors = self
            .params
            .iter()
            .map(|v| v.as_tensor().flatten_all()?.to_vec1::<f32>())
            .collect::<candle_core::Result<_>>()
            .map_err(candle_err)?;
        Ok(TowerWeights { tensors })
    }

    /// Restores values saved with [`Net::weights`].
    pub fn load(&self, weights: &TowerWeights) -> Result<()> {
        for (v, t) in self.params.iter().zip(&weights.tensors) {
            v.set(&Tensor::from_vec(t.clone(), v.shape(), &Device::Cpu).map_err(candle_err)?).map_err(candle_err)?;
        }
        Ok(())
    }

    /// Embeds a batch `[B, C, H, W]` into `[B, D]`. In training mode batch norm uses batch
    /// statistics and updates its running ones; otherwise it uses the running ones, as ONNX does.
    pub fn forward(&self, input: &Tensor, train: bool) -> Result<Tensor> {
        self.forward_inner(input, train).map_err(candle_err)
    }

    fn forward_inner(&self, input: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        // Spatial activations are [C, B, H, W]; see im2col.rs.
        let mut x = input.permute((1, 0, 2, 3))?.contiguous()?;
        let mut p = self.params.iter();
        let mut next = || p.next().ok_or_else(|| candle_core::Error::Msg("parameters out of order".into()));
        for (i, layer) in training_order(&self.spec.layers).into_iter().enumerate() {
            x = match layer {
                Layer::Conv2d { kernel, stride, padding, .. } => {
                    let (w, b) = (next()?, next()?);
                    // The images (input of layer 0) need no gradient.
                    conv(&x, w.as_tensor(), b.as_tensor(), Window { kernel, stride, padding }, train, i > 0)?
                }
                Layer::BatchNorm { eps } => {
                    let (gamma, beta, mean, var) = (next()?, next()?, next()?, next()?);
                    let spatial = x.rank() == 4;
                    // Channels first: [C, rest] for both layouts.
                    let shape = x.shape().clone();
                    let flat = if spatial { x.flatten_from(1)? } else { x.t()?.contiguous()? };
                    let (mu, sigma2) = if train {
                        let n = flat.dim(1)? as f64;
                        let mu = flat.mean_keepdim(1)?;
                        let sigma2 = flat.broadcast_sub(&mu)?.sqr()?.mean_keepdim(1)?;
                        let unbiased = (sigma2.detach() * (n / (n - 1.0).max(1.0)))?;
                        mean.set(
                            &((mean.as_tensor() * (1.0 - BN_MOMENTUM))? + (mu.detach().squeeze(1)? * BN_MOMENTUM)?)?,
                        )?;
                        var.set(&((var.as_tensor() * (1.0 - BN_MOMENTUM))? + (unbiased.squeeze(1)? * BN_MOMENTUM)?)?)?;
                        (mu, sigma2)
                    } else {
                        (mean.as_tensor().unsqueeze(1)?, var.as_tensor().unsqueeze(1)?)
                    };
                    let scale =
                        (sigma2 + f64::from(eps))?.sqrt()?.recip()?.broadcast_mul(&gamma.as_tensor().unsqueeze(1)?)?;
                    let y = flat
                        .broadcast_sub(&mu)?
                        .broadcast_mul(&scale)?
                        .broadcast_add(&beta.as_tensor().unsqueeze(1)?)?;
                    if spatial {
                        y.reshape(shape)?
                    } else {
                        y.t()?.contiguous()?
                    }
                }
                Layer::Relu => x.contiguous()?.apply_op1(Relu)?,
                Layer::MaxPool2d { .. } => x.contiguous()?.apply_op1(MaxPool2)?,
                Layer::GlobalAvgPool => x.mean_keepdim(3)?.mean_keepdim(2)?,
                Layer::Flatten => x.permute((1, 0, 2, 3))?.contiguous()?.flatten_from(1)?,
                Layer::Linear { .. } => {
                    let (w, b) = (next()?, next()?);
                    x.matmul(&w.as_tensor().t()?)?.broadcast_add(b.as_tensor())?
                }
                Layer::L2Normalize => {
                    let norm = x.sqr()?.sum_keepdim(D::Minus1)?.sqrt()?.maximum(1e-12)?;
                    x.broadcast_div(&norm)?
                }
            };
        }
        if x.dtype() != DType::F32 {
            x = x.to_dtype(DType::F32)?;
        }
        Ok(x)
    }
}
