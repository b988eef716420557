//! Loading a bundle: config.json parsed with oci-spec, then checked against the rules of
//! the runtime spec that the type system cannot express.

use crate::{Error, Result};
use oci_spec::runtime::{LinuxNamespaceType, Spec};
use std::collections::HashSet;
use std::path::{Path, PathBuf};

/// Name of the configuration file inside a bundle.
pub const CONFIG_FILE: &str = "config.json";

/// A loaded and validated bundle.
#[derive(Debug, Clone)]
pub struct Bundle {
    /// Absolute bundle directory.
    pub dir: PathBuf,
    /// Absolute rootfs directory (root.path resolved against the bundle).
    pub rootfs: PathBuf,
    /// The parsed configuration.
    pub spec: Spec,
}

impl Bundle {
    /// Loads `dir/config.json`, resolves the rootfs and validates the configuration.
    pub fn load(dir: &Path) -> Result<Bundle> {
        let dir = std::fs::canonicalize(dir).map_err(|source| Error::Read {
            path: dir.to_path_buf(),
            source,
        })?;
        let path = dir.join(CONFIG_FILE);
        let data = std::fs::read(&path).map_err(|source| Error::Read {
            path: path.clone(),
            source,
        })?;
        let spec = parse_spec(&data, &path)?;
        let root = require_root(&spec)?;
        let rootfs = dir.join(root);
        let meta = std::fs::metadata(&rootfs).map_err(|source| Error::Read {
            path: rootfs.clone(),
            source,
        })?;
        if !meta.is_dir() {
            return Err(Error::Invalid(format!(
                "root.path {} is not a directory",
                rootfs.display()
            )));
        }
        let rootfs = std::fs::canonicalize(&rootfs).map_err(|source| Error::Read {
            path: rootfs.clone(),
            source,
        })?;
        validate(&spec)?;
        Ok(Bundle { dir, rootfs, spec })
    }
}

/// Parses config.json bytes and checks them as [`Bundle::load`] does, without touching
/// the filesystem: root.path must be present and non-empty (that it names a directory
/// is checked only by [`Bundle::load`]), then [`validate`]. `path` names the file in
/// error messages only.
pub fn parse_config(data: &[u8], path: &Path) -> Result<Spec> {
    let spec = parse_spec(data, path)?;
    require_root(&spec)?;
    validate(&spec)?;
    Ok(spec)
}

/// config.json bytes to a [`Spec`]; errors name the JSON path of the bad field.
fn parse_spec(data: &[u8], path: &Path) -> Result<Spec> {
    let de = &mut serde_json::Deserializer::from_slice(data);
    serde_path_to_error::deserialize(de).map_err(|e| Error::Parse {
        path: path.to_path_buf(),
        msg: if e.path().to_string() == "." {
            e.inner().to_string()
        } else {
            format!("{}: {}", e.path(), e.inner())
        },
    })
}

/// The configured root.path, which Linux requires and which must not be empty.
fn require_root(spec: &Spec) -> Result<&Path> {
    let root = spec
        .root()
        .as_ref()
        .ok_or_else(|| Error::Invalid("root is required on Linux".into()))?;
    if root.path().as_os_str().is_empty() {
        return Err(Error::Invalid("root.path is empty".into()));
    }
    Ok(root.path())
}

