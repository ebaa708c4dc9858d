//! kube-proxy's IPVS-mode set table: names (`KUBE-…`, `KUBE-6-…` for
//! IPv6, cut to ipset's 31 bytes), types, comments (used in the iptables
//! rules that match the sets) and creation parameters, with `maxelem`
//! configurable where kube-proxy hard-codes 65536 (kube-proxy #129389).

use std::collections::{BTreeMap, BTreeSet};

use super::IpsetError;
use super::client::IpsetClient;
use super::ops::Op;
use super::types::{Entry, Family, SetSpec, SetType};

/// One of kube-proxy's sets.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum KubeSet {
    /// `KUBE-LOOP-BACK`: local endpoints `ip,proto:port,ip` for hairpin
    /// masquerade.
    LoopBack,
    /// `KUBE-CLUSTER-IP`: `clusterIP,proto:port`.
    ClusterIp,
    /// `KUBE-EXTERNAL-IP`: external IPs of Cluster-policy services.
    ExternalIp,
    /// `KUBE-EXTERNAL-IP-LOCAL`: external IPs of Local-policy services.
    ExternalIpLocal,
    /// `KUBE-LOAD-BALANCER`: load-balancer ingress `ip,proto:port`.
    LoadBalancer,
    /// `KUBE-LOAD-BALANCER-FW`: ingress of services with source ranges.
    LoadBalancerFw,
    /// `KUBE-LOAD-BALANCER-LOCAL`: ingress of Local-policy services.
    LoadBalancerLocal,
    /// `KUBE-LOAD-BALANCER-SOURCE-IP`: `lbIP,proto:port,lbIP` allowing
    /// the node itself.
    LoadBalancerSourceIp,
    /// `KUBE-LOAD-BALANCER-SOURCE-CIDR`: `lbIP,proto:port,cidr`.
    LoadBalancerSourceCidr,
    /// `KUBE-NODE-PORT-TCP`.
    NodePortTcp,
    /// `KUBE-NODE-PORT-LOCAL-TCP`.
    NodePortLocalTcp,
    /// `KUBE-NODE-PORT-UDP`.
    NodePortUdp,
    /// `KUBE-NODE-PORT-LOCAL-UDP`.
    NodePortLocalUdp,
    /// `KUBE-NODE-PORT-SCTP-HASH`: `nodeIP,sctp:port`.
    NodePortSctp,
    /// `KUBE-NODE-PORT-LOCAL-SCTP-HASH`.
    NodePortLocalSctp,
    /// `KUBE-HEALTH-CHECK-NODE-PORT`.
    HealthCheckNodePort,
    /// `KUBE-IPVS-IPS`: addresses bound to kube-ipvs0.
    IpvsIps,
}

impl KubeSet {
    /// Every set, in kube-proxy's table order.
    pub const ALL: [KubeSet; 17] = [
        KubeSet::LoopBack,
        KubeSet::ClusterIp,
        KubeSet::ExternalIp,
        KubeSet::ExternalIpLocal,
        KubeSet::LoadBalancer,
        KubeSet::LoadBalancerFw,
        KubeSet::LoadBalancerLocal,
        KubeSet::LoadBalancerSourceIp,
        KubeSet::LoadBalancerSourceCidr,
        KubeSet::NodePortTcp,
        KubeSet::NodePortLocalTcp,
        KubeSet::NodePortUdp,
        KubeSet::NodePortLocalUdp,
        KubeSet::NodePortSctp,
        KubeSet::NodePortLocalSctp,
        KubeSet::HealthCheckNodePort,
        KubeSet::IpvsIps,
    ];

