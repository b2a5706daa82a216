//! Names across hosts in the lab (`--names`): weftd's one-shot commands (`link-env`,
//! `status`) run in a host as an operator would, and the SkyDNS records read back from etcd
//! with the revisions and etcd lease a test needs to tell a rewrite from an untouched key.

use std::process::Output;

use base64::Engine;

use crate::{weftd_bin, Lab};

/// One key as `etcdctl get -w json` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EtcdRecord {
    pub key: String,
    pub value: String,
    pub mod_revision: i64,
    /// The etcd lease id, 0 for none.
    pub lease: i64,
}

impl Lab {
    /// `weftd <args> --etcd-endpoints <the lab's>` in host N's namespace; output not checked.
    pub fn weftd_command(&self, n: usize, args: &[&str]) -> Output {
        let bin = weftd_bin();
        let endpoints = self.etcd_endpoints();
        let mut all = vec![bin.to_str().expect("weftd path is UTF-8")];
        all.extend_from_slice(args);
        all.extend(["--etcd-endpoints", &endpoints]);
        self.host(n).exec(&all)
    }

    /// Every key below `prefix` with its mod revision and etcd lease, in key order.
    pub fn etcd_records(&self, prefix: &str) -> Vec<EtcdRecord> {
        let out = self.etcdctl(&["get", "-w", "json", "--prefix", "--", prefix]);
        assert!(out.status.success(), "etcdctl get --prefix {prefix}: {}", String::from_utf8_lossy(&out.stderr));
        let doc: serde_json::Value = serde_json::from_slice(&out.stdout).expect("etcdctl prints JSON");
        let text = |kv: &serde_json::Value, field: &str| {
            let bytes = base64::engine::general_purpose::STANDARD.decode(kv[field].as_str().unwrap_or_default()).expect("base64");
            String::from_utf8_lossy(&bytes).into_owned()
        };
        let kvs = doc["kvs"].as_array().cloned().unwrap_or_default();
        kvs.iter()
            .map(|kv| EtcdRecord {
                key: text(kv, "key"),
                value: text(kv, "value"),
                mod_revision: kv["mod_revision"].as_i64().unwrap_or_default(),
                lease: kv["lease"].as_i64().unwrap_or_default(),
            })
            .collect()
    }
}
