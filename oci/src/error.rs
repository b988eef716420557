//! Errors of the OCI layer.

use std::path::PathBuf;

/// What is wrong with a bundle, a config or a hook.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The bundle directory or config.json cannot be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// File or directory that failed.
        path: PathBuf,
        /// Underlying error.
        source: std::io::Error,
    },
    /// config.json is not valid JSON or a field has the wrong type.
    #[error("invalid {path}: {msg}")]
    Parse {
        /// config.json path.
        path: PathBuf,
        /// Parser message with line and column.
        msg: String,
    },
    /// config.json parses but breaks a rule of the runtime spec.
    #[error("invalid config.json: {0}")]
    Invalid(String),
    /// A hook could not be run, failed or timed out.
    #[error("{kind} hook {path}: {msg}")]
    Hook {
        /// Hook kind (prestart, createRuntime, ...).
        kind: &'static str,
        /// Hook executable.
        path: PathBuf,
        /// What went wrong.
        msg: String,
    },
}
