//! The latency store: one SQLite table of measurements keyed by what determines latency, so that
//! a search (or a second `mnas latency`) never measures the same network on the same device twice.
//!
//! Key: (canonical arch, resolution, batch, threads, fingerprint key, engine). The canonical arch
//! already names the resolution; it is a column of its own for queries. WAL mode lets several
//! searches on one machine share the file.

use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{params, Connection, ErrorCode, OptionalExtension};

use crate::error::{LatencyError, Result};
use crate::fingerprint::Fingerprint;
use crate::measure::{MeasureOptions, Measurement};
use crate::stats::Stats;
use mnas_space::Arch;

/// Schema version in `PRAGMA user_version`.
const SCHEMA_VERSION: i64 = 1;

const SCHEMA: &str = "CREATE TABLE IF NOT EXISTS latency (
    arch_canonical TEXT NOT NULL,
    resolution INTEGER NOT NULL,
    batch INTEGER NOT NULL,
    threads INTEGER NOT NULL,
    fingerprint TEXT NOT NULL,
    engine TEXT NOT NULL,
    median_ms REAL NOT NULL,
    p10_ms REAL NOT NULL,
    p90_ms REAL NOT NULL,
    mean_ms REAL NOT NULL,
    min_ms REAL NOT NULL,
    cv REAL NOT NULL,
    runs INTEGER NOT NULL,
    warmup INTEGER NOT NULL,
    attempts INTEGER NOT NULL,
    stable INTEGER NOT NULL,
    name TEXT,
    fingerprint_json TEXT NOT NULL,
    measured_at TEXT NOT NULL,
    pace_ms REAL,
    PRIMARY KEY (arch_canonical, resolution, batch, threads, fingerprint, engine)
)";

/// What identifies a stored measurement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Key {
    pub arch: String,
    pub resolution: u32,
    pub batch: usize,
    pub threads: usize,
    /// [`Fingerprint::key`].
    pub fingerprint: String,
    pub engine: String,
}

impl Key {
    pub fn of(m: &Measurement) -> Key {
        Key {
            arch: m.arch.clone(),
            resolution: m.resolution,
            batch: m.batch,
            threads: m.threads,
            fingerprint: m.fingerprint.key(),
            engine: m.fingerprint.engine.clone(),
        }
    }

    /// The key a measurement of `arch` with `opts` gets on the device `fingerprint` describes
    /// (its thread count taken from `opts`): the one place keys are made before measuring.
    pub fn on(fingerprint: &Fingerprint, arch: &Arch, opts: &MeasureOptions) -> Key {
        let mut fp = fingerprint.clone();
        fp.threads = opts.threads;
        Key {
            arch: arch.canonical(),
            resolution: arch.resolution,
            batch: opts.batch,
            threads: opts.threads,
            fingerprint: fp.key(),
            engine: fp.engine,
        }
    }
}

/// An open latency store.
pub struct Store {
    conn: Connection,
    path: PathBuf,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("path", &self.path).finish()
    }
}

