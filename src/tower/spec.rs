//! The tower description shared by the trainer and the ONNX writer.

use crate::error::{Error, Result};

/// Size of the tower's input image, in the model's own channel count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InputShape {
    /// 1 (grey) or 3 (RGB).
    pub channels: usize,
    /// Rows.
    pub height: usize,
    /// Columns.
    pub width: usize,
}

/// One layer of a tower. Shapes are inferred from the input, so a layer only states what it adds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Layer {
    /// Square 2-D convolution with bias.
    Conv2d {
        /// Output channels.
        out_channels: usize,
        /// Kernel side.
        kernel: usize,
        /// Stride in both directions.
        stride: usize,
        /// Zero padding on every side.
        padding: usize,
    },
    /// Batch normalisation with frozen statistics (inference form), on `[N, C, H, W]` or `[N, C]`.
    BatchNorm {
        /// Added to the variance before the square root.
        eps: f32,
    },
    /// `max(x, 0)`.
    Relu,
    /// Square max pooling without padding.
    MaxPool2d {
        /// Window side.
        kernel: usize,
        /// Stride.
        stride: usize,
    },
    /// Square average pooling without padding.
    AvgPool2d {
        /// Window side.
        kernel: usize,
        /// Stride.
        stride: usize,
    },
    /// Mean over height and width: `[N, C, H, W] -> [N, C, 1, 1]`.
    GlobalAvgPool,
    /// `[N, C, H, W] -> [N, C*H*W]`.
    Flatten,
    /// Fully connected layer with bias on `[N, D]`.
    Linear {
        /// Output features.
        out_features: usize,
    },
    /// Divides each row by its L2 norm (floored at 1e-12, so a zero vector stays zero).
    L2Normalize,
}

/// Shape of the activations between two layers (batch dimension left out).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    /// `[C, H, W]`.
    Spatial {
        /// Channels.
        c: usize,
        /// Rows.
        h: usize,
        /// Columns.
        w: usize,
    },
    /// `[D]`.
    Flat(usize),
}

impl Activation {
    /// Number of values per image.
    pub fn len(&self) -> usize {
        match *self {
            Activation::Spatial { c, h, w } => c * h * w,
            Activation::Flat(d) => d,
        }
    }

    /// True when the activation holds no value.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// What a layer's parameter is, which fixes its name in the ONNX file and in the trainer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParamKind {
    /// Convolution or linear weight.
    Weight,
    /// Convolution or linear bias.
    Bias,
    /// Batch-norm scale.
    Gamma,
    /// Batch-norm shift.
    Beta,
    /// Batch-norm running mean.
    RunningMean,
    /// Batch-norm running variance.
    RunningVar,
}

impl ParamKind {
    fn suffix(self) -> &'static str {
        match self {
            ParamKind::Weight => "weight",
            ParamKind::Bias => "bias",
            ParamKind::Gamma => "gamma",
            ParamKind::Beta => "beta",
            ParamKind::RunningMean => "running_mean",
            ParamKind::RunningVar => "running_var",
        }
    }
}

/// One learned tensor of a tower.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParamSpec {
    /// Index of the layer that owns it.
    pub layer: usize,
    /// Which parameter of that layer.
    pub kind: ParamKind,
    /// Its dimensions (ONNX layout: conv `[O, I, K, K]`, linear `[out, in]`).
    pub dims: Vec<usize>,
}

impl ParamSpec {
    /// Stable name, for example `l0.weight`.
    pub fn name(&self) -> String {
        format!("l{}.{}", self.layer, self.kind.suffix())
    }

    /// Number of values.
    pub fn numel(&self) -> usize {
        self.dims.iter().product()
    }
}

/// A tower architecture: an input size and a list of layers.
///
/// ```
/// use twinscan::tower::{InputShape, TowerSpec};
/// let tower = TowerSpec::seed(InputShape { channels: 1, height: 28, width: 28 });
/// assert_eq!(tower.embedding_dim().unwrap(), 32);
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct TowerSpec {
    /// Architecture name, written into the model's metadata.
    pub name: String,
    /// Input size.
    pub input: InputShape,
    /// The layers, applied in order.
    pub layers: Vec<Layer>,
    /// How many of the last layers are a projection head: training takes its loss on their
    /// output, but the embedding (and the exported model) stops before them. 0 for most towers.
    pub head: usize,
}

