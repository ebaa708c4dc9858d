//! Observability for `rvs-proxy`, as kube-proxy offers it:
//!
//! * [`Metrics`]: kube-proxy's Prometheus metrics (same names, types,
//!   labels and buckets) plus rvs's own, in one registry.
//! * [`HealthState`]: kube-proxy's proxier health rules (a queued change
//!   not applied within the health timeout makes the proxy unhealthy; a
//!   Node being deleted makes `/healthz`, not `/livez`, fail).
//! * [`serve`]: the HTTP servers on the metrics address (`/metrics`) and
//!   the healthz address (`/healthz`, `/livez`), on a background thread so
//!   a synchronous sync loop can use them; it returns a [`Running`] handle.
//! * [`ServiceHealthServer`]: the per-Service `healthCheckNodePort`
//!   servers of `externalTrafficPolicy: Local` Services, opened and closed
//!   by [`ServiceHealthServer::sync`].

#![forbid(unsafe_code)]

mod gotime;
mod health;
mod http;
mod metrics;
mod service_health;

use std::net::SocketAddr;

pub use health::{HealthReply, HealthState, TO_BE_DELETED_TAINT};
pub use http::{Running, ServeOptions, serve};
pub use metrics::{IpFamily, Metrics, SyncKind};
pub use service_health::{ServiceHealth, ServiceHealthServer, ServiceName};

/// Why an observability server could not start.
#[derive(Debug, thiserror::Error)]
pub enum ObserveError {
    /// A listening socket could not be opened.
    #[error("listening on {addr} for {what}: {source}")]
    Listen {
        /// The address asked for.
        addr: SocketAddr,
        /// Which server (`metrics`, `healthz`, a Service's health check).
        what: String,
        /// The operating system's error.
        source: std::io::Error,
    },
    /// The background runtime could not start.
    #[error("starting the observability runtime: {0}")]
    Runtime(std::io::Error),
}
