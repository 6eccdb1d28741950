//! The device fingerprint every measurement carries, and the stable key the store files it under.
//!
//! nn-Meter's lesson (DESIGN §1): the same model on the same CPU differs by engine build, thread
//! count and core, so all of them are recorded. Only the fields that change latency go into the
//! key ([`Fingerprint::key`]): CPU identity, SIMD level the engine dispatches on, threads, engine
//! and its version, and the build profile. The core id, clock, OS and mnas version are recorded
//! for the reader but do not split the store.

use serde::{Deserialize, Serialize};

/// The inference engine mnas measures with.
pub const ENGINE: &str = "mnas-engine";
/// Its version and build (a hash of its sources): a rebuilt engine never reuses old timings.
pub const ENGINE_VERSION: &str = mnas_engine::BUILD;
/// The mnas version that took the measurement.
pub const MNAS_VERSION: &str = env!("CARGO_PKG_VERSION");

/// Where and how a measurement was taken.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Fingerprint {
    /// `model name` from /proc/cpuinfo (or the platform's equivalent), e.g. "AMD EPYC 7B13".
    pub cpu_model: String,
    /// Vendor, family, model and stepping: separates CPUs that share a generic model name
    /// (virtual machines often report just "AMD EPYC").
    pub cpu_id: String,
    /// Widest SIMD the engine can use here: "avx512f", "avx2+fma", "sse4.2", "neon", "scalar".
    pub simd: String,
    /// Cores the measuring threads were pinned to, one per thread.
    pub cores: Vec<usize>,
    pub threads: usize,
    pub engine: String,
    pub engine_version: String,
    pub mnas_version: String,
    /// "release" or "debug" (mnas's own code; the engine's kernels are always optimised).
    pub profile: String,
    pub os: String,
    pub arch: String,
    /// Clock of the first pinned core when measured, if the kernel reports it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_mhz: Option<f64>,
}

impl Fingerprint {
    /// The fingerprint of this machine for a measurement with `threads` threads on `cores`.
    pub fn current(threads: usize, cores: Vec<usize>) -> Fingerprint {
        let info = CpuInfo::read();
        let first = cores.first().copied();
        Fingerprint {
            cpu_model: info.model.clone(),
            cpu_id: info.id(),
            simd: simd_level().into(),
            cores,
            threads,
            engine: ENGINE.into(),
            engine_version: ENGINE_VERSION.into(),
            mnas_version: MNAS_VERSION.into(),
            profile: if cfg!(debug_assertions) { "debug" } else { "release" }.into(),
            os: std::env::consts::OS.into(),
            arch: std::env::consts::ARCH.into(),
            cpu_mhz: first.and_then(|c| info.mhz.get(c).copied().flatten()),
        }
    }

    /// Stable key of the fields that affect latency: 16 hex digits of FNV-1a 64 (stable across
    /// Rust versions and platforms, unlike `std`'s hasher).
    pub fn key(&self) -> String {
        let fields = [
            self.cpu_model.as_str(),
            self.cpu_id.as_str(),
            self.simd.as_str(),
            &self.threads.to_string(),
            self.engine.as_str(),
            self.engine_version.as_str(),
            self.profile.as_str(),
        ];
        format!("{:016x}", fnv1a64(fields.join("\u{1f}").as_bytes()))
    }

    /// "core 0", "cores 0,1", or "unpinned" when no core was named.
    pub fn cores_label(&self) -> String {
        let list: Vec<String> = self.cores.iter().map(|c| c.to_string()).collect();
        match self.cores.len() {
            0 => "unpinned".into(),
            1 => format!("core {}", list[0]),
            _ => format!("cores {}", list.join(",")),
        }
    }

    /// One line for people.
    pub fn summary(&self) -> String {
        let mhz = self.cpu_mhz.map(|m| format!(" @ {m:.0} MHz")).unwrap_or_default();
        format!(
            "{} ({}, {}){mhz}, {}, {} thread{}, {} {}, mnas {} {}, {}/{}",
            self.cpu_model,
            self.cpu_id,
            self.simd,
            self.cores_label(),
            self.threads,
            if self.threads == 1 { "" } else { "s" },
            self.engine,
            self.engine_version,
            self.mnas_version,
            self.profile,
            self.os,
            self.arch
        )
    }
}

