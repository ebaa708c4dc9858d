//! The typed view of the cluster the proxy works on.
//!
//! Kubernetes objects (`k8s-openapi` types) are validated and reduced here
//! to what service proxying needs: per Service its virtual addresses,
//! ports, policies and affinity; per EndpointSlice its endpoints with
//! their conditions and hints; the node's name, addresses and zone. An
//! object that cannot be used is rejected with an [`ObjectError`] naming
//! the object and the field, and the rest of the cluster still syncs.
//! Where kube-proxy skips a bad item and keeps the rest of the object
//! (an external IP or source range that does not parse, an EndpointSlice
//! port of 0, an endpoint without a usable address), so does this module,
//! with a warning naming the object and the field. Addresses are read as
//! kube-proxy reads them ([`parse_ip_sloppy`]: IPv4 with leading zeros).

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use ipnet::IpNet;
use k8s_openapi::api::core::v1::{Node, Service as K8sService};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use rvs_model::{Protocol, Scheduler};

use crate::config::SCHEDULER_ANNOTATION;

/// Label kube-proxy uses to hand a Service to another proxy.
pub const SERVICE_PROXY_NAME_LABEL: &str = "service.kubernetes.io/service-proxy-name";
/// Label marking a Service headless.
pub const HEADLESS_LABEL: &str = "service.kubernetes.io/headless";
/// Label linking an EndpointSlice to its Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";
/// Label holding a node's zone.
pub const ZONE_LABEL: &str = "topology.kubernetes.io/zone";
/// Default `sessionAffinityConfig.clientIP.timeoutSeconds`.
pub const DEFAULT_AFFINITY_TIMEOUT: u32 = 10800;

/// `namespace/name` of an object.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjectName {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
}

impl std::fmt::Display for ObjectName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

impl ObjectName {
    /// `namespace/name`.
    pub fn new(namespace: impl Into<String>, name: impl Into<String>) -> ObjectName {
        ObjectName {
            namespace: namespace.into(),
            name: name.into(),
        }
    }
}

/// An object that cannot be used, and why.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{kind} {object}: {field}: {problem}")]
pub struct ObjectError {
    /// `Service`, `EndpointSlice` or `Node`.
    pub kind: &'static str,
    /// Which object.
    pub object: String,
    /// The offending field's path, e.g. `spec.ports[1].protocol`.
    pub field: String,
    /// What is wrong with it.
    pub problem: String,
}

/// One port of a Service.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServicePort {
    /// The port's name ("" when the Service has a single unnamed port).
    pub name: String,
    /// Transport protocol.
    pub protocol: Protocol,
    /// Port on the virtual addresses.
    pub port: u16,
    /// Port on node addresses, for NodePort and LoadBalancer Services.
    pub node_port: Option<u16>,
}

/// A Service, reduced to what proxying needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceInfo {
    /// Which Service.
    pub name: ObjectName,
    /// Cluster IPs (one per family).
    pub cluster_ips: Vec<IpAddr>,
    /// `spec.externalIPs`.
    pub external_ips: Vec<IpAddr>,
    /// `status.loadBalancer.ingress[].ip` (not in `Proxy` IP mode).
    pub load_balancer_ips: Vec<IpAddr>,
    /// Ports.
    pub ports: Vec<ServicePort>,
    /// Client-IP affinity timeout, when `sessionAffinity: ClientIP`.
    pub affinity_timeout: Option<u32>,
    /// `externalTrafficPolicy: Local`.
    pub external_local: bool,
    /// `internalTrafficPolicy: Local`.
    pub internal_local: bool,
    /// Scheduler chosen by annotation.
    pub scheduler: Option<Scheduler>,
    /// Rebalancing policy chosen by annotation (`rvs.dev/rebalance`;
    /// `None`: the proxy's default).
    pub rebalance: Option<rvs_rebalance::Policy>,
    /// `spec.trafficDistribution` asks for topology-aware routing.
    pub topology_aware: bool,
    /// `spec.loadBalancerSourceRanges` (trimmed, host bits kept as
    /// written; empty when the Service is not of type LoadBalancer).
    pub source_ranges: Vec<IpNet>,
    /// `spec.healthCheckNodePort`, for a LoadBalancer Service with
    /// `externalTrafficPolicy: Local` (the only Services that need one).
    pub health_check_node_port: Option<u16>,
}

impl ServiceInfo {
    /// A ClusterIP Service with these ports and every option at its
    /// Kubernetes default (no external or load-balancer IPs, `Cluster`
    /// traffic policies, no affinity, no health check node port).
    pub fn new(name: ObjectName, cluster_ips: Vec<IpAddr>, ports: Vec<ServicePort>) -> ServiceInfo {
        ServiceInfo {
            name,
            cluster_ips,
            external_ips: Vec::new(),
            load_balancer_ips: Vec::new(),
            ports,
            affinity_timeout: None,
            external_local: false,
            internal_local: false,
            scheduler: None,
            rebalance: None,
            topology_aware: false,
            source_ranges: Vec::new(),
            health_check_node_port: None,
        }
    }
}

