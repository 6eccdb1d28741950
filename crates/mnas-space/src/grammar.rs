//! Block-string grammars.
//!
//! Reads timm's `ir_r2_k3_s2_e6_c24_se0.25` and the TF reference code's
//! `r2_k3_s22_e6_i16_o24_se0.25`; always prints timm's form (the canonical one), extended with
//! `cn` skip flags and `_pool` for the pooling skip, which timm has no word for.

use crate::arch::{Activation, Arch, Block, ConvOp, SkipOp};
use crate::error::SpaceError;

fn fmt_ratio(r: f64) -> String {
    // `{}` on f64 prints the shortest string that round-trips, e.g. 0.25.
    format!("{r}")
}

impl Block {
    /// The canonical (timm-style) block string.
    pub fn to_block_string(&self) -> String {
        let mut s = match self.op {
            ConvOp::Conv => format!("cn_r{}_k{}_s{}_c{}", self.repeats, self.kernel, self.stride, self.out_channels),
            ConvOp::SepConv => format!("ds_r{}_k{}_s{}_c{}", self.repeats, self.kernel, self.stride, self.out_channels),
            ConvOp::MbConv => format!(
                "ir_r{}_k{}_s{}_e{}_c{}",
                self.repeats, self.kernel, self.stride, self.expand, self.out_channels
            ),
        };
        if self.se_ratio > 0.0 {
            s.push_str(&format!("_se{}", fmt_ratio(self.se_ratio)));
        }
        // timm's default skip: identity for ds/ir, none for cn.
        match (self.op, self.skip) {
            (_, SkipOp::Pool) => s.push_str("_pool"),
            (ConvOp::Conv, SkipOp::Identity) => s.push_str("_skip"),
            (ConvOp::Conv, SkipOp::None) => {}
            (_, SkipOp::None) => s.push_str("_noskip"),
            (_, SkipOp::Identity) => {}
        }
        s
    }

    /// Parses one block string in either grammar and validates it.
    pub fn parse(text: &str) -> Result<Block, SpaceError> {
        parse_block(text).map_err(|reason| SpaceError::BlockString { input: text.to_string(), reason })
    }
}

fn number<T: std::str::FromStr>(key: &str, value: &str) -> Result<T, String> {
    value.parse::<T>().map_err(|_| format!("`{key}{value}`: `{value}` is not a valid number for `{key}`"))
}

fn parse_block(text: &str) -> Result<Block, String> {
    let text = text.trim();
    if text.is_empty() {
        return Err("empty block string".into());
    }
    let mut parts = text.split('_').peekable();
    let first = parts.peek().copied().unwrap_or_default();
    let explicit_op = match first {
        "ir" => Some(ConvOp::MbConv),
        "ds" | "dsa" => Some(ConvOp::SepConv),
        "cn" => Some(ConvOp::Conv),
        "er" | "uir" | "mqa" | "mha" => {
            return Err(format!("block type `{first}` is not supported (use ir, ds or cn)"));
        }
        _ if first.starts_with('r') => None, // TF grammar: no type word
        _ => {
            return Err(format!(
                "unknown block type `{first}` (expected ir, ds, cn, or a TF string starting with r<repeats>)"
            ));
        }
    };
    if explicit_op.is_some() {
        parts.next();
    }

    let (mut repeats, mut kernel, mut stride, mut expand, mut out, mut input) = (None, None, None, None, None, None);
    let mut se_ratio = 0.0;
    let mut skip_flag: Option<SkipOp> = None;
    for part in parts {
        let set_once = |slot: &mut Option<u32>, key: &str, value: &str| -> Result<(), String> {
            if slot.is_some() {
                return Err(format!("`{key}` given twice"));
            }
            *slot = Some(number::<u32>(key, value)?);
            Ok(())
        };
        match part {
            "noskip" => skip_flag = Some(SkipOp::None),
            "skip" => skip_flag = Some(SkipOp::Identity),
            "pool" => skip_flag = Some(SkipOp::Pool),
            "" => return Err("empty field (double underscore?)".into()),
            _ if part.starts_with("se") => {
                se_ratio = number::<f64>("se", &part[2..])?;
            }
            _ if part.starts_with('s') => {
                let v = &part[1..];
                // TF writes the stride per axis: s22, s11.
                let v = if v.len() == 2 && v.chars().all(|c| c.is_ascii_digit()) {
                    let (a, b) = v.split_at(1);
                    if a != b {
                        return Err(format!("`s{v}`: only square strides are supported"));
                    }
                    a
                } else {
                    v
                };
                set_once(&mut stride, "s", v)?;
            }
            _ => {
                // Every remaining key is one ASCII letter followed by its value.
                let split = part.chars().next().map(char::len_utf8).unwrap_or(0);
                let (key, value) = part.split_at(split);
                match key {
                    "r" => set_once(&mut repeats, "r", value)?,
                    "k" => set_once(&mut kernel, "k", value)?,
                    "e" => {
                        let e = number::<f64>("e", value)?;
                        if e.fract() != 0.0 {
                            return Err(format!("`e{value}`: only whole expansion ratios are supported"));
                        }
                        if expand.is_some() {
                            return Err("`e` given twice".into());
                        }
                        expand = Some(e as u32);
                    }
                    "c" | "o" => set_once(&mut out, key, value)?,
                    "i" => set_once(&mut input, "i", value)?,
                    _ => {
                        return Err(format!(
                            "unknown field `{part}` (expected r, k, s, e, c/o, i, se, skip, noskip or pool)"
                        ))
                    }
                }
            }
        }
    }
    let repeats = repeats.ok_or("missing repeats `r<N>`")?;
    let kernel = kernel.ok_or("missing kernel size `k<N>`")?;
    let stride = stride.ok_or("missing stride `s<N>`")?;
    let out_channels = out.ok_or("missing output channels `c<N>` (timm) or `o<N>` (TF)")?;
    let op = match explicit_op {
        Some(op) => op,
        // The TF code builds an expansion-free MBConv (= depthwise separable) at e1.
        None => match expand {
            Some(1) | None => ConvOp::SepConv,
            Some(_) => ConvOp::MbConv,
        },
    };
    let expand = match op {
        ConvOp::MbConv => expand.ok_or("MBConv (`ir`) needs an expansion ratio `e<N>`")?,
        _ => expand.unwrap_or(1),
    };
    let skip = skip_flag.unwrap_or(match op {
        ConvOp::Conv => SkipOp::None,
        _ => SkipOp::Identity,
    });
    let block = Block { op, kernel, stride, expand, se_ratio, skip, out_channels, repeats };
    block.validate()?;
    Ok(block)
}

