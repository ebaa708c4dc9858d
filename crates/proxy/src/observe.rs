//! The sync loop's observers: kube-proxy's metrics and health servers
//! ([`rvs_observe`]) fed at the points kube-proxy feeds them (a change
//! queued, a sync finished), the per-Service health check node ports of
//! `externalTrafficPolicy: Local` Services, and the per-virtual-service
//! counters read from the dataplane when the schedule says so.
//! [`Observer`] is the loop's [`SyncObserver`].

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use rvs_model::admin::Admin;
use rvs_observe::{
    HealthState, IpFamily, Metrics, ObserveError, Running, ServeOptions, ServiceHealth,
    ServiceHealthServer, ServiceName,
};

use crate::ClusterState;
use crate::ProxyConfig;
use crate::cluster::{EndpointInfo, ObjectName, SliceInfo};
use crate::ipsets;
use crate::run::{NodeReport, SyncObserver};
use crate::schedule::SyncKind;
use crate::sync::SyncReport;

/// What the observers serve, and for which families.
#[derive(Clone, Debug)]
pub struct ObserveOptions {
    /// Where the servers listen.
    pub serve: ServeOptions,
    /// `--ipvs-sync-period`: the health timeout is twice that, as
    /// kube-proxy's.
    pub sync_period: Duration,
    /// The IP families the node runs.
    pub families: Vec<ipsets::IpFamily>,
    /// Whether the source watches this node's Node object: then, as in
    /// kube-proxy, `/healthz` fails (`nodeEligible: false`) until it has
    /// been seen. A file source without a Node counts as eligible.
    pub node_watched: bool,
}

/// The metrics and health servers and what feeds them.
#[derive(Debug)]
pub struct Observer {
    metrics: Metrics,
    health: HealthState,
    running: Running,
    /// One health check server per family, as kube-proxy's proxier of each
    /// family runs its own; `None` until the first sync tells the
    /// addresses (`--nodeport-addresses`, resolved once as kube-proxy
    /// resolves it at start).
    health_checks: Option<Vec<(IpFamily, ServiceHealthServer)>>,
    node_watched: bool,
    rebalance: Option<Box<dyn RebalanceReport>>,
}

/// Where the rebalancing metrics come from: the dataplane that closes
/// connections to rebalance, read when the counters are.
pub trait RebalanceReport: Send + std::fmt::Debug {
    /// Every rebalanced virtual service's skew and closed connections.
    fn statuses(&self) -> Vec<rvs_observe::RebalanceStatus>;
}

impl Observer {
    /// Starts the servers on `runtime`; a busy address is retried in the
    /// background unless [`ServeOptions::bind_hard_fail`].
    pub fn start(
        options: &ObserveOptions,
        runtime: &tokio::runtime::Handle,
    ) -> Result<Observer, ObserveError> {
        let families: Vec<IpFamily> = options
            .families
            .iter()
            .map(|f| observe_family(*f))
            .collect();
        let metrics = Metrics::new(&families);
        // kube-proxy's health timeout: twice the sync period.
        let health = HealthState::new(2 * options.sync_period, &families);
        let running = rvs_observe::serve(&options.serve, &metrics, &health, runtime)?;
        tracing::info!(
            metrics = ?running.metrics_addr(),
            healthz = ?running.healthz_addr(),
            "metrics and health servers started"
        );
        if options.node_watched {
            // Not eligible until the Node has been seen.
            health.set_node_eligible(false);
        }
        health.updated();
        metrics.sync_loop_started();
        Ok(Observer {
            metrics,
            health,
            running,
            health_checks: None,
            node_watched: options.node_watched,
            rebalance: None,
        })
    }

    /// Reads `report` with the dataplane's counters, into
    /// `rvs_rebalance_closed_connections_total` and `rvs_rebalance_skew`.
    pub fn read_rebalancing(&mut self, report: Box<dyn RebalanceReport>) {
        self.rebalance = Some(report);
    }

    /// Stops the servers.
    pub fn stop(self) {
        drop(self.health_checks);
        self.running.stop();
    }
}

