//! The typed view of the cluster the proxy works on.
//!
//! Kubernetes objects (`k8s-openapi` types) are validated and reduced here
//! to what service proxying needs: per Service its virtual addresses,
//! ports, policies and affinity; per EndpointSlice its endpoints with
//! their conditions and hints; the node's name, addresses and zone. An
//! object that cannot be used is rejected with an [`ObjectError`] naming
//! the object and the field, and the rest of the cluster still syncs.

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
    /// `conditions.serving` (unset means the value of ready).
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

struct Ctx {
    kind: &'static str,
    object: String,
}

impl Ctx {
    fn err(&self, field: impl Into<String>, problem: impl Into<String>) -> ObjectError {
        ObjectError {
            kind: self.kind,
            object: self.object.clone(),
            field: field.into(),
            problem: problem.into(),
        }
    }

    fn ip(&self, field: impl Into<String>, text: &str) -> Result<IpAddr, ObjectError> {
        text.parse()
            .map_err(|_| self.err(field, format!("{text:?} is not an IP address")))
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
}

/// Why a Service is not proxied at all (not an error).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Skip {
    /// `clusterIP: None`, or the headless label.
    Headless,
    /// `type: ExternalName`.
    ExternalName,
    /// Handed to another proxy by `service.kubernetes.io/service-proxy-name`.
    OtherProxy,
}

/// Validates a Service. `Ok(Err(skip))` for Services that are valid but
/// not for this proxy.
pub fn service_info(
    svc: &K8sService,
    proxy_name: Option<&str>,
) -> Result<Result<ServiceInfo, Skip>, ObjectError> {
    let name = object_name(&svc.metadata);
    let ctx = Ctx {
        kind: "Service",
        object: name.to_string(),
    };
    let labels = svc.metadata.labels.as_ref();
    let label = |key: &str| labels.and_then(|l| l.get(key)).map(String::as_str);
    if label(SERVICE_PROXY_NAME_LABEL) != proxy_name {
        return Ok(Err(Skip::OtherProxy));
    }
    if label(HEADLESS_LABEL).is_some() {
        return Ok(Err(Skip::Headless));
    }
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
    let external_ips = spec
        .external_ips
        .iter()
        .flatten()
        .enumerate()
        .map(|(i, ip)| ctx.ip(format!("spec.externalIPs[{i}]"), ip))
        .collect::<Result<Vec<_>, _>>()?;
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
            if let Some(ip) = &entry.ip {
                load_balancer_ips.push(ctx.ip(format!("status.loadBalancer.ingress[{i}].ip"), ip)?);
            }
        }
    }
    let node_ports_allowed = matches!(spec.type_.as_deref(), Some("NodePort" | "LoadBalancer"));
    let load_balancer = spec.type_.as_deref() == Some("LoadBalancer");
    let external_local = spec.external_traffic_policy.as_deref() == Some("Local");
    // kube-proxy reads the ranges of LoadBalancer Services only (the API
    // server rejects them on other types), trimming blanks.
    let mut source_ranges = Vec::new();
    if load_balancer {
        for (i, text) in spec
            .load_balancer_source_ranges
            .iter()
            .flatten()
            .enumerate()
        {
            let text = text.trim();
            let net = text.parse::<IpNet>().map_err(|_| {
                ctx.err(
                    format!("spec.loadBalancerSourceRanges[{i}]"),
                    format!("{text:?} is not a CIDR"),
                )
            })?;
            source_ranges.push(net);
        }
    }
    // kube-proxy's NeedsHealthCheck: LoadBalancer with the Local policy.
    let health_check_node_port = match spec.health_check_node_port {
        Some(p) if load_balancer && external_local && p != 0 => {
            Some(ctx.port("spec.healthCheckNodePort", p)?)
        }
        _ => None,
    };
    let mut ports = Vec::new();
    for (i, p) in spec.ports.iter().flatten().enumerate() {
        let node_port = match p.node_port {
            Some(np) if node_ports_allowed && np != 0 => {
                Some(ctx.port(format!("spec.ports[{i}].nodePort"), np)?)
            }
            _ => None,
        };
        ports.push(ServicePort {
            name: p.name.clone().unwrap_or_default(),
            protocol: ctx.protocol(format!("spec.ports[{i}].protocol"), p.protocol.as_deref())?,
            port: ctx.port(format!("spec.ports[{i}].port"), p.port)?,
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
        Some(other) => {
            return Err(ctx.err(
                "spec.sessionAffinity",
                format!("unsupported value {other:?}"),
            ));
        }
    };
    let scheduler = match svc
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(SCHEDULER_ANNOTATION))
    {
        Some(text) => Some(text.parse::<Scheduler>().map_err(|e| {
            ctx.err(
                format!("metadata.annotations[{SCHEDULER_ANNOTATION}]"),
                e.to_string(),
            )
        })?),
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
        topology_aware: matches!(
            spec.traffic_distribution.as_deref(),
            Some("PreferClose" | "PreferSameZone" | "PreferSameNode")
        ),
        source_ranges,
        health_check_node_port,
    }))
}

