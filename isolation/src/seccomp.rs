//! Seccomp: translates the OCI `linux.seccomp` profile into a libseccomp filter the
//! way runc does, loads it in the container process, and hands the `SCMP_ACT_NOTIFY`
//! listener fd to the seccomp agent at `listenerPath`.
//!
//! The translation is split in two: `plan` is a pure function from the profile to
//! the list of libseccomp calls (validation happens there), [`build`] replays that
//! list into a [`ScmpFilterContext`]. Nothing is filtered before [`Filter::load`].

use crate::{Error, Result};
use libseccomp::{
    ScmpAction, ScmpArch, ScmpArgCompare, ScmpCompareOp, ScmpFilterAttr, ScmpFilterContext,
    ScmpSyscall,
};
use nix::errno::Errno;
use nix::sys::socket::{
    connect, sendmsg, socket, AddressFamily, ControlMessage, MsgFlags, SockFlag, SockType, UnixAddr,
};
use oci_spec::runtime::{
    Arch, LinuxSeccomp, LinuxSeccompAction, LinuxSeccompArg, LinuxSeccompFilterFlag,
    LinuxSeccompOperator,
};
use std::io::IoSlice;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};

/// Syscalls take at most six arguments: valid `args[].index` values are 0..=5.
const MAX_SYSCALL_ARGS: usize = 6;

/// The name of the listener fd in the container process state (`fds`).
const SECCOMP_FD_NAME: &str = "seccompFd";

/// A compiled filter, ready to load in the container process just before exec.
///
/// The filter is not `Send` (libseccomp contexts are not): build and load it in the
/// same process.
#[derive(Debug)]
pub struct Filter {
    ctx: ScmpFilterContext,
    listener: Option<Listener>,
}

/// The seccomp agent's socket, connected at [`build`] time while `listenerPath` is
/// still reachable (before pivot_root).
#[derive(Debug)]
struct Listener {
    path: PathBuf,
    metadata: Option<String>,
    sock: OwnedFd,
}

/// One `seccomp_rule_add_array` call.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Rule {
    /// The syscall name as written in the profile (for error messages).
    name: String,
    syscall: ScmpSyscall,
    action: ScmpAction,
    /// AND'ed comparisons; empty for an unconditional rule.
    conditions: Vec<ScmpArgCompare>,
}

/// Every libseccomp call the profile translates to, in order.
#[derive(Debug)]
struct Plan {
    default: ScmpAction,
    arches: Vec<ScmpArch>,
    flags: Vec<(LinuxSeccompFilterFlag, ScmpFilterAttr)>,
    rules: Vec<Rule>,
    /// `listenerPath` and `listenerMetadata`, when at least one NOTIFY rule is added.
    listener: Option<(PathBuf, Option<String>)>,
}

/// Whether the profile uses `SCMP_ACT_NOTIFY` (as default or in any syscall rule), so
/// that loading it needs `listenerPath` and the container state.
pub fn needs_notify(seccomp: &LinuxSeccomp) -> bool {
    seccomp.default_action() == LinuxSeccompAction::ScmpActNotify
        || seccomp
            .syscalls()
            .iter()
            .flatten()
            .any(|s| s.action() == LinuxSeccompAction::ScmpActNotify)
}

/// Checks the profile without building anything: the same errors [`build`] reports for
/// the profile itself (not those of libseccomp or of the listener socket).
pub fn validate(seccomp: &LinuxSeccomp) -> Result<()> {
    plan(seccomp).map(drop)
}

/// Builds the filter (no syscall filtering happens yet). Call in the container init
/// before dropping privileges is fine; validation errors surface at `create`.
///
/// If the profile adds `SCMP_ACT_NOTIFY` rules, this also connects to `listenerPath`,
/// so call it while that host path is reachable (before pivot_root); [`Filter::load`]
/// then only sends on the connected socket.
pub fn build(seccomp: &LinuxSeccomp) -> Result<Filter> {
    let plan = plan(seccomp)?;
    let ctx = context(&plan)?;
    let listener = match plan.listener {
        Some((path, metadata)) => {
            let sock = connect_listener(&path)?;
            Some(Listener {
                path,
                metadata,
                sock,
            })
        }
        None => None,
    };
    Ok(Filter { ctx, listener })
}

