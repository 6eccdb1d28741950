//! Shared checks for the CLI tests.

use std::process::Output;

/// Asserts a failed run: exit code 2, no panic, and exactly one `error: ` line containing
/// `needle`. `only_line`: the error must also be the only thing on stderr (commands that report
/// progress, like `train`, may print a data summary first).
pub fn assert_error(o: &Output, args: &[&str], needle: &str, only_line: bool) {
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{args:?}: {err}");
    assert!(!err.contains("panicked"), "{args:?} panicked: {err}");
    let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
    let errors: Vec<&&str> = lines.iter().filter(|l| l.starts_with("error: ")).collect();
    assert_eq!(errors.len(), 1, "{args:?}: expected one error line, got: {err}");
    assert!(errors[0].contains(needle), "{args:?}: {err}");
    if only_line {
        assert_eq!(lines.len(), 1, "{args:?}: expected only the error line, got: {err}");
    }
}
