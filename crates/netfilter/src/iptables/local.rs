//! kube-proxy's `--detect-local-mode` and the flags that go with it,
//! turned into the [`LocalDetect`] of each IP family.

use std::fmt;
use std::str::FromStr;

use ipnet::IpNet;

use super::rules::LocalDetect;

/// `--detect-local-mode`: how traffic from this node's pods is told apart.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum DetectLocalMode {
    /// Pods are in `--cluster-cidr` (no detection when it is unset).
    #[default]
    ClusterCidr,
    /// Pods are in this node's `spec.podCIDRs`, known only at sync time
    /// ([`LocalDetect::NodeCidr`], then [`LocalDetect::resolve`]).
    NodeCidr,
    /// Pods attach to the bridge `--pod-bridge-interface`.
    BridgeInterface,
    /// Pod interfaces start with `--pod-interface-name-prefix`.
    InterfaceNamePrefix,
}

impl DetectLocalMode {
    /// Every mode, by kube-proxy's name.
    pub const ALL: [(DetectLocalMode, &'static str); 4] = [
        (DetectLocalMode::ClusterCidr, "ClusterCIDR"),
        (DetectLocalMode::NodeCidr, "NodeCIDR"),
        (DetectLocalMode::BridgeInterface, "BridgeInterface"),
        (DetectLocalMode::InterfaceNamePrefix, "InterfaceNamePrefix"),
    ];
}

impl fmt::Display for DetectLocalMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = Self::ALL
            .iter()
            .find(|(m, _)| m == self)
            .map_or("?", |(_, n)| n);
        f.write_str(name)
    }
}

/// A `--detect-local-mode` value or combination that cannot be used.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum LocalDetectError {
    /// Not a mode rvs knows.
    #[error(
        "--detect-local-mode: {0:?} is not one of ClusterCIDR, NodeCIDR, BridgeInterface, InterfaceNamePrefix"
    )]
    UnknownMode(String),
    /// Two CIDRs of one family.
    #[error("--cluster-cidr: more than one CIDR of the family of {0}")]
    TwoCidrs(IpNet),
    /// The mode's companion flag is missing.
    #[error("--detect-local-mode={mode} needs --{flag}")]
    Missing {
        /// The mode.
        mode: DetectLocalMode,
        /// The flag it needs.
        flag: &'static str,
    },
}

impl FromStr for DetectLocalMode {
    type Err = LocalDetectError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .iter()
            .find(|(_, n)| *n == s)
            .map(|(m, _)| *m)
            .ok_or_else(|| LocalDetectError::UnknownMode(s.to_owned()))
    }
}

impl LocalDetect {
    /// The detection of IPv4 and IPv6 for `mode` and its flags
    /// (`--cluster-cidr`, `--pod-bridge-interface`,
    /// `--pod-interface-name-prefix`; empty names count as missing).
    /// `NodeCIDR` gives [`LocalDetect::NodeCidr`] for both, to be
    /// [resolved](LocalDetect::resolve) at each sync.
    pub fn per_family(
        mode: DetectLocalMode,
        cluster_cidrs: &[IpNet],
        bridge: Option<&str>,
        prefix: Option<&str>,
    ) -> Result<[LocalDetect; 2], LocalDetectError> {
        let named = |value: Option<&str>, flag| match value.filter(|v| !v.is_empty()) {
            Some(v) => Ok(v.to_owned()),
            None => Err(LocalDetectError::Missing { mode, flag }),
        };
        match mode {
            DetectLocalMode::ClusterCidr => {
                let mut out = [LocalDetect::None, LocalDetect::None];
                for net in cluster_cidrs {
                    let slot = &mut out[usize::from(net.addr().is_ipv6())];
                    if *slot != LocalDetect::None {
                        return Err(LocalDetectError::TwoCidrs(*net));
                    }
                    *slot = LocalDetect::Cidr(*net);
                }
                Ok(out)
            }
            DetectLocalMode::NodeCidr => Ok([LocalDetect::NodeCidr, LocalDetect::NodeCidr]),
            DetectLocalMode::BridgeInterface => {
                let d = LocalDetect::BridgeInterface(named(bridge, "pod-bridge-interface")?);
                Ok([d.clone(), d])
            }
            DetectLocalMode::InterfaceNamePrefix => {
                let d =
                    LocalDetect::InterfaceNamePrefix(named(prefix, "pod-interface-name-prefix")?);
                Ok([d.clone(), d])
            }
        }
    }
}

