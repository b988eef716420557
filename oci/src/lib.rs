//! hyperjail-oci: loading and validating an OCI bundle, the OCI state document, the
//! hooks runner and the `features` document.
//!
//! Nothing here touches namespaces or KVM: this crate reads and checks input, so it is
//! the first line of defence against malformed bundles.

#![forbid(unsafe_code)]

mod bundle;
mod error;
mod features;
mod hooks;
mod state;

pub use bundle::{parse_config, validate, Bundle, CONFIG_FILE};
pub use error::Error;
pub use features::features;
pub use hooks::{run_hook, run_hooks, HookKind};
pub use oci_spec::runtime::Spec;
pub use state::{OciState, Status};

/// The OCI runtime-spec version this runtime implements.
pub const OCI_VERSION: &str = "1.2.0";

/// Result type of this crate.
pub type Result<T> = std::result::Result<T, Error>;
