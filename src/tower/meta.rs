//! The `twinscan.*` metadata properties that travel in the ONNX file: everything the runtime
//! needs to preprocess images and interpret distances, plus provenance.

use std::collections::HashMap;

use super::spec::InputShape;
use crate::error::{Error, Result};
use crate::similarity::{Head, Metric};

/// Prefix of every property twinscan writes.
pub const PREFIX: &str = "twinscan.";
/// Version of the metadata layout; bumped when a key changes meaning.
pub const FORMAT_VERSION: u32 = 1;

/// How an image is brought to the tower's input size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResizeRule {
    /// Resize to exactly `height x width`, ignoring aspect ratio (keeps all content).
    Stretch,
    /// Scale the shorter side to the target, then cut the centre.
    CenterCrop,
}

impl ResizeRule {
    fn as_str(self) -> &'static str {
        match self {
            ResizeRule::Stretch => "stretch",
            ResizeRule::CenterCrop => "center_crop",
        }
    }
    fn parse(s: &str) -> Option<Self> {
        match s {
            "stretch" => Some(ResizeRule::Stretch),
            "center_crop" => Some(ResizeRule::CenterCrop),
            _ => None,
        }
    }
}

/// Resampling filter used when resizing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Filter {
    /// Nearest neighbour.
    Nearest,
    /// Bilinear (the image crate's `Triangle`).
    Triangle,
    /// Bicubic.
    CatmullRom,
    /// Lanczos with window 3.
    Lanczos3,
}

impl Filter {
    fn as_str(self) -> &'static str {
        match self {
            Filter::Nearest => "nearest",
            Filter::Triangle => "triangle",
            Filter::CatmullRom => "catmullrom",
            Filter::Lanczos3 => "lanczos3",
        }
    }
    fn parse(s: &str) -> Option<Self> {
        match s {
            "nearest" => Some(Filter::Nearest),
            "triangle" => Some(Filter::Triangle),
            "catmullrom" => Some(Filter::CatmullRom),
            "lanczos3" => Some(Filter::Lanczos3),
            _ => None,
        }
    }
}

/// Pixel preprocessing: resize, then `value = (pixel / 255 - mean[c]) / std[c]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Preprocess {
    /// How the image reaches the input size.
    pub resize: ResizeRule,
    /// Resampling filter.
    pub filter: Filter,
    /// Per-channel mean, on the `[0, 1]` scale.
    pub mean: Vec<f32>,
    /// Per-channel standard deviation, positive.
    pub std: Vec<f32>,
}

/// Where a model came from and how well it did.
#[derive(Debug, Clone, PartialEq)]
pub struct Provenance {
    /// Tower architecture name.
    pub tower: String,
    /// Training data (name and checksum where known).
    pub dataset: String,
    /// Loss the tower was trained with.
    pub loss: String,
    /// Epochs trained.
    pub epochs: u32,
    /// Seed of the training run.
    pub seed: u64,
    /// Version of the trainer that wrote the file.
    pub trainer_version: String,
    /// Measured test-pair accuracy at the threshold, if it was measured.
    pub accuracy: Option<f64>,
}

/// Everything the runtime reads from a model file besides the graph.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelMeta {
    /// Input size.
    pub input: InputShape,
    /// Resize and normalisation.
    pub preprocess: Preprocess,
    /// Embedding length.
    pub embedding_dim: usize,
    /// Whether embeddings have unit L2 norm.
    pub l2_normalized: bool,
    /// Distance between embeddings.
    pub metric: Metric,
    /// Distance-to-probability head.
    pub head: Head,
    /// Calibrated decision threshold on the distance: pairs at or below it are duplicates.
    pub threshold: f32,
    /// Whether images are also compared as grey, and at what cost: two images are then as far
    /// apart as the least of their colour distance and their grey distance plus this margin,
    /// so a grey or re-lit copy matches while distinct photos gain nothing. Optional key
    /// `views.grey_margin`; a model without it compares colour only.
    pub grey_margin: Option<f32>,
    /// Provenance.
    pub provenance: Provenance,
}