fn fnv1a64(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// What /proc/cpuinfo says about the CPU.
#[derive(Debug, Default)]
struct CpuInfo {
    model: String,
    vendor: String,
    family: String,
    model_number: String,
    stepping: String,
    /// `cpu MHz` per processor index.
    mhz: Vec<Option<f64>>,
}

impl CpuInfo {
    fn read() -> CpuInfo {
        match std::fs::read_to_string("/proc/cpuinfo") {
            Ok(text) => CpuInfo::parse(&text),
            Err(e) => {
                tracing::debug!("no /proc/cpuinfo ({e}); CPU recorded as unknown");
                CpuInfo::parse("")
            }
        }
    }

    fn parse(text: &str) -> CpuInfo {
        let mut info = CpuInfo::default();
        let mut processor: Option<usize> = None;
        for line in text.lines() {
            let Some((key, value)) = line.split_once(':') else { continue };
            let (key, value) = (key.trim(), value.trim());
            let first = |slot: &mut String| {
                if slot.is_empty() {
                    *slot = value.to_string();
                }
            };
            match key {
                "processor" => processor = value.parse().ok(),
                // x86 says "model name", some ARM kernels "Model" or "Hardware".
                "model name" | "Model" | "Hardware" => first(&mut info.model),
                "vendor_id" | "CPU implementer" => first(&mut info.vendor),
                "cpu family" | "CPU architecture" => first(&mut info.family),
                "model" | "CPU part" => first(&mut info.model_number),
                "stepping" | "CPU revision" => first(&mut info.stepping),
                "cpu MHz" => {
                    if let Some(p) = processor {
                        if info.mhz.len() <= p {
                            info.mhz.resize(p + 1, None);
                        }
                        info.mhz[p] = value.parse().ok();
                    }
                }
                _ => {}
            }
        }
        if info.model.is_empty() {
            info.model = "unknown CPU".into();
        }
        info
    }

    fn id(&self) -> String {
        let part = |label: &str, v: &str| if v.is_empty() { None } else { Some(format!("{label}{v}")) };
        let parts: Vec<String> = [
            part("", &self.vendor),
            part("family ", &self.family),
            part("model ", &self.model_number),
            part("stepping ", &self.stepping),
        ]
        .into_iter()
        .flatten()
        .collect();
        if parts.is_empty() {
            "unknown".into()
        } else {
            parts.join(" ")
        }
    }
}

/// The widest SIMD level available, as the engine's kernels (gemm, macerator) dispatch on it.
pub fn simd_level() -> &'static str {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f") {
            return "avx512f";
        }
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
            return "avx2+fma";
        }
        if std::arch::is_x86_feature_detected!("sse4.2") {
            return "sse4.2";
        }
        "scalar"
    }
    #[cfg(target_arch = "aarch64")]
    {
        "neon"
    }
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    {
        "scalar"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CPUINFO: &str = "processor\t: 0\nvendor_id\t: AuthenticAMD\ncpu family\t: 25\nmodel\t\t: 1\n\
                           model name\t: AMD EPYC 7B13\nstepping\t: 1\ncpu MHz\t\t: 2445.422\n\n\
                           processor\t: 1\nvendor_id\t: AuthenticAMD\ncpu family\t: 25\nmodel\t\t: 1\n\
                           model name\t: AMD EPYC 7B13\nstepping\t: 1\ncpu MHz\t\t: 3000.5\n";

    #[test]
    fn the_summary_names_the_pinned_cores_or_says_unpinned() {
        let one = Fingerprint::current(1, vec![1]);
        assert!(one.summary().contains(", core 1, 1 thread,"), "{}", one.summary());
        let two = Fingerprint::current(2, vec![0, 1]);
        assert!(two.summary().contains(", cores 0,1, 2 threads,"), "{}", two.summary());
        let none = Fingerprint::current(1, Vec::new());
        assert!(none.summary().contains(", unpinned, 1 thread,"), "{}", none.summary());
    }

    #[test]
    fn parses_cpuinfo() {
        let info = CpuInfo::parse(CPUINFO);
        assert_eq!(info.model, "AMD EPYC 7B13");
        assert_eq!(info.id(), "AuthenticAMD family 25 model 1 stepping 1");
        assert_eq!(info.mhz, vec![Some(2445.422), Some(3000.5)]);
        let empty = CpuInfo::parse("");
        assert_eq!((empty.model.as_str(), empty.id().as_str()), ("unknown CPU", "unknown"));
    }

    #[test]
    fn key_depends_on_latency_fields_only() {
        let a = Fingerprint::current(1, vec![0]);
        let mut b = a.clone();
        b.cores = vec![1];
        b.cpu_mhz = Some(1.0);
        b.mnas_version = "9.9.9".into();
        assert_eq!(a.key(), b.key());
        assert_eq!(a.key().len(), 16);
        let mut c = a.clone();
        c.threads = 2;
        assert_ne!(a.key(), c.key());
        let mut d = a.clone();
        d.engine_version = "0.22.0".into();
        assert_ne!(a.key(), d.key());
        // FNV-1a is fixed: the empty string hashes to the offset basis.
        assert_eq!(fnv1a64(b""), 0xcbf2_9ce4_8422_2325);
    }

    #[test]
    fn engine_version_names_the_engine_build() {
        assert!(ENGINE_VERSION.starts_with(env!("CARGO_PKG_VERSION")), "{ENGINE_VERSION}");
        assert!(ENGINE_VERSION.len() > env!("CARGO_PKG_VERSION").len() + 8, "{ENGINE_VERSION}");
    }
}
