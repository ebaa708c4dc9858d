//! Desired ipset members: a pure function of the cluster view and the
//! config, following kube-proxy's IPVS mode (`syncProxyRules`).
//!
//! For one IP family it yields the members of each of kube-proxy's sets,
//! keyed by the set's IPv4 name (`KUBE-CLUSTER-IP`; the netfilter side
//! turns it into `KUBE-6-…` for IPv6) and written in kube-proxy's entry
//! format (`10.96.0.10,tcp:53`, `10.244.1.5,tcp:8080,10.244.1.5`,
//! `192.0.2.10,tcp:443,203.0.113.0/24`, `30080`), which is also what
//! `rvs_netfilter::ipset::Entry::parse` reads:
//!
//! * `KUBE-CLUSTER-IP`: each cluster IP of the family with each port;
//! * `KUBE-LOOP-BACK`: each endpoint on this node (any condition) as
//!   `ip,proto:targetPort,ip`, for hairpin masquerade;
//! * `KUBE-EXTERNAL-IP` / `KUBE-EXTERNAL-IP-LOCAL`: external IPs by
//!   `externalTrafficPolicy`;
//! * `KUBE-LOAD-BALANCER` (+ `-LOCAL` for `Local` policy): ingress IPs;
//!   with `loadBalancerSourceRanges`, also `KUBE-LOAD-BALANCER-FW`, one
//!   `KUBE-LOAD-BALANCER-SOURCE-CIDR` member per range (two `/1`s for a
//!   `/0`, which ipset cannot store — where kube-proxy fails), and either
//!   `KUBE-LOAD-BALANCER-SOURCE-IP` (`lb,proto:port,lb`, when a range
//!   holds the node IP) or an entry in [`IpsetEntries::lb_no_node_access`]
//!   (the KUBE-IPVS-OUT-FILTER DROP rules, kube-proxy #119656);
//! * `KUBE-NODE-PORT-TCP`/`-UDP` (bitmap ports) and
//!   `KUBE-NODE-PORT-SCTP-HASH` (`nodeIP,sctp:port` per node address),
//!   plus the `-LOCAL` variants for `Local` policy — only when the node
//!   has addresses of the family that serve node ports;
//! * `KUBE-HEALTH-CHECK-NODE-PORT`: `healthCheckNodePort`s;
//! * `KUBE-IPVS-IPS`: the addresses bound to kube-ipvs0 (cluster IPs,
//!   and external/ingress IPs that are not the host's own addresses).
//!
//! Every member comes from exactly one Service, so the sets are also
//! kept per Service ([`IpsetTracker`]): a partial sync recomputes the
//! changed Services only and gets the members to add and delete, with
//! reference counts for members two Services share.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use ipnet::IpNet;
use rvs_model::Protocol;

use crate::cluster::{ClusterState, NodeInfo, ObjectName, ServiceInfo, SliceInfo};
use crate::config::{ProxyConfig, host_addresses, node_port_ips};

/// An IP family (kube-proxy runs one proxier per family).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum IpFamily {
    /// IPv4.
    V4,
    /// IPv6.
    V6,
}

impl IpFamily {
    /// Whether `addr` is of this family.
    pub fn has(self, addr: &IpAddr) -> bool {
        addr.is_ipv6() == (self == IpFamily::V6)
    }
}

/// kube-proxy's set names (IPv4 spelling).
pub mod names {
    /// `hash:ip,port,ip`.
    pub const LOOP_BACK: &str = "KUBE-LOOP-BACK";
    /// `hash:ip,port`.
    pub const CLUSTER_IP: &str = "KUBE-CLUSTER-IP";
    /// `hash:ip,port`.
    pub const EXTERNAL_IP: &str = "KUBE-EXTERNAL-IP";
    /// `hash:ip,port`.
    pub const EXTERNAL_IP_LOCAL: &str = "KUBE-EXTERNAL-IP-LOCAL";
    /// `hash:ip,port`.
    pub const LOAD_BALANCER: &str = "KUBE-LOAD-BALANCER";
    /// `hash:ip,port`.
    pub const LOAD_BALANCER_FW: &str = "KUBE-LOAD-BALANCER-FW";
    /// `hash:ip,port`.
    pub const LOAD_BALANCER_LOCAL: &str = "KUBE-LOAD-BALANCER-LOCAL";
    /// `hash:ip,port,ip`.
    pub const LOAD_BALANCER_SOURCE_IP: &str = "KUBE-LOAD-BALANCER-SOURCE-IP";
    /// `hash:ip,port,net`.
    pub const LOAD_BALANCER_SOURCE_CIDR: &str = "KUBE-LOAD-BALANCER-SOURCE-CIDR";
    /// `bitmap:port`.
    pub const NODE_PORT_TCP: &str = "KUBE-NODE-PORT-TCP";
    /// `bitmap:port`.
    pub const NODE_PORT_LOCAL_TCP: &str = "KUBE-NODE-PORT-LOCAL-TCP";
    /// `bitmap:port`.
    pub const NODE_PORT_UDP: &str = "KUBE-NODE-PORT-UDP";
    /// `bitmap:port`.
    pub const NODE_PORT_LOCAL_UDP: &str = "KUBE-NODE-PORT-LOCAL-UDP";
    /// `hash:ip,port`.
    pub const NODE_PORT_SCTP: &str = "KUBE-NODE-PORT-SCTP-HASH";
    /// `hash:ip,port`.
    pub const NODE_PORT_LOCAL_SCTP: &str = "KUBE-NODE-PORT-LOCAL-SCTP-HASH";
    /// `bitmap:port`.
    pub const HEALTH_CHECK_NODE_PORT: &str = "KUBE-HEALTH-CHECK-NODE-PORT";
    /// `hash:ip`.
    pub const IPVS_IPS: &str = "KUBE-IPVS-IPS";
}

