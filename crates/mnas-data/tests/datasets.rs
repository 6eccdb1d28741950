//! Loading real data in every supported layout, splits, batches, and the errors for bad input.

use std::io::Write;
use std::path::{Path, PathBuf};

use mnas_data::{batches, batches_in, open, Augment, DataError, DataSpec, Layout, Source};

fn tmpdir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("mnas-data-test-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn spec(path: &Path) -> DataSpec {
    DataSpec { source: Source::Path(path.to_path_buf()), ..DataSpec::embedded() }
}

/// A few real CIFAR-10 JPEGs, taken from the embedded subset, written as an ImageFolder tree.
fn write_image_folder(root: &Path, classes: &[&str], per_class: usize) {
    let gz = flate2::read::GzDecoder::new(mnas_data::EMBEDDED);
    let mut archive = tar::Archive::new(gz);
    let mut counts = std::collections::HashMap::new();
    for e in archive.entries().unwrap() {
        let mut e = e.unwrap();
        let path = e.path().unwrap().to_string_lossy().to_string();
        let parts: Vec<&str> = path.split('/').collect();
        if parts.len() == 4 && !parts[3].is_empty() && parts[1] == "train" && classes.contains(&parts[2]) {
            let n = counts.entry(parts[2].to_string()).or_insert(0);
            if *n < per_class {
                *n += 1;
                let dir = root.join(parts[2]);
                std::fs::create_dir_all(&dir).unwrap();
                e.unpack(dir.join(parts[3])).unwrap();
            }
        }
    }
}

#[test]
fn embedded_default_loads_with_a_seeded_held_out_split() {
    let s = open(&DataSpec::embedded()).unwrap();
    assert_eq!(s.classes.len(), 10);
    assert_eq!(s.train.len() + s.val.len(), 10_000);
    assert_eq!(s.val.len(), 1000);
    assert_eq!(s.test.len(), 1000);
    assert_eq!(s.train.size, 32);
    let again = open(&DataSpec::embedded()).unwrap();
    assert_eq!(s.val, again.val);
    let other = open(&DataSpec { split_seed: 1, ..DataSpec::embedded() }).unwrap();
    assert_ne!(s.val.labels, other.val.labels);
    // The content hash tells the two splits apart and is the same on every load.
    assert_ne!(s.content_hash(), other.content_hash());
    assert_eq!(s.content_hash(), open(&DataSpec::embedded()).unwrap().content_hash());
    // Real photos: channel means well inside (0, 1), not constant images.
    assert!(s.norm.mean.iter().all(|m| *m > 0.3 && *m < 0.7), "{:?}", s.norm);
    assert!(s.norm.std.iter().all(|v| *v > 0.1), "{:?}", s.norm);
}

#[test]
fn batches_are_normalised_and_augmentation_is_seeded() {
    let s = open(&DataSpec::embedded()).unwrap();
    let b: Vec<_> = batches(&s.val, 64, s.norm, Augment::None, None, false).collect();
    assert_eq!(b.iter().map(|b| b.len()).sum::<usize>(), s.val.len());
    assert_eq!(b[0].images.len(), 64 * 3 * 32 * 32);
    // Normalised with the train split's statistics, the whole held-out split averages near 0 (one
    // batch of 64 photos may not).
    let n: usize = b.iter().map(|b| b.images.len()).sum();
    let mean: f64 = b.iter().flat_map(|b| b.images.iter()).map(|&v| v as f64).sum::<f64>() / n as f64;
    assert!(mean.abs() < 0.1, "normalised mean {mean}");
    let aug = |seed| batches(&s.train, 32, s.norm, Augment::PadCrop { pad: 4 }, Some(seed), true).next().unwrap();
    assert_eq!(aug(3), aug(3));
    assert_ne!(aug(3).images, aug(4).images);
    let rrc = batches(&s.train, 8, s.norm, Augment::ResizedCrop, Some(1), true).next().unwrap();
    assert_eq!(rrc.images.len(), 8 * 3 * 32 * 32);
    // The same augmented batch channels-last: every value moves to (n, y, x, c).
    let nchw = aug(5);
    let nhwc =
        batches_in(&s.train, 32, s.norm, Augment::PadCrop { pad: 4 }, Some(5), true, Layout::Nhwc).next().unwrap();
    assert_eq!(nhwc.labels, nchw.labels);
    for (n, c, p) in [(0, 0, 0), (3, 2, 517), (31, 1, 1023)] {
        assert_eq!(nhwc.images[(n * 1024 + p) * 3 + c], nchw.images[(n * 3 + c) * 1024 + p]);
    }
}

#[test]
fn image_folder_directory_and_resize() {
    let root = tmpdir("folder");
    write_image_folder(&root, &["cat", "dog", "ship"], 5);
    let s = open(&DataSpec { resolution: Some(48), ..spec(&root) }).unwrap();
    assert_eq!(s.classes, ["cat", "dog", "ship"]);
    assert_eq!(s.train.len() + s.val.len(), 15);
    assert_eq!(s.train.size, 48);
    assert!(s.test.is_empty());
}

