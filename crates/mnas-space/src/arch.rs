//! The architecture description every other crate speaks: plain serde data, no framework types.
//!
//! Channel counts in [`Block`] and [`Arch`] are *base* counts; the width multiplier is applied by
//! [`Arch::layers`] with timm's `round_channels`, so that `mnasnet_075` and `mnasnet_100` share one
//! block list exactly as they do in timm.

use serde::{Deserialize, Serialize};

use crate::error::SpaceError;

/// The layer type a block repeats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConvOp {
    /// Regular kxk convolution + BN + ReLU (timm `cn`).
    Conv,
    /// Depthwise-separable: kxk depthwise + BN + ReLU, optional SE, 1x1 + BN (timm `ds`).
    SepConv,
    /// Inverted bottleneck: 1x1 expand + BN + ReLU, kxk depthwise + BN + ReLU, optional SE,
    /// 1x1 project + BN (timm `ir`). The expansion ratio lives in [`Block::expand`].
    MbConv,
}

/// What a layer adds back to its output.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SkipOp {
    /// No residual connection.
    None,
    /// Identity residual; it only exists where input and output shapes match (stride 1, same
    /// channels), elsewhere the layer has no residual, as in timm.
    Identity,
    /// [our choice] A residual that also crosses shape changes: AvgPool(stride) on the input and,
    /// when the channel count changes, a 1x1 conv + BN. Equal to identity where shapes match.
    Pool,
}

/// Activation used after every BN that has one (and inside SE).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Activation {
    #[default]
    Relu,
    /// MobileNetV2's clipped ReLU.
    Relu6,
}

impl Activation {
    pub fn name(self) -> &'static str {
        match self {
            Activation::Relu => "relu",
            Activation::Relu6 => "relu6",
        }
    }
}

/// One searched block: a layer repeated `repeats` times; only the first repeat has `stride`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Block {
    pub op: ConvOp,
    pub kernel: u32,
    pub stride: u32,
    /// MBConv expansion ratio; 1 for the other ops.
    pub expand: u32,
    /// Squeeze-and-excitation ratio, relative to the block input channels; 0 = no SE.
    pub se_ratio: f64,
    pub skip: SkipOp,
    /// Output channels before the width multiplier.
    pub out_channels: u32,
    pub repeats: u32,
}

fn default_head() -> u32 {
    1280
}
fn default_classes() -> u32 {
    1000
}
fn default_resolution() -> u32 {
    224
}
fn default_width() -> f64 {
    1.0
}
fn default_dropout() -> f64 {
    0.2
}

/// A whole network: stem conv 3x3 s2, the blocks, a 1x1 head conv, global average pool, dropout,
/// and a linear classifier.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Arch {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Stem output channels before the width multiplier.
    pub stem_channels: u32,
    pub blocks: Vec<Block>,
    /// Head conv output channels (never scaled by the width multiplier, as in timm's MnasNets).
    #[serde(default = "default_head")]
    pub head_channels: u32,
    #[serde(default = "default_classes")]
    pub num_classes: u32,
    /// Square input resolution the model is built and counted for.
    #[serde(default = "default_resolution")]
    pub resolution: u32,
    /// Width (channel) multiplier, applied with timm's `round_channels`.
    #[serde(default = "default_width")]
    pub width: f64,
    #[serde(default)]
    pub activation: Activation,
    /// Dropout before the classifier (training only).
    #[serde(default = "default_dropout")]
    pub dropout: f64,
}

/// timm's `make_divisible`: round to the nearest multiple of `divisor` (at least `divisor`), and
/// go one step up when rounding lost more than 10%.
pub fn make_divisible(value: f64, divisor: u32) -> u32 {
    let d = divisor as f64;
    let mut v = (((value + d / 2.0) as u64) / divisor as u64 * divisor as u64).max(divisor as u64);
    if (v as f64) < 0.9 * value {
        v += divisor as u64;
    }
    v as u32
}

/// timm's `round_channels(channels, multiplier, divisor=8)`.
pub fn round_channels(channels: u32, multiplier: f64) -> u32 {
    if multiplier == 1.0 {
        return channels;
    }
    make_divisible(channels as f64 * multiplier, 8)
}

