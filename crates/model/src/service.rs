//! Virtual services and their real servers.
//!
//! This module owns the shape of one IPVS virtual service as every layer
//! sees it: how it is identified, how it schedules, and which destinations
//! it forwards to. The wire details (flag bits, attribute numbers) belong
//! to the netlink crate, not here.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use crate::Scheduler;

/// Transport protocol of a virtual service.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Protocol {
    /// TCP (`-t`).
    Tcp,
    /// UDP (`-u`).
    Udp,
    /// SCTP (`--sctp-service`).
    Sctp,
}

impl Protocol {
    /// The IP protocol number (`IPPROTO_*`).
    pub fn number(self) -> u8 {
        match self {
            Protocol::Tcp => 6,
            Protocol::Udp => 17,
            Protocol::Sctp => 132,
        }
    }

    /// The protocol with the given IP protocol number, if IPVS supports it.
    pub fn from_number(number: u8) -> Option<Protocol> {
        match number {
            6 => Some(Protocol::Tcp),
            17 => Some(Protocol::Udp),
            132 => Some(Protocol::Sctp),
            _ => None,
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Protocol::Tcp => "TCP",
            Protocol::Udp => "UDP",
            Protocol::Sctp => "SCTP",
        })
    }
}

/// What identifies a virtual service.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ServiceKey {
    /// A protocol, address and port.
    Addr {
        /// Transport protocol.
        protocol: Protocol,
        /// Virtual address and port.
        addr: SocketAddr,
    },
    /// A firewall mark (`-f`) within one address family.
    Fwmark {
        /// The mark.
        mark: u32,
        /// `true` for IPv6 (`-6`).
        ipv6: bool,
    },
}

impl fmt::Display for ServiceKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ServiceKey::Addr { protocol, addr } => write!(f, "{protocol} {addr}"),
            ServiceKey::Fwmark { mark, ipv6: false } => write!(f, "FWM {mark}"),
            ServiceKey::Fwmark { mark, ipv6: true } => write!(f, "FWM {mark} IPv6"),
        }
    }
}

/// How packets reach a real server.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ForwardMethod {
    /// NAT (`-m`, "Masq").
    Masquerade,
    /// Direct routing (`-g`, "Route").
    DirectRoute,
    /// IP-in-IP or other tunnel (`-i`, "Tunnel").
    Tunnel,
    /// The real server is this host ("Local").
    Local,
}

/// One real server behind a virtual service.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Destination {
    /// Address and port of the real server.
    pub addr: SocketAddr,
    /// How traffic is forwarded to it.
    pub forward: ForwardMethod,
    /// Relative weight; 0 means quiescent (no new connections).
    pub weight: u32,
    /// Upper connection threshold; 0 means none.
    pub upper_threshold: u32,
    /// Lower connection threshold; 0 means none.
    pub lower_threshold: u32,
}

impl Destination {
    /// A masqueraded destination with weight 1 and no thresholds, as
    /// kube-proxy programs endpoints.
    pub fn masquerade(addr: SocketAddr) -> Destination {
        Destination {
            addr,
            forward: ForwardMethod::Masquerade,
            weight: 1,
            upper_threshold: 0,
            lower_threshold: 0,
        }
    }
}

/// A virtual service with its scheduling settings and destinations.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VirtualService {
    /// What identifies the service.
    pub key: ServiceKey,
    /// The scheduler that picks a destination for a new connection.
    pub scheduler: Scheduler,
    /// Client persistence timeout; `None` when not persistent.
    pub persistence: Option<Duration>,
    /// Persistence netmask (prefix length) grouping clients for persistence.
    pub persistence_prefix: u8,
    /// The real servers.
    pub destinations: Vec<Destination>,
}

impl VirtualService {
    /// A service with no persistence and no destinations.
    pub fn new(key: ServiceKey, scheduler: Scheduler) -> VirtualService {
        let persistence_prefix = match key {
            ServiceKey::Addr { addr, .. } if addr.is_ipv6() => 128,
            ServiceKey::Fwmark { ipv6: true, .. } => 128,
            _ => 32,
        };
        VirtualService {
            key,
            scheduler,
            persistence: None,
            persistence_prefix,
            destinations: Vec::new(),
        }
    }

    /// The virtual address, when the service is not identified by a mark.
    pub fn address(&self) -> Option<IpAddr> {
        match self.key {
            ServiceKey::Addr { addr, .. } => Some(addr.ip()),
            ServiceKey::Fwmark { .. } => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn protocol_numbers_round_trip() {
        for p in [Protocol::Tcp, Protocol::Udp, Protocol::Sctp] {
            assert_eq!(Protocol::from_number(p.number()), Some(p));
        }
        assert_eq!(Protocol::from_number(1), None);
    }

    #[test]
    fn persistence_prefix_defaults_to_a_host_route() {
        let v4 = ServiceKey::Addr {
            protocol: Protocol::Tcp,
            addr: "10.96.0.1:443".parse().unwrap(),
        };
        let v6 = ServiceKey::Addr {
            protocol: Protocol::Udp,
            addr: "[fd00::1]:53".parse().unwrap(),
        };
        assert_eq!(
            VirtualService::new(v4, Scheduler::RoundRobin).persistence_prefix,
            32
        );
        assert_eq!(
            VirtualService::new(v6, Scheduler::RoundRobin).persistence_prefix,
            128
        );
        let fw6 = ServiceKey::Fwmark {
            mark: 7,
            ipv6: true,
        };
        assert_eq!(
            VirtualService::new(fw6, Scheduler::RoundRobin).address(),
            None
        );
    }

    #[test]
    fn keys_display_like_a_listing() {
        let key = ServiceKey::Addr {
            protocol: Protocol::Tcp,
            addr: "100.100.100.100:80".parse().unwrap(),
        };
        assert_eq!(key.to_string(), "TCP 100.100.100.100:80");
        assert_eq!(
            ServiceKey::Fwmark {
                mark: 1,
                ipv6: false
            }
            .to_string(),
            "FWM 1"
        );
    }
}