    /// The IPv4 name.
    pub fn base_name(self) -> &'static str {
        match self {
            KubeSet::LoopBack => "KUBE-LOOP-BACK",
            KubeSet::ClusterIp => "KUBE-CLUSTER-IP",
            KubeSet::ExternalIp => "KUBE-EXTERNAL-IP",
            KubeSet::ExternalIpLocal => "KUBE-EXTERNAL-IP-LOCAL",
            KubeSet::LoadBalancer => "KUBE-LOAD-BALANCER",
            KubeSet::LoadBalancerFw => "KUBE-LOAD-BALANCER-FW",
            KubeSet::LoadBalancerLocal => "KUBE-LOAD-BALANCER-LOCAL",
            KubeSet::LoadBalancerSourceIp => "KUBE-LOAD-BALANCER-SOURCE-IP",
            KubeSet::LoadBalancerSourceCidr => "KUBE-LOAD-BALANCER-SOURCE-CIDR",
            KubeSet::NodePortTcp => "KUBE-NODE-PORT-TCP",
            KubeSet::NodePortLocalTcp => "KUBE-NODE-PORT-LOCAL-TCP",
            KubeSet::NodePortUdp => "KUBE-NODE-PORT-UDP",
            KubeSet::NodePortLocalUdp => "KUBE-NODE-PORT-LOCAL-UDP",
            KubeSet::NodePortSctp => "KUBE-NODE-PORT-SCTP-HASH",
            KubeSet::NodePortLocalSctp => "KUBE-NODE-PORT-LOCAL-SCTP-HASH",
            KubeSet::HealthCheckNodePort => "KUBE-HEALTH-CHECK-NODE-PORT",
            KubeSet::IpvsIps => "KUBE-IPVS-IPS",
        }
    }

    /// The name for `family`: IPv6 sets replace the `KUBE-` prefix by
    /// `KUBE-6-` and are cut to 31 bytes, as kube-proxy does
    /// (`KUBE-6-LOAD-BALANCER-SOURCE-CID`).
    pub fn name(self, family: Family) -> String {
        match family {
            Family::Inet => self.base_name().to_owned(),
            Family::Inet6 => {
                let mut name = self.base_name().replacen("KUBE-", "KUBE-6-", 1);
                name.truncate(31);
                name
            }
        }
    }

    /// The set type.
    pub fn set_type(self) -> SetType {
        match self {
            KubeSet::LoopBack | KubeSet::LoadBalancerSourceIp => SetType::HashIpPortIp,
            KubeSet::LoadBalancerSourceCidr => SetType::HashIpPortNet,
            KubeSet::NodePortTcp
            | KubeSet::NodePortLocalTcp
            | KubeSet::NodePortUdp
            | KubeSet::NodePortLocalUdp
            | KubeSet::HealthCheckNodePort => SetType::BitmapPort,
            KubeSet::IpvsIps => SetType::HashIp,
            _ => SetType::HashIpPort,
        }
    }

    /// kube-proxy's comment for the set, used in iptables rules.
    pub fn comment(self) -> &'static str {
        match self {
            KubeSet::LoopBack => {
                "Kubernetes endpoints dst ip:port, source ip for solving hairpin purpose"
            }
            KubeSet::ClusterIp => "Kubernetes service cluster ip + port for masquerade purpose",
            KubeSet::ExternalIp => {
                "Kubernetes service external ip + port for masquerade and filter purpose"
            }
            KubeSet::ExternalIpLocal => {
                "Kubernetes service external ip + port with externalTrafficPolicy=local"
            }
            KubeSet::LoadBalancer => "Kubernetes service lb portal",
            KubeSet::LoadBalancerFw => {
                "Kubernetes service load balancer ip + port for load balancer with sourceRange"
            }
            KubeSet::LoadBalancerLocal => {
                "Kubernetes service load balancer ip + port with externalTrafficPolicy=local"
            }
            KubeSet::LoadBalancerSourceIp => {
                "Kubernetes service load balancer ip + port + source IP for packet filter purpose"
            }
            KubeSet::LoadBalancerSourceCidr => {
                "Kubernetes service load balancer ip + port + source cidr for packet filter purpose"
            }
            KubeSet::NodePortTcp => "Kubernetes nodeport TCP port for masquerade purpose",
            KubeSet::NodePortLocalTcp => {
                "Kubernetes nodeport TCP port with externalTrafficPolicy=local"
            }
            KubeSet::NodePortUdp => "Kubernetes nodeport UDP port for masquerade purpose",
            KubeSet::NodePortLocalUdp => {
                "Kubernetes nodeport UDP port with externalTrafficPolicy=local"
            }
            KubeSet::NodePortSctp => {
                "Kubernetes nodeport SCTP port for masquerade purpose with type 'hash ip:port'"
            }
            KubeSet::NodePortLocalSctp => {
                "Kubernetes nodeport SCTP port with externalTrafficPolicy=local with type 'hash ip:port'"
            }
            KubeSet::HealthCheckNodePort => "Kubernetes health check node port",
            KubeSet::IpvsIps => "Addresses on the ipvs interface",
        }
    }

    /// The creation spec for `family` with `maxelem` (kube-proxy:
    /// hashsize 1024, maxelem 65536, bitmap range 0-65535).
    pub fn spec(self, family: Family, maxelem: u32) -> SetSpec {
        let mut spec = SetSpec::new(self.name(family), self.set_type(), family);
        spec.maxelem = maxelem;
        spec
    }
}