/// One endpoint address of an EndpointSlice.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EndpointInfo {
    /// The address.
    pub addr: IpAddr,
    /// `conditions.ready` (unset means ready).
    pub ready: bool,
    /// `conditions.serving` (unset means serving, as kube-proxy reads it).
    pub serving: bool,
    /// `conditions.terminating`.
    pub terminating: bool,
    /// The node hosting it.
    pub node_name: Option<String>,
    /// `hints.forZones`, if any.
    pub zone_hints: Option<Vec<String>>,
    /// `hints.forNodes`, if any.
    pub node_hints: Option<Vec<String>>,
}

impl EndpointInfo {
    /// A ready, serving endpoint on no particular node, without hints.
    pub fn ready(addr: IpAddr) -> EndpointInfo {
        EndpointInfo {
            addr,
            ready: true,
            serving: true,
            terminating: false,
            node_name: None,
            zone_hints: None,
            node_hints: None,
        }
    }
}

/// One port of an EndpointSlice.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SlicePort {
    /// Name, matching the Service port's name.
    pub name: String,
    /// Protocol.
    pub protocol: Protocol,
    /// Target port on the endpoints.
    pub port: u16,
}

/// An EndpointSlice, reduced.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SliceInfo {
    /// The Service it belongs to.
    pub service: ObjectName,
    /// Ports.
    pub ports: Vec<SlicePort>,
    /// Endpoints.
    pub endpoints: Vec<EndpointInfo>,
}

/// This node, reduced.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NodeInfo {
    /// Node name.
    pub name: String,
    /// InternalIP addresses, then ExternalIP ones (the order kube-proxy's
    /// `GetNodeHostIPs` picks primary addresses in).
    pub addresses: Vec<IpAddr>,
    /// `topology.kubernetes.io/zone`.
    pub zone: Option<String>,
    /// `spec.podCIDRs` (or the older `spec.podCIDR`): this node's pod
    /// ranges, for `--detect-local-mode=NodeCIDR`.
    pub pod_cidrs: Vec<IpNet>,
    /// The Node is going away: it has a deletion timestamp or the cluster
    /// autoscaler's `ToBeDeletedByClusterAutoscaler` taint. kube-proxy's
    /// `/healthz` then fails, so load balancers drain the node.
    pub deleting: bool,
}

impl NodeInfo {
    /// The node's primary addresses, as kube-proxy's `GetNodeHostIPs`
    /// finds them: the first address, then the first of the other
    /// family, if any.
    pub fn primary_ips(&self) -> Vec<IpAddr> {
        let mut out: Vec<IpAddr> = self.addresses.first().copied().into_iter().collect();
        if let Some(first) = out.first().copied()
            && let Some(other) = self
                .addresses
                .iter()
                .find(|a| a.is_ipv6() != first.is_ipv6())
        {
            out.push(*other);
        }
        out
    }

    /// The pod CIDR of one family (the first, as kube-proxy takes).
    pub fn pod_cidr(&self, ipv6: bool) -> Option<IpNet> {
        self.pod_cidrs
            .iter()
            .find(|c| c.addr().is_ipv6() == ipv6)
            .copied()
    }
}

/// Everything the proxy knows about the cluster.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClusterState {
    /// Services by name.
    pub services: BTreeMap<ObjectName, ServiceInfo>,
    /// EndpointSlices by their own name.
    pub slices: BTreeMap<ObjectName, SliceInfo>,
    /// This node, once known.
    pub node: Option<NodeInfo>,
}

/// An object's `namespace/name` (`default` when it has no namespace).
pub fn object_name(
    meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
) -> ObjectName {
    ObjectName {
        namespace: meta
            .namespace
            .clone()
            .unwrap_or_else(|| "default".to_owned()),
        name: meta.name.clone().unwrap_or_default(),
    }
}

/// Parses an IP address as kube-proxy does (`netutils.ParseIPSloppy`):
/// IPv4 fields may carry leading zeros, read as decimal
/// (`010.001.002.003` is 10.1.2.3), and an IPv4-mapped IPv6 address is
/// the IPv4 address (as Go's `net.IP` treats it).
pub fn parse_ip_sloppy(text: &str) -> Option<IpAddr> {
    if let Ok(ip) = text.parse::<IpAddr>() {
        return Some(ip.to_canonical());
    }
    parse_ipv4_decimal(text).map(IpAddr::V4)
}

/// Go's `parseIPv4` before 1.17: four dot-separated decimal fields of
/// any length, each at most 255.
fn parse_ipv4_decimal(text: &str) -> Option<std::net::Ipv4Addr> {
    let mut octets = [0u8; 4];
    let mut fields = text.split('.');
    for octet in &mut octets {
        let field = fields.next()?;
        if field.is_empty() || !field.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let value = field.bytes().try_fold(0u32, |n, b| {
            let n = n * 10 + u32::from(b - b'0');
            (n <= 255).then_some(n)
        })?;
        *octet = u8::try_from(value).ok()?;
    }
    fields.next().is_none().then_some(octets.into())
}

/// Parses a CIDR as kube-proxy does (`netutils.ParseCIDRSloppy`): the
/// address as [`parse_ip_sloppy`] reads IPv4, and the network it names
/// (host bits cleared).
pub fn parse_cidr_sloppy(text: &str) -> Option<IpNet> {
    let (addr, len) = text.split_once('/')?;
    let addr = addr
        .parse::<IpAddr>()
        .ok()
        .or_else(|| parse_ipv4_decimal(addr).map(IpAddr::V4))?;
    if len.is_empty() || !len.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let len: u8 = len.parse().ok()?;
    IpNet::new(addr, len).ok().map(|net| net.trunc())
}

