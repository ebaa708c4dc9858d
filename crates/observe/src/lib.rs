//! Observability for `rvs-proxy`, as kube-proxy offers it:
//!
//! * [`Metrics`]: kube-proxy's Prometheus metrics (same names, types,
//!   labels and buckets, the standard `process_*` ones included) plus
//!   rvs's own, in one registry.
//! * [`HealthState`]: kube-proxy's proxier health rules (a queued change
//!   not applied within the health timeout makes the proxy unhealthy; a
//!   Node being deleted makes `/healthz`, not `/livez`, fail).
//! * [`serve`]: the HTTP servers on the metrics address (`/metrics`) and
//!   the healthz address (`/healthz`, `/livez`), on a background thread so
//!   a synchronous sync loop can use them; it returns a [`Running`] handle.
//! * [`ServiceHealthServer`]: the per-Service `healthCheckNodePort`
//!   servers of `externalTrafficPolicy: Local` Services, opened and closed
//!   by [`ServiceHealthServer::sync`].
//!
//! How a sync loop drives them (kube-proxy calls the same points
//! `QueuedUpdate`, `Updated` and `SyncNode`):
//!
//! ```no_run
//! use std::collections::BTreeMap;
//! use std::time::{Duration, Instant};
//! use rvs_observe::*;
//!
//! # fn main() -> Result<(), ObserveError> {
//! let families = [IpFamily::V4, IpFamily::V6];
//! let sync_period = Duration::from_secs(30);
//! let metrics = Metrics::new(&families);
//! // kube-proxy's health timeout is twice the sync period.
//! let health = HealthState::new(2 * sync_period, &families);
//! let runtime = tokio::runtime::Runtime::new().expect("a runtime");
//! let running = serve(&ServeOptions::default(), &metrics, &health, runtime.handle())?;
//! // Empty: listen on every address (no --nodeport-addresses).
//! let mut health_checks = running.service_health(Vec::new());
//! health.updated(); // the sync loop starts
//! metrics.sync_loop_started();
//!
//! // A Service or EndpointSlice event arrived:
//! health.queued();
//! metrics.sync_queued();
//! metrics.endpoint_changes(1, 1);
//!
//! // A sync:
//! let start = Instant::now();
//! metrics.changes_taken();
//! let ok = true; // … program the dataplane …
//! metrics.sync_finished(SyncKind::Partial, start.elapsed(), ok);
//! if ok {
//!     health.updated();
//! }
//! let mut wanted = BTreeMap::new();
//! wanted.insert(
//!     ServiceName::new("default", "web"),
//!     ServiceHealth { port: 30_123, local_endpoints: 2 },
//! );
//! for error in health_checks.sync(&wanted) {
//!     tracing::warn!(%error, "health check not served");
//! }
//!
//! // The Node got a deletion timestamp:
//! health.set_node_eligible(HealthState::node_eligible_from(true, []));
//! running.stop();
//! # Ok(())
//! # }
//! ```

mod gotime;
mod health;
mod http;
mod metrics;
mod process;
mod service_health;

use std::net::SocketAddr;

pub use health::{HealthReply, HealthState, TO_BE_DELETED_TAINT};
pub use http::{BadBindAddress, Running, ServeOptions, parse_bind_address, serve};
pub use metrics::{IpFamily, Metrics, RebalanceStatus, SyncKind};
pub use service_health::{ServiceHealth, ServiceHealthServer, ServiceName};

/// Why an observability server could not start.
#[derive(Debug, thiserror::Error)]
pub enum ObserveError {
    /// A listening socket could not be opened.
    #[error("listening on {addr} for {what}: {error}")]
    Listen {
        /// The address asked for.
        addr: SocketAddr,
        /// Which server (`metrics`, `healthz`, a Service's health check).
        what: String,
        /// The operating system's error (in the message, so not a
        /// `source()` as well).
        error: std::io::Error,
    },
}
