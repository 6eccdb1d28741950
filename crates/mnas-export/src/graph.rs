//! Emits the ONNX graph of an [`MnasNet`], node by node, in the order of its forward pass.
//!
//! Node and initializer names follow timm's module names (`blocks.2.1.conv_dw`), so a graph
//! viewer shows the same names as the weights file. A conv's initializers hold the BN-folded
//! values, so `conv_stem.weight` here is the weights file's `conv_stem.weight` scaled by `bn1`.

use mnas_model::burn::tensor::backend::Backend;
use mnas_model::net::SearchLayer;
use mnas_model::MnasNet;
use mnas_space::{Activation, ConvOp, Residual};

use crate::error::ExportError;
use crate::fold::{self, ConvParams};
use crate::proto::{Attribute, Graph, Node, Tensor};

/// Name of the graph input and output.
pub const INPUT: &str = "input";
pub const OUTPUT: &str = "logits";

const RELU6_MIN: &str = "relu6_min";
const RELU6_MAX: &str = "relu6_max";

#[derive(Default)]
struct Builder {
    nodes: Vec<Node>,
    initializers: Vec<Tensor>,
    relu6_consts: bool,
}

impl Builder {
    fn node(&mut self, op: &str, name: &str, inputs: &[&str], attributes: Vec<Attribute>) -> String {
        let out = name.to_string();
        self.nodes.push(Node {
            op_type: op.into(),
            name: name.into(),
            inputs: inputs.iter().map(|s| s.to_string()).collect(),
            outputs: vec![out.clone()],
            attributes,
        });
        out
    }

    fn init(&mut self, name: String, dims: &[usize], data: Vec<f32>) -> String {
        self.initializers.push(Tensor { name: name.clone(), dims: dims.iter().map(|&d| d as i64).collect(), data });
        name
    }

    /// Conv with symmetric padding k/2, as mnas's `Conv2d`.
    fn conv(&mut self, name: &str, x: &str, p: ConvParams) -> String {
        let [o, _, k, _] = p.shape;
        let pad = (k / 2) as i64;
        let (k, s) = (k as i64, p.stride as i64);
        let w = self.init(format!("{name}.weight"), &p.shape, p.weight);
        let mut inputs = vec![x.to_string(), w];
        if let Some(b) = p.bias {
            inputs.push(self.init(format!("{name}.bias"), &[o], b));
        }
        let inputs: Vec<&str> = inputs.iter().map(String::as_str).collect();
        let attrs = vec![
            Attribute::ints("dilations", &[1, 1]),
            Attribute::int("group", p.groups as i64),
            Attribute::ints("kernel_shape", &[k, k]),
            Attribute::ints("pads", &[pad, pad, pad, pad]),
            Attribute::ints("strides", &[s, s]),
        ];
        self.node("Conv", name, &inputs, attrs)
    }

    /// ReLU, or ReLU6 as Clip with min/max inputs (opset >= 11).
    fn act(&mut self, name: &str, x: &str, act: Activation) -> String {
        match act {
            Activation::Relu => self.node("Relu", &format!("{name}.relu"), &[x], vec![]),
            Activation::Relu6 => {
                if !self.relu6_consts {
                    self.init(RELU6_MIN.into(), &[], vec![0.0]);
                    self.init(RELU6_MAX.into(), &[], vec![6.0]);
                    self.relu6_consts = true;
                }
                self.node("Clip", &format!("{name}.relu6"), &[x, RELU6_MIN, RELU6_MAX], vec![])
            }
        }
    }

    fn graph(self, name: &str) -> Graph {
        Graph { name: name.into(), nodes: self.nodes, initializers: self.initializers, ..Graph::default() }
    }

    fn conv_bn_act(&mut self, name: &str, x: &str, p: ConvParams, act: Option<Activation>) -> String {
        let y = self.conv(name, x, p);
        match act {
            Some(a) => self.act(name, &y, a),
            None => y,
        }
    }
}

fn missing(layer: &str, what: &str) -> ExportError {
    ExportError::Structure(format!("{layer}: the layer's spec needs a {what}, the model has none"))
}

