//! Lab helpers for bounded-input tests: values too large for a command line, and a process's
//! resident memory.

use std::process::Stdio;

use crate::process::stderr_of;
use crate::Lab;

impl Lab {
    /// Puts `value` at `key` with etcdctl reading the value from stdin: a value over 128 KiB
    /// cannot be passed as one argument.
    pub fn etcd_put_large(&self, key: &str, value: &[u8]) {
        let mut cmd = self.etcdctl_command(&self.live_urls(), true, &["put", "--", key]);
        cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = cmd.spawn().unwrap_or_else(|e| panic!("cannot run etcdctl put ({e}); try `make deps`"));
        std::io::Write::write_all(&mut child.stdin.take().expect("piped stdin"), value).expect("write the value");
        let out = child.wait_with_output().expect("wait for etcdctl put");
        assert!(out.status.success(), "etcdctl put {key} ({} bytes) failed: {}", value.len(), stderr_of(&out));
    }
}

/// Resident memory of process `pid` in KiB (`VmRSS` in /proc/<pid>/status).
pub fn vm_rss_kib(pid: u32) -> u64 {
    crate::process::proc_status_kib(pid, "VmRSS").unwrap_or_else(|| panic!("no VmRSS for {pid}"))
}
