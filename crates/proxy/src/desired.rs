//! Desired IPVS state: a pure function of the cluster view and the config.
//!
//! It follows kube-proxy's IPVS mode. Every Service port yields a virtual
//! server on each cluster IP, external IP and load-balancer ingress IP
//! (those addresses are bound to `kube-ipvs0`, but for external and
//! ingress IPs the host already has), and, for NodePort and LoadBalancer
//! Services, on each of the host's addresses at the node port (see
//! [`node_port_ips`]). Real
//! servers are the endpoint address and target port, weight 1,
//! masqueraded. Endpoint choice follows kube-proxy's rules:
//!
//! * ready endpoints; if none are ready, the serving and terminating ones;
//! * topology hints narrow the cluster set to this node's zone (or this
//!   node) when every ready endpoint carries hints and one matches;
//! * `internalTrafficPolicy: Local` serves cluster IPs from this node's
//!   endpoints, `externalTrafficPolicy: Local` does the same for
//!   external IPs, load-balancer IPs and node ports; without a local
//!   endpoint both fall back to the cluster set as kube-proxy's
//!   `syncEndpoint` does (kubernetes#97081), which is empty for an
//!   `internalTrafficPolicy: Local` Service no one reaches from outside;
//! * an endpoint in two slices counts once, the non-terminating copy
//!   first; a Service takes part in an IP family only through its
//!   cluster IP of that family;
//! * `sessionAffinity: ClientIP` makes the virtual server persistent for
//!   `timeoutSeconds` (default 10800) per client address;
//! * the scheduler is the node default or the Service's
//!   `rvs.dev/ipvs-scheduler` annotation; with `mh` the virtual server
//!   also gets the `mh-port` flag, as kube-proxy sets it.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};

use rvs_model::{Destination, Protocol, Scheduler, Service, ServiceFlags, ServiceKey};

use crate::cluster::{ClusterState, EndpointInfo, ObjectName, ServicePort, SliceInfo};
use crate::config::{ProxyConfig, host_addresses, node_port_ips};

/// Which kind of address a virtual server listens on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum VipKind {
    /// A cluster IP.
    ClusterIp,
    /// An external IP.
    ExternalIp,
    /// A load-balancer ingress IP.
    LoadBalancer,
    /// A node address at a node port.
    NodePort,
}

/// One virtual server the node should have.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DesiredService {
    /// The virtual server.
    pub service: Service,
    /// Its real servers, by address.
    pub destinations: BTreeMap<SocketAddr, Destination>,
    /// The Service and port it comes from.
    pub origin: (ObjectName, String),
    /// What kind of address it listens on.
    pub kind: VipKind,
}

/// The node's desired IPVS state.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Desired {
    /// Virtual servers by key.
    pub services: BTreeMap<ServiceKey, DesiredService>,
    /// Addresses to bind to `kube-ipvs0`.
    pub addresses: BTreeSet<IpAddr>,
}

/// Computes the desired state. Pure: same input, same output.
pub fn desired_state(cluster: &ClusterState, config: &ProxyConfig) -> Desired {
    desired_for(cluster, config, None)
}