/// Builds an Arch from a list of block strings separated by commas or whitespace. Items `stem<N>`
/// and `head<N>` set the stem and head widths (default 32 and 1280).
pub fn parse_block_list(text: &str) -> Result<Arch, SpaceError> {
    let mut blocks = Vec::new();
    let mut stem = 32;
    let mut head = 1280;
    for item in text.split(|c: char| c == ',' || c.is_whitespace()).filter(|s| !s.is_empty()) {
        if let Some(v) = item.strip_prefix("stem").filter(|v| v.chars().all(|c| c.is_ascii_digit())) {
            stem = v
                .parse()
                .map_err(|_| SpaceError::BlockString { input: item.into(), reason: "bad stem width".into() })?;
        } else if let Some(v) = item.strip_prefix("head").filter(|v| v.chars().all(|c| c.is_ascii_digit())) {
            head = v
                .parse()
                .map_err(|_| SpaceError::BlockString { input: item.into(), reason: "bad head width".into() })?;
        } else {
            blocks.push(Block::parse(item)?);
        }
    }
    if blocks.is_empty() {
        return Err(SpaceError::BlockString { input: text.into(), reason: "no blocks found".into() });
    }
    let arch = Arch {
        name: None,
        stem_channels: stem,
        blocks,
        head_channels: head,
        num_classes: 1000,
        resolution: 224,
        width: 1.0,
        activation: Activation::Relu,
        dropout: 0.2,
    };
    arch.validate()?;
    Ok(arch)
}

