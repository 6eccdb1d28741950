//! ImageFolder trees (class subfolders of JPEG/PNG), from a directory or a .tar/.tar.gz archive.
//!
//! `ROOT/<class>/*.jpg` is one training split; `ROOT/.../train/<class>/*` with a sibling `test/`
//! or `val/` gives the held-out test split too (CIFAR-10 and Imagenette archives look like that).

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::path::Path;

use rayon::prelude::*;

use crate::decode::{decode_rgb, image_size, is_image_name};
use crate::error::DataError;
use crate::set::ImageSet;

/// An image file found in the tree: its path (for messages), split, class folder and bytes.
pub(crate) struct Entry {
    name: String,
    split: Split,
    class: String,
    bytes: Vec<u8>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Split {
    Train,
    Test,
}

/// Splits found in the tree, decoded; `test` is empty when the tree has no test/val folder.
pub struct Folder {
    pub classes: Vec<String>,
    pub train: ImageSet,
    pub test: ImageSet,
}

/// Where `components` (path parts, file name last) belongs, if it is an image in a class folder.
fn classify(components: &[&str]) -> Option<(Split, String)> {
    let n = components.len();
    if n < 2 || !is_image_name(components[n - 1]) {
        return None;
    }
    let class = components[n - 2].to_string();
    let split = match n.checked_sub(3).map(|i| components[i].to_ascii_lowercase()) {
        Some(s) if s == "test" || s == "val" || s == "valid" || s == "validation" => Split::Test,
        _ => Split::Train,
    };
    Some((split, class))
}

fn read_dir_tree(root: &Path) -> Result<(Vec<Entry>, Vec<String>), DataError> {
    let mut entries = Vec::new();
    let mut class_dirs = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let read = std::fs::read_dir(&dir).map_err(|source| DataError::Read { path: dir.clone(), source })?;
        let mut files = 0usize;
        let mut subdirs = 0usize;
        for item in read {
            let item = item.map_err(|source| DataError::Read { path: dir.clone(), source })?;
            let path = item.path();
            if path.is_dir() {
                subdirs += 1;
                stack.push(path);
                continue;
            }
            let rel = path.strip_prefix(root).unwrap_or(&path);
            let parts: Vec<String> = rel.iter().map(|p| p.to_string_lossy().into_owned()).collect();
            let refs: Vec<&str> = parts.iter().map(String::as_str).collect();
            if let Some((split, class)) = classify(&refs) {
                let bytes = std::fs::read(&path).map_err(|source| DataError::Read { path: path.clone(), source })?;
                entries.push(Entry { name: path.display().to_string(), split, class, bytes });
                files += 1;
            }
        }
        if files == 0 && subdirs == 0 && dir != root {
            class_dirs.push(dir.display().to_string());
        }
    }
    Ok((entries, class_dirs))
}

fn read_archive(path: &Path) -> Result<(Vec<Entry>, Vec<String>), DataError> {
    let file = std::fs::File::open(path).map_err(|source| DataError::Read { path: path.into(), source })?;
    let name = path.to_string_lossy().to_ascii_lowercase();
    let reader: Box<dyn Read> = if name.ends_with(".gz") || name.ends_with(".tgz") {
        Box::new(flate2::read::GzDecoder::new(file))
    } else {
        Box::new(file)
    };
    read_tar(reader, &path.display().to_string())
}

/// Reads every image of a tar stream; `label` names the archive in messages.
pub(crate) fn read_tar(reader: impl Read, label: &str) -> Result<(Vec<Entry>, Vec<String>), DataError> {
    let bad = |e: std::io::Error| DataError::Format {
        path: label.into(),
        reason: format!("not a readable tar archive: {e}"),
    };
    let mut archive = tar::Archive::new(reader);
    let mut entries = Vec::new();
    let mut dirs = BTreeSet::new();
    let mut used_dirs = BTreeSet::new();
    for item in archive.entries().map_err(bad)? {
        let mut item = item.map_err(bad)?;
        let path = item.path().map_err(bad)?.to_string_lossy().trim_end_matches('/').to_string();
        if item.header().entry_type().is_dir() {
            dirs.insert(path);
            continue;
        }
        let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty() && *p != ".").collect();
        if let Some((split, class)) = classify(&parts) {
            let mut bytes = Vec::with_capacity(item.size() as usize);
            item.read_to_end(&mut bytes).map_err(bad)?;
            if let Some((dir, _)) = path.rsplit_once('/') {
                let mut d = dir.to_string();
                loop {
                    used_dirs.insert(d.clone());
                    match d.rsplit_once('/') {
                        Some((parent, _)) => d = parent.to_string(),
                        None => break,
                    }
                }
            }
            entries.push(Entry { name: format!("{label}:{path}"), split, class, bytes });
        }
    }
    let empty = dirs.difference(&used_dirs).map(|d| format!("{label}:{d}")).collect();
    Ok((entries, empty))
}

/// Loads a directory or archive. `size`: decode every image to this square size; `None` keeps the
/// first image's width (images of other sizes are resized to it).
pub fn load(path: &Path, size: Option<usize>) -> Result<Folder, DataError> {
    let (entries, empty_dirs) = if path.is_dir() { read_dir_tree(path)? } else { read_archive(path)? };
    from_entries(entries, empty_dirs, size, path)
}

pub(crate) fn from_entries(
    entries: Vec<Entry>,
    empty_dirs: Vec<String>,
    size: Option<usize>,
    root: &Path,
) -> Result<Folder, DataError> {
    if entries.is_empty() {
        return Err(DataError::NoImages { path: root.into() });
    }
    let train_classes: BTreeSet<&str> =
        entries.iter().filter(|e| e.split == Split::Train).map(|e| e.class.as_str()).collect();
    // An empty folder beside real class folders is a class with no images: refuse it.
    if let Some(dir) = empty_dirs.iter().find(|d| {
        let leaf = d.rsplit(['/', ':']).next().unwrap_or_default();
        !train_classes.is_empty() && !matches!(leaf, "train" | "test" | "val")
    }) {
        return Err(DataError::EmptyClass { path: dir.clone() });
    }
    let classes: Vec<String> = train_classes.iter().map(|s| s.to_string()).collect();
    if classes.is_empty() {
        return Err(DataError::NoImages { path: root.into() });
    }
    let index: BTreeMap<&str, u32> = classes.iter().enumerate().map(|(i, c)| (c.as_str(), i as u32)).collect();
    if let Some(e) = entries.iter().find(|e| !index.contains_key(e.class.as_str())) {
        return Err(DataError::Format {
            path: root.into(),
            reason: format!("test class `{}` ({}) does not exist in the training split", e.class, e.name),
        });
    }
    let size = match size {
        Some(0) => return Err(DataError::Invalid("resolution must be > 0".into())),
        Some(s) => s,
        None => image_size(&entries[0].bytes, &entries[0].name)?,
    };
    let mut sorted = entries;
    sorted.sort_by(|a, b| (a.split, &a.class, &a.name).cmp(&(b.split, &b.class, &b.name)));
    let decoded: Vec<Result<Vec<u8>, DataError>> =
        sorted.par_iter().map(|e| decode_rgb(&e.bytes, size, &e.name)).collect();
    let mut train = ImageSet::new(size);
    let mut test = ImageSet::new(size);
    for (e, pixels) in sorted.iter().zip(decoded) {
        let pixels = pixels?;
        let label = index[e.class.as_str()];
        match e.split {
            Split::Train => train.push(&pixels, label),
            Split::Test => test.push(&pixels, label),
        }
    }
    Ok(Folder { classes, train, test })
}
