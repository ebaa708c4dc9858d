//! Rebalancing long-lived connections, without I/O.
//!
//! IPVS balances connections, not requests: keep-alive and gRPC
//! connections stay on the real server they first landed on, so after a
//! scale-up the new real servers get nothing until clients reconnect.
//! This crate decides which of a service's connections to close, and
//! when, so that every real server gets back its weight's share — closing
//! only idle connections (the way an HTTP server closes an idle keep-alive
//! connection, which clients built for keep-alive retry on a fresh one),
//! oldest first, rate-limited and jittered, and never more than the skew
//! requires. The dataplanes report their connections and close what it
//! says; how they find idle connections and close them is theirs.
//!
//! This crate owns:
//! * [`Policy`] (`policy`): what a Service asks for through the
//!   [`ANNOTATION`] (`off`, `idle`, `idle,max-age=D`, with optional
//!   `grace=`, `tolerance=` and `rate=`) or the proxy's default, parsed
//!   with errors that name the part at fault;
//! * [`Rebalancer`] (`planner`): one per service, sans-IO in quinn-proto's
//!   manner: [`Rebalancer::poll_timeout`] says when to ask next,
//!   [`Rebalancer::handle_timeout`] takes the time and a snapshot of the
//!   service's connections ([`Conn`]) and returns a [`Plan`]: the
//!   connections to close now and the service's current [`skew`];
//! * [`Book`] (`book`): a dataplane's policies, rebalancers and counts of
//!   closed connections, per virtual service.

mod book;
mod planner;
mod policy;

pub use book::{Book, ServiceRebalance, ServiceState, Vip};
pub use planner::{Close, Conn, Plan, Reason, Rebalancer, skew};
pub use policy::{BadPolicy, Mode, Policy};

/// The Service annotation that sets a Service's policy.
pub const ANNOTATION: &str = "rvs.dev/rebalance";
