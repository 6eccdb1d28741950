//! The trial store: `RUN/search.sqlite`, everything a search has done, so that a killed search
//! resumes where it stopped and a report can be drawn at any moment.
//!
//! - One writer per run: [`RunStore::create`] and [`RunStore::open`] take an exclusive lock on
//!   `RUN/lock` (see [`lock`]); readers ([`RunStore::open_read_only`]) take none and see every
//!   committed row while a search runs (WAL mode).
//! - Durability: WAL with `synchronous = FULL`, one transaction per write, so a trial that
//!   `put_trial` returned for survives kill -9 and power loss. A failing write (disk full, I/O
//!   error, duplicate key) returns the error and rolls back; earlier rows stay intact.
//! - Identity: the file carries [`APPLICATION_ID`] in its header and a `run` row with the schema
//!   version, so a foreign or damaged `search.sqlite` is refused, never modified.
//! - Creation is atomic: the schema is written to a temporary file that is renamed into place.
//!
//! Trials are rows keyed by (step, index); the queryable fields are columns, the whole [`Trial`]
//! is kept as JSON in `record`, so a field added to `Trial` (with `#[serde(default)]`) needs no
//! schema change. Strategy states are kept for the last [`KEPT_STATES`] steps only: a resume needs
//! the latest, and a PPO state (weights plus optimizer moments) is ~1 MB per step.

mod lock;

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rusqlite::{params, Connection, ErrorCode, OpenFlags, OptionalExtension};

use crate::error::{Result, SearchError};
use crate::trial::{Trial, TrialStatus};

pub use lock::LOCK_FILE;

/// The database file inside a run directory.
pub const STORE_FILE: &str = "search.sqlite";
/// `PRAGMA application_id` of a trial store: "mnas" in ASCII.
pub const APPLICATION_ID: i32 = 0x6d6e_6173;
/// Schema version in the `run` row (and `PRAGMA user_version`).
pub const SCHEMA_VERSION: i64 = 1;
/// How many strategy states (the latest steps) are kept.
pub const KEPT_STATES: i64 = 3;

/// Well-known [`RunStore::meta`] keys, written by the search and read by the report.
pub mod meta_keys {
    /// Target latency T in ms as resolved at start (a number as text).
    pub const TARGET_MS: &str = "target_ms";
    /// "ppo", "random" or "evolution".
    pub const STRATEGY: &str = "strategy";
    /// Human-readable reward constraint, e.g. "soft (alpha = beta = -0.07)".
    pub const CONSTRAINT: &str = "constraint";
    /// "running" or "finished".
    pub const STATUS: &str = "status";
    /// Where latency is measured, in words.
    pub const DEVICE: &str = "device";
}

const SCHEMA: &str = "
CREATE TABLE run (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    schema_version INTEGER NOT NULL,
    config TEXT NOT NULL,
    created_unix INTEGER NOT NULL,
    steps_done INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE trials (
    step INTEGER NOT NULL,
    idx INTEGER NOT NULL,
    arch TEXT NOT NULL,
    status TEXT NOT NULL,
    accuracy REAL,
    latency_ms REAL,
    reward REAL NOT NULL,
    params INTEGER NOT NULL,
    macs INTEGER NOT NULL,
    record TEXT NOT NULL,
    PRIMARY KEY (step, idx)
);
CREATE INDEX trials_by_arch ON trials (arch, status);
CREATE TABLE strategy_state (
    step INTEGER PRIMARY KEY,
    state BLOB NOT NULL,
    saved_unix INTEGER NOT NULL
);
";

/// An open trial store of one run directory.
pub struct RunStore {
    conn: Connection,
    dir: PathBuf,
    db: PathBuf,
    /// `None` for read-only handles.
    lock: Option<lock::WriterLock>,
}

impl std::fmt::Debug for RunStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunStore").field("db", &self.db).field("writer", &self.lock.is_some()).finish()
    }
}

fn unix_now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
}

fn run_error(dir: &Path, message: impl Into<String>) -> SearchError {
    SearchError::Run { dir: dir.display().to_string(), message: message.into() }
}

fn store_error(db: &Path, message: impl Into<String>) -> SearchError {
    SearchError::Store { path: db.display().to_string(), message: message.into() }
}

/// SQLite errors with the file named and the common causes said in words.
fn sql_error(db: &Path, e: rusqlite::Error) -> SearchError {
    let message = match e.sqlite_error_code() {
        Some(ErrorCode::NotADatabase) => "not an mnas trial store (not a SQLite database)".to_string(),
        Some(ErrorCode::DiskFull) => format!("disk full, nothing written by this call ({e})"),
        Some(ErrorCode::SystemIoFailure) => format!("I/O error, nothing written by this call ({e})"),
        Some(ErrorCode::ReadOnly) => format!("read-only ({e})"),
        Some(ErrorCode::DatabaseCorrupt) => format!("damaged database ({e})"),
        _ => e.to_string(),
    };
    store_error(db, message)
}

