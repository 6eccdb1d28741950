use super::*;
use crate::store::tests::{failed, scratch, trial};

fn run(label: &str, seeds: std::ops::Range<u64>, target: Option<f64>) -> ReportRun {
    // Test rows: real sampled archs, accuracy and latency derived from their MACs (see `trial`).
    let trials = seeds.map(|s| trial(s / 4, s % 4, s)).collect();
    ReportRun {
        label: label.into(),
        trials,
        meta: ReportMeta { target_ms: target, strategy: "ppo".into(), ..Default::default() },
    }
}

fn count(hay: &str, needle: &str) -> usize {
    hay.matches(needle).count()
}

/// The `points` attribute of the n-th element starting with `tag_start`.
fn points_of(html: &str, tag_start: &str, n: usize) -> Vec<(f64, f64)> {
    let el = html.split(tag_start).nth(n + 1).expect("element present");
    let attr = el.split("points=\"").nth(1).expect("points").split('"').next().unwrap();
    attr.split(' ')
        .map(|p| {
            let (x, y) = p.split_once(',').unwrap();
            (x.parse().unwrap(), y.parse().unwrap())
        })
        .collect()
}

#[test]
fn page_has_one_circle_per_ok_trial_fronts_target_and_escaped_labels() {
    let mut a = run("ppo <b>&\"run\"</b>", 0..12, Some(12.5));
    a.trials.push(failed(3, 0, 99));
    a.trials.push(failed(3, 1, 98));
    let b = run("random", 12..20, Some(12.5));
    let ok = a.trials.len() - 2 + b.trials.len();
    let html = render_report(&[a.clone(), b.clone()]);

    assert_eq!(count(&html, "<circle class=\"trial\""), ok);
    assert_eq!(count(&html, "<polyline class=\"front\""), 2);
    // The same T for both runs is drawn once.
    assert_eq!(count(&html, "<line class=\"target\""), 1);
    assert!(html.contains("T = 12.5 ms"));
    let odd = ReportRun { meta: ReportMeta { target_ms: Some(18.734523), ..a.meta.clone() }, ..a.clone() };
    assert!(render_report(&[odd]).contains("T = 18.73 ms"));
    assert!(html.contains("2 failed trials are not plotted"), "failed count");
    assert!(html.contains("loss became NaN at epoch 1"), "failed trials are listed");
    assert!(!html.contains("<b>"), "labels must be escaped");
    assert!(html.contains("ppo &lt;b&gt;&amp;&quot;run&quot;&lt;/b&gt;"));
    assert_eq!(count(&html, "<svg "), 3);
    assert_eq!(count(&html, "</svg>"), 3);
    assert!(!html.contains("<script"), "no scripts");
    // The only URLs are the SVG namespace declarations: nothing is fetched.
    assert_eq!(count(&html, "http"), count(&html, "xmlns=\"http://www.w3.org/2000/svg\""));
    assert!(!html.contains("src=") && !html.contains("<link"), "self-contained");
    // One histogram bar group per run, one band per run.
    assert_eq!(count(&html, "<polygon class=\"band\""), 2);
    assert!(count(&html, "<rect class=\"bar\"") >= 2);
    // Front tables list exactly the front models of each run.
    let fronts = pareto_front(&a.trials).len() + pareto_front(&b.trials).len();
    let table_rows = html
        .split("<table class=\"front\">")
        .skip(1)
        .map(|t| count(t.split("</table>").next().unwrap(), "<tr>") - 1)
        .sum::<usize>();
    assert_eq!(table_rows, fronts);
}

#[test]
fn the_front_is_a_staircase_through_its_models() {
    let r = run("one", 0..16, None);
    let front = pareto_front(&r.trials).len();
    assert!(front >= 2, "test rows should give a front of several models, got {front}");
    let html = render_report(std::slice::from_ref(&r));
    let pts = points_of(&html, "<polyline class=\"front\"", 0);
    assert_eq!(pts.len(), 2 * front - 1);
    // Right then up: x never decreases; y (pixels, up is smaller) never increases.
    assert!(pts.windows(2).all(|w| w[1].0 >= w[0].0 && w[1].1 <= w[0].1), "{pts:?}");
    assert!(pts.windows(2).all(|w| w[1].0 == w[0].0 || w[1].1 == w[0].1), "axis-parallel segments: {pts:?}");
    assert_eq!(count(&html, "<line class=\"target\""), 0);
}

