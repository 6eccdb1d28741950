//! Records the git commit the binary was built from (benchmark files carry it).
use std::process::Command;

fn main() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let git = |args: &[&str]| Command::new("git").args(args).current_dir(&root).output().ok();
    if let Some(out) = git(&["rev-parse", "--short=12", "HEAD"]).filter(|o| o.status.success()) {
        let mut commit = String::from_utf8_lossy(&out.stdout).trim().to_string();
        let dirty =
            git(&["status", "--porcelain", "--untracked-files=no"]).map(|o| !o.stdout.is_empty()).unwrap_or(false);
        if dirty {
            commit.push_str("-dirty");
        }
        println!("cargo:rustc-env=MNAS_GIT_COMMIT={commit}");
    }
    for f in ["HEAD", "index"] {
        println!("cargo:rerun-if-changed={}", root.join(".git").join(f).display());
    }
}
