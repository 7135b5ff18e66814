//! A [`TowerSpec`] as a trainable network. The whole tower is one candle op whose backward
//! pass (in `layers.rs`) returns the gradient of every learned value at once; candle's autograd
//! covers the head and the loss, and its Adam updates the one flat parameter vector.
//!
//! Parameters are initialised from and exported to [`TowerWeights`] in the same order, so the
//! ONNX file holds exactly what was trained.

use std::ops::Range;
use std::sync::{Arc, Mutex, MutexGuard};

use candle_core::{CpuStorage, CustomOp2, Device, Layout, Shape, Tensor, Var};

use super::layers::{self as l, ConvGeo, PoolGeo};
use crate::error::{Error, Result};
use twinscan::tower::{Activation, Layer, ParamKind, TowerSpec, TowerWeights};

pub(crate) fn candle_err(e: candle_core::Error) -> Error {
    Error::Training { reason: e.to_string(), source: Some(e) }
}

fn msg(m: impl Into<String>) -> candle_core::Error {
    candle_core::Error::Msg(m.into())
}

/// Momentum of the batch-norm running statistics (PyTorch's convention).
const BN_MOMENTUM: f32 = 0.1;

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

/// Channels, height and width; a flat `[D]` activation is `D` channels of one pixel.
fn chw(a: Activation) -> (usize, usize, usize) {
    match a {
        Activation::Spatial { c, h, w } => (c, h, w),
        Activation::Flat(d) => (d, 1, 1),
    }
}

/// Where one [`TowerWeights`] tensor lives: in the learned vector or in the running statistics.
#[derive(Debug, Clone)]
enum Slot {
    Learned(Range<usize>),
    Running(Range<usize>),
}

#[derive(Debug, Clone)]
enum Kind {
    Conv { g: ConvGeo, w: Range<usize>, b: Range<usize> },
    BatchNorm { c: usize, hw: usize, eps: f32, gamma: Range<usize>, beta: Range<usize>, running: usize },
    Relu,
    MaxPool(PoolGeo),
    AvgPool(PoolGeo),
    GlobalAvgPool { hw: usize },
    Flatten,
    Linear { i: usize, o: usize, w: Range<usize>, b: Range<usize> },
    L2 { d: usize },
}

#[derive(Debug, Clone)]
struct Step {
    kind: Kind,
    in_len: usize,
    out_len: usize,
}

/// The tower compiled into steps with their parameter ranges.
#[derive(Debug, Clone)]
struct Plan {
    steps: Vec<Step>,
    slots: Vec<Slot>,
    learned: usize,
    running: usize,
    /// `acts` index of the embedding: the input of the projection head, if any.
    embedding: usize,
    /// First step with parameters: no gradient flows below it.
    first_param: usize,
}

impl Plan {
    fn new(spec: &TowerSpec) -> Result<Plan> {
        let params = spec.params()?;
        let (mut learned, mut running) = (0, 0);
        let slots: Vec<Slot> = params
            .iter()
            .map(|p| {
                let (counter, make): (&mut usize, fn(Range<usize>) -> Slot) =
                    if matches!(p.kind, ParamKind::RunningMean | ParamKind::RunningVar) {
                        (&mut running, Slot::Running)
                    } else {
                        (&mut learned, Slot::Learned)
                    };
                let start = *counter;
                *counter += p.numel();
                make(start..*counter)
            })
            .collect();
        // The swap in `training_order` moves no parameters, so they are met in the same order.
        let ordered = TowerSpec { layers: training_order(&spec.layers), ..spec.clone() };
        let shapes = ordered.activations()?;
        let mut next = slots.iter().map(|s| match s {
            Slot::Learned(r) | Slot::Running(r) => r.clone(),
        });
        let mut take = || next.next().ok_or_else(|| Error::training("parameters out of order"));
        let mut steps = Vec::new();
        for (layer, io) in ordered.layers.iter().zip(shapes.windows(2)) {
            let (input, output) = (io[0], io[1]);
            let ((c, h, w), (o, ho, wo)) = (chw(input), chw(output));
            let kind = match *layer {
                Layer::Conv2d { kernel, stride, padding, .. } => {
                    let g = ConvGeo { c, h, w, o, k: kernel, stride, pad: padding, ho, wo };
                    Kind::Conv { g, w: take()?, b: take()? }
                }
                Layer::BatchNorm { eps } => {
                    let (gamma, beta, mean) = (take()?, take()?, take()?);
                    take()?;
                    Kind::BatchNorm { c, hw: h * w, eps, gamma, beta, running: mean.start }
                }
                Layer::Relu => Kind::Relu,
                Layer::MaxPool2d { kernel, stride } => Kind::MaxPool(PoolGeo { h, w, k: kernel, stride, ho, wo }),
                Layer::AvgPool2d { kernel, stride } => Kind::AvgPool(PoolGeo { h, w, k: kernel, stride, ho, wo }),
                Layer::GlobalAvgPool => Kind::GlobalAvgPool { hw: h * w },
                Layer::Flatten => Kind::Flatten,
                Layer::Linear { .. } => Kind::Linear { i: c, o, w: take()?, b: take()? },
                Layer::L2Normalize => Kind::L2 { d: c },
            };
            steps.push(Step { kind, in_len: input.len(), out_len: output.len() });
        }
        let first_param = steps
            .iter()
            .position(|s| matches!(s.kind, Kind::Conv { .. } | Kind::BatchNorm { .. } | Kind::Linear { .. }))
            .unwrap_or(steps.len());
        let embedding = spec.embedding_layers().len();
        Ok(Plan { steps, slots, learned, running, embedding, first_param })
    }