/// Reducing one object: its name, for errors and warnings, and the
/// problems kube-proxy tolerates (the bad item is skipped, the rest
/// kept), collected as warnings.
struct Ctx<'w> {
    kind: &'static str,
    object: String,
    warnings: &'w mut Vec<ObjectError>,
}

impl Ctx<'_> {
    fn err(&self, field: impl Into<String>, problem: impl Into<String>) -> ObjectError {
        ObjectError {
            kind: self.kind,
            object: self.object.clone(),
            field: field.into(),
            problem: problem.into(),
        }
    }

    /// Notes a tolerated problem: the item is skipped.
    fn warn(&mut self, field: impl Into<String>, problem: impl Into<String>) {
        let warning = self.err(field, problem);
        self.warnings.push(warning);
    }

    fn ip(&self, field: impl Into<String>, text: &str) -> Result<IpAddr, ObjectError> {
        parse_ip_sloppy(text)
            .ok_or_else(|| self.err(field, format!("{text:?} is not an IP address")))
    }

    /// An IP address of a list kube-proxy skips bad entries of.
    fn ip_or_skip(&mut self, field: impl Into<String>, text: &str) -> Option<IpAddr> {
        let ip = parse_ip_sloppy(text);
        // kube-proxy skips empty strings without a word.
        if ip.is_none() && !text.trim().is_empty() {
            self.warn(field, format!("{text:?} is not an IP address; skipped"));
        }
        ip
    }

    fn port(&self, field: impl Into<String>, value: i32) -> Result<u16, ObjectError> {
        u16::try_from(value)
            .ok()
            .filter(|p| *p != 0)
            .ok_or_else(|| self.err(field, format!("{value} is not a port number")))
    }

    fn protocol(
        &self,
        field: impl Into<String>,
        value: Option<&str>,
    ) -> Result<Protocol, ObjectError> {
        match value.unwrap_or("TCP") {
            "TCP" => Ok(Protocol::Tcp),
            "UDP" => Ok(Protocol::Udp),
            "SCTP" => Ok(Protocol::Sctp),
            other => Err(self.err(field, format!("unsupported protocol {other:?}"))),
        }
    }

    /// `Ok` as is; an error becomes a warning (the item is skipped).
    fn skip<T>(&mut self, result: Result<T, ObjectError>) -> Option<T> {
        match result {
            Ok(value) => Some(value),
            Err(mut e) => {
                e.problem.push_str("; skipped");
                self.warnings.push(e);
                None
            }
        }
    }
}

/// Logs the problems kube-proxy tolerates, as it logs them.
fn log_warnings(warnings: &[ObjectError]) {
    for w in warnings {
        tracing::warn!(kind = w.kind, object = %w.object, field = %w.field, "{}", w.problem);
    }
}

/// Why a Service is not proxied at all (not an error).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Skip {
    /// `clusterIP: None`.
    Headless,
    /// `type: ExternalName`.
    ExternalName,
    /// Handed to another proxy by `service.kubernetes.io/service-proxy-name`.
    OtherProxy,
}

/// Validates a Service. `Ok(Err(skip))` for Services that are valid but
/// not for this proxy. Problems kube-proxy tolerates (a bad external IP,
/// ingress IP, source range or port is skipped and the rest kept) are
/// logged as warnings; see [`service_info_with`].
pub fn service_info(
    svc: &K8sService,
    proxy_name: Option<&str>,
) -> Result<Result<ServiceInfo, Skip>, ObjectError> {
    let mut warnings = Vec::new();
    let result = service_info_with(svc, proxy_name, &mut warnings);
    log_warnings(&warnings);
    result
}