/// Translates the profile and builds the libseccomp filter in memory, then drops it:
/// every check of [`build`] but the connection to `listenerPath`. Nothing is loaded
/// into the kernel and no socket is opened, so this is safe on any input (the fuzz
/// target uses it).
pub fn check_build(seccomp: &LinuxSeccomp) -> Result<()> {
    context(&plan(seccomp)?).map(drop)
}

/// Replays a plan into a new libseccomp filter context (not loaded).
fn context(plan: &Plan) -> Result<ScmpFilterContext> {
    let mut ctx =
        ScmpFilterContext::new(plan.default).map_err(|e| lib_err("creating the filter", &e))?;
    for arch in &plan.arches {
        // add_arch already succeeds when the arch is present (the native one).
        ctx.add_arch(*arch)
            .map_err(|e| Error::Invalid(format!("seccomp architectures: adding {arch:?}: {e}")))?;
    }
    for (flag, attr) in &plan.flags {
        ctx.set_filter_attr(*attr, 1).map_err(|e| {
            Error::Invalid(format!(
                "seccomp flags: {flag} is not supported by this libseccomp: {e}"
            ))
        })?;
    }
    // Like runc: the runtime sets no_new_privs itself when process.noNewPrivileges asks
    // for it; without it, loading needs CAP_SYS_ADMIN.
    ctx.set_ctl_nnp(false)
        .map_err(|e| lib_err("clearing the no_new_privs attribute", &e))?;
    // Best effort: with it, a failed load reports the kernel's errno rather than
    // ECANCELED. Older libseccomp lacks the attribute, which changes nothing else.
    let _ = ctx.set_api_sysrawrc(true);
    for r in &plan.rules {
        ctx.add_rule_conditional(r.action, r.syscall, &r.conditions)
            .map_err(|e| {
                Error::Invalid(format!(
                    "seccomp syscall {:?}: adding the {:?} rule: {e}",
                    r.name, r.action
                ))
            })?;
    }
    Ok(ctx)
}

impl Filter {
    /// Loads the filter into the calling process (needs no_new_privs or CAP_SYS_ADMIN).
    /// If the profile uses NOTIFY, sends the listener fd to listenerPath with
    /// `state_json` (the container state document) and returns Ok.
    ///
    /// The agent receives, like from runc, one message holding the container process
    /// state `{"ociVersion","fds":["seccompFd"],"pid","metadata","state"}` with the fd
    /// in `SCM_RIGHTS`; `pid` is the `pid` field of `state_json` (the pid as the runtime
    /// sees it), or this process's pid if the state has none.
    pub fn load(self, state_json: &str) -> Result<()> {
        let pid = serde_json::from_str::<serde_json::Value>(state_json)
            .ok()
            .and_then(|s| s.get("pid").and_then(serde_json::Value::as_i64))
            .and_then(|p| i32::try_from(p).ok())
            .filter(|p| *p > 0)
            .unwrap_or_else(|| nix::unistd::getpid().as_raw());
        self.load_with_pid(state_json, pid)
    }

    /// [`Filter::load`] with the `pid` sent to the seccomp agent given explicitly.
    pub fn load_with_pid(self, state_json: &str, pid: i32) -> Result<()> {
        let Filter { ctx, listener } = self;
        // Everything that can fail on input is done before the filter is in place.
        let message = match &listener {
            Some(l) => Some(process_state(state_json, pid, l.metadata.as_deref())?),
            None => None,
        };
        ctx.load().map_err(|e| match e.sysrawrc() {
            Some(rc) if rc < 0 => Error::sys("seccomp load", Errno::from_raw(-rc)),
            _ => lib_err("loading the filter", &e),
        })?;
        if let (Some(l), Some(message)) = (listener, message) {
            let raw = ctx
                .get_notify_fd()
                .map_err(|e| lib_err("getting the notify fd", &e))?;
            // SAFETY: `raw` is the listener fd the kernel just installed in this process
            // for the filter loaded above; nothing else owns it (libseccomp only closes
            // it on seccomp_reset(NULL), which is never called), so taking ownership and
            // closing it after sending (as runc does) is sound.
            let fd = unsafe { OwnedFd::from_raw_fd(raw) };
            send_with_fd(&l, &message, fd.as_fd())?;
        }
        Ok(())
    }
}