/// Output size of a kxk convolution with symmetric padding k/2.
pub fn conv_out(size: u32, kernel: u32, stride: u32) -> u32 {
    (size + 2 * (kernel / 2) - kernel) / stride + 1
}

/// The residual a concrete layer ends up with once shapes are known.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Residual {
    None,
    Identity,
    /// AvgPool(kernel = stride, ceil mode) on the input, then an optional 1x1 conv + BN.
    Pool {
        stride: u32,
        project: bool,
    },
}

/// One concrete layer with every size resolved: what the model builder and the cost counter use.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Layer {
    pub block: usize,
    pub index: usize,
    pub op: ConvOp,
    pub kernel: u32,
    pub stride: u32,
    pub expand: u32,
    pub in_channels: u32,
    /// Channels of the depthwise stage (MBConv after expansion; the input for sepconv; the output for conv).
    pub mid_channels: u32,
    pub out_channels: u32,
    /// SE reduced channels; 0 = no SE.
    pub se_channels: u32,
    pub residual: Residual,
    pub in_size: u32,
    pub out_size: u32,
}

impl Layer {
    /// Whether the MBConv 1x1 expansion conv exists (omitted at expansion 1, as in the TF code).
    pub fn has_expansion(&self) -> bool {
        self.op == ConvOp::MbConv && self.expand > 1
    }
}

impl Arch {
    pub fn stem_out(&self) -> u32 {
        round_channels(self.stem_channels, self.width)
    }

    pub fn block_out(&self, block: &Block) -> u32 {
        round_channels(block.out_channels, self.width)
    }

    /// Spatial size after the stride-2 stem.
    pub fn stem_out_size(&self) -> u32 {
        conv_out(self.resolution, 3, 2)
    }

    /// Channels and spatial size of the head's input: the last layer's output (the stem's when
    /// there are no layers).
    pub fn head_input(&self) -> (u32, u32) {
        self.head_input_after(&self.layers())
    }

    /// [`head_input`](Self::head_input) given `self.layers()` already built (a hot path need
    /// not build them twice).
    pub fn head_input_after(&self, layers: &[Layer]) -> (u32, u32) {
        layers.last().map_or((self.stem_out(), self.stem_out_size()), |l| (l.out_channels, l.out_size))
    }

    /// Checks every field a user can get wrong; the error names the field.
    pub fn validate(&self) -> Result<(), SpaceError> {
        let bad = |field: String, reason: String| Err(SpaceError::InvalidArch { field, reason });
        if !(self.width.is_finite() && self.width > 0.0) {
            return bad("width".into(), format!("must be > 0, got {}", self.width));
        }
        if self.width > 16.0 {
            return bad("width".into(), format!("must be <= 16, got {}", self.width));
        }
        if self.resolution == 0 {
            return bad("resolution".into(), "must be > 0".into());
        }
        if self.resolution > 4096 {
            return bad("resolution".into(), format!("must be <= 4096, got {}", self.resolution));
        }
        if self.stem_channels == 0 {
            return bad("stem_channels".into(), "must be > 0".into());
        }
        if self.head_channels == 0 {
            return bad("head_channels".into(), "must be > 0".into());
        }
        if self.num_classes == 0 {
            return bad("num_classes".into(), "must be > 0".into());
        }
        if !(0.0..1.0).contains(&self.dropout) {
            return bad("dropout".into(), format!("must be in [0, 1), got {}", self.dropout));
        }
        if self.blocks.is_empty() {
            return bad("blocks".into(), "an architecture needs at least one block".into());
        }
        for (i, b) in self.blocks.iter().enumerate() {
            b.validate().map_err(|reason| SpaceError::InvalidArch { field: format!("blocks[{i}]"), reason })?;
        }
        Ok(())
    }