/// Desired state for some Services only (`None`: all), for syncs that
/// touch only what changed.
///
/// As kube-proxy, which runs one proxier per IP family, a Service takes
/// part in a family through its cluster IP of that family: a
/// single-stack Service gets no virtual server of the other family, on
/// node addresses, external IPs or load-balancer IPs alike
/// (`ServiceChangeTracker` drops it when `GetClusterIPByFamily` is
/// empty, and `newBaseServiceInfo` keeps only the family's external and
/// ingress IPs).
pub fn desired_for(
    cluster: &ClusterState,
    config: &ProxyConfig,
    only: Option<&BTreeSet<ObjectName>>,
) -> Desired {
    let wanted = |name: &ObjectName| only.is_none_or(|set| set.contains(name));
    let mut desired = Desired::default();
    let node_addresses = node_port_ips(cluster.node.as_ref(), config);
    let host = host_addresses(cluster.node.as_ref(), config);
    let mut slices_by_service: BTreeMap<&ObjectName, Vec<&SliceInfo>> = BTreeMap::new();
    for slice in cluster.slices.values().filter(|s| wanted(&s.service)) {
        slices_by_service
            .entry(&slice.service)
            .or_default()
            .push(slice);
    }
    for svc in cluster.services.values().filter(|s| wanted(&s.name)) {
        let slices = slices_by_service
            .get(&svc.name)
            .map(Vec::as_slice)
            .unwrap_or_default();
        for &cluster_ip in &svc.cluster_ips {
            let ipv6 = cluster_ip.is_ipv6();
            let family = |ip: &&IpAddr| ip.is_ipv6() == ipv6;
            let external_ips: Vec<IpAddr> =
                svc.external_ips.iter().filter(family).copied().collect();
            let lb_ips: Vec<IpAddr> = svc
                .load_balancer_ips
                .iter()
                .filter(family)
                .copied()
                .collect();
            let node_ips: Vec<IpAddr> = node_addresses.iter().filter(family).copied().collect();
            for port in &svc.ports {
                let endpoints: Vec<(&EndpointInfo, u16)> = endpoints_for(slices, port)
                    .into_iter()
                    .filter(|(ep, _)| ep.addr.is_ipv6() == ipv6)
                    .collect();
                let policy = Policy {
                    internal_local: svc.internal_local,
                    external_local: svc.external_local,
                    externally_accessible: port.node_port.is_some()
                        || !external_ips.is_empty()
                        || !lb_ips.is_empty(),
                };
                let sets = EndpointSets::new(&endpoints, policy, cluster, config);
                let internal = sets.for_policy(svc.internal_local);
                let external = sets.for_policy(svc.external_local);
                let mut add = |ip: IpAddr, vport: u16, kind: VipKind, dests: &[(IpAddr, u16)]| {
                    let key = ServiceKey::Addr {
                        protocol: port.protocol,
                        addr: SocketAddr::new(ip, vport),
                    };
                    if desired.services.contains_key(&key) {
                        return;
                    }
                    let mut service = Service::new(key, svc.scheduler.unwrap_or(config.scheduler));
                    if let Some(timeout) = svc.affinity_timeout {
                        service = service.persistent(timeout);
                    }
                    service.flags = scheduler_flags(service.scheduler, service.flags);
                    let destinations = dests
                        .iter()
                        .map(|(addr, p)| {
                            let sa = SocketAddr::new(*addr, *p);
                            (sa, Destination::masquerade(sa))
                        })
                        .collect();
                    desired.services.insert(
                        key,
                        DesiredService {
                            service,
                            destinations,
                            origin: (svc.name.clone(), port.name.clone()),
                            kind,
                        },
                    );
                };
                add(cluster_ip, port.port, VipKind::ClusterIp, internal);
                for ip in &external_ips {
                    add(*ip, port.port, VipKind::ExternalIp, external);
                }
                for ip in &lb_ips {
                    add(*ip, port.port, VipKind::LoadBalancer, external);
                }
                if let Some(node_port) = port.node_port {
                    for ip in &node_ips {
                        add(*ip, node_port, VipKind::NodePort, external);
                    }
                }
            }
            desired.addresses.insert(cluster_ip);
            // kube-proxy binds no external or ingress IP the host already
            // has ('We must not add the address to the dummy device if it
            // exist on another interface'), so KUBE-IPVS-FILTER does not
            // reject the host's other ports on it.
            desired.addresses.extend(
                external_ips
                    .iter()
                    .chain(&lb_ips)
                    .filter(|ip| !host.contains(ip)),
            );
        }
    }
    desired
}

/// The endpoints of one Service port, with their target ports, one per
/// address and target port. An endpoint listed twice (in two slices
/// while it moves between them, or a terminating pod and a new one
/// sharing an IP) counts once, and the non-terminating copy wins, as in
/// kube-proxy's `EndpointSliceCache.addEndpoints`.
pub(crate) fn endpoints_for<'a>(
    slices: &[&'a SliceInfo],
    port: &ServicePort,
) -> Vec<(&'a EndpointInfo, u16)> {
    let mut out: Vec<(&EndpointInfo, u16)> = Vec::new();
    let mut index: BTreeMap<(IpAddr, u16), usize> = BTreeMap::new();
    for slice in slices {
        let Some(target) = slice
            .ports
            .iter()
            .find(|p| p.name == port.name && p.protocol == port.protocol)
        else {
            continue;
        };
        for ep in &slice.endpoints {
            match index.get(&(ep.addr, target.port)) {
                None => {
                    index.insert((ep.addr, target.port), out.len());
                    out.push((ep, target.port));
                }
                Some(&i) if !ep.terminating => out[i] = (ep, target.port),
                Some(_) => {}
            }
        }
    }
    out
}

/// What decides which endpoint sets a Service port uses (kube-proxy's
/// `ServicePort` policy methods, for one family).
#[derive(Clone, Copy, Debug)]
struct Policy {
    internal_local: bool,
    external_local: bool,
    /// A node port, or external or load-balancer IPs of the family.
    externally_accessible: bool,
}

impl Policy {
    /// `UsesClusterEndpoints`: `Cluster` internal policy, or any
    /// external access (even with the `Local` external policy, for
    /// the fallback below).
    fn uses_cluster(self) -> bool {
        !self.internal_local || self.externally_accessible
    }

    /// `UsesLocalEndpoints`.
    fn uses_local(self) -> bool {
        self.internal_local || (self.external_local && self.externally_accessible)
    }
}

