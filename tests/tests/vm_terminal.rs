//! A VM domain with `process.terminal`: the VMM makes a pty, sends its master over
//! `--console-socket` and gives the guest the slave as stdio. The guest sees a
//! terminal: isatty, the engine's window size, canonical and raw modes (set on the
//! real pty, read back from it), its foreground process group, /dev/tty as its
//! controlling terminal and /dev/console; without a terminal /dev/tty is ENXIO.

use hyperjail_tests::vm::{compile_static, vm_bundle};
use hyperjail_tests::{read_pty, receive_console, require_kvm, skip_unless, Hyperjail};
use serde_json::json;
use std::fs;
use std::os::unix::net::UnixListener;
use std::time::Duration;

const TTY: &str = r#"
#include <fcntl.h>
#include <stdio.h>
#include <sys/ioctl.h>
#include <termios.h>
#include <unistd.h>
int main(void) {
    struct winsize ws;
    struct termios t, r, now;
    printf("isatty=%d%d%d\n", isatty(0), isatty(1), isatty(2));
    if (ioctl(1, TIOCGWINSZ, &ws) != 0) { perror("TIOCGWINSZ"); return 1; }
    printf("size=%d %d\n", ws.ws_row, ws.ws_col);
    if (tcgetattr(0, &t) != 0) { perror("tcgetattr"); return 1; }
    printf("canonical=%d echo=%d\n", !!(t.c_lflag & ICANON), !!(t.c_lflag & ECHO));
    r = t;
    cfmakeraw(&r);
    if (tcsetattr(0, TCSANOW, &r) != 0) { perror("tcsetattr raw"); return 1; }
    if (tcgetattr(0, &now) != 0) { perror("tcgetattr raw"); return 1; }
    printf("raw=%d\r\n", !(now.c_lflag & (ICANON | ECHO)) && !(now.c_oflag & OPOST));
    if (tcsetattr(0, TCSADRAIN, &t) != 0) { perror("tcsetattr back"); return 1; }
    if (tcgetattr(0, &now) != 0 || !(now.c_lflag & ICANON)) { printf("not restored\n"); return 1; }
    printf("pgrp=%d\n", (int)tcgetpgrp(0));
    int fd = open("/tty", O_RDONLY);
    printf("file-isatty=%d\n", isatty(fd));
    /* /dev/tty is the controlling terminal; /dev/console writes where stdout goes. */
    int dt = open("/dev/tty", O_RDWR);
    printf("dev-tty=%d\n", dt >= 0 && isatty(dt));
    fflush(stdout);
    int con = open("/dev/console", O_WRONLY);
    if (con < 0 || write(con, "to-console\n", 11) != 11) printf("console failed\n");
    fflush(stdout);
    return 7;
}
"#;

#[test]
fn terminal_over_console_socket_in_the_vm() {
    require_kvm!();
    let hj = Hyperjail::new();
    let mut b = vm_bundle();
    skip_unless!(
        compile_static(&b, "tty", TTY, &["-static"]),
        "gcc -static does not work here (apt-get install gcc libc6-dev)"
    );
    b.args(&["/tty"]);
    b.config_mut()["process"]["terminal"] = json!(true);
    b.config_mut()["process"]["consoleSize"] = json!({"height": 33, "width": 101});
    let dir = tempfile::tempdir().expect("tempdir");
    let sock = dir.path().join("console.sock");
    let listener = UnixListener::bind(&sock).expect("bind console socket");
    let c = hj.container("vmtty");
    let running = c
        .run_call(
            &b,
            &["--console-socket", sock.to_str().expect("utf-8 path")],
        )
        .spawn();
    let (payload, master) = receive_console(&listener, Duration::from_secs(20));
    let text = read_pty(fs::File::from(master), Duration::from_secs(20), |_| false);
    let out = running.wait();
    assert_eq!(out.code, Some(7), "{out}\nterminal: {text:?}");
    assert!(payload.starts_with("/dev/pts/"), "{payload:?}");
    let lines: Vec<&str> = text.lines().map(str::trim).collect();
    assert_eq!(
        lines,
        [
            "isatty=111",
            "size=33 101",
            "canonical=1 echo=1",
            "raw=1",
            "pgrp=1",
            "file-isatty=0",
            "dev-tty=1",
            "to-console"
        ],
        "{text:?}"
    );
    c.assert_nothing_left(&b);
}

#[test]
fn terminal_without_console_socket_is_refused() {
    require_kvm!();
    let hj = Hyperjail::new();
    let mut b = vm_bundle();
    b.args(&["echo", "hi"]);
    b.config_mut()["process"]["terminal"] = json!(true);
    let c = hj.container("vmnotty");
    c.create(&b, &[]).assert_error(&["console-socket"]);
    c.assert_nothing_left(&b);
}

