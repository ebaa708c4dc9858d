//! Conversion between [`rvs_model`] types and IPVS attributes: the
//! requests for every admin [`Op`] and read, and the decoding of the
//! kernel's replies into statuses.
//!
//! Requests are shaped as libipvs (ipvsadm's library) shapes them: a
//! 16-byte `nf_inet_addr` for addresses, `{flags, mask = !0}` for service
//! flags, the IPv4 netmask in network order and the IPv6 prefix length in
//! host order, and the destination's own address family.
//!
//! Decoding keeps what the model can hold even where rvs does not know
//! it: a scheduler name rvs has no variant for becomes
//! [`Scheduler::Other`], unknown flag bits, forwarding methods, tunnel
//! types and daemon states are kept as numbers, and attributes of kinds
//! the codec does not know are ignored. What the model cannot hold at all
//! (a service of a protocol other than TCP, UDP and SCTP, an address
//! family other than IPv4 and IPv6) is an error that
//! [`ConvertError::is_unrepresentable`] singles out, so that a dump can
//! leave that one object out instead of failing (see `crate::client`).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use rvs_ipvs_proto::{
    AF_INET, AF_INET6, CmdAttr, DaemonAttr, DestAttr, IpvsCmd, IpvsMessage, Nested, StatsAttr,
    StatsField, SvcAttr,
};
use rvs_model::admin::Op;
use rvs_model::{
    Daemon, DaemonState, Destination, DestinationStatus, ForwardMethod, Info, InvalidSchedulerName,
    Netmask, Protocol, Scheduler, Service, ServiceFlags, ServiceKey, ServiceStatus, Stats,
    Timeouts, Tunnel, TunnelFlags, TunnelType,
};

/// Why a reply could not be turned into model types.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ConvertError {
    /// A required attribute is absent.
    #[error("{object}: missing attribute {attr}")]
    Missing {
        /// What was being decoded.
        object: &'static str,
        /// The attribute's name in ip_vs.h.
        attr: &'static str,
    },
    /// An address family other than IPv4 or IPv6.
    #[error("{object}: unsupported address family {af}")]
    Family {
        /// What was being decoded.
        object: &'static str,
        /// The family.
        af: u16,
    },
    /// A protocol the model has no [`Protocol`] for.
    #[error("service: unsupported protocol {0}")]
    Protocol(u16),
    /// A scheduler name no kernel can hold (the kernel's are 1 to 15
    /// bytes). Names rvs merely does not know are kept, not refused.
    #[error("service: {0}")]
    SchedulerName(InvalidSchedulerName),
    /// A reply without the expected payload.
    #[error("reply to {0}: no {1} in it")]
    Reply(&'static str, &'static str),
}

impl ConvertError {
    /// `true` when the object is well formed but the model cannot hold
    /// it (a foreign protocol or address family, an impossible scheduler
    /// name), as opposed to a reply that lacks what every kernel sends.
    pub fn is_unrepresentable(&self) -> bool {
        matches!(
            self,
            ConvertError::Family { .. }
                | ConvertError::Protocol(_)
                | ConvertError::SchedulerName(_)
        )
    }
}

fn family(ipv6: bool) -> u16 {
    if ipv6 { AF_INET6 } else { AF_INET }
}

fn addr_bytes(ip: IpAddr) -> Vec<u8> {
    let mut bytes = vec![0u8; 16];
    match ip {
        IpAddr::V4(v4) => bytes[..4].copy_from_slice(&v4.octets()),
        IpAddr::V6(v6) => bytes.copy_from_slice(&v6.octets()),
    }
    bytes
}

