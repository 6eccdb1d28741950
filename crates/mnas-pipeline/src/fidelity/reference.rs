//! Reference accuracies: every architecture of the sample trained with far more compute than any
//! proxy, on the full data set the proxy samples from. Hours of CPU, so the job appends one row
//! per finished architecture and a rerun continues where it stopped; the finished file is
//! committed so that every later proxy change is judged in minutes against the same reference.

use std::path::{Path, PathBuf};

use mnas_engine::train::{RunResult, RunStatus};
use mnas_space::SearchSpace;
use serde::{Deserialize, Serialize};

use super::record::{self, field};
use super::sample::{space_id, stratified_sample, SampledArch};
use super::JobObserver;
use crate::error::{PipelineError, Result};
use crate::proxy::{ProxySettings, ProxyTrainer};

pub const KIND: &str = "proxy-reference";
/// The benchmark samples 10-class models (CIFAR-10, Imagenette).
pub const CLASSES: u32 = 10;
pub const COLUMNS: [&str; 10] =
    ["index", "tokens", "params", "macs", "val_top1", "val_loss", "train_loss", "seconds", "images_per_sec", "status"];

/// What a reference file was made from. Two references compare only if the sample, the space and
/// the data agree.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReferenceHeader {
    pub archs: usize,
    pub archs_seed: u64,
    /// [`space_id`] of the search space the sample was drawn from.
    pub space: String,
    /// The data set (as given) and the content hash of its whole train + held-out split.
    pub data: String,
    pub data_hash: String,
    pub train_images: usize,
    pub val_images: usize,
    /// How every architecture was trained.
    pub settings: ProxySettings,
    pub mnas_version: String,
    /// The command and the commit that started the job (provenance only).
    pub command: String,
    pub commit: String,
}

/// One finished reference training.
#[derive(Debug, Clone, PartialEq)]
pub struct ReferenceRow {
    pub index: usize,
    pub tokens: Vec<usize>,
    pub params: u64,
    pub macs: u64,
    pub val_top1: f64,
    pub val_loss: f64,
    pub train_loss: f64,
    pub seconds: f64,
    pub images_per_sec: f64,
    /// `ok`, or why the training failed.
    pub status: String,
}

impl ReferenceRow {
    fn fields(&self) -> Vec<String> {
        let tokens: Vec<String> = self.tokens.iter().map(|t| t.to_string()).collect();
        vec![
            self.index.to_string(),
            tokens.join(" "),
            self.params.to_string(),
            self.macs.to_string(),
            format!("{:.6}", self.val_top1),
            format!("{:.6}", self.val_loss),
            format!("{:.6}", self.train_loss),
            format!("{:.1}", self.seconds),
            format!("{:.1}", self.images_per_sec),
            self.status.clone(),
        ]
    }

    fn parse(path: &Path, row: &[String]) -> Result<Self> {
        let tokens =
            row[1].split_whitespace().map(|t| t.parse()).collect::<std::result::Result<Vec<usize>, _>>().map_err(
                |_| PipelineError::Reference { path: path.into(), reason: format!("bad tokens `{}`", row[1]) },
            )?;
        Ok(ReferenceRow {
            index: field(path, row, &COLUMNS, "index")?,
            tokens,
            params: field(path, row, &COLUMNS, "params")?,
            macs: field(path, row, &COLUMNS, "macs")?,
            val_top1: field(path, row, &COLUMNS, "val_top1")?,
            val_loss: field(path, row, &COLUMNS, "val_loss")?,
            train_loss: field(path, row, &COLUMNS, "train_loss")?,
            seconds: field(path, row, &COLUMNS, "seconds")?,
            images_per_sec: field(path, row, &COLUMNS, "images_per_sec")?,
            status: row[9].clone(),
        })
    }

    pub fn ok(&self) -> bool {
        self.status == "ok"
    }
}

/// A reference file as read back.
#[derive(Debug, Clone, PartialEq)]
pub struct Reference {
    pub path: PathBuf,
    pub header: ReferenceHeader,
    pub rows: Vec<ReferenceRow>,
}

impl Reference {
    /// Reads a reference file and checks its rows against the sample its header names: every
    /// row must be that sample's architecture at that index (same tokens).
    pub fn read(path: &Path) -> Result<Reference> {
        let (header, raw) = record::read::<ReferenceHeader>(path, KIND, &COLUMNS)?
            .ok_or_else(|| PipelineError::Reference { path: path.into(), reason: "no such file".into() })?;
        let rows = raw.iter().map(|r| ReferenceRow::parse(path, r)).collect::<Result<Vec<_>>>()?;
        let reference = Reference { path: path.to_path_buf(), header, rows };
        reference.check_space(&SearchSpace::default())?;
        Ok(reference)
    }

    fn fail(&self, reason: String) -> PipelineError {
        PipelineError::Reference { path: self.path.clone(), reason }
    }

    /// Refuses a reference drawn from another search space, or whose rows are not its sample's.
    pub fn check_space(&self, space: &SearchSpace) -> Result<()> {
        let id = space_id(space);
        if self.header.space != id {
            return Err(self.fail(format!(
                "it was made on another search space (space id {}, this mnas has {id})",
                self.header.space
            )));
        }
        let sample = stratified_sample(space, self.header.archs, self.header.archs_seed, CLASSES);
        for row in &self.rows {
            match sample.get(row.index) {
                Some(s) if s.tokens == row.tokens => {}
                _ => {
                    return Err(self.fail(format!(
                        "row {} is not architecture {} of the sample (--archs {} --archs-seed {})",
                        row.index, row.index, self.header.archs, self.header.archs_seed
                    )))
                }
            }
        }
        Ok(())
    }