impl SyncObserver for Observer {
    fn queued(&mut self) {
        self.health.queued();
        self.metrics.sync_queued();
    }

    fn synced(
        &mut self,
        kind: SyncKind,
        elapsed: Duration,
        report: Option<&SyncReport>,
        node: &NodeReport,
        view: Option<(&ClusterState, &ProxyConfig)>,
    ) {
        let kind = match kind {
            SyncKind::Full => rvs_observe::SyncKind::Full,
            SyncKind::Partial => rvs_observe::SyncKind::Partial,
        };
        // rvs's own result label: any failure at all.
        let ok = report.is_some_and(|r| r.failed + r.address_failures == 0) && node.failures == 0;
        // kube-proxy's health: a sync that ran counts as an update of
        // each family whose rules (and sets) were written; a refused
        // virtual server, real server, address or set member is only
        // logged ('Failed to sync service', 'Error adding entry to
        // ipset'), so one missing scheduler module does not fail /livez
        // (and restart the proxy) forever.
        if report.is_some_and(|r| !r.device_failed) {
            let families: Vec<IpFamily> = self
                .health
                .families()
                .iter()
                .copied()
                .filter(|f| {
                    !node
                        .unsynced_families
                        .iter()
                        .any(|u| observe_family(*u) == *f)
                })
                .collect();
            self.health.updated_families(&families);
        }
        if let Some(report) = report {
            if let Some(changed) = &report.changed {
                // A changed Service counts once, whether its Service or
                // its EndpointSlices changed.
                self.metrics
                    .endpoint_changes(u64::try_from(changed.len()).unwrap_or(u64::MAX), 0);
            }
            self.metrics.changes_taken();
            for k in &report.by_kind {
                if k.applied > 0 {
                    self.metrics
                        .reconciler_ops(k.kind, u64::try_from(k.applied).unwrap_or(u64::MAX));
                }
                if k.failed > 0 {
                    self.metrics
                        .dataplane_errors(k.kind, u64::try_from(k.failed).unwrap_or(u64::MAX));
                }
            }
        }
        self.metrics.sync_finished(kind, elapsed, ok);
        for family in &node.restore_failed {
            self.metrics
                .iptables_restore_failed(observe_family(*family));
        }
        for c in &node.conntrack_cleanups {
            self.metrics.conntrack_reconciled(
                observe_family(c.family),
                c.duration,
                u64::try_from(c.deleted).unwrap_or(u64::MAX),
            );
        }
        if let Some((cluster, config)) = view {
            // kube-proxy's NodeEligible: a Node going away, or (with a
            // watched Node) not seen yet, fails /healthz (not /livez).
            match &cluster.node {
                Some(node) => self.health.set_node_eligible(!node.deleting),
                None if self.node_watched => self.health.set_node_eligible(false),
                None => {}
            }
            let running = &self.running;
            let health_checks = self.health_checks.get_or_insert_with(|| {
                self.metrics
                    .families()
                    .iter()
                    .filter_map(|&f| {
                        let v6 = f == IpFamily::V6;
                        let ips = crate::config::health_check_ips(cluster.node.as_ref(), config, v6);
                        tracing::debug!(family = ?f, addresses = ?ips, "health check node port addresses");
                        // No host address in the family's CIDRs: no
                        // listener of the family (kube-proxy listens on
                        // none).
                        (!ips.is_empty()).then(|| (f, running.service_health(ips)))
                    })
                    .collect()
            });
            local_policies(&self.metrics, health_checks, cluster, &config.node_name);
        }
    }

    fn read_counters(&mut self, admin: &mut dyn Admin) {
        match admin.services() {
            Ok(services) => self.metrics.virtual_services(&services),
            Err(e) => tracing::debug!(error = %e, "reading virtual service counters"),
        }
        if let Some(report) = &self.rebalance {
            self.metrics.rebalancing(report.statuses());
        }
    }
}

/// The observers' name of a family.
fn observe_family(family: ipsets::IpFamily) -> IpFamily {
    match family {
        ipsets::IpFamily::V4 => IpFamily::V4,
        ipsets::IpFamily::V6 => IpFamily::V6,
    }
}

