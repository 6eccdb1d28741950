use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use mnas_space::{count, SearchSpace};

use super::*;

/// Serialises the tests that spawn processes with those that release a writer lock and take it
/// again at once: between fork and exec a child shares every descriptor of this process, the
/// lock's included, so a reopen right after a drop can meet the lock still held by that child.
/// (A real search is one writer per process; its children exec and drop the descriptor.)
static FORK_GUARD: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    FORK_GUARD.lock().unwrap_or_else(|e| e.into_inner())
}

/// A fresh, empty temporary path for one test.
pub(crate) fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("mnas-store-test-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// A trial of a real sampled arch (also used by the report tests). Accuracy and latency are test values derived from the MAC
/// count, not measurements.
pub(crate) fn trial(step: u64, index: u64, seed: u64) -> Trial {
    let (tokens, arch) = SearchSpace::default().sample(seed, 1).remove(0);
    let c = count(&arch);
    let latency = c.macs as f64 / 4.0e7;
    let accuracy = 0.5 + 0.05 * (c.macs as f64 / 1e8).ln();
    Trial {
        step,
        index,
        tokens,
        arch: arch.canonical(),
        arch_json: serde_json::to_value(&arch).unwrap(),
        params: c.params,
        macs: c.macs,
        accuracy: Some(accuracy),
        quality: None,
        latency_ms: Some(latency),
        fingerprint: Some(serde_json::json!({"cpu": "test"})),
        reward: accuracy * (latency / 10.0f64).powf(-0.07),
        status: TrialStatus::Ok,
        reason: None,
        train_seconds: 1.5,
        latency_seconds: 0.25,
        reused: false,
        finished_at: "2026-11-28T10:00:00Z".into(),
    }
}

pub(crate) fn failed(step: u64, index: u64, seed: u64) -> Trial {
    Trial {
        accuracy: None,
        latency_ms: None,
        reward: crate::reward::FAILED_REWARD,
        status: TrialStatus::Failed,
        reason: Some("loss became NaN at epoch 1".into()),
        ..trial(step, index, seed)
    }
}

fn message(r: Result<RunStore>) -> String {
    match r {
        Ok(s) => panic!("expected an error, got {s:?}"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn create_reopen_round_trip() {
    let _serial = serial();
    let dir = scratch("roundtrip");
    let config = serde_json::json!({"strategy": "ppo", "steps": 10, "target_ms": 12.5});
    let written = vec![trial(1, 1, 5), trial(0, 1, 3), trial(0, 0, 2), failed(1, 0, 4)];
    {
        let s = RunStore::create(&dir, &config).unwrap();
        assert!(s.is_writer());
        for t in &written {
            s.put_trial(t).unwrap();
        }
        s.put_strategy_state(0, b"after step 0").unwrap();
        s.set_meta(meta_keys::STATUS, "running").unwrap();
        s.set_meta(meta_keys::STATUS, "finished").unwrap();
        s.set_meta(meta_keys::TARGET_MS, "12.5").unwrap();
    }
    let s = RunStore::open(&dir).unwrap();
    assert_eq!(s.config().unwrap(), config);
    let got = s.trials().unwrap();
    let keys: Vec<(u64, u64)> = got.iter().map(|t| (t.step, t.index)).collect();
    assert_eq!(keys, vec![(0, 0), (0, 1), (1, 0), (1, 1)]);
    assert_eq!(got[0], written[2]);
    assert_eq!(got[2], written[3]);
    assert_eq!(s.trials_of_step(1).unwrap(), vec![written[3].clone(), written[0].clone()]);
    assert!(s.trials_of_step(7).unwrap().is_empty());
    assert_eq!(s.trial_count().unwrap(), 4);
    assert_eq!(s.latest_strategy_state().unwrap(), Some((0, b"after step 0".to_vec())));
    assert_eq!(s.steps_done().unwrap(), 1);
    assert_eq!(s.meta(meta_keys::STATUS).unwrap().as_deref(), Some("finished"));
    assert_eq!(s.meta("absent").unwrap(), None);
    assert_eq!(s.all_meta().unwrap().len(), 2);
    // The failed trial of seed 4 shares no arch with an ok one; seed 5's arch is found.
    assert_eq!(s.find_by_arch(&written[0].arch).unwrap(), Some(written[0].clone()));
    assert_eq!(s.find_by_arch(&written[3].arch).unwrap(), None);
    assert_eq!(s.find_by_arch("stem32|nothing").unwrap(), None);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn find_by_arch_returns_the_latest_ok_trial() {
    let dir = scratch("reuse");
    let s = RunStore::create(&dir, &serde_json::json!({})).unwrap();
    let first = trial(0, 0, 9);
    let again = Trial { step: 3, index: 2, reused: true, ..trial(0, 0, 9) };
    let broken = Trial { step: 4, ..failed(0, 0, 9) };
    for t in [&first, &again, &broken] {
        s.put_trial(t).unwrap();
    }
    assert_eq!(s.find_by_arch(&first.arch).unwrap(), Some(again));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn create_refuses_an_existing_store_and_a_file_path() {
    let _serial = serial();
    let dir = scratch("exists");
    drop(RunStore::create(&dir, &serde_json::json!({"a": 1})).unwrap());
    let m = message(RunStore::create(&dir, &serde_json::json!({"a": 2})));
    assert!(m.contains("already holds a trial store"), "{m}");
    // The first config is untouched.
    assert_eq!(RunStore::open(&dir).unwrap().config().unwrap()["a"], 1);
    let file = dir.join("plain-file");
    std::fs::write(&file, "x").unwrap();
    let m = message(RunStore::create(&file, &serde_json::json!({})));
    assert!(m.contains("not a directory"), "{m}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn duplicate_or_invalid_trials_are_refused_and_earlier_rows_survive() {
    let dir = scratch("dup");
    let s = RunStore::create(&dir, &serde_json::json!({})).unwrap();
    let t = trial(2, 0, 1);
    s.put_trial(&t).unwrap();
    let other = Trial { accuracy: Some(0.99), ..trial(2, 0, 7) };
    let e = s.put_trial(&other).unwrap_err().to_string();
    assert!(e.contains("(step 2, index 0) is already stored"), "{e}");
    let e = s.put_trial(&Trial { index: 1, reward: f64::NAN, ..t.clone() }).unwrap_err().to_string();
    assert!(e.contains("reward is NaN"), "{e}");
    let e = s.put_trial(&Trial { index: 2, latency_ms: None, ..t.clone() }).unwrap_err().to_string();
    assert!(e.contains("status ok without latency_ms"), "{e}");
    let e = s.put_trial(&Trial { index: 3, accuracy: Some(f64::INFINITY), ..t.clone() }).unwrap_err().to_string();
    assert!(e.contains("accuracy is inf"), "{e}");
    assert_eq!(s.trials().unwrap(), vec![t]);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn strategy_states_keep_the_last_few_and_steps_must_increase() {
    let dir = scratch("state");
    let s = RunStore::create(&dir, &serde_json::json!({})).unwrap();
    assert_eq!(s.latest_strategy_state().unwrap(), None);
    assert_eq!(s.steps_done().unwrap(), 0);
    for step in 0..6u64 {
        s.put_strategy_state(step, &[step as u8; 3]).unwrap();
    }
    let e = s.put_strategy_state(5, b"again").unwrap_err().to_string();
    assert!(e.contains("steps must increase"), "{e}");
    let e = s.put_strategy_state(2, b"back").unwrap_err().to_string();
    assert!(e.contains("steps must increase"), "{e}");
    assert_eq!(s.latest_strategy_state().unwrap(), Some((5, vec![5u8; 3])));
    assert_eq!(s.steps_done().unwrap(), 6);
    let kept: i64 = s.conn.query_row("SELECT COUNT(*) FROM strategy_state", [], |r| r.get(0)).unwrap();
    assert_eq!(kept, KEPT_STATES);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_second_writer_in_the_same_process_is_refused_readers_are_not() {
    let _serial = serial();
    let dir = scratch("lock-same");
    let w = RunStore::create(&dir, &serde_json::json!({})).unwrap();
    let me = std::process::id();
    let m = message(RunStore::open(&dir));
    assert!(m.contains(&format!("in use by another mnas process (pid {me})")), "{m}");
    assert!(m.contains(&dir.display().to_string()), "{m}");
    let m = message(RunStore::create(&dir, &serde_json::json!({})));
    assert!(m.contains("in use by another mnas process"), "{m}");
    // A reader opened before a write sees it: every query is a fresh read transaction.
    let r = RunStore::open_read_only(&dir).unwrap();
    assert!(!r.is_writer());
    assert_eq!(r.trial_count().unwrap(), 0);
    w.put_trial(&trial(0, 0, 1)).unwrap();
    assert_eq!(r.trials().unwrap().len(), 1);
    assert!(r.put_trial(&trial(0, 1, 2)).is_err(), "a read-only handle must not write");
    drop(w);
    let again = RunStore::open(&dir).unwrap();
    assert_eq!(again.trial_count().unwrap(), 1);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn read_only_open_of_a_closed_store() {
    let dir = scratch("ro-closed");
    {
        let w = RunStore::create(&dir, &serde_json::json!({"k": "v"})).unwrap();
        w.put_trial(&trial(0, 0, 3)).unwrap();
    }
    // The last writer's close checkpoints and removes the WAL; a reader still opens it.
    let r = RunStore::open_read_only(&dir).unwrap();
    assert_eq!(r.trials().unwrap().len(), 1);
    assert_eq!(r.config().unwrap()["k"], "v");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Env var that turns the ignored `child_holds_or_tries_the_lock` into a child process's body.
const CHILD_ENV: &str = "MNAS_STORE_TEST_CHILD";

fn child(mode: &str, dir: &Path) -> Command {
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args([
        "--exact",
        "store::tests::child_holds_or_tries_the_lock",
        "--ignored",
        "--nocapture",
        "--test-threads=1",
    ])
    .env(CHILD_ENV, format!("{mode}:{}", dir.display()))
    .stdout(Stdio::piped())
    .stderr(Stdio::null());
    cmd
}

/// Not a test of its own: the body of the child processes the lock tests start.
#[test]
#[ignore = "run by the lock tests as a child process"]
fn child_holds_or_tries_the_lock() {
    let Ok(spec) = std::env::var(CHILD_ENV) else { return };
    let (mode, dir) = spec.split_once(':').unwrap();
    match (mode, RunStore::open(Path::new(dir))) {
        ("hold", Ok(store)) => {
            store.put_trial(&trial(0, 0, 1)).unwrap();
            println!("CHILD locked");
            std::thread::sleep(Duration::from_secs(60));
        }
        (_, Ok(_)) => println!("CHILD opened"),
        (_, Err(e)) => println!("CHILD refused: {e}"),
    }
}

#[test]
fn another_process_is_refused_while_the_lock_is_held_and_gets_it_after_kill_9() {
    let _serial = serial();
    let dir = scratch("lock-child");
    let w = RunStore::create(&dir, &serde_json::json!({})).unwrap();
    let out = child("try", &dir).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(&format!(
            "CHILD refused: run {}: in use by another mnas process (pid {})",
            dir.display(),
            std::process::id()
        )),
        "{text}"
    );
    drop(w);
    let out = child("try", &dir).output().unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("CHILD opened"));

    // A holder killed with SIGKILL leaves the lock file behind but not the lock.
    let mut holder = child("hold", &dir).spawn().unwrap();
    let mut lines = BufReader::new(holder.stdout.take().unwrap()).lines();
    assert!(lines.any(|l| l.map(|l| l.contains("CHILD locked")).unwrap_or(false)), "the holder never locked");
    let m = message(RunStore::open(&dir));
    assert!(m.contains(&format!("(pid {})", holder.id())), "{m}");
    holder.kill().unwrap();
    holder.wait().unwrap();
    assert!(dir.join(LOCK_FILE).exists());
    // The trial the killed holder committed is there, for a reader (first, while its WAL is
    // still unrecovered) and for the next writer.
    assert!(dir.join(format!("{STORE_FILE}-wal")).exists(), "the killed writer's WAL is left behind");
    assert_eq!(RunStore::open_read_only(&dir).unwrap().trials().unwrap(), vec![trial(0, 0, 1)]);
    assert_eq!(RunStore::open(&dir).unwrap().trials().unwrap(), vec![trial(0, 0, 1)]);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn foreign_files_and_missing_directories_are_refused_clearly() {
    let root = scratch("foreign");
    let m = message(RunStore::open(&root.join("nope")));
    assert!(m.contains("nope") && m.contains("no such directory"), "{m}");
    let m = message(RunStore::open_read_only(&root.join("nope")));
    assert!(m.contains("no such directory"), "{m}");

    let empty = root.join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    let m = message(RunStore::open(&empty));
    assert!(m.contains("not a run directory: no search.sqlite"), "{m}");

    // Random bytes: a SplitMix64 stream, so the content is arbitrary but reproducible.
    let noise = root.join("noise");
    std::fs::create_dir_all(&noise).unwrap();
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let bytes: Vec<u8> = (0..8192)
        .map(|_| {
            x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = x;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            (z ^ (z >> 27)) as u8
        })
        .collect();
    std::fs::write(noise.join(STORE_FILE), &bytes).unwrap();
    for m in [message(RunStore::open(&noise)), message(RunStore::open_read_only(&noise))] {
        assert!(m.contains("not an mnas trial store (not a SQLite database)"), "{m}");
        assert!(m.contains(&noise.join(STORE_FILE).display().to_string()), "{m}");
    }
    assert_eq!(std::fs::read(noise.join(STORE_FILE)).unwrap(), bytes);

    // A real SQLite database of another schema is refused and left as it was.
    let other = root.join("other");
    std::fs::create_dir_all(&other).unwrap();
    let db = other.join(STORE_FILE);
    {
        let c = Connection::open(&db).unwrap();
        c.execute_batch("CREATE TABLE latency (arch TEXT, ms REAL); INSERT INTO latency VALUES ('a', 1.0);").unwrap();
    }
    let before = std::fs::read(&db).unwrap();
    for m in [message(RunStore::open(&other)), message(RunStore::open_read_only(&other))] {
        assert!(m.contains("not an mnas trial store (SQLite application_id 0x0"), "{m}");
    }
    assert_eq!(std::fs::read(&db).unwrap(), before);
    assert!(!other.join(format!("{STORE_FILE}-wal")).exists(), "a foreign file must not be switched to WAL");

    // Our application id but no run row: damaged.
    let damaged = root.join("damaged");
    std::fs::create_dir_all(&damaged).unwrap();
    {
        let c = Connection::open(damaged.join(STORE_FILE)).unwrap();
        c.execute_batch(&format!(
            "PRAGMA application_id = {APPLICATION_ID}; CREATE TABLE run (id INTEGER, schema_version INTEGER);"
        ))
        .unwrap();
    }
    let m = message(RunStore::open(&damaged));
    assert!(m.contains("damaged trial store: its run row is missing"), "{m}");

    // A store from a newer mnas.
    let newer = root.join("newer");
    drop(RunStore::create(&newer, &serde_json::json!({})).unwrap());
    {
        let c = Connection::open(newer.join(STORE_FILE)).unwrap();
        c.execute("UPDATE run SET schema_version = 99", []).unwrap();
    }
    let m = message(RunStore::open_read_only(&newer));
    assert!(m.contains("written by a newer mnas (schema 99"), "{m}");
    let _ = std::fs::remove_dir_all(&root);
}

#[test]
fn create_clears_leftovers_of_a_crashed_create() {
    let dir = scratch("leftover");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(format!("{STORE_FILE}.creating")), b"half written").unwrap();
    std::fs::write(dir.join(format!("{STORE_FILE}-wal")), b"stale wal").unwrap();
    let s = RunStore::create(&dir, &serde_json::json!({"fresh": true})).unwrap();
    assert_eq!(s.config().unwrap()["fresh"], true);
    assert_eq!(s.trial_count().unwrap(), 0);
    assert!(!dir.join(format!("{STORE_FILE}.creating")).exists());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_full_disk_fails_the_write_and_keeps_everything_before_it() {
    let _serial = serial();
    let dir = scratch("full");
    let s = RunStore::create(&dir, &serde_json::json!({})).unwrap();
    s.put_trial(&trial(0, 0, 1)).unwrap();
    s.put_strategy_state(0, b"step 0").unwrap();
    // SQLite reports SQLITE_FULL when the file may not grow: the same path as a full disk.
    let pages: i64 = s.conn.query_row("PRAGMA page_count", [], |r| r.get(0)).unwrap();
    let _: i64 = s.conn.query_row(&format!("PRAGMA max_page_count = {pages}"), [], |r| r.get(0)).unwrap();
    let big = vec![7u8; 1 << 20];
    let e = s.put_strategy_state(1, &big).unwrap_err().to_string();
    assert!(e.contains("disk full, nothing written by this call"), "{e}");
    let mut fat = trial(0, 1, 2);
    fat.reason = Some("x".repeat(1 << 20));
    let e = s.put_trial(&fat).unwrap_err().to_string();
    assert!(e.contains("disk full"), "{e}");
    // Both writes rolled back: the state, the counter and the trials are those before.
    assert_eq!(s.latest_strategy_state().unwrap(), Some((0, b"step 0".to_vec())));
    assert_eq!(s.steps_done().unwrap(), 1);
    assert_eq!(s.trial_count().unwrap(), 1);
    drop(s);
    let again = RunStore::open(&dir).unwrap();
    assert_eq!(again.trials().unwrap(), vec![trial(0, 0, 1)]);
    assert_eq!(again.steps_done().unwrap(), 1);
    // With room again, the same writes succeed.
    again.put_strategy_state(1, &big).unwrap();
    again.put_trial(&fat).unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}
