//! Writes a tower and its metadata as an ONNX file, with tract's own protobuf types so the file
//! we write is the file tract reads.

use prost::Message;
use tract_onnx::pb;

use super::meta::ModelMeta;
use super::spec::{InputShape, Layer, ParamKind, TowerSpec};
use super::weights::TowerWeights;
use crate::error::{Error, Result};

/// Name of the graph input.
pub const INPUT_NAME: &str = "image";
/// Name of the graph output.
pub const OUTPUT_NAME: &str = "embedding";
/// Name of the symbolic batch dimension.
pub const BATCH_DIM: &str = "N";
/// ONNX operator set the writer targets: widely supported (tract tests 9 to 18, onnxruntime
/// every release since 2020).
pub const OPSET: i64 = 13;
const IR_VERSION: i64 = 7;

fn attr_int(name: &str, i: i64) -> pb::AttributeProto {
    pb::AttributeProto {
        name: name.into(),
        r#type: pb::attribute_proto::AttributeType::Int as i32,
        i,
        ..Default::default()
    }
}

/// Square window and stride of a pooling node.
fn pool_attrs(kernel: usize, stride: usize) -> Vec<pb::AttributeProto> {
    vec![attr_ints("kernel_shape", vec![kernel as i64; 2]), attr_ints("strides", vec![stride as i64; 2])]
}

fn attr_ints(name: &str, ints: Vec<i64>) -> pb::AttributeProto {
    pb::AttributeProto {
        name: name.into(),
        r#type: pb::attribute_proto::AttributeType::Ints as i32,
        ints,
        ..Default::default()
    }
}

fn attr_float(name: &str, f: f32) -> pb::AttributeProto {
    pb::AttributeProto {
        name: name.into(),
        r#type: pb::attribute_proto::AttributeType::Float as i32,
        f,
        ..Default::default()
    }
}

fn float_tensor(name: &str, dims: &[usize], values: &[f32]) -> pb::TensorProto {
    pb::TensorProto {
        name: name.into(),
        dims: dims.iter().map(|d| *d as i64).collect(),
        data_type: pb::tensor_proto::DataType::Float as i32,
        raw_data: values.iter().flat_map(|v| v.to_le_bytes()).collect(),
        ..Default::default()
    }
}

fn value_info(name: &str, dims: &[Option<usize>]) -> pb::ValueInfoProto {
    use pb::tensor_shape_proto::{dimension::Value, Dimension};
    let dim = dims
        .iter()
        .map(|d| Dimension {
            value: Some(match d {
                Some(n) => Value::DimValue(*n as i64),
                None => Value::DimParam(BATCH_DIM.into()),
            }),
            ..Default::default()
        })
        .collect();
    pb::ValueInfoProto {
        name: name.into(),
        r#type: Some(pb::TypeProto {
            value: Some(pb::type_proto::Value::TensorType(pb::type_proto::Tensor {
                elem_type: pb::tensor_proto::DataType::Float as i32,
                shape: Some(pb::TensorShapeProto { dim }),
            })),
            ..Default::default()
        }),
        ..Default::default()
    }
}

struct GraphBuilder {
    nodes: Vec<pb::NodeProto>,
    initializers: Vec<pb::TensorProto>,
}

impl GraphBuilder {
    fn node(&mut self, op: &str, name: String, inputs: Vec<String>, attribute: Vec<pb::AttributeProto>) -> String {
        let output = format!("{name}.out");
        self.nodes.push(pb::NodeProto {
            op_type: op.into(),
            name,
            input: inputs,
            output: vec![output.clone()],
            attribute,
            ..Default::default()
        });
        output
    }

    fn constant(&mut self, name: String, dims: &[usize], values: &[f32]) -> String {
        self.initializers.push(float_tensor(&name, dims, values));
        name
    }
}

/// Checks that the metadata describes this tower: same input, embedding size and normalisation.
fn check_meta(spec: &TowerSpec, meta: &ModelMeta) -> Result<()> {
    let invalid = |reason: String| Error::InvalidTower { tower: spec.name.clone(), reason };
    if meta.input != spec.input {
        return Err(invalid(format!("metadata input {:?} differs from the tower's {:?}", meta.input, spec.input)));
    }
    let dim = spec.embedding_dim()?;
    if meta.embedding_dim != dim {
        return Err(invalid(format!("metadata embedding size {} differs from the tower's {dim}", meta.embedding_dim)));
    }
    if meta.l2_normalized != spec.l2_normalized() {
        return Err(invalid("metadata l2_normalized disagrees with the tower's last layer".into()));
    }
    Ok(())
}