/// The desired members of kube-proxy's sets for one family.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IpsetEntries {
    /// The family.
    pub family: IpFamily,
    /// Members by set name ([`names`]); sets without members are absent.
    pub sets: BTreeMap<&'static str, BTreeSet<String>>,
    /// Load-balancer `ip,proto:port`s the node itself must not reach:
    /// they have source ranges and none holds the node IP.
    pub lb_no_node_access: BTreeSet<String>,
}

impl IpsetEntries {
    fn new(family: IpFamily) -> IpsetEntries {
        IpsetEntries {
            family,
            sets: BTreeMap::new(),
            lb_no_node_access: BTreeSet::new(),
        }
    }

    fn add(&mut self, set: &'static str, entry: String) {
        self.sets.entry(set).or_default().insert(entry);
    }

    /// The members of `set` (empty if none).
    pub fn get(&self, set: &str) -> Vec<&str> {
        self.sets
            .get(set)
            .into_iter()
            .flatten()
            .map(String::as_str)
            .collect()
    }
}

/// How the aggregate members of one family changed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct IpsetDelta {
    /// Members to add: (set, member).
    pub add: Vec<(&'static str, String)>,
    /// Members to delete: (set, member).
    pub del: Vec<(&'static str, String)>,
    /// A set became empty or non-empty, or
    /// [`IpsetEntries::lb_no_node_access`] changed: the iptables rules
    /// depend on both.
    pub rules_input_changed: bool,
}

impl IpsetDelta {
    /// Whether nothing changed.
    pub fn is_empty(&self) -> bool {
        self.add.is_empty() && self.del.is_empty() && !self.rules_input_changed
    }
}

/// The members of one family's sets, kept per Service with reference
/// counts, so that a partial sync costs work in proportion to the
/// Services that changed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IpsetTracker {
    family: IpFamily,
    per_service: BTreeMap<ObjectName, IpsetEntries>,
    /// How many Services hold each member; sets without members absent.
    counts: BTreeMap<&'static str, BTreeMap<String, u32>>,
    lb_counts: BTreeMap<String, u32>,
}

fn count_up<K: Ord>(map: &mut BTreeMap<K, u32>, key: K) -> bool {
    let n = map.entry(key).or_insert(0);
    *n += 1;
    *n == 1
}

fn count_down<K: Ord>(map: &mut BTreeMap<K, u32>, key: &K) -> bool {
    match map.get_mut(key) {
        Some(n) if *n > 1 => {
            *n -= 1;
            false
        }
        Some(_) => {
            map.remove(key);
            true
        }
        None => false,
    }
}

impl IpsetTracker {
    /// No Services.
    pub fn new(family: IpFamily) -> IpsetTracker {
        IpsetTracker {
            family,
            per_service: BTreeMap::new(),
            counts: BTreeMap::new(),
            lb_counts: BTreeMap::new(),
        }
    }

    /// Every Service of the cluster view (a full sync).
    pub fn build(cluster: &ClusterState, config: &ProxyConfig, family: IpFamily) -> IpsetTracker {
        let mut tracker = IpsetTracker::new(family);
        tracker.update_services(cluster, config, None);
        tracker
    }

    /// The family.
    pub fn family(&self) -> IpFamily {
        self.family
    }