/// The endpoint sets kube-proxy derives for one Service port of one
/// family (`CategorizeEndpoints` in `pkg/proxy/topology.go`).
struct EndpointSets {
    cluster: Vec<(IpAddr, u16)>,
    local: Vec<(IpAddr, u16)>,
}

impl EndpointSets {
    fn new(
        endpoints: &[(&EndpointInfo, u16)],
        policy: Policy,
        cluster: &ClusterState,
        config: &ProxyConfig,
    ) -> EndpointSets {
        let node = cluster.node.as_ref();
        let node_name = node
            .map(|n| n.name.as_str())
            .unwrap_or(config.node_name.as_str());
        let is_local =
            |ep: &EndpointInfo| !node_name.is_empty() && ep.node_name.as_deref() == Some(node_name);
        let ready: Vec<&(&EndpointInfo, u16)> =
            endpoints.iter().filter(|(ep, _)| ep.ready).collect();
        let pick = |eps: Vec<&(&EndpointInfo, u16)>| -> Vec<(IpAddr, u16)> {
            eps.into_iter().map(|(ep, port)| (ep.addr, *port)).collect()
        };
        let serving_terminating = |local_only: bool| -> Vec<(IpAddr, u16)> {
            pick(
                endpoints
                    .iter()
                    .filter(|(ep, _)| ep.serving && ep.terminating && (!local_only || is_local(ep)))
                    .collect(),
            )
        };

        let mut cluster_set = Vec::new();
        if policy.uses_cluster() {
            // Topology: node hints, then zone hints, when every ready
            // endpoint has them and at least one matches this node.
            let by_hint = |hint: &dyn Fn(&EndpointInfo) -> Option<bool>| -> Option<Vec<&(&EndpointInfo, u16)>> {
                if ready.iter().any(|(ep, _)| hint(ep).is_none()) {
                    return None;
                }
                let matching: Vec<_> = ready
                    .iter()
                    .copied()
                    .filter(|(ep, _)| hint(ep) == Some(true))
                    .collect();
                (!matching.is_empty()).then_some(matching)
            };
            let node_hint = |ep: &EndpointInfo| {
                ep.node_hints
                    .as_ref()
                    .map(|h| h.iter().any(|n| n == node_name))
            };
            let zone = node.and_then(|n| n.zone.clone()).unwrap_or_default();
            let zone_hint = |ep: &EndpointInfo| ep.zone_hints.as_ref().map(|h| h.contains(&zone));
            let topo = by_hint(&node_hint).or_else(|| by_hint(&zone_hint));
            cluster_set = match topo {
                Some(eps) => pick(eps),
                None if !ready.is_empty() => pick(ready.clone()),
                None => serving_terminating(false),
            };
        }
        let mut local_set = Vec::new();
        if policy.uses_local() {
            let local_ready: Vec<_> = ready
                .iter()
                .copied()
                .filter(|(ep, _)| is_local(ep))
                .collect();
            local_set = if local_ready.is_empty() {
                serving_terminating(true)
            } else {
                pick(local_ready)
            };
        }
        EndpointSets {
            cluster: cluster_set,
            local: local_set,
        }
    }

    /// The real servers of a virtual server whose traffic policy is
    /// `Local` (`only_local`) or `Cluster`, as kube-proxy's IPVS
    /// `syncEndpoint`: the local endpoints, and when there are none the
    /// cluster ones (kubernetes#97081: pods on this node still reach the
    /// Service; external traffic to it is dropped by the rules, whose
    /// replies carry pod addresses).
    fn for_policy(&self, only_local: bool) -> &[(IpAddr, u16)] {
        if only_local && !self.local.is_empty() {
            &self.local
        } else {
            &self.cluster
        }
    }
}

/// The scheduler flags kube-proxy sets: `mh-port`
/// (`IP_VS_SVC_F_SCHED_MH_PORT`, kube-proxy's `FlagSourceHash` 0x10) with
/// the `mh` scheduler, so Maglev hashes the client's port too and
/// connections from one client spread over the real servers
/// (`pkg/proxy/ipvs/proxier.go`: `if proxier.ipvsScheduler == "mh"`).
/// rvs applies it to a Service's annotated `mh` as well.
pub fn scheduler_flags(scheduler: Scheduler, flags: ServiceFlags) -> ServiceFlags {
    flags.with(ServiceFlags::SCHED2, scheduler == Scheduler::Maglev)
}

/// `true` for protocols whose removed real servers are deleted at once
/// rather than drained (kube-proxy #71514: UDP and SCTP have no
/// connection teardown to wait for).
pub fn deletes_immediately(protocol: Protocol) -> bool {
    matches!(protocol, Protocol::Udp | Protocol::Sctp)
}
