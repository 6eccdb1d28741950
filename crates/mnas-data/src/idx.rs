//! IDX files (MNIST, Fashion-MNIST), gzipped or not: `train-images-idx3-ubyte[.gz]` with
//! `train-labels-idx1-ubyte[.gz]`, and the `t10k-` pair for the test split. Grey images are
//! replicated to three channels.

use std::io::Read;
use std::path::{Path, PathBuf};

use crate::error::DataError;
use crate::set::ImageSet;

fn find(dir: &Path, stem: &str) -> Option<PathBuf> {
    [stem.to_string(), format!("{stem}.gz")].into_iter().map(|n| dir.join(n)).find(|p| p.is_file())
}

pub fn is_idx_dir(dir: &Path) -> bool {
    find(dir, "train-images-idx3-ubyte").is_some()
}

fn read_maybe_gz(path: &Path) -> Result<Vec<u8>, DataError> {
    let raw = std::fs::read(path).map_err(|source| DataError::Read { path: path.into(), source })?;
    if raw.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(&raw[..])
            .read_to_end(&mut out)
            .map_err(|e| DataError::Format { path: path.into(), reason: format!("bad gzip stream: {e}") })?;
        Ok(out)
    } else {
        Ok(raw)
    }
}

fn be32(b: &[u8], at: usize) -> usize {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]]) as usize
}

fn load_pair(images: &Path, labels: &Path) -> Result<ImageSet, DataError> {
    let img = read_maybe_gz(images)?;
    let lab = read_maybe_gz(labels)?;
    let fmt = |p: &Path, reason: String| DataError::Format { path: p.into(), reason };
    if img.len() < 16 || be32(&img, 0) != 0x0000_0803 {
        return Err(fmt(images, "wrong magic number: not an IDX image file (expected 0x00000803)".into()));
    }
    if lab.len() < 8 || be32(&lab, 0) != 0x0000_0801 {
        return Err(fmt(labels, "wrong magic number: not an IDX label file (expected 0x00000801)".into()));
    }
    let (n, rows, cols) = (be32(&img, 4), be32(&img, 8), be32(&img, 12));
    if rows != cols || rows == 0 {
        return Err(fmt(images, format!("images are {rows}x{cols}; only square images are supported")));
    }
    if img.len() != 16 + n * rows * cols {
        return Err(fmt(
            images,
            format!("header says {n} images of {rows}x{cols} but the file holds {} bytes (truncated?)", img.len()),
        ));
    }
    let labels_n = be32(&lab, 4);
    if labels_n != n || lab.len() != 8 + n {
        return Err(fmt(labels, format!("{labels_n} labels for {n} images in {}", images.display())));
    }
    let mut set = ImageSet::new(rows);
    let mut rgb = vec![0u8; rows * cols * 3];
    for i in 0..n {
        let grey = &img[16 + i * rows * cols..16 + (i + 1) * rows * cols];
        for (p, &g) in grey.iter().enumerate() {
            rgb[p * 3..p * 3 + 3].fill(g);
        }
        set.push(&rgb, lab[8 + i] as u32);
    }
    Ok(set)
}

/// Loads the train pair and, when present, the t10k pair.
pub fn load(dir: &Path) -> Result<(ImageSet, ImageSet), DataError> {
    let missing = |stem: &str| DataError::NotFound { path: dir.join(stem) };
    let train_images = find(dir, "train-images-idx3-ubyte").ok_or_else(|| missing("train-images-idx3-ubyte"))?;
    let train_labels = find(dir, "train-labels-idx1-ubyte").ok_or_else(|| missing("train-labels-idx1-ubyte"))?;
    let train = load_pair(&train_images, &train_labels)?;
    let test = match (find(dir, "t10k-images-idx3-ubyte"), find(dir, "t10k-labels-idx1-ubyte")) {
        (Some(i), Some(l)) => load_pair(&i, &l)?,
        _ => ImageSet::new(train.size),
    };
    Ok((train, test))
}
