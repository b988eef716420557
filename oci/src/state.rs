//! The OCI state document printed by `state` and given to hooks on stdin.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;

/// OCI container status, plus runc's `paused`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// The container is being created.
    Creating,
    /// Created, the user process has not been started.
    Created,
    /// The user process is running.
    Running,
    /// Frozen by `pause`.
    Paused,
    /// The container process has exited.
    Stopped,
}

impl Status {
    /// The lowercase name used in state JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Creating => "creating",
            Status::Created => "created",
            Status::Running => "running",
            Status::Paused => "paused",
            Status::Stopped => "stopped",
        }
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The state of a container as the runtime spec defines it, with runc's extra fields
/// (`rootfs`, `created`, `owner`) so that engines parsing runc's output work unchanged.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct OciState {
    /// Spec version.
    pub oci_version: String,
    /// Container id.
    pub id: String,
    /// Current status.
    pub status: Status,
    /// Host pid of the container process (0 when stopped, as runc prints it).
    pub pid: i32,
    /// Absolute bundle path.
    pub bundle: PathBuf,
    /// Absolute rootfs path.
    #[serde(default)]
    pub rootfs: PathBuf,
    /// Creation time, RFC 3339.
    #[serde(default)]
    pub created: String,
    /// Annotations of config.json.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    /// Owner (empty for root, as in runc).
    #[serde(default)]
    pub owner: String,
    /// hyperjail: the backend running the domain (`jail` or `vm`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub backend: String,
    /// hyperjail: why that backend was chosen.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub backend_reason: String,
}
