//! The proxy's settings that shape desired state, named after kube-proxy's
//! flags and defaults, and how `--nodeport-addresses` picks the node
//! addresses that serve node ports.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::str::FromStr;
use std::time::Duration;

use ipnet::IpNet;
use rvs_model::Scheduler;

use crate::cluster::NodeInfo;

/// Annotation that picks a Service's IPVS scheduler (an rvs addition;
/// kube-proxy only has the node-wide `--ipvs-scheduler`).
pub const SCHEDULER_ANNOTATION: &str = "rvs.dev/ipvs-scheduler";

/// One entry of `--nodeport-addresses`: a CIDR or one of kube-proxy's
/// keywords.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NodePortAddress {
    /// A CIDR: node addresses in it serve node ports.
    Cidr(IpNet),
    /// `primary`: the Node object's primary IPv4 and IPv6 addresses
    /// (see [`NodeInfo::primary_ips`]), or `--bind-address` for its
    /// family when that is set and not `0.0.0.0`/`::`.
    Primary,
    /// `localhost`: `127.0.0.0/8` and `::1/128`.
    Localhost,
    /// `all`: `0.0.0.0/0` and `::/0`.
    All,
}

/// An entry of `--nodeport-addresses` that is neither a CIDR nor a
/// keyword.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a CIDR (such as 10.0.0.0/8) or one of primary, localhost, all")]
pub struct NodePortAddressError(pub String);

impl FromStr for NodePortAddress {
    type Err = NodePortAddressError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text.trim() {
            "primary" => Ok(NodePortAddress::Primary),
            "localhost" => Ok(NodePortAddress::Localhost),
            "all" => Ok(NodePortAddress::All),
            other => other
                .parse()
                .map(NodePortAddress::Cidr)
                .map_err(|_| NodePortAddressError(text.to_owned())),
        }
    }
}

impl std::fmt::Display for NodePortAddress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NodePortAddress::Cidr(net) => write!(f, "{net}"),
            NodePortAddress::Primary => f.write_str("primary"),
            NodePortAddress::Localhost => f.write_str("localhost"),
            NodePortAddress::All => f.write_str("all"),
        }
    }
}

/// Settings that shape desired state and syncing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProxyConfig {
    /// This node's name (`--hostname-override`, else the host name).
    pub node_name: String,
    /// Default scheduler (`--ipvs-scheduler`, default `rr`).
    pub scheduler: Scheduler,
    /// Virtual servers in these ranges are never touched
    /// (`--ipvs-exclude-cidrs`).
    pub exclude_cidrs: Vec<IpNet>,
    /// Node addresses that serve NodePorts (`--nodeport-addresses`); see
    /// [`node_port_ips`].
    pub nodeport_addresses: Vec<NodePortAddress>,
    /// `--bind-address`: kube-proxy's idea of the node's primary IP
    /// (for `primary` above), when not `0.0.0.0` or `::`.
    pub bind_address: Option<IpAddr>,
    /// Only Services labelled `service.kubernetes.io/service-proxy-name`
    /// with this value (`--service-proxy-name`); `None` means only
    /// Services without that label, as kube-proxy does.
    pub service_proxy_name: Option<String>,
    /// Full resync period (`--ipvs-sync-period`, default 30 s).
    pub sync_period: Duration,
    /// Minimum time between syncs (`--ipvs-min-sync-period`, default 0).
    pub min_sync_period: Duration,
    /// The host's own addresses: those of every interface but
    /// `kube-ipvs0`, as the address binder last read them (each full
    /// sync). kube-proxy serves node ports on these
    /// (`GetAllLocalAddressesExcept(kube-ipvs0)`, or the ones matching
    /// `--nodeport-addresses`) and binds no external or load-balancer IP
    /// that is one of them. `None` when the binder has no device to read
    /// them beside (the userspace dataplane without `--bind-addresses`):
    /// the Node object's addresses stand in.
    pub local_addresses: Option<BTreeSet<IpAddr>>,
}