impl Store {
    /// Opens (creating it and its directory if needed) the store at `path`.
    pub fn open(path: &Path) -> Result<Store> {
        let err = |reason: String| LatencyError::Store { path: path.to_path_buf(), reason };
        if path.is_dir() {
            return Err(LatencyError::StoreIsDir { path: path.to_path_buf() });
        }
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| err(format!("cannot create directory {}: {e}", dir.display())))?;
        }
        let conn = Connection::open(path).map_err(|e| sql_error(path, e))?;
        let store = Store { conn, path: path.to_path_buf() };
        store.init().map_err(|e| sql_error(path, e))?;
        let version: i64 =
            store.conn.query_row("PRAGMA user_version", [], |r| r.get(0)).map_err(|e| sql_error(path, e))?;
        if version > SCHEMA_VERSION {
            return Err(err(format!(
                "written by a newer mnas (schema {version}, this one reads up to {SCHEMA_VERSION})"
            )));
        }
        tracing::debug!(path = %path.display(), "opened latency store");
        Ok(store)
    }

    /// An in-memory store (tests, `--no-store` callers that still want the API).
    pub fn in_memory() -> Result<Store> {
        let path = PathBuf::from(":memory:");
        let conn = Connection::open_in_memory().map_err(|e| sql_error(&path, e))?;
        let store = Store { conn, path };
        store.init().map_err(|e| sql_error(&store.path, e))?;
        Ok(store)
    }

    fn init(&self) -> rusqlite::Result<()> {
        self.conn.busy_timeout(Duration::from_secs(10))?;
        // Reading the journal mode is the first real read: a file that is not a database fails here.
        let _mode: String = self.conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))?;
        self.conn.execute_batch(SCHEMA)?;
        // Stores written before measurements carried their pace lack the column; it is nullable,
        // so adding it keeps them readable by older builds too (the schema version stays).
        let has_pace =
            self.conn.prepare("SELECT 1 FROM pragma_table_info('latency') WHERE name = 'pace_ms'")?.exists([])?;
        if !has_pace {
            self.conn.execute_batch("ALTER TABLE latency ADD COLUMN pace_ms REAL")?;
        }
        let version: i64 = self.conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
        if version == 0 {
            self.conn.execute_batch(&format!("PRAGMA user_version = {SCHEMA_VERSION}"))?;
        }
        Ok(())
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The stored measurement under `key`, if any.
    pub fn get(&self, key: &Key) -> Result<Option<Measurement>> {
        let row = self
            .conn
            .query_row(
                "SELECT median_ms, p10_ms, p90_ms, mean_ms, min_ms, cv, runs, warmup, attempts, stable, name,
                        fingerprint_json, measured_at, pace_ms
                 FROM latency
                 WHERE arch_canonical = ?1 AND resolution = ?2 AND batch = ?3 AND threads = ?4
                   AND fingerprint = ?5 AND engine = ?6",
                params![key.arch, key.resolution, key.batch as i64, key.threads as i64, key.fingerprint, key.engine],
                |r| {
                    Ok((
                        [r.get::<_, f64>(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?],
                        [r.get::<_, i64>(6)?, r.get(7)?, r.get(8)?, r.get(9)?],
                        r.get::<_, Option<String>>(10)?,
                        r.get::<_, String>(11)?,
                        r.get::<_, String>(12)?,
                        r.get::<_, Option<f64>>(13)?,
                    ))
                },
            )
            .optional()
            .map_err(|e| sql_error(&self.path, e))?;
        let Some(([median, p10, p90, mean, min, cv], [runs, warmup, attempts, stable], name, fp, at, pace)) = row
        else {
            return Ok(None);
        };
        let fingerprint: Fingerprint = serde_json::from_str(&fp).map_err(|e| LatencyError::Store {
            path: self.path.clone(),
            reason: format!("unreadable fingerprint for {}: {e}", key.arch),
        })?;
        let count = |v: i64| usize::try_from(v).unwrap_or(0);
        Ok(Some(Measurement {
            arch: key.arch.clone(),
            name,
            resolution: key.resolution,
            batch: key.batch,
            threads: key.threads,
            stats: Stats {
                median_ms: median,
                p10_ms: p10,
                p90_ms: p90,
                mean_ms: mean,
                min_ms: min,
                cv,
                runs: count(runs),
            },
            warmup: count(warmup),
            attempts: count(attempts),
            stable: stable != 0,
            fingerprint,
            measured_at: at,
            per_layer: None,
            pace_ms: pace,
        }))
    }

    /// The fastest pace among the measurements on `key`'s device, engine and thread count: how
    /// fast this machine can run, as far as the store knows.
    pub fn best_pace(&self, key: &Key) -> Result<Option<f64>> {
        self.conn
            .query_row(
                "SELECT MIN(pace_ms) FROM latency WHERE fingerprint = ?1 AND engine = ?2 AND threads = ?3",
                params![key.fingerprint, key.engine, key.threads as i64],
                |r| r.get::<_, Option<f64>>(0),
            )
            .map_err(|e| sql_error(&self.path, e))
    }

    /// Stores `m`, replacing an earlier measurement under the same key.
    pub fn put(&self, m: &Measurement) -> Result<()> {
        let key = Key::of(m);
        let fp = serde_json::to_string(&m.fingerprint)
            .map_err(|e| LatencyError::Store { path: self.path.clone(), reason: e.to_string() })?;
        self.conn
            .execute(
                "INSERT OR REPLACE INTO latency (arch_canonical, resolution, batch, threads, fingerprint, engine,
                    median_ms, p10_ms, p90_ms, mean_ms, min_ms, cv, runs, warmup, attempts, stable, name,
                    fingerprint_json, measured_at, pace_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, ?20)",
                params![
                    key.arch,
                    key.resolution,
                    key.batch as i64,
                    key.threads as i64,
                    key.fingerprint,
                    key.engine,
                    m.stats.median_ms,
                    m.stats.p10_ms,
                    m.stats.p90_ms,
                    m.stats.mean_ms,
                    m.stats.min_ms,
                    m.stats.cv,
                    m.stats.runs as i64,
                    m.warmup as i64,
                    m.attempts as i64,
                    m.stable,
                    m.name,
                    fp,
                    m.measured_at,
                    m.pace_ms,
                ],
            )
            .map_err(|e| sql_error(&self.path, e))?;
        Ok(())
    }

    /// Number of stored measurements.
    pub fn len(&self) -> Result<usize> {
        let n: i64 = self
            .conn
            .query_row("SELECT COUNT(*) FROM latency", [], |r| r.get(0))
            .map_err(|e| sql_error(&self.path, e))?;
        Ok(usize::try_from(n).unwrap_or(0))
    }

    pub fn is_empty(&self) -> Result<bool> {
        Ok(self.len()? == 0)
    }
}

