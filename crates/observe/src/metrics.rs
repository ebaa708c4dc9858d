//! kube-proxy's Prometheus metrics (names, types, labels and buckets as
//! kube-proxy registers them) and rvs's own, in one registry behind a
//! cheap-to-clone [`Metrics`] handle.
//!
//! Counters are registered without their `_total` suffix: the OpenMetrics
//! encoder appends it, so the scraped names are kube-proxy's.

use std::fmt::Write as _;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use rvs_model::admin::OpKind;
use rvs_model::{ServiceKey, ServiceStatus};

/// An IP family, as kube-proxy's `ip_family` label spells it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum IpFamily {
    /// `IPv4`.
    V4,
    /// `IPv6`.
    V6,
}

impl IpFamily {
    /// The label value (`IPv4`, `IPv6`; Kubernetes' `v1.IPFamily`).
    pub fn as_str(self) -> &'static str {
        match self {
            IpFamily::V4 => "IPv4",
            IpFamily::V6 => "IPv6",
        }
    }
}

/// Whether a sync re-read the whole dataplane or only applied changes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SyncKind {
    /// A full sync (start, `--ipvs-sync-period`, retries).
    Full,
    /// A partial sync of what changed since the last one.
    Partial,
}

type FamilyLabel = [(&'static str, &'static str); 1];
type PolicyLabels = [(&'static str, &'static str); 2];
type HistogramFamily = Family<FamilyLabel, Histogram, fn() -> Histogram>;
type F64Gauge = Gauge<f64, AtomicU64>;

/// kube-proxy's `sync_proxy_rules_duration_seconds` buckets:
/// 1 ms doubling 15 times (to about 16 s).
fn sync_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 2.0, 15))
}

/// kube-proxy's `network_programming_duration_seconds` buckets: 0, 0.25 s,
/// 0.5 s, every second to 59 s, every 5 s to 115 s, every 30 s to 5 min.
fn programming_histogram() -> Histogram {
    Histogram::new(network_programming_buckets())
}

pub(crate) fn network_programming_buckets() -> Vec<f64> {
    let mut b = vec![0.0, 0.25, 0.5];
    b.extend((1..=59).map(f64::from));
    b.extend((0..12).map(|i| 60.0 + 5.0 * f64::from(i)));
    b.extend((0..7).map(|i| 120.0 + 30.0 * f64::from(i)));
    b
}

/// Counters of one virtual service, as the dataplane last reported them.
#[derive(Clone, Debug)]
struct ServiceCounters {
    protocol: String,
    address: String,
    stats: rvs_model::Stats,
}

/// The last snapshot a collector encodes, replaced whole by the reader.
#[derive(Debug)]
struct Snapshot<T>(Mutex<Vec<T>>);

impl<T> Default for Snapshot<T> {
    fn default() -> Self {
        Snapshot(Mutex::new(Vec::new()))
    }
}

impl<T: Clone> Snapshot<T> {
    fn get(&self) -> Vec<T> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn set(&self, items: Vec<T>) {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner) = items;
    }
}

/// Encodes the per-virtual-service counters from the last snapshot.
#[derive(Debug, Default)]
struct VirtualServiceCollector {
    snapshot: Snapshot<ServiceCounters>,
}

impl Collector for VirtualServiceCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let snapshot = self.snapshot.get();
        type Pick = fn(&rvs_model::Stats) -> u64;
        let series: [(&str, &str, Pick); 5] = [
            (
                "rvs_virtual_service_connections",
                "Connections scheduled by a virtual service",
                |s| s.conns,
            ),
            (
                "rvs_virtual_service_in_packets",
                "Packets from clients to a virtual service",
                |s| s.inpkts,
            ),
            (
                "rvs_virtual_service_out_packets",
                "Packets from a virtual service's real servers to clients",
                |s| s.outpkts,
            ),
            (
                "rvs_virtual_service_in_bytes",
                "Bytes from clients to a virtual service",
                |s| s.inbytes,
            ),
            (
                "rvs_virtual_service_out_bytes",
                "Bytes from a virtual service's real servers to clients",
                |s| s.outbytes,
            ),
        ];
        for (name, help, pick) in series {
            let probe = ConstCounter::new(0u64);
            let mut family = encoder.encode_descriptor(name, help, None, probe.metric_type())?;
            for s in &snapshot {
                let labels = [
                    ("protocol", s.protocol.as_str()),
                    ("address", s.address.as_str()),
                ];
                ConstCounter::new(pick(&s.stats)).encode(family.encode_family(&labels)?)?;
            }
        }
        Ok(())
    }
}

