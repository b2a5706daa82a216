//! Every etcd key weft reads or writes, formatted in one place: flannel's layout below
//! `--etcd-prefix`.

use crate::lease::{self, Lease, LeaseId};

/// The keys below one prefix (`/coreos.com/network` by default; a trailing `/` is ignored, as
/// flanneld ignores it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Keys {
    prefix: String,
}

impl Keys {
    /// The keys below `prefix`, as given by `--etcd-prefix`.
    pub fn new(prefix: &str) -> Self {
        Self { prefix: prefix.trim_end_matches('/').to_string() }
    }

    /// `<prefix>/config`: the network config.
    pub fn config(&self) -> String {
        format!("{}/config", self.prefix)
    }

    /// `<prefix>/subnets/`: every lease key starts with it.
    pub fn subnets(&self) -> String {
        format!("{}/subnets/", self.prefix)
    }

    /// `<prefix>/subnets/10.5.52.0-24`: the plain key of the lease `id` (an IPv6-only lease's
    /// is `<prefix>/subnets/fd00:5:0:34::-64`).
    pub fn lease(&self, id: LeaseId) -> String {
        format!("{}{}", self.subnets(), lease::lease_key(id, None))
    }

    /// The key of `lease`: for a dual-stack one, `<prefix>/subnets/10.5.52.0-24&fd00:5:0:34::-64`.
    pub fn lease_of(&self, lease: &Lease) -> String {
        format!("{}{}", self.subnets(), lease.key_name())
    }

    /// The name of a key directly below the subnets prefix (`10.5.52.0-24`); `None` for a key
    /// outside it or deeper down, which is not a lease at all.
    pub fn lease_name<'k>(&self, key: &'k str) -> Option<&'k str> {
        key.strip_prefix(&self.subnets()).filter(|name| !name.contains('/'))
    }
}

/// The last path element of a key, `10.5.52.0-24` for a lease key.
pub fn key_name(key: &str) -> &str {
    key.rsplit('/').next().unwrap_or(key)
}

/// The first key after every key that starts with `prefix` (etcd's range end for a prefix).
pub fn prefix_end(prefix: &str) -> Vec<u8> {
    let mut end = prefix.as_bytes().to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0] // every key: etcd reads a range end of "\0" as "to the end"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_end_is_the_first_key_past_the_prefix() {
        assert_eq!(prefix_end("/coreos.com/network/subnets/"), b"/coreos.com/network/subnets0");
        assert_eq!(prefix_end("a\u{7f}"), b"a\x80");
    }

    #[test]
    fn a_trailing_slash_on_the_prefix_changes_no_key() {
        let keys = Keys::new("/coreos.com/network/");
        assert_eq!(keys.config(), "/coreos.com/network/config");
        assert_eq!(keys.lease(LeaseId::Ipv4("10.5.52.0/24".parse().unwrap())), "/coreos.com/network/subnets/10.5.52.0-24");
        assert_eq!(keys.lease_name("/coreos.com/network/subnets/10.5.52.0-24"), Some("10.5.52.0-24"));
        assert_eq!(keys.lease_name("/coreos.com/network/subnets/10.5.52.0-24/x"), None);
    }
}