/// A SQLite error as a one-line store error; "not a database" gets its own message.
fn sql_error(path: &Path, e: rusqlite::Error) -> LatencyError {
    match e.sqlite_error_code() {
        Some(ErrorCode::NotADatabase) => LatencyError::NotADatabase { path: path.to_path_buf() },
        _ => LatencyError::Store { path: path.to_path_buf(), reason: e.to_string().replace('\n', " ") },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn sample(arch: &str, median: f64) -> Measurement {
        Measurement {
            arch: arch.into(),
            name: Some("test".into()),
            resolution: 64,
            batch: 1,
            threads: 1,
            stats: Stats {
                median_ms: median,
                p10_ms: median * 0.9,
                p90_ms: median * 1.2,
                mean_ms: median,
                min_ms: median * 0.8,
                cv: 0.05,
                runs: 10,
            },
            warmup: 2,
            attempts: 1,
            stable: true,
            fingerprint: Fingerprint::current(1, vec![0]),
            measured_at: "2026-11-28T00:00:00Z".into(),
            per_layer: None,
            pace_ms: Some(0.5),
        }
    }

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("mnas-latency-store-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn round_trip_and_replace() {
        let dir = scratch("round-trip");
        let path = dir.join("nested/latency.sqlite");
        let m = sample("stem32|x|r64", 3.5);
        {
            let store = Store::open(&path).unwrap();
            assert!(store.get(&Key::of(&m)).unwrap().is_none());
            store.put(&m).unwrap();
            assert_eq!(store.len().unwrap(), 1);
        }
        // A fresh connection reads what the first wrote.
        let store = Store::open(&path).unwrap();
        assert_eq!(store.get(&Key::of(&m)).unwrap().as_ref(), Some(&m));
        let mut other_threads = m.clone();
        other_threads.threads = 2;
        other_threads.fingerprint.threads = 2;
        assert!(store.get(&Key::of(&other_threads)).unwrap().is_none());
        let newer = Measurement { stats: Stats { median_ms: 4.0, ..m.stats }, ..m.clone() };
        store.put(&newer).unwrap();
        assert_eq!(store.len().unwrap(), 1);
        assert_eq!(store.get(&Key::of(&m)).unwrap().map(|g| g.stats.median_ms), Some(4.0));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_store_written_before_paces_were_recorded_still_reads() {
        let dir = scratch("old-schema");
        let path = dir.join("latency.sqlite");
        let m = sample("stem32|x|r64", 3.5);
        {
            // The table as mnas wrote it before the pace column.
            let conn = Connection::open(&path).unwrap();
            conn.execute_batch(&SCHEMA.replace("    pace_ms REAL,\n", "")).unwrap();
            conn.execute_batch("PRAGMA user_version = 1").unwrap();
            let fp = serde_json::to_string(&m.fingerprint).unwrap();
            let key = Key::of(&m);
            conn.execute(
                "INSERT INTO latency VALUES (?1, 64, 1, 1, ?2, ?3, 3.5, 3.0, 4.0, 3.5, 2.8, 0.05, 10, 2, 1, 1, 'test', \
                 ?4, '2026-11-28T00:00:00Z')",
                params![key.arch, key.fingerprint, key.engine, fp],
            )
            .unwrap();
        }
        let store = Store::open(&path).unwrap();
        let old = store.get(&Key::of(&m)).unwrap().expect("the old row");
        assert_eq!((old.stats.median_ms, old.pace_ms), (3.5, None));
        assert_eq!(store.best_pace(&Key::of(&m)).unwrap(), None);
        store.put(&Measurement { arch: "other".into(), pace_ms: Some(0.7), ..m.clone() }).unwrap();
        store.put(&Measurement { arch: "third".into(), pace_ms: Some(0.6), ..m.clone() }).unwrap();
        assert_eq!(store.best_pace(&Key::of(&m)).unwrap(), Some(0.6));
        let mut elsewhere = m.clone();
        elsewhere.threads = 2;
        elsewhere.fingerprint.threads = 2;
        assert_eq!(store.best_pace(&Key::of(&elsewhere)).unwrap(), None, "another thread count is another pace");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn junk_file_and_directory_are_clear_errors() {
        let dir = scratch("bad");
        let junk = dir.join("junk.sqlite");
        std::fs::write(&junk, vec![b'x'; 4096]).unwrap();
        let e = Store::open(&junk).unwrap_err().to_string();
        assert!(e.contains("not a SQLite database") && e.contains("junk.sqlite"), "{e}");
        let e = Store::open(&dir).unwrap_err().to_string();
        assert!(e.contains("is a directory"), "{e}");
        assert_eq!(std::fs::read(&junk).unwrap(), vec![b'x'; 4096], "the junk file is left as it was");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
