//! Errors and debug lines for the `--log` file, in runc's text or JSON format.

use crate::args::LogFormat;
use std::io::Write;
use std::path::Path;

/// Appends one record to the log file (errors about the log itself are ignored: the
/// message still goes to stderr).
pub fn write(path: Option<&Path>, format: LogFormat, level: &str, msg: &str) {
    let Some(path) = path else { return };
    let time = hyperjail_runtime_time();
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

fn hyperjail_runtime_time() -> String {
    hyperjail_runtime::now_rfc3339()
}
