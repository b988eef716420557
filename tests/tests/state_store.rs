//! The state store under `--root` failing under the runtime (tracker issue 9): a root
//! on a tmpfs that fills up in the middle of `create`, and a state.json cut short by
//! hand. Either way the error is one clear line and `delete --force` leaves nothing.

use hyperjail_tests::{cgroup_dirs, pid_alive, require_root, Bundle, Container, Hyperjail};
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use serde_json::json;
use std::fs;
use std::path::{Path, PathBuf};

/// A tmpfs mounted over a directory, unmounted (lazily) on drop, also when a test fails.
struct Tmpfs(PathBuf);

impl Tmpfs {
    /// Mounts a tmpfs of `pages` pages at `dir` (created if missing).
    fn mount(dir: &Path, pages: u64) -> Result<Tmpfs, String> {
        fs::create_dir_all(dir).map_err(|e| format!("mkdir {}: {e}", dir.display()))?;
        let page = nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE)
            .ok()
            .flatten()
            .unwrap_or(4096) as u64;
        let data = format!("size={},mode=0700", pages * page);
        mount(
            Some("tmpfs"),
            dir,
            Some("tmpfs"),
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
            Some(data.as_str()),
        )
        .map_err(|e| format!("mount tmpfs ({data}) at {}: {e}", dir.display()))?;
        Ok(Tmpfs(dir.to_path_buf()))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = umount2(&self.0, MntFlags::MNT_DETACH);
    }
}

/// Creates `sleep` containers (a bundle each, so each has its own marker) under a
/// `--root` on a tmpfs of `pages` pages until `create` fails, then checks the failure and
/// what is left. Returns false (after printing why) when no tmpfs could be mounted.
///
/// With state.json, the config copy and next-domid one page each, a container holds two
/// pages and a state write needs one more while it is renamed over the old one. So the
/// create that fails is the one whose first state write (before any cgroup exists) or
/// whose write of the pid (after the process was cloned into its cgroups) finds no page,
/// depending on whether `pages` is even or odd: the test runs both.
fn fill_up(pages: u64) -> bool {
    let hj = Hyperjail::new();
    let _tmpfs = match Tmpfs::mount(hj.root(), pages) {
        Ok(t) => t,
        Err(e) => {
            println!("SKIP full_tmpfs_root ({pages} pages): {e}");
            return false;
        }
    };
    let mut made: Vec<(Container<'_>, Bundle)> = Vec::new();
    let mut failed = None;
    for i in 0..2 * pages {
        let mut b = Bundle::new();
        b.args(&["sleep", "1000"]);
        let c = hj.container(&format!("full{pages}p{i}"));
        let out = c.create(&b, &[]);
        if out.ok() {
            c.start().assert_ok();
            made.push((c, b));
        } else {
            failed = Some((c, b, out));
            break;
        }
    }
    let (c, b, out) =
        failed.unwrap_or_else(|| panic!("no create failed on a tmpfs of {pages} pages"));
    println!(
        "{pages} pages: {} containers fit, then: {}",
        made.len(),
        out.stderr.trim()
    );
    assert!(
        !made.is_empty(),
        "the first create failed already; the tmpfs is too small to test anything: {out}"
    );

    // One clear line, exit 1, naming the cause.
    out.assert_error(&["no space left on device"]);
    // Nothing of the failed container: no state dir, no cgroup, no process, no mount.
    c.assert_nothing_left(&b);
    for d in cgroup_dirs(&format!("/hyperjail/{}", c.id)) {
        assert!(
            !d.exists(),
            "cgroup {} of the failed create is left",
            d.display()
        );
    }
    hj.run(["state", &c.id]).assert_error(&["does not exist"]);

    // The containers made before are untouched and listed, the failed one is not.
    let mut listed: Vec<String> = hj
        .list_json()
        .iter()
        .map(|s| {
            assert_eq!(s["status"], "running", "{s}");
            s["id"].as_str().unwrap_or_default().to_string()
        })
        .collect();
    listed.sort();
    let mut want: Vec<String> = made.iter().map(|(c, _)| c.id.clone()).collect();
    want.sort();
    assert_eq!(listed, want, "list on the full tmpfs");

    // delete --force of the earlier ones cleans up, on a full disk too.
    for (c, b) in &made {
        let pid = c.pid();
        c.delete_force().assert_ok();
        assert!(
            !pid_alive(pid),
            "pid {pid} of {} survives delete --force",
            c.id
        );
        c.assert_nothing_left(b);
    }
    let left: Vec<String> = hj
        .root_entries()
        .into_iter()
        .filter(|e| e != "next-domid")
        .collect();
    assert!(left.is_empty(), "--root still holds {left:?}");

    // With the space back, the failed id is free to use again.
    c.create(&b, &[]).assert_ok();
    c.delete_force().assert_ok();
    c.assert_nothing_left(&b);
    true
}

#[test]
fn full_tmpfs_root_fails_create_cleanly() {
    require_root!();
    for pages in [6, 7] {
        if !fill_up(pages) {
            return;
        }
    }
}

#[test]
fn truncated_state_json_is_a_clear_error_and_delete_force_cleans_up() {
    require_root!();
    let hj = Hyperjail::new();
    // The default cgroup path, and one of the config's own (found from the config copy).
    for custom in [false, true] {
        let mut b = Bundle::new();
        b.args(&["sleep", "1000"]);
        let c = hj.container("trunc");
        let parent = format!("/hjtest-trunc-{}", std::process::id());
        if custom {
            b.config_mut()["linux"]["cgroupsPath"] = json!(format!("{parent}/{}", c.id));
        }
        c.create(&b, &[]).assert_ok();
        c.start().assert_ok();
        let pid = c.pid();
        let state = c.state_dir().join("state.json");
        fs::OpenOptions::new()
            .write(true)
            .open(&state)
            .and_then(|f| f.set_len(10))
            .expect("truncate state.json");

        let out = hj.run(["state", &c.id]);
        out.assert_error(&["corrupt"]);
        assert!(out.stderr.contains("state.json"), "{out}");
        for verb in [vec!["kill", &c.id, "KILL"], vec!["delete", &c.id]] {
            hj.run(verb).assert_error(&["corrupt"]);
        }
        assert!(pid_alive(pid), "a failed verb touched the container");
        assert!(hj.run(["list"]).ok(), "list fails on a corrupt state.json");

        c.delete_force().assert_ok();
        assert!(
            !pid_alive(pid),
            "pid {pid} survives delete --force (custom cgroupsPath: {custom})"
        );
        c.assert_nothing_left(&b);
        if custom {
            for d in cgroup_dirs(&parent) {
                let _ = fs::remove_dir(d);
            }
        }
    }
}
