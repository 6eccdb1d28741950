use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Subcommand;
use mnas_model::backend::Cpu;
use mnas_model::{weights, MnasNet};

use crate::spec::{resolve, ArchOverrides};
use crate::table::thousands;

#[derive(Subcommand)]
pub enum WeightsCommand {
    /// Import a timm checkpoint (safetensors with timm state-dict names, optionally under a
    /// `model.` prefix) and write mnas weights with the arch embedded.
    ///
    /// Every tensor is checked by name and shape; a checkpoint of another architecture is refused.
    Import {
        /// Architecture the checkpoint belongs to (name, arch JSON, block strings, or the one-line form).
        #[arg(long)]
        arch: String,
        #[command(flatten)]
        overrides: ArchOverrides,
        /// The timm safetensors file.
        #[arg(long = "from")]
        from: PathBuf,
        /// Where to write the mnas weights.
        #[arg(long)]
        out: PathBuf,
    },
    /// Write freshly initialised weights (timm's init) for an architecture.
    Init {
        #[arg(long)]
        arch: String,
        #[command(flatten)]
        overrides: ArchOverrides,
        #[arg(long)]
        out: PathBuf,
        /// Random seed for the initialisation.
        #[arg(long, default_value_t = 0)]
        seed: u64,
    },
    /// Show the architecture and parameter count stored in an mnas weights file.
    Info { file: PathBuf },
}

pub fn run(cmd: WeightsCommand) -> Result<()> {
    let device = Default::default();
    match cmd {
        WeightsCommand::Import { arch, overrides, from, out } => {
            let arch = resolve(&arch, &overrides)?;
            let mut model = MnasNet::<Cpu>::new(&arch, &device)?;
            weights::load(&mut model, &from, &device)?;
            check_out_dir(&out)?;
            weights::save(&model, &out)?;
            println!(
                "imported {} ({} params) -> {}",
                from.display(),
                thousands(model.trainable_params() as u64),
                out.display()
            );
        }
        WeightsCommand::Init { arch, overrides, out, seed } => {
            let arch = resolve(&arch, &overrides)?;
            let model = MnasNet::<Cpu>::seeded(&arch, &device, seed)?;
            check_out_dir(&out)?;
            weights::save(&model, &out)?;
            println!("initialised {} params -> {}", thousands(model.trainable_params() as u64), out.display());
        }
        WeightsCommand::Info { file } => {
            let arch = weights::stored_arch(&file)?.with_context(|| {
                format!("{} holds no mnas arch metadata (a timm checkpoint? use `mnas weights import`)", file.display())
            })?;
            let mut model = MnasNet::<Cpu>::new(&arch, &device)?;
            weights::load(&mut model, &file, &device)?;
            println!("{}: {}", file.display(), arch.name.as_deref().unwrap_or("custom arch"));
            println!("  {}", arch.canonical());
            println!("  {} trainable params", thousands(model.trainable_params() as u64));
        }
    }
    Ok(())
}

fn check_out_dir(out: &std::path::Path) -> Result<()> {
    match out.parent().filter(|p| !p.as_os_str().is_empty()) {
        Some(dir) if !dir.is_dir() => {
            anyhow::bail!("cannot write {}: directory {} does not exist", out.display(), dir.display())
        }
        _ => Ok(()),
    }
}