pub use rvs_model::admin::RebalanceStatus;

/// Encodes the rebalancing series from the last snapshot.
#[derive(Debug, Default)]
struct RebalanceCollector {
    snapshot: Snapshot<RebalanceStatus>,
}

impl Collector for RebalanceCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let snapshot = self.snapshot.get();
        let probe = ConstCounter::new(0u64);
        let mut family = encoder.encode_descriptor(
            "rvs_rebalance_closed_connections",
            "Idle connections closed to rebalance a virtual service, by real server",
            None,
            probe.metric_type(),
        )?;
        for s in &snapshot {
            let (protocol, address) = service_labels(&s.service);
            for (dest, closed) in &s.closed {
                let dest = dest.to_string();
                let labels = [
                    ("protocol", protocol.as_str()),
                    ("address", address.as_str()),
                    ("real_server", dest.as_str()),
                ];
                ConstCounter::new(*closed).encode(family.encode_family(&labels)?)?;
            }
        }
        let probe = ConstGauge::new(0.0f64);
        let mut family = encoder.encode_descriptor(
            "rvs_rebalance_skew",
            "How far a rebalanced virtual service's most loaded real server is over its share of the connections (0: even)",
            None,
            probe.metric_type(),
        )?;
        for s in &snapshot {
            let (protocol, address) = service_labels(&s.service);
            let labels = [
                ("protocol", protocol.as_str()),
                ("address", address.as_str()),
            ];
            ConstGauge::new(s.skew).encode(family.encode_family(&labels)?)?;
        }
        Ok(())
    }
}

/// A virtual service's `protocol` and `address` labels.
fn service_labels(key: &ServiceKey) -> (String, String) {
    match *key {
        ServiceKey::Addr { protocol, addr } => (protocol.to_string(), addr.to_string()),
        ServiceKey::Fwmark { mark, ipv6 } => (
            "FWM".to_owned(),
            format!("{mark}{}", if ipv6 { "/IPv6" } else { "" }),
        ),
    }
}

struct Inner {
    registry: Registry,
    families: Vec<IpFamily>,
    sync_duration: HistogramFamily,
    sync_full_duration: HistogramFamily,
    sync_partial_duration: HistogramFamily,
    last_timestamp: Family<FamilyLabel, F64Gauge>,
    last_queued_timestamp: Family<FamilyLabel, F64Gauge>,
    network_programming: HistogramFamily,
    endpoint_changes_total: Counter,
    endpoint_changes_pending: Gauge,
    service_changes_total: Counter,
    service_changes_pending: Gauge,
    iptables_restore_failures: Family<FamilyLabel, Counter>,
    conntrack_reconciler_duration: HistogramFamily,
    conntrack_reconciler_deleted: Family<FamilyLabel, Counter>,
    no_local_endpoints: Family<PolicyLabels, Gauge>,
    healthz_total: Family<[(&'static str, &'static str); 1], Counter>,
    livez_total: Family<[(&'static str, &'static str); 1], Counter>,
    syncs: Family<PolicyLabels, Counter>,
    reconciler_ops: Family<[(&'static str, &'static str); 1], Counter>,
    dataplane_errors: Family<[(&'static str, &'static str); 1], Counter>,
    ipset_failures: Counter,
    virtual_services: Arc<VirtualServiceCollector>,
    rebalance: Arc<RebalanceCollector>,
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics")
            .field("families", &self.families)
            .finish_non_exhaustive()
    }
}

/// The metrics registry and every metric in it; clones share them.
///
/// Each kube-proxy metric with an `ip_family` label is recorded for every
/// family given to [`Metrics::new`]: one rvs-proxy sync programs both
/// families, where kube-proxy runs a proxier per family.
#[derive(Clone, Debug)]
pub struct Metrics {
    inner: Arc<Inner>,
}

