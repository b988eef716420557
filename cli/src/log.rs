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
    let time = hyperjail_runtime::now_rfc3339();
    let line = match format {
        LogFormat::Json => {
            serde_json::json!({"level": level, "msg": msg, "time": time}).to_string()
        }
        LogFormat::Text => format!("time={time:?} level={level} msg={msg:?}"),
    };
    if let Ok(mut f) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
    {
        let _ = writeln!(f, "{line}");
    }
}