    fn input_len(&self) -> usize {
        self.steps.first().map_or(0, |s| s.in_len)
    }

    fn output_len(&self) -> usize {
        self.steps.last().map_or(0, |s| s.out_len)
    }

    /// Runs the tower on `n` images; the embeddings are left in `ws.acts.last()`. In training
    /// mode batch norm uses batch statistics and updates `running`; otherwise it uses `running`.
    fn forward(&self, p: &[f32], running: &mut [f32], ws: &mut Workspace, input: &[f32], n: usize, train: bool) {
        ws.prepare(self, n, train);
        ws.acts[0].copy_from_slice(input);
        for (i, step) in self.steps.iter().enumerate() {
            let (before, after) = ws.acts.split_at_mut(i + 1);
            let (x, y) = (&before[i][..], &mut after[0][..]);
            match &step.kind {
                Kind::Conv { g, w, b } => l::conv_forward(g, &p[w.clone()], &p[b.clone()], x, y),
                Kind::BatchNorm { c, hw, eps, gamma, beta, running: r } => {
                    let (mean, var) = running[*r..*r + 2 * c].split_at_mut(*c);
                    if train {
                        let (bm, bv) = l::batch_norm_train(
                            (*c, *hw),
                            *eps,
                            &p[gamma.clone()],
                            &p[beta.clone()],
                            x,
                            &mut ws.aux[i],
                            y,
                        );
                        let count = (n * hw) as f32;
                        let unbias = count / (count - 1.0).max(1.0);
                        for (m, b) in mean.iter_mut().zip(&bm) {
                            *m = (1.0 - BN_MOMENTUM) * *m + BN_MOMENTUM * b;
                        }
                        for (v, b) in var.iter_mut().zip(&bv) {
                            *v = (1.0 - BN_MOMENTUM) * *v + BN_MOMENTUM * b * unbias;
                        }
                        ws.stats[i] = bv;
                    } else {
                        l::batch_norm_eval((*c, *hw), *eps, [&p[gamma.clone()], &p[beta.clone()], mean, var], x, y);
                    }
                }
                Kind::Relu => l::relu_forward(x, y),
                Kind::MaxPool(g) => l::max_pool_forward(g, x, y, &mut ws.args[i]),
                Kind::AvgPool(g) => l::avg_pool_forward(g, x, y),
                Kind::GlobalAvgPool { hw } => l::global_avg_pool_forward(*hw, x, y),
                Kind::Flatten => y.copy_from_slice(x),
                Kind::Linear { i: fan_in, o, w, b } => {
                    l::linear_forward((*fan_in, *o), &p[w.clone()], &p[b.clone()], x, y)
                }
                Kind::L2 { d } => l::l2_forward(*d, x, y, &mut ws.aux[i]),
            }
        }
    }

