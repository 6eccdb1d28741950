//! mnas-data: the image datasets mnas trains and evaluates on, in the layouts users already have.
//!
//! - ImageFolder: class subfolders of JPEG/PNG, as a directory or a `.tar`/`.tar.gz` archive, with
//!   optional `train/` and `test/` (or `val/`) halves;
//! - CIFAR-10 binary batches (`data_batch_*.bin`, `test_batch.bin`);
//! - IDX (MNIST / Fashion-MNIST), gzipped or not;
//! - an embedded default: 10,000 train + 1,000 test CIFAR-10 images (1,000 / 100 per class;
//!   `assets/make_subset.sh` rebuilds it).
//!
//! Images are decoded in parallel once and kept in memory as u8; the held-out validation split is
//! carved from train deterministically by seed (the paper's proxy task never looks at test).

pub mod batch;
pub mod cifar;
pub mod decode;
pub mod error;
pub mod idx;
pub mod imagefolder;
pub mod set;

use std::path::{Path, PathBuf};

use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;

pub use batch::{batches, batches_in, Augment, Batch, Layout, Normalize};
pub use error::DataError;
pub use set::ImageSet;

/// The embedded default dataset (a real CIFAR-10 subset, JPEG in an ImageFolder tar.gz).
pub const EMBEDDED: &[u8] = include_bytes!("../assets/cifar10-subset.tar.gz");
pub const EMBEDDED_NAME: &str = "embedded CIFAR-10 subset (10,000 train / 1,000 test)";

/// Where the data comes from.
#[derive(Debug, Clone, PartialEq)]
pub enum Source {
    Embedded,
    Path(PathBuf),
}

/// What to load and how to split it.
#[derive(Debug, Clone, PartialEq)]
pub struct DataSpec {
    pub source: Source,
    /// Square size to decode/resize to; `None` keeps the dataset's own size.
    pub resolution: Option<usize>,
    /// Fraction of train held out for validation (the proxy task's accuracy), in (0, 1).
    pub val_fraction: f64,
    /// Seed of the held-out split.
    pub split_seed: u64,
}

impl DataSpec {
    pub fn embedded() -> Self {
        DataSpec { source: Source::Embedded, resolution: None, val_fraction: 0.1, split_seed: 0 }
    }
}

/// A loaded dataset: train minus the held-out part, the held-out validation split, and the test
/// split when the source has one. `norm` is measured on `train`.
#[derive(Debug, Clone)]
pub struct Splits {
    pub name: String,
    pub classes: Vec<String>,
    pub train: ImageSet,
    pub val: ImageSet,
    pub test: ImageSet,
    pub norm: Normalize,
}

fn resize_set(set: ImageSet, size: usize) -> ImageSet {
    if set.size == size || set.is_empty() {
        return ImageSet { size, ..set };
    }
    let from = set.size as u32;
    let pixels: Vec<u8> = (0..set.len())
        .into_par_iter()
        .flat_map_iter(|i| {
            let img = image::RgbImage::from_raw(from, from, set.image(i).to_vec()).expect("image of the set's size");
            image::imageops::resize(&img, size as u32, size as u32, image::imageops::FilterType::Triangle).into_raw()
        })
        .collect();
    ImageSet { size, pixels, labels: set.labels }
}

impl Splits {
    /// Fingerprint of what training and scoring see: classes, train and held-out splits (not
    /// the test split). Equal hashes mean the same images, labels and split.
    pub fn content_hash(&self) -> u64 {
        let mut h = set::Fnv::new();
        for c in &self.classes {
            h.write_bytes(c.as_bytes());
            h.write_u64(0xff);
        }
        h.write_u64(self.train.content_hash());
        h.write_u64(self.val.content_hash());
        h.finish()
    }
}

/// Loads and splits a dataset.
pub fn open(spec: &DataSpec) -> Result<Splits, DataError> {
    if spec.resolution == Some(0) {
        return Err(DataError::Invalid("resolution must be > 0".into()));
    }
    if !(spec.val_fraction > 0.0 && spec.val_fraction < 1.0) {
        return Err(DataError::Invalid(format!("validation fraction must be in (0, 1), got {}", spec.val_fraction)));
    }
    let (name, classes, train, test) = match &spec.source {
        Source::Embedded => {
            let (entries, empty) = imagefolder::read_tar(flate2::read::GzDecoder::new(EMBEDDED), "embedded")?;
            let f = imagefolder::from_entries(entries, empty, spec.resolution, Path::new("embedded"))?;
            (EMBEDDED_NAME.to_string(), f.classes, f.train, f.test)
        }
        Source::Path(path) => {
            if !path.exists() {
                return Err(DataError::NotFound { path: path.clone() });
            }
            let name = path.display().to_string();
            if path.is_dir() && cifar::is_cifar_dir(path) {
                let (train, test) = cifar::load(path)?;
                let classes = cifar::CLASSES.iter().map(|s| s.to_string()).collect();
                (name, classes, train, test)
            } else if path.is_dir() && idx::is_idx_dir(path) {
                let (train, test) = idx::load(path)?;
                let n = train.labels.iter().chain(&test.labels).copied().max().unwrap_or(0) + 1;
                (name, (0..n).map(|i| i.to_string()).collect(), train, test)
            } else {
                let f = imagefolder::load(path, spec.resolution)?;
                (name, f.classes, f.train, f.test)
            }
        }
    };
    let (train, test) = match spec.resolution {
        Some(r) => (resize_set(train, r), resize_set(test, r)),
        None => (train, test),
    };
    if train.len() < 2 {
        return Err(DataError::Invalid(format!(
            "{name}: the training split needs at least 2 images, found {}",
            train.len()
        )));
    }
    let mut order: Vec<usize> = (0..train.len()).collect();
    order.shuffle(&mut ChaCha8Rng::seed_from_u64(spec.split_seed));
    let n_val = ((train.len() as f64 * spec.val_fraction).round() as usize).clamp(1, train.len() - 1);
    let (val_idx, train_idx) = order.split_at(n_val);
    let mut train_idx = train_idx.to_vec();
    train_idx.sort_unstable();
    let mut val_idx = val_idx.to_vec();
    val_idx.sort_unstable();
    let (train, val) = (train.subset(&train_idx), train.subset(&val_idx));
    let (mean, std) = train.channel_stats();
    Ok(Splits { name, classes, train, val, test, norm: Normalize { mean, std } })
}