fn ip_from(bytes: &[u8], af: u16, object: &'static str) -> Result<IpAddr, ConvertError> {
    match af {
        AF_INET => {
            let b: [u8; 4] =
                bytes
                    .get(..4)
                    .and_then(|b| b.try_into().ok())
                    .ok_or(ConvertError::Missing {
                        object,
                        attr: "ADDR",
                    })?;
            Ok(IpAddr::V4(Ipv4Addr::from(b)))
        }
        AF_INET6 => {
            let b: [u8; 16] = bytes.try_into().map_err(|_| ConvertError::Missing {
                object,
                attr: "ADDR",
            })?;
            Ok(IpAddr::V6(Ipv6Addr::from(b)))
        }
        af => Err(ConvertError::Family { object, af }),
    }
}

/// The attributes that identify a service (enough for delete and dumps).
pub fn service_key_attrs(key: &ServiceKey) -> Vec<SvcAttr> {
    match key {
        ServiceKey::Addr { protocol, addr } => vec![
            SvcAttr::Af(family(addr.is_ipv6())),
            SvcAttr::Protocol(u16::from(protocol.number())),
            SvcAttr::Addr(addr_bytes(addr.ip())),
            SvcAttr::Port(addr.port()),
        ],
        ServiceKey::Fwmark { mark, ipv6 } => {
            vec![SvcAttr::Af(family(*ipv6)), SvcAttr::Fwmark(*mark)]
        }
    }
}

fn netmask_bytes(netmask: Netmask, ipv6: bool) -> [u8; 4] {
    if ipv6 {
        netmask.0.to_ne_bytes()
    } else {
        netmask.0.to_be_bytes()
    }
}

/// The attributes of a full service description (add and edit).
pub fn service_attrs(service: &Service) -> Vec<SvcAttr> {
    let mut attrs = service_key_attrs(&service.key);
    attrs.push(SvcAttr::SchedName(service.scheduler.name().to_owned()));
    if let Some(pe) = &service.pe_name {
        attrs.push(SvcAttr::PeName(pe.clone()));
    }
    attrs.push(SvcAttr::Flags {
        flags: service.flags.0,
        mask: u32::MAX,
    });
    attrs.push(SvcAttr::Timeout(service.timeout));
    attrs.push(SvcAttr::Netmask(netmask_bytes(
        service.netmask,
        service.key.is_ipv6(),
    )));
    attrs
}

fn stats_from(nest: &[StatsAttr]) -> Stats {
    let mut stats = Stats::default();
    for attr in nest {
        if let StatsAttr::Field(field, counter) = attr {
            let v = counter.get();
            match field {
                StatsField::Conns => stats.conns = v,
                StatsField::InPkts => stats.inpkts = v,
                StatsField::OutPkts => stats.outpkts = v,
                StatsField::InBytes => stats.inbytes = v,
                StatsField::OutBytes => stats.outbytes = v,
                StatsField::Cps => stats.cps = v,
                StatsField::InPps => stats.inpps = v,
                StatsField::OutPps => stats.outpps = v,
                StatsField::InBps => stats.inbps = v,
                StatsField::OutBps => stats.outbps = v,
                _ => {}
            }
        }
    }
    stats
}