/// Conv 3x3 (padded, so the size stays), batch norm, ReLU: a stage of the compact towers.
fn conv_stage(out_channels: usize) -> [Layer; 3] {
    [Layer::Conv2d { out_channels, kernel: 3, stride: 1, padding: 1 }, Layer::BatchNorm { eps: 1e-5 }, Layer::Relu]
}

impl TowerSpec {
    /// The origin study's tower: Conv 3x3 8 ReLU, Conv 3x3 16 ReLU, MaxPool 2x2, Flatten,
    /// Dense 32 ReLU (Keras `valid` padding).
    pub fn seed(input: InputShape) -> Self {
        TowerSpec {
            name: "seed".into(),
            input,
            layers: vec![
                Layer::Conv2d { out_channels: 8, kernel: 3, stride: 1, padding: 0 },
                Layer::Relu,
                Layer::Conv2d { out_channels: 16, kernel: 3, stride: 1, padding: 0 },
                Layer::Relu,
                Layer::MaxPool2d { kernel: 2, stride: 2 },
                Layer::Flatten,
                Layer::Linear { out_features: 32 },
                Layer::Relu,
            ],
            head: 0,
        }
    }

    /// A small batch-normalised convolutional tower with an embedding of `dim` values: three
    /// Conv-BN-ReLU stages (16, 32, 64 channels, 3x3, padded) with max pooling between them,
    /// then flatten and one linear layer. About 2.7 times the seed tower's arithmetic on 28x28
    /// images. Chosen by measurement on Fashion-MNIST (contrastive loss, validation pair
    /// accuracy after 3 epochs): global average pooling instead of flatten 0.881, the same with
    /// an L2-normalised output 0.875, this tower 0.910; the seed tower: see the model cards.
    pub fn compact(input: InputShape, dim: usize) -> Self {
        let pool = Layer::MaxPool2d { kernel: 2, stride: 2 };
        let mut layers = Vec::new();
        layers.extend(conv_stage(16));
        layers.push(pool);
        layers.extend(conv_stage(32));
        layers.push(pool);
        layers.extend(conv_stage(64));
        layers.extend([Layer::Flatten, Layer::Linear { out_features: dim }]);
        TowerSpec { name: "compact".into(), input, layers, head: 0 }
    }

    /// The compact tower's three convolutional stages with max pooling after the first only, so
    /// the other two see the image at half its resolution, then average pooled to a 3x3 grid,
    /// flattened and L2-normalised: the embedding (64 x 3 x 3 on 28x28 images). It trains
    /// through a projection head (Linear 256, batch norm, ReLU, Linear `dim`, L2) that the
    /// exported model leaves out, as SimCLR does: the loss shapes the head's output to the
    /// training classes, while the features below it keep more of what tells apart classes that
    /// training never showed. Averaging keeps how much of a region a pattern covers (open
    /// straps against a solid upper), which a maximum drops. Trained on classes 0-4, anomaly
    /// AUROC on classes 5-9 of Fashion-MNIST 0.945, against 0.925 with the second max pooling
    /// kept and a 2x2 maximum at the end, 0.895 without a head (`docs/benchmarks.md`).
    pub fn compact_projected(input: InputShape, dim: usize) -> Self {
        const GRID: usize = 3;
        let window = (input.height.min(input.width) / 2 / GRID).max(1);
        let mut layers = Vec::new();
        layers.extend(conv_stage(16));
        layers.push(Layer::MaxPool2d { kernel: 2, stride: 2 });
        layers.extend(conv_stage(32));
        layers.extend(conv_stage(64));
        layers.extend([Layer::AvgPool2d { kernel: window, stride: window }, Layer::Flatten, Layer::L2Normalize]);
        layers.extend([
            Layer::Linear { out_features: 256 },
            Layer::BatchNorm { eps: 1e-5 },
            Layer::Relu,
            Layer::Linear { out_features: dim },
            Layer::L2Normalize,
        ]);
        TowerSpec { name: "compact-proj".into(), input, layers, head: 5 }
    }