impl LocalDetect {
    /// The detection to render, given this node's pod CIDRs: a
    /// [`LocalDetect::NodeCidr`] becomes the first pod CIDR of `ipv6`'s
    /// family, or no detection when the node has none of it (kube-proxy's
    /// no-op detector); anything else stays as it is.
    pub fn resolve(&self, pod_cidrs: &[IpNet], ipv6: bool) -> LocalDetect {
        match self {
            LocalDetect::NodeCidr => pod_cidrs
                .iter()
                .find(|c| c.addr().is_ipv6() == ipv6)
                .map_or(LocalDetect::None, |c| LocalDetect::Cidr(*c)),
            other => other.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_parse_by_kube_proxys_names() {
        for (mode, name) in DetectLocalMode::ALL {
            assert_eq!(name.parse::<DetectLocalMode>(), Ok(mode));
            assert_eq!(mode.to_string(), name);
        }
        assert!("NodeCidr".parse::<DetectLocalMode>().is_err());
    }

    #[test]
    fn each_mode_needs_its_flag() {
        let v4: IpNet = "10.244.0.0/16".parse().unwrap();
        let v6: IpNet = "fd00:244::/56".parse().unwrap();
        let cidr = DetectLocalMode::ClusterCidr;
        assert_eq!(
            LocalDetect::per_family(cidr, &[v4, v6], None, None),
            Ok([LocalDetect::Cidr(v4), LocalDetect::Cidr(v6)])
        );
        assert_eq!(
            LocalDetect::per_family(cidr, &[], None, None),
            Ok([LocalDetect::None, LocalDetect::None])
        );
        assert_eq!(
            LocalDetect::per_family(cidr, &[v4, v4], None, None),
            Err(LocalDetectError::TwoCidrs(v4))
        );
        let bridge = DetectLocalMode::BridgeInterface;
        assert_eq!(
            LocalDetect::per_family(bridge, &[], Some("cbr0"), None).unwrap()[1],
            LocalDetect::BridgeInterface("cbr0".into())
        );
        let err = LocalDetect::per_family(bridge, &[], Some(""), None).unwrap_err();
        assert_eq!(
            err.to_string(),
            "--detect-local-mode=BridgeInterface needs --pod-bridge-interface"
        );
        let prefix = DetectLocalMode::InterfaceNamePrefix;
        assert!(LocalDetect::per_family(prefix, &[], None, None).is_err());
    }

    #[test]
    fn node_cidr_is_resolved_per_family_at_sync_time() {
        let [v4d, v6d] =
            LocalDetect::per_family(DetectLocalMode::NodeCidr, &[], None, None).unwrap();
        assert_eq!(v4d, LocalDetect::NodeCidr);
        let v4: IpNet = "10.244.1.0/24".parse().unwrap();
        let v6: IpNet = "fd00:244:1::/64".parse().unwrap();
        assert_eq!(v4d.resolve(&[v6, v4], false), LocalDetect::Cidr(v4));
        assert_eq!(v6d.resolve(&[v6, v4], true), LocalDetect::Cidr(v6));
        assert_eq!(v6d.resolve(&[v4], true), LocalDetect::None);
        let bridge = LocalDetect::BridgeInterface("cbr0".into());
        assert_eq!(bridge.resolve(&[v4], false), bridge);
    }
}
