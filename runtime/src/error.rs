//! Errors of the domain model.

use std::path::PathBuf;

/// Why a verb failed. The `Display` text is the one line the CLI prints.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The id breaks the naming rules.
    #[error("invalid container id {id:?}: {why}")]
    InvalidId {
        /// The id given.
        id: String,
        /// Which rule.
        why: &'static str,
    },
    /// No domain has this id.
    #[error("container {0} does not exist")]
    NotFound(String),
    /// A domain with this id exists already.
    #[error("container {0} already exists")]
    AlreadyExists(String),
    /// The verb is not allowed in the current status.
    #[error("cannot {verb} container {id}: it is {status}")]
    WrongState {
        /// The verb.
        verb: &'static str,
        /// Container id.
        id: String,
        /// Its status.
        status: hyperjail_oci::Status,
    },
    /// An unknown or malformed signal.
    #[error("invalid signal {0:?}")]
    BadSignal(String),
    /// The bundle or config is not acceptable.
    #[error(transparent)]
    Oci(#[from] hyperjail_oci::Error),
    /// The state file exists but cannot be parsed.
    #[error("state file {path} is corrupt ({msg}); `delete --force` removes it")]
    CorruptState {
        /// state.json path.
        path: PathBuf,
        /// Parser message.
        msg: String,
    },
    /// An I/O operation on the state store failed.
    #[error("{op} {path}: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// On which path.
        path: PathBuf,
        /// Underlying error.
        source: std::io::Error,
    },
    /// A system call failed.
    #[error("{op}: {source}")]
    Sys {
        /// What was being done.
        op: &'static str,
        /// errno.
        source: nix::Error,
    },
    /// Failure inside a backend; the message is already one line.
    #[error("{0}")]
    Backend(String),
}

impl Error {
    /// Shorthand for an I/O error with context.
    pub fn io(op: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Error {
        Error::Io {
            op,
            path: path.into(),
            source,
        }
    }
}
