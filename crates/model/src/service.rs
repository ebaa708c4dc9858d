//! Virtual services, their real servers, and what IPVS reports about them.
//!
//! This module owns the shape of IPVS state as every layer sees it: how a
//! service is identified and configured ([`Service`]), its destinations
//! ([`Destination`]), the counters and connection counts a dataplane
//! reports ([`ServiceStatus`], [`DestinationStatus`], [`Stats`]), and the
//! global settings (timeouts, sync daemons, version). The wire details
//! (attribute numbers, byte orders) belong to the netlink crate.

use std::fmt;
use std::net::{IpAddr, SocketAddr};

use crate::Scheduler;

/// Transport protocol of a virtual service.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
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
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
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

impl ServiceKey {
    /// A TCP service key.
    pub fn tcp(addr: SocketAddr) -> ServiceKey {
        ServiceKey::Addr {
            protocol: Protocol::Tcp,
            addr,
        }
    }

    /// A UDP service key.
    pub fn udp(addr: SocketAddr) -> ServiceKey {
        ServiceKey::Addr {
            protocol: Protocol::Udp,
            addr,
        }
    }

    /// `true` when the service is in the IPv6 family.
    pub fn is_ipv6(&self) -> bool {
        match self {
            ServiceKey::Addr { addr, .. } => addr.is_ipv6(),
            ServiceKey::Fwmark { ipv6, .. } => *ipv6,
        }
    }
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

/// Service flag bits, as the kernel defines them (`IP_VS_SVC_F_*`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct ServiceFlags(pub u32);

impl ServiceFlags {
    /// Persistent service (`-p`).
    pub const PERSISTENT: u32 = 0x0001;
    /// Hashed entry (set by the kernel, read-only).
    pub const HASHED: u32 = 0x0002;
    /// One-packet scheduling (`-o`).
    pub const ONEPACKET: u32 = 0x0004;
    /// Scheduler flag 1 (`sh-fallback`, `mh-fallback`, `flag-1`).
    pub const SCHED1: u32 = 0x0008;
    /// Scheduler flag 2 (`sh-port`, `mh-port`, `flag-2`).
    pub const SCHED2: u32 = 0x0010;
    /// Scheduler flag 3 (`flag-3`).
    pub const SCHED3: u32 = 0x0020;

    /// `true` when every bit of `flag` is set.
    pub fn has(self, flag: u32) -> bool {
        self.0 & flag == flag
    }

    /// These flags with `flag` set or cleared.
    pub fn with(self, flag: u32, on: bool) -> ServiceFlags {
        if on {
            ServiceFlags(self.0 | flag)
        } else {
            ServiceFlags(self.0 & !flag)
        }
    }
}

/// Persistence granularity: for IPv4 services a netmask (host byte order,
/// `0xffff_ffff` = one client), for IPv6 a prefix length (128 = one
/// client). This is what the kernel stores in `IPVS_SVC_ATTR_NETMASK`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct Netmask(pub u32);

impl Netmask {
    /// The default for the family: one client address.
    pub fn host(ipv6: bool) -> Netmask {
        if ipv6 {
            Netmask(128)
        } else {
            Netmask(u32::MAX)
        }
    }

    /// The prefix length this netmask stands for (IPv4 masks count their
    /// leading one bits).
    pub fn prefix_len(self, ipv6: bool) -> u8 {
        if ipv6 {
            u8::try_from(self.0.min(128)).unwrap_or(128)
        } else {
            u8::try_from(self.0.leading_ones()).unwrap_or(32)
        }
    }
}

/// A virtual service's configuration (what `ipvsadm -A`/`-E` set).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct Service {
    /// What identifies the service.
    pub key: ServiceKey,
    /// The scheduler that picks a destination for a new connection.
    pub scheduler: Scheduler,
    /// Flag bits; [`ServiceFlags::PERSISTENT`] with [`Service::timeout`].
    pub flags: ServiceFlags,
    /// Persistence timeout in seconds (meaningful when persistent).
    pub timeout: u32,
    /// Persistence granularity.
    pub netmask: Netmask,
    /// Persistence engine (`--pe`, e.g. `sip`), if any.
    pub pe_name: Option<String>,
}