    /// Gradient of every learned value, given the gradient of the embeddings of the last
    /// training-mode [`Plan::forward`] on `ws`.
    fn backward(&self, p: &[f32], ws: &mut Workspace, grad_out: &[f32]) -> Vec<f32> {
        let mut grad = vec![0f32; self.learned];
        let Workspace { acts, aux, stats, args, grads, .. } = ws;
        if let Some(last) = grads.last_mut() {
            last.copy_from_slice(grad_out);
        }
        for (i, step) in self.steps.iter().enumerate().skip(self.first_param).rev() {
            let (x, y) = (&acts[i][..], &acts[i + 1][..]);
            let (below, above) = grads.split_at_mut(i + 1);
            let (dx, dy) = (&mut below[i][..], &above[0][..]);
            // Nothing below the first parameter needs a gradient (its buffer is left empty).
            let dxs = (i > self.first_param).then_some(&mut *dx);
            match &step.kind {
                Kind::Conv { g, w, b } => {
                    let (dw, db) = l::conv_backward(g, &p[w.clone()], x, dy, dxs);
                    grad[w.clone()].copy_from_slice(&dw);
                    grad[b.clone()].copy_from_slice(&db);
                }
                Kind::BatchNorm { c, hw, eps, gamma, beta, .. } => {
                    let (dg, db) =
                        l::batch_norm_backward((*c, *hw), *eps, &p[gamma.clone()], &stats[i], &aux[i], dy, dxs);
                    grad[gamma.clone()].copy_from_slice(&dg);
                    grad[beta.clone()].copy_from_slice(&db);
                }
                Kind::Relu => l::relu_backward(y, dy, dx),
                Kind::MaxPool(g) => l::max_pool_backward(g, &args[i], dy, dx),
                Kind::AvgPool(g) => l::avg_pool_backward(g, dy, dx),
                Kind::GlobalAvgPool { hw } => l::global_avg_pool_backward(*hw, dy, dx),
                Kind::Flatten => dx.copy_from_slice(dy),
                Kind::Linear { i: fan_in, o, w, b } => {
                    let (dw, db) = l::linear_backward((*fan_in, *o), &p[w.clone()], x, dy, dxs);
                    grad[w.clone()].copy_from_slice(&dw);
                    grad[b.clone()].copy_from_slice(&db);
                }
                Kind::L2 { d } => l::l2_backward(*d, y, &aux[i], dy, dx),
            }
        }
        grad
    }
}

/// Buffers of one batch, kept from step to step so that training does not return memory to the
/// system and fault it back in on every step.
#[derive(Debug, Default)]
struct Workspace {
    /// `acts[i]` is the input of step `i`; the last is the embedding.
    acts: Vec<Vec<f32>>,
    /// Batch norm: the normalised input; L2: the row norms.
    aux: Vec<Vec<f32>>,
    /// Batch norm: the batch variance per channel.
    stats: Vec<Vec<f32>>,
    /// Max pooling: the index of each output's maximum.
    args: Vec<Vec<u32>>,
    /// `grads[i]`: gradient of `acts[i]`, filled by the backward pass from step `first_param`.
    grads: Vec<Vec<f32>>,
    batch: usize,
}

impl Workspace {
    fn prepare(&mut self, plan: &Plan, n: usize, train: bool) {
        let steps = plan.steps.len();
        self.acts.resize_with(steps + 1, Vec::new);
        self.grads.resize_with(steps + 1, Vec::new);
        self.aux.resize_with(steps, Vec::new);
        self.stats.resize_with(steps, Vec::new);
        self.args.resize_with(steps, Vec::new);
        self.acts[0].resize(n * plan.input_len(), 0.0);
        for (i, step) in plan.steps.iter().enumerate() {
            self.acts[i + 1].resize(n * step.out_len, 0.0);
            if train && i >= plan.first_param {
                self.grads[i + 1].resize(n * step.out_len, 0.0);
            }
            match step.kind {
                // Inference normalises with the running statistics and keeps nothing.
                Kind::BatchNorm { .. } if train => self.aux[i].resize(n * step.out_len, 0.0),
                Kind::L2 { .. } => self.aux[i].resize(n, 0.0),
                Kind::MaxPool(_) => self.args[i].resize(n * step.out_len, 0),
                _ => {}
            }
        }
        self.batch = n;
    }
}

#[derive(Debug)]
struct State {
    running: Vec<f32>,
    train: Workspace,
    eval: Workspace,
}

#[derive(Debug)]
struct Shared {
    plan: Plan,
    state: Mutex<State>,
}

impl Shared {
    fn lock(&self) -> candle_core::Result<MutexGuard<'_, State>> {
        self.state.lock().map_err(|_| msg("a training step panicked"))
    }
}

fn f32_slice<'a>(storage: &'a CpuStorage, layout: &Layout) -> candle_core::Result<&'a [f32]> {
    let (start, end) = layout.contiguous_offsets().ok_or_else(|| msg("the tower needs contiguous tensors"))?;
    match storage {
        CpuStorage::F32(v) => Ok(&v[start..end]),
        _ => Err(msg("the tower works on f32")),
    }
}