/// Health check node ports and the no-local-endpoints gauge, from the
/// Services with a `Local` traffic policy (one pass over their
/// EndpointSlices; nothing when there are none).
fn local_policies(
    metrics: &Metrics,
    health_checks: &mut [(IpFamily, ServiceHealthServer)],
    cluster: &ClusterState,
    node: &str,
) {
    let local: BTreeSet<&ObjectName> = cluster
        .services
        .values()
        .filter(|s| s.external_local || s.internal_local || s.health_check_node_port.is_some())
        .map(|s| &s.name)
        .collect();
    let mut slices: BTreeMap<&ObjectName, Vec<&SliceInfo>> = BTreeMap::new();
    if !local.is_empty() {
        for slice in cluster.slices.values() {
            if local.contains(&slice.service) {
                slices.entry(&slice.service).or_default().push(slice);
            }
        }
    }
    // Each family's proxier serves the health checks of the Services of
    // its family, counting the endpoints of its family.
    for (family, server) in health_checks.iter_mut() {
        let v6 = *family == IpFamily::V6;
        let mut wanted = BTreeMap::new();
        for name in &local {
            let Some(service) = cluster.services.get(*name) else {
                continue;
            };
            let Some(port) = service.health_check_node_port else {
                continue;
            };
            if !service.cluster_ips.iter().any(|ip| ip.is_ipv6() == v6) {
                continue;
            }
            let local_endpoints =
                local_ready_endpoints(slices.get(name).into_iter().flatten().copied(), node, v6);
            wanted.insert(
                ServiceName::new(name.namespace.clone(), name.name.clone()),
                ServiceHealth {
                    port,
                    local_endpoints,
                },
            );
        }
        for error in server.sync(&wanted) {
            tracing::warn!(%error, "health check node port not served; retried next sync");
        }
    }
    let (internal, external) = no_local_endpoints(cluster, &slices, node);
    for &f in metrics.families() {
        let count =
            |map: &BTreeMap<IpFamily, BTreeSet<&ObjectName>>| map.get(&f).map_or(0, BTreeSet::len);
        metrics.no_local_endpoints(f, count(&internal), count(&external));
    }
}

/// Service names per IP family.
type ServicesByFamily<'a> = BTreeMap<IpFamily, BTreeSet<&'a ObjectName>>;

/// Services per family counted by kube-proxy's
/// A Service's ready endpoints on `node`, as its health check node port
/// reports them: distinct addresses, as kube-proxy counts them (one pod
/// serving 80 and 443 is one endpoint, not two). An endpoint counts only
/// in a slice with ports, as kube-proxy's map is keyed by port.
fn local_ready_endpoints<'a>(
    slices: impl IntoIterator<Item = &'a SliceInfo>,
    node: &str,
    v6: bool,
) -> usize {
    let mut ready = BTreeSet::new();
    for slice in slices {
        if slice.ports.is_empty() {
            continue;
        }
        for ep in &slice.endpoints {
            if ep.ready && ep.addr.is_ipv6() == v6 && ep.node_name.as_deref() == Some(node) {
                ready.insert(ep.addr);
            }
        }
    }
    ready.len()
}