/// Decodes a service description from a reply.
pub fn service_status(attrs: &[SvcAttr]) -> Result<ServiceStatus, ConvertError> {
    const OBJ: &str = "service";
    let (mut af, mut protocol, mut addr, mut port, mut fwmark) = (None, None, None, None, None);
    let (mut sched, mut flags, mut timeout, mut netmask, mut pe) = (None, 0, 0, None, None);
    let (mut stats32, mut stats64) = (None, None);
    for attr in attrs {
        match attr {
            SvcAttr::Af(v) => af = Some(*v),
            SvcAttr::Protocol(v) => protocol = Some(*v),
            SvcAttr::Addr(v) => addr = Some(v.as_slice()),
            SvcAttr::Port(v) => port = Some(*v),
            SvcAttr::Fwmark(v) => fwmark = Some(*v),
            SvcAttr::SchedName(v) => sched = Some(v.as_str()),
            SvcAttr::Flags { flags: f, .. } => flags = *f,
            SvcAttr::Timeout(v) => timeout = *v,
            SvcAttr::Netmask(v) => netmask = Some(*v),
            SvcAttr::PeName(v) => pe = Some(v.clone()),
            SvcAttr::Stats(n) => stats32 = Some(n.attrs.as_slice()),
            SvcAttr::Stats64(n) => stats64 = Some(n.attrs.as_slice()),
            _ => {}
        }
    }
    let af = af.ok_or(ConvertError::Missing {
        object: OBJ,
        attr: "AF",
    })?;
    let ipv6 = match af {
        AF_INET => false,
        AF_INET6 => true,
        af => return Err(ConvertError::Family { object: OBJ, af }),
    };
    let key = match fwmark.filter(|m| *m != 0) {
        Some(mark) => ServiceKey::Fwmark { mark, ipv6 },
        None => {
            let number = protocol.ok_or(ConvertError::Missing {
                object: OBJ,
                attr: "PROTOCOL",
            })?;
            let protocol = u8::try_from(number)
                .ok()
                .and_then(Protocol::from_number)
                .ok_or(ConvertError::Protocol(number))?;
            let ip = ip_from(
                addr.ok_or(ConvertError::Missing {
                    object: OBJ,
                    attr: "ADDR",
                })?,
                af,
                OBJ,
            )?;
            let port = port.ok_or(ConvertError::Missing {
                object: OBJ,
                attr: "PORT",
            })?;
            ServiceKey::Addr {
                protocol,
                addr: SocketAddr::new(ip, port),
            }
        }
    };
    let sched = sched.ok_or(ConvertError::Missing {
        object: OBJ,
        attr: "SCHED_NAME",
    })?;
    let scheduler = Scheduler::from_kernel_name(sched).map_err(ConvertError::SchedulerName)?;
    let netmask = match netmask {
        Some(bytes) if ipv6 => Netmask(u32::from_ne_bytes(bytes)),
        Some(bytes) => Netmask(u32::from_be_bytes(bytes)),
        None => Netmask::host(ipv6),
    };
    let service = Service {
        key,
        scheduler,
        flags: ServiceFlags(flags),
        timeout,
        netmask,
        pe_name: pe,
    };
    let stats = stats64.or(stats32).map(stats_from).unwrap_or_default();
    Ok(ServiceStatus { service, stats })
}

/// A short description of a service from its attributes, for messages
/// about a service the model cannot hold: `protocol 47 10.0.0.1:80`,
/// `fwmark 3 (family 10)`.
pub fn describe_service(attrs: &[SvcAttr]) -> String {
    let (mut af, mut protocol, mut addr, mut port, mut fwmark) = (None, None, None, None, None);
    for attr in attrs {
        match attr {
            SvcAttr::Af(v) => af = Some(*v),
            SvcAttr::Protocol(v) => protocol = Some(*v),
            SvcAttr::Addr(v) => addr = Some(v.as_slice()),
            SvcAttr::Port(v) => port = Some(*v),
            SvcAttr::Fwmark(v) => fwmark = Some(*v),
            _ => {}
        }
    }
    let af = af.unwrap_or_default();
    if let Some(mark) = fwmark.filter(|m| *m != 0) {
        return format!("fwmark {mark} (family {af})");
    }
    let proto = protocol.map_or_else(|| "?".to_owned(), |p| p.to_string());
    let port = port.unwrap_or_default();
    match addr.map(|a| ip_from(a, af, "service")) {
        Some(Ok(ip)) => format!("protocol {proto} {}", SocketAddr::new(ip, port)),
        _ => format!("protocol {proto} port {port} (family {af})"),
    }
}

/// A short description of a destination from its attributes, for
/// messages about one the model cannot hold: `port 80 (family 7)`.
pub fn describe_dest(attrs: &[DestAttr]) -> String {
    let (mut af, mut port) = (None, None);
    for attr in attrs {
        match attr {
            DestAttr::AddrFamily(v) => af = Some(*v),
            DestAttr::Port(v) => port = Some(*v),
            _ => {}
        }
    }
    match af {
        Some(af) => format!("port {} (family {af})", port.unwrap_or_default()),
        None => format!("port {}", port.unwrap_or_default()),
    }
}

