//! Capabilities: the five sets of `process.capabilities`, applied with the `caps` crate.

use crate::{Error, Result};
use caps::{CapSet, Capability, CapsHashSet};
use oci_spec::runtime::{Capabilities, LinuxCapabilities};
use std::str::FromStr;

fn to_set(c: &Option<Capabilities>) -> Result<CapsHashSet> {
    let mut out = CapsHashSet::new();
    for cap in c.iter().flatten() {
        let name = format!("CAP_{cap}");
        let parsed = Capability::from_str(&name).map_err(|_| {
            Error::Invalid(format!("capability {name} is not known to this kernel"))
        })?;
        out.insert(parsed);
    }
    Ok(out)
}

fn sys(op: &'static str, e: caps::errors::CapsError) -> Error {
    Error::Invalid(format!("{op}: {e}"))
}

/// Drops from the bounding set every capability not configured. Must run while the
/// process still has CAP_SETPCAP, i.e. before changing uid.
pub fn drop_bounding(c: &LinuxCapabilities) -> Result<()> {
    let keep = to_set(c.bounding())?;
    for cap in caps::all() {
        if !keep.contains(&cap) && caps::has_cap(None, CapSet::Bounding, cap).unwrap_or(false) {
            caps::drop(None, CapSet::Bounding, cap).map_err(|e| sys("drop bounding", e))?;
        }
    }
    Ok(())
}

/// Sets inheritable, permitted, effective and ambient exactly as configured. Runs after
/// the uid change (with keep-caps), as the last step before exec.
pub fn apply(c: &LinuxCapabilities) -> Result<()> {
    let inh = to_set(c.inheritable())?;
    let prm = to_set(c.permitted())?;
    let eff = to_set(c.effective())?;
    let amb = to_set(c.ambient())?;
    // Effective must be a subset of permitted, which can only shrink: set effective
    // to what both allow first, then permitted, then the rest.
    caps::set(None, CapSet::Inheritable, &inh).map_err(|e| sys("set inheritable caps", e))?;
    caps::set(
        None,
        CapSet::Effective,
        &eff.intersection(&prm).copied().collect(),
    )
    .map_err(|e| sys("set effective caps", e))?;
    caps::set(None, CapSet::Permitted, &prm).map_err(|e| sys("set permitted caps", e))?;
    caps::set(None, CapSet::Effective, &eff).map_err(|e| sys("set effective caps", e))?;
    caps::clear(None, CapSet::Ambient).map_err(|e| sys("clear ambient caps", e))?;
    for cap in amb {
        // Raising an ambient capability needs it permitted and inheritable; like runc,
        // ignore the ones that are not.
        let _ = caps::raise(None, CapSet::Ambient, cap);
    }
    Ok(())
}