fn to_i64(v: u64, what: &str, db: &Path) -> Result<i64> {
    i64::try_from(v).map_err(|_| store_error(db, format!("{what} {v} does not fit a SQLite integer")))
}

/// Ok trials must carry real measurements: the report and the Pareto front rely on it, and
/// SQLite would silently turn a NaN into NULL.
fn check_trial(t: &Trial, db: &Path) -> Result<()> {
    let at = format!("trial (step {}, index {})", t.step, t.index);
    if !t.reward.is_finite() {
        return Err(store_error(db, format!("{at}: reward is {}; store failed trials with FAILED_REWARD", t.reward)));
    }
    if let Some(q) = t.quality.filter(|q| !q.is_finite()) {
        return Err(store_error(db, format!("{at}: quality is {q}")));
    }
    for (name, v) in [("accuracy", t.accuracy), ("latency_ms", t.latency_ms)] {
        match v {
            Some(x) if !x.is_finite() => return Err(store_error(db, format!("{at}: {name} is {x}"))),
            None if t.status == TrialStatus::Ok => {
                return Err(store_error(db, format!("{at}: status ok without {name}; mark it failed with a reason")))
            }
            _ => {}
        }
    }
    Ok(())
}

impl RunStore {
    /// Starts a new run in `dir` (created if missing) with its configuration. Refuses a
    /// directory that already holds a store, or one another process holds.
    pub fn create(dir: &Path, config: &serde_json::Value) -> Result<RunStore> {
        if dir.exists() && !dir.is_dir() {
            return Err(run_error(dir, "exists and is not a directory"));
        }
        std::fs::create_dir_all(dir).map_err(|e| run_error(dir, format!("cannot create the directory: {e}")))?;
        let lock = lock::WriterLock::acquire(dir)?;
        let db = dir.join(STORE_FILE);
        if db.exists() {
            return Err(run_error(
                dir,
                format!("already holds a trial store ({}); resume it or choose another directory", db.display()),
            ));
        }
        // With the lock held and no store, leftovers are from a crashed create or a deleted store.
        // A stale -wal next to a fresh database would be replayed into it, so they must go.
        let tmp = dir.join(format!("{STORE_FILE}.creating"));
        for leftover in [tmp.clone(), dir.join(format!("{STORE_FILE}-wal")), dir.join(format!("{STORE_FILE}-shm"))] {
            if leftover.exists() {
                tracing::warn!(path = %leftover.display(), "removing a leftover of an earlier run");
                std::fs::remove_file(&leftover)
                    .map_err(|e| run_error(dir, format!("cannot remove {}: {e}", leftover.display())))?;
            }
        }
        let config_text = serde_json::to_string(config)?;
        {
            let conn = Connection::open(&tmp).map_err(|e| sql_error(&tmp, e))?;
            conn.execute_batch(&format!(
                "PRAGMA application_id = {APPLICATION_ID};
                 PRAGMA user_version = {SCHEMA_VERSION};
                 BEGIN;
                 {SCHEMA}
                 COMMIT;"
            ))
            .map_err(|e| sql_error(&tmp, e))?;
            conn.execute(
                "INSERT INTO run (id, schema_version, config, created_unix) VALUES (1, ?1, ?2, ?3)",
                params![SCHEMA_VERSION, config_text, unix_now()],
            )
            .map_err(|e| sql_error(&tmp, e))?;
            conn.close().map_err(|(_, e)| sql_error(&tmp, e))?;
        }
        std::fs::File::open(&tmp)
            .and_then(|f| f.sync_all())
            .and_then(|_| std::fs::rename(&tmp, &db))
            .and_then(|_| std::fs::File::open(dir))
            .and_then(|d| d.sync_all())
            .map_err(|e| run_error(dir, format!("cannot put {} in place: {e}", db.display())))?;
        tracing::info!(path = %db.display(), "created trial store");
        Self::open_locked(dir, lock)
    }

    /// Opens an existing run for writing (resume). Refuses a missing directory, one without a
    /// store, a foreign or newer file, and a run another process holds.
    pub fn open(dir: &Path) -> Result<RunStore> {
        Self::check_dir(dir)?;
        let lock = lock::WriterLock::acquire(dir)?;
        Self::open_locked(dir, lock)
    }

    /// Opens a run for reading only: no lock, works while a search writes to it.
    pub fn open_read_only(dir: &Path) -> Result<RunStore> {
        let db = Self::check_dir(dir)?;
        let conn = Connection::open_with_flags(&db, OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX)
            .map_err(|e| sql_error(&db, e))?;
        let store = RunStore { conn, dir: dir.to_path_buf(), db, lock: None };
        store.conn.busy_timeout(Duration::from_secs(10)).map_err(|e| sql_error(&store.db, e))?;
        store.check_identity()?;
        Ok(store)
    }