/// Without a terminal, /dev/tty is "no such device" (no controlling terminal), as
/// on Linux; /dev/console writes where the container's stdout goes.
#[test]
fn dev_tty_and_console_without_a_terminal() {
    require_kvm!();
    let hj = Hyperjail::new();
    let mut b = vm_bundle();
    b.sh("echo x > /dev/tty; echo tty=$?; echo via-console > /dev/console");
    let c = hj.container("vmconsole");
    let out = c.run(&b, &[]);
    assert_eq!(out.code, Some(0), "{out}");
    assert_eq!(out.stdout, "tty=1\nvia-console\n", "{out}");
    assert!(out.stderr.contains("No such device or address"), "{out}");
    c.assert_nothing_left(&b);
}

/// A terminal session driven from the engine's side of the pty.
struct Session {
    master: fs::File,
    seen: String,
}

impl Session {
    /// The session on the pty master the runtime sends to `listener`.
    fn accept(listener: &UnixListener) -> Session {
        let (_, master) = receive_console(listener, Duration::from_secs(20));
        Session {
            master: fs::File::from(master),
            seen: String::new(),
        }
    }

    fn send(&mut self, s: &str) {
        use std::io::Write;
        self.master
            .write_all(s.as_bytes())
            .expect("write to the pty");
    }

    /// Reads until the text from `from` on holds `want`; returns that text up to
    /// the end of the match, and where the match ends (the next `from`).
    fn expect(&mut self, from: usize, want: &str) -> (String, usize) {
        use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
        use std::io::Read;
        let end = std::time::Instant::now() + Duration::from_secs(20);
        loop {
            let tail = self.seen.get(from..).unwrap_or("").to_string();
            if let Some(i) = tail.find(want) {
                let upto = i + want.len();
                return (tail[..upto].to_string(), from + upto);
            }
            assert!(
                std::time::Instant::now() < end,
                "no {want:?} on the terminal; it shows {tail:?} (the session: {:?})",
                self.seen
            );
            let mut pfd = [PollFd::new(
                std::os::fd::AsFd::as_fd(&self.master),
                PollFlags::POLLIN,
            )];
            if poll(&mut pfd, PollTimeout::from(200u16)).expect("poll") == 0 {
                continue;
            }
            let mut buf = [0u8; 4096];
            match self.master.read(&mut buf) {
                Ok(0) => panic!("the terminal closed; it showed {tail:?}"),
                Ok(k) => self
                    .seen
                    .push_str(&String::from_utf8_lossy(&buf[..k]).replace('\r', "")),
                Err(e) => panic!("read the pty: {e} (it showed {tail:?})"),
            }
        }
    }
}

