//! `struct stat` and `struct statx` of x86-64 Linux, encoded for the guest.

/// The 144-byte `struct stat` of x86-64 Linux.
pub fn encode_stat(st: &libc::stat) -> Vec<u8> {
    let mut b = Vec::with_capacity(144);
    for v in [st.st_dev, st.st_ino, st.st_nlink] {
        b.extend(v.to_le_bytes());
    }
    for v in [st.st_mode, st.st_uid, st.st_gid, 0] {
        b.extend(v.to_le_bytes());
    }
    for v in [st.st_rdev as i64, st.st_size, st.st_blksize, st.st_blocks] {
        b.extend(v.to_le_bytes());
    }
    for v in [
        st.st_atime,
        st.st_atime_nsec,
        st.st_mtime,
        st.st_mtime_nsec,
        st.st_ctime,
        st.st_ctime_nsec,
        0,
        0,
        0,
    ] {
        b.extend(v.to_le_bytes());
    }
    b
}

/// The 256-byte `struct statx`, with STATX_BASIC_STATS filled in.
pub fn encode_statx(st: &libc::stat) -> Vec<u8> {
    const STATX_BASIC_STATS: u32 = 0x7ff;
    let mut b = Vec::with_capacity(256);
    b.extend(STATX_BASIC_STATS.to_le_bytes());
    b.extend((st.st_blksize as u32).to_le_bytes());
    b.extend(0u64.to_le_bytes()); // attributes
    b.extend((st.st_nlink as u32).to_le_bytes());
    b.extend(st.st_uid.to_le_bytes());
    b.extend(st.st_gid.to_le_bytes());
    b.extend((st.st_mode as u16).to_le_bytes());
    b.extend(0u16.to_le_bytes());
    b.extend(st.st_ino.to_le_bytes());
    b.extend((st.st_size as u64).to_le_bytes());
    b.extend((st.st_blocks as u64).to_le_bytes());
    b.extend(0u64.to_le_bytes()); // attributes_mask
    let ts = |b: &mut Vec<u8>, s: i64, ns: i64| {
        b.extend(s.to_le_bytes());
        b.extend((ns as u32).to_le_bytes());
        b.extend(0u32.to_le_bytes());
    };
    ts(&mut b, st.st_atime, st.st_atime_nsec);
    ts(&mut b, 0, 0); // btime: not in the mask
    ts(&mut b, st.st_ctime, st.st_ctime_nsec);
    ts(&mut b, st.st_mtime, st.st_mtime_nsec);
    for v in [
        libc::major(st.st_rdev),
        libc::minor(st.st_rdev),
        libc::major(st.st_dev),
        libc::minor(st.st_dev),
    ] {
        b.extend(v.to_le_bytes());
    }
    b.resize(256, 0);
    b
}

/// struct statfs as the guest's x86-64 Linux lays it out, from the host's (the
/// same architecture: the fields keep their types); f_flags says ST_VALID, and
/// ST_RDONLY for a read-only rootfs.
pub fn encode_statfs(st: &libc::statfs, readonly: bool) -> Vec<u8> {
    let mut b = Vec::with_capacity(120);
    b.extend(st.f_type.to_le_bytes());
    b.extend(st.f_bsize.to_le_bytes());
    for v in [st.f_blocks, st.f_bfree, st.f_bavail, st.f_files, st.f_ffree] {
        b.extend(v.to_le_bytes());
    }
    // f_fsid: not the host's.
    b.extend(0u64.to_le_bytes());
    for v in [st.f_namelen, st.f_frsize] {
        b.extend(v.to_le_bytes());
    }
    // f_flags (not in libc's struct): ST_VALID (0x20), ST_RDONLY (1).
    let flags: i64 = 0x20 | i64::from(readonly);
    b.extend(flags.to_le_bytes());
    b.resize(120, 0);
    b
}

#[cfg(test)]
mod tests {
    #[test]
    fn sizes() {
        let st = nix::sys::stat::stat("/").expect("stat /");
        assert_eq!(super::encode_stat(&st).len(), 144);
        let x = super::encode_statx(&st);
        assert_eq!(x.len(), 256);
        assert_eq!(
            u16::from_le_bytes([x[28], x[29]]) as u32,
            st.st_mode & 0xffff
        );
    }
}