/// `sync_proxy_rules_no_local_endpoints_total` (`internal`, `external`):
/// its IPVS `syncEndpoint`, run for each virtual server of a Service port
/// with `onlyNodeLocalEndpoints` set by the policy of the address
/// (`internalTrafficPolicy` on the cluster IP, `externalTrafficPolicy`
/// on external IPs, load-balancer IPs and node ports), puts the Service
/// in `serviceNoLocalEndpointsInternal` / `…External` when the port has
/// no local endpoint but has some endpoint at all (`hasAnyEndpoints` of
/// `CategorizeEndpoints`: a ready one, or a serving terminating one),
/// according to its internal and external policy. Node ports are taken
/// to exist in every family the Service has.
fn no_local_endpoints<'a>(
    cluster: &'a ClusterState,
    slices: &BTreeMap<&ObjectName, Vec<&SliceInfo>>,
    node: &str,
) -> (ServicesByFamily<'a>, ServicesByFamily<'a>) {
    let (mut internal, mut external) = (ServicesByFamily::new(), ServicesByFamily::new());
    for svc in cluster.services.values() {
        // kube-proxy's ExternalPolicyLocal: the Local policy on a Service
        // reachable other than by its cluster IP.
        let externally_accessible = svc.ports.iter().any(|p| p.node_port.is_some())
            || !svc.external_ips.is_empty()
            || !svc.load_balancer_ips.is_empty()
            || svc.health_check_node_port.is_some();
        let external_local = svc.external_local && externally_accessible;
        if !svc.internal_local && !external_local {
            continue;
        }
        let svc_slices = slices.get(&svc.name).map(Vec::as_slice).unwrap_or_default();
        for cluster_ip in &svc.cluster_ips {
            let ipv6 = cluster_ip.is_ipv6();
            let family = if ipv6 { IpFamily::V6 } else { IpFamily::V4 };
            let external_addresses = svc
                .external_ips
                .iter()
                .chain(&svc.load_balancer_ips)
                .any(|ip| ip.is_ipv6() == ipv6);
            for port in &svc.ports {
                // A virtual server whose endpoints are the local ones.
                let only_local_server = svc.internal_local
                    || (external_local && (port.node_port.is_some() || external_addresses));
                if !only_local_server {
                    continue;
                }
                let endpoints: Vec<_> = crate::desired::endpoints_for(svc_slices, port)
                    .into_iter()
                    .filter(|(ep, _)| ep.addr.is_ipv6() == ipv6)
                    .collect();
                let usable = |ep: &EndpointInfo| ep.ready || (ep.serving && ep.terminating);
                let has_any = endpoints.iter().any(|(ep, _)| usable(ep));
                let has_local = endpoints
                    .iter()
                    .any(|(ep, _)| usable(ep) && ep.node_name.as_deref() == Some(node));
                if has_local || !has_any {
                    continue;
                }
                if svc.internal_local {
                    internal.entry(family).or_default().insert(&svc.name);
                }
                if external_local {
                    external.entry(family).or_default().insert(&svc.name);
                }
            }
        }
    }
    (internal, external)
}

#[cfg(test)]
mod tests {
    use std::time::SystemTime;

    use rvs_model::Protocol;

    use super::*;
    use crate::cluster::{NodeInfo, ServiceInfo, ServicePort, SlicePort};

    fn no_local_cluster() -> ClusterState {
        let mut c = ClusterState {
            node: Some(NodeInfo {
                name: "node-a".into(),
                ..NodeInfo::default()
            }),
            ..ClusterState::default()
        };
        let port = |name: &str, node_port: Option<u16>| ServicePort {
            name: name.into(),
            protocol: Protocol::Tcp,
            port: 80,
            node_port,
        };
        let ep = |addr: &str, node: &str, ready: bool, terminating: bool| EndpointInfo {
            ready,
            serving: ready || terminating,
            terminating,
            node_name: Some(node.into()),
            ..EndpointInfo::ready(addr.parse().unwrap())
        };
        let mut add = |name: &str,
                       ips: &[&str],
                       ports: Vec<ServicePort>,
                       internal: bool,
                       external: bool,
                       eps: Vec<EndpointInfo>| {
            let n = ObjectName::new("default", name);
            let mut svc = ServiceInfo::new(
                n.clone(),
                ips.iter().map(|ip| ip.parse().unwrap()).collect(),
                ports.clone(),
            );
            svc.internal_local = internal;
            svc.external_local = external;
            c.services.insert(n.clone(), svc);
            c.slices.insert(
                ObjectName::new("default", format!("{name}-1")),
                SliceInfo {
                    service: n,
                    ports: ports
                        .iter()
                        .map(|p| SlicePort {
                            name: p.name.clone(),
                            protocol: p.protocol,
                            port: 8080,
                        })
                        .collect(),
                    endpoints: eps,
                },
            );
        };
        let remote = || vec![ep("10.244.2.1", "node-b", true, false)];
        // Two ports without local endpoints: one Service.
        add(
            "two-ports",
            &["10.96.0.1"],
            vec![port("a", None), port("b", None)],
            true,
            false,
            remote(),
        );
        // No endpoints at all: not counted (hasAnyEndpoints).
        add(
            "none",
            &["10.96.0.2"],
            vec![port("", None)],
            true,
            false,
            vec![],
        );
        // A local endpoint.
        add(
            "local",
            &["10.96.0.3"],
            vec![port("", None)],
            true,
            false,
            vec![ep("10.244.1.1", "node-a", true, false)],
        );
        // External policy with a node port.
        add(
            "external",
            &["10.96.0.4"],
            vec![port("", Some(30004))],
            false,
            true,
            remote(),
        );
        // External policy on a Service only reachable by its cluster IP.
        add(
            "unreachable",
            &["10.96.0.5"],
            vec![port("", None)],
            false,
            true,
            remote(),
        );
        // Only a serving terminating endpoint elsewhere counts as any.
        add(
            "terminating",
            &["10.96.0.6"],
            vec![port("", None)],
            true,
            false,
            vec![ep("10.244.2.6", "node-b", false, true)],
        );
        // Dual-stack with IPv4 endpoints only.
        add(
            "dual",
            &["10.96.0.7", "fd00::7"],
            vec![port("", None)],
            true,
            false,
            remote(),
        );
        // Both policies.
        add(
            "both",
            &["10.96.0.8"],
            vec![port("", Some(30008))],
            true,
            true,
            remote(),
        );
        c
    }

