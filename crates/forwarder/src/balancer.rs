//! The seam between the forwarder's sockets and a scheduler.
//!
//! This module owns the [`Balancer`] trait the forwarder drives (one call
//! to pick a destination for a new flow, and notifications of what then
//! happened to it), the identity of a flow ([`Flow`]) and its traffic
//! counters ([`Counters`]). The IPVS schedulers of `rvs-lb` sit behind it;
//! tests use small fixed implementations.

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use rvs_model::Protocol;

use crate::Activity;

/// One client's flow to a virtual service.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Flow {
    /// Transport protocol.
    pub protocol: Protocol,
    /// The client's address and port.
    pub client: SocketAddr,
    /// The virtual address and port the client reached.
    pub vip: SocketAddr,
}

impl fmt::Display for Flow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {} -> {}", self.protocol, self.client, self.vip)
    }
}

/// Traffic of one flow, in IPVS's directions: "in" is client to
/// destination, "out" is destination to client.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Counters {
    /// Bytes from the client forwarded to the destination.
    pub in_bytes: u64,
    /// Bytes from the destination forwarded to the client.
    pub out_bytes: u64,
    /// Packets from the client: datagrams for UDP; for TCP an estimate of
    /// data segments (see [`crate::copy`]).
    pub in_packets: u64,
    /// Packets to the client, counted like [`Counters::in_packets`].
    pub out_packets: u64,
}

/// A scheduler the forwarder asks where each new flow goes.
///
/// Implementations are shared by every worker, so they take `&self` and
/// synchronise internally. Calls are short and never block on I/O.
pub trait Balancer: Send + Sync + 'static {
    /// A destination for a new flow, or `None` when the service has none
    /// available (the flow is then refused). `tried` lists destinations
    /// that already failed to connect for this flow, which a scheduler
    /// should avoid if it can.
    fn pick(&self, flow: &Flow, tried: &[SocketAddr]) -> Option<SocketAddr>;

    /// Connecting to `dest` failed (TCP only); the forwarder reschedules
    /// the flow unless it ran out of attempts.
    fn connect_failed(&self, flow: &Flow, dest: SocketAddr, error: &io::Error);

    /// The flow is now established with `dest`.
    fn opened(&self, flow: &Flow, dest: SocketAddr);

    /// The flow with `dest` is over (closed, failed or expired), with its
    /// final counters.
    fn closed(&self, flow: &Flow, dest: SocketAddr, counters: &Counters);

    /// Whether to watch an opened TCP flow (called after
    /// [`Balancer::opened`]): its [`Activity`], which the copy keeps up to
    /// date until [`Balancer::closed`], or `None` (the default) for a copy
    /// that keeps none.
    fn watch(&self, _flow: &Flow, _dest: SocketAddr) -> Option<Arc<Activity>> {
        None
    }
}