/// Builds the ONNX model of a tower: one input `image: [N, C, H, W]`, one output
/// `embedding: [N, D]`, weights as initializers, metadata as `twinscan.*` properties.
pub(crate) fn to_model_proto(spec: &TowerSpec, weights: &TowerWeights, meta: &ModelMeta) -> Result<pb::ModelProto> {
    weights.validate(spec)?;
    check_meta(spec, meta)?;
    let params = spec.params()?;
    let mut g = GraphBuilder { nodes: Vec::new(), initializers: Vec::new() };
    let mut tensors = params.iter().zip(&weights.tensors);
    let mut take = |g: &mut GraphBuilder, kind: ParamKind| -> Result<String> {
        match tensors.next() {
            Some((p, t)) if p.kind == kind => Ok(g.constant(p.name(), &p.dims, t)),
            _ => Err(Error::InvalidTower { tower: spec.name.clone(), reason: "parameters out of order".into() }),
        }
    };
    let mut x = INPUT_NAME.to_string();
    for (i, layer) in spec.embedding_layers().iter().enumerate() {
        let name = format!("l{i}");
        x = match *layer {
            Layer::Conv2d { kernel, stride, padding, .. } => {
                let w = take(&mut g, ParamKind::Weight)?;
                let b = take(&mut g, ParamKind::Bias)?;
                let pad = padding as i64;
                let attrs = vec![
                    attr_ints("kernel_shape", vec![kernel as i64; 2]),
                    attr_ints("strides", vec![stride as i64; 2]),
                    attr_ints("pads", vec![pad; 4]),
                    attr_ints("dilations", vec![1, 1]),
                    attr_int("group", 1),
                ];
                g.node("Conv", name, vec![x, w, b], attrs)
            }
            Layer::BatchNorm { eps } => {
                let inputs = [ParamKind::Gamma, ParamKind::Beta, ParamKind::RunningMean, ParamKind::RunningVar]
                    .into_iter()
                    .map(|k| take(&mut g, k))
                    .collect::<Result<Vec<_>>>()?;
                let mut all = vec![x];
                all.extend(inputs);
                g.node("BatchNormalization", name, all, vec![attr_float("epsilon", eps)])
            }
            Layer::Relu => g.node("Relu", name, vec![x], vec![]),
            Layer::MaxPool2d { kernel, stride } => g.node("MaxPool", name, vec![x], pool_attrs(kernel, stride)),
            Layer::AvgPool2d { kernel, stride } => g.node("AveragePool", name, vec![x], pool_attrs(kernel, stride)),
            Layer::GlobalAvgPool => g.node("GlobalAveragePool", name, vec![x], vec![]),
            Layer::Flatten => g.node("Flatten", name, vec![x], vec![attr_int("axis", 1)]),
            Layer::Linear { .. } => {
                let w = take(&mut g, ParamKind::Weight)?;
                let b = take(&mut g, ParamKind::Bias)?;
                g.node("Gemm", name, vec![x, w, b], vec![attr_int("transB", 1)])
            }
            Layer::L2Normalize => {
                // x / max(||x||, 1e-12), spelled with core ops every runtime has.
                let sq = g.node(
                    "ReduceSumSquare",
                    format!("{name}.sumsq"),
                    vec![x.clone()],
                    vec![attr_ints("axes", vec![1]), attr_int("keepdims", 1)],
                );
                let norm = g.node("Sqrt", format!("{name}.norm"), vec![sq], vec![]);
                let eps = g.constant(format!("{name}.eps"), &[], &[1e-12]);
                let floor = g.node("Max", format!("{name}.floor"), vec![norm, eps], vec![]);
                g.node("Div", name, vec![x, floor], vec![])
            }
        };
    }
    // The graph output has a fixed name; an Identity keeps layer names free to change.
    g.nodes.push(pb::NodeProto {
        op_type: "Identity".into(),
        name: OUTPUT_NAME.into(),
        input: vec![x],
        output: vec![OUTPUT_NAME.into()],
        ..Default::default()
    });
    let InputShape { channels: c, height: h, width: w } = spec.input;
    let dim = spec.embedding_dim()?;
    let graph = pb::GraphProto {
        name: spec.name.clone(),
        node: g.nodes,
        initializer: g.initializers,
        input: vec![value_info(INPUT_NAME, &[None, Some(c), Some(h), Some(w)])],
        output: vec![value_info(OUTPUT_NAME, &[None, Some(dim)])],
        ..Default::default()
    };
    Ok(pb::ModelProto {
        ir_version: IR_VERSION,
        opset_import: vec![pb::OperatorSetIdProto { domain: String::new(), version: OPSET }],
        producer_name: "twinscan".into(),
        producer_version: env!("CARGO_PKG_VERSION").into(),
        doc_string: format!("One tower of a twinscan twin network ({}).", spec.name),
        graph: Some(graph),
        metadata_props: meta
            .to_properties()
            .into_iter()
            .map(|(key, value)| pb::StringStringEntryProto { key, value })
            .collect(),
        ..Default::default()
    })
}

/// Encodes a tower as ONNX bytes: one input `image: [N, C, H, W]`, one output `embedding: [N, D]`,
/// weights as initializers, metadata as `twinscan.*` properties.
///
/// ```
/// use twinscan::tower::{self, InputShape, TowerSpec, TowerWeights};
/// let spec = TowerSpec::seed(InputShape { channels: 1, height: 28, width: 28 });
/// let weights = TowerWeights::seeded(&spec, 7).unwrap();
/// let meta = tower::untrained_meta(&spec).unwrap();
/// let bytes = tower::write_onnx(&spec, &weights, &meta).unwrap();
/// let model = twinscan::Model::from_bytes(&bytes, "seed").unwrap();
/// assert_eq!(model.meta().embedding_dim, 32);
/// ```
pub fn write_onnx(spec: &TowerSpec, weights: &TowerWeights, meta: &ModelMeta) -> Result<Vec<u8>> {
    Ok(to_model_proto(spec, weights, meta)?.encode_to_vec())
}