/// The attributes of a full destination description (add and edit).
pub fn dest_attrs(dest: &Destination) -> Vec<DestAttr> {
    let mut attrs = vec![
        DestAttr::Addr(addr_bytes(dest.addr.ip())),
        DestAttr::Port(dest.addr.port()),
        DestAttr::FwdMethod(dest.forward.to_kernel()),
        DestAttr::Weight(dest.weight),
        DestAttr::UThresh(dest.upper_threshold),
        DestAttr::LThresh(dest.lower_threshold),
        DestAttr::AddrFamily(family(dest.addr.is_ipv6())),
    ];
    if dest.forward == ForwardMethod::Tunnel {
        attrs.push(DestAttr::TunType(dest.tunnel.kind.to_kernel()));
        attrs.push(DestAttr::TunPort(dest.tunnel.port));
        attrs.push(DestAttr::TunFlags(dest.tunnel.flags.0));
    }
    attrs
}

/// The attributes that identify a destination (for delete).
pub fn dest_key_attrs(addr: &SocketAddr) -> Vec<DestAttr> {
    vec![
        DestAttr::Addr(addr_bytes(addr.ip())),
        DestAttr::Port(addr.port()),
        DestAttr::AddrFamily(family(addr.is_ipv6())),
    ]
}

/// Decodes a destination description from a reply; `service_ipv6` gives
/// the family when the kernel omits `ADDR_FAMILY` (before Linux 3.18).
pub fn dest_status(
    attrs: &[DestAttr],
    service_ipv6: bool,
) -> Result<DestinationStatus, ConvertError> {
    const OBJ: &str = "destination";
    let (mut addr, mut port, mut af) = (None, None, None);
    let mut dest = Destination::masquerade(SocketAddr::from(([0, 0, 0, 0], 0)));
    let mut status = DestinationStatus {
        destination: dest.clone(),
        active_conns: 0,
        inactive_conns: 0,
        persistent_conns: 0,
        stats: Stats::default(),
    };
    let (mut stats32, mut stats64) = (None, None);
    let mut tunnel = Tunnel::default();
    for attr in attrs {
        match attr {
            DestAttr::Addr(v) => addr = Some(v.as_slice()),
            DestAttr::Port(v) => port = Some(*v),
            DestAttr::FwdMethod(v) => dest.forward = ForwardMethod::from_kernel(*v),
            DestAttr::Weight(v) => dest.weight = *v,
            DestAttr::UThresh(v) => dest.upper_threshold = *v,
            DestAttr::LThresh(v) => dest.lower_threshold = *v,
            DestAttr::ActiveConns(v) => status.active_conns = *v,
            DestAttr::InactConns(v) => status.inactive_conns = *v,
            DestAttr::PersistConns(v) => status.persistent_conns = *v,
            DestAttr::Stats(n) => stats32 = Some(n.attrs.as_slice()),
            DestAttr::AddrFamily(v) => af = Some(*v),
            DestAttr::Stats64(n) => stats64 = Some(n.attrs.as_slice()),
            DestAttr::TunType(v) => tunnel.kind = TunnelType::from_kernel(*v),
            DestAttr::TunPort(v) => tunnel.port = *v,
            DestAttr::TunFlags(v) => tunnel.flags = TunnelFlags(*v),
            _ => {}
        }
    }
    let af = af.unwrap_or(family(service_ipv6));
    let ip = ip_from(
        addr.ok_or(ConvertError::Missing {
            object: OBJ,
            attr: "ADDR",
        })?,
        af,
        OBJ,
    )?;
    let port = port.ok_or(ConvertError::Missing {
        object: OBJ,
        attr: "PORT",
    })?;
    dest.addr = SocketAddr::new(ip, port);
    dest.tunnel = tunnel;
    status.destination = dest;
    status.stats = stats64.or(stats32).map(stats_from).unwrap_or_default();
    Ok(status)
}

