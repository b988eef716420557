//! Errors of the kernel primitives: every one names the operation and the object.

use std::path::PathBuf;

/// A failed kernel operation, with what it was applied to.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A system call on a path failed.
    #[error("{op} {path}: {source}")]
    Path {
        /// Operation.
        op: &'static str,
        /// Object.
        path: PathBuf,
        /// errno.
        source: nix::Error,
    },
    /// A system call failed.
    #[error("{op}: {source}")]
    Sys {
        /// Operation.
        op: String,
        /// errno.
        source: nix::Error,
    },
    /// File I/O failed.
    #[error("{op} {path}: {source}")]
    Io {
        /// Operation.
        op: &'static str,
        /// Object.
        path: PathBuf,
        /// Underlying error.
        source: std::io::Error,
    },
    /// The configuration asks for something this primitive cannot do.
    #[error("{0}")]
    Invalid(String),
}

impl Error {
    /// A failed syscall on `path`.
    pub fn path(op: &'static str, path: impl Into<PathBuf>, source: nix::Error) -> Error {
        Error::Path {
            op,
            path: path.into(),
            source,
        }
    }

    /// A failed syscall.
    pub fn sys(op: impl Into<String>, source: nix::Error) -> Error {
        Error::Sys {
            op: op.into(),
            source,
        }
    }

    /// A failed file operation.
    pub fn io(op: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Error {
        Error::Io {
            op,
            path: path.into(),
            source,
        }
    }
}
