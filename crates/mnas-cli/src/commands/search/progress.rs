//! Live progress of a search: a bar on a terminal, one line per trial otherwise.

use std::io::IsTerminal;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use mnas_search::pareto::pareto_front;
use mnas_search::search_loop::SearchObserver;
use mnas_search::{Trial, TrialStatus};
use mnas_space::Arch;

pub struct SearchProgress {
    bar: Option<ProgressBar>,
    trials: Vec<Trial>,
}

impl SearchProgress {
    pub fn new(total: usize, done: Vec<Trial>) -> SearchProgress {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = ProgressBar::with_draw_target(Some(total as u64), ProgressDrawTarget::stderr());
            let style =
                ProgressStyle::with_template("{prefix} [{bar:25}] {pos}/{len} trials ({elapsed}, eta {eta}) {msg}")
                    .map(|s| s.progress_chars("=> "))
                    .unwrap_or_else(|_| ProgressStyle::default_bar());
            bar.set_style(style);
            bar.set_position(done.len() as u64);
            bar
        });
        SearchProgress { bar, trials: done }
    }

    fn summary(&self) -> String {
        let best = self.trials.iter().map(|t| t.reward).fold(f64::NAN, f64::max);
        let front = pareto_front(&self.trials).len();
        if best.is_nan() {
            String::new()
        } else {
            format!("best reward {best:.4}, Pareto front {front}")
        }
    }

    /// A handle that prints above the bar (or plain lines without one), for other threads.
    pub fn printer(&self) -> Printer {
        Printer(self.bar.clone())
    }

    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

fn describe(t: &Trial) -> String {
    match t.status {
        TrialStatus::Ok => format!(
            "acc {:.1}%{}, {:.2} ms, reward {:.4}{}",
            100.0 * t.accuracy.unwrap_or(0.0),
            match t.quality {
                Some(q) if t.scored_by_loss() => format!(", quality {q:.4}"),
                _ => String::new(),
            },
            t.latency_ms.unwrap_or(0.0),
            t.reward,
            if t.reused { " (seen before)" } else { "" }
        ),
        TrialStatus::Failed => format!("FAILED: {}", t.reason.as_deref().unwrap_or("no reason recorded")),
        TrialStatus::Unavailable => {
            format!("UNAVAILABLE (left out of the update): {}", t.reason.as_deref().unwrap_or("no reason recorded"))
        }
    }
}

impl SearchObserver for SearchProgress {
    fn on_step_start(&mut self, step: u64, total_steps: u64) {
        if let Some(bar) = &self.bar {
            bar.set_prefix(format!("step {}/{}", step + 1, total_steps));
        }
    }

    fn on_trial_start(&mut self, step: u64, index: u64, arch: &Arch) {
        let counts = mnas_space::count(arch);
        let what = format!(
            "training {step}.{index} ({:.2}M params, {:.0}M MACs)",
            counts.params as f64 / 1e6,
            counts.macs as f64 / 1e6
        );
        match &self.bar {
            Some(bar) => bar.set_message(format!("{} | {what}", self.summary())),
            None => tracing::info!("{what}"),
        }
    }

    fn on_trial(&mut self, trial: &Trial, done: usize, total: usize) {
        let line = format!(
            "trial {}.{} [{done}/{total}]: {} (train {:.0} s, latency {:.1} s)",
            trial.step,
            trial.index,
            describe(trial),
            trial.train_seconds,
            trial.latency_seconds
        );
        self.trials.push(trial.clone());
        match &self.bar {
            Some(bar) => {
                bar.println(line);
                bar.set_position(done as u64);
                bar.set_message(self.summary());
            }
            None => eprintln!("{line}"),
        }
    }

    fn on_step_end(&mut self, step: u64, rewards: &[f64]) {
        let mean = rewards.iter().sum::<f64>() / rewards.len().max(1) as f64;
        let line = format!("step {} done: mean reward {mean:.4}; {}", step + 1, self.summary());
        match &self.bar {
            Some(bar) => bar.println(line),
            None => eprintln!("{line}"),
        }
    }
}

/// Prints lines above the search's bar.
#[derive(Clone)]
pub struct Printer(Option<ProgressBar>);

impl Printer {
    pub fn line(&self, line: String) {
        match &self.0 {
            Some(bar) => bar.println(line),
            None => eprintln!("{line}"),
        }
    }
}

/// Which worker took which trial.
pub struct WorkerLines(pub Printer);

impl mnas_pipeline::distributed::WorkerWatch for WorkerLines {
    fn started(&mut self, key: mnas_search::search_loop::TrialKey, worker: &str) {
        let again = if key.attempt > 0 { " (retry)" } else { "" };
        self.0.line(format!("trial {}.{} training on worker {worker}{again}", key.step, key.index));
    }
}
