//! glibc, set at start before any other thread exists: malloc for a daemon with a small peak,
//! and host name lookups (`--etcd-endpoints`) through `/etc/hosts` and DNS alone.

/// Blocks from this size up get pages of their own from glibc, returned when freed.
const MMAP_THRESHOLD: i32 = 64 * 1024;

/// glibc's malloc, set for a daemon whose peak is a pass over thousands of peers.
///
/// weftd runs on one thread; the others are short-lived helpers (iptables). glibc would give
/// each its own malloc arena, which measured 0.6 MB of peak RSS at 5,000 peers (make bench,
/// scale: 10.2 MB -> 9.4 MB).
///
/// A pass's large blocks (entry lists, sort buffers, etcd pages) are mapped and unmapped whole
/// at a fixed threshold: glibc's rises to each freed mapped block's size (up to 32 MB), so they
/// came from the heap and left resident holes (BENCHMARKS.md, "Dual-stack memory, stop 14").
pub(crate) fn tune_malloc() {
    #[cfg(target_env = "gnu")]
    // SAFETY: mallopt only sets allocator parameters; called before any other thread exists.
    unsafe {
        nix::libc::mallopt(nix::libc::M_ARENA_MAX, 1);
        nix::libc::mallopt(nix::libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD);
    }
}

/// Host names are looked up in `/etc/hosts`, then DNS (`/etc/resolv.conf`), whatever
/// `/etc/nsswitch.conf` says, in a statically linked weftd (`.cargo/config.toml`).
///
/// Those two lookups are built into glibc; any other NSS module `nsswitch.conf` names
/// (`myhostname`, `resolve`, `mdns4_minimal` on many distributions) would be loaded from the
/// host's own glibc, which need not be the version weftd was linked with, and mixing the two
/// in one process is undefined. Pinning the `hosts` database keeps every lookup inside weftd.
/// A dynamically linked weftd uses the host's glibc throughout and follows `nsswitch.conf`.
pub(crate) fn resolve_names_with_files_and_dns() {
    #[cfg(all(target_env = "gnu", target_feature = "crt-static"))]
    {
        extern "C" {
            /// glibc: replaces `nsswitch.conf`'s line for `database` with `service_line`.
            fn __nss_configure_lookup(database: *const std::ffi::c_char, service_line: *const std::ffi::c_char) -> i32;
        }
        // SAFETY: both arguments are NUL-terminated strings that live for the program; called
        // before any other thread exists, so no lookup runs meanwhile.
        let status = unsafe { __nss_configure_lookup(c"hosts".as_ptr(), c"files dns".as_ptr()) };
        debug_assert_eq!(status, 0, "glibc knows the hosts database");
    }
}
