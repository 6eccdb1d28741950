//! CIFAR-10 binary batches: `data_batch_{1..5}.bin` and `test_batch.bin`, records of 1 label byte
//! and 3072 pixel bytes (R plane, G plane, B plane of 32x32).

use std::path::Path;

use crate::error::DataError;
use crate::set::ImageSet;

const RECORD: usize = 1 + 3072;
pub const CLASSES: [&str; 10] =
    ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"];

pub fn is_cifar_dir(dir: &Path) -> bool {
    dir.join("data_batch_1.bin").is_file()
}

fn read_batch(path: &Path, set: &mut ImageSet) -> Result<(), DataError> {
    let bytes = std::fs::read(path).map_err(|source| DataError::Read { path: path.into(), source })?;
    if bytes.is_empty() || bytes.len() % RECORD != 0 {
        return Err(DataError::Format {
            path: path.into(),
            reason: format!(
                "{} bytes is not a whole number of {RECORD}-byte CIFAR-10 records (truncated?)",
                bytes.len()
            ),
        });
    }
    let mut hwc = vec![0u8; 3072];
    for (i, rec) in bytes.chunks_exact(RECORD).enumerate() {
        let label = rec[0];
        if label as usize >= CLASSES.len() {
            return Err(DataError::Format {
                path: path.into(),
                reason: format!("record {i} has label {label}, expected 0..9"),
            });
        }
        for p in 0..1024 {
            for c in 0..3 {
                hwc[p * 3 + c] = rec[1 + c * 1024 + p];
            }
        }
        set.push(&hwc, label as u32);
    }
    Ok(())
}

/// Loads the train batches (and the test batch if present) at 32x32.
pub fn load(dir: &Path) -> Result<(ImageSet, ImageSet), DataError> {
    let mut train = ImageSet::new(32);
    for i in 1..=5 {
        let p = dir.join(format!("data_batch_{i}.bin"));
        if p.is_file() {
            read_batch(&p, &mut train)?;
        }
    }
    let mut test = ImageSet::new(32);
    let t = dir.join("test_batch.bin");
    if t.is_file() {
        read_batch(&t, &mut test)?;
    }
    Ok((train, test))
}