/// The tower as one candle op: `(images [B, C, H, W], parameters [P]) -> embeddings [B, D]`.
struct TowerOp(Arc<Shared>);

impl CustomOp2 for TowerOp {
    fn name(&self) -> &'static str {
        "tower"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (images, params) = (f32_slice(s1, l1)?, f32_slice(s2, l2)?);
        let plan = &self.0.plan;
        let n = l1.dims().first().copied().unwrap_or(0);
        if images.len() != n * plan.input_len() || params.len() != plan.learned {
            return Err(msg("tower input or parameters of the wrong size"));
        }
        let mut state = self.0.lock()?;
        let State { running, train, .. } = &mut *state;
        plan.forward(params, running, train, images, n, true);
        let out = train.acts.last().cloned().unwrap_or_default();
        Ok((CpuStorage::F32(out), Shape::from((n, plan.output_len()))))
    }

    fn bwd(
        &self,
        _images: &Tensor,
        params: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        let grad = grad.flatten_all()?.to_vec1::<f32>()?;
        let p = params.to_vec1::<f32>()?;
        let mut state = self.0.lock()?;
        if grad.len() != state.train.batch * self.0.plan.output_len() {
            return Err(msg("tower gradient does not match the last training batch"));
        }
        let g = self.0.plan.backward(&p, &mut state.train, &grad);
        Ok((None, Some(Tensor::from_vec(g, p.len(), params.device())?)))
    }
}

/// The trainable tower.
pub struct Net {
    shared: Arc<Shared>,
    /// Every learned value, flat, in [`TowerSpec::params`] order without the running statistics.
    params: Var,
}

impl Net {
    /// Builds the network with the given initial weights.
    pub fn new(spec: &TowerSpec, weights: &TowerWeights) -> Result<Net> {
        weights.validate(spec)?;
        let plan = Plan::new(spec)?;
        let (mut learned, mut running) = (vec![0f32; plan.learned], vec![0f32; plan.running]);
        for (slot, values) in plan.slots.iter().zip(&weights.tensors) {
            match slot {
                Slot::Learned(r) => learned[r.clone()].copy_from_slice(values),
                Slot::Running(r) => running[r.clone()].copy_from_slice(values),
            }
        }
        let params = Var::from_vec(learned, plan.learned, &Device::Cpu).map_err(candle_err)?;
        let state = State { running, train: Workspace::default(), eval: Workspace::default() };
        Ok(Net { shared: Arc::new(Shared { plan, state: Mutex::new(state) }), params })
    }

    /// The variables the optimiser updates.
    pub fn trainable(&self) -> Vec<Var> {
        vec![self.params.clone()]
    }

    /// Current values, ready for the ONNX writer.
    pub fn weights(&self) -> Result<TowerWeights> {
        let learned = self.params.as_tensor().to_vec1::<f32>().map_err(candle_err)?;
        let state = self.shared.lock().map_err(candle_err)?;
        let tensors = self
            .shared
            .plan
            .slots
            .iter()
            .map(|slot| match slot {
                Slot::Learned(r) => learned[r.clone()].to_vec(),
                Slot::Running(r) => state.running[r.clone()].to_vec(),
            })
            .collect();
        Ok(TowerWeights { tensors })
    }

    /// Embeds a training batch `[B, C, H, W]` into `[B, D]` (the projection head's output, if
    /// the tower has one) with gradients attached; batch norm uses batch statistics and updates
    /// its running ones.
    pub fn forward_train(&self, images: &Tensor) -> Result<Tensor> {
        images.apply_op2(self.params.as_tensor(), TowerOp(self.shared.clone())).map_err(candle_err)
    }

    /// Embeds `n` images (`[n, C, H, W]` values) in inference mode, as the exported ONNX does
    /// (so without the projection head, if the tower has one).
    pub fn embed(&self, images: &[f32], n: usize) -> Result<Vec<f32>> {
        let plan = &self.shared.plan;
        if images.len() != n * plan.input_len() {
            return Err(Error::training(format!("{} values are not {n} images", images.len())));
        }
        let params = self.params.as_tensor().to_vec1::<f32>().map_err(candle_err)?;
        let mut state = self.shared.lock().map_err(candle_err)?;
        let State { running, eval, .. } = &mut *state;
        plan.forward(&params, running, eval, images, n, false);
        Ok(eval.acts.get(plan.embedding).cloned().unwrap_or_default())
    }
}