/// The attributes of a sync daemon to start.
pub fn daemon_attrs(daemon: &Daemon) -> Vec<DaemonAttr> {
    let mut attrs = vec![
        DaemonAttr::State(daemon.state.to_kernel()),
        DaemonAttr::McastIfn(daemon.mcast_ifn.clone()),
        DaemonAttr::SyncId(daemon.syncid),
    ];
    if daemon.sync_maxlen != 0 {
        attrs.push(DaemonAttr::SyncMaxlen(daemon.sync_maxlen));
    }
    match daemon.mcast_group {
        Some(IpAddr::V4(g)) => attrs.push(DaemonAttr::McastGroup(g.octets())),
        Some(IpAddr::V6(g)) => attrs.push(DaemonAttr::McastGroup6(g.octets())),
        None => {}
    }
    if daemon.mcast_port != 0 {
        attrs.push(DaemonAttr::McastPort(daemon.mcast_port));
    }
    if daemon.mcast_ttl != 0 {
        attrs.push(DaemonAttr::McastTtl(daemon.mcast_ttl));
    }
    attrs
}

/// Decodes a sync daemon from a reply.
pub fn daemon(attrs: &[DaemonAttr]) -> Result<Daemon, ConvertError> {
    const OBJ: &str = "daemon";
    let mut daemon = Daemon {
        state: DaemonState::Master,
        mcast_ifn: String::new(),
        syncid: 0,
        sync_maxlen: 0,
        mcast_group: None,
        mcast_port: 0,
        mcast_ttl: 0,
    };
    let mut state = None;
    for attr in attrs {
        match attr {
            DaemonAttr::State(v) => state = Some(*v),
            DaemonAttr::McastIfn(v) => daemon.mcast_ifn = v.clone(),
            DaemonAttr::SyncId(v) => daemon.syncid = *v,
            DaemonAttr::SyncMaxlen(v) => daemon.sync_maxlen = *v,
            DaemonAttr::McastGroup(v) => daemon.mcast_group = Some(IpAddr::V4(Ipv4Addr::from(*v))),
            DaemonAttr::McastGroup6(v) => daemon.mcast_group = Some(IpAddr::V6(Ipv6Addr::from(*v))),
            DaemonAttr::McastPort(v) => daemon.mcast_port = *v,
            DaemonAttr::McastTtl(v) => daemon.mcast_ttl = *v,
            _ => {}
        }
    }
    daemon.state = match state {
        Some(state) => DaemonState::from_kernel(state),
        None => {
            return Err(ConvertError::Missing {
                object: OBJ,
                attr: "STATE",
            });
        }
    };
    Ok(daemon)
}

/// Decodes a `GET_CONFIG` reply.
pub fn timeouts(msg: &IpvsMessage) -> Timeouts {
    let mut t = Timeouts::default();
    for attr in &msg.attrs {
        match attr {
            CmdAttr::TimeoutTcp(v) => t.tcp = *v,
            CmdAttr::TimeoutTcpFin(v) => t.tcp_fin = *v,
            CmdAttr::TimeoutUdp(v) => t.udp = *v,
            _ => {}
        }
    }
    t
}

/// Decodes a `GET_INFO` reply.
pub fn info(msg: &IpvsMessage) -> Result<Info, ConvertError> {
    let mut version = None;
    let mut size = None;
    for attr in &msg.attrs {
        match attr {
            CmdAttr::InfoVersion(v) => version = Some(*v),
            CmdAttr::InfoConnTabSize(v) => size = Some(*v),
            _ => {}
        }
    }
    Ok(Info {
        version: version.ok_or(ConvertError::Reply("GET_INFO", "IPVS_INFO_ATTR_VERSION"))?,
        conn_table_size: size.ok_or(ConvertError::Reply(
            "GET_INFO",
            "IPVS_INFO_ATTR_CONN_TAB_SIZE",
        ))?,
    })
}

