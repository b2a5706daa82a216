//! `etcd grpc-proxy` in front of the lab's etcd, as some clusters run it: the proxy shares one
//! watch among clients that watch the same keys and answers some watch requests itself.

use std::time::Duration;

use crate::netns::netns_exec;
use crate::process::{output, poll};
use crate::Lab;

/// Where the proxy listens: etcd member 0's underlay address, beside etcd's own 2379.
const PROXY_PORT: u16 = 23790;
const PROXY_TIMEOUT: Duration = Duration::from_secs(20);

impl Lab {
    /// Starts `etcd grpc-proxy start` in etcd member 0's namespace, forwarding to its member
    /// (log `<dir>/grpc-proxy.log`; stopped with the lab), and waits until it answers.
    /// Returns the proxy's client URL (`http://198.18.0.2:23790`).
    pub fn start_grpc_proxy(&self) -> String {
        let member = self.member(0);
        let url = format!("http://{}:{PROXY_PORT}", member.ip);
        let listen = format!("--listen-addr={}:{PROXY_PORT}", member.ip);
        let cmd = netns_exec(&member.ns, &["etcd", "grpc-proxy", "start", "--endpoints=127.0.0.1:2379", &listen]);
        self.spawn_logged(cmd, "grpc-proxy.log", false);
        let health = || output(&mut self.etcdctl_command(std::slice::from_ref(&url), true, &["endpoint", "health"]));
        poll("etcd grpc-proxy to answer", PROXY_TIMEOUT, || health().status.success().then_some(()));
        url
    }

    /// Starts `etcdctl watch --prefix <prefix>` through the proxy at `url` (log
    /// `<dir>/grpc-proxy-watch.log`; stopped with the lab), and waits until it sees a write
    /// under `<prefix>grpc-proxy-probe/`, a key no lease reader takes for a lease. The proxy
    /// may share that watch with clients that later watch the same keys (etcd's
    /// `proxy/grpcproxy` decides by revisions; its `etcd_grpc_proxy_watchers_coalescing_total`
    /// tells whether it did).
    pub fn watch_through_proxy(&self, url: &str, prefix: &str) {
        let cmd = self.etcdctl_command(&[url.to_string()], true, &["watch", "--prefix", prefix]);
        self.spawn_logged(cmd, "grpc-proxy-watch.log", false);
        let probe = format!("{prefix}grpc-proxy-probe/ready");
        poll("the watch through etcd grpc-proxy to see a write", PROXY_TIMEOUT, || {
            self.etcd_put(&probe, "1");
            self.log_tail("grpc-proxy-watch.log", 20).contains(&probe).then_some(())
        });
    }
}