    /// Refuses a reference of another sample.
    pub fn check_sample(&self, archs: usize, archs_seed: u64) -> Result<()> {
        if (self.header.archs, self.header.archs_seed) != (archs, archs_seed) {
            return Err(self.fail(format!(
                "it holds the sample --archs {} --archs-seed {}, not --archs {archs} --archs-seed {archs_seed}",
                self.header.archs, self.header.archs_seed
            )));
        }
        Ok(())
    }

    /// Refuses a reference made on other data (or another split of it).
    pub fn check_data(&self, data: &str, hash: u64) -> Result<()> {
        if self.header.data_hash != format!("{hash:016x}") {
            return Err(self.fail(format!(
                "it was trained on other data ({}, content {}; here {data}, content {hash:016x}): \
                 the data set, its held-out fraction and split seed must be the reference's",
                self.header.data, self.header.data_hash
            )));
        }
        Ok(())
    }

    /// Rows by sample index, once each; `None` for architectures not finished yet.
    pub fn by_index(&self) -> Vec<Option<&ReferenceRow>> {
        let mut out = vec![None; self.header.archs];
        for r in &self.rows {
            if r.index < out.len() && out[r.index].is_none() {
                out[r.index] = Some(r);
            }
        }
        out
    }
}

/// A reference job: train every architecture of the sample with `settings`, appending to `out`.
pub struct ReferenceJob {
    pub out: PathBuf,
    pub archs: usize,
    pub archs_seed: u64,
    pub settings: ProxySettings,
    pub command: String,
    pub commit: String,
}

impl ReferenceJob {
    /// Runs the architectures `out` does not hold yet. Refuses a file made from another sample,
    /// space, data or recipe.
    pub fn run(&self, observer: &mut dyn JobObserver) -> Result<Reference> {
        if self.archs < 4 {
            return Err(PipelineError::Bench(format!(
                "a reference needs at least 4 architectures, got {}",
                self.archs
            )));
        }
        let trainer = ProxyTrainer::new(self.settings.clone())?;
        if trainer.data.classes.len() != CLASSES as usize {
            return Err(PipelineError::Bench(format!(
                "the benchmark samples 10-class models; {} has {} classes",
                trainer.data.name,
                trainer.data.classes.len()
            )));
        }
        let space = SearchSpace::default();
        let header = ReferenceHeader {
            archs: self.archs,
            archs_seed: self.archs_seed,
            space: space_id(&space),
            data: trainer.data.name.clone(),
            data_hash: format!("{:016x}", trainer.data_hash),
            train_images: trainer.data.train.len(),
            val_images: trainer.data.val.len(),
            settings: self.settings.clone(),
            mnas_version: env!("CARGO_PKG_VERSION").into(),
            command: self.command.clone(),
            commit: self.commit.clone(),
        };
        let existing = match record::read::<ReferenceHeader>(&self.out, KIND, &COLUMNS)? {
            Some(_) => Some(Reference::read(&self.out)?),
            None => None,
        };
        let reference = match existing {
            Some(r) => {
                r.check_sample(self.archs, self.archs_seed)?;
                r.check_data(&trainer.data.name, trainer.data_hash)?;
                if r.header.settings != self.settings {
                    return Err(r.fail(format!(
                        "it was trained with other settings ({}); continue it with the same options",
                        serde_json::to_string(&r.header.settings).unwrap_or_default()
                    )));
                }
                r
            }
            None => {
                record::create(&self.out, KIND, &header, &COLUMNS)?;
                Reference { path: self.out.clone(), header, rows: Vec::new() }
            }
        };
        let sample = stratified_sample(&space, self.archs, self.archs_seed, CLASSES);
        let done: Vec<bool> = reference.by_index().iter().map(|r| r.is_some()).collect();
        let todo: Vec<&SampledArch> = sample.iter().filter(|s| !done[s.index]).collect();
        let total = sample.len();
        let first = total - todo.len();
        for (finished, s) in (first..).zip(todo) {
            let what = format!("reference {}/{total}: {}", s.index + 1, s.arch.canonical());
            observer.on_run_start(&what, finished, total);
            let mut stopped = false;
            let result = trainer.run(&s.arch, &mut |p| {
                let go = observer.on_step(p);
                stopped |= !go;
                go
            })?;
            if stopped {
                break;
            }
            observer.on_run_end(&what, &result);
            record::append(&self.out, &row_of(s, &result).fields())?;
        }
        Reference::read(&self.out)
    }
}

fn row_of(s: &SampledArch, r: &RunResult) -> ReferenceRow {
    ReferenceRow {
        index: s.index,
        tokens: s.tokens.clone(),
        params: s.params,
        macs: s.macs,
        val_top1: r.val_top1,
        val_loss: r.val_loss,
        train_loss: r.train_loss,
        seconds: r.seconds,
        images_per_sec: r.images_per_sec,
        status: match &r.status {
            RunStatus::Completed => "ok".into(),
            RunStatus::Diverged { reason } => format!("diverged: {reason}"),
        },
    }
}
