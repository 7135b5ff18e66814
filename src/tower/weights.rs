//! Learned parameters of a tower, in the order [`TowerSpec::params`] lists them.

use super::spec::{ParamKind, TowerSpec};
use crate::error::{Error, Result};

/// The values of every learned tensor of a tower, in [`TowerSpec::params`] order.
#[derive(Debug, Clone, PartialEq)]
pub struct TowerWeights {
    /// One flat row-major buffer per parameter.
    pub tensors: Vec<Vec<f32>>,
}

/// SplitMix64: a tiny, well-mixed generator, so seeded initialisation needs no extra crate and
/// gives the same numbers on every platform.
#[derive(Debug, Clone)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    /// A generator starting from `seed`.
    pub fn new(seed: u64) -> Self {
        SplitMix64(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `[0, 1)`.
    pub fn next_f32(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32
    }

    /// Uniform in `[0, n)`; `n` must be positive.
    pub fn below(&mut self, n: usize) -> usize {
        ((self.next_u64() >> 11) as f64 / (1u64 << 53) as f64 * n as f64) as usize
    }
}

impl TowerWeights {
    /// He-uniform initialisation from `seed`: weights uniform in `±sqrt(6 / fan_in)`, biases
    /// and batch-norm shifts zero, batch-norm scales and variances one.
    pub fn seeded(spec: &TowerSpec, seed: u64) -> Result<Self> {
        let mut rng = SplitMix64::new(seed);
        let tensors = spec
            .params()?
            .iter()
            .map(|p| match p.kind {
                ParamKind::Weight => {
                    let fan_in: usize = p.dims[1..].iter().product();
                    let bound = (6.0 / fan_in as f32).sqrt();
                    (0..p.numel()).map(|_| (rng.next_f32() * 2.0 - 1.0) * bound).collect()
                }
                ParamKind::Gamma | ParamKind::RunningVar => vec![1.0; p.numel()],
                ParamKind::Bias | ParamKind::Beta | ParamKind::RunningMean => vec![0.0; p.numel()],
            })
            .collect();
        Ok(TowerWeights { tensors })
    }

    /// Checks that there is one tensor of the right size per parameter, and that every value is
    /// finite (and every running variance non-negative).
    pub fn validate(&self, spec: &TowerSpec) -> Result<()> {
        let params = spec.params()?;
        let invalid = |reason: String| Error::InvalidTower { tower: spec.name.clone(), reason };
        if params.len() != self.tensors.len() {
            return Err(invalid(format!("{} weight tensors for {} parameters", self.tensors.len(), params.len())));
        }
        for (p, t) in params.iter().zip(&self.tensors) {
            if p.numel() != t.len() {
                return Err(invalid(format!("{} has {} values, expected {:?}", p.name(), t.len(), p.dims)));
            }
            if t.iter().any(|v| !v.is_finite()) {
                return Err(invalid(format!("{} holds a non-finite value", p.name())));
            }
            if p.kind == ParamKind::RunningVar && t.iter().any(|v| *v < 0.0) {
                return Err(invalid(format!("{} holds a negative variance", p.name())));
            }
        }
        Ok(())
    }
}
