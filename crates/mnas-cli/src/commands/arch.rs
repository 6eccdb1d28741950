use anyhow::Result;
use clap::Subcommand;
use mnas_space::{count, lookup, MODEL_NAMES};

use crate::spec::{resolve, ArchOverrides};
use crate::table::{render, thousands};

#[derive(Subcommand)]
pub enum ArchCommand {
    /// Layer table of an architecture: shapes, params and MACs per layer, and totals.
    ///
    /// ARCH is a model name (mnasnet-a1, mnasnet_100, ... see `mnas arch list`), an arch JSON
    /// file, block strings in timm or TF grammar, e.g.
    /// "ds_r1_k3_s1_c16 ir_r2_k3_s2_e6_c24_se0.25 ir_r1_k5_s2_e6_c40", or the one-line form that
    /// stores, CSVs and reports print ("stem32|ds_r1_k3_s1_c16,...|head1280|relu|w1|c10|r224").
    Show {
        /// Model name, arch JSON file, block strings, or the one-line form outputs print.
        arch: String,
        #[command(flatten)]
        overrides: ArchOverrides,
        /// Print the arch and its counts as JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// The model zoo: every name `--arch` accepts, with params and MACs at 224x224.
    List,
}

pub fn run(cmd: ArchCommand) -> Result<()> {
    match cmd {
        ArchCommand::Show { arch, overrides, json } => show(&arch, &overrides, json),
        ArchCommand::List => list(),
    }
}

fn show(spec: &str, overrides: &ArchOverrides, json: bool) -> Result<()> {
    let arch = resolve(spec, overrides)?;
    let counts = count(&arch);
    if json {
        let out = serde_json::json!({
            "arch": arch,
            "canonical": arch.canonical(),
            "params": counts.params,
            "macs": counts.macs,
            "layers": counts.layers,
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
    }
    let title = arch.name.clone().unwrap_or_else(|| "custom".into());
    println!(
        "{title}: width {}, {}x{} input, {} classes, activation {}",
        arch.width,
        arch.resolution,
        arch.resolution,
        arch.num_classes,
        arch.activation.name()
    );
    println!("blocks: {}", arch.blocks.iter().map(|b| b.to_block_string()).collect::<Vec<_>>().join(" "));
    println!();
    let shape = |s: [u32; 3]| format!("{}x{}x{}", s[0], s[1], s[2]);
    let rows: Vec<Vec<String>> = counts
        .layers
        .iter()
        .map(|l| {
            vec![
                l.name.clone(),
                l.description.clone(),
                shape(l.in_shape),
                shape(l.out_shape),
                thousands(l.params),
                thousands(l.macs),
            ]
        })
        .collect();
    print!("{}", render(&["layer", "op", "input", "output", "params", "MACs"], &rows));
    println!("total: {} params, {} MACs", thousands(counts.params), thousands(counts.macs));
    Ok(())
}

fn list() -> Result<()> {
    let rows: Vec<Vec<String>> = MODEL_NAMES
        .iter()
        .map(|name| {
            let arch = lookup(name).expect("zoo names resolve");
            let c = count(&arch);
            vec![
                name.to_string(),
                arch.name.clone().unwrap_or_default(),
                format!("{}", arch.width),
                thousands(c.params),
                thousands(c.macs),
            ]
        })
        .collect();
    print!("{}", render(&["name", "timm model", "width", "params", "MACs@224"], &rows));
    Ok(())
}
