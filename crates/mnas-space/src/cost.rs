//! Analytic parameter and MAC counts (convolutions and linear layers, batch 1), matching timm's
//! trainable-parameter count and the usual conv+linear MAC convention exactly.

use serde::Serialize;

use crate::arch::{Arch, ConvOp, Layer, Residual};

/// Cost of one row of the layer table.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LayerCost {
    pub name: String,
    pub description: String,
    pub in_shape: [u32; 3],
    pub out_shape: [u32; 3],
    pub params: u64,
    pub macs: u64,
}

/// Totals plus the per-layer table.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Counts {
    pub params: u64,
    pub macs: u64,
    pub layers: Vec<LayerCost>,
}

fn conv(k: u32, cin: u32, cout: u32, groups: u32, out_size: u32) -> (u64, u64) {
    let params = (k * k) as u64 * (cin / groups) as u64 * cout as u64;
    (params, params * out_size as u64 * out_size as u64)
}

fn bn(c: u32) -> u64 {
    2 * c as u64
}

/// Parameters and MACs of one searched layer.
pub fn layer_cost(layer: &Layer) -> (u64, u64) {
    let (mut p, mut m) = (0u64, 0u64);
    let mut add = |(dp, dm): (u64, u64), bn_channels: u32| {
        p += dp + bn(bn_channels);
        m += dm;
    };
    let (cin, mid, cout, k) = (layer.in_channels, layer.mid_channels, layer.out_channels, layer.kernel);
    match layer.op {
        ConvOp::Conv => add(conv(k, cin, cout, 1, layer.out_size), cout),
        ConvOp::SepConv => {
            add(conv(k, cin, cin, cin, layer.out_size), cin);
            add(conv(1, cin, cout, 1, layer.out_size), cout);
        }
        ConvOp::MbConv => {
            if layer.has_expansion() {
                add(conv(1, cin, mid, 1, layer.in_size), mid);
            }
            add(conv(k, mid, mid, mid, layer.out_size), mid);
            add(conv(1, mid, cout, 1, layer.out_size), cout);
        }
    }
    if layer.se_channels > 0 {
        let se = layer.se_channels as u64;
        let gated = mid as u64;
        p += gated * se + se + se * gated + gated;
        m += 2 * gated * se;
    }
    if let Residual::Pool { project: true, .. } = layer.residual {
        let (dp, dm) = conv(1, cin, cout, 1, layer.out_size);
        p += dp + bn(cout);
        m += dm;
    }
    (p, m)
}

fn describe(layer: &Layer) -> String {
    let op = match layer.op {
        ConvOp::Conv => format!("conv k{}", layer.kernel),
        ConvOp::SepConv => format!("sepconv k{}", layer.kernel),
        ConvOp::MbConv => format!("mbconv{} k{}", layer.expand, layer.kernel),
    };
    let se = if layer.se_channels > 0 { format!(" se{}", layer.se_channels) } else { String::new() };
    let skip = match layer.residual {
        Residual::None => "",
        Residual::Identity => " +id",
        Residual::Pool { project: true, .. } => " +pool+1x1",
        Residual::Pool { project: false, .. } => " +pool",
    };
    format!("{op} s{}{se}{skip}", layer.stride)
}

/// Counts every layer of `arch` at its own resolution.
pub fn count(arch: &Arch) -> Counts {
    let mut rows = Vec::new();
    let r = arch.resolution;
    let stem = arch.stem_out();
    let s = arch.stem_out_size();
    let (sp, sm) = conv(3, 3, stem, 1, s);
    rows.push(LayerCost {
        name: "stem".into(),
        description: "conv k3 s2".into(),
        in_shape: [3, r, r],
        out_shape: [stem, s, s],
        params: sp + bn(stem),
        macs: sm,
    });
    let layers = arch.layers();
    for layer in &layers {
        let (params, macs) = layer_cost(layer);
        rows.push(LayerCost {
            name: format!("blocks.{}.{}", layer.block, layer.index),
            description: describe(layer),
            in_shape: [layer.in_channels, layer.in_size, layer.in_size],
            out_shape: [layer.out_channels, layer.out_size, layer.out_size],
            params,
            macs,
        });
    }
    let (hin, hs) = layers.last().map(|l| (l.out_channels, l.out_size)).unwrap_or((stem, s));
    let head = arch.head_channels;
    let (hp, hm) = conv(1, hin, head, 1, hs);
    rows.push(LayerCost {
        name: "head".into(),
        description: "conv k1".into(),
        in_shape: [hin, hs, hs],
        out_shape: [head, hs, hs],
        params: hp + bn(head),
        macs: hm,
    });
    let classes = arch.num_classes as u64;
    rows.push(LayerCost {
        name: "classifier".into(),
        description: "avgpool + linear".into(),
        in_shape: [head, hs, hs],
        out_shape: [arch.num_classes, 1, 1],
        params: head as u64 * classes + classes,
        macs: head as u64 * classes,
    });
    Counts { params: rows.iter().map(|r| r.params).sum(), macs: rows.iter().map(|r| r.macs).sum(), layers: rows }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::zoo::lookup;

    /// Exact counts from timm 1.0.31 (trainable parameters; conv + linear MACs at 224, batch 1).
    #[test]
    fn counts_match_timm_exactly() {
        for (name, params, macs) in [
            ("mnasnet-a1", 3_887_038, 311_579_072),
            ("mnasnet-b1", 4_383_312, 314_415_872),
            ("mnasnet-small", 2_030_264, 68_339_184),
            ("semnasnet_075", 2_912_278, 223_448_480),
            ("mnasnet_140", 7_115_728, 588_799_408),
        ] {
            let c = count(&lookup(name).unwrap());
            assert_eq!((c.params, c.macs), (params, macs), "{name}");
        }
    }
}
