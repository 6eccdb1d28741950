//! Turning what a user types for `--arch` into an Arch: a zoo name, a JSON file, block strings, or
//! the one-line form every output prints.

use std::path::Path;

use anyhow::{bail, Context, Result};
use clap::Args;
use mnas_space::{lookup, parse_block_list, parse_canonical, Arch, MODEL_NAMES};

/// Options that adjust any architecture given on the command line.
#[derive(Args, Debug, Clone, Default)]
pub struct ArchOverrides {
    /// Width (channel) multiplier, applied with timm's round_channels (e.g. 0.75, 1.4).
    #[arg(long, allow_negative_numbers = true)]
    pub width: Option<f64>,
    /// Square input resolution in pixels.
    #[arg(long)]
    pub resolution: Option<u32>,
    /// Number of output classes.
    #[arg(long)]
    pub classes: Option<u32>,
}

/// Resolves NAME | FILE | BLOCKSTRINGS | the one-line form outputs print, then applies the
/// overrides and validates.
pub fn resolve(spec: &str, overrides: &ArchOverrides) -> Result<Arch> {
    let mut arch = if let Ok(arch) = lookup(spec) {
        arch
    } else if Path::new(spec).is_file() {
        let text = std::fs::read_to_string(spec).with_context(|| format!("cannot read {spec}"))?;
        Arch::from_json(&text).with_context(|| spec.to_string())?
    } else if spec.starts_with("stem") && spec.contains('|') {
        parse_canonical(spec)?
    } else if looks_like_block_strings(spec) {
        parse_block_list(spec)?
    } else if spec.ends_with(".json") {
        bail!("{spec}: no such file");
    } else {
        bail!(
            "unknown model `{spec}`: not a model name, an arch JSON file, block strings or the one-line form \
             (stem32|...|r224); known models: {}",
            MODEL_NAMES.join(", ")
        );
    };
    if let Some(w) = overrides.width {
        arch.width = w;
    }
    if let Some(r) = overrides.resolution {
        arch.resolution = r;
    }
    if let Some(c) = overrides.classes {
        arch.num_classes = c;
    }
    arch.validate()?;
    Ok(arch)
}

/// Block strings start with a block type (`ir_`, `ds_`, `cn_`, ...) or, in the TF grammar, `r<N>_`.
fn looks_like_block_strings(spec: &str) -> bool {
    let is_width = |s: &str| {
        ["stem", "head"]
            .iter()
            .any(|p| s.strip_prefix(p).is_some_and(|v| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit())))
    };
    let first =
        spec.split(|c: char| c == ',' || c.is_whitespace()).find(|s| !s.is_empty() && !is_width(s)).unwrap_or_default();
    let head = first.split('_').next().unwrap_or_default();
    first.contains('_')
        && (matches!(head, "ir" | "ds" | "dsa" | "cn" | "er" | "uir")
            || (head.len() > 1 && head.starts_with('r') && head[1..].chars().all(|c| c.is_ascii_digit())))
}