/// Translates and validates the profile: the pure half of [`build`].
fn plan(s: &LinuxSeccomp) -> Result<Plan> {
    if s.default_action() == LinuxSeccompAction::ScmpActNotify {
        return Err(Error::Invalid(
            "seccomp defaultAction: SCMP_ACT_NOTIFY cannot be used as the default action".into(),
        ));
    }
    let default = action(
        s.default_action(),
        s.default_errno_ret(),
        "seccomp defaultAction",
        "defaultErrnoRet",
    )?;
    let arches = s
        .architectures()
        .iter()
        .flatten()
        .map(|a| arch(*a))
        .collect();
    let flags = s
        .flags()
        .iter()
        .flatten()
        .map(|f| (*f, flag_attr(*f)))
        .collect();

    let mut rules = Vec::new();
    for (i, call) in s.syscalls().iter().flatten().enumerate() {
        let names = call.names();
        let Some(first) = names.first() else {
            return Err(Error::Invalid(format!(
                "seccomp syscalls[{i}]: names is empty"
            )));
        };
        let label = if names.len() == 1 {
            format!("seccomp syscalls[{i}] ({first:?})")
        } else {
            format!(
                "seccomp syscalls[{i}] ({first:?} and {} more)",
                names.len() - 1
            )
        };
        let act = action(call.action(), call.errno_ret(), &label, "errnoRet")?;
        let groups = rule_conditions(call.args().as_deref().unwrap_or(&[]), &label)?;
        for name in names {
            if name.is_empty() {
                return Err(Error::Invalid(format!(
                    "{label}: an empty string is not a valid syscall name"
                )));
            }
            if act == ScmpAction::Notify && name == "write" {
                // As runc: the runtime writes after loading and before the agent can
                // answer, which would hang.
                return Err(Error::Invalid(format!(
                    "{label}: SCMP_ACT_NOTIFY cannot be used for the write syscall"
                )));
            }
            if act == ScmpAction::Notify && name == "sendmsg" {
                // The listener fd itself is sent with sendmsg after the filter is loaded.
                return Err(Error::Invalid(format!(
                    "{label}: SCMP_ACT_NOTIFY cannot be used for the sendmsg syscall \
                     (the runtime sends the listener fd with it)"
                )));
            }
            // libseccomp rejects a rule whose action is the default one: runc skips it.
            if act == default {
                continue;
            }
            // Like runc: a syscall libseccomp does not know on this arch is skipped.
            let Ok(syscall) = ScmpSyscall::from_name(name) else {
                continue;
            };
            for conditions in &groups {
                rules.push(Rule {
                    name: name.clone(),
                    syscall,
                    action: act,
                    conditions: conditions.clone(),
                });
            }
        }
    }

    if needs_notify(s) && s.listener_path().is_none() {
        return Err(Error::Invalid(
            "seccomp listenerPath: required when SCMP_ACT_NOTIFY is used".into(),
        ));
    }
    let listener = if rules.iter().any(|r| r.action == ScmpAction::Notify) {
        s.listener_path()
            .clone()
            .map(|p| (p, s.listener_metadata().clone()))
    } else {
        None
    };
    Ok(Plan {
        default,
        arches,
        flags,
        rules,
        listener,
    })
}

/// Maps an OCI action (with its errno return) to libseccomp, as runc's `getAction`:
/// ERRNO and TRACE return `errno_ret`, or EPERM when it is absent. `what` names the
/// profile entry and `field` its errno field in error messages.
fn action(
    act: LinuxSeccompAction,
    errno_ret: Option<u32>,
    what: &str,
    field: &str,
) -> Result<ScmpAction> {
    use LinuxSeccompAction as A;
    let ret = match errno_ret {
        None => None,
        Some(_) if !matches!(act, A::ScmpActErrno | A::ScmpActTrace) => {
            return Err(Error::Invalid(format!(
                "{what}: {field} is only valid with SCMP_ACT_ERRNO or SCMP_ACT_TRACE, not {act}"
            )));
        }
        Some(v) => Some(u16::try_from(v).map_err(|_| {
            Error::Invalid(format!("{what}: {field} {v} is out of range (0-65535)"))
        })?),
    };
    let eperm = Errno::EPERM as u16;
    Ok(match act {
        A::ScmpActKill | A::ScmpActKillThread => ScmpAction::KillThread,
        A::ScmpActKillProcess => ScmpAction::KillProcess,
        A::ScmpActTrap => ScmpAction::Trap,
        A::ScmpActErrno => ScmpAction::Errno(i32::from(ret.unwrap_or(eperm))),
        A::ScmpActTrace => ScmpAction::Trace(ret.unwrap_or(eperm)),
        A::ScmpActAllow => ScmpAction::Allow,
        A::ScmpActLog => ScmpAction::Log,
        A::ScmpActNotify => ScmpAction::Notify,
    })
}

