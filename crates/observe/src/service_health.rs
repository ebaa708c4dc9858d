//! Per-Service health check node port servers, as kube-proxy runs them for
//! Services with `externalTrafficPolicy: Local`: load balancers probe
//! `healthCheckNodePort` on every node and send traffic only to nodes that
//! answer 200, that is, nodes with a local endpoint and a healthy proxy.

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::sync::oneshot;

use crate::http::{Handler, Reply, bind, bind_exact, run_server};
use crate::{HealthState, ObserveError};

/// A Service's namespace and name.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ServiceName {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
}

impl ServiceName {
    /// A Service name.
    pub fn new(namespace: impl Into<String>, name: impl Into<String>) -> ServiceName {
        ServiceName {
            namespace: namespace.into(),
            name: name.into(),
        }
    }
}

impl fmt::Display for ServiceName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// What one Service's health check should serve.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ServiceHealth {
    /// `spec.healthCheckNodePort` (0 picks a free port; for tests).
    pub port: u16,
    /// Ready endpoints of the Service on this node.
    pub local_endpoints: usize,
}

#[derive(Debug)]
struct Instance {
    port: u16,
    local_endpoints: Arc<AtomicUsize>,
    addrs: Vec<SocketAddr>,
    // Dropping these closes the listeners and their connections.
    _stops: Vec<oneshot::Sender<()>>,
}

/// The health check servers of every `externalTrafficPolicy: Local`
/// Service with a `healthCheckNodePort`; made by
/// [`crate::Running::service_health`].
#[derive(Debug)]
pub struct ServiceHealthServer {
    runtime: tokio::runtime::Handle,
    addresses: Vec<IpAddr>,
    health: HealthState,
    services: BTreeMap<ServiceName, Instance>,
}

impl ServiceHealthServer {
    pub(crate) fn new(
        runtime: tokio::runtime::Handle,
        addresses: Vec<IpAddr>,
        health: HealthState,
    ) -> ServiceHealthServer {
        ServiceHealthServer {
            runtime,
            addresses,
            health,
            services: BTreeMap::new(),
        }
    }

    /// Makes `wanted` the served set: closes servers of Services no longer
    /// wanted or whose port changed, opens new ones, and updates every
    /// server's local endpoint count. A port that cannot be opened is
    /// reported and retried on the next call (kube-proxy records an event
    /// `FailedToStartServiceHealthcheck`); the others are still served.
    pub fn sync(&mut self, wanted: &BTreeMap<ServiceName, ServiceHealth>) -> Vec<ObserveError> {
        self.services.retain(|name, inst| {
            let keep = wanted.get(name).is_some_and(|w| w.port == inst.port);
            if !keep {
                tracing::info!(service = %name, port = inst.port, "closing health check");
            }
            keep
        });
        let mut errors = Vec::new();
        for (name, want) in wanted {
            if let Some(inst) = self.services.get(name) {
                inst.local_endpoints
                    .store(want.local_endpoints, Ordering::Relaxed);
                continue;
            }
            match self.open(name, want) {
                Ok(inst) => {
                    tracing::info!(service = %name, port = want.port, "opened health check");
                    self.services.insert(name.clone(), inst);
                }
                Err(e) => {
                    tracing::error!(service = %name, port = want.port, error = %e, "cannot open health check");
                    errors.push(e);
                }
            }
        }
        errors
    }

    fn open(&self, name: &ServiceName, want: &ServiceHealth) -> Result<Instance, ObserveError> {
        let what = format!("health check of {name}");
        // Bind all first, so a failure leaves nothing half open.
        let listeners = if self.addresses.is_empty() {
            vec![bind(
                SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), want.port),
                &what,
            )?]
        } else {
            self.addresses
                .iter()
                .map(|&ip| bind_exact(SocketAddr::new(ip, want.port), &what))
                .collect::<Result<Vec<_>, _>>()?
        };
        let local_endpoints = Arc::new(AtomicUsize::new(want.local_endpoints));
        let mut addrs = Vec::new();
        let mut stops = Vec::new();
        for listener in listeners {
            if let Ok(a) = listener.local_addr() {
                addrs.push(a);
            }
            let (tx, rx) = oneshot::channel();
            stops.push(tx);
            let handler = handler(
                name.clone(),
                Arc::clone(&local_endpoints),
                self.health.clone(),
            );
            self.runtime
                .spawn(run_server(listener, handler, rx, what.clone()));
        }
        Ok(Instance {
            port: want.port,
            local_endpoints,
            addrs,
            _stops: stops,
        })
    }

    /// The addresses a Service's health check listens on, if it is open.
    pub fn local_addrs(&self, name: &ServiceName) -> Option<&[SocketAddr]> {
        self.services.get(name).map(|i| i.addrs.as_slice())
    }

    /// The Services whose health checks are open.
    pub fn services(&self) -> impl Iterator<Item = &ServiceName> {
        self.services.keys()
    }
}

fn handler(name: ServiceName, local: Arc<AtomicUsize>, health: HealthState) -> Handler {
    Arc::new(move |_path| {
        let count = local.load(Ordering::Relaxed);
        let healthy = health.is_healthy();
        Reply {
            status: if count > 0 && healthy { 200 } else { 503 },
            content_type: "application/json",
            body: body(&name, count, healthy),
            endpoint_weight: Some(count),
        }
    })
}

/// kube-proxy's body, tab-indented as it writes it.
fn body(name: &ServiceName, count: usize, healthy: bool) -> String {
    let q = |s: &str| serde_json::to_string(s).unwrap_or_else(|_| "\"\"".to_owned());
    format!(
        "{{\n\t\"service\": {{\n\t\t\"namespace\": {},\n\t\t\"name\": {}\n\t}},\n\t\"localEndpoints\": {count},\n\t\"serviceProxyHealthy\": {healthy}\n}}",
        q(&name.namespace),
        q(&name.name)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_is_kube_proxys_json() {
        let b = body(&ServiceName::new("default", "web"), 2, true);
        assert_eq!(
            b,
            "{\n\t\"service\": {\n\t\t\"namespace\": \"default\",\n\t\t\"name\": \"web\"\n\t},\n\t\"localEndpoints\": 2,\n\t\"serviceProxyHealthy\": true\n}"
        );
        let v: serde_json::Value = serde_json::from_str(&b).unwrap();
        assert_eq!(v["service"]["name"], "web");
    }
}