/// [`service_info`], with the tolerated problems added to `warnings`
/// (each names the object and the field) instead of logged.
pub fn service_info_with(
    svc: &K8sService,
    proxy_name: Option<&str>,
    warnings: &mut Vec<ObjectError>,
) -> Result<Result<ServiceInfo, Skip>, ObjectError> {
    let name = object_name(&svc.metadata);
    let mut ctx = Ctx {
        kind: "Service",
        object: name.to_string(),
        warnings,
    };
    let labels = svc.metadata.labels.as_ref();
    let label = |key: &str| labels.and_then(|l| l.get(key)).map(String::as_str);
    if label(SERVICE_PROXY_NAME_LABEL) != proxy_name {
        return Ok(Err(Skip::OtherProxy));
    }
    // The headless label does not skip a Service: kube-proxy selects it
    // away on EndpointSlices only (see `slice_info_with`).
    let spec = svc
        .spec
        .as_ref()
        .ok_or_else(|| ctx.err("spec", "missing"))?;
    if spec.type_.as_deref() == Some("ExternalName") {
        return Ok(Err(Skip::ExternalName));
    }
    let cluster_ip_texts: Vec<&str> = match (&spec.cluster_ips, &spec.cluster_ip) {
        (Some(ips), _) if !ips.is_empty() => ips.iter().map(String::as_str).collect(),
        (_, Some(ip)) => vec![ip.as_str()],
        _ => vec![],
    };
    if cluster_ip_texts.contains(&"None") {
        return Ok(Err(Skip::Headless));
    }
    let cluster_ips = cluster_ip_texts
        .iter()
        .enumerate()
        .filter(|(_, ip)| !ip.is_empty())
        .map(|(i, ip)| ctx.ip(format!("spec.clusterIPs[{i}]"), ip))
        .collect::<Result<Vec<_>, _>>()?;
    // kube-proxy (`MapIPsByIPFamily`) skips external IPs that do not
    // parse and keeps the others.
    let mut external_ips = Vec::new();
    for (i, text) in spec.external_ips.iter().flatten().enumerate() {
        if let Some(ip) = ctx.ip_or_skip(format!("spec.externalIPs[{i}]"), text) {
            external_ips.push(ip);
        }
    }
    let mut load_balancer_ips = Vec::new();
    if let Some(ingress) = svc
        .status
        .as_ref()
        .and_then(|s| s.load_balancer.as_ref())
        .and_then(|lb| lb.ingress.as_ref())
    {
        for (i, entry) in ingress.iter().enumerate() {
            if entry.ip_mode.as_deref() == Some("Proxy") {
                continue;
            }
            if let Some(text) = &entry.ip
                && let Some(ip) =
                    ctx.ip_or_skip(format!("status.loadBalancer.ingress[{i}].ip"), text)
            {
                load_balancer_ips.push(ip);
            }
        }
    }
    let node_ports_allowed = matches!(spec.type_.as_deref(), Some("NodePort" | "LoadBalancer"));
    let load_balancer = spec.type_.as_deref() == Some("LoadBalancer");
    let external_local = spec.external_traffic_policy.as_deref() == Some("Local");
    // kube-proxy reads the ranges of LoadBalancer Services only (the API
    // server rejects them on other types), trimming blanks and skipping
    // those that do not parse (`MapCIDRsByIPFamily`).
    let mut source_ranges = Vec::new();
    if load_balancer {
        for (i, text) in spec
            .load_balancer_source_ranges
            .iter()
            .flatten()
            .enumerate()
        {
            let text = text.trim();
            match parse_cidr_sloppy(text) {
                Some(net) => source_ranges.push(net),
                None if text.is_empty() => {}
                None => ctx.warn(
                    format!("spec.loadBalancerSourceRanges[{i}]"),
                    format!("{text:?} is not a CIDR; skipped"),
                ),
            }
        }
    }
    // kube-proxy's NeedsHealthCheck: LoadBalancer with the Local policy.
    let health_check_node_port = match spec.health_check_node_port {
        Some(p) if load_balancer && external_local && p != 0 => {
            Some(ctx.port("spec.healthCheckNodePort", p)?)
        }
        _ => None,
    };
    // A port kube-proxy cannot program (its set entries do not
    // validate) is skipped; the Service's other ports still work.
    let mut ports = Vec::new();
    for (i, p) in spec.ports.iter().flatten().enumerate() {
        let protocol = ctx.protocol(format!("spec.ports[{i}].protocol"), p.protocol.as_deref());
        let Some(protocol) = ctx.skip(protocol) else {
            continue;
        };
        let port = ctx.port(format!("spec.ports[{i}].port"), p.port);
        let Some(port) = ctx.skip(port) else {
            continue;
        };
        let node_port = match p.node_port {
            Some(np) if node_ports_allowed && np != 0 => {
                let np = ctx.port(format!("spec.ports[{i}].nodePort"), np);
                ctx.skip(np)
            }
            _ => None,
        };
        ports.push(ServicePort {
            name: p.name.clone().unwrap_or_default(),
            protocol,
            port,
            node_port,
        });
    }
    let affinity_timeout = match spec.session_affinity.as_deref() {
        Some("ClientIP") => {
            let timeout = spec
                .session_affinity_config
                .as_ref()
                .and_then(|c| c.client_ip.as_ref())
                .and_then(|c| c.timeout_seconds)
                .unwrap_or(DEFAULT_AFFINITY_TIMEOUT as i32);
            let timeout = u32::try_from(timeout)
                .ok()
                .filter(|t| (1..=86400).contains(t))
                .ok_or_else(|| {
                    ctx.err(
                        "spec.sessionAffinityConfig.clientIP.timeoutSeconds",
                        format!("{timeout} is outside 1..86400"),
                    )
                })?;
            Some(timeout)
        }
        None | Some("None") => None,
        // kube-proxy makes only ClientIP sticky.
        Some(other) => {
            ctx.warn(
                "spec.sessionAffinity",
                format!("unsupported value {other:?}; no affinity"),
            );
            None
        }
    };
    let scheduler = match svc
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(SCHEDULER_ANNOTATION))
    {
        Some(text) => match text.parse::<Scheduler>() {
            Ok(s) => Some(s),
            Err(e) => {
                ctx.warn(
                    format!("metadata.annotations[{SCHEDULER_ANNOTATION}]"),
                    format!("{e}; the node's scheduler is used"),
                );
                None
            }
        },
        None => None,
    };
    let rebalance = match svc
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(rvs_rebalance::ANNOTATION))
    {
        Some(text) => match text.parse::<rvs_rebalance::Policy>() {
            Ok(p) => Some(p),
            Err(e) => {
                ctx.warn(
                    format!("metadata.annotations[{}]", rvs_rebalance::ANNOTATION),
                    format!("{e}; the proxy's default policy is used"),
                );
                None
            }
        },
        None => None,
    };
    Ok(Ok(ServiceInfo {
        name,
        cluster_ips,
        external_ips,
        load_balancer_ips,
        ports,
        affinity_timeout,
        external_local,
        internal_local: spec.internal_traffic_policy.as_deref() == Some("Local"),
        scheduler,
        rebalance,
        topology_aware: matches!(
            spec.traffic_distribution.as_deref(),
            Some("PreferClose" | "PreferSameZone" | "PreferSameNode")
        ),
        source_ranges,
        health_check_node_port,
    }))
}