fn family_label(f: IpFamily) -> FamilyLabel {
    [("ip_family", f.as_str())]
}

fn seconds_since_epoch(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64()
}

fn op_kind_label(kind: OpKind) -> &'static str {
    match kind {
        OpKind::AddService => "add_service",
        OpKind::EditService => "edit_service",
        OpKind::DeleteService => "delete_service",
        OpKind::Flush => "flush",
        OpKind::AddDestination => "add_destination",
        OpKind::EditDestination => "edit_destination",
        OpKind::DeleteDestination => "delete_destination",
        OpKind::Zero => "zero",
        OpKind::SetTimeouts => "set_timeouts",
        OpKind::StartDaemon => "start_daemon",
        OpKind::StopDaemon => "stop_daemon",
        OpKind::GetInfo => "get_info",
        OpKind::GetServices => "get_services",
        OpKind::GetDestinations => "get_destinations",
        OpKind::GetTimeouts => "get_timeouts",
        OpKind::GetDaemons => "get_daemons",
        OpKind::GetConnections => "get_connections",
    }
}

impl Metrics {
    /// A registry with every metric registered, labelled for `families`
    /// (the families this node proxies; both on a dual-stack node).
    pub fn new(families: &[IpFamily]) -> Metrics {
        let mut registry = Registry::default();
        let hist = || HistogramFamily::new_with_constructor(sync_histogram as fn() -> Histogram);
        let inner = Inner {
            families: families.to_vec(),
            sync_duration: hist(),
            sync_full_duration: hist(),
            sync_partial_duration: hist(),
            last_timestamp: Family::default(),
            last_queued_timestamp: Family::default(),
            network_programming: HistogramFamily::new_with_constructor(
                programming_histogram as fn() -> Histogram,
            ),
            endpoint_changes_total: Counter::default(),
            endpoint_changes_pending: Gauge::default(),
            service_changes_total: Counter::default(),
            service_changes_pending: Gauge::default(),
            iptables_restore_failures: Family::default(),
            conntrack_reconciler_duration: HistogramFamily::new_with_constructor(
                sync_histogram as fn() -> Histogram,
            ),
            conntrack_reconciler_deleted: Family::default(),
            no_local_endpoints: Family::default(),
            healthz_total: Family::default(),
            livez_total: Family::default(),
            syncs: Family::default(),
            reconciler_ops: Family::default(),
            dataplane_errors: Family::default(),
            ipset_failures: Counter::default(),
            virtual_services: Arc::new(VirtualServiceCollector::default()),
            rebalance: Arc::new(RebalanceCollector::default()),
            registry: Registry::default(),
        };
        registry.register(
            "kubeproxy_sync_proxy_rules_duration_seconds",
            "SyncProxyRules latency in seconds",
            inner.sync_duration.clone(),
        );
        registry.register(
            "kubeproxy_sync_full_proxy_rules_duration_seconds",
            "SyncProxyRules latency in seconds for full resyncs",
            inner.sync_full_duration.clone(),
        );
        registry.register(
            "kubeproxy_sync_partial_proxy_rules_duration_seconds",
            "SyncProxyRules latency in seconds for partial resyncs",
            inner.sync_partial_duration.clone(),
        );
        registry.register(
            "kubeproxy_sync_proxy_rules_last_timestamp_seconds",
            "The last time proxy rules were successfully synced",
            inner.last_timestamp.clone(),
        );
        registry.register(
            "kubeproxy_sync_proxy_rules_last_queued_timestamp_seconds",
            "The last time a sync of proxy rules was queued",
            inner.last_queued_timestamp.clone(),
        );
        registry.register(
            "kubeproxy_network_programming_duration_seconds",
            "In Cluster Network Programming Latency in seconds",
            inner.network_programming.clone(),
        );
        registry.register(
            "kubeproxy_sync_proxy_rules_endpoint_changes_pending",
            "Pending proxy rules Endpoint changes",
            inner.endpoint_changes_pending.clone(),
        );
        registry.register(
            "kubeproxy_sync_proxy_rules_endpoint_changes",
            "Cumulative proxy rules Endpoint changes",
            inner.endpoint_changes_total.clone(),
        );
        registry.register(
            "kubeproxy_sync_proxy_rules_service_changes_pending",
            "Pending proxy rules Service changes",
            inner.service_changes_pending.clone(),
        );
        registry.register(
            "kubeproxy_sync_proxy_rules_service_changes",
            "Cumulative proxy rules Service changes",
            inner.service_changes_total.clone(),
        );
        registry.register(
            "kubeproxy_sync_proxy_rules_iptables_restore_failures",
            "Cumulative proxy iptables restore failures",
            inner.iptables_restore_failures.clone(),
        );
        registry.register(
            "kubeproxy_conntrack_reconciler_sync_duration_seconds",
            "ReconcileConntrackFlowsLatency latency in seconds",
            inner.conntrack_reconciler_duration.clone(),
        );
        registry.register(
            "kubeproxy_conntrack_reconciler_deleted_entries",
            "Cumulative conntrack flows deleted by conntrack reconciler",
            inner.conntrack_reconciler_deleted.clone(),
        );
        // A gauge whose name ends in `_total`, as kube-proxy named it.
        registry.register(
            "kubeproxy_sync_proxy_rules_no_local_endpoints_total",
            "Number of services with a Local traffic policy and no endpoints",
            inner.no_local_endpoints.clone(),
        );
        registry.register(
            "kubeproxy_proxy_healthz",
            "Cumulative proxy healthz HTTP status",
            inner.healthz_total.clone(),
        );
        registry.register(
            "kubeproxy_proxy_livez",
            "Cumulative proxy livez HTTP status",
            inner.livez_total.clone(),
        );
        registry.register(
            "rvs_syncs",
            "Syncs by kind (full, partial) and result (success, failure)",
            inner.syncs.clone(),
        );
        registry.register(
            "rvs_reconciler_operations",
            "Dataplane operations the reconciler applied, by kind",
            inner.reconciler_ops.clone(),
        );
        registry.register(
            "rvs_dataplane_errors",
            "Dataplane operations that failed, by kind",
            inner.dataplane_errors.clone(),
        );
        registry.register(
            "rvs_ipset_update_failures",
            "Failed ipset updates",
            inner.ipset_failures.clone(),
        );
        registry.register_collector(Box::new(Arc::clone(&inner.virtual_services)));
        registry.register_collector(Box::new(Arc::clone(&inner.rebalance)));
        registry.register_collector(Box::new(crate::process::ProcessCollector));
        let mut inner = inner;
        inner.registry = registry;
        let m = Metrics {
            inner: Arc::new(inner),
        };
        // Series kube-proxy shows from the start, so dashboards and alerts
        // see zeros rather than gaps.
        for &f in families {
            let l = family_label(f);
            let _ = m.inner.iptables_restore_failures.get_or_create(&l);
            let _ = m.inner.sync_duration.get_or_create(&l);
            for policy in ["internal", "external"] {
                let _ = m
                    .inner
                    .no_local_endpoints
                    .get_or_create(&[("ip_family", f.as_str()), ("traffic_policy", policy)]);
            }
        }
        m
    }