/// The libseccomp architecture of an OCI `SCMP_ARCH_*` value.
fn arch(a: Arch) -> ScmpArch {
    match a {
        Arch::ScmpArchNative => ScmpArch::Native,
        Arch::ScmpArchX86 => ScmpArch::X86,
        Arch::ScmpArchX86_64 => ScmpArch::X8664,
        Arch::ScmpArchX32 => ScmpArch::X32,
        Arch::ScmpArchArm => ScmpArch::Arm,
        Arch::ScmpArchAarch64 => ScmpArch::Aarch64,
        Arch::ScmpArchMips => ScmpArch::Mips,
        Arch::ScmpArchMips64 => ScmpArch::Mips64,
        Arch::ScmpArchMips64n32 => ScmpArch::Mips64N32,
        Arch::ScmpArchMipsel => ScmpArch::Mipsel,
        Arch::ScmpArchMipsel64 => ScmpArch::Mipsel64,
        Arch::ScmpArchMipsel64n32 => ScmpArch::Mipsel64N32,
        Arch::ScmpArchPpc => ScmpArch::Ppc,
        Arch::ScmpArchPpc64 => ScmpArch::Ppc64,
        Arch::ScmpArchPpc64le => ScmpArch::Ppc64Le,
        Arch::ScmpArchS390 => ScmpArch::S390,
        Arch::ScmpArchS390x => ScmpArch::S390X,
        Arch::ScmpArchParisc => ScmpArch::Parisc,
        Arch::ScmpArchParisc64 => ScmpArch::Parisc64,
        Arch::ScmpArchRiscv64 => ScmpArch::Riscv64,
        Arch::ScmpArchLoongarch64 => ScmpArch::Loongarch64,
        Arch::ScmpArchM68k => ScmpArch::M68k,
        Arch::ScmpArchSh => ScmpArch::Sh,
        Arch::ScmpArchSheb => ScmpArch::Sheb,
    }
}

/// The filter attribute an OCI `SECCOMP_FILTER_FLAG_*` sets (to 1).
fn flag_attr(f: LinuxSeccompFilterFlag) -> ScmpFilterAttr {
    match f {
        LinuxSeccompFilterFlag::SeccompFilterFlagTsync => ScmpFilterAttr::CtlTsync,
        LinuxSeccompFilterFlag::SeccompFilterFlagLog => ScmpFilterAttr::CtlLog,
        LinuxSeccompFilterFlag::SeccompFilterFlagSpecAllow => ScmpFilterAttr::CtlSsb,
        // Needs libseccomp 2.6: an older one makes `build` fail on it.
        LinuxSeccompFilterFlag::SeccompFilterFlagWaitKillableRecv => ScmpFilterAttr::CtlWaitkill,
    }
}

/// One libseccomp comparison for an OCI argument condition; for MASKED_EQ `value` is
/// the mask and `valueTwo` the datum, as in runc.
fn compare(a: &LinuxSeccompArg, index: u32) -> ScmpArgCompare {
    use LinuxSeccompOperator as O;
    let (op, datum) = match a.op() {
        O::ScmpCmpNe => (ScmpCompareOp::NotEqual, a.value()),
        O::ScmpCmpLt => (ScmpCompareOp::Less, a.value()),
        O::ScmpCmpLe => (ScmpCompareOp::LessOrEqual, a.value()),
        O::ScmpCmpEq => (ScmpCompareOp::Equal, a.value()),
        O::ScmpCmpGe => (ScmpCompareOp::GreaterEqual, a.value()),
        O::ScmpCmpGt => (ScmpCompareOp::Greater, a.value()),
        O::ScmpCmpMaskedEq => (
            ScmpCompareOp::MaskedEqual(a.value()),
            a.value_two().unwrap_or(0),
        ),
    };
    ScmpArgCompare::new(index, op, datum)
}

