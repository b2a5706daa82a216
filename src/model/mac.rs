//! Ethernet addresses: a VTEP's MAC, as leases advertise it and the kernel holds it.
//!
//! Reading one from text is the lease codec's business (`lease.rs`: Go's `net.ParseMAC`
//! rules and their errors); here is only the value and how it prints.

use std::fmt;

use serde::{Serialize, Serializer};

/// An Ethernet address, written the way Go's `net.HardwareAddr` prints it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MacAddr(pub [u8; 6]);

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [a, b, c, d, e, g] = self.0;
        write!(f, "{a:02x}:{b:02x}:{c:02x}:{d:02x}:{e:02x}:{g:02x}")
    }
}

impl Serialize for MacAddr {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl MacAddr {
    /// Whether a VTEP can have this address: not all zero, not multicast (nor broadcast).
    pub fn is_unicast(&self) -> bool {
        self.0 != [0; 6] && self.0[0] & 1 == 0
    }
}