    /// Found by the conformance harness: one local pod behind three ports
    /// is one endpoint for kube-proxy's health check node port, not three.
    #[test]
    fn health_check_counts_local_ready_addresses_not_ports() {
        let c = no_local_cluster();
        let mut slice = c.slices.values().next().unwrap().clone();
        let port = |p: u16| SlicePort {
            name: format!("p{p}"),
            protocol: Protocol::Tcp,
            port: p,
        };
        slice.ports = vec![port(80), port(443), port(8080)];
        let ep = |addr: &str, node: &str, ready: bool| EndpointInfo {
            ready,
            node_name: Some(node.into()),
            ..EndpointInfo::ready(addr.parse().unwrap())
        };
        slice.endpoints = vec![
            ep("10.244.0.1", "node-a", true),
            ep("10.244.0.2", "node-a", false),
            ep("10.244.0.3", "node-b", true),
        ];
        let mut again = slice.clone();
        again.endpoints = vec![
            ep("10.244.0.1", "node-a", true),
            ep("10.244.0.4", "node-a", true),
        ];
        assert_eq!(local_ready_endpoints([&slice], "node-a", false), 1);
        assert_eq!(local_ready_endpoints([&slice, &again], "node-a", false), 2);
        assert_eq!(local_ready_endpoints([&slice], "node-c", false), 0);
        // Each family's health check counts the endpoints of its family.
        assert_eq!(local_ready_endpoints([&slice], "node-a", true), 0);
        let mut portless = slice.clone();
        portless.ports.clear();
        assert_eq!(local_ready_endpoints([&portless], "node-a", false), 0);
    }