/// Validates an EndpointSlice. `Ok(None)` for slices not tied to a Service,
/// labelled headless, or of an address type IPVS cannot serve (FQDN). Bad ports and
/// endpoints are skipped with a warning, as kube-proxy's
/// `EndpointSliceCache` skips them; see [`slice_info_with`].
pub fn slice_info(slice: &EndpointSlice) -> Result<Option<(ObjectName, SliceInfo)>, ObjectError> {
    let mut warnings = Vec::new();
    let result = slice_info_with(slice, &mut warnings);
    log_warnings(&warnings);
    result
}

/// [`slice_info`], with the tolerated problems added to `warnings`.
///
/// kube-proxy (`pkg/proxy/endpointslicecache.go`) ignores a port
/// without a name or with no or a zero port number, and an endpoint
/// without addresses; an address that does not parse reaches no real
/// server. Unset `serving` means serving (`Serving == nil ||
/// *Serving`), and an empty hint list means no hints.
pub fn slice_info_with(
    slice: &EndpointSlice,
    warnings: &mut Vec<ObjectError>,
) -> Result<Option<(ObjectName, SliceInfo)>, ObjectError> {
    let name = object_name(&slice.metadata);
    let mut ctx = Ctx {
        kind: "EndpointSlice",
        object: name.to_string(),
        warnings,
    };
    let labels = slice.metadata.labels.as_ref();
    let Some(service) = labels.and_then(|l| l.get(SERVICE_NAME_LABEL)) else {
        return Ok(None);
    };
    // kube-proxy watches EndpointSlices without this label (the
    // EndpointSlice controller puts it on a headless Service's slices).
    if labels.is_some_and(|l| l.contains_key(HEADLESS_LABEL)) {
        return Ok(None);
    }
    if !matches!(slice.address_type.as_str(), "IPv4" | "IPv6") {
        return Ok(None);
    }
    // Sized up front: these stay in the proxy's view for the object's
    // life, and grown vectors keep up to half their capacity unused.
    let mut ports = Vec::with_capacity(slice.ports.as_ref().map_or(0, Vec::len));
    for (i, p) in slice.ports.iter().flatten().enumerate() {
        let Some(name) = &p.name else {
            ctx.warn(format!("ports[{i}].name"), "missing; the port is ignored");
            continue;
        };
        let port = match p.port {
            Some(port) if port != 0 => ctx.port(format!("ports[{i}].port"), port),
            _ => Err(ctx.err(format!("ports[{i}].port"), "missing or 0")),
        };
        let Some(port) = ctx.skip(port) else {
            continue;
        };
        let protocol = ctx.protocol(format!("ports[{i}].protocol"), p.protocol.as_deref());
        let Some(protocol) = ctx.skip(protocol) else {
            continue;
        };
        ports.push(SlicePort {
            name: name.clone(),
            protocol,
            port,
        });
    }
    let mut endpoints = Vec::with_capacity(slice.endpoints.len());
    for (i, ep) in slice.endpoints.iter().enumerate() {
        let conditions = ep.conditions.as_ref();
        let ready = conditions.and_then(|c| c.ready).unwrap_or(true);
        let serving = conditions.and_then(|c| c.serving).unwrap_or(true);
        let terminating = conditions.and_then(|c| c.terminating).unwrap_or(false);
        let hints = ep.hints.as_ref();
        let zone_hints = hints
            .and_then(|h| h.for_zones.as_ref())
            .filter(|z| !z.is_empty())
            .map(|z| z.iter().map(|z| z.name.clone()).collect());
        let node_hints = hints
            .and_then(|h| h.for_nodes.as_ref())
            .filter(|n| !n.is_empty())
            .map(|n| n.iter().map(|n| n.name.clone()).collect());
        // kube-proxy uses the first address of an endpoint.
        let Some(first) = ep.addresses.first() else {
            ctx.warn(
                format!("endpoints[{i}].addresses"),
                "empty; the endpoint is ignored",
            );
            continue;
        };
        let Some(addr) = ctx.ip_or_skip(format!("endpoints[{i}].addresses[0]"), first) else {
            continue;
        };
        endpoints.push(EndpointInfo {
            addr,
            ready,
            serving,
            terminating,
            node_name: ep.node_name.clone(),
            zone_hints,
            node_hints,
        });
    }
    let service = ObjectName {
        namespace: name.namespace.clone(),
        name: service.clone(),
    };
    Ok(Some((
        name,
        SliceInfo {
            service,
            ports,
            endpoints,
        },
    )))
}

/// Reduces the node object; addresses and pod CIDRs that do not parse
/// are skipped with a warning (kube-proxy's `GetNodeHostIPs` and
/// `MapCIDRsByIPFamily` skip them).
pub fn node_info(node: &Node) -> Result<NodeInfo, ObjectError> {
    let mut warnings = Vec::new();
    let result = node_info_with(node, &mut warnings);
    log_warnings(&warnings);
    result
}