fn svc(attrs: Vec<SvcAttr>) -> CmdAttr {
    CmdAttr::Service(Nested::new(attrs))
}

fn dst(attrs: Vec<DestAttr>) -> CmdAttr {
    CmdAttr::Dest(Nested::new(attrs))
}

/// The request that carries out `op`.
pub fn request(op: &Op) -> IpvsMessage {
    let (cmd, attrs) = match op {
        Op::AddService(s) => (IpvsCmd::NewService, vec![svc(service_attrs(s))]),
        Op::EditService(s) => (IpvsCmd::SetService, vec![svc(service_attrs(s))]),
        Op::DeleteService(k) => (IpvsCmd::DelService, vec![svc(service_key_attrs(k))]),
        Op::Flush => (IpvsCmd::Flush, vec![]),
        Op::AddDestination(k, d) => (
            IpvsCmd::NewDest,
            vec![svc(service_key_attrs(k)), dst(dest_attrs(d))],
        ),
        Op::EditDestination(k, d) => (
            IpvsCmd::SetDest,
            vec![svc(service_key_attrs(k)), dst(dest_attrs(d))],
        ),
        Op::DeleteDestination(k, a) => (
            IpvsCmd::DelDest,
            vec![svc(service_key_attrs(k)), dst(dest_key_attrs(a))],
        ),
        Op::Zero(None) => (IpvsCmd::Zero, vec![]),
        Op::Zero(Some(k)) => (IpvsCmd::Zero, vec![svc(service_key_attrs(k))]),
        Op::SetTimeouts(t) => (
            IpvsCmd::SetConfig,
            vec![
                CmdAttr::TimeoutTcp(t.tcp),
                CmdAttr::TimeoutTcpFin(t.tcp_fin),
                CmdAttr::TimeoutUdp(t.udp),
            ],
        ),
        Op::StartDaemon(d) => (
            IpvsCmd::NewDaemon,
            vec![CmdAttr::Daemon(Nested::new(daemon_attrs(d)))],
        ),
        Op::StopDaemon(state) => (
            IpvsCmd::DelDaemon,
            vec![CmdAttr::Daemon(Nested::new(vec![DaemonAttr::State(
                state.to_kernel(),
            )]))],
        ),
    };
    IpvsMessage::new(cmd, attrs)
}

/// The `GET_SERVICE` request for one service.
pub fn get_service(key: &ServiceKey) -> IpvsMessage {
    IpvsMessage::new(IpvsCmd::GetService, vec![svc(service_key_attrs(key))])
}

