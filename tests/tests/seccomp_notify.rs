//! SCMP_ACT_NOTIFY: the runtime sends the listener fd with the container state to
//! `listenerPath`; the agent receives both, and once it closes the fd the notified
//! syscall fails with ENOSYS inside the container.

use hyperjail_tests::{require_root, Bundle, Hyperjail};
use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags};
use serde_json::{json, Value};
use std::io::IoSliceMut;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixListener;
use std::time::Duration;

/// Accepts one connection and returns the JSON payload and the passed fd.
fn agent(listener: UnixListener) -> (Value, OwnedFd) {
    let (conn, _) = listener.accept().expect("runtime connects to the listener");
    let mut buf = vec![0u8; 1 << 16];
    let mut iov = [IoSliceMut::new(&mut buf)];
    let mut space = nix::cmsg_space!([RawFd; 4]);
    let msg = recvmsg::<()>(
        conn.as_raw_fd(),
        &mut iov,
        Some(&mut space),
        MsgFlags::empty(),
    )
    .expect("recvmsg");
    let mut fd = None;
    for c in msg.cmsgs().expect("cmsgs") {
        if let ControlMessageOwned::ScmRights(fds) = c {
            // SAFETY: the kernel installed these fds for this process just now.
            fd = fds.first().map(|f| unsafe { OwnedFd::from_raw_fd(*f) });
        }
    }
    let n = msg.bytes;
    let v: Value = serde_json::from_slice(&buf[..n]).expect("state JSON from the runtime");
    (v, fd.expect("a seccomp notify fd"))
}

#[test]
fn seccomp_notify_sends_fd_and_state_to_listener() {
    require_root!();
    let dir = tempfile::tempdir().expect("tmp");
    let sock = dir.path().join("agent.sock");
    let listener = UnixListener::bind(&sock).expect("bind agent socket");
    let mut b = Bundle::new();
    b.config_mut()["linux"]["seccomp"] = json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "listenerPath": sock.to_str().expect("utf-8 path"),
        "listenerMetadata": "hello-agent",
        "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_NOTIFY"}]
    });
    b.sh("mkdir /tmp/notified 2>&1; echo status=$?");
    let hj = Hyperjail::new();
    let c = hj.container("notify");
    let t = std::thread::spawn(move || {
        let (v, fd) = agent(listener);
        // Keep the fd a moment (the syscall waits on the agent), then close it: the
        // kernel then fails the pending syscall with ENOSYS.
        std::thread::sleep(Duration::from_millis(200));
        drop(fd);
        v
    });
    let out = c.run(&b, &[]);
    let v = t.join().expect("agent thread");
    out.assert_ok();
    assert_eq!(v["fds"], json!(["seccompFd"]), "{v}");
    assert_eq!(v["metadata"], json!("hello-agent"), "{v}");
    assert!(v["pid"].as_i64().is_some_and(|p| p > 0), "{v}");
    assert_eq!(v["state"]["id"], json!(c.id), "{v}");
    assert!(
        out.stdout.contains("Function not implemented") && out.stdout.contains("status=1"),
        "mkdir should fail with ENOSYS once the agent closed the fd: {}",
        out.stdout
    );
    assert!(!b.rootfs().join("tmp/notified").exists());
}