impl Default for ProxyConfig {
    fn default() -> ProxyConfig {
        ProxyConfig {
            node_name: String::new(),
            scheduler: Scheduler::RoundRobin,
            exclude_cidrs: Vec::new(),
            nodeport_addresses: Vec::new(),
            bind_address: None,
            service_proxy_name: None,
            sync_period: Duration::from_secs(30),
            min_sync_period: Duration::ZERO,
            local_addresses: None,
        }
    }
}

/// Whether `ip` counts as one of the node's addresses in kube-proxy's
/// `isValidForSet`: not loopback, and not IPv6 link-local.
fn counts_as_node_address(ip: &IpAddr) -> bool {
    let link_local_v6 = matches!(ip, IpAddr::V6(v6) if (v6.segments()[0] & 0xffc0) == 0xfe80);
    !ip.is_loopback() && !link_local_v6
}

/// The node's own addresses as kube-proxy's IPVS proxier sees them
/// (`GetAllLocalAddressesExcept(kube-ipvs0)` through `isValidForSet`):
/// the host's interface addresses but loopback and IPv6 link-local
/// ([`ProxyConfig::local_addresses`]), or the Node object's addresses
/// when those are unknown. An external or load-balancer IP among them is
/// not bound to `kube-ipvs0` nor put in `KUBE-IPVS-IPS`.
pub fn host_addresses(node: Option<&NodeInfo>, config: &ProxyConfig) -> BTreeSet<IpAddr> {
    match &config.local_addresses {
        Some(local) => local
            .iter()
            .filter(|a| counts_as_node_address(a))
            .copied()
            .collect(),
        None => node
            .iter()
            .flat_map(|n| n.addresses.iter().copied())
            .collect(),
    }
}

/// The node's addresses that serve node ports, as kube-proxy's IPVS
/// proxier picks them per family (`NodePortAddresses`, `syncProxyRules`):
/// `primary` becomes the primary address of each family (`/32`, `/128`;
/// none for a family without one); a family the list has no CIDR of, or
/// a `0.0.0.0/0` / `::/0` of (`MatchAll`), takes every node address of
/// the family ([`host_addresses`]); otherwise the host's addresses in
/// the family's CIDRs, loopback excepted (`GetNodeIPs`). So an unset
/// list means every address of the host, as in kube-proxy; without
/// [`ProxyConfig::local_addresses`] the Node object's addresses are the
/// host's.
///
/// One deliberate difference: kube-proxy's CIDR path reads every
/// interface, `kube-ipvs0` included, so a CIDR covering the Service range
/// would put node ports on cluster IPs bound at the last sync; rvs never
/// counts `kube-ipvs0`'s virtual addresses as node addresses.
pub fn node_port_ips(node: Option<&NodeInfo>, config: &ProxyConfig) -> Vec<IpAddr> {
    let cidrs = node_port_cidrs(node, config);
    // The Node object's addresses, standing in for the host's, are taken
    // as listed (the userspace dataplane may serve loopback ones).
    let (all, from_host): (Vec<IpAddr>, bool) = match &config.local_addresses {
        Some(local) => (local.iter().copied().collect(), true),
        None => (
            node.iter()
                .flat_map(|n| n.addresses.iter().copied())
                .collect(),
            false,
        ),
    };
    all.into_iter()
        .filter(|a| {
            let family: Vec<&IpNet> = cidrs
                .iter()
                .filter(|n| n.addr().is_ipv6() == a.is_ipv6())
                .collect();
            let match_all = family.is_empty() || family.iter().any(|n| n.prefix_len() == 0);
            if !from_host {
                match_all || family.iter().any(|n| n.contains(a))
            } else if match_all {
                counts_as_node_address(a)
            } else {
                !a.is_loopback() && family.iter().any(|n| n.contains(a))
            }
        })
        .collect()
}

