use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Subcommand;
use mnas_export::{write_onnx, Batch, ExportOptions, INPUT, OPSET, OUTPUT};
use mnas_model::backend::Cpu;
use mnas_model::{weights, MnasNet};

use crate::spec::{resolve, ArchOverrides};
use crate::table::thousands;

#[derive(Subcommand, Debug)]
pub enum ExportCommand {
    /// Write an ONNX model (opset 13, BN folded into the convolutions, eval mode).
    ///
    /// The graph takes `input` [B, 3, R, R] (float32, NCHW) and gives `logits` [B, classes].
    /// The file is written to a temp file beside `--out` and renamed, so an error never leaves
    /// a partial model behind.
    Onnx {
        /// Architecture: a zoo name (mnasnet-a1, ...), an arch JSON file, block strings, or the one-line
        /// form outputs print (stem32|...|r224).
        #[arg(long)]
        arch: String,
        #[command(flatten)]
        overrides: ArchOverrides,
        /// mnas (or imported timm) weights for this architecture; without it the model has
        /// random weights (timm's init), useful for latency work only.
        #[arg(long)]
        weights: Option<PathBuf>,
        /// Where to write the .onnx file (its directory must exist).
        #[arg(long)]
        out: PathBuf,
        /// Batch size of the graph input: a number, or `dynamic` for a symbolic `batch` dimension.
        #[arg(long, default_value = "1")]
        batch: String,
        /// Seed of the random weights when --weights is not given.
        #[arg(long, default_value_t = 0)]
        seed: u64,
    },
}

pub fn run(cmd: ExportCommand) -> Result<()> {
    match cmd {
        ExportCommand::Onnx { arch, overrides, weights: weights_path, out, batch, seed } => {
            let arch = resolve(&arch, &overrides)?;
            let batch: Batch = batch.parse()?;
            // Fail on a bad --out before any work.
            mnas_export::file::check_target(&out)?;
            let device = Default::default();
            let mut model = MnasNet::<Cpu>::seeded(&arch, &device, seed)?;
            if let Some(path) = &weights_path {
                let name = arch.name.as_deref().unwrap_or("this architecture");
                weights::load(&mut model, path, &device)
                    .with_context(|| format!("cannot load --weights for {name}"))?;
            }
            let bytes = write_onnx(&model, &ExportOptions { batch, resolution: None }, &out)?;
            let r = arch.resolution;
            println!(
                "wrote {} ({}, opset {OPSET}, BN folded): `{INPUT}` [{batch}, 3, {r}, {r}] -> `{OUTPUT}` [{batch}, {}], \
                 {} params, {:.1} MB",
                out.display(),
                arch.name.as_deref().unwrap_or("custom arch"),
                arch.num_classes,
                thousands(model.trainable_params() as u64),
                bytes as f64 / 1e6
            );
            match &weights_path {
                Some(path) => println!("weights: {}", path.display()),
                None => println!(
                    "weights: none given, randomly initialised (seed {seed}); pass --weights for a useful model"
                ),
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("mnas-cli-export-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn onnx(arch: &str, weights: Option<PathBuf>, out: PathBuf, batch: &str) -> ExportCommand {
        let overrides = ArchOverrides { resolution: Some(32), classes: Some(10), ..Default::default() };
        ExportCommand::Onnx { arch: arch.into(), overrides, weights, out, batch: batch.into(), seed: 0 }
    }

    #[test]
    fn exports_with_and_without_weights() {
        let dir = scratch("ok");
        run(onnx("mnasnet-small", None, dir.join("a.onnx"), "dynamic")).unwrap();
        let device = Default::default();
        let arch = resolve("mnasnet-small", &ArchOverrides { classes: Some(10), ..Default::default() }).unwrap();
        weights::save(&MnasNet::<Cpu>::new(&arch, &device).unwrap(), &dir.join("w.safetensors")).unwrap();
        run(onnx("mnasnet-small", Some(dir.join("w.safetensors")), dir.join("b.onnx"), "4")).unwrap();
        assert!(dir.join("a.onnx").is_file() && dir.join("b.onnx").is_file());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn weights_of_another_arch_are_an_error_and_write_nothing() {
        let dir = scratch("other-weights");
        let device = Default::default();
        let arch = resolve("mnasnet-small", &ArchOverrides { classes: Some(10), ..Default::default() }).unwrap();
        weights::save(&MnasNet::<Cpu>::new(&arch, &device).unwrap(), &dir.join("small.safetensors")).unwrap();
        let err = run(onnx("mnasnet-a1", Some(dir.join("small.safetensors")), dir.join("a1.onnx"), "1")).unwrap_err();
        assert!(format!("{err:#}").contains("small.safetensors"), "{err:#}");
        assert!(!dir.join("a1.onnx").exists());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn bad_out_and_batch_are_errors() {
        let dir = scratch("bad");
        let err = run(onnx("mnasnet-small", None, dir.join("missing/x.onnx"), "1")).unwrap_err();
        assert!(format!("{err:#}").contains("does not exist"), "{err:#}");
        let err = run(onnx("mnasnet-small", None, dir.join("x.onnx"), "many")).unwrap_err();
        assert!(format!("{err:#}").contains("dynamic"), "{err:#}");
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 0);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
