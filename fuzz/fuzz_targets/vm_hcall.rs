//! The VM backend's request decoder and dispatcher (vm-backend/src/hcall.rs) on hostile
//! guest memory: the input fills a 64 KiB GuestMem and up to four request blocks,
//! which are performed in order against a Host whose console is /dev/null and whose
//! rootfs is a temporary directory (never the real stdio or a real rootfs). Checked:
//! no panic, no out-of-bounds access, nothing created outside the temporary root.
#![no_main]

#[allow(dead_code)]
#[path = "../../vm-backend/src/abi.rs"]
mod abi;
#[allow(dead_code)]
#[path = "../../vm-backend/src/events.rs"]
mod events;
#[allow(dead_code)]
#[path = "../../vm-backend/src/files.rs"]
mod files;
#[allow(dead_code)]
#[path = "../../vm-backend/src/fsops.rs"]
mod fsops;
#[allow(dead_code)]
#[path = "../../vm-backend/src/hcall.rs"]
mod hcall;
#[allow(dead_code)]
#[path = "../../vm-backend/src/mem.rs"]
mod mem;
#[allow(dead_code)]
#[path = "../../vm-backend/src/stat.rs"]
mod stat;
#[allow(dead_code)]
#[path = "../../vm-backend/src/tty.rs"]
mod tty;
#[allow(dead_code)]
#[path = "../../vm-backend/src/wait.rs"]
mod wait;

use libfuzzer_sys::fuzz_target;
use nix::fcntl::OFlag;
use nix::sys::stat::Mode;
use std::cell::RefCell;
use std::path::PathBuf;

const MEM: usize = 64 << 10;
/// Where the request blocks are put (a ring slot in the VM; any block address here).
const BLK: u64 = 0xf000;
/// The temporary root is emptied again after this many inputs (bounds its growth).
const WIPE_EVERY: u32 = 2000;

struct Env {
    /// Holds `root` and nothing else: anything else here escaped the root.
    base: PathBuf,
    root: PathBuf,
    mem: mem::GuestMem,
    runs: u32,
}

thread_local! {
    static ENV: RefCell<Option<Env>> = const { RefCell::new(None) };
}

fn fresh_root(root: &PathBuf) {
    let _ = std::fs::remove_dir_all(root);
    std::fs::create_dir_all(root.join("etc")).expect("temp root");
    std::fs::write(root.join("etc/passwd"), "root:x:0:0::/:/bin/sh\n").expect("passwd");
    let _ = std::os::unix::fs::symlink("/etc/passwd", root.join("abs"));
    let _ = std::os::unix::fs::symlink("../../../etc/shadow", root.join("up"));
}

fn host(root: &PathBuf) -> files::Host {
    let null = || {
        nix::fcntl::open("/dev/null", OFlag::O_RDWR | OFlag::O_CLOEXEC, Mode::empty())
            .expect("/dev/null")
    };
    let r = nix::fcntl::open(root, OFlag::O_PATH | OFlag::O_DIRECTORY, Mode::empty())
        .expect("temp root fd");
    files::Host::new([null(), null(), null()], r, "/", false)
}

fuzz_target!(|data: &[u8]| {
    ENV.with(|e| {
        let mut e = e.borrow_mut();
        let env = e.get_or_insert_with(|| {
            let base = std::env::temp_dir().join(format!("hj-fuzz-vm-{}", std::process::id()));
            let root = base.join("root");
            fresh_root(&root);
            Env {
                base,
                root,
                mem: mem::GuestMem::new(MEM).expect("guest memory"),
                runs: 0,
            }
        });
        env.runs += 1;
        if env.runs % WIPE_EVERY == 0 {
            fresh_root(&env.root);
        }
        let Some((&n, rest)) = data.split_first() else {
            return;
        };
        let n = usize::from(n % 4) + 1;
        let blk = abi::RQ_SIZE as usize;
        let (blocks, fill) = rest.split_at((n * blk).min(rest.len()));
        let m = &mut env.mem;
        m.slice_mut(0, MEM as u64).expect("whole memory").fill(0);
        m.write(0, &fill[..fill.len().min(MEM)]);
        let mut h = host(&env.root);
        for b in blocks.chunks(blk) {
            let mut req = [0u8; 64];
            req[..b.len()].copy_from_slice(b);
            assert!(m.write(BLK, &req));
            hcall::handle(m, &mut h, BLK);
        }
        // A block at a guest-chosen address (read from the filled memory).
        let at = m.read_u64(0).unwrap_or(0);
        hcall::handle(m, &mut h, at);
        let beside: Vec<_> = std::fs::read_dir(&env.base)
            .expect("temp base")
            .filter_map(|d| d.ok().map(|d| d.file_name()))
            .filter(|n| n != "root")
            .collect();
        assert!(beside.is_empty(), "created outside the root: {beside:?}");
    });
});