#[test]
fn cifar_binary_and_idx_layouts() {
    // CIFAR-10 binary: 3 records built from real embedded images.
    let e = open(&DataSpec::embedded()).unwrap();
    let dir = tmpdir("cifarbin");
    let mut bytes = Vec::new();
    for i in 0..4 {
        bytes.push(e.test.labels[i] as u8);
        let img = e.test.image(i);
        for c in 0..3 {
            bytes.extend((0..1024).map(|p| img[p * 3 + c]));
        }
    }
    std::fs::write(dir.join("data_batch_1.bin"), &bytes).unwrap();
    let s = open(&spec(&dir)).unwrap();
    assert_eq!(s.train.len() + s.val.len(), 4);
    let all: Vec<u8> = [&s.train, &s.val].iter().flat_map(|x| x.pixels.clone()).collect();
    assert!(all.chunks(3072).any(|img| img == e.test.image(0)) || all.chunks(3072).any(|img| img == e.test.image(1)));

    // IDX, gzipped: grey versions of the same images.
    let dir = tmpdir("idx");
    let n = 4usize;
    let mut img = vec![0, 0, 8, 3];
    for v in [n as u32, 32, 32] {
        img.extend(v.to_be_bytes());
    }
    for i in 0..n {
        img.extend(e.test.image(i).chunks(3).map(|p| p[0]));
    }
    let mut lab = vec![0, 0, 8, 1];
    lab.extend((n as u32).to_be_bytes());
    lab.extend((0..n).map(|i| e.test.labels[i] as u8));
    let gz = |data: &[u8], name: &str| {
        let mut enc =
            flate2::write::GzEncoder::new(std::fs::File::create(dir.join(name)).unwrap(), flate2::Compression::fast());
        enc.write_all(data).unwrap();
        enc.finish().unwrap();
    };
    gz(&img, "train-images-idx3-ubyte.gz");
    gz(&lab, "train-labels-idx1-ubyte.gz");
    let s = open(&spec(&dir)).unwrap();
    assert_eq!(s.train.len() + s.val.len(), n);

    // Wrong magic, and a label count that does not match.
    let mut bad = img.clone();
    bad[3] = 1;
    gz(&bad, "train-images-idx3-ubyte.gz");
    let err = open(&spec(&dir)).unwrap_err().to_string();
    assert!(err.contains("magic") && err.contains("train-images-idx3-ubyte.gz"), "{err}");
    gz(&img, "train-images-idx3-ubyte.gz");
    gz(&lab[..lab.len() - 1], "train-labels-idx1-ubyte.gz");
    let err = open(&spec(&dir)).unwrap_err().to_string();
    assert!(err.contains("labels for 4 images"), "{err}");
}

#[test]
fn bad_input_names_the_file() {
    let err = open(&spec(Path::new("/no/such/data"))).unwrap_err();
    assert!(matches!(err, DataError::NotFound { .. }), "{err}");

    let root = tmpdir("corrupt");
    write_image_folder(&root, &["cat", "dog"], 3);
    let victim = std::fs::read_dir(root.join("cat")).unwrap().next().unwrap().unwrap().path();
    let bytes = std::fs::read(&victim).unwrap();
    std::fs::write(&victim, &bytes[..bytes.len() / 3]).unwrap();
    let err = open(&spec(&root)).unwrap_err().to_string();
    assert!(err.contains(&victim.display().to_string()), "{err}");

    let root = tmpdir("emptyclass");
    write_image_folder(&root, &["cat", "dog"], 3);
    std::fs::create_dir_all(root.join("bird")).unwrap();
    let err = open(&spec(&root)).unwrap_err().to_string();
    assert!(err.contains("bird") && err.contains("no JPEG or PNG"), "{err}");

    let root = tmpdir("nothing");
    std::fs::write(root.join("readme.txt"), "hello").unwrap();
    assert!(matches!(open(&spec(&root)).unwrap_err(), DataError::NoImages { .. }));

    let dir = tmpdir("cifartrunc");
    std::fs::write(dir.join("data_batch_1.bin"), vec![1u8; 3073 + 100]).unwrap();
    let err = open(&spec(&dir)).unwrap_err().to_string();
    assert!(err.contains("data_batch_1.bin") && err.contains("truncated"), "{err}");

    assert!(open(&DataSpec { resolution: Some(0), ..DataSpec::embedded() }).is_err());
}

#[test]
fn shared_cifar10_archive_when_present() {
    // The full CIFAR-10 archive that CI has beside the checkout (../shared/data).
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data/cifar10-jpg.tar.gz");
    if !path.exists() {
        panic!("{} missing: the suite runs with ../shared beside the checkout", path.display());
    }
    let s = open(&spec(&path)).unwrap();
    assert_eq!(s.train.len() + s.val.len(), 50_000);
    assert_eq!(s.test.len(), 10_000);
    assert_eq!(s.classes.len(), 10);
}