/// Job control on the VM's console, as `podman run -it` gives it: an interactive
/// busybox sh puts each job in the foreground (TIOCSPGRP), ^C ends the job and not
/// the shell, ^Z stops the job and the shell lists it as stopped, `fg` continues
/// it in the foreground and ^C then ends it; a background job that reads the
/// terminal is stopped until `fg` (or gets EIO when it ignores SIGTTIN); the
/// shell's exit status is the container's.
#[test]
fn shell_job_control_on_the_console() {
    require_kvm!();
    let hj = Hyperjail::new();
    let mut b = vm_bundle();
    b.args(&["/bin/sh"]);
    b.config_mut()["process"]["terminal"] = json!(true);
    b.config_mut()["process"]["env"] = json!(["PATH=/bin", "PS1=PROMPT> "]);
    let dir = tempfile::tempdir().expect("tempdir");
    let sock = dir.path().join("console.sock");
    let listener = UnixListener::bind(&sock).expect("bind console socket");
    let c = hj.container("vmjobs");
    let running = c
        .run_call(
            &b,
            &["--console-socket", sock.to_str().expect("utf-8 path")],
        )
        .spawn();
    let mut s = Session::accept(&listener);
    // Each job prints a marker the shell's echo of the command line does not hold
    // ($((...)) is expanded by the job): a job that prints has the terminal (ash
    // hands it over before the exec), so the keys below go to it.
    let (_, pos) = s.expect(0, "PROMPT> ");
    // ^C reaches the foreground job, not the shell.
    s.send("sh -c 'echo JOB-$((1+1)); exec sleep 100'\n");
    let (_, pos) = s.expect(pos, "JOB-2\n");
    s.send("\x03");
    let (_, pos) = s.expect(pos, "PROMPT> ");
    s.send("echo status=$?\n");
    let (_, pos) = s.expect(pos, "status=130\n");
    // ^Z stops it; the shell says so and gets the terminal back.
    s.send("sh -c 'trap \"echo CONT-\\$((2+2))\" CONT; echo JOB-$((1+2)); while :; do sleep 1; done'\n");
    let (_, pos) = s.expect(pos, "JOB-3\n");
    s.send("\x1a");
    let (_, pos) = s.expect(pos, "PROMPT> ");
    s.send("jobs\n");
    let (jobs, pos) = s.expect(pos, "PROMPT> ");
    assert!(jobs.contains("Stopped"), "{jobs:?}");
    // fg continues it in the foreground (its CONT trap prints); ^C ends it there.
    s.send("fg\n");
    let (_, pos) = s.expect(pos, "CONT-4\n");
    s.send("\x03");
    let (_, pos) = s.expect(pos, "PROMPT> ");
    s.send("jobs; echo none-$((5+5))\n");
    let (left, _) = s.expect(pos, "none-10\n");
    assert!(
        !left.contains("Stopped") && !left.contains("Running"),
        "{left:?}"
    );
    // A background job that reads the terminal is stopped (SIGTTIN): the shell
    // reports it at a later prompt; `fg` gives it the terminal, and it reads.
    // (The shell may report it at the first prompt already: the text is looked
    // at from before the command on.)
    let before = pos;
    s.send("cat &\n");
    let (_, mut pos) = s.expect(pos, "PROMPT> ");
    let mut stopped = false;
    for _ in 0..50 {
        if s.seen[before..].contains("Stopped") {
            stopped = true;
            break;
        }
        s.send("\n");
        pos = s.expect(pos, "PROMPT> ").1;
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(stopped, "cat & was not stopped: {:?}", s.seen);
    s.send("fg\n");
    let (_, pos) = s.expect(pos, "fg\ncat\n");
    // Typed once the shell has taken the command (it prints the job's), so that
    // its line editor cannot read ahead of it.
    s.send("hello-cat\n");
    let (_, pos) = s.expect(pos, "hello-cat\nhello-cat\n");
    s.send("\x04");
    let (_, pos) = s.expect(pos, "PROMPT> ");
    // One that ignores SIGTTIN gets EIO instead (busybox cat then fails).
    s.send("(trap '' TTIN; exec cat) & wait $!; echo rc-$((10+$?))\n");
    let (text, _) = s.expect(pos, "rc-11\n");
    assert!(text.contains("Input/output error"), "{text:?}");
    s.send("exit 3\n");
    let out = running.wait();
    assert_eq!(out.code, Some(3), "{out}\nterminal: {:?}", s.seen);
    c.assert_nothing_left(&b);
}

/// `exec --tty` of a shell into a running VM domain (podman `exec -it`): its
/// terminal has a foreground group of its own, so ^C there ends the shell's job
/// and not the shell, which the exec proxy passes on from the host's pty; the
/// shell's exit status is exec's; a second exec on the same pty starts afresh.
#[test]
fn exec_tty_shell_job_control() {
    require_kvm!();
    let hj = Hyperjail::new();
    let mut b = vm_bundle();
    b.args(&["sleep", "1000"]);
    let c = hj.container("vmexecjobs");
    c.run(&b, &["--detach"]).assert_ok();
    let dir = tempfile::tempdir().expect("tempdir");
    let sock = dir.path().join("console.sock");
    let listener = UnixListener::bind(&sock).expect("bind console socket");
    // Twice: the host hands the next exec the same pty, and the first shell's
    // foreground group must not outlive its session.
    for round in 0..2 {
        let running = hj
            .call(["exec", "--tty", "--console-socket"])
            .arg(&sock)
            .args(["--env", "PS1=PROMPT> ", &c.id, "/bin/sh"])
            .spawn();
        let mut s = Session::accept(&listener);
        let (_, pos) = s.expect(0, "PROMPT> ");
        s.send("sh -c 'echo JOB-$((1+1)); exec sleep 100'\n");
        let (_, pos) = s.expect(pos, "JOB-2\n");
        s.send("\x03");
        let (_, pos) = s.expect(pos, "PROMPT> ");
        s.send("echo status=$?\n");
        let (_, _) = s.expect(pos, "status=130\n");
        s.send("exit 4\n");
        let out = running.wait();
        assert_eq!(
            out.code,
            Some(4),
            "round {round}: {out}\nterminal: {:?}",
            s.seen
        );
    }
    // The domain's own process ran on, untouched.
    assert_eq!(c.status().as_deref(), Some("running"));
    c.delete_force().assert_ok();
    c.assert_nothing_left(&b);
}