fn join(v: &[f32]) -> String {
    v.iter().map(|x| x.to_string()).collect::<Vec<_>>().join(",")
}

impl ModelMeta {
    /// The properties to write, keys with the `twinscan.` prefix, in a fixed order.
    pub fn to_properties(&self) -> Vec<(String, String)> {
        let p = &self.provenance;
        let props: Vec<(&str, String)> = vec![
            ("format", FORMAT_VERSION.to_string()),
            ("input.channels", self.input.channels.to_string()),
            ("input.height", self.input.height.to_string()),
            ("input.width", self.input.width.to_string()),
            ("preprocess.resize", self.preprocess.resize.as_str().into()),
            ("preprocess.filter", self.preprocess.filter.as_str().into()),
            ("preprocess.mean", join(&self.preprocess.mean)),
            ("preprocess.std", join(&self.preprocess.std)),
            ("embedding.dim", self.embedding_dim.to_string()),
            ("embedding.l2_normalized", self.l2_normalized.to_string()),
            ("distance", self.metric.as_str().into()),
            ("head", "logistic".into()),
            ("head.a", self.head.a.to_string()),
            ("head.b", self.head.b.to_string()),
            ("threshold", self.threshold.to_string()),
            ("provenance.tower", p.tower.clone()),
            ("provenance.dataset", p.dataset.clone()),
            ("provenance.loss", p.loss.clone()),
            ("provenance.epochs", p.epochs.to_string()),
            ("provenance.seed", p.seed.to_string()),
            ("provenance.trainer_version", p.trainer_version.clone()),
            ("provenance.accuracy", p.accuracy.map_or("unmeasured".into(), |a| a.to_string())),
        ];
        let grey = self.grey_margin.map(|m| ("views.grey_margin", m.to_string()));
        props.into_iter().chain(grey).map(|(k, v)| (format!("{PREFIX}{k}"), v)).collect()
    }

