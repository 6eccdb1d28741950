//! A build id of the engine: a hash of its sources, so that latency measured with one build of
//! the kernels is never served for another (the latency store keys on it). The manifest counts
//! too: its features pick the matrix kernels (gemm's AVX-512 path).
use std::path::Path;

fn hash_dir(dir: &Path, h: &mut u64) {
    let mut entries: Vec<_> =
        std::fs::read_dir(dir).map(|r| r.flatten().map(|e| e.path()).collect()).unwrap_or_default();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            hash_dir(&p, h);
        } else if p.extension().is_some_and(|e| e == "rs") {
            for b in std::fs::read(&p).unwrap_or_default() {
                *h = (*h ^ b as u64).wrapping_mul(0x0000_0100_0000_01b3);
            }
        }
    }
}

fn main() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut h = 0xcbf2_9ce4_8422_2325u64;
    hash_dir(&src, &mut h);
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml");
    for b in std::fs::read(&manifest).unwrap_or_default() {
        h = (h ^ b as u64).wrapping_mul(0x0000_0100_0000_01b3);
    }
    println!("cargo:rerun-if-changed={}", manifest.display());
    println!("cargo:rustc-env=MNAS_ENGINE_BUILD={:012x}", h & 0xffff_ffff_ffff);
    println!("cargo:rerun-if-changed={}", src.display());
}