    /// The layers that make the embedding: all but the projection head.
    pub fn embedding_layers(&self) -> &[Layer] {
        &self.layers[..self.layers.len().saturating_sub(self.head)]
    }

    /// This tower with an L2-normalised output (named `<name>-l2`), for losses on cosine
    /// similarity such as InfoNCE. A tower with a projection head is returned as it is.
    pub fn normalized(mut self) -> Self {
        if self.head == 0 && !self.l2_normalized() {
            self.layers.push(Layer::L2Normalize);
            self.name += "-l2";
        }
        self
    }

    /// The photo tower: RGB 64x64 input, a strided Conv-BN-ReLU stage (16 channels) and three
    /// more (32, 64, 128) each followed by 2x2 max pooling, then flatten (a 4x4 grid, so the
    /// layout of a picture still counts), one linear layer to `dim` and L2 normalisation.
    /// About 15 million multiply-adds per image, a few percent of decoding a phone photo.
    pub fn photo(dim: usize) -> Self {
        let stage = |c, stride| {
            [
                Layer::Conv2d { out_channels: c, kernel: 3, stride, padding: 1 },
                Layer::BatchNorm { eps: 1e-5 },
                Layer::Relu,
            ]
        };
        let pool = Layer::MaxPool2d { kernel: 2, stride: 2 };
        let mut layers = Vec::new();
        layers.extend(stage(16, 2));
        for c in [32, 64, 128] {
            layers.extend(stage(c, 1));
            layers.push(pool);
        }
        layers.extend([Layer::Flatten, Layer::Linear { out_features: dim }, Layer::L2Normalize]);
        TowerSpec { name: "photo".into(), input: InputShape { channels: 3, height: 64, width: 64 }, layers, head: 0 }
    }

    fn invalid(&self, reason: impl Into<String>) -> Error {
        Error::InvalidTower { tower: self.name.clone(), reason: reason.into() }
    }

    /// The activation shape after each layer (`result[0]` is the input). Fails when a layer
    /// cannot follow the one before it.
    pub fn activations(&self) -> Result<Vec<Activation>> {
        let InputShape { channels, height, width } = self.input;
        if self.head > self.layers.len() {
            return Err(self.invalid(format!("a head of {} layers in a tower of {}", self.head, self.layers.len())));
        }
        if channels == 0 || height == 0 || width == 0 {
            return Err(self.invalid(format!("empty input {channels}x{height}x{width}")));
        }
        let mut shapes = vec![Activation::Spatial { c: channels, h: height, w: width }];
        for (i, layer) in self.layers.iter().enumerate() {
            let prev = shapes[i];
            let next = match (*layer, prev) {
                (Layer::Conv2d { out_channels, kernel, stride, padding }, Activation::Spatial { h, w, .. }) => {
                    if out_channels == 0 || kernel == 0 || stride == 0 {
                        return Err(self.invalid(format!("layer {i}: zero-sized convolution")));
                    }
                    let (hp, wp) = (h + 2 * padding, w + 2 * padding);
                    if hp < kernel || wp < kernel {
                        return Err(self.invalid(format!("layer {i}: kernel {kernel} larger than input {h}x{w}")));
                    }
                    Activation::Spatial {
                        c: out_channels,
                        h: (hp - kernel) / stride + 1,
                        w: (wp - kernel) / stride + 1,
                    }
                }
                (
                    Layer::MaxPool2d { kernel, stride } | Layer::AvgPool2d { kernel, stride },
                    Activation::Spatial { c, h, w },
                ) => {
                    if kernel == 0 || stride == 0 || h < kernel || w < kernel {
                        return Err(self.invalid(format!("layer {i}: pool {kernel} does not fit {h}x{w}")));
                    }
                    Activation::Spatial { c, h: (h - kernel) / stride + 1, w: (w - kernel) / stride + 1 }
                }
                (Layer::GlobalAvgPool, Activation::Spatial { c, .. }) => Activation::Spatial { c, h: 1, w: 1 },
                (Layer::Flatten, a @ Activation::Spatial { .. }) => Activation::Flat(a.len()),
                (Layer::Linear { out_features }, Activation::Flat(_)) if out_features > 0 => {
                    Activation::Flat(out_features)
                }
                (Layer::BatchNorm { eps }, a) if eps > 0.0 => a,
                (Layer::Relu, a) => a,
                (Layer::L2Normalize, a @ Activation::Flat(_)) => a,
                (layer, a) => return Err(self.invalid(format!("layer {i} ({layer:?}) cannot take input {a:?}"))),
            };
            shapes.push(next);
        }
        Ok(shapes)
    }