    /// Reads and validates the properties of the model called `model` (a path or label used in
    /// errors). Every key is required; a missing or malformed one is refused by name.
    pub fn from_properties(model: &str, props: &HashMap<String, String>) -> Result<Self> {
        let r = Reader { model, props };
        let format: u32 = r.parse("format")?;
        if format != FORMAT_VERSION {
            return Err(r.invalid("format", &format.to_string(), format!("this build reads format {FORMAT_VERSION}")));
        }
        let input = InputShape {
            channels: r.parse("input.channels")?,
            height: r.parse("input.height")?,
            width: r.parse("input.width")?,
        };
        if input.channels != 1 && input.channels != 3 {
            return Err(r.invalid("input.channels", &input.channels.to_string(), "must be 1 or 3".into()));
        }
        for (key, v) in [("input.height", input.height), ("input.width", input.width)] {
            if !(1..=4096).contains(&v) {
                return Err(r.invalid(key, &v.to_string(), "must be between 1 and 4096".into()));
            }
        }
        let resize = r.with("preprocess.resize", ResizeRule::parse, "expected stretch or center_crop")?;
        let filter =
            r.with("preprocess.filter", Filter::parse, "expected nearest, triangle, catmullrom or lanczos3")?;
        let mean = r.floats("preprocess.mean", input.channels, |v| v.is_finite())?;
        let std = r.floats("preprocess.std", input.channels, |v| v.is_finite() && v > 0.0)?;
        let embedding_dim: usize = r.parse("embedding.dim")?;
        if embedding_dim == 0 {
            return Err(r.invalid("embedding.dim", "0", "must be positive".into()));
        }
        let l2_normalized = r.parse("embedding.l2_normalized")?;
        let metric = r.with("distance", Metric::parse, "expected euclidean or cosine")?;
        r.with("head", |s| (s == "logistic").then_some(()), "expected logistic")?;
        let a: f32 = r.parse("head.a")?;
        let b: f32 = r.parse("head.b")?;
        if !a.is_finite() {
            return Err(r.invalid("head.a", &a.to_string(), "must be finite".into()));
        }
        if !(b.is_finite() && b > 0.0) {
            return Err(r.invalid(
                "head.b",
                &b.to_string(),
                "must be positive so probability falls with distance".into(),
            ));
        }
        let threshold: f32 = r.parse("threshold")?;
        if !(threshold.is_finite() && threshold >= 0.0) {
            return Err(r.invalid("threshold", &threshold.to_string(), "must be a non-negative distance".into()));
        }
        let grey_margin = match r.props.get(&format!("{PREFIX}views.grey_margin")) {
            None => None,
            Some(s) => match s.parse::<f32>() {
                Ok(m) if m.is_finite() && m >= 0.0 && input.channels == 3 => Some(m),
                _ => {
                    let reason = "must be a non-negative distance, on a three-channel model".into();
                    return Err(r.invalid("views.grey_margin", s, reason));
                }
            },
        };
        let accuracy = match r.get("provenance.accuracy")? {
            "unmeasured" => None,
            s => Some(s.parse::<f64>().map_err(|e| r.invalid("provenance.accuracy", s, e.to_string()))?),
        };
        let provenance = Provenance {
            tower: r.get("provenance.tower")?.into(),
            dataset: r.get("provenance.dataset")?.into(),
            loss: r.get("provenance.loss")?.into(),
            epochs: r.parse("provenance.epochs")?,
            seed: r.parse("provenance.seed")?,
            trainer_version: r.get("provenance.trainer_version")?.into(),
            accuracy,
        };
        Ok(ModelMeta {
            input,
            preprocess: Preprocess { resize, filter, mean, std },
            embedding_dim,
            l2_normalized,
            metric,
            head: Head { a, b },
            threshold,
            grey_margin,
            provenance,
        })
    }

    /// Probability that two images at distance `d` are similar, per the model's head.
    pub fn probability(&self, d: f32) -> f32 {
        self.head.probability(d)
    }
}

struct Reader<'a> {
    model: &'a str,
    props: &'a HashMap<String, String>,
}

impl Reader<'_> {
    fn get(&self, key: &str) -> Result<&str> {
        let full = format!("{PREFIX}{key}");
        self.props
            .get(&full)
            .map(|s| s.as_str())
            .ok_or_else(|| Error::MissingMetadata { model: self.model.into(), key: full })
    }

    fn invalid(&self, key: &str, value: &str, reason: String) -> Error {
        Error::InvalidMetadata { model: self.model.into(), key: format!("{PREFIX}{key}"), value: value.into(), reason }
    }

    fn parse<T: std::str::FromStr>(&self, key: &str) -> Result<T>
    where
        T::Err: std::fmt::Display,
    {
        let s = self.get(key)?;
        s.trim().parse().map_err(|e: T::Err| self.invalid(key, s, e.to_string()))
    }

    fn with<T>(&self, key: &str, f: impl Fn(&str) -> Option<T>, expected: &str) -> Result<T> {
        let s = self.get(key)?;
        f(s).ok_or_else(|| self.invalid(key, s, expected.into()))
    }

    fn floats(&self, key: &str, n: usize, ok: impl Fn(f32) -> bool) -> Result<Vec<f32>> {
        let s = self.get(key)?;
        let values: Vec<f32> = s
            .split(',')
            .map(|x| x.trim().parse::<f32>())
            .collect::<Result<_, _>>()
            .map_err(|e| self.invalid(key, s, e.to_string()))?;
        if values.len() != n {
            return Err(self.invalid(key, s, format!("expected {n} comma-separated values, one per channel")));
        }
        if !values.iter().all(|v| ok(*v)) {
            return Err(self.invalid(key, s, "values out of range".into()));
        }
        Ok(values)
    }
}