/// Reads the one-line form that [`Arch::canonical`] prints (and that stores, CSVs and reports
/// show): `stem32|ir_r1_k3_s1_e6_c16,...|head1280|relu|w1|c10|r224`, so that an arch copied from
/// any output can be given back as input.
pub fn parse_canonical(text: &str) -> Result<Arch, SpaceError> {
    let bad = |reason: String| SpaceError::BlockString { input: text.into(), reason };
    let fields: Vec<&str> = text.trim().split('|').collect();
    let [stem, blocks, head, activation, width, classes, resolution] = fields[..] else {
        return Err(bad(format!(
            "the one-line form has 7 fields separated by `|` (stem|blocks|head|activation|w|c|r), found {}",
            fields.len()
        )));
    };
    let number = |field: &str, prefix: &str, what: &str| -> Result<u32, SpaceError> {
        field
            .strip_prefix(prefix)
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| bad(format!("expected {what} as `{prefix}<N>`, found `{field}`")))
    };
    let width: f64 = width
        .strip_prefix('w')
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| bad(format!("expected the width multiplier as `w<X>`, found `{width}`")))?;
    let activation = match activation {
        "relu" => Activation::Relu,
        "relu6" => Activation::Relu6,
        other => return Err(bad(format!("unknown activation `{other}` (relu or relu6)"))),
    };
    let blocks = blocks.split(',').filter(|b| !b.is_empty()).map(Block::parse).collect::<Result<Vec<_>, _>>()?;
    if blocks.is_empty() {
        return Err(bad("no blocks found".into()));
    }
    let arch = Arch {
        name: None,
        stem_channels: number(stem, "stem", "the stem width")?,
        blocks,
        head_channels: number(head, "head", "the head width")?,
        num_classes: number(classes, "c", "the class count")?,
        resolution: number(resolution, "r", "the resolution")?,
        width,
        activation,
        dropout: 0.2,
    };
    arch.validate()?;
    Ok(arch)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timm_and_tf_grammars_agree() {
        let timm = Block::parse("ir_r2_k3_s2_e6_c24_se0.25").unwrap();
        let tf = Block::parse("r2_k3_s22_e6_i16_o24_se0.25").unwrap();
        assert_eq!(timm, tf);
        assert_eq!(timm.to_block_string(), "ir_r2_k3_s2_e6_c24_se0.25");
        let ds = Block::parse("r1_k3_s11_e1_i32_o16_noskip").unwrap();
        assert_eq!(ds.to_block_string(), "ds_r1_k3_s1_c16_noskip");
        assert_eq!(Block::parse("ds_r1_k3_s1_e1_c16_noskip").unwrap(), ds);
    }

    #[test]
    fn canonical_form_round_trips() {
        for s in [
            "cn_r1_k3_s1_c32",
            "cn_r2_k5_s2_c40_se0.25_skip",
            "cn_r1_k3_s1_c32_pool",
            "ds_r1_k5_s2_c24_pool",
            "ir_r3_k5_s2_e3_c40_se0.25",
            "ir_r1_k3_s1_e6_c320_noskip",
        ] {
            let b = Block::parse(s).unwrap();
            assert_eq!(b.to_block_string(), s);
        }
    }

    #[test]
    fn bad_block_strings_name_the_problem() {
        let cases = [
            ("ir_r2_k4_s2_e6_c24", "kernel"),
            ("ir_r0_k3_s2_e6_c24", "repeats"),
            ("ir_r2_k3_s2_c24", "expansion"),
            ("xx_r2_k3_s2_e6_c24", "unknown block type"),
            ("ir_r2_k3_s2_e6", "output channels"),
            ("ir_r2_k3_s3_e6_c24", "stride"),
            ("ir_rX_k3_s2_e6_c24", "not a valid number"),
            ("ir_r2_k3_s2_e6_c24_zz9", "unknown field"),
            ("ir_r2_r3_k3_s2_e6_c24", "twice"),
            ("ir_r2_k3_s2_e6_c24_se2", "SE ratio"),
        ];
        for (input, needle) in cases {
            let err = Block::parse(input).unwrap_err().to_string();
            assert!(err.contains(needle), "{input}: {err}");
            assert!(err.contains(input), "error should quote the input: {err}");
        }
    }

    #[test]
    fn the_one_line_form_reads_back() {
        for name in ["mnasnet-a1", "mobilenetv2", "mnasnet-small"] {
            let mut arch = crate::lookup(name).unwrap();
            arch.resolution = 96;
            arch.num_classes = 10;
            arch.width = 0.75;
            let back = parse_canonical(&arch.canonical()).unwrap();
            assert_eq!(back.canonical(), arch.canonical(), "{name}");
            assert_eq!((back.resolution, back.num_classes, back.activation), (96, 10, arch.activation));
        }
        let ok = "stem32|ds_r1_k3_s1_c16,ir_r2_k3_s2_e6_c24_se0.25|head1280|relu|w1|c10|r224";
        assert_eq!(parse_canonical(ok).unwrap().canonical(), ok);
        for (input, needle) in [
            ("stem32|ds_r1_k3_s1_c16|head1280|relu|w1|c10", "7 fields"),
            ("stemX|ds_r1_k3_s1_c16|head1280|relu|w1|c10|r224", "stem width"),
            ("stem32|ds_r1_k3_s1_c16|head1280|gelu|w1|c10|r224", "activation"),
            ("stem32|ds_r1_k3_s1_c16|head1280|relu|wide|c10|r224", "width"),
            ("stem32|ds_r1_k3_s1_c16|head1280|relu|w1|c10|r0", "resolution"),
            ("stem32|ds_r1_k4_s1_c16|head1280|relu|w1|c10|r224", "kernel"),
            ("stem32||head1280|relu|w1|c10|r224", "no blocks"),
        ] {
            let err = parse_canonical(input).map(|a| a.canonical()).unwrap_err().to_string();
            assert!(err.contains(needle), "{input}: {err}");
        }
    }

    #[test]
    fn block_list_reads_stem_and_head() {
        let a = parse_block_list("stem16, ds_r1_k3_s1_c16 ir_r2_k3_s2_e6_c24 head960").unwrap();
        assert_eq!(a.stem_channels, 16);
        assert_eq!(a.head_channels, 960);
        assert_eq!(a.blocks.len(), 2);
        assert!(parse_block_list("  ,, ").is_err());
    }
}
