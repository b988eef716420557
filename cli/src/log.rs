//! Errors and debug lines for the `--log` file, in runc's text or JSON format.

use crate::args::LogFormat;
use std::io::Write;
use std::path::Path;

/// Creates the log file up front, as runc does, so engines can always open it.
pub fn open(path: Option<&Path>) {
    if let Some(p) = path {
        let _ = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(p);
    }
}

/// Appends one record to the log file (errors about the log itself are ignored: the
/// message still goes to stderr).
pub fn write(path: Option<&Path>, format: LogFormat, level: &str, msg: &str) {
    let Some(path) = path else { return };
    let line = hyperjail_runtime::log_line(format == LogFormat::Json, level, msg);
    if let Ok(mut f) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
    {
        let _ = writeln!(f, "{line}");
    }
}