/// [`node_info`], with the tolerated problems added to `warnings`.
pub fn node_info_with(
    node: &Node,
    warnings: &mut Vec<ObjectError>,
) -> Result<NodeInfo, ObjectError> {
    let name = node.metadata.name.clone().unwrap_or_default();
    let mut ctx = Ctx {
        kind: "Node",
        object: name.clone(),
        warnings,
    };
    let mut addresses = Vec::new();
    for kind in ["InternalIP", "ExternalIP"] {
        for (i, a) in node
            .status
            .iter()
            .flat_map(|s| s.addresses.iter().flatten())
            .enumerate()
        {
            if a.type_ == kind
                && let Some(ip) =
                    ctx.ip_or_skip(format!("status.addresses[{i}].address"), &a.address)
            {
                addresses.push(ip);
            }
        }
    }
    let spec = node.spec.as_ref();
    let (field, texts): (&str, Vec<&String>) = match spec.and_then(|s| s.pod_cidrs.as_ref()) {
        Some(list) if !list.is_empty() => ("spec.podCIDRs", list.iter().collect()),
        _ => (
            "spec.podCIDR",
            spec.and_then(|s| s.pod_cidr.as_ref()).into_iter().collect(),
        ),
    };
    let mut pod_cidrs = Vec::new();
    for (i, text) in texts.iter().enumerate() {
        let field = if field == "spec.podCIDRs" {
            format!("{field}[{i}]")
        } else {
            field.to_owned()
        };
        match parse_cidr_sloppy(text.trim()) {
            Some(net) => pod_cidrs.push(net),
            None => ctx.warn(field, format!("{text:?} is not a CIDR; skipped")),
        }
    }
    let zone = node
        .metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(ZONE_LABEL))
        .cloned();
    let taints = spec.and_then(|s| s.taints.as_ref()).into_iter().flatten();
    let deleting = !rvs_observe::HealthState::node_eligible_from(
        node.metadata.deletion_timestamp.is_some(),
        taints.map(|t| t.key.as_str()),
    );
    Ok(NodeInfo {
        name,
        addresses,
        zone,
        pod_cidrs,
        deleting,
    })
}

/// What differs between two views of the cluster, by Service: the unit a
/// partial sync recomputes. Sources that know what they changed report it
/// directly, so a change costs work in proportion to the change.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Changes {
    /// Services added, removed or changed, or whose EndpointSlices were.
    pub services: BTreeSet<ObjectName>,
    /// This node's object changed (node ports and locality depend on it).
    pub node: bool,
}

impl Changes {
    /// Nothing changed.
    pub fn is_empty(&self) -> bool {
        self.services.is_empty() && !self.node
    }

    /// Adds what `other` holds.
    pub fn merge(&mut self, other: Changes) {
        self.services.extend(other.services);
        self.node |= other.node;
    }
}

impl ClusterState {
    /// What changed from `old` to this view, by comparing both whole: for
    /// sources that cannot say what they changed.
    pub fn changes_since(&self, old: &ClusterState) -> Changes {
        let mut services = BTreeSet::new();
        for (name, svc) in &self.services {
            if old.services.get(name) != Some(svc) {
                services.insert(name.clone());
            }
        }
        for name in old.services.keys() {
            if !self.services.contains_key(name) {
                services.insert(name.clone());
            }
        }
        for (name, slice) in &self.slices {
            match old.slices.get(name) {
                Some(o) if o == slice => {}
                Some(o) => {
                    services.insert(o.service.clone());
                    services.insert(slice.service.clone());
                }
                None => {
                    services.insert(slice.service.clone());
                }
            }
        }
        for (name, slice) in &old.slices {
            if !self.slices.contains_key(name) {
                services.insert(slice.service.clone());
            }
        }
        Changes {
            services,
            node: self.node != old.node,
        }
    }

    /// Builds the state from objects, returning the errors of objects that
    /// were left out. `node_name` selects this node among the Nodes.
    pub fn build(
        services: &[K8sService],
        slices: &[EndpointSlice],
        nodes: &[Node],
        node_name: &str,
        proxy_name: Option<&str>,
    ) -> (ClusterState, Vec<ObjectError>) {
        let mut state = ClusterState::default();
        let mut results = Vec::new();
        results.extend(
            services
                .iter()
                .map(|svc| state.add_service(svc, proxy_name)),
        );
        results.extend(slices.iter().map(|slice| state.add_slice(slice)));
        results.extend(nodes.iter().map(|node| state.add_node(node, node_name)));
        let errors = results.into_iter().filter_map(Result::err).collect();
        (state, errors)
    }

    /// Adds (or replaces) a Service, unless it is not for this proxy.
    pub fn add_service(
        &mut self,
        svc: &K8sService,
        proxy_name: Option<&str>,
    ) -> Result<(), ObjectError> {
        if let Ok(info) = service_info(svc, proxy_name)? {
            self.services.insert(info.name.clone(), info);
        }
        Ok(())
    }

    /// Adds (or replaces) an EndpointSlice, unless it belongs to no
    /// Service.
    pub fn add_slice(&mut self, slice: &EndpointSlice) -> Result<(), ObjectError> {
        if let Some((name, info)) = slice_info(slice)? {
            self.slices.insert(name, info);
        }
        Ok(())
    }