/// Validates an EndpointSlice. `Ok(None)` for slices not tied to a Service
/// or of an address type IPVS cannot serve (FQDN).
pub fn slice_info(slice: &EndpointSlice) -> Result<Option<(ObjectName, SliceInfo)>, ObjectError> {
    let name = object_name(&slice.metadata);
    let ctx = Ctx {
        kind: "EndpointSlice",
        object: name.to_string(),
    };
    let Some(service) = slice
        .metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(SERVICE_NAME_LABEL))
    else {
        return Ok(None);
    };
    if !matches!(slice.address_type.as_str(), "IPv4" | "IPv6") {
        return Ok(None);
    }
    // Sized up front: these stay in the proxy's view for the object's
    // life, and grown vectors keep up to half their capacity unused.
    let mut ports = Vec::with_capacity(slice.ports.as_ref().map_or(0, Vec::len));
    for (i, p) in slice.ports.iter().flatten().enumerate() {
        let Some(port) = p.port else { continue };
        ports.push(SlicePort {
            name: p.name.clone().unwrap_or_default(),
            protocol: ctx.protocol(format!("ports[{i}].protocol"), p.protocol.as_deref())?,
            port: ctx.port(format!("ports[{i}].port"), port)?,
        });
    }
    let mut endpoints = Vec::with_capacity(slice.endpoints.len());
    for (i, ep) in slice.endpoints.iter().enumerate() {
        let conditions = ep.conditions.as_ref();
        let ready = conditions.and_then(|c| c.ready).unwrap_or(true);
        let serving = conditions.and_then(|c| c.serving).unwrap_or(ready);
        let terminating = conditions.and_then(|c| c.terminating).unwrap_or(false);
        let hints = ep.hints.as_ref();
        let zone_hints = hints
            .and_then(|h| h.for_zones.as_ref())
            .map(|z| z.iter().map(|z| z.name.clone()).collect());
        let node_hints = hints
            .and_then(|h| h.for_nodes.as_ref())
            .map(|n| n.iter().map(|n| n.name.clone()).collect());
        // kube-proxy uses the first address of an endpoint.
        let Some(first) = ep.addresses.first() else {
            continue;
        };
        endpoints.push(EndpointInfo {
            addr: ctx.ip(format!("endpoints[{i}].addresses[0]"), first)?,
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

/// Reduces the node object.
pub fn node_info(node: &Node) -> Result<NodeInfo, ObjectError> {
    let name = node.metadata.name.clone().unwrap_or_default();
    let ctx = Ctx {
        kind: "Node",
        object: name.clone(),
    };
    let mut addresses = Vec::new();
    for kind in ["InternalIP", "ExternalIP"] {
        for (i, a) in node
            .status
            .iter()
            .flat_map(|s| s.addresses.iter().flatten())
            .enumerate()
        {
            if a.type_ == kind {
                addresses.push(ctx.ip(format!("status.addresses[{i}].address"), &a.address)?);
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
    let pod_cidrs = texts
        .iter()
        .enumerate()
        .map(|(i, text)| {
            let field = if field == "spec.podCIDRs" {
                format!("{field}[{i}]")
            } else {
                field.to_owned()
            };
            text.parse::<IpNet>()
                .map_err(|_| ctx.err(field, format!("{text:?} is not a CIDR")))
        })
        .collect::<Result<Vec<_>, _>>()?;
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
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
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
        let e = node("metadata: {name: a}\nspec: {podCIDRs: [10.244.1.0]}\n").unwrap_err();
        assert_eq!(e.field, "spec.podCIDRs[0]", "{e}");
    }
}