    /// The families every `ip_family` series is recorded for.
    pub fn families(&self) -> &[IpFamily] {
        &self.inner.families
    }

    /// A sync was queued (a Service, EndpointSlice or Node change arrived
    /// that needs one): sets `…_last_queued_timestamp_seconds` to now.
    pub fn sync_queued(&self) {
        self.sync_queued_at(SystemTime::now());
    }

    /// [`Metrics::sync_queued`] at a given time.
    pub fn sync_queued_at(&self, at: SystemTime) {
        let v = seconds_since_epoch(at);
        for &f in &self.inner.families {
            self.inner
                .last_queued_timestamp
                .get_or_create(&family_label(f))
                .set(v);
        }
    }

    /// Records one sync: its duration in `…_duration_seconds` (and the full
    /// or partial histogram), and on success `…_last_timestamp_seconds`.
    pub fn sync_finished(&self, kind: SyncKind, duration: Duration, success: bool) {
        self.sync_finished_at(kind, duration, success, SystemTime::now());
    }

    /// [`Metrics::sync_finished`] with the time it finished.
    pub fn sync_finished_at(
        &self,
        kind: SyncKind,
        duration: Duration,
        success: bool,
        at: SystemTime,
    ) {
        let secs = duration.as_secs_f64();
        for &f in &self.inner.families {
            let l = family_label(f);
            self.inner.sync_duration.get_or_create(&l).observe(secs);
            let by_kind = match kind {
                SyncKind::Full => &self.inner.sync_full_duration,
                SyncKind::Partial => &self.inner.sync_partial_duration,
            };
            by_kind.get_or_create(&l).observe(secs);
            if success {
                self.inner
                    .last_timestamp
                    .get_or_create(&l)
                    .set(seconds_since_epoch(at));
            }
        }
        let kind = match kind {
            SyncKind::Full => "full",
            SyncKind::Partial => "partial",
        };
        let result = if success { "success" } else { "failure" };
        self.inner
            .syncs
            .get_or_create(&[("kind", kind), ("result", result)])
            .inc();
    }