impl Service {
    /// A service with no persistence and no flags.
    pub fn new(key: ServiceKey, scheduler: Scheduler) -> Service {
        Service {
            key,
            scheduler,
            flags: ServiceFlags::default(),
            timeout: 0,
            netmask: Netmask::host(key.is_ipv6()),
            pe_name: None,
        }
    }

    /// This service made persistent for `timeout` seconds.
    pub fn persistent(mut self, timeout: u32) -> Service {
        self.flags = self.flags.with(ServiceFlags::PERSISTENT, true);
        self.timeout = timeout;
        self
    }

    /// `true` when persistent.
    pub fn is_persistent(&self) -> bool {
        self.flags.has(ServiceFlags::PERSISTENT)
    }

    /// The virtual address, when the service is not identified by a mark.
    pub fn address(&self) -> Option<IpAddr> {
        match self.key {
            ServiceKey::Addr { addr, .. } => Some(addr.ip()),
            ServiceKey::Fwmark { .. } => None,
        }
    }
}

/// How packets reach a real server (`IP_VS_CONN_F_FWD_MASK` values).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum ForwardMethod {
    /// NAT (`-m`, "Masq").
    Masquerade,
    /// The real server is this host ("Local").
    Local,
    /// IP-in-IP or other tunnel (`-i`, "Tunnel").
    Tunnel,
    /// Direct routing (`-g`, "Route").
    DirectRoute,
    /// Bypass ("Bypass").
    Bypass,
    /// A value this model does not know, kept as the kernel sent it.
    Other(u32),
}

impl ForwardMethod {
    /// The kernel's connection-flag value.
    pub fn to_kernel(self) -> u32 {
        match self {
            ForwardMethod::Masquerade => 0,
            ForwardMethod::Local => 1,
            ForwardMethod::Tunnel => 2,
            ForwardMethod::DirectRoute => 3,
            ForwardMethod::Bypass => 4,
            ForwardMethod::Other(v) => v,
        }
    }

    /// The method for a kernel connection-flag value (masked with 7).
    pub fn from_kernel(value: u32) -> ForwardMethod {
        match value & 0x7 {
            0 => ForwardMethod::Masquerade,
            1 => ForwardMethod::Local,
            2 => ForwardMethod::Tunnel,
            3 => ForwardMethod::DirectRoute,
            4 => ForwardMethod::Bypass,
            v => ForwardMethod::Other(v),
        }
    }
}

/// Tunnel encapsulation for [`ForwardMethod::Tunnel`] (`--tun-type`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum TunnelType {
    /// IP-in-IP (the default).
    #[default]
    Ipip,
    /// Generic UDP encapsulation.
    Gue,
    /// Generic routing encapsulation.
    Gre,
    /// A value this model does not know.
    Other(u8),
}

impl TunnelType {
    /// The kernel's `IP_VS_CONN_F_TUNNEL_TYPE_*` value.
    pub fn to_kernel(self) -> u8 {
        match self {
            TunnelType::Ipip => 0,
            TunnelType::Gue => 1,
            TunnelType::Gre => 2,
            TunnelType::Other(v) => v,
        }
    }

    /// The type for a kernel value.
    pub fn from_kernel(value: u8) -> TunnelType {
        match value {
            0 => TunnelType::Ipip,
            1 => TunnelType::Gue,
            2 => TunnelType::Gre,
            v => TunnelType::Other(v),
        }
    }
}

/// Tunnel checksum flags (`IP_VS_TUNNEL_ENCAP_FLAG_*`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct TunnelFlags(pub u16);