#[cfg(test)]
mod tests {
    use candle_core::D;

    use super::*;
    use twinscan::tower::InputShape;

    /// The same tower written with candle's own ops and autograd, as the reference.
    fn reference(spec: &TowerSpec, params: &Tensor, running: &[f32], x: &Tensor, train: bool) -> Tensor {
        let plan = Plan::new(spec).unwrap();
        let part =
            |r: &Range<usize>, dims: &[usize]| params.narrow(0, r.start, r.len()).unwrap().reshape(dims).unwrap();
        let mut x = x.clone();
        for step in &plan.steps {
            x = match &step.kind {
                Kind::Conv { g, w, b } => x
                    .conv2d(&part(w, &[g.o, g.c, g.k, g.k]), g.pad, g.stride, 1, 1)
                    .unwrap()
                    .broadcast_add(&part(b, &[1, g.o, 1, 1]))
                    .unwrap(),
                Kind::BatchNorm { c, eps, gamma, beta, running: r, .. } => {
                    let spatial = x.rank() == 4;
                    let shape: &[usize] = if spatial { &[1, *c, 1, 1] } else { &[1, *c] };
                    let dims: &[usize] = if spatial { &[0, 2, 3] } else { &[0] };
                    let (mean, var) = if train {
                        let mean = x.mean_keepdim(dims).unwrap();
                        let var = x.broadcast_sub(&mean).unwrap().sqr().unwrap().mean_keepdim(dims).unwrap();
                        (mean, var)
                    } else {
                        let stat =
                            |o: usize| Tensor::new(&running[o..o + c], x.device()).unwrap().reshape(shape).unwrap();
                        (stat(*r), stat(r + c))
                    };
                    let scale = (var + f64::from(*eps)).unwrap().sqrt().unwrap().recip().unwrap();
                    x.broadcast_sub(&mean)
                        .unwrap()
                        .broadcast_mul(&scale)
                        .unwrap()
                        .broadcast_mul(&part(gamma, shape))
                        .unwrap()
                        .broadcast_add(&part(beta, shape))
                        .unwrap()
                }
                Kind::Relu => x.relu().unwrap(),
                // Non-overlapping windows as reshapes: candle's own max_pool2d backward scales
                // the gradient by the window's share of maxima (1/4 for 2x2) instead of routing it.
                Kind::MaxPool(g) | Kind::AvgPool(g) => {
                    assert_eq!(g.k, g.stride, "the reference pools without overlap");
                    let (n, c) = (x.dim(0).unwrap(), x.dim(1).unwrap());
                    let windows = x
                        .narrow(2, 0, g.ho * g.k)
                        .unwrap()
                        .narrow(3, 0, g.wo * g.k)
                        .unwrap()
                        .reshape((n, c, g.ho, g.k, g.wo, g.k))
                        .unwrap();
                    if matches!(step.kind, Kind::MaxPool(_)) {
                        windows.max(5).unwrap().max(3).unwrap()
                    } else {
                        windows.mean(5).unwrap().mean(3).unwrap()
                    }
                }
                Kind::GlobalAvgPool { .. } => x.mean_keepdim(3).unwrap().mean_keepdim(2).unwrap(),
                Kind::Flatten => x.flatten_from(1).unwrap(),
                Kind::Linear { i, o, w, b } => {
                    x.matmul(&part(w, &[*o, *i]).t().unwrap()).unwrap().broadcast_add(&part(b, &[*o])).unwrap()
                }
                Kind::L2 { .. } => {
                    let norm = x.sqr().unwrap().sum_keepdim(D::Minus1).unwrap().sqrt().unwrap().maximum(1e-12).unwrap();
                    x.broadcast_div(&norm).unwrap()
                }
            };
        }
        x
    }

    /// Seeded values uniform in [-1.7, 1.7) (unit variance), so a failure can be replayed.
    fn seeded(shape: &[usize], seed: u64) -> Tensor {
        let mut rng = twinscan::tower::SplitMix64::new(seed);
        let n = shape.iter().product();
        let v: Vec<f32> = (0..n).map(|_| (rng.next_f32() * 2.0 - 1.0) * 1.732).collect();
        Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
    }

    fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
        (a - b).unwrap().abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar::<f32>().unwrap()
    }

    /// Every layer kind, spatial and flat batch norm, padding, stride 2, ReLU before pooling.
    fn towers() -> Vec<TowerSpec> {
        let conv = |out_channels, stride, padding| Layer::Conv2d { out_channels, kernel: 3, stride, padding };
        let bn = Layer::BatchNorm { eps: 1e-3 };
        vec![
            TowerSpec {
                name: "all".into(),
                input: InputShape { channels: 2, height: 10, width: 10 },
                layers: vec![
                    conv(4, 1, 1),
                    bn,
                    Layer::Relu,
                    Layer::MaxPool2d { kernel: 2, stride: 2 },
                    conv(6, 2, 1),
                    Layer::Relu,
                    Layer::Flatten,
                    Layer::Linear { out_features: 8 },
                    bn,
                    Layer::Relu,
                    Layer::Linear { out_features: 5 },
                    Layer::L2Normalize,
                ],
                head: 0,
            },
            TowerSpec {
                name: "pooled".into(),
                input: InputShape { channels: 3, height: 9, width: 9 },
                layers: vec![
                    conv(5, 1, 0),
                    Layer::Relu,
                    // 7x7 to 3x3: the last row and column fall outside every window.
                    Layer::AvgPool2d { kernel: 2, stride: 2 },
                    Layer::GlobalAvgPool,
                    Layer::Flatten,
                    Layer::Linear { out_features: 4 },
                ],
                head: 0,
            },
        ]
    }

    #[test]
    fn forward_gradients_and_running_statistics_match_candle_autograd() {
        let dev = Device::Cpu;
        for spec in towers() {
            let net = Net::new(&spec, &TowerWeights::seeded(&spec, 3).unwrap()).unwrap();
            let running_before = net.shared.lock().unwrap().running.clone();
            let s = spec.input;
            let n = 5;
            let x = seeded(&[n, s.channels, s.height, s.width], 11);

            let ours = net.forward_train(&x).unwrap();
            let theirs = reference(&spec, net.params.as_tensor(), &running_before, &x, true);
            assert!(max_diff(&ours, &theirs) < 1e-4, "{}: forward differs", spec.name);

            let r = seeded(ours.dims(), 12);
            let g_ours = (&ours * &r).unwrap().sum_all().unwrap().backward().unwrap();
            let g_ref = (&theirs * &r).unwrap().sum_all().unwrap().backward().unwrap();
            let (a, b) = (g_ours.get(&net.params).unwrap(), g_ref.get(&net.params).unwrap());
            let scale = b.abs().unwrap().max(0).unwrap().to_scalar::<f32>().unwrap();
            assert!(max_diff(a, b) < 1e-4 * scale.max(1.0), "{}: gradients differ by {}", spec.name, max_diff(a, b));

            // The step moved the running statistics by the momentum towards the batch's own.
            let plan = &net.shared.plan;
            let running = net.shared.lock().unwrap().running.clone();
            for (j, step) in plan.steps.iter().enumerate() {
                let Kind::BatchNorm { c, running: r, .. } = step.kind else { continue };
                let prefix = TowerSpec { layers: training_order(&spec.layers)[..j].to_vec(), ..spec.clone() };
                let input = reference(&prefix, net.params.as_tensor(), &running_before, &x, true);
                let rows = input.elem_count() / c;
                let per_channel = if input.rank() == 4 { input.transpose(0, 1).unwrap() } else { input.t().unwrap() };
                let v = per_channel.contiguous().unwrap().reshape((c, rows)).unwrap().to_vec2::<f32>().unwrap();
                for (ch, v) in v.iter().enumerate() {
                    let mean = v.iter().sum::<f32>() / rows as f32;
                    let var = v.iter().map(|x| (x - mean).powi(2)).sum::<f32>() / (rows - 1) as f32;
                    let (m, s) = (running[r + ch], running[r + c + ch]);
                    assert!((m - (0.9 * running_before[r + ch] + 0.1 * mean)).abs() < 1e-5, "running mean {ch}");
                    assert!((s - (0.9 * running_before[r + c + ch] + 0.1 * var)).abs() < 1e-4, "running var {ch}");
                }
            }

            // Inference mode uses the running statistics, as the exported model does.
            let xs = x.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            let eval = net.embed(&xs, n).unwrap();
            let eval = Tensor::from_vec(eval, ours.shape(), &dev).unwrap();
            let reference_eval = reference(&spec, net.params.as_tensor(), &running, &x, false);
            assert!(max_diff(&eval, &reference_eval) < 1e-4, "{}: inference differs", spec.name);
        }
    }
}