    /// Sets `…_last_queued_timestamp_seconds` to now: kube-proxy v1.37's
    /// sync loop does so when it starts ("the informers are syncing"), so
    /// the series is there before the first change; the last sync's
    /// timestamp stays unset until a sync ends.
    pub fn sync_loop_started(&self) {
        self.sync_queued();
    }

    /// `events` EndpointSlice add/update/delete events arrived; `pending`
    /// Services now have endpoint changes not yet synced.
    pub fn endpoint_changes(&self, events: u64, pending: usize) {
        self.inner.endpoint_changes_total.inc_by(events);
        self.inner
            .endpoint_changes_pending
            .set(i64::try_from(pending).unwrap_or(i64::MAX));
    }

    /// `events` Service add/update/delete events arrived; `pending`
    /// Services now have changes not yet synced.
    pub fn service_changes(&self, events: u64, pending: usize) {
        self.inner.service_changes_total.inc_by(events);
        self.inner
            .service_changes_pending
            .set(i64::try_from(pending).unwrap_or(i64::MAX));
    }

    /// A sync took the pending changes: both `…_pending` gauges go to 0.
    pub fn changes_taken(&self) {
        self.inner.endpoint_changes_pending.set(0);
        self.inner.service_changes_pending.set(0);
    }

    /// Observes one network programming latency: from a change's trigger
    /// time (the EndpointSlice's `endpoints.kubernetes.io/last-change-trigger-time`
    /// annotation) to the end of the sync that applied it.
    pub fn network_programming(&self, latency: Duration) {
        let secs = latency.as_secs_f64();
        for &f in &self.inner.families {
            self.inner
                .network_programming
                .get_or_create(&family_label(f))
                .observe(secs);
        }
    }

    /// [`Metrics::network_programming`] from a trigger time to `applied`;
    /// trigger times in the future (clock skew) are skipped, as kube-proxy
    /// skips them.
    pub fn network_programmed(&self, trigger: SystemTime, applied: SystemTime) {
        if let Ok(latency) = applied.duration_since(trigger) {
            self.network_programming(latency);
        }
    }

    /// One `iptables-restore` failed for `family`.
    pub fn iptables_restore_failed(&self, family: IpFamily) {
        self.inner
            .iptables_restore_failures
            .get_or_create(&family_label(family))
            .inc();
    }

    /// The stale UDP conntrack cleanup of `family` ran (kube-proxy's
    /// conntrack reconciler): it took `duration` and deleted `deleted`
    /// entries. Both series appear with the first cleanup, as kube-proxy's.
    pub fn conntrack_reconciled(&self, family: IpFamily, duration: Duration, deleted: u64) {
        let l = family_label(family);
        self.inner
            .conntrack_reconciler_duration
            .get_or_create(&l)
            .observe(duration.as_secs_f64());
        self.inner
            .conntrack_reconciler_deleted
            .get_or_create(&l)
            .inc_by(deleted);
    }

    /// One ipset update failed.
    pub fn ipset_update_failed(&self) {
        self.inner.ipset_failures.inc();
    }

