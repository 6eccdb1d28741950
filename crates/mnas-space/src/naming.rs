//! timm's state-dict names for the modules of a network, shared by every crate that reads or
//! writes weights (the burn model, the CPU engine), so that files stay interchangeable.

use crate::arch::{ConvOp, Layer};

/// Module names inside one searched layer `blocks.{block}.{index}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LayerNames {
    /// MBConv's 1x1 expansion and its BN (when the layer expands).
    pub expand_conv: &'static str,
    pub expand_bn: &'static str,
    /// The kxk convolution (depthwise for sepconv/MBConv) and its BN.
    pub kxk_conv: &'static str,
    pub kxk_bn: &'static str,
    pub se: &'static str,
    /// The 1x1 projection and its BN (sepconv/MBConv only).
    pub project_conv: &'static str,
    pub project_bn: &'static str,
    /// The pooling skip's 1x1 conv and BN (when it changes the channel count).
    pub skip_conv: &'static str,
    pub skip_bn: &'static str,
}

/// timm's names per block type: cn (conv, bn1), ds (conv_dw, bn1, se, conv_pw, bn2),
/// ir (conv_pw, bn1, conv_dw, bn2, se, conv_pwl, bn3).
pub fn layer_names(op: ConvOp) -> LayerNames {
    let (kxk_conv, kxk_bn, project_conv, project_bn) = match op {
        ConvOp::Conv => ("conv", "bn1", "", ""),
        ConvOp::SepConv => ("conv_dw", "bn1", "conv_pw", "bn2"),
        ConvOp::MbConv => ("conv_dw", "bn2", "conv_pwl", "bn3"),
    };
    LayerNames {
        expand_conv: "conv_pw",
        expand_bn: "bn1",
        kxk_conv,
        kxk_bn,
        se: "se",
        project_conv,
        project_bn,
        skip_conv: "skip.conv",
        skip_bn: "skip.bn",
    }
}

/// The prefix of a layer's tensors.
pub fn layer_prefix(layer: &Layer) -> String {
    format!("blocks.{}.{}", layer.block, layer.index)
}

pub const STEM_CONV: &str = "conv_stem";
pub const STEM_BN: &str = "bn1";
pub const HEAD_CONV: &str = "conv_head";
pub const HEAD_BN: &str = "bn2";
pub const CLASSIFIER: &str = "classifier";