/// timm's module names for (expansion, kxk, projection) by block type.
fn module_names(op: ConvOp) -> (&'static str, &'static str, &'static str) {
    match op {
        ConvOp::Conv => ("conv_pw", "conv", "conv_pw"),
        ConvOp::SepConv => ("conv_pw", "conv_dw", "conv_pw"),
        ConvOp::MbConv => ("conv_pw", "conv_dw", "conv_pwl"),
    }
}

fn layer<B: Backend>(g: &mut Builder, l: &SearchLayer<B>, x: &str) -> Result<String, ExportError> {
    let spec = &l.spec;
    let p = format!("blocks.{}.{}", spec.block, spec.index);
    let (exp_name, k_name, proj_name) = module_names(spec.op);
    let act = Some(l.act);

    let shortcut = match spec.residual {
        Residual::None => None,
        Residual::Identity => Some(x.to_string()),
        Residual::Pool { stride, project } => {
            let pooled = if stride > 1 {
                let s = i64::from(stride);
                let attrs = vec![
                    Attribute::int("ceil_mode", 1),
                    Attribute::int("count_include_pad", 0),
                    Attribute::ints("kernel_shape", &[s, s]),
                    Attribute::ints("pads", &[0, 0, 0, 0]),
                    Attribute::ints("strides", &[s, s]),
                ];
                g.node("AveragePool", &format!("{p}.skip.pool"), &[x], attrs)
            } else {
                x.to_string()
            };
            Some(match (project, &l.skip_conv, &l.skip_bn) {
                (true, Some(c), Some(b)) => {
                    let name = format!("{p}.skip.conv");
                    g.conv_bn_act(&name, &pooled, fold::conv_bn(c, b, &name)?, None)
                }
                (true, _, _) => return Err(missing(&p, "skip projection conv + BN")),
                (false, _, _) => pooled,
            })
        }
    };

    let mut y = x.to_string();
    if spec.has_expansion() {
        let (Some(c), Some(b)) = (&l.conv_exp, &l.bn_exp) else {
            return Err(missing(&p, "1x1 expansion conv + BN"));
        };
        let name = format!("{p}.{exp_name}");
        y = g.conv_bn_act(&name, &y, fold::conv_bn(c, b, &name)?, act);
    }
    let name = format!("{p}.{k_name}");
    y = g.conv_bn_act(&name, &y, fold::conv_bn(&l.conv_k, &l.bn_k, &name)?, act);

    match (&l.se, spec.se_channels > 0) {
        (Some(se), true) => {
            let n = format!("{p}.se");
            let pooled = g.node("GlobalAveragePool", &format!("{n}.pool"), &[&y], vec![]);
            let r = g.conv(
                &format!("{n}.conv_reduce"),
                &pooled,
                fold::plain(&se.conv_reduce, &format!("{n}.conv_reduce"))?,
            );
            let r = g.act(&format!("{n}.conv_reduce"), &r, l.act);
            let e = g.conv(&format!("{n}.conv_expand"), &r, fold::plain(&se.conv_expand, &format!("{n}.conv_expand"))?);
            let gate = g.node("Sigmoid", &format!("{n}.gate"), &[&e], vec![]);
            y = g.node("Mul", &format!("{n}.mul"), &[&y, &gate], vec![]);
        }
        (None, true) => return Err(missing(&p, "squeeze-and-excitation module")),
        (Some(_), false) => return Err(ExportError::Structure(format!("{p}: SE module present, the spec has none"))),
        (None, false) => {}
    }

    if spec.op != ConvOp::Conv {
        let (Some(c), Some(b)) = (&l.conv_proj, &l.bn_proj) else {
            return Err(missing(&p, "1x1 projection conv + BN"));
        };
        let name = format!("{p}.{proj_name}");
        y = g.conv_bn_act(&name, &y, fold::conv_bn(c, b, &name)?, None);
    }

    Ok(match shortcut {
        Some(s) => g.node("Add", &format!("{p}.add"), &[&y, &s], vec![]),
        None => y,
    })
}

/// The graph body: nodes and initializers from `input` to `logits` (inputs/outputs not set).
pub fn build<B: Backend>(model: &MnasNet<B>) -> Result<Graph, ExportError> {
    check_layers(model)?;
    let mut g = Builder::default();
    let mut y = stem(&mut g, model, INPUT)?;
    for l in &model.blocks {
        y = layer(&mut g, l, &y)?;
    }
    head(&mut g, model, &y)?;
    Ok(g.graph("mnasnet"))
}

