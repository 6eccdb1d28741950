//! `mnas report`, `mnas pareto` and `mnas export-arch` on trial stores built through the library.
//!
//! The stores hold real archs sampled from the search space (`SearchSpace::sample`); their
//! accuracy and latency are TEST ROWS computed from the archs' MAC and parameter counts, not
//! measurements: this file tests ranking, files and pages, not models.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use mnas_search::pareto::pareto_front;
use mnas_search::store::{meta_keys, RunStore};
use mnas_search::{Constraint, Reward, Trial, TrialStatus};
use mnas_space::{count, SearchSpace};

fn mnas(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_mnas")).args(args).output().expect("run mnas")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("mnas-report-test-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

const TARGET_MS: f64 = 9.0;

/// `steps` x `per_step` trials of sampled archs; every 7th one failed. Test rows, see above.
fn trials(seed: u64, steps: u64, per_step: u64) -> Vec<Trial> {
    let reward = Reward::new(TARGET_MS, Constraint::Soft).unwrap();
    let space = SearchSpace::default();
    let samples = space.sample(seed, (steps * per_step) as usize);
    samples
        .into_iter()
        .enumerate()
        .map(|(i, (tokens, arch))| {
            let c = count(&arch);
            // Accuracy grows with capacity (log-shaped, mostly parameters), latency with work (MACs at
            // 40 GMAC/s plus a per-parameter memory term): related but not the same, like a real front.
            let accuracy =
                (0.45 + 0.06 * (c.params as f64 / 3e6).ln() + 0.02 * (c.macs as f64 / 3e8).ln()).clamp(0.05, 0.95);
            let latency = c.macs as f64 / 4e7 + c.params as f64 / 2e6;
            let failed = i % 7 == 6;
            Trial {
                step: i as u64 / per_step,
                index: i as u64 % per_step,
                tokens,
                arch: arch.canonical(),
                arch_json: serde_json::to_value(&arch).unwrap(),
                params: c.params,
                macs: c.macs,
                accuracy: (!failed).then_some(accuracy),
                quality: None,
                latency_ms: (!failed).then_some(latency),
                fingerprint: Some(serde_json::json!({"test": "rows from cost counts"})),
                reward: if failed { 0.0 } else { reward.of(accuracy, latency) },
                status: if failed { TrialStatus::Failed } else { TrialStatus::Ok },
                reason: failed.then(|| "test row marked failed".to_string()),
                train_seconds: 0.0,
                latency_seconds: 0.0,
                reused: false,
                finished_at: "2026-11-28T12:00:00Z".into(),
            }
        })
        .collect()
}

/// A run directory with a finished store; returns its trials.
fn make_run(dir: &Path, strategy: &str, seed: u64) -> Vec<Trial> {
    let store = RunStore::create(dir, &serde_json::json!({"strategy": strategy, "target_ms": TARGET_MS})).unwrap();
    let rows = trials(seed, 4, 8);
    for t in &rows {
        store.put_trial(t).unwrap();
    }
    for step in 0..4 {
        store.put_strategy_state(step, b"test state").unwrap();
    }
    store.set_meta(meta_keys::STATUS, "finished").unwrap();
    rows
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn report_pareto_and_export_on_one_run() {
    let root = scratch("one");
    let run = root.join("ppo-run");
    let rows = make_run(&run, "ppo", 11);
    let ok = rows.iter().filter(|t| t.status == TrialStatus::Ok).count();
    let front = pareto_front(&rows);
    assert!(front.len() >= 2, "the test rows should give a front of several models");

    let o = mnas(&["report", s(&run)]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let page_path = run.join("report.html");
    let out = stdout(&o);
    assert_eq!(out.trim().lines().last(), Some(page_path.display().to_string().as_str()));
    assert!(out.contains("mean reward, last quarter"), "{out}");
    let page = std::fs::read_to_string(&page_path).unwrap();
    assert_eq!(page.matches("<circle class=\"trial\"").count(), ok);
    assert!(page.contains("T = 9 ms") && page.contains("<line class=\"target\""));
    assert!(page.contains(&format!("{} failed trials are not plotted", rows.len() - ok)));

    let o = mnas(&["pareto", s(&run)]);
    assert!(o.status.success());
    let table = stdout(&o);
    println!("{table}");
    let lines: Vec<&str> = table.lines().collect();
    assert!(lines[0].starts_with("step") && lines[0].contains("latency ms") && lines[0].contains("arch"), "{table}");
    assert_eq!(lines.len(), front.len() + 3, "header, rule, rows, summary:\n{table}");
    for (line, t) in lines[2..].iter().zip(&front) {
        assert!(line.contains(&format!("{:.3}", t.latency_ms.unwrap())), "{line}");
        assert!(line.contains(t.arch.split('|').nth(1).unwrap().split(',').next().unwrap()), "{line}");
    }
    assert!(table.contains(&format!("{} of {} trials on the front, fastest first", front.len(), rows.len())));

    let o = mnas(&["pareto", s(&run), "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("json");
    let got: Vec<(u64, u64)> = v["front"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| (t["step"].as_u64().unwrap(), t["index"].as_u64().unwrap()))
        .collect();
    assert_eq!(got, front.iter().map(|t| (t.step, t.index)).collect::<Vec<_>>());
    assert_eq!(v["trials"], rows.len());

    // By reward: the K best rewards, best first, files named by rank, step and index.
    let out = root.join("exported");
    let o = mnas(&["export-arch", s(&run), "--top", "3", "--out", s(&out)]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let mut by_reward: Vec<&Trial> = rows.iter().filter(|t| t.status == TrialStatus::Ok).collect();
    by_reward.sort_by(|a, b| b.reward.total_cmp(&a.reward));
    let printed = stdout(&o);
    assert_eq!(printed.lines().count(), 3, "{printed}");
    for (rank, (line, t)) in printed.lines().zip(&by_reward).enumerate() {
        let file = out.join(format!("rank{:02}_step{}_i{}.json", rank + 1, t.step, t.index));
        assert!(line.starts_with(&file.display().to_string()), "{line}");
        let shown = mnas(&["arch", "show", s(&file), "--json"]);
        assert!(shown.status.success(), "{}", String::from_utf8_lossy(&shown.stderr));
        let w: serde_json::Value = serde_json::from_slice(&shown.stdout).unwrap();
        assert_eq!(w["canonical"], t.arch.as_str());
        assert_eq!(w["params"], t.params);
    }

    // By front: default directory RUN/archs, only front models.
    let o = mnas(&["export-arch", s(&run), "--top", "50", "--by", "pareto"]);
    assert!(o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains(&format!("only {} models on the Pareto front", front.len())));
    let files: Vec<PathBuf> = std::fs::read_dir(run.join("archs")).unwrap().map(|e| e.unwrap().path()).collect();
    assert_eq!(files.len(), front.len());
    for f in &files {
        let o = mnas(&["arch", "show", s(f)]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    }
    let _ = std::fs::remove_dir_all(&root);
}

#[test]
fn several_runs_in_one_page_and_a_running_search_can_be_reported() {
    let root = scratch("many");
    let (a, b) = (root.join("ppo"), root.join("random"));
    let rows_a = make_run(&a, "ppo", 1);
    let rows_b = make_run(&b, "random", 2);
    // A third run still being written: its writer holds the lock, readers do not need it.
    let live = root.join("live");
    let writer = RunStore::create(&live, &serde_json::json!({"strategy": "evolution"})).unwrap();
    let o = mnas(&["report", s(&a), s(&b), s(&live)]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let out = stdout(&o);
    assert_eq!(out.trim().lines().last(), Some(a.join("compare.html").display().to_string().as_str()));
    assert_eq!(out.lines().filter(|l| l.starts_with("random ") || l.starts_with("ppo ")).count(), 2, "{out}");
    assert!(String::from_utf8_lossy(&o.stderr).contains("has no trials yet"));
    let page = std::fs::read_to_string(a.join("compare.html")).unwrap();
    let ok = rows_a.iter().chain(&rows_b).filter(|t| t.status == TrialStatus::Ok).count();
    assert_eq!(page.matches("<circle class=\"trial\"").count(), ok);
    assert_eq!(page.matches("<polyline class=\"front\"").count(), 2);
    assert!(page.contains("Run live has no trials yet."));
    // To look at the page: MNAS_KEEP_REPORT=/some/file.html cargo test -p mnas-cli --test report
    if let Some(keep) = std::env::var_os("MNAS_KEEP_REPORT") {
        std::fs::copy(a.join("compare.html"), keep).unwrap();
    }

    writer.put_trial(&trials(3, 1, 4)[0]).unwrap();
    let out = root.join("cmp.html");
    let o = mnas(&["report", s(&live), s(&b), "--out", s(&out)]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let page = std::fs::read_to_string(&out).unwrap();
    assert_eq!(
        page.matches("<circle class=\"trial\"").count(),
        1 + rows_b.iter().filter(|t| t.accuracy.is_some()).count()
    );
    let o = mnas(&["pareto", s(&live)]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    drop(writer);
    let _ = std::fs::remove_dir_all(&root);
}

#[test]
fn bad_runs_and_options_give_one_error_line() {
    let root = scratch("bad");
    std::fs::create_dir_all(root.join("plain")).unwrap();
    let empty = root.join("empty");
    drop(RunStore::create(&empty, &serde_json::json!({})).unwrap());
    let failed_only = root.join("failed");
    {
        let store = RunStore::create(&failed_only, &serde_json::json!({})).unwrap();
        let t = trials(5, 1, 7).into_iter().nth(6).unwrap();
        assert_eq!(t.status, TrialStatus::Failed);
        store.put_trial(&t).unwrap();
    }
    let foreign = root.join("foreign");
    std::fs::create_dir_all(&foreign).unwrap();
    std::fs::write(foreign.join("search.sqlite"), "this is not a database, just some text ".repeat(100)).unwrap();
    let good = root.join("good");
    make_run(&good, "ppo", 4);

    let missing = root.join("nope");
    let plain = root.join("plain");
    let (m, p, e, f, g) = (s(&missing), s(&plain), s(&empty), s(&failed_only), s(&good));
    let fo = s(&foreign);
    for (args, needle) in [
        (vec!["report", m], "no such directory"),
        (vec!["pareto", m], "no such directory"),
        (vec!["export-arch", m, "--top", "2"], "no such directory"),
        (vec!["report", p], "not a run directory: no search.sqlite"),
        (vec!["pareto", p], "not a run directory: no search.sqlite"),
        (vec!["report", g, fo], "not an mnas trial store (not a SQLite database)"),
        (vec!["pareto", fo], "not an mnas trial store"),
        (vec!["pareto", e], "has no trials yet"),
        (vec!["export-arch", e, "--top", "1"], "has no trials yet"),
        (vec!["pareto", f], "has no successful trials yet (1 failed)"),
        (vec!["export-arch", f, "--top", "1", "--by", "pareto"], "has no successful trials yet"),
        (vec!["export-arch", g, "--top", "0"], "--top must be at least 1"),
    ] {
        common::assert_error(&mnas(&args), &args, needle, true);
    }
    // The foreign file is left as it was.
    assert!(std::fs::read_to_string(foreign.join("search.sqlite")).unwrap().starts_with("this is not a database"));
    let _ = std::fs::remove_dir_all(&root);
}

/// Several seeds per strategy: one line per strategy with the mean of the runs' last-quarter mean
/// rewards and its standard error, and whether the difference between two strategies exceeds
/// its standard error (what bench/search_compare.sh reads).
#[test]
fn seeds_of_two_strategies_are_compared_with_their_standard_error() {
    let root = scratch("seeds");
    let mut dirs = Vec::new();
    let mut quarter = |strategy: &str, seed: u64| {
        let dir = root.join(format!("{strategy}-{seed}"));
        let rows = make_run(&dir, strategy, seed);
        dirs.push(dir);
        mnas_search::trial::last_quarter_mean(&rows).unwrap()
    };
    let ppo: Vec<f64> = (1..=3).map(|seed| quarter("ppo", seed)).collect();
    let random: Vec<f64> = (4..=6).map(|seed| quarter("random", seed)).collect();
    let args: Vec<&str> = std::iter::once("report").chain(dirs.iter().map(|d| s(d))).collect();
    let o = mnas(&args);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let out = stdout(&o);
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    let se = |v: &[f64]| {
        let m = mean(v);
        (v.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (v.len() as f64 - 1.0) / v.len() as f64).sqrt()
    };
    let line = |name: &str, v: &[f64]| {
        format!("{name}: last-quarter mean reward {:.4} +- {:.4} (SE) over 3 runs", mean(v), se(v))
    };
    assert!(out.contains(&line("ppo", &ppo)), "{out}");
    assert!(out.contains(&line("random", &random)), "{out}");
    let (diff, se_diff) = (mean(&ppo) - mean(&random), (se(&ppo).powi(2) + se(&random).powi(2)).sqrt());
    let verdict = if diff.abs() > se_diff { "larger" } else { "not larger" };
    assert!(
        out.contains(&format!("ppo - random: {diff:+.4} +- {se_diff:.4} (SE): the difference is {verdict} than")),
        "{out}"
    );
    let _ = std::fs::remove_dir_all(&root);
}
