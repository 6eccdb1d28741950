//! `mnas search` end to end on the embedded data with a tiny proxy task: kill -9 mid-search and
//! resume, a second process on the same run, and bad input.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::assert_error;
use mnas_pipeline::{ProxySettings, ProxyTrainer};
use mnas_search::search_loop::{AccuracyEvaluator, AccuracyResult, Scored, TrialKey};
use mnas_search::store::RunStore;
use mnas_search::TrialStatus;
use mnas_space::SearchSpace;

fn mnas() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_mnas"));
    c.env_remove("RUST_LOG");
    c
}

fn tempdir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("mnas-cli-search-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A search small enough for a test: 64 training images per trial at 32x32, latency at 32x32
/// with 2 timed runs, a fixed target.
fn tiny(run: &Path, latency_store: &Path, trials: usize) -> Vec<String> {
    [
        "search",
        "--out",
        run.to_str().unwrap(),
        "--trials",
        &trials.to_string(),
        "--models-per-step",
        "2",
        "--proxy-images",
        "64",
        "--val-fraction",
        "0.01",
        "--resolution",
        "32",
        "--latency-runs",
        "2",
        "--target",
        "1.5",
        "--latency-store",
        latency_store.to_str().unwrap(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

fn run_to_end(args: &[String]) -> Output {
    mnas().args(args).output().unwrap()
}

fn wait_for_trials(run: &Path, n: usize, child: &mut Child) {
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        if let Ok(store) = RunStore::open_read_only(run) {
            if store.trials().map(|t| t.len()).unwrap_or(0) >= n {
                return;
            }
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!("search exited early: {status}");
        }
        assert!(Instant::now() < deadline, "no {n} trials within 10 minutes");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn kill_9_mid_search_then_resume_loses_and_repeats_nothing() {
    let dir = tempdir("kill");
    let run = dir.join("run");
    let lat = dir.join("latency.sqlite");
    let args = tiny(&run, &lat, 6);
    let mut child = mnas().args(&args).stdout(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap();
    wait_for_trials(&run, 1, &mut child);

    // While it runs: a second writer is refused, a reader is not.
    let second = mnas().args(["search", "--resume", run.to_str().unwrap()]).output().unwrap();
    assert_error(&second, &["search", "--resume"], "in use by another mnas process", false);
    let pareto = mnas().args(["pareto", run.to_str().unwrap()]).output().unwrap();
    assert!(pareto.status.success(), "{}", String::from_utf8_lossy(&pareto.stderr));

    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let before = RunStore::open_read_only(&run).unwrap().trials().unwrap();
    assert!(!before.is_empty() && before.len() < 6, "{} trials before the kill", before.len());

    let resumed = mnas().args(["search", "--resume", run.to_str().unwrap()]).output().unwrap();
    let err = String::from_utf8_lossy(&resumed.stderr);
    assert!(resumed.status.success(), "{err}");
    let after = RunStore::open_read_only(&run).unwrap().trials().unwrap();
    assert_eq!(after.len(), 6, "{err}");
    let keys: Vec<(u64, u64)> = after.iter().map(|t| (t.step, t.index)).collect();
    let expected: Vec<(u64, u64)> = (0..3).flat_map(|s| (0..2).map(move |i| (s, i))).collect();
    assert_eq!(keys, expected, "every trial exactly once, in order");
    for t in &before {
        let same = &after[(t.step * 2 + t.index) as usize];
        assert_eq!(same, t, "a finished trial survives the kill unchanged");
    }
    // Accuracies are counts over the 100 held-out images, and the proxy is deterministic: the
    // stored proxy settings train the first model again to exactly its recorded accuracy.
    let config = RunStore::open_read_only(&run).unwrap().config().unwrap();
    let proxy: ProxySettings = serde_json::from_value(config["proxy"].clone()).unwrap();
    let trainer = ProxyTrainer::new(proxy).unwrap();
    assert_eq!(trainer.data.val.len(), 100);
    for t in &after {
        assert_eq!(t.status, TrialStatus::Ok, "{t:?}");
        let acc = t.accuracy.unwrap();
        assert!((acc * 100.0 - (acc * 100.0).round()).abs() < 1e-9, "{acc} is not a share of 100 images");
        assert!(t.latency_ms.unwrap() > 0.0);
    }
    let first = &after[0];
    let arch = SearchSpace::default().decode(&first.tokens).unwrap();
    let key = TrialKey { step: 0, index: 0, attempt: 0 };
    assert_eq!(trainer.accuracy(key, &arch), AccuracyResult::Ok(Scored::by_accuracy(first.accuracy.unwrap())));
    assert_eq!(first.quality, first.accuracy, "scored by accuracy, the reward multiplies accuracy");
    // The run ends with its report.
    let stdout = String::from_utf8_lossy(&resumed.stdout);
    assert!(run.join("report.html").is_file(), "{stdout}");
    assert!(stdout.contains("report.html"), "{stdout}");

    // Finished: resuming again runs nothing new.
    let again = mnas().args(["search", "--resume", run.to_str().unwrap()]).output().unwrap();
    assert!(again.status.success(), "{}", String::from_utf8_lossy(&again.stderr));
    assert_eq!(RunStore::open_read_only(&run).unwrap().trials().unwrap().len(), 6);
}

#[test]
fn resume_refuses_contradicting_settings_and_foreign_directories() {
    let dir = tempdir("bad-resume");
    let run = dir.join("run");
    let lat = dir.join("latency.sqlite");
    let o = run_to_end(&tiny(&run, &lat, 2));
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let r = run.to_str().unwrap();

    let args = ["search", "--resume", r, "--strategy", "random"];
    assert_error(&mnas().args(args).output().unwrap(), &args, "contradicts this run's stored setting", true);
    let args = ["search", "--resume", r, "--trials", "9"];
    assert_error(&mnas().args(args).output().unwrap(), &args, "--trials", true);
    // A new search into a directory that holds one.
    let again = tiny(&run, &lat, 2);
    assert_error(&run_to_end(&again), &["search", "--out", r], "already holds a search", false);

    let missing = dir.join("nowhere");
    let args = ["search", "--resume", missing.to_str().unwrap()];
    assert_error(&mnas().args(args).output().unwrap(), &args, "nowhere", true);

    let foreign = dir.join("foreign");
    std::fs::create_dir_all(&foreign).unwrap();
    std::fs::write(foreign.join("search.sqlite"), b"this is not a database, it is a text file").unwrap();
    let args = ["search", "--resume", foreign.to_str().unwrap()];
    assert_error(&mnas().args(args).output().unwrap(), &args, "search.sqlite", true);
}

/// `--proxy-score val-loss`: the reward multiplies exp(-held-out loss), the trial keeps its accuracy.
#[test]
fn a_loss_scored_search_rewards_the_held_out_loss() {
    let dir = tempdir("val-loss");
    let run = dir.join("run");
    let mut args = tiny(&run, &dir.join("latency.sqlite"), 2);
    args.extend(["--proxy-score", "val-loss"].map(String::from));
    let out = run_to_end(&args);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let store = RunStore::open_read_only(&run).unwrap();
    let proxy: ProxySettings = serde_json::from_value(store.config().unwrap()["proxy"].clone()).unwrap();
    assert_eq!(proxy.score.name(), "val-loss");
    let trainer = ProxyTrainer::new(proxy).unwrap();
    let trials = store.trials().unwrap();
    assert_eq!(trials.len(), 2);
    for t in &trials {
        assert_eq!(t.status, TrialStatus::Ok, "{t:?}");
        // The proxy is deterministic: training the arch again gives the loss the trial was scored with.
        let arch = SearchSpace::default().decode(&t.tokens).unwrap();
        let again = trainer.run(&arch, &mut |_| true).unwrap();
        let quality = t.quality.expect("a loss-scored trial stores its quality");
        assert!((quality - (-again.val_loss).exp()).abs() < 1e-9, "{quality} vs loss {}", again.val_loss);
        assert_eq!(t.accuracy, Some(again.val_top1));
        assert!((quality - again.val_top1).abs() > 1e-6, "quality {quality} is just the accuracy");
        // Soft constraint (alpha = beta = -0.07) against --target 1.5 ms.
        let latency_term = (t.latency_ms.unwrap() / 1.5).powf(-0.07);
        assert!((t.reward - quality * latency_term).abs() < 1e-9, "reward {} for quality {quality}", t.reward);
    }
}

#[test]
fn bad_search_options_give_one_clear_line() {
    let dir = tempdir("bad-options");
    let run = dir.join("run");
    let r = run.to_str().unwrap();
    let cases: &[(&[&str], &str)] = &[
        (&["search", "--out", r, "--trials", "0"], "trial budget must be at least 1"),
        (&["search", "--out", r, "--models-per-step", "0"], "models per step"),
        (&["search", "--out", r, "--target", "fast"], "--target must be a latency in ms"),
        (&["search", "--out", r, "--target", "-3"], "--target must be a latency in ms"),
        (&["search", "--out", r, "--budget", "0"], "--budget"),
        (&["search", "--out", r, "--alpha", "0.5", "--beta", "-1", "--target", "5"], "alpha and beta must be"),
        (&["search", "--out", r, "--resolution", "8"], "deployment resolution"),
        (&["search", "--out", r, "--latency-threads", "0"], "threads"),
        (&["search", "--out", r, "--data", "/no/such/dataset"], "/no/such/dataset"),
    ];
    for (args, needle) in cases {
        let o = mnas().args(*args).output().unwrap();
        assert_error(&o, args, needle, false);
        assert!(!run.join("search.sqlite").exists(), "{args:?} left a store behind");
    }
}

/// `mnas agent` on loopback: the search measures through it (and overlaps training with it).
#[test]
fn search_measures_latency_through_an_agent_and_through_a_lookup_table() {
    use std::io::{BufRead, BufReader};
    let dir = tempdir("agent");
    let mut agent = mnas()
        .args(["agent", "--listen", "127.0.0.1:0", "--token", "search-test-token"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(agent.stdout.take().unwrap());
    let mut first = String::new();
    stdout.read_line(&mut first).unwrap();
    // Keep reading: a closed pipe would end the agent at its next log line.
    std::thread::spawn(move || std::io::copy(&mut stdout, &mut std::io::sink()));
    let addr = first.trim().strip_prefix("mnas agent listening on ").expect("listening line").to_string();
    let run = dir.join("run");
    let mut args = tiny(&run, &dir.join("unused.sqlite"), 2);
    args.extend([
        "--latency-device".into(),
        format!("tcp://{addr}"),
        "--latency-token".into(),
        "search-test-token".into(),
    ]);
    let o = mnas().args(&args).output().unwrap();
    let _ = agent.kill();
    let _ = agent.wait();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let trials = RunStore::open_read_only(&run).unwrap().trials().unwrap();
    assert_eq!(trials.len(), 2);
    for t in &trials {
        assert_eq!(t.status, TrialStatus::Ok, "{t:?}");
        assert_eq!(t.fingerprint.as_ref().unwrap()["engine"].as_str(), Some("mnas-engine"), "{t:?}");
    }
    // Wrong token: the search records nothing and says why in one line.
    let bad_run = dir.join("bad");
    let mut args = tiny(&bad_run, &dir.join("unused.sqlite"), 2);
    args.extend(["--latency-device".into(), "tcp://127.0.0.1:1".into(), "--latency-token".into(), "x".into()]);
    let o = mnas().args(&args).output().unwrap();
    assert_error(&o, &["search", "--latency-device", "tcp://127.0.0.1:1"], "no agent answered", false);
    assert!(!bad_run.join("search.sqlite").exists());

    // A lookup table for this resolution and class count predicts every trial's latency.
    let lut = dir.join("lut.json");
    let built = mnas()
        .args(["latency", "build-lut", "--resolution", "32", "--classes", "10", "--runs", "2", "--warmup", "1"])
        .args(["--fit-archs", "3", "--out", lut.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(built.status.success(), "{}", String::from_utf8_lossy(&built.stderr));
    let lut_run = dir.join("lut-run");
    let mut args = tiny(&lut_run, &dir.join("unused.sqlite"), 2);
    args.extend(["--latency-lut".into(), lut.to_str().unwrap().into()]);
    let o = mnas().args(&args).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let trials = RunStore::open_read_only(&lut_run).unwrap().trials().unwrap();
    assert!(trials.iter().all(|t| t.status == TrialStatus::Ok && t.latency_ms.unwrap() > 0.0), "{trials:?}");
    // `--target auto` on a table: the target is the table's prediction for MobileNetV2.
    let auto_run = dir.join("lut-auto");
    let mut args = tiny(&auto_run, &dir.join("unused.sqlite"), 2);
    let at = args.iter().position(|a| a == "--target").unwrap();
    args[at + 1] = "auto".into();
    args.extend(["--latency-lut".into(), lut.to_str().unwrap().into()]);
    let o = mnas().args(&args).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let predicted = mnas()
        .args(["latency", "predict", "--arch", "mobilenetv2_100", "--resolution", "32", "--classes", "10"])
        .args(["--lut", lut.to_str().unwrap(), "--json"])
        .output()
        .unwrap();
    assert!(predicted.status.success(), "{}", String::from_utf8_lossy(&predicted.stderr));
    let predicted: serde_json::Value = serde_json::from_slice(&predicted.stdout).unwrap();
    let store = RunStore::open_read_only(&auto_run).unwrap();
    let target: f64 = store.meta(mnas_search::store::meta_keys::TARGET_MS).unwrap().unwrap().parse().unwrap();
    let want = predicted["predicted_ms"].as_f64().unwrap();
    assert!((target - want).abs() <= 1e-9 * want, "target {target} ms, MobileNetV2 predicted {want} ms");
    // A table for another resolution is refused before the search starts.
    let mut args = tiny(&dir.join("lut-64"), &dir.join("unused.sqlite"), 2);
    let at = args.iter().position(|a| a == "--resolution").unwrap();
    args[at + 1] = "64".into();
    args.extend(["--latency-lut".into(), lut.to_str().unwrap().into()]);
    let o = mnas().args(&args).output().unwrap();
    assert_error(&o, &["search", "--latency-lut", "--resolution 64"], "build-lut --resolution 64 --classes 10", false);
}
