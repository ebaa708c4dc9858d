//! Sans-IO userspace load-balancer core.
//!
//! This crate will own what the kernel's IPVS does per connection, without
//! sockets and with time passed in: the virtual-service table, every IPVS
//! scheduler with the kernel's semantics, persistence templates, the
//! connection table with per-state timeouts, and IPVS counters and rate
//! estimation. The forwarder (`rvs-forwarder`) drives it with real sockets.
//! It is filled in by the userspace dataplane issue.

#![forbid(unsafe_code)]

pub use rvs_model::{Destination, Scheduler, Service, VirtualService};