/// Checks the rules of the runtime spec (config.md, config-linux.md) that parsing alone
/// does not enforce.
pub fn validate(spec: &Spec) -> Result<()> {
    let bad = |m: String| Err(Error::Invalid(m));
    if spec.version().is_empty() {
        return bad("ociVersion is required".into());
    }
    if let Some(p) = spec.process() {
        if !p.cwd().is_absolute() {
            return bad(format!(
                "process.cwd {:?} must be an absolute path",
                p.cwd()
            ));
        }
        if let Some(args) = p.args() {
            if args.is_empty() || args[0].is_empty() {
                return bad("process.args must name an executable".into());
            }
        }
        for e in p.env().iter().flatten() {
            if !e.contains('=') {
                return bad(format!("process.env entry {e:?} is not KEY=VALUE"));
            }
        }
        let mut seen = HashSet::new();
        for r in p.rlimits().iter().flatten() {
            if !seen.insert(format!("{:?}", r.typ())) {
                return bad(format!("process.rlimits has {:?} twice", r.typ()));
            }
            if r.soft() > r.hard() {
                return bad(format!(
                    "process.rlimits {:?}: soft limit {} exceeds hard limit {}",
                    r.typ(),
                    r.soft(),
                    r.hard()
                ));
            }
        }
    }
    for m in spec.mounts().iter().flatten() {
        if m.destination().as_os_str().is_empty() {
            return bad("a mount has an empty destination".into());
        }
    }
    for hooks in spec.hooks().iter() {
        #[allow(deprecated)]
        let all = [
            hooks.prestart(),
            hooks.create_runtime(),
            hooks.create_container(),
            hooks.start_container(),
            hooks.poststart(),
            hooks.poststop(),
        ];
        for h in all.into_iter().flatten().flatten() {
            if !h.path().is_absolute() {
                return bad(format!("hook path {:?} must be absolute", h.path()));
            }
            if let Some(t) = h.timeout() {
                if t <= 0 {
                    return bad(format!("hook {:?}: timeout must be > 0", h.path()));
                }
            }
        }
    }
    let Some(linux) = spec.linux() else {
        return Ok(());
    };
    let mut kinds = HashSet::new();
    for ns in linux.namespaces().iter().flatten() {
        if !kinds.insert(ns.typ()) {
            return bad(format!("namespace {} listed twice", ns.typ()));
        }
        if let Some(p) = ns.path() {
            if !p.is_absolute() {
                return bad(format!(
                    "namespace {} path {:?} must be absolute",
                    ns.typ(),
                    p
                ));
            }
        }
    }
    let has_new = |t: LinuxNamespaceType| kinds.contains(&t);
    if (spec.hostname().as_deref().is_some_and(|h| !h.is_empty())
        || spec.domainname().as_deref().is_some_and(|h| !h.is_empty()))
        && !has_new(LinuxNamespaceType::Uts)
    {
        return bad("hostname/domainname need a uts namespace".into());
    }
    let maps = linux.uid_mappings().iter().flatten().count()
        + linux.gid_mappings().iter().flatten().count();
    if maps > 0 && !has_new(LinuxNamespaceType::User) {
        return bad("uidMappings/gidMappings need a user namespace".into());
    }
    if let Some(sysctl) = linux.sysctl() {
        let created = |t: LinuxNamespaceType| {
            linux
                .namespaces()
                .iter()
                .flatten()
                .any(|n| n.typ() == t && n.path().is_none())
        };
        let joined = |t: LinuxNamespaceType| {
            linux
                .namespaces()
                .iter()
                .flatten()
                .any(|n| n.typ() == t && n.path().is_some())
        };
        for k in sysctl.keys() {
            if k.is_empty() || k.contains("..") || k.starts_with('/') {
                return bad(format!("sysctl key {k:?} is not valid"));
            }
            // Only namespaced sysctls, and only in a namespace of the container's own
            // (runc's rule): anything else would change the host.
            let ns = sysctl_namespace(k);
            let ok = match ns {
                Some(LinuxNamespaceType::Network) => {
                    created(LinuxNamespaceType::Network) || joined(LinuxNamespaceType::Network)
                }
                Some(t) => created(t),
                None => false,
            };
            if !ok {
                return bad(match ns {
                    Some(t) => format!("sysctl {k:?} needs a {t} namespace of the container's own"),
                    None => format!("sysctl {k:?} is not in a separate kernel namespace"),
                });
            }
        }
    }
    if let Some(prop) = linux.rootfs_propagation() {
        const OK: [&str; 8] = [
            "",
            "private",
            "rprivate",
            "shared",
            "rshared",
            "slave",
            "rslave",
            "unbindable",
        ];
        if !OK.contains(&prop.as_str()) && prop != "runbindable" {
            return bad(format!(
                "rootfsPropagation {prop:?} is not a propagation mode"
            ));
        }
    }
    if let Some(cg) = linux.cgroups_path() {
        if cg
            .components()
            .any(|c| matches!(c, std::path::Component::ParentDir))
        {
            return bad(format!("cgroupsPath {:?} must not contain '..'", cg));
        }
    }
    for d in linux.devices().iter().flatten() {
        if !d.path().is_absolute() {
            return bad(format!("device path {:?} must be absolute", d.path()));
        }
    }
    Ok(())
}

