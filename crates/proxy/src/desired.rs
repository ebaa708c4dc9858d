//! Desired IPVS state: a pure function of the cluster view and the config.
//!
//! It follows kube-proxy's IPVS mode. Every Service port yields a virtual
//! server on each cluster IP, external IP and load-balancer ingress IP
//! (those addresses are bound to `kube-ipvs0`), and, for NodePort and
//! LoadBalancer Services, on each node address at the node port. Real
//! servers are the endpoint address and target port, weight 1,
//! masqueraded. Endpoint choice follows kube-proxy's rules:
//!
//! * ready endpoints; if none are ready, the serving and terminating ones;
//! * topology hints narrow the cluster set to this node's zone (or this
//!   node) when every ready endpoint carries hints and one matches;
//! * `internalTrafficPolicy: Local` serves cluster IPs from this node's
//!   endpoints only, `externalTrafficPolicy: Local` does the same for
//!   external IPs, load-balancer IPs and node ports;
//! * `sessionAffinity: ClientIP` makes the virtual server persistent for
//!   `timeoutSeconds` (default 10800) per client address;
//! * the scheduler is the node default or the Service's
//!   `rvs.dev/ipvs-scheduler` annotation; with `mh` the virtual server
//!   also gets the `mh-port` flag, as kube-proxy sets it.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};

use rvs_model::{Destination, Protocol, Scheduler, Service, ServiceFlags, ServiceKey};

use crate::cluster::{ClusterState, EndpointInfo, ObjectName, ServicePort, SliceInfo};
use crate::config::{ProxyConfig, node_port_ips};

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
pub fn desired_for(
    cluster: &ClusterState,
    config: &ProxyConfig,
    only: Option<&BTreeSet<ObjectName>>,
) -> Desired {
    let wanted = |name: &ObjectName| only.is_none_or(|set| set.contains(name));
    let mut desired = Desired::default();
    let node_addresses = node_port_ips(cluster.node.as_ref(), config);
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
        for port in &svc.ports {
            let endpoints = endpoints_for(slices, port);
            let sets = EndpointSets::new(&endpoints, cluster, config);
            let internal = if svc.internal_local {
                &sets.local
            } else {
                &sets.cluster
            };
            let external = if svc.external_local {
                &sets.local
            } else {
                &sets.cluster
            };
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
                    .filter(|(addr, _)| addr.is_ipv6() == ip.is_ipv6())
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
            for ip in &svc.cluster_ips {
                add(*ip, port.port, VipKind::ClusterIp, internal);
            }
            for ip in &svc.external_ips {
                add(*ip, port.port, VipKind::ExternalIp, external);
            }
            for ip in &svc.load_balancer_ips {
                add(*ip, port.port, VipKind::LoadBalancer, external);
            }
            if let Some(node_port) = port.node_port {
                for ip in &node_addresses {
                    add(*ip, node_port, VipKind::NodePort, external);
                }
            }
        }
        desired.addresses.extend(
            svc.cluster_ips
                .iter()
                .chain(&svc.external_ips)
                .chain(&svc.load_balancer_ips),
        );
    }
    desired
}

/// The endpoints of one Service port, with their target ports, one per
/// address and target port. An endpoint listed twice (in two slices
/// while it moves between them, or a terminating pod and a new one
/// sharing an IP) counts once, and the non-terminating copy wins, as in
/// kube-proxy's `EndpointSliceCache.addEndpoints`.
fn endpoints_for<'a>(slices: &[&'a SliceInfo], port: &ServicePort) -> Vec<(&'a EndpointInfo, u16)> {
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

/// The endpoint sets kube-proxy derives for one Service port.
struct EndpointSets {
    cluster: Vec<(IpAddr, u16)>,
    local: Vec<(IpAddr, u16)>,
}

impl EndpointSets {
    fn new(
        endpoints: &[(&EndpointInfo, u16)],
        cluster: &ClusterState,
        config: &ProxyConfig,
    ) -> EndpointSets {
        let node = cluster.node.as_ref();
        let node_name = node
            .map(|n| n.name.as_str())
            .unwrap_or(config.node_name.as_str());
        let is_local = |ep: &EndpointInfo| ep.node_name.as_deref() == Some(node_name);
        let ready: Vec<&(&EndpointInfo, u16)> =
            endpoints.iter().filter(|(ep, _)| ep.ready).collect();

        // Topology: node hints, then zone hints, when every ready endpoint
        // has them and at least one matches this node.
        let by_hint =
            |hint: &dyn Fn(&EndpointInfo) -> Option<bool>| -> Option<Vec<&(&EndpointInfo, u16)>> {
                if ready.is_empty() || ready.iter().any(|(ep, _)| hint(ep).is_none()) {
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
        let zone = node.and_then(|n| n.zone.clone());
        let zone_hint = |ep: &EndpointInfo| match &zone {
            Some(zone) => ep.zone_hints.as_ref().map(|h| h.iter().any(|z| z == zone)),
            None => None,
        };
        let topo = by_hint(&node_hint).or_else(|| by_hint(&zone_hint));

        let pick = |eps: Vec<&(&EndpointInfo, u16)>| -> Vec<(IpAddr, u16)> {
            eps.into_iter().map(|(ep, port)| (ep.addr, *port)).collect()
        };
        let fallback = |local_only: bool| -> Vec<(IpAddr, u16)> {
            pick(
                endpoints
                    .iter()
                    .filter(|(ep, _)| ep.serving && ep.terminating && (!local_only || is_local(ep)))
                    .collect(),
            )
        };
        let cluster_set = match topo {
            Some(eps) => pick(eps),
            None if !ready.is_empty() => pick(ready.clone()),
            None => fallback(false),
        };
        let local_ready: Vec<_> = ready
            .iter()
            .copied()
            .filter(|(ep, _)| is_local(ep))
            .collect();
        let local_set = if local_ready.is_empty() {
            fallback(true)
        } else {
            pick(local_ready)
        };
        EndpointSets {
            cluster: cluster_set,
            local: local_set,
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