    /// Recomputes the Services in `only` (`None`: all of them) from the
    /// cluster view; Services gone from the view lose their members.
    /// Returns the aggregate change.
    pub fn update_services(
        &mut self,
        cluster: &ClusterState,
        config: &ProxyConfig,
        only: Option<&BTreeSet<ObjectName>>,
    ) -> IpsetDelta {
        let wanted = |name: &ObjectName| only.is_none_or(|set| set.contains(name));
        let ctx = FamilyContext::new(cluster, config, self.family);
        let mut slices: BTreeMap<&ObjectName, Vec<&SliceInfo>> = BTreeMap::new();
        for slice in cluster.slices.values().filter(|s| wanted(&s.service)) {
            slices.entry(&slice.service).or_default().push(slice);
        }
        let names: Vec<ObjectName> = match only {
            Some(set) => set.iter().cloned().collect(),
            None => self
                .per_service
                .keys()
                .chain(cluster.services.keys())
                .cloned()
                .collect::<BTreeSet<_>>()
                .into_iter()
                .collect(),
        };
        let mut delta = IpsetDelta::default();
        for name in names {
            let new = cluster.services.get(&name).map(|svc| {
                let own = slices.get(&name).map(Vec::as_slice).unwrap_or_default();
                service_ipsets(svc, own, &ctx)
            });
            self.replace(&name, new, &mut delta);
        }
        delta
    }

    /// Replaces what `name` contributes (`None`: nothing), adding the
    /// aggregate change to `delta`.
    fn replace(&mut self, name: &ObjectName, new: Option<IpsetEntries>, delta: &mut IpsetDelta) {
        let old = match new {
            Some(new) if new.sets.is_empty() && new.lb_no_node_access.is_empty() => {
                self.per_service.remove(name)
            }
            Some(new) => {
                if self.per_service.get(name) == Some(&new) {
                    return;
                }
                let old = self.per_service.remove(name);
                for (set, members) in &new.sets {
                    let counts = self.counts.entry(set).or_default();
                    let was_empty = counts.is_empty();
                    for m in members {
                        let had = old
                            .as_ref()
                            .and_then(|o| o.sets.get(set))
                            .is_some_and(|o| o.contains(m));
                        if !had && count_up(counts, m.clone()) {
                            delta.add.push((set, m.clone()));
                        }
                    }
                    delta.rules_input_changed |= was_empty && !counts.is_empty();
                }
                for m in &new.lb_no_node_access {
                    let had = old
                        .as_ref()
                        .is_some_and(|o| o.lb_no_node_access.contains(m));
                    if !had {
                        delta.rules_input_changed |= count_up(&mut self.lb_counts, m.clone());
                    }
                }
                // What the old contribution had and the new one lacks.
                if let Some(old) = &old {
                    self.release(old, Some(&new), delta);
                }
                self.per_service.insert(name.clone(), new);
                return;
            }
            None => self.per_service.remove(name),
        };
        if let Some(old) = old {
            self.release(&old, None, delta);
        }
    }

    /// Drops the members of `old` that `new` does not hold.
    fn release(&mut self, old: &IpsetEntries, new: Option<&IpsetEntries>, delta: &mut IpsetDelta) {
        for (set, members) in &old.sets {
            let kept = new.and_then(|n| n.sets.get(set));
            let Some(counts) = self.counts.get_mut(set) else {
                continue;
            };
            for m in members {
                if kept.is_some_and(|k| k.contains(m)) {
                    continue;
                }
                if count_down(counts, m) {
                    delta.del.push((set, m.clone()));
                }
            }
            if counts.is_empty() {
                self.counts.remove(set);
                delta.rules_input_changed = true;
            }
        }
        for m in &old.lb_no_node_access {
            if new.is_some_and(|n| n.lb_no_node_access.contains(m)) {
                continue;
            }
            delta.rules_input_changed |= count_down(&mut self.lb_counts, m);
        }
    }

    /// The members of `set` (IPv4 name, see [`names`]).
    pub fn members(&self, set: &str) -> impl Iterator<Item = &str> {
        self.counts
            .get(set)
            .into_iter()
            .flat_map(|m| m.keys().map(String::as_str))
    }

    /// Whether `set` has members.
    pub fn is_empty(&self, set: &str) -> bool {
        !self.counts.contains_key(set)
    }

    /// Load-balancer `ip,proto:port`s the node itself must not reach.
    pub fn lb_no_node_access(&self) -> impl Iterator<Item = &str> {
        self.lb_counts.keys().map(String::as_str)
    }

    /// The aggregate, as [`desired_ipsets`] computes it.
    pub fn entries(&self) -> IpsetEntries {
        IpsetEntries {
            family: self.family,
            sets: self
                .counts
                .iter()
                .map(|(set, m)| (*set, m.keys().cloned().collect()))
                .collect(),
            lb_no_node_access: self.lb_counts.keys().cloned().collect(),
        }
    }
}

fn proto(p: Protocol) -> &'static str {
    match p {
        Protocol::Tcp => "tcp",
        Protocol::Udp => "udp",
        Protocol::Sctp => "sctp",
    }
}