    /// Takes `node` as this node when it is named `node_name`.
    pub fn add_node(&mut self, node: &Node, node_name: &str) -> Result<(), ObjectError> {
        if node.metadata.name.as_deref() == Some(node_name) {
            self.node = Some(node_info(node)?);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn addresses_parse_as_kube_proxys_parse_ip_sloppy() {
        assert_eq!(parse_ip_sloppy("010.001.002.003"), Some(ip("10.1.2.3")));
        assert_eq!(parse_ip_sloppy("10.96.0.1"), Some(ip("10.96.0.1")));
        assert_eq!(parse_ip_sloppy("::ffff:10.1.2.3"), Some(ip("10.1.2.3")));
        assert_eq!(parse_ip_sloppy("fd00::1"), Some(ip("fd00::1")));
        for bad in [
            "",
            "10.1.2",
            "10.1.2.3.4",
            "256.1.1.1",
            "1.2.3.0400",
            "a.b.c.d",
            " 10.1.2.3",
            "10..1.2",
        ] {
            assert_eq!(parse_ip_sloppy(bad), None, "{bad:?}");
        }
        assert_eq!(
            parse_cidr_sloppy("010.000.0.1/8"),
            Some("10.0.0.0/8".parse().unwrap()),
            "host bits cleared, as ParseCIDR's network"
        );
        assert_eq!(
            parse_cidr_sloppy("fd00::1/64"),
            Some("fd00::/64".parse().unwrap())
        );
        for bad in ["10.0.0.0", "10.0.0.0/33", "10.0.0.0/", "10.0.0.0/+8", "x/8"] {
            assert_eq!(parse_cidr_sloppy(bad), None, "{bad:?}");
        }
    }

    fn service(
        yaml: &str,
    ) -> (
        Result<Result<ServiceInfo, Skip>, ObjectError>,
        Vec<ObjectError>,
    ) {
        let svc: K8sService = serde_saphyr::from_str(yaml).unwrap();
        let mut warnings = Vec::new();
        let r = service_info_with(&svc, None, &mut warnings);
        (r, warnings)
    }

    #[test]
    fn bad_items_of_a_service_are_skipped_and_the_rest_kept() {
        let (info, warnings) = service(
            "metadata: {name: web, namespace: default}
spec:
  type: LoadBalancer
  clusterIP: 010.096.000.010
  externalIPs: [203.0.113.5, not-an-ip, '', 0203.000.113.006]
  loadBalancerSourceRanges: [' 10.0.0.0/8 ', bogus, 192.168.0.1/24]
  ports:
  - {name: http, port: 80, nodePort: 30080}
  - {name: bad, port: 0}
  - {name: odd, port: 81, protocol: ICMP}
status:
  loadBalancer: {ingress: [{ip: 198.51.100.7}, {ip: nope}]}
",
        );
        let info = info.unwrap().unwrap();
        assert_eq!(info.cluster_ips, [ip("10.96.0.10")]);
        assert_eq!(info.external_ips, [ip("203.0.113.5"), ip("203.0.113.6")]);
        assert_eq!(info.load_balancer_ips, [ip("198.51.100.7")]);
        assert_eq!(
            info.source_ranges,
            [
                "10.0.0.0/8".parse::<IpNet>().unwrap(),
                "192.168.0.0/24".parse().unwrap()
            ]
        );
        assert_eq!(info.ports.len(), 1);
        assert_eq!(info.ports[0].node_port, Some(30080));
        let fields: Vec<&str> = warnings.iter().map(|w| w.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "spec.externalIPs[1]",
                "status.loadBalancer.ingress[1].ip",
                "spec.loadBalancerSourceRanges[1]",
                "spec.ports[1].port",
                "spec.ports[2].protocol",
            ]
        );
        assert!(
            warnings[0].to_string().starts_with(
                "Service default/web: spec.externalIPs[1]: \"not-an-ip\" is not an IP address"
            ),
            "{}",
            warnings[0]
        );
        // What kube-proxy cannot work around still rejects the Service.
        let (err, _) = service(
            "metadata: {name: w, namespace: d}\nspec: {clusterIP: 10.96.0.300, ports: [{port: 80}]}\n",
        );
        assert_eq!(err.unwrap_err().field, "spec.clusterIPs[0]");
    }

    fn slice(yaml: &str) -> (SliceInfo, Vec<ObjectError>) {
        let slice: EndpointSlice = serde_saphyr::from_str(yaml).unwrap();
        let mut warnings = Vec::new();
        let (_, info) = slice_info_with(&slice, &mut warnings).unwrap().unwrap();
        (info, warnings)
    }

    #[test]
    fn bad_ports_and_endpoints_of_a_slice_are_skipped_and_the_rest_kept() {
        let (info, warnings) = slice(
            "metadata: {name: web-1, namespace: default, labels: {kubernetes.io/service-name: web}}
addressType: IPv4
ports:
- {name: http, port: 8080, protocol: TCP}
- {name: zero, port: 0, protocol: TCP}
- {port: 9090, protocol: TCP}
- {name: none, protocol: TCP}
endpoints:
- {addresses: [10.244.1.5]}
- {addresses: []}
- {addresses: [not-an-ip]}
- {addresses: [010.244.001.006]}
",
        );
        assert_eq!(info.ports.len(), 1);
        assert_eq!(
            (info.ports[0].name.as_str(), info.ports[0].port),
            ("http", 8080)
        );
        let addrs: Vec<IpAddr> = info.endpoints.iter().map(|e| e.addr).collect();
        assert_eq!(addrs, [ip("10.244.1.5"), ip("10.244.1.6")]);
        let fields: Vec<&str> = warnings.iter().map(|w| w.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "ports[1].port",
                "ports[2].name",
                "ports[3].port",
                "endpoints[1].addresses",
                "endpoints[2].addresses[0]",
            ]
        );
        assert!(
            warnings
                .iter()
                .all(|w| w.kind == "EndpointSlice" && w.object == "default/web-1")
        );
    }