/// The namespace that isolates a sysctl, if any.
fn sysctl_namespace(key: &str) -> Option<LinuxNamespaceType> {
    const IPC: [&str; 8] = [
        "kernel.msgmax",
        "kernel.msgmnb",
        "kernel.msgmni",
        "kernel.sem",
        "kernel.shmall",
        "kernel.shmmax",
        "kernel.shmmni",
        "kernel.shm_rmid_forced",
    ];
    if IPC.contains(&key) || key.starts_with("fs.mqueue.") {
        Some(LinuxNamespaceType::Ipc)
    } else if key.starts_with("net.") {
        Some(LinuxNamespaceType::Network)
    } else if key == "kernel.hostname" || key == "kernel.domainname" {
        Some(LinuxNamespaceType::Uts)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(json: &str) -> Spec {
        serde_json::from_str(json).expect("test JSON parses")
    }

    #[test]
    fn minimal_config_is_valid() {
        let s = spec(
            r#"{"ociVersion":"1.0.2","root":{"path":"rootfs"},"process":{"cwd":"/","user":{"uid":0,"gid":0},"args":["sh"]}}"#,
        );
        assert!(validate(&s).is_ok());
    }

    #[test]
    fn relative_cwd_is_rejected() {
        let s = spec(
            r#"{"ociVersion":"1.0.2","process":{"cwd":"tmp","user":{"uid":0,"gid":0},"args":["sh"]}}"#,
        );
        let e = validate(&s).unwrap_err().to_string();
        assert!(e.contains("process.cwd"), "{e}");
    }

    #[test]
    fn hostname_without_uts_is_rejected() {
        let s = spec(
            r#"{"ociVersion":"1.0.2","hostname":"x","linux":{"namespaces":[{"type":"pid"}]}}"#,
        );
        assert!(validate(&s).unwrap_err().to_string().contains("uts"));
    }

    #[test]
    fn duplicate_namespace_is_rejected() {
        let s = spec(
            r#"{"ociVersion":"1.0.2","linux":{"namespaces":[{"type":"pid"},{"type":"pid"}]}}"#,
        );
        assert!(validate(&s).unwrap_err().to_string().contains("twice"));
    }

    #[test]
    fn soft_rlimit_above_hard_is_rejected() {
        let s = spec(
            r#"{"ociVersion":"1.0.2","process":{"cwd":"/","user":{"uid":0,"gid":0},"args":["sh"],"rlimits":[{"type":"RLIMIT_NOFILE","soft":10,"hard":5}]}}"#,
        );
        assert!(validate(&s).unwrap_err().to_string().contains("exceeds"));
    }

    #[test]
    fn sysctls_need_their_namespace() {
        let base = r#"{"ociVersion":"1.0.2","linux":{"namespaces":[{"type":"network"},{"type":"uts"}],"sysctl":{"#;
        assert!(validate(&spec(&format!("{base}\"net.ipv4.ip_forward\":\"1\"}}}}}}"))).is_ok());
        assert!(validate(&spec(&format!("{base}\"kernel.domainname\":\"x\"}}}}}}"))).is_ok());
        let e = validate(&spec(&format!("{base}\"kernel.shmmax\":\"1\"}}}}}}"))).unwrap_err();
        assert!(e.to_string().contains("ipc namespace"), "{e}");
        let e = validate(&spec(&format!("{base}\"vm.swappiness\":\"1\"}}}}}}"))).unwrap_err();
        assert!(e.to_string().contains("not in a separate"), "{e}");
        let host = r#"{"ociVersion":"1.0.2","linux":{"namespaces":[{"type":"pid"}],"sysctl":{"net.ipv4.ip_forward":"1"}}}"#;
        assert!(validate(&spec(host))
            .unwrap_err()
            .to_string()
            .contains("net namespace"));
    }

    #[test]
    fn parse_config_parses_and_validates() {
        let path = Path::new("/b/config.json");
        let ok = br#"{"ociVersion":"1.0.2","root":{"path":"rootfs"},"process":{"cwd":"/","user":{"uid":0,"gid":0},"args":["sh"]}}"#;
        assert!(parse_config(ok, path).is_ok());
        let e = parse_config(br#"{"ociVersion":"1.0.2"}"#, path).unwrap_err();
        assert!(e.to_string().contains("root is required"), "{e}");
        let e = parse_config(br#"{"ociVersion":"1.0.2","root":{"path":""}}"#, path).unwrap_err();
        assert!(e.to_string().contains("root.path is empty"), "{e}");
        let e = parse_config(br#"{"ociVersion":"1.0.2","hostname":5}"#, path).unwrap_err();
        assert!(matches!(e, Error::Parse { .. }), "{e}");
        assert!(e.to_string().contains("hostname"), "{e}");
        let e = parse_config(br#"{"ociVersion":"","root":{"path":"rootfs"}}"#, path).unwrap_err();
        assert!(e.to_string().contains("ociVersion"), "{e}");
        assert!(parse_config(b"\xff{", path).is_err());
    }

    #[test]
    fn wrong_type_fails_to_parse() {
        assert!(serde_json::from_str::<Spec>(r#"{"ociVersion":"1.0.2","hostname":5}"#).is_err());
    }

    #[test]
    fn unknown_capability_fails_to_parse() {
        let j = r#"{"ociVersion":"1.0.2","process":{"cwd":"/","user":{"uid":0,"gid":0},"capabilities":{"bounding":["CAP_NOPE"]}}}"#;
        assert!(serde_json::from_str::<Spec>(j).is_err());
    }
}