    fn check_dir(dir: &Path) -> Result<PathBuf> {
        if !dir.exists() {
            return Err(run_error(dir, "no such directory"));
        }
        if !dir.is_dir() {
            return Err(run_error(dir, "not a directory"));
        }
        let db = dir.join(STORE_FILE);
        if !db.is_file() {
            return Err(run_error(dir, format!("not a run directory: no {STORE_FILE} in it")));
        }
        Ok(db)
    }

    fn open_locked(dir: &Path, lock: lock::WriterLock) -> Result<RunStore> {
        let db = dir.join(STORE_FILE);
        // No SQLITE_OPEN_CREATE: the file must be there; a vanished one is an error, not a new store.
        let conn =
            Connection::open_with_flags(&db, OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX)
                .map_err(|e| sql_error(&db, e))?;
        let store = RunStore { conn, dir: dir.to_path_buf(), db, lock: Some(lock) };
        store.conn.busy_timeout(Duration::from_secs(10)).map_err(|e| sql_error(&store.db, e))?;
        // Identity first: the WAL switch below writes to the file, and a foreign file is never modified.
        store.check_identity()?;
        let mode: String =
            store.conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0)).map_err(|e| sql_error(&store.db, e))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(store_error(&store.db, format!("cannot switch to WAL mode (got {mode})")));
        }
        store.conn.execute_batch("PRAGMA synchronous = FULL").map_err(|e| sql_error(&store.db, e))?;
        tracing::debug!(path = %store.db.display(), "opened trial store for writing");
        Ok(store)
    }

    fn check_identity(&self) -> Result<()> {
        let id: i32 =
            self.conn.query_row("PRAGMA application_id", [], |r| r.get(0)).map_err(|e| sql_error(&self.db, e))?;
        if id != APPLICATION_ID {
            return Err(store_error(
                &self.db,
                format!("not an mnas trial store (SQLite application_id {id:#x}, expected {APPLICATION_ID:#x})"),
            ));
        }
        let version: Option<i64> = self
            .conn
            .query_row("SELECT schema_version FROM run WHERE id = 1", [], |r| r.get(0))
            .optional()
            .map_err(|e| store_error(&self.db, format!("damaged trial store: {e}")))?;
        match version {
            None => Err(store_error(&self.db, "damaged trial store: its run row is missing")),
            Some(v) if v > SCHEMA_VERSION => Err(store_error(
                &self.db,
                format!("written by a newer mnas (schema {v}, this one reads up to {SCHEMA_VERSION})"),
            )),
            Some(_) => Ok(()),
        }
    }

    /// The run directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// `RUN/search.sqlite`.
    pub fn path(&self) -> &Path {
        &self.db
    }

    /// Whether this handle holds the writer lock.
    pub fn is_writer(&self) -> bool {
        self.lock.is_some()
    }

    fn sql<T>(&self, r: rusqlite::Result<T>) -> Result<T> {
        r.map_err(|e| sql_error(&self.db, e))
    }

    /// The configuration given to [`RunStore::create`].
    pub fn config(&self) -> Result<serde_json::Value> {
        let text: String = self.sql(self.conn.query_row("SELECT config FROM run WHERE id = 1", [], |r| r.get(0)))?;
        serde_json::from_str(&text).map_err(|e| store_error(&self.db, format!("unreadable config: {e}")))
    }

    /// Stores a finished trial in its own transaction. A second trial with the same
    /// (step, index) is an error; so is an ok trial without finite accuracy and latency.
    pub fn put_trial(&self, t: &Trial) -> Result<()> {
        check_trial(t, &self.db)?;
        let record = serde_json::to_string(t)?;
        let (step, idx) = (to_i64(t.step, "step", &self.db)?, to_i64(t.index, "index", &self.db)?);
        let r = self.conn.execute(
            "INSERT INTO trials (step, idx, arch, status, accuracy, latency_ms, reward, params, macs, record)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
            params![
                step,
                idx,
                t.arch,
                t.status.as_str(),
                t.accuracy,
                t.latency_ms,
                t.reward,
                to_i64(t.params, "params", &self.db)?,
                to_i64(t.macs, "macs", &self.db)?,
                record
            ],
        );
        match r {
            Err(e) if e.sqlite_error_code() == Some(ErrorCode::ConstraintViolation) => {
                Err(store_error(&self.db, format!("trial (step {}, index {}) is already stored", t.step, t.index)))
            }
            r => self.sql(r).map(|_| ()),
        }
    }

    fn query_trials(&self, sql: &str, args: impl rusqlite::Params) -> Result<Vec<Trial>> {
        let mut stmt = self.sql(self.conn.prepare(sql))?;
        let rows = self.sql(stmt.query_map(args, |r| Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?, r.get(2)?))))?;
        let mut out = Vec::new();
        for row in rows {
            let (step, idx, record): (i64, i64, String) = self.sql(row)?;
            let t: Trial = serde_json::from_str(&record)
                .map_err(|e| store_error(&self.db, format!("unreadable trial (step {step}, index {idx}): {e}")))?;
            out.push(t);
        }
        Ok(out)
    }

    /// Every trial, ordered by (step, index).
    pub fn trials(&self) -> Result<Vec<Trial>> {
        self.query_trials("SELECT step, idx, record FROM trials ORDER BY step, idx", [])
    }

    /// The trials of one step, ordered by index (a resumed step skips the ones already there).
    pub fn trials_of_step(&self, step: u64) -> Result<Vec<Trial>> {
        let step = to_i64(step, "step", &self.db)?;
        self.query_trials("SELECT step, idx, record FROM trials WHERE step = ?1 ORDER BY idx", [step])
    }

    /// Number of stored trials.
    pub fn trial_count(&self) -> Result<u64> {
        let n: i64 = self.sql(self.conn.query_row("SELECT COUNT(*) FROM trials", [], |r| r.get(0)))?;
        Ok(n as u64)
    }

    /// The latest ok trial of the arch with this canonical string, to reuse its measurements.
    pub fn find_by_arch(&self, canonical: &str) -> Result<Option<Trial>> {
        let found = self.query_trials(
            "SELECT step, idx, record FROM trials WHERE arch = ?1 AND status = 'ok'
             ORDER BY step DESC, idx DESC LIMIT 1",
            [canonical],
        )?;
        Ok(found.into_iter().next())
    }

    /// Saves the strategy's state after `step` finished and sets `steps_done = step + 1`, in one
    /// transaction. Steps must increase. States older than the last [`KEPT_STATES`] are dropped.
    pub fn put_strategy_state(&self, step: u64, bytes: &[u8]) -> Result<()> {
        let step_i = to_i64(step, "step", &self.db)?;
        let tx = self.sql(self.conn.unchecked_transaction())?;
        let latest: Option<i64> = self.sql(tx.query_row("SELECT MAX(step) FROM strategy_state", [], |r| r.get(0)))?;
        if let Some(latest) = latest.filter(|&l| l >= step_i) {
            return Err(store_error(
                &self.db,
                format!("strategy state for step {step} after step {latest}: steps must increase"),
            ));
        }
        self.sql(tx.execute(
            "INSERT INTO strategy_state (step, state, saved_unix) VALUES (?1, ?2, ?3)",
            params![step_i, bytes, unix_now()],
        ))?;
        self.sql(tx.execute("UPDATE run SET steps_done = ?1 WHERE id = 1", [step_i + 1]))?;
        self.sql(tx.execute(
            "DELETE FROM strategy_state WHERE step NOT IN
                (SELECT step FROM strategy_state ORDER BY step DESC LIMIT ?1)",
            [KEPT_STATES],
        ))?;
        self.sql(tx.commit())
    }

    /// The last saved strategy state and the step it follows, if any step finished.
    pub fn latest_strategy_state(&self) -> Result<Option<(u64, Vec<u8>)>> {
        let row: Option<(i64, Vec<u8>)> = self.sql(
            self.conn
                .query_row("SELECT step, state FROM strategy_state ORDER BY step DESC LIMIT 1", [], |r| {
                    Ok((r.get(0)?, r.get(1)?))
                })
                .optional(),
        )?;
        Ok(row.map(|(s, b)| (s as u64, b)))
    }

    /// Controller steps whose state was saved: the step a resume starts at.
    pub fn steps_done(&self) -> Result<u64> {
        let n: i64 = self.sql(self.conn.query_row("SELECT steps_done FROM run WHERE id = 1", [], |r| r.get(0)))?;
        Ok(n as u64)
    }

    /// Sets a small named value (see [`meta_keys`]), replacing an earlier one.
    pub fn set_meta(&self, key: &str, value: &str) -> Result<()> {
        self.sql(self.conn.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?1, ?2)", [key, value]))
            .map(|_| ())
    }

    pub fn meta(&self, key: &str) -> Result<Option<String>> {
        self.sql(self.conn.query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0)).optional())
    }

    /// Every meta value, sorted by key.
    pub fn all_meta(&self) -> Result<Vec<(String, String)>> {
        let mut stmt = self.sql(self.conn.prepare("SELECT key, value FROM meta ORDER BY key"))?;
        let rows = self.sql(stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?))))?;
        rows.map(|r| self.sql(r)).collect()
    }
}

#[cfg(test)]
pub(crate) mod tests;