impl TunnelFlags {
    /// No checksum (`--tun-nocsum`).
    pub const NOCSUM: u16 = 0;
    /// UDP checksum (`--tun-csum`).
    pub const CSUM: u16 = 1 << 0;
    /// Remote checksum offload (`--tun-remcsum`).
    pub const REMCSUM: u16 = 1 << 1;
}

/// Tunnel settings of a destination.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct Tunnel {
    /// Encapsulation.
    pub kind: TunnelType,
    /// Destination port for GUE.
    pub port: u16,
    /// Checksum flags for GUE and GRE.
    pub flags: TunnelFlags,
}

/// One real server behind a virtual service (what `ipvsadm -a`/`-e` set).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct Destination {
    /// Address and port of the real server (port 0 for fwmark services
    /// without a port).
    pub addr: SocketAddr,
    /// How traffic is forwarded to it.
    pub forward: ForwardMethod,
    /// Relative weight; 0 means quiescent (no new connections).
    pub weight: i32,
    /// Upper connection threshold; 0 means none.
    pub upper_threshold: u32,
    /// Lower connection threshold; 0 means none.
    pub lower_threshold: u32,
    /// Tunnel settings (used with [`ForwardMethod::Tunnel`]).
    pub tunnel: Tunnel,
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
            tunnel: Tunnel::default(),
        }
    }
}

/// IPVS counters: cumulative totals and the rate estimator's rates.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct Stats {
    /// Connections scheduled.
    pub conns: u64,
    /// Incoming packets.
    pub inpkts: u64,
    /// Outgoing packets.
    pub outpkts: u64,
    /// Incoming bytes.
    pub inbytes: u64,
    /// Outgoing bytes.
    pub outbytes: u64,
    /// Connections per second.
    pub cps: u64,
    /// Incoming packets per second.
    pub inpps: u64,
    /// Outgoing packets per second.
    pub outpps: u64,
    /// Incoming bytes per second.
    pub inbps: u64,
    /// Outgoing bytes per second.
    pub outbps: u64,
}

/// A service as a dataplane reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct ServiceStatus {
    /// Its configuration.
    pub service: Service,
    /// Its counters.
    pub stats: Stats,
}

/// A destination as a dataplane reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct DestinationStatus {
    /// Its configuration.
    pub destination: Destination,
    /// Connections in established state.
    pub active_conns: u32,
    /// Connections in other states.
    pub inactive_conns: u32,
    /// Persistence templates pointing at it.
    pub persistent_conns: u32,
    /// Its counters.
    pub stats: Stats,
}

/// A service with its destinations: desired state, or a full snapshot.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct VirtualService {
    /// The service.
    pub service: Service,
    /// Its real servers.
    pub destinations: Vec<Destination>,
}

/// Connection timeouts in seconds (`ipvsadm --set tcp tcpfin udp`); 0 in a
/// request means "leave unchanged".
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct Timeouts {
    /// Established TCP.
    pub tcp: u32,
    /// TCP after FIN.
    pub tcp_fin: u32,
    /// UDP.
    pub udp: u32,
}

/// Which role a connection-sync daemon has.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum DaemonState {
    /// Sends connection updates (`IP_VS_STATE_MASTER`).
    Master,
    /// Receives them (`IP_VS_STATE_BACKUP`).
    Backup,
    /// A state value this model does not know, kept as the kernel sent it.
    Other(u32),
}

impl DaemonState {
    /// The kernel's `IP_VS_STATE_*` value.
    pub fn to_kernel(self) -> u32 {
        match self {
            DaemonState::Master => 1,
            DaemonState::Backup => 2,
            DaemonState::Other(v) => v,
        }
    }

    /// The state for a kernel value.
    pub fn from_kernel(value: u32) -> DaemonState {
        match value {
            1 => DaemonState::Master,
            2 => DaemonState::Backup,
            v => DaemonState::Other(v),
        }
    }
}