/// The `GET_DEST` dump request for one service's destinations.
pub fn get_dests(key: &ServiceKey) -> IpvsMessage {
    IpvsMessage::new(IpvsCmd::GetDest, vec![svc(service_key_attrs(key))])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roundtrip_service(service: &Service) -> Service {
        service_status(&service_attrs(service)).unwrap().service
    }

    #[test]
    fn services_survive_the_attribute_round_trip() {
        let mut v4 = Service::new(
            ServiceKey::tcp("10.96.0.10:80".parse().unwrap()),
            Scheduler::WeightedRoundRobin,
        )
        .persistent(300);
        v4.netmask = Netmask(0xffff_ff00);
        assert_eq!(roundtrip_service(&v4), v4);
        let mut v6 = Service::new(
            ServiceKey::udp("[fd00::53]:53".parse().unwrap()),
            Scheduler::Maglev,
        );
        v6.flags = v6.flags.with(ServiceFlags::SCHED1, true);
        v6.netmask = Netmask(64);
        v6.pe_name = Some("sip".into());
        assert_eq!(roundtrip_service(&v6), v6);
        let fw = Service::new(
            ServiceKey::Fwmark {
                mark: 42,
                ipv6: false,
            },
            Scheduler::SourceHashing,
        );
        assert_eq!(roundtrip_service(&fw), fw);
    }

    #[test]
    fn ipv4_netmask_goes_out_in_network_order() {
        let mut s = Service::new(
            ServiceKey::tcp("10.0.0.1:80".parse().unwrap()),
            Scheduler::RoundRobin,
        );
        s.netmask = Netmask(0xffff_ff00);
        let attrs = service_attrs(&s);
        assert!(attrs.contains(&SvcAttr::Netmask([255, 255, 255, 0])));
        assert!(attrs.contains(&SvcAttr::Addr(vec![
            10, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0
        ])));
    }

    #[test]
    fn destinations_survive_the_attribute_round_trip() {
        let mut d = Destination::masquerade("10.0.2.2:8080".parse().unwrap());
        d.weight = 0;
        d.upper_threshold = 100;
        d.lower_threshold = 10;
        assert_eq!(dest_status(&dest_attrs(&d), false).unwrap().destination, d);
        let mut t = Destination::masquerade("[fd00::2]:0".parse().unwrap());
        t.forward = ForwardMethod::Tunnel;
        t.tunnel = Tunnel {
            kind: TunnelType::Gue,
            port: 6080,
            flags: TunnelFlags(TunnelFlags::CSUM),
        };
        assert_eq!(dest_status(&dest_attrs(&t), true).unwrap().destination, t);
    }

    #[test]
    fn a_service_without_family_is_an_error_naming_it() {
        let err = service_status(&[SvcAttr::Protocol(6)]).unwrap_err();
        assert_eq!(
            err,
            ConvertError::Missing {
                object: "service",
                attr: "AF"
            }
        );
        assert!(!err.is_unrepresentable());
    }

    #[test]
    fn a_scheduler_rvs_does_not_know_is_kept_by_name() {
        let status = service_status(&[
            SvcAttr::Af(2),
            SvcAttr::Protocol(6),
            SvcAttr::Addr(vec![0; 16]),
            SvcAttr::Port(1),
            SvcAttr::SchedName("best".into()),
        ])
        .unwrap();
        let sched = status.service.scheduler;
        assert!(!sched.is_known());
        assert_eq!(sched.name(), "best");
        // Re-encoding asks for the same module by the same name.
        assert!(service_attrs(&status.service).contains(&SvcAttr::SchedName("best".into())));
    }

    #[test]
    fn what_the_model_cannot_hold_is_singled_out() {
        let gre = [
            SvcAttr::Af(2),
            SvcAttr::Protocol(47),
            SvcAttr::Addr(vec![0; 16]),
            SvcAttr::Port(1),
            SvcAttr::SchedName("rr".into()),
        ];
        let err = service_status(&gre).unwrap_err();
        assert_eq!(err, ConvertError::Protocol(47));
        assert!(err.is_unrepresentable());
        assert_eq!(describe_service(&gre), "protocol 47 0.0.0.0:1");
        let mut long = gre.to_vec();
        long[1] = SvcAttr::Protocol(6);
        long[4] = SvcAttr::SchedName("sixteen-bytes-xx".into());
        assert!(service_status(&long).unwrap_err().is_unrepresentable());
        let fw = [SvcAttr::Af(10), SvcAttr::Fwmark(3)];
        assert_eq!(describe_service(&fw), "fwmark 3 (family 10)");
    }

    #[test]
    fn daemon_states_the_model_does_not_know_are_kept() {
        let d = daemon(&[DaemonAttr::State(4), DaemonAttr::McastIfn("eth0".into())]).unwrap();
        assert_eq!(d.state, DaemonState::Other(4));
        assert!(daemon_attrs(&d).contains(&DaemonAttr::State(4)));
    }

    #[test]
    fn daemons_survive_the_attribute_round_trip() {
        let d = Daemon {
            state: DaemonState::Backup,
            mcast_ifn: "eth0".into(),
            syncid: 7,
            sync_maxlen: 1400,
            mcast_group: Some("224.0.0.81".parse().unwrap()),
            mcast_port: 8848,
            mcast_ttl: 2,
        };
        assert_eq!(daemon(&daemon_attrs(&d)).unwrap(), d);
    }
}
