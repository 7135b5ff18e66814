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
    /// InfoNCE (NT-Xent) over two views of each image in a batch: each view must pick its
    /// partner out of every other view, by cosine similarity over `temperature`. Needs
    /// L2-normalised embeddings.
    InfoNce {
        /// Softmax temperature.
        temperature: f32,
    },
    /// Half [`Loss::InfoNce`], half supervised contrastive (Khosla et al., 2020): every view of
    /// an image with the same label is a positive too, each weighted equally. The labels pull a
    /// class together while the views keep what tells images apart, which a purely supervised
    /// loss on few classes throws away. Needs L2-normalised embeddings.
    SupCon {
        /// Softmax temperature.
        temperature: f32,
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
            Loss::InfoNce { .. } => "infonce",
            Loss::SupCon { .. } => "supcon",
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
        Loss::Triplet { .. } | Loss::InfoNce { .. } | Loss::SupCon { .. } => {
            Err(candle_core::Error::Msg(format!("the {} loss works on whole batches, not pairs", loss.name())))
        }
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

/// Loss over a batch of two views per image, `e: [2n, D]` with rows `i` and `i + n` the two
/// views of image `i`; every other row is a negative. InfoNCE as documented on
/// [`Loss::InfoNce`]; the contrastive loss averages its positive term over the `2n` positive
/// ordered pairs and its negative term over the rest.
///
/// [`Loss::SupCon`] needs `labels`, one per image (`n`).
pub fn views_loss(loss: Loss, e: &Tensor, labels: Option<&[u32]>) -> Result<Tensor> {
    let m = e.dim(0)?;
    let n = m / 2;
    let is_partner = |k: usize| (k / m + n) % m == k % m;
    let partner: Vec<f32> = match (loss, labels) {
        (Loss::SupCon { .. }, Some(labels)) if labels.len() == n => {
            // Row i: half on its partner, half spread over the other views of its label.
            let label = |i: usize| labels[i % n];
            let same: Vec<usize> = (0..m)
                .map(|i| (0..m).filter(|j| *j != i && !is_partner(i * m + j) && label(*j) == label(i)).count())
                .collect();
            (0..m * m)
                .map(|k| {
                    let (i, j) = (k / m, k % m);
                    if is_partner(k) {
                        if same[i] == 0 {
                            1.0
                        } else {
                            0.5
                        }
                    } else if i != j && label(i) == label(j) {
                        0.5 / same[i] as f32
                    } else {
                        0.0
                    }
                })
                .collect()
        }
        (Loss::SupCon { .. }, _) => {
            return Err(candle_core::Error::Msg("the supcon loss needs a label per image".into()))
        }
        _ => (0..m * m).map(|k| f32::from(u8::from(is_partner(k)))).collect(),
    };
    let partner = Tensor::from_vec(partner, (m, m), e.device())?;
    let eye = Tensor::eye(m, candle_core::DType::F32, e.device())?;
    match loss {
        Loss::InfoNce { temperature } | Loss::SupCon { temperature } => {
            let logits = (e.matmul(&e.t()?)? / f64::from(temperature))?;
            // Each row's own view is not a candidate.
            let logits = (logits - (&eye * 1e4)?)?;
            let log_p = candle_nn::ops::log_softmax(&logits, D::Minus1)?;
            (log_p * &partner)?.sum_all()? / -(m as f64)
        }
        Loss::Contrastive { margin } => {
            let sq = e.sqr()?.sum_keepdim(1)?;
            let d2 = (sq.broadcast_add(&sq.t()?)? - (e.matmul(&e.t()?)? * 2.0)?)?.relu()?;
            let d = d2.affine(1.0, 1e-12)?.sqrt()?;
            let negative = (partner.ones_like()? - &partner - &eye)?;
            let pos = ((&d2 * &partner)?.sum_all()? / m as f64)?;
            let neg = (d.affine(-1.0, f64::from(margin))?.relu()?.sqr()? * &negative)?.sum_all()?;
            pos + (neg / (m * (m - 2)).max(1) as f64)?
        }
        other => Err(candle_core::Error::Msg(format!("the {} loss needs labelled pairs", other.name()))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    /// Unit rows at the given angles (radians); views of image i are rows i and i + n.
    fn rows(angles: &[f32]) -> Tensor {
        let v: Vec<f32> = angles.iter().flat_map(|a| [a.cos(), a.sin()]).collect();
        Tensor::from_vec(v, (angles.len(), 2), &Device::Cpu).unwrap()
    }

    fn value(loss: Loss, e: &Tensor, labels: &[u32]) -> f32 {
        views_loss(loss, e, Some(labels)).unwrap().to_scalar::<f32>().unwrap()
    }

    #[test]
    fn supcon_is_infonce_without_shared_labels_and_rewards_a_tight_class() {
        let (nce, sup) = (Loss::InfoNce { temperature: 0.5 }, Loss::SupCon { temperature: 0.5 });
        let e = rows(&[0.0, 1.0, 2.0, 0.1, 1.1, 2.1]);
        assert!((value(nce, &e, &[0, 1, 2]) - value(sup, &e, &[0, 1, 2])).abs() < 1e-5);
        // Images 0 and 1 share a label: it costs less when they lie together than apart.
        let together = rows(&[0.0, 0.2, 3.0, 0.05, 0.25, 3.05]);
        let apart = rows(&[0.0, 1.6, 3.0, 0.05, 1.65, 3.05]);
        assert!(value(sup, &together, &[0, 0, 1]) < value(sup, &apart, &[0, 0, 1]));
        assert!(views_loss(sup, &e, None).is_err());
    }
}