/// A connection-synchronisation daemon (`--start-daemon`).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct Daemon {
    /// Master or backup.
    pub state: DaemonState,
    /// Multicast interface.
    pub mcast_ifn: String,
    /// Sync id.
    pub syncid: u32,
    /// Maximum sync message length; 0 for the kernel's default.
    pub sync_maxlen: u16,
    /// Multicast group; `None` for the kernel's default.
    pub mcast_group: Option<IpAddr>,
    /// Multicast port; 0 for the kernel's default.
    pub mcast_port: u16,
    /// Multicast TTL; 0 for the kernel's default.
    pub mcast_ttl: u8,
}

/// Version and connection-table size (the listing's first line).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct Info {
    /// IPVS version as `major << 16 | minor << 8 | patch`.
    pub version: u32,
    /// Connection hash table size.
    pub conn_table_size: u32,
}

/// One entry of the connection table (`ipvsadm -Lc`).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct Connection {
    /// Protocol name as the kernel prints it (`TCP`, `UDP`, `SCTP`, ...).
    pub protocol: String,
    /// Client address.
    pub client: SocketAddr,
    /// Virtual address.
    pub virtual_addr: SocketAddr,
    /// Real server address.
    pub destination: SocketAddr,
    /// Protocol state name (`ESTABLISHED`, `FIN_WAIT`, `UDP`, `NONE`, ...).
    pub state: String,
    /// Seconds until the entry expires.
    pub expires: u32,
    /// Persistence engine name and data, when one is in use.
    pub pe: Option<(String, String)>,
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
    fn netmask_defaults_to_one_client() {
        let v4 = ServiceKey::tcp("10.96.0.1:443".parse().unwrap());
        let v6 = ServiceKey::udp("[fd00::1]:53".parse().unwrap());
        assert_eq!(
            Service::new(v4, Scheduler::RoundRobin).netmask,
            Netmask(0xffff_ffff)
        );
        assert_eq!(
            Service::new(v6, Scheduler::RoundRobin).netmask,
            Netmask(128)
        );
        assert_eq!(Netmask(0xffff_ff00).prefix_len(false), 24);
        assert_eq!(Netmask(64).prefix_len(true), 64);
        let fw6 = ServiceKey::Fwmark {
            mark: 7,
            ipv6: true,
        };
        assert_eq!(Service::new(fw6, Scheduler::RoundRobin).address(), None);
    }

    #[test]
    fn persistence_sets_the_flag_and_timeout() {
        let svc = Service::new(
            ServiceKey::tcp("10.0.0.1:80".parse().unwrap()),
            Scheduler::RoundRobin,
        )
        .persistent(10800);
        assert!(svc.is_persistent());
        assert_eq!(svc.timeout, 10800);
        assert!(!svc.flags.has(ServiceFlags::ONEPACKET));
    }

    #[test]
    fn forward_methods_round_trip_through_kernel_values() {
        for v in 0..8 {
            assert_eq!(ForwardMethod::from_kernel(v).to_kernel(), v);
        }
        assert_eq!(ForwardMethod::from_kernel(3), ForwardMethod::DirectRoute);
        for v in 0..=255u8 {
            assert_eq!(TunnelType::from_kernel(v).to_kernel(), v);
        }
        for v in 0..=8u32 {
            assert_eq!(DaemonState::from_kernel(v).to_kernel(), v);
        }
        assert_eq!(DaemonState::from_kernel(2), DaemonState::Backup);
    }

    #[test]
    fn keys_display_like_a_listing() {
        let key = ServiceKey::tcp("100.100.100.100:80".parse().unwrap());
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

    #[cfg(feature = "serde")]
    #[test]
    fn services_serialise_losslessly() {
        let mut svc = Service::new(
            ServiceKey::tcp("[fd00::10]:8080".parse().unwrap()),
            Scheduler::Maglev,
        )
        .persistent(60);
        svc.pe_name = Some("sip".into());
        let json = serde_json::to_string(&svc).unwrap();
        assert_eq!(serde_json::from_str::<Service>(&json).unwrap(), svc);
    }
}