/// What the sets of one family depend on besides the Service itself:
/// this node's name and addresses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FamilyContext {
    family: IpFamily,
    node_name: String,
    /// The node's own addresses of the family ([`host_addresses`]).
    node_addrs: Vec<IpAddr>,
    /// kube-proxy's nodeIP of the family ([`node_ip`]).
    node_ip: Option<IpAddr>,
    /// Node addresses that serve node ports.
    node_port_ips: Vec<IpAddr>,
}

/// kube-proxy's nodeIP of a family, as `detectNodeIPs`
/// (`cmd/kube-proxy/app/server.go`) makes it: `--bind-address` when it
/// is set (not `0.0.0.0` or `::`) and of the family, else the Node
/// object's primary address of the family, else the family's loopback
/// address. The IPVS proxier lets a load balancer's own node through its
/// source ranges when they hold this address (`allowFromNode`).
pub fn node_ip(node: Option<&NodeInfo>, config: &ProxyConfig, family: IpFamily) -> IpAddr {
    if let Some(bind) = config
        .bind_address
        .map(|b| b.to_canonical())
        .filter(|b| !b.is_unspecified() && family.has(b))
    {
        return bind;
    }
    node.map(NodeInfo::primary_ips)
        .unwrap_or_default()
        .into_iter()
        .find(|a| family.has(a))
        .unwrap_or(match family {
            IpFamily::V4 => IpAddr::from(std::net::Ipv4Addr::LOCALHOST),
            IpFamily::V6 => IpAddr::from(std::net::Ipv6Addr::LOCALHOST),
        })
}

impl FamilyContext {
    /// The context of `family` for this cluster view and config.
    pub fn new(cluster: &ClusterState, config: &ProxyConfig, family: IpFamily) -> FamilyContext {
        let node = cluster.node.as_ref();
        let node_name = node
            .map(|n| n.name.clone())
            .unwrap_or_else(|| config.node_name.clone());
        let node_addrs: Vec<IpAddr> = host_addresses(node, config)
            .into_iter()
            .filter(|a| family.has(a))
            .collect();
        let node_ip = Some(node_ip(node, config, family));
        let node_port_ips = node_port_ips(node, config)
            .into_iter()
            .filter(|a| family.has(a) && !a.is_loopback())
            .collect();
        FamilyContext {
            family,
            node_name,
            node_ip,
            node_addrs,
            node_port_ips,
        }
    }

    /// The family.
    pub fn family(&self) -> IpFamily {
        self.family
    }
}

/// The EndpointSlices of each Service, for hairpin members.
pub fn slices_by_service(cluster: &ClusterState) -> BTreeMap<&ObjectName, Vec<&SliceInfo>> {
    let mut out: BTreeMap<&ObjectName, Vec<&SliceInfo>> = BTreeMap::new();
    for slice in cluster.slices.values() {
        out.entry(&slice.service).or_default().push(slice);
    }
    out
}

/// Computes the desired ipset members of `family`. Pure.
pub fn desired_ipsets(
    cluster: &ClusterState,
    config: &ProxyConfig,
    family: IpFamily,
) -> IpsetEntries {
    let ctx = FamilyContext::new(cluster, config, family);
    let slices = slices_by_service(cluster);
    let mut out = IpsetEntries::new(family);
    for svc in cluster.services.values() {
        let own = slices.get(&svc.name).map(Vec::as_slice).unwrap_or_default();
        service_members(&mut out, svc, own, &ctx);
    }
    out
}

/// The members one Service contributes to the sets of `ctx`'s family,
/// given its EndpointSlices. Pure.
pub fn service_ipsets(
    svc: &ServiceInfo,
    slices: &[&SliceInfo],
    ctx: &FamilyContext,
) -> IpsetEntries {
    let mut out = IpsetEntries::new(ctx.family);
    service_members(&mut out, svc, slices, ctx);
    out
}

fn service_members(
    out: &mut IpsetEntries,
    svc: &ServiceInfo,
    slices: &[&SliceInfo],
    ctx: &FamilyContext,
) {
    use names::*;

    let family = ctx.family;
    // One proxier per family: a Service takes part through its cluster
    // IP of that family.
    let Some(cluster_ip) = svc.cluster_ips.iter().copied().find(|a| family.has(a)) else {
        return;
    };
    out.add(IPVS_IPS, cluster_ip.to_string());
    for ip in svc
        .external_ips
        .iter()
        .chain(&svc.load_balancer_ips)
        .filter(|a| family.has(a) && !ctx.node_addrs.contains(a))
    {
        out.add(IPVS_IPS, ip.to_string());
    }
    for port in &svc.ports {
        service_port(out, svc, port, cluster_ip, slices, ctx);
    }
}

