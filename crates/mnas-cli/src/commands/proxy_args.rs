//! The proxy task's options, shared by `mnas search`, `mnas bench proxy` and `mnas bench
//! reference`: each is an override of a base recipe (the search's default, a stored run's, the
//! reference's).

use std::path::PathBuf;

use clap::{Args, ValueEnum};
use mnas_engine::train::{Decay, Optimizer};
use mnas_pipeline::{ProxySettings, Score};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OptimizerArg {
    /// SGD with Nesterov momentum 0.9.
    Sgd,
    /// AdamW (0.9, 0.999).
    Adamw,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DecayArg {
    Cosine,
    Linear,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ScoreArg {
    /// Held-out top-1.
    Accuracy,
    /// Held-out cross-entropy (lower is better).
    ValLoss,
    /// Mean training loss over the run (sum of training losses, TSE).
    Tse,
    /// Mean training loss over the second half of the run.
    TseLate,
}

/// Proxy training options. Unset options keep the base recipe's value.
#[derive(Args, Debug, Clone, Default)]
pub struct ProxyArgs {
    /// Dataset: an ImageFolder directory or .tar/.tar.gz, CIFAR-10 binary batches, or IDX files
    /// (see `mnas train --help`) [default: the embedded CIFAR-10 subset].
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Fraction of train held out for the proxy score [search default: 0.2, 2,000 images of the
    /// embedded subset; bench proxy: the reference's].
    #[arg(long)]
    pub val_fraction: Option<f64>,
    /// Seed of the held-out split and of the fixed train/held-out subsets [default: 0].
    #[arg(long)]
    pub split_seed: Option<u64>,
    /// Square size the proxy trains at [default: the dataset's].
    #[arg(long)]
    pub proxy_resolution: Option<u32>,
    /// Train images per trial, a fixed subset; 0 = all.
    #[arg(long)]
    pub proxy_images: Option<usize>,
    /// Held-out images scored per trial, a fixed subset; 0 = all.
    #[arg(long)]
    pub proxy_val_images: Option<usize>,
    /// Passes over the proxy's train images (fractions allowed).
    #[arg(long)]
    pub proxy_epochs: Option<f64>,
    #[arg(long)]
    pub proxy_batch_size: Option<usize>,
    #[arg(long, value_enum)]
    pub proxy_optimizer: Option<OptimizerArg>,
    /// Peak learning rate.
    #[arg(long)]
    pub proxy_lr: Option<f64>,
    /// Share of the steps spent warming up (0..1).
    #[arg(long)]
    pub proxy_warmup: Option<f64>,
    /// Learning-rate decay after the warm-up.
    #[arg(long, value_enum)]
    pub proxy_decay: Option<DecayArg>,
    #[arg(long)]
    pub proxy_weight_decay: Option<f64>,
    #[arg(long)]
    pub proxy_label_smoothing: Option<f64>,
    /// Width multiplier during proxy training only (the deployed model keeps its width).
    #[arg(long)]
    pub proxy_width: Option<f64>,
    /// Stem stride during proxy training: 1 keeps the last blocks at 2x2 on 32 px images, 2 is
    /// the deployed stem (1x1 maps there).
    #[arg(long)]
    pub proxy_stem_stride: Option<usize>,
    /// Train with pad-crop/flip augmentation (off in the default proxy: one pass ranks better
    /// without it; longer budgets may want it).
    #[arg(long, conflicts_with = "proxy_no_augment")]
    pub proxy_augment: bool,
    /// Train without augmentation (the default proxy's setting; kept for recipes that start from
    /// an augmented base).
    #[arg(long)]
    pub proxy_no_augment: bool,
    /// Seed of every proxy run: initial weights, data order, augmentation.
    #[arg(long)]
    pub proxy_seed: Option<u64>,
    /// What the proxy reports as a model's quality. A search's reward multiplies held-out accuracy,
    /// or exp(-loss) for a loss score (the geometric-mean probability of the right class: 0.1 at
    /// chance on 10 classes, like accuracy); `mnas bench proxy` reports every score and marks this one.
    #[arg(long, value_enum)]
    pub proxy_score: Option<ScoreArg>,
}

impl ProxyArgs {
    /// `base` with every option given here applied.
    pub fn apply(&self, base: &ProxySettings) -> ProxySettings {
        let mut s = base.clone();
        if let Some(d) = &self.data {
            s.data = Some(d.display().to_string());
        }
        macro_rules! set {
            ($($arg:ident => $field:ident),*) => {$(if let Some(v) = self.$arg { s.$field = v; })*};
        }
        set!(val_fraction => val_fraction, split_seed => split_seed, proxy_images => images,
             proxy_val_images => val_images, proxy_epochs => epochs, proxy_batch_size => batch_size,
             proxy_lr => lr, proxy_warmup => warmup, proxy_weight_decay => weight_decay,
             proxy_label_smoothing => label_smoothing, proxy_width => width,
             proxy_stem_stride => stem_stride, proxy_seed => seed);
        if let Some(r) = self.proxy_resolution {
            s.resolution = Some(r);
        }
        if let Some(o) = self.proxy_optimizer {
            s.optimizer = match o {
                OptimizerArg::Sgd => Optimizer::Sgd,
                OptimizerArg::Adamw => Optimizer::AdamW,
            };
        }
        if let Some(d) = self.proxy_decay {
            s.decay = match d {
                DecayArg::Cosine => Decay::Cosine,
                DecayArg::Linear => Decay::Linear,
            };
        }
        if self.proxy_augment {
            s.augment = true;
        }
        if self.proxy_no_augment {
            s.augment = false;
        }
        if let Some(sc) = self.proxy_score {
            s.score = match sc {
                ScoreArg::Accuracy => Score::Accuracy,
                ScoreArg::ValLoss => Score::ValLoss,
                ScoreArg::Tse => Score::Tse,
                ScoreArg::TseLate => Score::TseLate,
            };
        }
        s
    }
}

/// One line describing a recipe.
pub fn describe(s: &ProxySettings) -> String {
    format!(
        "{} images x {} epoch(s), held-out {}, batch {}, {:?} lr {} ({:?}, warm-up {:.0} %), wd {}, smoothing {}, \
         {}, width x{}, stem stride {}, seed {}, score {}",
        if s.images == 0 { "all".to_string() } else { s.images.to_string() },
        s.epochs,
        if s.val_images == 0 { "all".to_string() } else { s.val_images.to_string() },
        s.batch_size,
        s.optimizer,
        s.lr,
        s.decay,
        100.0 * s.warmup,
        s.weight_decay,
        s.label_smoothing,
        if s.augment { "pad-crop + flip" } else { "no augmentation" },
        s.width,
        s.stem_stride,
        s.seed,
        s.score.name()
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        proxy: ProxyArgs,
    }

    fn applied(args: &[&str]) -> Result<ProxySettings, clap::Error> {
        let cli = Cli::try_parse_from([&["mnas"][..], args].concat())?;
        Ok(cli.proxy.apply(&ProxySettings::default()))
    }

    #[test]
    fn augmentation_is_off_by_default_and_either_flag_sets_it() {
        assert!(!applied(&[]).unwrap().augment);
        assert!(applied(&["--proxy-augment"]).unwrap().augment);
        let base = ProxySettings { augment: true, ..ProxySettings::default() };
        let cli = Cli::try_parse_from(["mnas", "--proxy-no-augment"]).unwrap();
        assert!(!cli.proxy.apply(&base).augment);
        assert!(applied(&["--proxy-augment", "--proxy-no-augment"]).is_err());
        assert!(describe(&applied(&["--proxy-augment"]).unwrap()).contains("pad-crop + flip"));
    }
}