    /// kube-proxy counts Services (not ports), only those with some
    /// endpoint, per family, by the policy of each virtual server.
    #[test]
    fn no_local_endpoints_counts_services_as_kube_proxy() {
        let c = no_local_cluster();
        let mut slices: BTreeMap<&ObjectName, Vec<&SliceInfo>> = BTreeMap::new();
        for slice in c.slices.values() {
            slices.entry(&slice.service).or_default().push(slice);
        }
        let (internal, external) = no_local_endpoints(&c, &slices, "node-a");
        let names = |m: &ServicesByFamily<'_>, f| -> Vec<String> {
            m.get(&f)
                .into_iter()
                .flatten()
                .map(|n| n.name.clone())
                .collect()
        };
        assert_eq!(
            names(&internal, IpFamily::V4),
            ["both", "dual", "terminating", "two-ports"]
        );
        assert!(names(&internal, IpFamily::V6).is_empty());
        assert_eq!(names(&external, IpFamily::V4), ["both", "external"]);
    }

    fn observer(runtime: &tokio::runtime::Runtime) -> Observer {
        let options = ObserveOptions {
            serve: ServeOptions {
                metrics_addr: None,
                healthz_addr: None,
                ..ServeOptions::default()
            },
            sync_period: Duration::from_secs(30),
            families: vec![ipsets::IpFamily::V4, ipsets::IpFamily::V6],
            node_watched: false,
        };
        Observer::start(&options, runtime.handle()).unwrap()
    }

    fn late(o: &Observer) {
        o.health
            .queued_at(SystemTime::now() - Duration::from_secs(600));
    }

    fn livez(o: &Observer) -> (u16, String) {
        let r = o.health.livez_at(SystemTime::now());
        (r.status, r.body)
    }

    /// kube-proxy calls `Updated` after every sync that ran and only logs
    /// a refused virtual server, so a missing scheduler module does not
    /// make /livez restart the proxy forever; a family whose rules could
    /// not be written is not updated.
    #[test]
    fn refused_operations_do_not_keep_the_proxy_unhealthy() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let mut o = observer(&runtime);
        let refused = SyncReport {
            failed: 3,
            address_failures: 1,
            ..SyncReport::default()
        };
        late(&o);
        assert_eq!(livez(&o).0, 503);
        o.synced(
            SyncKind::Full,
            Duration::ZERO,
            Some(&refused),
            &NodeReport::default(),
            None,
        );
        assert_eq!(livez(&o).0, 200, "{}", livez(&o).1);

        // IPv6's iptables-restore failed: IPv4 is updated, IPv6 is not.
        late(&o);
        let node = NodeReport {
            failures: 1,
            unsynced_families: vec![ipsets::IpFamily::V6],
            restore_failed: vec![ipsets::IpFamily::V6],
            ..NodeReport::default()
        };
        o.synced(SyncKind::Full, Duration::ZERO, Some(&refused), &node, None);
        let (status, body) = livez(&o);
        assert_eq!(status, 503);
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["status"]["IPv4"]["healthy"], true, "{body}");
        assert_eq!(v["status"]["IPv6"]["healthy"], false, "{body}");

        // A sync that could not run, or could not create kube-ipvs0,
        // updates nothing.
        o.synced(
            SyncKind::Full,
            Duration::ZERO,
            None,
            &NodeReport::default(),
            None,
        );
        assert_eq!(livez(&o).0, 503);
        let device = SyncReport {
            device_failed: true,
            ..SyncReport::default()
        };
        o.synced(
            SyncKind::Full,
            Duration::ZERO,
            Some(&device),
            &NodeReport::default(),
            None,
        );
        assert_eq!(livez(&o).0, 503);
        o.synced(
            SyncKind::Partial,
            Duration::ZERO,
            Some(&SyncReport::default()),
            &NodeReport::default(),
            None,
        );
        assert_eq!(livez(&o).0, 200);
        o.stop();
    }

    /// A conntrack cleanup the node side ran shows as kube-proxy's
    /// conntrack reconciler metrics.
    #[test]
    fn conntrack_cleanups_feed_the_reconciler_metrics() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let mut o = observer(&runtime);
        assert!(
            !o.metrics
                .encode()
                .contains("kubeproxy_conntrack_reconciler_deleted_entries_total")
        );
        let node = NodeReport {
            conntrack_cleanups: vec![crate::run::ConntrackCleanup {
                family: ipsets::IpFamily::V4,
                duration: Duration::from_millis(5),
                deleted: 2,
            }],
            ..NodeReport::default()
        };
        o.synced(
            SyncKind::Partial,
            Duration::ZERO,
            Some(&SyncReport::default()),
            &node,
            None,
        );
        let text = o.metrics.encode();
        assert!(
            text.contains(
                "kubeproxy_conntrack_reconciler_deleted_entries_total{ip_family=\"IPv4\"} 2\n"
            ),
            "{text}"
        );
        assert!(
            text.contains(
                "kubeproxy_conntrack_reconciler_sync_duration_seconds_count{ip_family=\"IPv4\"} 1\n"
            ),
            "{text}"
        );
        o.stop();
    }
}