/// `--nodeport-addresses` as CIDRs: `primary` resolved to the primary
/// addresses (see [`node_port_ips`]), `localhost` to the loopback nets.
fn node_port_cidrs(node: Option<&NodeInfo>, config: &ProxyConfig) -> Vec<IpNet> {
    let mut cidrs = Vec::new();
    for entry in &config.nodeport_addresses {
        let pair = |a: &str, b: &str| [a, b].map(|c| c.parse::<IpNet>().ok());
        match entry {
            NodePortAddress::Cidr(net) => cidrs.push(*net),
            NodePortAddress::Localhost => {
                cidrs.extend(pair("127.0.0.0/8", "::1/128").into_iter().flatten())
            }
            NodePortAddress::All => cidrs.extend(pair("0.0.0.0/0", "::/0").into_iter().flatten()),
            NodePortAddress::Primary => {
                let mut primary = node.map(NodeInfo::primary_ips).unwrap_or_default();
                if let Some(bind) = config.bind_address.filter(|b| !b.is_unspecified()) {
                    primary.retain(|p| p.is_ipv6() != bind.is_ipv6());
                    primary.push(bind);
                }
                cidrs.extend(
                    primary
                        .into_iter()
                        .filter(|ip| !ip.is_loopback())
                        .map(IpNet::from),
                );
            }
        }
    }
    cidrs
}

