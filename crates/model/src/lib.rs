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
//!
//! What a dataplane reports is kept even where rvs does not understand it
//! (a scheduler module rvs does not know, [`Scheduler::Other`]; unknown
//! flag bits, forwarding methods, tunnel types and sync-daemon states),
//! so one foreign virtual server never makes a whole listing fail. User
//! input (`FromStr`) still accepts only what rvs knows.
//!
//! Feature `serde` (off by default) derives `Serialize`/`Deserialize` for
//! the types here; the admin socket's wire format is built on it.

pub mod admin;
mod duration;
mod scheduler;
mod service;

pub use duration::{BadDuration, format_go_duration, parse_go_duration};
pub use scheduler::{InvalidSchedulerName, Scheduler, SchedulerName, UnknownScheduler};
pub use service::{
    Connection, Daemon, DaemonState, Destination, DestinationStatus, ForwardMethod, Info, Netmask,
    Protocol, Service, ServiceFlags, ServiceKey, ServiceStatus, Stats, Timeouts, Tunnel,
    TunnelFlags, TunnelType, VirtualService,
};
