//! The pair and triplet losses.

use candle_core::{Result, Tensor, D};

/// Training objective.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Loss {
    /// Binary cross-entropy on the head's probability `sigmoid(a - b*d)`.
    Bce,
    /// Squared error between the head's probability and the label.
    Mse,
    /// `y d^2 + (1 - y) max(0, margin - d)^2` on the distance.
    Contrastive {
        /// Distance beyond which dissimilar pairs cost nothing.
        margin: f32,
    },
    /// Batch-hard triplet loss: for every image, its farthest same-label image and nearest
    /// other-label image in the batch, `max(0, d_pos - d_neg + margin)`.
    Triplet {
        /// Required gap between the two distances.
        margin: f32,
    },
}

impl Loss {
    /// Name used on the command line and in model cards.
    pub fn name(&self) -> &'static str {
        match self {
            Loss::Bce => "bce",
            Loss::Mse => "mse",
            Loss::Contrastive { .. } => "contrastive",
            Loss::Triplet { .. } => "triplet",
        }
    }

    /// Whether the head's parameters are learned with the tower (otherwise they are fitted to
    /// the distances after training).
    pub fn learns_head(&self) -> bool {
        matches!(self, Loss::Bce | Loss::Mse)
    }
}

/// Euclidean distance between matching rows; the epsilon keeps the gradient finite at zero.
pub fn row_distance(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    (a - b)?.sqr()?.sum(D::Minus1)?.affine(1.0, 1e-12)?.sqrt()
}

/// Pair loss on distances `d` with labels `y` (1 similar, 0 not) and head logits `z = a - b d`.
pub fn pair_loss(loss: Loss, d: &Tensor, y: &Tensor, z: &Tensor) -> Result<Tensor> {
    match loss {
        // softplus(z) - y z, written to stay finite for large |z|.
        Loss::Bce => {
            let softplus = (z.relu()? + z.abs()?.neg()?.exp()?.affine(1.0, 1.0)?.log()?)?;
            (softplus - (y * z)?)?.mean_all()
        }
        Loss::Mse => {
            let p = candle_nn::ops::sigmoid(z)?;
            (p - y)?.sqr()?.mean_all()
        }
        Loss::Contrastive { margin } => {
            let pos = (y * d.sqr()?)?;
            let neg = (y.affine(-1.0, 1.0)? * d.affine(-1.0, f64::from(margin))?.relu()?.sqr()?)?;
            (pos + neg)?.mean_all()
        }
        Loss::Triplet { .. } => Err(candle_core::Error::Msg("triplet loss works on labelled images, not pairs".into())),
    }
}

/// Batch-hard triplet loss over embeddings `e: [n, D]` with labels `same[i][j]` given as a
/// `[n, n]` 0/1 matrix (1 where the labels match, diagonal included).
pub fn triplet_loss(e: &Tensor, same: &Tensor, margin: f32) -> Result<Tensor> {
    let n = e.dim(0)?;
    let sq = e.sqr()?.sum_keepdim(1)?;
    let gram = e.matmul(&e.t()?)?;
    let d2 = (sq.broadcast_add(&sq.t()?)? - (gram * 2.0)?)?.relu()?;
    let d = d2.affine(1.0, 1e-12)?.sqrt()?;
    let eye = Tensor::eye(n, candle_core::DType::F32, e.device())?;
    let pos_mask = (same - &eye)?;
    let hardest_pos = (&d * &pos_mask)?.max(1)?;
    // Push same-label entries out of the minimum with a large offset.
    let far = (d.max_all()?.detach().affine(1.0, 1.0)? * 2.0)?;
    let hardest_neg = (&d + same.broadcast_mul(&far)?)?.min(1)?;
    (hardest_pos - hardest_neg)?.affine(1.0, f64::from(margin))?.relu()?.mean_all()
}
