//! Running OCI hooks: the state JSON on stdin, the hook's own args and env, a timeout.

use crate::{Error, Result};
use oci_spec::runtime::Hook;
use std::io::Write;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The six hook points of the runtime spec.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HookKind {
    /// Deprecated `prestart`, run with `createRuntime`.
    Prestart,
    /// `createRuntime`, in the runtime's namespaces.
    CreateRuntime,
    /// `createContainer`, in the container's namespaces before pivot_root.
    CreateContainer,
    /// `startContainer`, in the container before the user process.
    StartContainer,
    /// `poststart`, after the user process started.
    Poststart,
    /// `poststop`, after the container was deleted.
    Poststop,
}

impl HookKind {
    /// The config.json name of this hook point.
    pub fn name(self) -> &'static str {
        match self {
            HookKind::Prestart => "prestart",
            HookKind::CreateRuntime => "createRuntime",
            HookKind::CreateContainer => "createContainer",
            HookKind::StartContainer => "startContainer",
            HookKind::Poststart => "poststart",
            HookKind::Poststop => "poststop",
        }
    }

    /// The hooks of this kind configured in `spec`.
    pub fn of(self, spec: &oci_spec::runtime::Spec) -> &[Hook] {
        let Some(h) = spec.hooks() else { return &[] };
        #[allow(deprecated)]
        let v = match self {
            HookKind::Prestart => h.prestart(),
            HookKind::CreateRuntime => h.create_runtime(),
            HookKind::CreateContainer => h.create_container(),
            HookKind::StartContainer => h.start_container(),
            HookKind::Poststart => h.poststart(),
            HookKind::Poststop => h.poststop(),
        };
        v.as_deref().unwrap_or(&[])
    }
}

/// Runs every hook of `kind` in order; stops at the first failure.
pub fn run_hooks(spec: &oci_spec::runtime::Spec, kind: HookKind, state_json: &[u8]) -> Result<()> {
    for h in kind.of(spec) {
        run_hook(h, kind, state_json)?;
    }
    Ok(())
}

/// Runs one hook with `state_json` on its stdin and waits for it, killing it when its
/// timeout passes. A non-zero exit is an error.
pub fn run_hook(hook: &Hook, kind: HookKind, state_json: &[u8]) -> Result<()> {
    let err = |msg: String| Error::Hook {
        kind: kind.name(),
        path: hook.path().clone(),
        msg,
    };
    let mut cmd = Command::new(hook.path());
    if let Some(args) = hook.args() {
        if let Some((argv0, rest)) = args.split_first() {
            cmd.arg0(argv0).args(rest);
        }
    }
    cmd.env_clear();
    for kv in hook.env().iter().flatten() {
        if let Some((k, v)) = kv.split_once('=') {
            cmd.env(k, v);
        }
    }
    cmd.stdin(Stdio::piped());
    let mut child = cmd.spawn().map_err(|e| err(format!("cannot run: {e}")))?;
    if let Some(mut stdin) = child.stdin.take() {
        // A hook that does not read its stdin is fine: ignore EPIPE.
        let _ = stdin.write_all(state_json);
    }
    let deadline = hook
        .timeout()
        .map(|t| Instant::now() + Duration::from_secs(t.max(1) as u64));
    let mut nap = Duration::from_micros(100);
    loop {
        match child.try_wait() {
            Ok(Some(st)) if st.success() => return Ok(()),
            Ok(Some(st)) => {
                return Err(err(match (st.code(), st.signal()) {
                    (Some(c), _) => format!("exited with status {c}"),
                    (_, Some(s)) => format!("killed by signal {s}"),
                    _ => "failed".into(),
                }))
            }
            Ok(None) => {}
            Err(e) => return Err(err(format!("wait: {e}"))),
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            let _ = child.kill();
            let _ = child.wait();
            return Err(err(format!(
                "timed out after {} s",
                hook.timeout().unwrap_or_default()
            )));
        }
        std::thread::sleep(nap);
        nap = (nap * 2).min(Duration::from_millis(10));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hook(json: &str) -> Hook {
        serde_json::from_str(json).expect("hook JSON")
    }

    #[test]
    fn hook_gets_state_on_stdin_and_env() {
        let dir = std::env::temp_dir().join(format!("hj-hook-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("tmpdir");
        let out = dir.join("out");
        let h = hook(&format!(
            r#"{{"path":"/bin/sh","args":["sh","-c","cat > {0}; echo \"$FOO\" >> {0}"],"env":["FOO=bar"]}}"#,
            out.display()
        ));
        run_hook(&h, HookKind::Poststop, b"{\"id\":\"x\"}").expect("hook runs");
        let got = std::fs::read_to_string(&out).expect("hook wrote");
        assert_eq!(got, "{\"id\":\"x\"}bar\n");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn failing_hook_is_an_error() {
        let h = hook(r#"{"path":"/bin/sh","args":["sh","-c","exit 3"]}"#);
        let e = run_hook(&h, HookKind::Prestart, b"{}")
            .unwrap_err()
            .to_string();
        assert!(e.contains("status 3"), "{e}");
    }

    #[test]
    fn hook_timeout_kills() {
        let h = hook(r#"{"path":"/bin/sh","args":["sh","-c","sleep 5"],"timeout":1}"#);
        let t = Instant::now();
        let e = run_hook(&h, HookKind::Prestart, b"{}")
            .unwrap_err()
            .to_string();
        assert!(e.contains("timed out"), "{e}");
        assert!(t.elapsed() < Duration::from_secs(4));
    }
}
