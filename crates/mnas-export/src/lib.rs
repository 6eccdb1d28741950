//! mnas-export: ONNX models from mnas networks, written by a small protobuf encoder of our own
//! (no protoc, no Python).
//!
//! Every conv + BN pair is folded into one biased Conv (eval-mode BN), ReLU6 becomes `Clip(0, 6)`,
//! the SE block `GlobalAveragePool -> Conv -> act -> Conv -> Sigmoid -> Mul`, the pooling skip
//! `AveragePool(kernel = stride, ceil_mode, count_include_pad = 0)` plus an optional 1x1 Conv, and
//! the classifier `Flatten -> Gemm(transB)`. Dropout is dropped (inference graph).
//! Opset 13, IR version 8; input `input` [B, 3, R, R], output `logits` [B, classes].

pub mod error;
pub mod file;
pub mod fold;
pub mod graph;
pub mod proto;

use std::fmt;
use std::path::Path;
use std::str::FromStr;

use mnas_model::burn::tensor::backend::Backend;
use mnas_model::MnasNet;

pub use error::ExportError;
pub use graph::{Part, INPUT, OUTPUT};
use proto::{Dim, Model, ValueInfo};

/// ONNX operator set the graph is written for.
pub const OPSET: i64 = 13;
/// ONNX IR version (8 = onnx 1.10+, opset <= 16 readers).
pub const IR_VERSION: i64 = 8;
/// Metadata key holding the exported arch as JSON (same key as the weights files).
pub const ARCH_METADATA_KEY: &str = mnas_model::weights::ARCH_METADATA_KEY;
/// Largest protobuf message: a single-file ONNX model must stay below it.
const PROTOBUF_LIMIT: u64 = (1 << 31) - 1;

/// The batch dimension of the graph input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Batch {
    Fixed(u32),
    /// Symbolic dimension `batch`: any batch size at run time.
    Dynamic,
}

impl Default for Batch {
    fn default() -> Self {
        Batch::Fixed(1)
    }
}

impl FromStr for Batch {
    type Err = ExportError;

    /// A positive integer, or `dynamic`.
    fn from_str(s: &str) -> Result<Batch, ExportError> {
        let t = s.trim();
        if t.eq_ignore_ascii_case("dynamic") {
            return Ok(Batch::Dynamic);
        }
        match t.parse::<u32>() {
            Ok(n) if n > 0 => Ok(Batch::Fixed(n)),
            _ => Err(ExportError::Option(format!("batch `{s}`: expected a positive integer or `dynamic`"))),
        }
    }
}

impl fmt::Display for Batch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Batch::Fixed(n) => write!(f, "{n}"),
            Batch::Dynamic => f.write_str("batch"),
        }
    }
}

impl Batch {
    fn dim(self) -> Dim {
        match self {
            Batch::Fixed(n) => Dim::Value(i64::from(n)),
            Batch::Dynamic => Dim::Param("batch".into()),
        }
    }
}

/// What to export besides the weights.
#[derive(Debug, Clone, Default)]
pub struct ExportOptions {
    pub batch: Batch,
    /// Input resolution; `None` takes the model's `arch.resolution`. Weights do not depend on it.
    pub resolution: Option<u32>,
}

impl ExportOptions {
    fn resolution<B: Backend>(&self, model: &MnasNet<B>) -> Result<u32, ExportError> {
        match self.resolution.unwrap_or(model.arch.resolution) {
            r @ 1..=4096 => Ok(r),
            r => Err(ExportError::Option(format!("resolution {r}: must be between 1 and 4096"))),
        }
    }
}