/// The addresses a health check node port of one family (`v6`) listens
/// on, as kube-proxy's `NewServiceHealthServer` of that family picks
/// them: the family's unspecified address (IPv4 only, or IPv6 only) when
/// `--nodeport-addresses` has no CIDR of the family or a zero one
/// (`MatchAll`); otherwise the host's addresses in the family's CIDRs
/// (`GetNodeIPs`: every interface's, loopback included), which may be
/// none. The host's addresses are [`ProxyConfig::local_addresses`], or
/// the Node object's when those are unknown.
pub fn health_check_ips(node: Option<&NodeInfo>, config: &ProxyConfig, v6: bool) -> Vec<IpAddr> {
    let cidrs: Vec<IpNet> = node_port_cidrs(node, config)
        .into_iter()
        .filter(|n| n.addr().is_ipv6() == v6)
        .collect();
    if cidrs.is_empty() || cidrs.iter().any(|n| n.prefix_len() == 0) {
        return vec![if v6 {
            IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED)
        } else {
            IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED)
        }];
    }
    let host: Vec<IpAddr> = match &config.local_addresses {
        Some(local) => local.iter().copied().collect(),
        None => node
            .iter()
            .flat_map(|n| n.addresses.iter().copied())
            .collect(),
    };
    host.into_iter()
        .filter(|a| a.is_ipv6() == v6 && cidrs.iter().any(|n| n.contains(a)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn list(entries: &[&str]) -> Vec<NodePortAddress> {
        entries.iter().map(|e| e.parse().unwrap()).collect()
    }

    #[test]
    fn node_port_addresses_follow_kube_proxys_rules() {
        let node = NodeInfo {
            name: "a".into(),
            addresses: vec![
                ip("192.168.0.7"),
                ip("fd00::7"),
                ip("203.0.113.7"),
                ip("fd00::8"),
            ],
            ..NodeInfo::default()
        };
        let pick = |entries: &[&str], bind: Option<&str>| {
            let config = ProxyConfig {
                nodeport_addresses: list(entries),
                bind_address: bind.map(ip),
                ..ProxyConfig::default()
            };
            node_port_ips(Some(&node), &config)
        };
        assert_eq!(pick(&[], None), node.addresses, "unset: all");
        assert_eq!(pick(&["all"], None), node.addresses);
        assert_eq!(pick(&["primary"], None), [ip("192.168.0.7"), ip("fd00::7")]);
        assert_eq!(
            pick(&["primary"], Some("203.0.113.7")),
            [ip("fd00::7"), ip("203.0.113.7")],
            "--bind-address replaces its family's primary address"
        );
        assert_eq!(
            pick(&["primary"], Some("0.0.0.0")),
            [ip("192.168.0.7"), ip("fd00::7")]
        );
        // A family without CIDRs keeps all its addresses.
        assert_eq!(
            pick(&["203.0.113.0/24"], None),
            [ip("fd00::7"), ip("203.0.113.7"), ip("fd00::8")]
        );
        assert_eq!(
            pick(&["localhost"], None),
            Vec::<IpAddr>::new(),
            "loopback CIDRs of both families match no node address"
        );
        assert!(node_port_ips(None, &ProxyConfig::default()).is_empty());
        // A node without addresses has no primary ones: everything of
        // each family, as kube-proxy's loopback fallback is skipped.
        let bare = NodeInfo::default();
        let config = ProxyConfig {
            nodeport_addresses: list(&["primary"]),
            ..ProxyConfig::default()
        };
        assert!(node_port_ips(Some(&bare), &config).is_empty());
    }

    /// With the host's addresses known, node ports follow them, not the
    /// Node object: every address but loopback and IPv6 link-local when
    /// matching all, the CIDR's otherwise; a missing Node changes
    /// nothing.
    #[test]
    fn node_ports_serve_the_hosts_addresses_as_kube_proxys() {
        let local: BTreeSet<IpAddr> = [
            "127.0.0.1",
            "::1",
            "192.168.0.7",
            "10.0.5.1",
            "169.254.3.3",
            "fe80::1",
            "fd00::7",
        ]
        .into_iter()
        .map(ip)
        .collect();
        let node = NodeInfo {
            name: "a".into(),
            addresses: vec![ip("192.168.0.7"), ip("fd00::7")],
            ..NodeInfo::default()
        };
        let pick = |entries: &[&str], node: Option<&NodeInfo>| {
            let config = ProxyConfig {
                nodeport_addresses: list(entries),
                local_addresses: Some(local.clone()),
                ..ProxyConfig::default()
            };
            let mut got: Vec<String> = node_port_ips(node, &config)
                .iter()
                .map(ToString::to_string)
                .collect();
            got.sort();
            got
        };
        assert_eq!(
            pick(&[], Some(&node)),
            ["10.0.5.1", "169.254.3.3", "192.168.0.7", "fd00::7"]
        );
        assert_eq!(pick(&[], None), pick(&[], Some(&node)), "no Node needed");
        assert_eq!(pick(&["0.0.0.0/0"], None), pick(&[], None));
        assert_eq!(
            pick(&["10.0.0.0/8"], None),
            ["10.0.5.1", "fd00::7"],
            "IPv6 has no CIDR: all of it"
        );
        assert_eq!(pick(&["127.0.0.0/8"], None), ["fd00::7"], "never loopback");
        assert_eq!(
            pick(&["fe80::/10"], None).len(),
            4,
            "the CIDR path keeps link-local"
        );
        assert_eq!(pick(&["primary"], Some(&node)), ["192.168.0.7", "fd00::7"]);
        // Addresses the Node lists but the host lacks serve nothing.
        let listed_only = NodeInfo {
            addresses: vec![ip("203.0.113.9")],
            ..node.clone()
        };
        assert!(!pick(&[], Some(&listed_only)).contains(&"203.0.113.9".to_owned()));
        let config = ProxyConfig {
            local_addresses: Some(local.clone()),
            ..ProxyConfig::default()
        };
        let mut hosts: Vec<String> = host_addresses(None, &config)
            .iter()
            .map(ToString::to_string)
            .collect();
        hosts.sort();
        assert_eq!(hosts, ["10.0.5.1", "169.254.3.3", "192.168.0.7", "fd00::7"]);
    }

    #[test]
    fn entries_parse_with_keywords() {
        for text in ["primary", "localhost", "all", "10.0.0.0/8", "fd00::/64"] {
            assert_eq!(list(&[text])[0].to_string(), text);
        }
        let e = "10.0.0.1".parse::<NodePortAddress>().unwrap_err();
        assert!(e.to_string().contains("not a CIDR"), "{e}");
    }
}
