//! Sans-IO userspace load-balancer core: the kernel's IPVS, without sockets.
//!
//! [`Core`] owns what `net/netfilter/ipvs` does per connection, with time
//! passed in and no I/O, so a driver (the forwarder) can run it with real
//! sockets and tests can run it deterministically:
//!
//! * the virtual-service table with O(1) lookup by (protocol, address,
//!   port) and the kernel's admin semantics and errnos (`table`);
//! * every IPVS scheduler with the kernel's exact choice (`sched`, one
//!   module per scheduler, each documenting the kernel behaviour it
//!   reproduces);
//! * persistence templates (`persist`) and the connection table with the
//!   kernel's per-state timeouts (`conn`);
//! * IPVS counters and the kernel's 2-second rate estimator
//!   (`estimator`).
//!
//! The driver calls [`Core::schedule`] for each new flow and reports what
//! then happens to it ([`Core::opened`], [`Core::traffic`],
//! [`Core::closed`], ...); it calls [`Core::poll`] when
//! [`Core::next_timeout`] is reached.

mod conn;
mod core;
mod estimator;
mod persist;
mod rng;
mod sched;
mod table;

use std::net::SocketAddr;

/// The core's hash maps. Their keys include client addresses and ports,
/// so the hash is keyed with a random seed per map, as std's is; aHash
/// computes it several times faster than std's SipHash, which was a
/// sixth of the userspace forwarder's instructions per connection.
pub(crate) type HashMap<K, V> = std::collections::HashMap<K, V, ahash::RandomState>;

pub use crate::core::Core;
pub use rvs_model::{Destination, Scheduler, Service, VirtualService};

/// One client's flow to a virtual service: what identifies a connection
/// entry (the kernel's `<protocol, caddr, cport, vaddr, vport>`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FlowId {
    /// Transport protocol.
    pub protocol: rvs_model::Protocol,
    /// The client's address and port.
    pub client: SocketAddr,
    /// The virtual address and port the client reached.
    pub vip: SocketAddr,
}

/// Traffic moved on a flow since the last report, in IPVS's directions:
/// "in" is client to destination, "out" is destination to client.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Traffic {
    /// Bytes from the client to the destination.
    pub in_bytes: u64,
    /// Bytes from the destination to the client.
    pub out_bytes: u64,
    /// Packets from the client.
    pub in_packets: u64,
    /// Packets to the client.
    pub out_packets: u64,
}