    /// Length of the embedding (the output of [`TowerSpec::embedding_layers`]). Fails unless
    /// that activation is flat.
    pub fn embedding_dim(&self) -> Result<usize> {
        match self.activations()?.get(self.embedding_layers().len()) {
            Some(Activation::Flat(d)) => Ok(*d),
            other => Err(self.invalid(format!("output must be flat [N, D], got {other:?}"))),
        }
    }

    /// Whether the embedding's last layer is [`Layer::L2Normalize`].
    pub fn l2_normalized(&self) -> bool {
        matches!(self.embedding_layers().last(), Some(Layer::L2Normalize))
    }

    /// Every learned tensor, in a fixed order that [`TowerWeights`](super::TowerWeights) follows.
    pub fn params(&self) -> Result<Vec<ParamSpec>> {
        let shapes = self.activations()?;
        let mut params = Vec::new();
        for (i, layer) in self.layers.iter().enumerate() {
            let channels = match shapes[i] {
                Activation::Spatial { c, .. } => c,
                Activation::Flat(d) => d,
            };
            let mut push = |kind, dims: Vec<usize>| params.push(ParamSpec { layer: i, kind, dims });
            match *layer {
                Layer::Conv2d { out_channels, kernel, .. } => {
                    push(ParamKind::Weight, vec![out_channels, channels, kernel, kernel]);
                    push(ParamKind::Bias, vec![out_channels]);
                }
                Layer::Linear { out_features } => {
                    push(ParamKind::Weight, vec![out_features, channels]);
                    push(ParamKind::Bias, vec![out_features]);
                }
                Layer::BatchNorm { .. } => {
                    for kind in [ParamKind::Gamma, ParamKind::Beta, ParamKind::RunningMean, ParamKind::RunningVar] {
                        push(kind, vec![channels]);
                    }
                }
                _ => {}
            }
        }
        Ok(params)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MNIST: InputShape = InputShape { channels: 1, height: 28, width: 28 };

    #[test]
    fn a_projection_head_is_not_part_of_the_embedding() {
        let spec = TowerSpec::compact_projected(MNIST, 32);
        assert_eq!(spec.embedding_dim().unwrap(), 64 * 3 * 3);
        assert!(spec.l2_normalized());
        assert_eq!(spec.layers.last(), Some(&Layer::L2Normalize));
        assert_eq!(spec.activations().unwrap().last(), Some(&Activation::Flat(32)));
        // The embedding's parameters come first, so its weights are a prefix of the tower's.
        let embedding = TowerSpec { layers: spec.embedding_layers().to_vec(), head: 0, ..spec.clone() };
        let all = spec.params().unwrap();
        assert_eq!(embedding.params().unwrap(), all[..embedding.params().unwrap().len()]);
        assert!(all.len() > embedding.params().unwrap().len());
        assert_eq!(spec.clone().normalized(), spec);
    }

    #[test]
    fn a_head_longer_than_the_tower_is_refused() {
        let spec = TowerSpec { head: 9, ..TowerSpec::seed(MNIST) };
        assert!(spec.activations().unwrap_err().to_string().contains("head of 9 layers"));
    }
}
