# Shared by the benchmark scripts that run crun (source it after defining `die` and
# `note`).

# crun 1.8.1 refuses a hybrid cgroup layout while any controller (here hugetlb) sits
# on cgroup v2. Give hugetlb a v1 hierarchy, as MACHINE-NOTES.md says. Only on a
# v1/hybrid host (/sys/fs/cgroup a tmpfs); it stays mounted: on this kernel,
# unmounting it again does not hand hugetlb back to v2.
mount_hugetlb_v1_for_crun() {
    if [ "$(stat -f -c %T /sys/fs/cgroup)" = tmpfs ] && ! mountpoint -q /sys/fs/cgroup/hugetlb; then
        mkdir -p /sys/fs/cgroup/hugetlb
        mount -t cgroup -o hugetlb cgroup /sys/fs/cgroup/hugetlb ||
            die "could not mount the v1 hugetlb hierarchy that crun needs"
        note "mounted the v1 hugetlb hierarchy at /sys/fs/cgroup/hugetlb (for crun only; it stays mounted)"
    fi
}