#[test]
fn empty_and_all_failed_runs_give_messages_not_crashes() {
    let empty = ReportRun { label: "fresh".into(), trials: vec![], meta: ReportMeta::default() };
    let html = render_report(std::slice::from_ref(&empty));
    assert!(html.contains("Run fresh has no trials yet."));
    assert!(html.contains("No successful trials yet: nothing to plot."));
    assert!(html.contains("No trials yet: no rewards to show."));
    assert_eq!(count(&html, "<svg "), 0);

    let broken = ReportRun {
        label: "broken".into(),
        trials: vec![failed(0, 0, 1), failed(0, 1, 2)],
        meta: ReportMeta::default(),
    };
    let html = render_report(&[broken, empty]);
    assert!(html.contains("No successful trials yet: nothing to plot."));
    assert!(html.contains("broken: 2 failed trials"));
    // The rewards of failed trials (0) are still what the strategy saw, so step 0 is drawn.
    assert_eq!(count(&html, "<circle class=\"step-mean\""), 1);

    assert!(render_report(&[]).contains("No runs were given"));
}

#[test]
fn reward_band_is_mean_plus_minus_std_of_each_step() {
    let r = run("r", 0..12, None); // steps 0, 1, 2 with 4 trials each
    let html = render_report(std::slice::from_ref(&r));
    assert_eq!(count(&html, "<circle class=\"step-mean\""), 3);
    let rewards: Vec<f64> = r.trials.iter().filter(|t| t.step == 1).map(|t| t.reward).collect();
    let (m, sd) = mean_std(&rewards);
    assert!(html.contains(&format!("r step 1: mean {m:.4} ± {sd:.4}")), "{m} {sd}");
    assert!(sd > 0.0);
}

#[test]
fn write_report_replaces_the_file_atomically_and_names_a_bad_path() {
    let dir = scratch("report-write");
    std::fs::create_dir_all(&dir).unwrap();
    let out = dir.join("report.html");
    std::fs::write(&out, "old").unwrap();
    write_report(&[run("x", 0..4, Some(10.0))], &out).unwrap();
    let text = std::fs::read_to_string(&out).unwrap();
    assert!(text.starts_with("<!DOCTYPE html>") && text.ends_with("</html>\n"));
    let leftovers: Vec<_> =
        std::fs::read_dir(&dir).unwrap().filter_map(|e| e.ok()).filter(|e| e.file_name() != "report.html").collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    let bad = dir.join("missing-dir").join("r.html");
    let e = write_report(&[], &bad).unwrap_err().to_string();
    assert!(e.contains("missing-dir"), "{e}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn meta_comes_from_the_store_with_config_fallbacks() {
    let dir = scratch("report-meta");
    let s = RunStore::create(
        &dir,
        &serde_json::json!({"strategy": "evolution", "target_ms": 20.0, "constraint": {"kind": "soft"}}),
    )
    .unwrap();
    let m = ReportMeta::from_store(&s).unwrap();
    assert_eq!(m.strategy, "evolution");
    assert_eq!(m.target_ms, Some(20.0));
    assert_eq!(m.constraint.as_deref(), Some("soft (alpha = beta = -0.07)"));
    assert_eq!(m.steps_done, Some(0));
    s.set_meta(meta_keys::TARGET_MS, "7.25").unwrap();
    s.set_meta(meta_keys::STATUS, "running").unwrap();
    s.set_meta(meta_keys::CONSTRAINT, "hard, as the user said").unwrap();
    s.put_strategy_state(0, b"s").unwrap();
    let m = ReportMeta::from_store(&RunStore::open_read_only(&dir).unwrap()).unwrap();
    assert_eq!(m.target_ms, Some(7.25));
    assert_eq!(m.status.as_deref(), Some("running"));
    assert_eq!(m.constraint.as_deref(), Some("hard, as the user said"));
    assert_eq!(m.steps_done, Some(1));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_loss_scored_run_says_its_reward_is_not_accuracy_based() {
    let plain = run("accuracy", 0..8, Some(12.5));
    let note = "scored by a proxy loss";
    assert!(!render_report(std::slice::from_ref(&plain)).contains(note));
    let mut scored = plain.clone();
    scored.label = "val-loss".into();
    for t in &mut scored.trials {
        t.quality = t.accuracy.map(|a| 0.6 * a);
    }
    let html = render_report(&[plain, scored]);
    assert_eq!(count(&html, note), 1, "only the loss-scored run carries the note");
    assert!(html.contains("val-loss: scored by a proxy loss"));
}