/// The desired members of every kube-proxy set for one family, plus the
/// load-balancer `ip,proto:port`s the node itself must not reach (their
/// source ranges exclude the node IP; kube-proxy #119656).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KubeSets {
    /// The family.
    pub family: Family,
    /// Members per set (absent = empty).
    pub entries: BTreeMap<KubeSet, BTreeSet<Entry>>,
    /// `hash:ip,port` members for the KUBE-IPVS-OUT-FILTER DROP rules.
    pub lb_no_node_access: BTreeSet<Entry>,
}

impl KubeSets {
    /// No members.
    pub fn new(family: Family) -> KubeSets {
        KubeSets {
            family,
            entries: BTreeMap::new(),
            lb_no_node_access: BTreeSet::new(),
        }
    }

    /// Adds a member to `set`.
    pub fn insert(&mut self, set: KubeSet, entry: Entry) {
        self.entries.entry(set).or_default().insert(entry);
    }

    /// The members of `set`.
    pub fn get(&self, set: KubeSet) -> impl Iterator<Item = &Entry> {
        self.entries.get(&set).into_iter().flatten()
    }

    /// Whether `set` has no members.
    pub fn is_empty(&self, set: KubeSet) -> bool {
        self.entries.get(&set).is_none_or(BTreeSet::is_empty)
    }

    /// Every set with its spec and desired members (empty sets included:
    /// kube-proxy keeps all of them, since rules reference some always).
    pub fn plan(&self, maxelem: u32) -> Vec<(SetSpec, BTreeSet<Entry>)> {
        KubeSet::ALL
            .iter()
            .map(|set| {
                (
                    set.spec(self.family, maxelem),
                    self.entries.get(set).cloned().unwrap_or_default(),
                )
            })
            .collect()
    }
}

/// `--cleanup` of the sets: destroys every kube-proxy set of `family`
/// that exists, and no other set. Run after the iptables cleanup (sets
/// referenced by rules cannot be destroyed).
pub fn destroy_all(client: &mut IpsetClient, family: Family) -> Result<(), IpsetError> {
    let existing: Vec<String> = client.list(None)?.into_iter().map(|s| s.name).collect();
    let ops: Vec<Op> = KubeSet::ALL
        .iter()
        .map(|set| set.name(family))
        .filter(|name| existing.contains(name))
        .map(Op::Destroy)
        .collect();
    client.apply(&ops)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv6_names_follow_kube_proxy() {
        assert_eq!(KubeSet::ClusterIp.name(Family::Inet6), "KUBE-6-CLUSTER-IP");
        assert_eq!(
            KubeSet::LoadBalancerSourceCidr.name(Family::Inet6),
            "KUBE-6-LOAD-BALANCER-SOURCE-CID"
        );
        assert_eq!(
            KubeSet::NodePortLocalSctp.name(Family::Inet6),
            "KUBE-6-NODE-PORT-LOCAL-SCTP-HAS"
        );
        for set in KubeSet::ALL {
            assert!(set.name(Family::Inet6).len() <= 31);
            assert!(set.spec(Family::Inet, 65536).validate().is_ok());
        }
    }
}