    /// Services with `internalTrafficPolicy: Local` (`internal`) and
    /// `externalTrafficPolicy: Local` (`external`) without a local
    /// endpoint, recounted each sync.
    pub fn no_local_endpoints(&self, family: IpFamily, internal: usize, external: usize) {
        for (policy, n) in [("internal", internal), ("external", external)] {
            self.inner
                .no_local_endpoints
                .get_or_create(&[("ip_family", family.as_str()), ("traffic_policy", policy)])
                .set(i64::try_from(n).unwrap_or(i64::MAX));
        }
    }

    /// The reconciler applied `n` operations of `kind`.
    pub fn reconciler_ops(&self, kind: OpKind, n: u64) {
        self.inner
            .reconciler_ops
            .get_or_create(&[("kind", op_kind_label(kind))])
            .inc_by(n);
    }

    /// `n` dataplane operations of `kind` failed.
    pub fn dataplane_errors(&self, kind: OpKind, n: u64) {
        self.inner
            .dataplane_errors
            .get_or_create(&[("kind", op_kind_label(kind))])
            .inc_by(n);
    }

    /// Replaces the per-virtual-service counters with a dataplane snapshot
    /// (`Admin::services()`); fwmark services are labelled `FWM`.
    pub fn virtual_services(&self, services: &[ServiceStatus]) {
        let snapshot = services
            .iter()
            .map(|s| {
                let (protocol, address) = service_labels(&s.service.key);
                ServiceCounters {
                    protocol,
                    address,
                    stats: s.stats,
                }
            })
            .collect();
        self.inner.virtual_services.snapshot.set(snapshot);
    }

    /// Replaces the rebalancing snapshot (`rvs_rebalance_closed_connections_total`
    /// and `rvs_rebalance_skew`) with what the dataplane reports.
    pub fn rebalancing(&self, statuses: Vec<RebalanceStatus>) {
        self.inner.rebalance.snapshot.set(statuses);
    }

    pub(crate) fn healthz_served(&self, code: u16) {
        self.inner
            .healthz_total
            .get_or_create(&[("code", code_label(code))])
            .inc();
    }

    pub(crate) fn livez_served(&self, code: u16) {
        self.inner
            .livez_total
            .get_or_create(&[("code", code_label(code))])
            .inc();
    }

    /// The registry in the OpenMetrics text format (what `/metrics` serves).
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.inner.registry).is_err() {
            out.clear();
            let _ = writeln!(out, "# EOF");
        }
        out
    }
}

fn code_label(code: u16) -> &'static str {
    match code {
        200 => "200",
        _ => "503",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rebalancing_series_per_service_and_real_server() {
        let m = Metrics::new(&[IpFamily::V4]);
        let text = m.encode();
        assert!(text.contains("# TYPE rvs_rebalance_skew gauge"), "{text}");
        assert!(!text.contains("rvs_rebalance_skew{"), "{text}");
        m.rebalancing(vec![RebalanceStatus {
            service: ServiceKey::Addr {
                protocol: rvs_model::Protocol::Tcp,
                addr: "10.96.0.1:80".parse().unwrap(),
            },
            skew: 0.5,
            closed: vec![("10.244.1.1:8080".parse().unwrap(), 3)],
        }]);
        let text = m.encode();
        assert!(
            text.contains(
                "rvs_rebalance_closed_connections_total{protocol=\"TCP\",address=\"10.96.0.1:80\",real_server=\"10.244.1.1:8080\"} 3"
            ),
            "{text}"
        );
        assert!(
            text.contains("rvs_rebalance_skew{protocol=\"TCP\",address=\"10.96.0.1:80\"} 0.5"),
            "{text}"
        );
    }

    #[test]
    fn network_programming_buckets_match_kube_proxy() {
        let b = network_programming_buckets();
        // merge() starts from a 0 bucket, then 2 + 59 + 12 + 7 buckets.
        assert_eq!(b.len(), 1 + 2 + 59 + 12 + 7);
        assert_eq!(&b[..5], &[0.0, 0.25, 0.5, 1.0, 2.0]);
        assert_eq!(b[61], 59.0);
        assert_eq!(b[62], 60.0);
        assert_eq!(b[73], 115.0);
        assert_eq!(b[74], 120.0);
        assert_eq!(b[80], 300.0);
    }
}
