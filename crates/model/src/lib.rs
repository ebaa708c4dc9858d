//! The IPVS service model that every rvs layer speaks.
//!
//! This crate owns the vocabulary: a virtual service (identified by
//! protocol + address + port, or by firewall mark), its scheduler and
//! persistence, and the real servers (destinations) behind it with their
//! forwarding method, weight and thresholds. It has no I/O. The kernel
//! dataplane encodes these types to netlink, the userspace dataplane
//! schedules connections with them, and the proxy computes them from
//! Kubernetes objects.

#![forbid(unsafe_code)]

mod scheduler;
mod service;

pub use scheduler::{Scheduler, UnknownScheduler};
pub use service::{Destination, ForwardMethod, Protocol, ServiceKey, VirtualService};