/// Groups a syscall's argument conditions into rules, as runc's `matchCall`: each
/// inner vector is one rule whose comparisons are AND'ed, the rules are OR'ed. With no
/// condition there is one unconditional rule; when two conditions test the same
/// argument, each condition becomes its own rule; otherwise all go in one rule.
fn rule_conditions(args: &[LinuxSeccompArg], what: &str) -> Result<Vec<Vec<ScmpArgCompare>>> {
    let mut counts = [0usize; MAX_SYSCALL_ARGS];
    let mut conditions = Vec::with_capacity(args.len());
    for a in args {
        let index = a.index();
        let (Some(count), Ok(i)) = (counts.get_mut(index), u32::try_from(index)) else {
            return Err(Error::Invalid(format!(
                "{what}: argument index {index} is out of range (0-{})",
                MAX_SYSCALL_ARGS - 1
            )));
        };
        *count += 1;
        conditions.push(compare(a, i));
    }
    if counts.iter().any(|c| *c > 1) {
        Ok(conditions.into_iter().map(|c| vec![c]).collect())
    } else {
        Ok(vec![conditions])
    }
}

/// A libseccomp failure, naming the operation.
fn lib_err(op: &str, e: &libseccomp::error::SeccompError) -> Error {
    Error::Invalid(format!("seccomp: {op}: {e}"))
}