/// One part of a network alone, so that it can be timed alone (the latency lookup table).
pub enum Part<'a, B: Backend> {
    /// Stem conv + BN + activation of the model.
    Stem(&'a MnasNet<B>),
    /// One searched layer, input `input` of its own shape.
    Layer(&'a SearchLayer<B>),
    /// Head conv + pool + classifier of the model, input `input` of the last layer's shape.
    Head(&'a MnasNet<B>),
}

/// The body of `part`'s graph and the name of its output.
pub fn build_part<B: Backend>(part: &Part<'_, B>) -> Result<(Graph, String), ExportError> {
    let mut g = Builder::default();
    let out = match part {
        Part::Stem(model) => {
            check_layers(model)?;
            stem(&mut g, model, INPUT)?
        }
        Part::Layer(l) => layer(&mut g, l, INPUT)?,
        Part::Head(model) => {
            check_layers(model)?;
            head(&mut g, model, INPUT)?;
            OUTPUT.to_string()
        }
    };
    Ok((g.graph("mnasnet part"), out))
}

fn check_layers<B: Backend>(model: &MnasNet<B>) -> Result<(), ExportError> {
    let arch = &model.arch;
    arch.validate()?;
    let specs = arch.layers();
    if specs.len() != model.blocks.len() || specs.iter().zip(&model.blocks).any(|(s, l)| *s != l.spec) {
        return Err(ExportError::Structure(
            "the model's layers do not match its architecture (was `arch` changed after the model was built?)".into(),
        ));
    }
    if let Some(l) = model.blocks.iter().find(|l| l.act != arch.activation) {
        return Err(ExportError::Structure(format!(
            "blocks.{}.{}: activation {} differs from the arch's {}",
            l.spec.block,
            l.spec.index,
            l.act.name(),
            arch.activation.name()
        )));
    }
    Ok(())
}

fn stem<B: Backend>(g: &mut Builder, model: &MnasNet<B>, x: &str) -> Result<String, ExportError> {
    let p = fold::conv_bn(&model.conv_stem, &model.bn1, "conv_stem")?;
    Ok(g.conv_bn_act("conv_stem", x, p, Some(model.arch.activation)))
}

/// Head conv, global pool and classifier, ending in [`OUTPUT`].
fn head<B: Backend>(g: &mut Builder, model: &MnasNet<B>, x: &str) -> Result<(), ExportError> {
    let arch = &model.arch;
    let y =
        g.conv_bn_act("conv_head", x, fold::conv_bn(&model.conv_head, &model.bn2, "conv_head")?, Some(arch.activation));
    let pooled = g.node("GlobalAveragePool", "global_pool", &[&y], vec![]);
    let flat = g.node("Flatten", "flatten", &[&pooled], vec![Attribute::int("axis", 1)]);
    let [classes, features] = model.classifier_weight.dims();
    let w = fold::values(model.classifier_weight.val(), "classifier.weight")?;
    let b = fold::values(model.classifier_bias.val(), "classifier.bias")?;
    if classes != arch.num_classes as usize || b.len() != classes || features != arch.head_channels as usize {
        return Err(ExportError::Structure(format!(
            "classifier is [{classes}, {features}] with {} biases; the arch needs [{}, {}]",
            b.len(),
            arch.num_classes,
            arch.head_channels
        )));
    }
    for (name, v) in [("classifier.weight", &w), ("classifier.bias", &b)] {
        if let Some(i) = v.iter().position(|x| !x.is_finite()) {
            return Err(ExportError::Tensor { tensor: name.into(), reason: format!("element {i} is {}", v[i]) });
        }
    }
    let w = g.init("classifier.weight".into(), &[classes, features], w);
    let b = g.init("classifier.bias".into(), &[classes], b);
    let attrs = vec![Attribute::float("alpha", 1.0), Attribute::float("beta", 1.0), Attribute::int("transB", 1)];
    g.nodes.push(Node {
        op_type: "Gemm".into(),
        name: "classifier".into(),
        inputs: vec![flat, w, b],
        outputs: vec![OUTPUT.into()],
        attributes: attrs,
    });
    Ok(())
}