    #[test]
    fn unset_serving_means_serving_and_empty_hint_lists_mean_no_hints() {
        let (info, warnings) = slice(
            "metadata: {name: web-1, namespace: default, labels: {kubernetes.io/service-name: web}}
addressType: IPv4
ports: [{name: http, port: 8080, protocol: TCP}]
endpoints:
- {addresses: [10.244.1.5], conditions: {ready: false, terminating: true}}
- {addresses: [10.244.1.6], hints: {forZones: [], forNodes: []}}
- {addresses: [10.244.1.7], hints: {forZones: [{name: a}], forNodes: [{name: n}]}}
",
        );
        assert!(warnings.is_empty(), "{warnings:?}");
        let e = &info.endpoints;
        // kube-proxy: `Serving == nil || *Serving`, not the value of ready.
        assert!(!e[0].ready && e[0].serving && e[0].terminating);
        assert_eq!(
            (e[1].zone_hints.as_ref(), e[1].node_hints.as_ref()),
            (None, None)
        );
        assert_eq!(e[2].zone_hints.as_deref(), Some(&["a".to_owned()][..]));
        assert_eq!(e[2].node_hints.as_deref(), Some(&["n".to_owned()][..]));
    }

    #[test]
    fn node_addresses_that_do_not_parse_are_skipped() {
        let n: Node = serde_saphyr::from_str(
            "metadata: {name: a}
status:
  addresses:
  - {type: InternalIP, address: bogus}
  - {type: InternalIP, address: 192.168.000.007}
",
        )
        .unwrap();
        let mut warnings = Vec::new();
        let n = node_info_with(&n, &mut warnings).unwrap();
        assert_eq!(n.addresses, [ip("192.168.0.7")]);
        assert_eq!(warnings[0].field, "status.addresses[0].address");
    }

    fn node(yaml: &str) -> Result<NodeInfo, ObjectError> {
        let node: Node = serde_saphyr::from_str(yaml).unwrap();
        node_info(&node)
    }

    #[test]
    fn a_node_being_deleted_or_drained_by_the_autoscaler_is_going_away() {
        assert!(!node("metadata: {name: a}\n").unwrap().deleting);
        let tainted = "metadata: {name: a}
spec:
  taints:
  - {key: example.com/other, effect: NoSchedule}
  - {key: ToBeDeletedByClusterAutoscaler, value: '1700000000', effect: NoSchedule}
";
        assert!(node(tainted).unwrap().deleting);
        let deleted = "metadata: {name: a, deletionTimestamp: '2026-12-05T00:00:00Z'}\n";
        assert!(node(deleted).unwrap().deleting);
    }

    #[test]
    fn nodes_keep_their_pod_cidrs_and_primary_addresses() {
        let n = node(
            "metadata: {name: a}
spec: {podCIDR: 10.244.1.0/24, podCIDRs: [10.244.1.0/24, 'fd00:244:1::/64']}
status:
  addresses:
  - {type: ExternalIP, address: 203.0.113.7}
  - {type: Hostname, address: a}
  - {type: InternalIP, address: 'fd00::7'}
  - {type: InternalIP, address: 192.168.0.7}
",
        )
        .unwrap();
        assert_eq!(
            n.addresses,
            [ip("fd00::7"), ip("192.168.0.7"), ip("203.0.113.7")]
        );
        assert_eq!(n.primary_ips(), [ip("fd00::7"), ip("192.168.0.7")]);
        assert_eq!(n.pod_cidr(false), Some("10.244.1.0/24".parse().unwrap()));
        assert_eq!(n.pod_cidr(true), Some("fd00:244:1::/64".parse().unwrap()));
        // The older single field, when podCIDRs is not there.
        let n = node("metadata: {name: a}\nspec: {podCIDR: 10.244.2.0/24}\n").unwrap();
        assert_eq!(n.pod_cidrs, ["10.244.2.0/24".parse::<IpNet>().unwrap()]);
        assert!(n.primary_ips().is_empty());
        // A pod CIDR that does not parse is skipped, the others kept.
        let bad: Node = serde_saphyr::from_str(
            "metadata: {name: a}\nspec: {podCIDRs: [10.244.1.0, 'fd00:244:1::/64']}\n",
        )
        .unwrap();
        let mut warnings = Vec::new();
        let n = node_info_with(&bad, &mut warnings).unwrap();
        assert_eq!(n.pod_cidrs, ["fd00:244:1::/64".parse::<IpNet>().unwrap()]);
        assert_eq!(warnings.len(), 1);
        assert_eq!(warnings[0].field, "spec.podCIDRs[0]", "{}", warnings[0]);
    }
}
