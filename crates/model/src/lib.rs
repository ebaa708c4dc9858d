//! The IPVS service model that every rvs layer speaks.
//!
//! This crate owns the vocabulary: a virtual service (identified by
//! protocol + address + port, or by firewall mark), its scheduler,
//! persistence and flags, the real servers (destinations) behind it with
//! their forwarding method, weight and thresholds, the counters IPVS keeps,
//! and the admin surface ([`admin::Admin`]) that every dataplane offers
//! and `rvsadm` drives. It has no I/O. The kernel dataplane encodes these
//! types to netlink, the userspace dataplane schedules connections with
//! them, and the proxy computes them from Kubernetes objects.

pub mod admin;
mod scheduler;
mod service;

pub use scheduler::{Scheduler, UnknownScheduler};
pub use service::{
    Connection, Daemon, DaemonState, Destination, DestinationStatus, ForwardMethod, Info, Netmask,
    Protocol, Service, ServiceFlags, ServiceKey, ServiceStatus, Stats, Timeouts, Tunnel,
    TunnelFlags, TunnelType, VirtualService,
};