/// Connects a stream socket to the agent at `path`.
fn connect_listener(path: &Path) -> Result<OwnedFd> {
    let sock = socket(
        AddressFamily::Unix,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .map_err(|e| Error::path("seccomp listenerPath: socket", path, e))?;
    let addr =
        UnixAddr::new(path).map_err(|e| Error::path("seccomp listenerPath: address", path, e))?;
    loop {
        match connect(sock.as_raw_fd(), &addr) {
            Err(Errno::EINTR) => continue,
            r => break r,
        }
    }
    .map_err(|e| Error::path("seccomp listenerPath: connect", path, e))?;
    Ok(sock)
}

/// The container process state runc sends the agent, serialized.
fn process_state(state_json: &str, pid: i32, metadata: Option<&str>) -> Result<Vec<u8>> {
    let state: serde_json::Value = serde_json::from_str(state_json).map_err(|e| {
        Error::Invalid(format!(
            "seccomp notify: the container state is not JSON: {e}"
        ))
    })?;
    if !state.is_object() {
        return Err(Error::Invalid(
            "seccomp notify: the container state is not a JSON object".into(),
        ));
    }
    let version = state
        .get("ociVersion")
        .and_then(serde_json::Value::as_str)
        .unwrap_or(oci_spec::runtime::VERSION)
        .to_owned();
    let mut doc = serde_json::json!({
        "ociVersion": version,
        "fds": [SECCOMP_FD_NAME],
        "pid": pid,
        "state": state,
    });
    if let (Some(m), Some(obj)) = (metadata, doc.as_object_mut()) {
        obj.insert("metadata".into(), serde_json::Value::String(m.to_owned()));
    }
    serde_json::to_vec(&doc)
        .map_err(|e| Error::Invalid(format!("seccomp notify: serializing the state: {e}")))
}

/// Sends `message` to the agent with `fd` attached to its first byte (`SCM_RIGHTS`).
fn send_with_fd(l: &Listener, message: &[u8], fd: BorrowedFd<'_>) -> Result<()> {
    let fds = [fd.as_raw_fd()];
    let mut sent = 0;
    while sent < message.len() {
        let iov = [IoSlice::new(&message[sent..])];
        let rights = [ControlMessage::ScmRights(&fds)];
        let cmsgs: &[ControlMessage] = if sent == 0 { &rights } else { &[] };
        match sendmsg::<()>(
            l.sock.as_raw_fd(),
            &iov,
            cmsgs,
            MsgFlags::MSG_NOSIGNAL,
            None,
        ) {
            Ok(0) => {
                return Err(Error::path(
                    "seccomp listenerPath: sendmsg",
                    &l.path,
                    Errno::EPIPE,
                ))
            }
            Ok(n) => sent += n,
            Err(Errno::EINTR) => continue,
            Err(e) => return Err(Error::path("seccomp listenerPath: sendmsg", &l.path, e)),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_spec::runtime::{
        LinuxSeccompArgBuilder, LinuxSeccompBuilder, LinuxSyscall, LinuxSyscallBuilder,
    };

    fn syscall(names: &[&str], action: LinuxSeccompAction) -> LinuxSyscall {
        LinuxSyscallBuilder::default()
            .names(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
            .action(action)
            .build()
            .expect("syscall")
    }

    fn arg(index: usize, value: u64, op: LinuxSeccompOperator) -> LinuxSeccompArg {
        LinuxSeccompArgBuilder::default()
            .index(index)
            .value(value)
            .op(op)
            .build()
            .expect("arg")
    }

    fn profile(default: LinuxSeccompAction, calls: Vec<LinuxSyscall>) -> LinuxSeccomp {
        LinuxSeccompBuilder::default()
            .default_action(default)
            .syscalls(calls)
            .build()
            .expect("profile")
    }

    fn invalid(r: Result<Plan>) -> String {
        match r {
            Err(Error::Invalid(m)) => m,
            other => panic!("expected Invalid, got {other:?}"),
        }
    }

    #[test]
    fn seccomp_action_mapping() {
        use LinuxSeccompAction as A;
        let map = |a| action(a, None, "t", "errnoRet").expect("action");
        assert_eq!(map(A::ScmpActKill), ScmpAction::KillThread);
        assert_eq!(map(A::ScmpActKillThread), ScmpAction::KillThread);
        assert_eq!(map(A::ScmpActKillProcess), ScmpAction::KillProcess);
        assert_eq!(map(A::ScmpActTrap), ScmpAction::Trap);
        assert_eq!(map(A::ScmpActAllow), ScmpAction::Allow);
        assert_eq!(map(A::ScmpActLog), ScmpAction::Log);
        assert_eq!(map(A::ScmpActNotify), ScmpAction::Notify);
        assert_eq!(map(A::ScmpActErrno), ScmpAction::Errno(libc::EPERM));
        assert_eq!(map(A::ScmpActTrace), ScmpAction::Trace(libc::EPERM as u16));
        assert_eq!(
            action(A::ScmpActErrno, Some(38), "t", "errnoRet").expect("errno"),
            ScmpAction::Errno(38)
        );
        assert_eq!(
            action(A::ScmpActTrace, Some(7), "t", "errnoRet").expect("trace"),
            ScmpAction::Trace(7)
        );
        assert!(action(A::ScmpActErrno, Some(70000), "t", "errnoRet").is_err());
    }

    #[test]
    fn seccomp_default_errno_ret() {
        let mut p = profile(LinuxSeccompAction::ScmpActErrno, vec![]);
        assert_eq!(
            plan(&p).expect("plan").default,
            ScmpAction::Errno(libc::EPERM)
        );
        p.set_default_errno_ret(Some(38));
        assert_eq!(plan(&p).expect("plan").default, ScmpAction::Errno(38));
        p.set_default_action(LinuxSeccompAction::ScmpActAllow);
        let m = invalid(plan(&p));
        assert!(
            m.contains("defaultErrnoRet") && m.contains("SCMP_ACT_ALLOW"),
            "{m}"
        );
    }

    #[test]
    fn seccomp_errno_ret_on_allow_rejected() {
        let mut call = syscall(&["chmod"], LinuxSeccompAction::ScmpActAllow);
        call.set_errno_ret(Some(1));
        let m = invalid(plan(&profile(LinuxSeccompAction::ScmpActErrno, vec![call])));
        assert!(m.contains("\"chmod\"") && m.contains("errnoRet"), "{m}");
    }

    #[test]
    fn seccomp_notify_default_rejected() {
        let m = invalid(plan(&profile(LinuxSeccompAction::ScmpActNotify, vec![])));
        assert!(
            m.contains("defaultAction") && m.contains("SCMP_ACT_NOTIFY"),
            "{m}"
        );
    }

    #[test]
    fn seccomp_notify_needs_listener_path() {
        let p = profile(
            LinuxSeccompAction::ScmpActAllow,
            vec![syscall(&["mkdir"], LinuxSeccompAction::ScmpActNotify)],
        );
        assert!(needs_notify(&p));
        assert!(invalid(plan(&p)).contains("listenerPath"));
        let mut p = p;
        p.set_listener_path(Some("/run/agent.sock".into()));
        let plan = plan(&p).expect("plan");
        assert_eq!(
            plan.listener,
            Some((PathBuf::from("/run/agent.sock"), None))
        );
        assert!(!needs_notify(&profile(
            LinuxSeccompAction::ScmpActAllow,
            vec![]
        )));
        // As runc: NOTIFY on write is refused.
        let mut p = profile(
            LinuxSeccompAction::ScmpActAllow,
            vec![syscall(&["write"], LinuxSeccompAction::ScmpActNotify)],
        );
        p.set_listener_path(Some("/run/agent.sock".into()));
        assert!(invalid(super::plan(&p)).contains("write"));
    }

    #[test]
    fn seccomp_check_build_opens_no_listener() {
        let mut p = profile(
            LinuxSeccompAction::ScmpActAllow,
            vec![syscall(&["mkdir"], LinuxSeccompAction::ScmpActNotify)],
        );
        p.set_listener_path(Some("/nonexistent-hj/agent.sock".into()));
        check_build(&p).expect("check_build");
        assert!(build(&p).is_err(), "build connects to listenerPath");
        p.set_listener_path(None);
        assert!(check_build(&p).is_err());
    }

    #[test]
    fn seccomp_empty_names_rejected() {
        let m = invalid(plan(&profile(
            LinuxSeccompAction::ScmpActAllow,
            vec![syscall(&[], LinuxSeccompAction::ScmpActErrno)],
        )));
        assert!(m.contains("syscalls[0]") && m.contains("names"), "{m}");
        let m = invalid(plan(&profile(
            LinuxSeccompAction::ScmpActAllow,
            vec![syscall(&[""], LinuxSeccompAction::ScmpActErrno)],
        )));
        assert!(m.contains("empty string"), "{m}");
    }

    #[test]
    fn seccomp_bad_arg_index_rejected() {
        let mut call = syscall(&["personality"], LinuxSeccompAction::ScmpActErrno);
        call.set_args(Some(vec![arg(6, 0, LinuxSeccompOperator::ScmpCmpEq)]));
        let m = invalid(plan(&profile(LinuxSeccompAction::ScmpActAllow, vec![call])));
        assert!(m.contains("personality") && m.contains("index 6"), "{m}");
    }

    #[test]
    fn seccomp_unknown_syscall_skipped_and_default_action_rules_dropped() {
        let p = profile(
            LinuxSeccompAction::ScmpActErrno,
            vec![
                syscall(
                    &["no_such_syscall_hj", "getcwd"],
                    LinuxSeccompAction::ScmpActAllow,
                ),
                // Same action as the default: redundant, skipped.
                syscall(&["mkdir"], LinuxSeccompAction::ScmpActErrno),
            ],
        );
        let plan = plan(&p).expect("plan");
        assert_eq!(plan.rules.len(), 1);
        assert_eq!(plan.rules[0].name, "getcwd");
        assert_eq!(
            plan.rules[0].syscall,
            ScmpSyscall::from_name("getcwd").expect("getcwd")
        );
        assert_eq!(plan.rules[0].action, ScmpAction::Allow);
        assert!(plan.rules[0].conditions.is_empty());
        // And libseccomp accepts the result.
        build(&p).expect("build");
    }

    #[test]
    fn seccomp_same_index_or_else_and() {
        use LinuxSeccompOperator as O;
        assert_eq!(rule_conditions(&[], "t").expect("none"), vec![vec![]]);

        let and =
            rule_conditions(&[arg(0, 1, O::ScmpCmpEq), arg(1, 2, O::ScmpCmpNe)], "t").expect("and");
        assert_eq!(
            and,
            vec![vec![
                ScmpArgCompare::new(0, ScmpCompareOp::Equal, 1),
                ScmpArgCompare::new(1, ScmpCompareOp::NotEqual, 2),
            ]]
        );

        let or = rule_conditions(
            &[
                arg(0, 1, O::ScmpCmpEq),
                arg(0, 2, O::ScmpCmpEq),
                arg(2, 3, O::ScmpCmpGt),
            ],
            "t",
        )
        .expect("or");
        assert_eq!(
            or,
            vec![
                vec![ScmpArgCompare::new(0, ScmpCompareOp::Equal, 1)],
                vec![ScmpArgCompare::new(0, ScmpCompareOp::Equal, 2)],
                vec![ScmpArgCompare::new(2, ScmpCompareOp::Greater, 3)],
            ]
        );

        // MASKED_EQ: value is the mask, valueTwo the datum.
        let masked = LinuxSeccompArgBuilder::default()
            .index(1usize)
            .value(0xffu64)
            .value_two(0x10u64)
            .op(O::ScmpCmpMaskedEq)
            .build()
            .expect("masked");
        assert_eq!(
            rule_conditions(&[masked], "t").expect("masked"),
            vec![vec![ScmpArgCompare::new(
                1,
                ScmpCompareOp::MaskedEqual(0xff),
                0x10
            )]]
        );

        // One plan rule per OR'ed group, and libseccomp accepts both shapes.
        let mut call = syscall(&["personality"], LinuxSeccompAction::ScmpActAllow);
        call.set_args(Some(vec![
            arg(0, 0, O::ScmpCmpEq),
            arg(0, 8, O::ScmpCmpEq),
            arg(0, 0xffff_ffff, O::ScmpCmpEq),
        ]));
        let mut clone = syscall(&["clone"], LinuxSeccompAction::ScmpActAllow);
        clone.set_args(Some(vec![
            arg(0, 0x7e02_0000, O::ScmpCmpMaskedEq),
            arg(1, 0, O::ScmpCmpGe),
        ]));
        let p = profile(LinuxSeccompAction::ScmpActErrno, vec![call, clone]);
        let rules = plan(&p).expect("plan").rules;
        assert_eq!(rules.len(), 4);
        assert_eq!(rules[3].conditions.len(), 2);
        build(&p).expect("build");
    }

    #[test]
    fn seccomp_arches_and_flags() {
        let mut p = profile(LinuxSeccompAction::ScmpActAllow, vec![]);
        p.set_architectures(Some(vec![
            Arch::ScmpArchX86_64,
            Arch::ScmpArchX86,
            Arch::ScmpArchX32,
        ]));
        p.set_flags(Some(vec![
            LinuxSeccompFilterFlag::SeccompFilterFlagLog,
            LinuxSeccompFilterFlag::SeccompFilterFlagSpecAllow,
        ]));
        let plan = plan(&p).expect("plan");
        assert_eq!(
            plan.arches,
            vec![ScmpArch::X8664, ScmpArch::X86, ScmpArch::X32]
        );
        assert_eq!(
            plan.flags.iter().map(|f| f.1).collect::<Vec<_>>(),
            vec![ScmpFilterAttr::CtlLog, ScmpFilterAttr::CtlSsb]
        );
        assert_eq!(arch(Arch::ScmpArchAarch64), ScmpArch::Aarch64);
        assert_eq!(arch(Arch::ScmpArchRiscv64), ScmpArch::Riscv64);
        assert_eq!(
            flag_attr(LinuxSeccompFilterFlag::SeccompFilterFlagTsync),
            ScmpFilterAttr::CtlTsync
        );
        // Adding the native arch again is not an error.
        build(&p).expect("build");
    }

    #[test]
    fn seccomp_process_state_document() {
        let doc = process_state(
            r#"{"ociVersion":"1.2.0","id":"c1","status":"creating","pid":42,"bundle":"/b"}"#,
            42,
            Some("meta"),
        )
        .expect("state");
        let v: serde_json::Value = serde_json::from_slice(&doc).expect("json");
        assert_eq!(v["ociVersion"], "1.2.0");
        assert_eq!(v["fds"], serde_json::json!(["seccompFd"]));
        assert_eq!(v["pid"], 42);
        assert_eq!(v["metadata"], "meta");
        assert_eq!(v["state"]["id"], "c1");
        assert!(process_state("not json", 1, None).is_err());
        assert!(process_state("[1]", 1, None).is_err());
    }

    /// Loads a real filter, in a forked child so the test process stays unfiltered.
    #[test]
    fn seccomp_load_in_child_getcwd_enosys() {
        let mut call = syscall(&["getcwd"], LinuxSeccompAction::ScmpActErrno);
        call.set_errno_ret(Some(libc::ENOSYS as u32));
        let filter = build(&profile(LinuxSeccompAction::ScmpActAllow, vec![call])).expect("build");

        // SAFETY: the child only calls prctl, libseccomp's load (glibc's malloc is
        // fork-safe), getcwd into a stack buffer and _exit: it never returns into the
        // test harness or touches locks other threads may hold.
        match unsafe { nix::unistd::fork() }.expect("fork") {
            nix::unistd::ForkResult::Child => {
                let ok =
                    nix::sys::prctl::set_no_new_privs().is_ok() && filter.load("{}").is_ok() && {
                        let mut buf = [0 as libc::c_char; 256];
                        // SAFETY: getcwd writes at most buf.len() bytes into `buf`.
                        let r = unsafe { libc::getcwd(buf.as_mut_ptr(), buf.len()) };
                        r.is_null() && Errno::last_raw() == libc::ENOSYS
                    };
                // SAFETY: _exit ends the child without running the parent's atexit
                // handlers or unwinding into the test harness.
                unsafe { libc::_exit(if ok { 0 } else { 1 }) }
            }
            nix::unistd::ForkResult::Parent { child } => {
                let status = nix::sys::wait::waitpid(child, None).expect("waitpid");
                assert_eq!(status, nix::sys::wait::WaitStatus::Exited(child, 0));
            }
        }
    }
}