/// A source range as `hash:ip,port,net` members: truncated to its
/// prefix, and a `/0` (which ipset cannot store) as its two `/1` halves,
/// which allow the same sources.
fn ipset_ranges(net: IpNet) -> Vec<IpNet> {
    let net = net.trunc();
    if net.prefix_len() > 0 {
        return vec![net];
    }
    net.subnets(1).map(|s| s.collect()).unwrap_or_default()
}

/// The members one Service port contributes.
fn service_port(
    out: &mut IpsetEntries,
    svc: &ServiceInfo,
    port: &crate::cluster::ServicePort,
    cluster_ip: IpAddr,
    slices: &[&SliceInfo],
    ctx: &FamilyContext,
) {
    use names::*;

    let family = out.family;
    let node_name = ctx.node_name.as_str();
    let node_ip = ctx.node_ip;
    let node_port_ips = ctx.node_port_ips.as_slice();
    let p = proto(port.protocol);
    let ip_port = |ip: &IpAddr| format!("{ip},{p}:{}", port.port);

    // Hairpin: every endpoint on this node, whatever its conditions.
    for slice in slices {
        let Some(target) = slice
            .ports
            .iter()
            .find(|sp| sp.name == port.name && sp.protocol == port.protocol)
        else {
            continue;
        };
        for ep in &slice.endpoints {
            if family.has(&ep.addr) && ep.node_name.as_deref() == Some(node_name) {
                out.add(
                    LOOP_BACK,
                    format!("{},{p}:{},{}", ep.addr, target.port, ep.addr),
                );
            }
        }
    }

    out.add(CLUSTER_IP, ip_port(&cluster_ip));

    for ip in svc.external_ips.iter().filter(|a| family.has(a)) {
        let set = if svc.external_local {
            EXTERNAL_IP_LOCAL
        } else {
            EXTERNAL_IP
        };
        out.add(set, ip_port(ip));
    }

    let ranges: Vec<IpNet> = svc
        .source_ranges
        .iter()
        .filter(|n| family.has(&n.addr()))
        .flat_map(|n| ipset_ranges(*n))
        .collect();
    for ip in svc.load_balancer_ips.iter().filter(|a| family.has(a)) {
        out.add(LOAD_BALANCER, ip_port(ip));
        if svc.external_local {
            out.add(LOAD_BALANCER_LOCAL, ip_port(ip));
        }
        if ranges.is_empty() {
            continue;
        }
        out.add(LOAD_BALANCER_FW, ip_port(ip));
        for net in &ranges {
            out.add(LOAD_BALANCER_SOURCE_CIDR, format!("{},{net}", ip_port(ip)));
        }
        let from_node = node_ip.is_some_and(|n| ranges.iter().any(|r| r.contains(&n)));
        if from_node {
            out.add(LOAD_BALANCER_SOURCE_IP, format!("{},{ip}", ip_port(ip)));
        } else {
            out.lb_no_node_access.insert(ip_port(ip));
        }
    }

    // kube-proxy skips the rest of the port (health check node port
    // included) when the family has no node-port address.
    if node_port_ips.is_empty() {
        return;
    }
    if let Some(node_port) = port.node_port {
        let (set, local_set) = match port.protocol {
            Protocol::Tcp => (NODE_PORT_TCP, NODE_PORT_LOCAL_TCP),
            Protocol::Udp => (NODE_PORT_UDP, NODE_PORT_LOCAL_UDP),
            Protocol::Sctp => (NODE_PORT_SCTP, NODE_PORT_LOCAL_SCTP),
        };
        let entries: Vec<String> = match port.protocol {
            Protocol::Sctp => node_port_ips
                .iter()
                .map(|ip| format!("{ip},sctp:{node_port}"))
                .collect(),
            _ => vec![node_port.to_string()],
        };
        for e in &entries {
            out.add(set, e.clone());
            if svc.external_local {
                out.add(local_set, e.clone());
            }
        }
    }
    if let Some(hc) = svc.health_check_node_port {
        out.add(HEALTH_CHECK_NODE_PORT, hc.to_string());
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // test code

    use super::names::*;
    use super::*;
    use crate::cluster::{EndpointInfo, NodeInfo, ServicePort, SliceInfo, SlicePort};

    fn name(n: &str) -> ObjectName {
        ObjectName {
            namespace: "default".into(),
            name: n.into(),
        }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn service(
        n: &str,
        cluster_ips: &[&str],
        ports: &[(Protocol, u16, Option<u16>)],
    ) -> ServiceInfo {
        ServiceInfo {
            name: name(n),
            cluster_ips: cluster_ips.iter().map(|s| ip(s)).collect(),
            external_ips: vec![],
            load_balancer_ips: vec![],
            ports: ports
                .iter()
                .enumerate()
                .map(|(i, (protocol, port, node_port))| ServicePort {
                    name: format!("p{i}"),
                    protocol: *protocol,
                    port: *port,
                    node_port: *node_port,
                })
                .collect(),
            affinity_timeout: None,
            external_local: false,
            internal_local: false,
            scheduler: None,
            rebalance: None,
            topology_aware: false,
            source_ranges: vec![],
            health_check_node_port: None,
        }
    }

    fn endpoint(addr: &str, node: &str, ready: bool) -> EndpointInfo {
        EndpointInfo {
            addr: ip(addr),
            ready,
            serving: ready,
            terminating: false,
            node_name: Some(node.into()),
            zone_hints: None,
            node_hints: None,
        }
    }

    fn cluster(services: Vec<ServiceInfo>, slices: Vec<SliceInfo>, node: &[&str]) -> ClusterState {
        ClusterState {
            services: services.into_iter().map(|s| (s.name.clone(), s)).collect(),
            slices: slices
                .into_iter()
                .enumerate()
                .map(|(i, s)| (name(&format!("slice-{i}")), s))
                .collect(),
            node: Some(NodeInfo {
                name: "node-a".into(),
                addresses: node.iter().map(|s| ip(s)).collect(),
                ..NodeInfo::default()
            }),
        }
    }

    struct Case {
        what: &'static str,
        cluster: ClusterState,
        config: ProxyConfig,
        family: IpFamily,
        want: Vec<(&'static str, Vec<&'static str>)>,
        no_node_access: Vec<&'static str>,
    }

    fn check(case: Case) {
        let got = desired_ipsets(&case.cluster, &case.config, case.family);
        // The per-Service tracker agrees with the whole-view function.
        let tracker = IpsetTracker::build(&case.cluster, &case.config, case.family);
        assert_eq!(tracker.entries(), got, "{}", case.what);
        let want: BTreeMap<&str, BTreeSet<String>> = case
            .want
            .iter()
            .map(|(set, members)| (*set, members.iter().map(|m| (*m).to_owned()).collect()))
            .collect();
        assert_eq!(got.sets, want, "{}", case.what);
        let nna: BTreeSet<String> = case
            .no_node_access
            .iter()
            .map(|s| (*s).to_owned())
            .collect();
        assert_eq!(got.lb_no_node_access, nna, "{}", case.what);
    }

    fn dns() -> (ServiceInfo, SliceInfo) {
        let svc = service(
            "dns",
            &["10.96.0.10", "fd00:96::a"],
            &[(Protocol::Udp, 53, None), (Protocol::Tcp, 53, None)],
        );
        let slice = SliceInfo {
            service: name("dns"),
            ports: vec![
                SlicePort {
                    name: "p0".into(),
                    protocol: Protocol::Udp,
                    port: 5353,
                },
                SlicePort {
                    name: "p1".into(),
                    protocol: Protocol::Tcp,
                    port: 5353,
                },
            ],
            endpoints: vec![
                endpoint("10.244.1.5", "node-a", true),
                endpoint("10.244.2.7", "node-b", true),
                endpoint("10.244.1.6", "node-a", false),
            ],
        };
        (svc, slice)
    }

    #[test]
    fn cluster_ips_and_local_endpoints_for_hairpin() {
        let (svc, slice) = dns();
        check(Case {
            what: "ClusterIP with local and remote endpoints",
            cluster: cluster(vec![svc], vec![slice], &["172.18.0.2"]),
            config: ProxyConfig::default(),
            family: IpFamily::V4,
            want: vec![
                (CLUSTER_IP, vec!["10.96.0.10,tcp:53", "10.96.0.10,udp:53"]),
                (
                    LOOP_BACK,
                    vec![
                        "10.244.1.5,tcp:5353,10.244.1.5",
                        "10.244.1.5,udp:5353,10.244.1.5",
                        "10.244.1.6,tcp:5353,10.244.1.6",
                        "10.244.1.6,udp:5353,10.244.1.6",
                    ],
                ),
                (IPVS_IPS, vec!["10.96.0.10"]),
            ],
            no_node_access: vec![],
        });
    }

    #[test]
    fn ipv6_takes_the_ipv6_cluster_ip_only() {
        let (svc, _) = dns();
        check(Case {
            what: "dual-stack Service, IPv6 proxier",
            cluster: cluster(vec![svc], vec![], &["172.18.0.2", "fc00::2"]),
            config: ProxyConfig::default(),
            family: IpFamily::V6,
            want: vec![
                (CLUSTER_IP, vec!["fd00:96::a,tcp:53", "fd00:96::a,udp:53"]),
                (IPVS_IPS, vec!["fd00:96::a"]),
            ],
            no_node_access: vec![],
        });
    }

    #[test]
    fn external_ips_by_traffic_policy() {
        let mut cluster_policy = service("a", &["10.96.0.1"], &[(Protocol::Tcp, 80, None)]);
        cluster_policy.external_ips = vec![ip("192.0.2.1"), ip("172.18.0.2")];
        let mut local_policy = service("b", &["10.96.0.2"], &[(Protocol::Tcp, 81, None)]);
        local_policy.external_ips = vec![ip("192.0.2.2")];
        local_policy.external_local = true;
        check(Case {
            what: "external IPs; one is a node address and is not bound",
            cluster: cluster(vec![cluster_policy, local_policy], vec![], &["172.18.0.2"]),
            config: ProxyConfig::default(),
            family: IpFamily::V4,
            want: vec![
                (CLUSTER_IP, vec!["10.96.0.1,tcp:80", "10.96.0.2,tcp:81"]),
                (EXTERNAL_IP, vec!["172.18.0.2,tcp:80", "192.0.2.1,tcp:80"]),
                (EXTERNAL_IP_LOCAL, vec!["192.0.2.2,tcp:81"]),
                (
                    IPVS_IPS,
                    vec!["10.96.0.1", "10.96.0.2", "192.0.2.1", "192.0.2.2"],
                ),
            ],
            no_node_access: vec![],
        });
    }

    #[test]
    fn load_balancers_with_source_ranges_and_local_policy() {
        let mut lb = service("lb", &["10.96.0.3"], &[(Protocol::Tcp, 443, Some(30443))]);
        lb.load_balancer_ips = vec![ip("192.0.2.10")];
        lb.external_local = true;
        let mut open = service("open", &["10.96.0.4"], &[(Protocol::Tcp, 80, Some(30080))]);
        open.load_balancer_ips = vec![ip("192.0.2.11")];
        let mut fenced = service(
            "fenced",
            &["10.96.0.5"],
            &[(Protocol::Tcp, 22, Some(30022))],
        );
        fenced.load_balancer_ips = vec![ip("192.0.2.12")];
        // Includes the node: the node may reach the LB IP.
        lb.source_ranges = vec![
            "172.18.0.0/16".parse().unwrap(),
            "203.0.113.7/24".parse().unwrap(),
        ];
        lb.health_check_node_port = Some(32000);
        fenced.source_ranges = vec!["198.51.100.0/24".parse().unwrap()];
        check(Case {
            what: "load balancers",
            cluster: cluster(vec![lb, open, fenced], vec![], &["172.18.0.2"]),
            config: ProxyConfig::default(),
            family: IpFamily::V4,
            want: vec![
                (
                    CLUSTER_IP,
                    vec!["10.96.0.3,tcp:443", "10.96.0.4,tcp:80", "10.96.0.5,tcp:22"],
                ),
                (
                    LOAD_BALANCER,
                    vec![
                        "192.0.2.10,tcp:443",
                        "192.0.2.11,tcp:80",
                        "192.0.2.12,tcp:22",
                    ],
                ),
                (LOAD_BALANCER_LOCAL, vec!["192.0.2.10,tcp:443"]),
                (
                    LOAD_BALANCER_FW,
                    vec!["192.0.2.10,tcp:443", "192.0.2.12,tcp:22"],
                ),
                (
                    LOAD_BALANCER_SOURCE_CIDR,
                    vec![
                        "192.0.2.10,tcp:443,172.18.0.0/16",
                        "192.0.2.10,tcp:443,203.0.113.0/24",
                        "192.0.2.12,tcp:22,198.51.100.0/24",
                    ],
                ),
                (
                    LOAD_BALANCER_SOURCE_IP,
                    vec!["192.0.2.10,tcp:443,192.0.2.10"],
                ),
                (NODE_PORT_TCP, vec!["30022", "30080", "30443"]),
                (NODE_PORT_LOCAL_TCP, vec!["30443"]),
                (HEALTH_CHECK_NODE_PORT, vec!["32000"]),
                (
                    IPVS_IPS,
                    vec![
                        "10.96.0.3",
                        "10.96.0.4",
                        "10.96.0.5",
                        "192.0.2.10",
                        "192.0.2.11",
                        "192.0.2.12",
                    ],
                ),
            ],
            no_node_access: vec!["192.0.2.12,tcp:22"],
        });
    }

    /// kube-proxy's nodeIP for `allowFromNode`: `--bind-address` first,
    /// then the Node's primary address, then loopback.
    #[test]
    fn the_node_ip_is_the_bind_address_then_the_nodes_then_loopback() {
        let node = NodeInfo {
            name: "node-a".into(),
            addresses: vec![ip("172.18.0.2"), ip("fc00::2")],
            ..NodeInfo::default()
        };
        let bound = ProxyConfig {
            bind_address: Some(ip("10.0.0.7")),
            ..ProxyConfig::default()
        };
        let unspecified = ProxyConfig {
            bind_address: Some(ip("0.0.0.0")),
            ..ProxyConfig::default()
        };
        let v4 = IpFamily::V4;
        let v6 = IpFamily::V6;
        assert_eq!(
            node_ip(Some(&node), &ProxyConfig::default(), v4),
            ip("172.18.0.2")
        );
        assert_eq!(node_ip(Some(&node), &bound, v4), ip("10.0.0.7"));
        assert_eq!(node_ip(Some(&node), &bound, v6), ip("fc00::2"));
        assert_eq!(node_ip(Some(&node), &unspecified, v4), ip("172.18.0.2"));
        assert_eq!(node_ip(None, &ProxyConfig::default(), v4), ip("127.0.0.1"));
        assert_eq!(node_ip(None, &ProxyConfig::default(), v6), ip("::1"));
        // The bind address decides which load balancers the node may reach.
        let mut lb = service("lb", &["10.96.0.3"], &[(Protocol::Tcp, 443, None)]);
        lb.load_balancer_ips = vec![ip("192.0.2.10")];
        lb.source_ranges = vec!["10.0.0.0/24".parse().unwrap()];
        let c = cluster(vec![lb], vec![], &["172.18.0.2"]);
        let from = |config: &ProxyConfig| {
            desired_ipsets(&c, config, v4)
                .get(LOAD_BALANCER_SOURCE_IP)
                .len()
        };
        assert_eq!(from(&ProxyConfig::default()), 0);
        assert_eq!(from(&bound), 1);
    }

    #[test]
    fn an_everything_range_is_stored_as_two_halves() {
        let mut lb = service("lb", &["10.96.0.7"], &[(Protocol::Tcp, 80, None)]);
        lb.load_balancer_ips = vec![ip("192.0.2.20")];
        lb.source_ranges = vec!["0.0.0.0/0".parse().unwrap()];
        check(Case {
            what: "0.0.0.0/0 as 0.0.0.0/1 and 128.0.0.0/1",
            cluster: cluster(vec![lb], vec![], &["172.18.0.2"]),
            config: ProxyConfig::default(),
            family: IpFamily::V4,
            want: vec![
                (CLUSTER_IP, vec!["10.96.0.7,tcp:80"]),
                (LOAD_BALANCER, vec!["192.0.2.20,tcp:80"]),
                (LOAD_BALANCER_FW, vec!["192.0.2.20,tcp:80"]),
                (
                    LOAD_BALANCER_SOURCE_CIDR,
                    vec![
                        "192.0.2.20,tcp:80,0.0.0.0/1",
                        "192.0.2.20,tcp:80,128.0.0.0/1",
                    ],
                ),
                (
                    LOAD_BALANCER_SOURCE_IP,
                    vec!["192.0.2.20,tcp:80,192.0.2.20"],
                ),
                (IPVS_IPS, vec!["10.96.0.7", "192.0.2.20"]),
            ],
            no_node_access: vec![],
        });
    }

    #[test]
    fn node_ports_per_protocol_and_node_port_addresses() {
        let mut svc = service(
            "np",
            &["10.96.0.6"],
            &[
                (Protocol::Udp, 53, Some(30053)),
                (Protocol::Sctp, 9, Some(30009)),
            ],
        );
        svc.external_local = true;
        let config = ProxyConfig {
            nodeport_addresses: vec!["172.18.0.0/24".parse().unwrap()],
            ..ProxyConfig::default()
        };
        check(Case {
            what: "UDP bitmap and SCTP hash:ip,port, only on node-port addresses",
            cluster: cluster(vec![svc], vec![], &["172.18.0.2", "10.0.0.9"]),
            config,
            family: IpFamily::V4,
            want: vec![
                (CLUSTER_IP, vec!["10.96.0.6,sctp:9", "10.96.0.6,udp:53"]),
                (NODE_PORT_UDP, vec!["30053"]),
                (NODE_PORT_LOCAL_UDP, vec!["30053"]),
                (NODE_PORT_SCTP, vec!["172.18.0.2,sctp:30009"]),
                (NODE_PORT_LOCAL_SCTP, vec!["172.18.0.2,sctp:30009"]),
                (IPVS_IPS, vec!["10.96.0.6"]),
            ],
            no_node_access: vec![],
        });
    }

    #[test]
    fn no_node_port_address_of_the_family_skips_node_ports_and_health_checks() {
        let mut svc = service("np", &["fd00:96::6"], &[(Protocol::Tcp, 80, Some(30080))]);
        svc.health_check_node_port = Some(32001);
        check(Case {
            what: "IPv6 Service on an IPv4-only node",
            cluster: cluster(vec![svc], vec![], &["172.18.0.2"]),
            config: ProxyConfig::default(),
            family: IpFamily::V6,
            want: vec![
                (CLUSTER_IP, vec!["fd00:96::6,tcp:80"]),
                (IPVS_IPS, vec!["fd00:96::6"]),
            ],
            no_node_access: vec![],
        });
    }
}
