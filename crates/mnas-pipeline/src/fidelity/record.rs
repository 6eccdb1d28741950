//! The file format of benchmark results: a first line `# mnas <kind> <JSON header>` that says
//! what produced the rows, a CSV column line, then one row per finished run, appended and synced
//! as each run ends, so that a job killed at any moment loses at most the run in progress.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::Path;

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::error::{PipelineError, Result};

fn bad(path: &Path, reason: String) -> PipelineError {
    PipelineError::Reference { path: path.to_path_buf(), reason }
}

/// Reads a record file of `kind` with these `columns`; `None` if it does not exist. A last line
/// without its newline (a write cut by a crash) is ignored.
pub fn read<H: DeserializeOwned>(path: &Path, kind: &str, columns: &[&str]) -> Result<Option<(H, Vec<Vec<String>>)>> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(PipelineError::Read { path: path.to_path_buf(), source }),
    };
    let complete = match text.rfind('\n') {
        Some(end) => &text[..end + 1],
        None => "",
    };
    let mut lines = complete.lines();
    let first = lines.next().unwrap_or_default();
    let prefix = format!("# mnas {kind} ");
    let json = first
        .strip_prefix(&prefix)
        .ok_or_else(|| bad(path, format!("not an mnas {kind} file (its first line does not start with `{prefix}`)")))?;
    let header: H =
        serde_json::from_str(json).map_err(|e| bad(path, format!("the {kind} header cannot be read: {e}")))?;
    let want = columns.join(",");
    match lines.next() {
        Some(l) if l == want => {}
        Some(l) => return Err(bad(path, format!("unexpected columns `{l}`, expected `{want}`"))),
        None => return Err(bad(path, "the column line is missing".into())),
    }
    let mut rows = Vec::new();
    for (i, line) in lines.enumerate() {
        let fields: Vec<String> = line.split(',').map(str::to_string).collect();
        if fields.len() != columns.len() {
            return Err(bad(path, format!("row {} has {} fields, expected {}", i + 1, fields.len(), columns.len())));
        }
        rows.push(fields);
    }
    Ok(Some((header, rows)))
}

/// Creates a record file with its header and columns (written beside and renamed, so a crash
/// leaves either nothing or a valid empty file).
pub fn create<H: Serialize>(path: &Path, kind: &str, header: &H, columns: &[&str]) -> Result<()> {
    let write_err = |source| PipelineError::Write { path: path.to_path_buf(), source };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(write_err)?;
    }
    let json = serde_json::to_string(header).expect("headers serialise");
    let text = format!("# mnas {kind} {json}\n{}\n", columns.join(","));
    let tmp = path.with_extension("tmp");
    let mut f = File::create(&tmp).map_err(write_err)?;
    f.write_all(text.as_bytes()).map_err(write_err)?;
    f.sync_all().map_err(write_err)?;
    std::fs::rename(&tmp, path).map_err(write_err)
}

/// Appends one row and syncs it. A torn last line left by an earlier crash is cut first.
pub fn append(path: &Path, fields: &[String]) -> Result<()> {
    let write_err = |source| PipelineError::Write { path: path.to_path_buf(), source };
    let text = std::fs::read(path).map_err(|source| PipelineError::Read { path: path.to_path_buf(), source })?;
    if !text.ends_with(b"\n") {
        let keep = text.iter().rposition(|&b| b == b'\n').map(|i| i + 1).unwrap_or(0);
        OpenOptions::new().write(true).open(path).and_then(|f| f.set_len(keep as u64)).map_err(write_err)?;
    }
    let line: Vec<String> = fields.iter().map(|f| f.replace([',', '\n', '\r'], ";")).collect();
    let mut f = OpenOptions::new().append(true).open(path).map_err(write_err)?;
    f.write_all(format!("{}\n", line.join(",")).as_bytes()).map_err(write_err)?;
    f.sync_data().map_err(write_err)
}

/// Parses a numeric field, naming the row and column when it is not one.
pub fn field<T: std::str::FromStr>(path: &Path, row: &[String], columns: &[&str], name: &str) -> Result<T> {
    let i = columns.iter().position(|c| *c == name).expect("a known column");
    row[i].trim().parse().map_err(|_| bad(path, format!("`{}` is not a valid {name}", row[i])))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_survive_a_torn_write_and_foreign_files_are_refused() {
        let dir = std::env::temp_dir().join(format!("mnas-record-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let path = dir.join("r.csv");
        let cols = ["index", "value"];
        assert!(read::<u32>(&path, "test", &cols).expect("absent is fine").is_none());
        create(&path, "test", &7u32, &cols).expect("created");
        append(&path, &["0".into(), "1.5".into()]).expect("appended");
        // A crash in the middle of the next row: the partial line is ignored, then replaced.
        let mut f = OpenOptions::new().append(true).open(&path).expect("open");
        f.write_all(b"1,2.").expect("write");
        let (h, rows) = read::<u32>(&path, "test", &cols).expect("readable").expect("present");
        assert_eq!((h, rows.len()), (7, 1));
        append(&path, &["1".into(), "2.5".into()]).expect("appended");
        let (_, rows) = read::<u32>(&path, "test", &cols).expect("readable").expect("present");
        assert_eq!(rows, vec![vec!["0".to_string(), "1.5".into()], vec!["1".into(), "2.5".into()]]);
        assert_eq!(field::<f64>(&path, &rows[1], &cols, "value").expect("a number"), 2.5);
        // Another kind of file, or a CSV that is not ours.
        let e = read::<u32>(&path, "other", &cols).expect_err("refused").to_string();
        assert!(e.contains("not an mnas other file"), "{e}");
        std::fs::write(&path, "a,b\n1,2\n").expect("write");
        assert!(read::<u32>(&path, "test", &cols).is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
