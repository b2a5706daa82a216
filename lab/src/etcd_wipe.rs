//! Lab helpers that replace etcd's store under running daemons: wipe it, or restore an older
//! snapshot, as an operator who lost etcd's disk or rolled back to a backup would.

use std::fs;
use std::path::{Path, PathBuf};

use crate::netns::netns_exec;
use crate::process::{run, stderr_of, stdout_of};
use crate::{EtcdMode, Lab};

impl Lab {
    /// Stops the single etcd member, deletes its data dir and starts it empty with the same
    /// flags; returns once it answers. The network config is gone too: put it back.
    pub fn wipe_etcd(&self) {
        let data_dir = self.single_member_data_dir("wipe");
        self.stop_etcd(0);
        fs::remove_dir_all(&data_dir).unwrap_or_else(|e| panic!("cannot delete etcd's data dir {}: {e}", data_dir.display()));
        self.start_etcd(0);
    }

    /// `etcdctl snapshot save <lab dir>/<name>.db` from the single member; returns the file.
    pub fn save_etcd_snapshot(&self, name: &str) -> PathBuf {
        self.single_member_data_dir("snapshot");
        let path = self.dir().join(format!("{name}.db"));
        let path_text = path.to_str().expect("lab paths are UTF-8");
        let out = self.etcdctl_member(0, &["snapshot", "save", path_text]);
        assert!(out.status.success(), "etcdctl snapshot save failed: {}", stderr_of(&out));
        path
    }

    /// Stops the single member, replaces its data dir with `etcdctl snapshot restore
    /// <snapshot>` and starts it. The member keeps its name, peer URL and cluster token, so
    /// clients see the same cluster id: only the revision, back at the snapshot's, tells the
    /// stores apart.
    pub fn restore_etcd_snapshot(&self, snapshot: &Path) {
        let data_dir = self.single_member_data_dir("restore");
        self.stop_etcd(0);
        fs::remove_dir_all(&data_dir).unwrap_or_else(|e| panic!("cannot delete etcd's data dir {}: {e}", data_dir.display()));
        let member = self.member(0);
        let peer = "http://127.0.0.1:2380"; // a lone member peers on loopback (see etcd_command)
        let mut restore = netns_exec(&member.ns, &["etcdctl", "snapshot", "restore"]);
        restore.arg(snapshot).arg("--data-dir").arg(&data_dir).args([
            &format!("--name={}", member.name),
            &format!("--initial-cluster={}={peer}", member.name),
            &format!("--initial-advertise-peer-urls={peer}"),
            &format!("--initial-cluster-token={}", self.id()),
        ]);
        run(restore.env("ETCDCTL_API", "3"));
        self.start_etcd(0);
    }

    /// Writes a scratch key outside weft's prefix `writes` times, so the store's revision is
    /// that much higher, as in a store that has been in use for a while.
    pub fn advance_etcd_revision(&self, writes: usize) {
        for write in 0..writes {
            self.etcd_put("/weft-lab/history", &write.to_string());
        }
    }

    /// The etcd lease `key` hangs on and its seconds left (`etcdctl lease timetolive`):
    /// `None` if the key is absent, `(0, _)` for a key without a lease, a TTL of -1 for a lease
    /// etcd no longer knows.
    pub fn etcd_key_lease(&self, key: &str) -> Option<(i64, i64)> {
        let out = self.etcdctl(&["get", "-w", "json", "--", key]);
        let doc: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
        let lease = doc["kvs"].as_array()?.first()?["lease"].as_i64().unwrap_or(0);
        if lease == 0 {
            return Some((0, 0));
        }
        let out = self.etcdctl(&["lease", "timetolive", "-w", "json", &format!("{lease:x}")]);
        let ttl: serde_json::Value = serde_json::from_str(&stdout_of(&out)).ok()?;
        Some((lease, ttl["ttl"].as_i64()?))
    }

    /// The data dir of the lab's only member; these helpers model one member's disk.
    fn single_member_data_dir(&self, what: &str) -> PathBuf {
        assert_eq!(self.etcd_mode(), EtcdMode::Single, "the lab can only {what} a single plain etcd member");
        self.member(0).data_dir.clone()
    }
}
