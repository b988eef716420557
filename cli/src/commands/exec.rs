//! `exec`: the process to run, from --process or from the command line over the
//! container's own process section (as runc builds it).

use crate::args::ExecArgs;
use anyhow::{bail, Context, Result};
use hyperjail_runtime::{ExecRequest, RunOutcome, Runtime};
use oci_spec::runtime::{Capability, Process};

fn parse_user(s: &str) -> Result<(u32, Option<u32>)> {
    let (u, g) = match s.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (s, None),
    };
    let uid = u
        .parse()
        .with_context(|| format!("--user {s:?}: uid must be a number"))?;
    let gid = g
        .map(|g| {
            g.parse()
                .with_context(|| format!("--user {s:?}: gid must be a number"))
        })
        .transpose()?;
    Ok((uid, gid))
}

fn build(rt: &Runtime, a: &ExecArgs) -> Result<Process> {
    if let Some(p) = &a.process {
        let mut p: Process = super::read_json(p, "process")?;
        if a.tty {
            p.set_terminal(Some(true));
        }
        return Ok(p);
    }
    if a.command.is_empty() {
        bail!("exec needs a command or --process");
    }
    let spec = rt.config(&a.id)?;
    let mut p = spec.process().clone().unwrap_or_default();
    p.set_args(Some(a.command.clone()));
    p.set_terminal(Some(a.tty));
    let mut env = p.env().clone().unwrap_or_default();
    for kv in &a.env {
        let Some((k, _)) = kv.split_once('=') else {
            bail!("--env {kv:?} is not KEY=VALUE");
        };
        env.retain(|e| e.split_once('=').map(|(ek, _)| ek) != Some(k));
        env.push(kv.clone());
    }
    p.set_env(Some(env));
    if let Some(cwd) = &a.cwd {
        if !cwd.is_absolute() {
            bail!("--cwd {} must be an absolute path", cwd.display());
        }
        p.set_cwd(cwd.clone());
    }
    let user = p.user_mut();
    if let Some(u) = &a.user {
        let (uid, gid) = parse_user(u)?;
        user.set_uid(uid);
        if let Some(g) = gid {
            user.set_gid(g);
        }
    }
    if !a.additional_gids.is_empty() {
        user.set_additional_gids(Some(a.additional_gids.clone()));
    }
    if !a.cap.is_empty() {
        let mut caps = p.capabilities().clone().unwrap_or_default();
        for name in &a.cap {
            let c: Capability = serde_json::from_value(serde_json::Value::String(name.clone()))
                .map_err(|_| anyhow::anyhow!("--cap {name:?} is not a capability"))?;
            let add = |s: &Option<oci_spec::runtime::Capabilities>| {
                let mut s = s.clone().unwrap_or_default();
                s.insert(c);
                Some(s)
            };
            let (b, e, pm, i) = (
                add(caps.bounding()),
                add(caps.effective()),
                add(caps.permitted()),
                add(caps.inheritable()),
            );
            caps.set_bounding(b);
            caps.set_effective(e);
            caps.set_permitted(pm);
            caps.set_inheritable(i);
        }
        p.set_capabilities(Some(caps));
    }
    if a.no_new_privs {
        p.set_no_new_privileges(Some(true));
    }
    if let Some(aa) = &a.apparmor {
        p.set_apparmor_profile(Some(aa.clone()));
    }
    if let Some(l) = &a.process_label {
        p.set_selinux_label(Some(l.clone()));
    }
    Ok(p)
}

/// Runs `exec`; returns the exit code to leave with.
pub fn run(rt: &Runtime, a: &ExecArgs) -> Result<u8> {
    if a.ignore_paused {
        bail!("exec --ignore-paused is not supported: a process that joins a frozen cgroup cannot run");
    }
    let process = build(rt, a)?;
    let req = ExecRequest {
        process,
        console_socket: a
            .console_socket
            .as_deref()
            .map(super::absolute)
            .transpose()?,
        pid_file: a.pid_file.as_deref().map(super::absolute).transpose()?,
        preserve_fds: a.preserve_fds,
        detach: a.detach,
        lock_fd: None,
    };
    Ok(match rt.exec(&a.id, &req)? {
        RunOutcome::Detached => 0,
        RunOutcome::Exited(c) => c.clamp(0, 255) as u8,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn users() {
        assert_eq!(parse_user("1000").ok(), Some((1000, None)));
        assert_eq!(parse_user("1000:100").ok(), Some((1000, Some(100))));
        assert!(parse_user("bob").is_err());
        assert!(parse_user("1:x").is_err());
    }
}
