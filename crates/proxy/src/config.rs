//! The proxy's settings that shape desired state, named after kube-proxy's
//! flags and defaults, and how `--nodeport-addresses` picks the node
//! addresses that serve node ports.

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
        }
    }
}

/// The node's addresses that serve node ports, as kube-proxy's
/// `NodePortAddresses` picks them per family: `primary` becomes the
/// primary address of each family (`/32`, `/128`; none for a family
/// without one); then each family's addresses are those in that
/// family's CIDRs, or all of them when the list has no CIDR of the
/// family (so an unset list means every address).
pub fn node_port_ips(node: Option<&NodeInfo>, config: &ProxyConfig) -> Vec<IpAddr> {
    let Some(node) = node else {
        return Vec::new();
    };
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
                let mut primary = node.primary_ips();
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
    node.addresses
        .iter()
        .copied()
        .filter(|a| {
            let mut family = cidrs
                .iter()
                .filter(|n| n.addr().is_ipv6() == a.is_ipv6())
                .peekable();
            family.peek().is_none() || family.any(|n| n.contains(a))
        })
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

    #[test]
    fn entries_parse_with_keywords() {
        for text in ["primary", "localhost", "all", "10.0.0.0/8", "fd00::/64"] {
            assert_eq!(list(&[text])[0].to_string(), text);
        }
        let e = "10.0.0.1".parse::<NodePortAddress>().unwrap_err();
        assert!(e.to_string().contains("not a CIDR"), "{e}");
    }
}
