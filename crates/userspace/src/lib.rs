//! The userspace dataplane.
//!
//! This crate puts the two halves of userspace IPVS together: the sans-IO
//! core of `rvs-lb` (virtual services, schedulers, connection table,
//! counters) and the sockets of `rvs-forwarder` (listeners on virtual
//! addresses, TCP and UDP forwarding). It owns
//!
//! * the tokio runtime the forwarder runs on and the listeners that match
//!   the core's virtual services ([`Dataplane`], [`listeners`]);
//! * the seam the forwarder schedules through ([`sched::Sched`], the
//!   core behind a lock, with the wall clock passed in);
//! * the rebalancing of long-lived TCP connections after a scale-up
//!   ([`Rebalancing`], off by default; `rvs-rebalance` decides, the
//!   forwarder closes idle connections);
//! * the [`rvs_model::admin::Admin`] implementation ([`DataplaneAdmin`])
//!   that `rvsd`'s and `rvs-proxy`'s admin sockets expose and that the
//!   proxy's reconciler drives, so the kernel and userspace dataplanes are
//!   programmed and read the same way.
//!
//! * the rule of one dataplane per network namespace ([`InstanceLock`],
//!   taken by [`Dataplane::start`]): a second one would bind the same
//!   virtual addresses through `SO_REUSEPORT` and silently take part of
//!   their traffic with its own configuration, so it refuses to start and
//!   names the running one.
//!
//! Virtual addresses must be bindable: 127.0.0.0/8 and `::1` without
//! privileges, addresses the host has, or any address once someone with
//! `CAP_NET_ADMIN` adds it to a device. A listener that cannot bind is
//! reported and retried every second; the service stays programmed.
//! Fwmark and SCTP services are kept in the table (so listings match
//! what was programmed) but cannot be served in userspace.

mod admin;
mod dataplane;
mod instance;
pub mod listeners;
pub mod rebalance;
pub mod sched;

pub use admin::DataplaneAdmin;
pub use dataplane::{Dataplane, GLOBAL_QUEUE_INTERVAL, Options, UserspaceError, worker_count};
pub use instance::{DEFAULT_INSTANCE_LOCK, Holder, InstanceLock};
pub use listeners::ListenerState;
pub use rebalance::Rebalancing;
pub use rvs_rebalance::ServiceRebalance;
