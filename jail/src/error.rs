//! Errors of the jail backend.

/// Why building or driving a jail failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A kernel primitive failed.
    #[error(transparent)]
    Isolation(#[from] hyperjail_isolation::Error),
    /// A hook or the config failed.
    #[error(transparent)]
    Oci(#[from] hyperjail_oci::Error),
    /// The container's init reported an error during setup.
    #[error("{0}")]
    Init(String),
    /// The runtime/init channel broke.
    #[error("container init {0}")]
    Channel(String),
    /// A system call in the runtime failed.
    #[error("{op}: {source}")]
    Sys {
        /// What was being done.
        op: &'static str,
        /// errno.
        source: nix::Error,
    },
    /// The configuration asks for something the jail cannot do.
    #[error("{0}")]
    Unsupported(String),
}

impl From<Error> for hyperjail_runtime::Error {
    fn from(e: Error) -> Self {
        hyperjail_runtime::Error::Backend(e.to_string())
    }
}

impl From<hyperjail_runtime::Error> for Error {
    fn from(e: hyperjail_runtime::Error) -> Self {
        Error::Init(e.to_string())
    }
}