    /// Every layer with its sizes resolved, in execution order.
    pub fn layers(&self) -> Vec<Layer> {
        let mut layers = Vec::new();
        let mut in_ch = self.stem_out();
        let mut size = self.stem_out_size();
        for (bi, block) in self.blocks.iter().enumerate() {
            let out_ch = self.block_out(block);
            for li in 0..block.repeats as usize {
                let stride = if li == 0 { block.stride } else { 1 };
                let out_size = conv_out(size, block.kernel, stride);
                let mid = match block.op {
                    ConvOp::Conv => out_ch,
                    ConvOp::SepConv => in_ch,
                    ConvOp::MbConv if block.expand == 1 => in_ch,
                    // timm: make_divisible(in_chs * exp_ratio)
                    ConvOp::MbConv => make_divisible(in_ch as f64 * block.expand as f64, 8),
                };
                let se_channels = if block.se_ratio > 0.0 {
                    // timm: round(mid * (se_ratio / exp_ratio)) with Python's round-half-even.
                    let exp = if block.op == ConvOp::MbConv { block.expand as f64 } else { 1.0 };
                    let base = if block.op == ConvOp::Conv { out_ch } else { mid };
                    ((base as f64 * (block.se_ratio / exp)).round_ties_even() as u32).max(1)
                } else {
                    0
                };
                let same_shape = stride == 1 && in_ch == out_ch;
                let residual = match block.skip {
                    SkipOp::None => Residual::None,
                    SkipOp::Identity if same_shape => Residual::Identity,
                    SkipOp::Identity => Residual::None,
                    SkipOp::Pool if same_shape => Residual::Identity,
                    SkipOp::Pool => Residual::Pool { stride, project: in_ch != out_ch },
                };
                layers.push(Layer {
                    block: bi,
                    index: li,
                    op: block.op,
                    kernel: block.kernel,
                    stride,
                    expand: block.expand,
                    in_channels: in_ch,
                    mid_channels: mid,
                    out_channels: out_ch,
                    se_channels,
                    residual,
                    in_size: size,
                    out_size,
                });
                in_ch = out_ch;
                size = out_size;
            }
        }
        layers
    }

    /// Channels entering the head conv.
    pub fn head_in(&self) -> u32 {
        self.blocks.last().map(|b| self.block_out(b)).unwrap_or_else(|| self.stem_out())
    }

    /// One line that identifies the network (not its name): equal strings, equal models.
    pub fn canonical(&self) -> String {
        let blocks: Vec<String> = self.blocks.iter().map(|b| b.to_block_string()).collect();
        format!(
            "stem{}|{}|head{}|{}|w{}|c{}|r{}",
            self.stem_channels,
            blocks.join(","),
            self.head_channels,
            self.activation.name(),
            self.width,
            self.num_classes,
            self.resolution
        )
    }

    /// Reads an Arch from JSON text and validates it.
    pub fn from_json(text: &str) -> Result<Arch, SpaceError> {
        let arch: Arch = serde_json::from_str(text).map_err(|e| SpaceError::Json(e.to_string()))?;
        arch.validate()?;
        Ok(arch)
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("an Arch always serialises")
    }
}

impl Block {
    pub fn validate(&self) -> Result<(), String> {
        if self.kernel == 0 || self.kernel.is_multiple_of(2) || self.kernel > 11 {
            return Err(format!(
                "kernel must be odd and between 1 and 11 (symmetric padding k/2), got {}",
                self.kernel
            ));
        }
        if !(self.stride == 1 || self.stride == 2) {
            return Err(format!("stride must be 1 or 2, got {}", self.stride));
        }
        if self.repeats == 0 {
            return Err("repeats must be at least 1, got 0".into());
        }
        if self.repeats > 64 {
            return Err(format!("repeats must be at most 64, got {}", self.repeats));
        }
        if self.out_channels == 0 {
            return Err("output channels must be > 0".into());
        }
        if self.out_channels > 16384 {
            return Err(format!("output channels must be <= 16384, got {}", self.out_channels));
        }
        if self.expand == 0 || self.expand > 16 {
            return Err(format!("expansion must be between 1 and 16, got {}", self.expand));
        }
        if self.op != ConvOp::MbConv && self.expand != 1 {
            return Err(format!("only MBConv blocks have an expansion ratio, got e{}", self.expand));
        }
        if !(self.se_ratio.is_finite() && (0.0..=1.0).contains(&self.se_ratio)) {
            return Err(format!("SE ratio must be in [0, 1], got {}", self.se_ratio));
        }
        Ok(())
    }
}