/// The ONNX model of `model` (eval mode), as a message ready to encode.
pub fn onnx_model<B: Backend>(model: &MnasNet<B>, opts: &ExportOptions) -> Result<Model, ExportError> {
    let r = opts.resolution(model)?;
    if let Batch::Fixed(0) = opts.batch {
        return Err(ExportError::Option("batch must be at least 1".into()));
    }
    let mut graph = graph::build(model)?;
    let mut arch = model.arch.clone();
    arch.resolution = r;
    let r = i64::from(r);
    graph.inputs = vec![ValueInfo {
        name: INPUT.into(),
        dims: vec![opts.batch.dim(), Dim::Value(3), Dim::Value(r), Dim::Value(r)],
    }];
    graph.outputs =
        vec![ValueInfo { name: OUTPUT.into(), dims: vec![opts.batch.dim(), Dim::Value(i64::from(arch.num_classes))] }];
    graph.doc_string = arch.canonical();
    let model = Model {
        ir_version: IR_VERSION,
        opset: OPSET,
        producer_name: "mnas".into(),
        producer_version: env!("CARGO_PKG_VERSION").into(),
        doc_string: format!("{} (BN folded, eval mode)", arch.name.as_deref().unwrap_or("mnas model")),
        graph,
        metadata: vec![(ARCH_METADATA_KEY.into(), arch.to_json())],
    };
    tracing::debug!(
        nodes = model.graph.nodes.len(),
        initializers = model.graph.initializers.len(),
        bytes = model.initializer_bytes(),
        "built ONNX graph"
    );
    Ok(model)
}

/// The serialised ONNX model of one part of a network alone (batch `batch`), with input
/// [`INPUT`] of the part's own input shape: what the latency lookup table times on engines that
/// only run whole graphs.
pub fn part_onnx<B: Backend>(part: &Part<'_, B>, batch: u32) -> Result<Vec<u8>, ExportError> {
    if batch == 0 {
        return Err(ExportError::Option("batch must be at least 1".into()));
    }
    let (mut graph, output) = graph::build_part(part)?;
    let map = |c: u32, s: u32| {
        vec![Dim::Value(i64::from(batch)), Dim::Value(c.into()), Dim::Value(s.into()), Dim::Value(s.into())]
    };
    let (input_dims, output_dims, name) = match part {
        Part::Stem(m) => (map(3, m.arch.resolution), map(m.arch.stem_out(), m.arch.stem_out_size()), "stem"),
        Part::Layer(l) => (map(l.spec.in_channels, l.spec.in_size), map(l.spec.out_channels, l.spec.out_size), "layer"),
        Part::Head(m) => {
            let (c, s) = m.arch.head_input();
            (map(c, s), vec![Dim::Value(i64::from(batch)), Dim::Value(m.arch.num_classes.into())], "head")
        }
    };
    graph.inputs = vec![ValueInfo { name: INPUT.into(), dims: input_dims }];
    graph.outputs = vec![ValueInfo { name: output, dims: output_dims }];
    let model = Model {
        ir_version: IR_VERSION,
        opset: OPSET,
        producer_name: "mnas".into(),
        producer_version: env!("CARGO_PKG_VERSION").into(),
        doc_string: format!("one {name} of an mnas network (BN folded, eval mode)"),
        graph,
        metadata: Vec::new(),
    };
    Ok(model.encode())
}

/// The serialised ONNX model of `model`.
pub fn export_onnx<B: Backend>(model: &MnasNet<B>, opts: &ExportOptions) -> Result<Vec<u8>, ExportError> {
    let m = onnx_model(model, opts)?;
    let weights = m.initializer_bytes();
    if weights > PROTOBUF_LIMIT {
        return Err(ExportError::TooLarge { bytes: weights });
    }
    let bytes = m.encode();
    if bytes.len() as u64 > PROTOBUF_LIMIT {
        return Err(ExportError::TooLarge { bytes: bytes.len() as u64 });
    }
    Ok(bytes)
}

/// Exports `model` to `path` atomically (temp file in the same directory, then rename). The
/// target directory must exist; on any error no file is left at `path` or beside it.
/// Returns the number of bytes written.
pub fn write_onnx<B: Backend>(model: &MnasNet<B>, opts: &ExportOptions, path: &Path) -> Result<u64, ExportError> {
    file::check_target(path)?;
    let bytes = export_onnx(model, opts)?;
    file::write_atomic(path, &bytes)?;
    tracing::info!(path = %path.display(), bytes = bytes.len(), "wrote ONNX model");
    Ok(bytes.len() as u64)
}
