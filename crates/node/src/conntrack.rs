//! Stale UDP conntrack entries, cleared as kube-proxy clears them
//! (kubernetes#71514): a UDP client that keeps sending from the same
//! port keeps its conntrack entry, and so keeps reaching the endpoint
//! that entry was NATed to, even after that endpoint is gone; without a
//! cleanup it is blackholed until the entry times out.
//!
//! kube-proxy v1.37 (`pkg/proxy/conntrack/cleanup.go`,
//! `CleanStaleEntries`, called at the end of the IPVS proxier's
//! `syncProxyRules`) lists the family's conntrack entries and deletes the
//! UDP ones
//!
//! * whose original destination is a UDP Service's IP and port (cluster
//!   IP, external IP, load-balancer IP), or whose original destination
//!   port is a UDP node port (on any address), and
//! * whose reply source (address and port) is not one of that Service
//!   port's serving endpoints.
//!
//! A Service port without serving endpoints is left out (nothing to
//! repoint its clients to); traffic policies, topology and terminating
//! state are not looked at, so established flows behave as TCP ones do.
//! It runs only when `EndpointsMap.Update` reports
//! `ConntrackCleanupRequired`: some Service whose endpoints changed had
//! or has a UDP port among them (the first sync after start counts, since
//! every endpoint is new then).
//!
//! Here [`UdpServices`] is what the deletion is decided on, a pure
//! function of the cluster view ([`UdpServices::stale_flows`]);
//! [`UdpEndpointsTracker`] decides when, by fingerprinting each Service's
//! endpoints per family; the kernel is behind [`ConntrackBackend`]
//! ([`KernelConntrack`]: ctnetlink over an `NETLINK_NETFILTER` socket,
//! messages encoded and decoded by `netlink-packet-netfilter`).

use std::collections::hash_map::DefaultHasher;
use std::collections::{BTreeMap, BTreeSet};
use std::hash::{Hash, Hasher};
use std::io;
use std::net::{IpAddr, SocketAddr};

use netlink_packet_core::{
    DefaultNla, NLM_F_ACK, NLM_F_DUMP, NLM_F_DUMP_INTR, NLM_F_REQUEST, NetlinkHeader,
    NetlinkMessage, NetlinkPayload, Nla,
};
use netlink_packet_netfilter::conntrack::{
    ConntrackAttribute, ConntrackMessage, IPTuple, ProtoTuple, Protocol as CtProtocol, Tuple,
};
use netlink_packet_netfilter::{
    NetfilterHeader, NetfilterMessage, NetfilterMessageInner, NetfilterProtoFamily,
};
use netlink_sys::protocols::NETLINK_NETFILTER;
use netlink_sys::{Socket, SocketAddr as NetlinkAddr};
use rvs_model::Protocol;
use rvs_proxy::cluster::{ClusterState, EndpointInfo, ObjectName, SliceInfo};
use rvs_proxy::ipsets::IpFamily;

/// IANA's protocol number of UDP.
pub const IPPROTO_UDP: u8 = 17;
/// `CTA_ZONE`: the conntrack zone of an entry (not typed by
/// `netlink-packet-netfilter` 0.4; carried as a raw attribute).
const CTA_ZONE: u16 = 18;
/// Receive buffer: ctnetlink dump messages are at most 32 KiB.
const RECV_BYTES: usize = 64 * 1024;
/// Delete requests sent per `sendmsg`.
const DELETE_BATCH: usize = 128;

/// One direction of a conntrack entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Tuple5 {
    /// IP protocol number.
    pub protocol: u8,
    /// Source address and port.
    pub src: SocketAddr,
    /// Destination address and port.
    pub dst: SocketAddr,
}

/// A conntrack entry: the original and reply directions (`conntrack -L`'s
/// first and second halves) and its zone.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Flow {
    /// The original direction (client to the address it sent to).
    pub original: Tuple5,
    /// The reply direction (from the endpoint it was NATed to).
    pub reply: Tuple5,
    /// Conntrack zone.
    pub zone: u16,
}

/// Why listing or deleting conntrack entries failed.
#[derive(Debug, thiserror::Error)]
pub enum ConntrackError {
    /// The socket failed.
    #[error("{context}")]
    Io {
        /// What was being done.
        context: &'static str,
        /// The operating system's error.
        source: io::Error,
    },
    /// The kernel refused a request.
    #[error("{op}: {}", io::Error::from_raw_os_error(*.errno))]
    Kernel {
        /// The request.
        op: &'static str,
        /// The errno.
        errno: i32,
    },
    /// A reply did not decode.
    #[error("decoding a ctnetlink reply: {0}")]
    Decode(String),
}

/// Where conntrack entries are listed and deleted: the kernel
/// ([`KernelConntrack`]), or a fake in tests.
pub trait ConntrackBackend {
    /// The entries of `family` (every UDP one; the kernel's backend
    /// keeps no other).
    fn list(&mut self, family: IpFamily) -> Result<Vec<Flow>, ConntrackError>;
    /// Deletes `flows`; returns how many were deleted (one already gone is
    /// not an error).
    fn delete(&mut self, flows: &[Flow]) -> Result<usize, ConntrackError>;
}

/// The UDP Service ports of one family and their serving endpoints, as
/// `CleanStaleEntries` maps them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UdpServices {
    /// Service IP and port (cluster, external, load-balancer) to the
    /// serving endpoints' addresses and ports.
    by_frontend: BTreeMap<SocketAddr, BTreeSet<SocketAddr>>,
    /// Node port to the serving endpoints.
    by_node_port: BTreeMap<u16, BTreeSet<SocketAddr>>,
}

fn family_of(family: IpFamily) -> impl Fn(&IpAddr) -> bool {
    move |ip| ip.is_ipv6() == (family == IpFamily::V6)
}

/// The endpoints of one Service port from its slices, one per address and
/// target port, the non-terminating copy winning as in kube-proxy's
/// `EndpointSliceCache.addEndpoints`.
fn port_endpoints<'a>(
    slices: &[&'a SliceInfo],
    name: &str,
    protocol: Protocol,
) -> BTreeMap<SocketAddr, &'a EndpointInfo> {
    let mut out: BTreeMap<SocketAddr, &EndpointInfo> = BTreeMap::new();
    for slice in slices {
        let Some(target) = slice
            .ports
            .iter()
            .find(|p| p.name == name && p.protocol == protocol)
        else {
            continue;
        };
        for ep in &slice.endpoints {
            let key = SocketAddr::new(ep.addr, target.port);
            match out.get(&key) {
                Some(_) if ep.terminating => {}
                _ => {
                    out.insert(key, ep);
                }
            }
        }
    }
    out
}

fn slices_by_service(cluster: &ClusterState) -> BTreeMap<&ObjectName, Vec<&SliceInfo>> {
    let mut out: BTreeMap<&ObjectName, Vec<&SliceInfo>> = BTreeMap::new();
    for slice in cluster.slices.values() {
        out.entry(&slice.service).or_default().push(slice);
    }
    out
}

impl UdpServices {
    /// The UDP Service ports of `family` in `cluster`: those of Services
    /// with a cluster IP of the family (kube-proxy's per-family service
    /// map), with their serving endpoints of the family; a port without
    /// any is left out.
    pub fn new(cluster: &ClusterState, family: IpFamily) -> UdpServices {
        let in_family = family_of(family);
        let slices = slices_by_service(cluster);
        let mut out = UdpServices::default();
        for svc in cluster.services.values() {
            let Some(cluster_ip) = svc.cluster_ips.iter().copied().find(|ip| in_family(ip)) else {
                continue;
            };
            let svc_slices = slices.get(&svc.name).map(Vec::as_slice).unwrap_or_default();
            for port in svc.ports.iter().filter(|p| p.protocol == Protocol::Udp) {
                let serving: BTreeSet<SocketAddr> =
                    port_endpoints(svc_slices, &port.name, port.protocol)
                        .into_iter()
                        .filter(|(addr, ep)| in_family(&addr.ip()) && ep.serving)
                        .map(|(addr, _)| addr)
                        .collect();
                if serving.is_empty() {
                    continue;
                }
                let frontends = std::iter::once(cluster_ip)
                    .chain(svc.load_balancer_ips.iter().copied().filter(&in_family))
                    .chain(svc.external_ips.iter().copied().filter(&in_family));
                for ip in frontends {
                    // Two Services on one address and port (a shared
                    // external IP) keep each other's endpoints.
                    out.by_frontend
                        .entry(SocketAddr::new(ip, port.port))
                        .or_default()
                        .extend(&serving);
                }
                if let Some(node_port) = port.node_port {
                    out.by_node_port
                        .entry(node_port)
                        .or_default()
                        .extend(&serving);
                }
            }
        }
        out
    }

    /// No UDP Service port has serving endpoints: nothing can be stale.
    pub fn is_empty(&self) -> bool {
        self.by_frontend.is_empty() && self.by_node_port.is_empty()
    }

    /// Whether `flow` is a UDP flow to a Service (its IP and port, or any
    /// address at its node port) whose reply comes from no serving
    /// endpoint of it.
    pub fn is_stale(&self, flow: &Flow) -> bool {
        if flow.original.protocol != IPPROTO_UDP {
            return false;
        }
        let from = flow.reply.src;
        let stale_at = |endpoints: Option<&BTreeSet<SocketAddr>>| {
            endpoints.is_some_and(|e| !e.contains(&from))
        };
        stale_at(self.by_frontend.get(&flow.original.dst))
            || stale_at(self.by_node_port.get(&flow.original.dst.port()))
    }

    /// The stale flows among `flows`.
    pub fn stale_flows(&self, flows: &[Flow]) -> Vec<Flow> {
        flows.iter().filter(|f| self.is_stale(f)).copied().collect()
    }
}

/// Decides when the cleanup runs, as kube-proxy's
/// `ConntrackCleanupRequired`: after a sync in which some Service's
/// endpoints (of a family) changed while it had or has a UDP port with
/// endpoints. It keeps, per family, a fingerprint of the endpoints of
/// every Service that has UDP ones.
#[derive(Clone, Debug, Default)]
pub struct UdpEndpointsTracker {
    seen: BTreeMap<(IpFamily, ObjectName), u64>,
}

/// The fingerprint of a Service's endpoints of `family`, as kube-proxy's
/// endpoints map holds them (per port name and protocol, each endpoint
/// with its conditions, node and hints), or `None` when it has no UDP
/// endpoint of the family.
fn fingerprint(slices: &[&SliceInfo], family: IpFamily) -> Option<u64> {
    let in_family = family_of(family);
    let mut entries = BTreeSet::new();
    let mut udp = false;
    for slice in slices {
        for port in &slice.ports {
            for ep in slice.endpoints.iter().filter(|ep| in_family(&ep.addr)) {
                udp |= port.protocol == Protocol::Udp;
                entries.insert((
                    port.name.as_str(),
                    port.protocol,
                    port.port,
                    ep.addr,
                    (ep.ready, ep.serving, ep.terminating),
                    ep.node_name.as_deref(),
                    ep.zone_hints.as_deref(),
                    ep.node_hints.as_deref(),
                ));
            }
        }
    }
    udp.then(|| {
        let mut hasher = DefaultHasher::new();
        entries.hash(&mut hasher);
        hasher.finish()
    })
}

impl UdpEndpointsTracker {
    /// Records the endpoints of `family` of the Services in `scope` (all
    /// when `None`) and returns whether a cleanup is required.
    pub fn update(
        &mut self,
        cluster: &ClusterState,
        family: IpFamily,
        scope: Option<&BTreeSet<ObjectName>>,
    ) -> bool {
        let slices = slices_by_service(cluster);
        let names: BTreeSet<ObjectName> = match scope {
            Some(scope) => scope.clone(),
            None => self
                .seen
                .keys()
                .filter(|(f, _)| *f == family)
                .map(|(_, n)| n.clone())
                .chain(slices.keys().map(|n| (*n).clone()))
                .collect(),
        };
        let mut required = false;
        for name in names {
            let now = slices
                .get(&name)
                .and_then(|s| fingerprint(s.as_slice(), family));
            let key = (family, name);
            let before = match now {
                Some(hash) => self.seen.insert(key, hash),
                None => self.seen.remove(&key),
            };
            required |= before != now;
        }
        required
    }
}

/// What one cleanup did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CleanupReport {
    /// Entries listed.
    pub listed: usize,
    /// Stale entries found.
    pub stale: usize,
    /// Entries deleted.
    pub deleted: usize,
}

/// `CleanStaleEntries` for one family: lists the entries, deletes the
/// stale ones.
pub fn clean_stale_entries<C: ConntrackBackend + ?Sized>(
    backend: &mut C,
    cluster: &ClusterState,
    family: IpFamily,
) -> Result<CleanupReport, ConntrackError> {
    let services = UdpServices::new(cluster, family);
    if services.is_empty() {
        return Ok(CleanupReport::default());
    }
    let flows = backend.list(family)?;
    let stale = services.stale_flows(&flows);
    let deleted = if stale.is_empty() {
        0
    } else {
        backend.delete(&stale)?
    };
    Ok(CleanupReport {
        listed: flows.len(),
        stale: stale.len(),
        deleted,
    })
}

/// The kernel's conntrack table, over one ctnetlink socket opened when
/// first needed (in the calling thread's network namespace) and opened
/// again after a socket error. Needs `nf_conntrack_netlink` (loaded on
/// demand by the kernel) and CAP_NET_ADMIN.
#[derive(Debug, Default)]
pub struct KernelConntrack {
    socket: Option<Socket>,
    seq: u32,
}

fn io_err(context: &'static str) -> impl FnOnce(io::Error) -> ConntrackError {
    move |source| ConntrackError::Io { context, source }
}

fn nf_family(family: IpFamily) -> NetfilterProtoFamily {
    match family {
        IpFamily::V4 => NetfilterProtoFamily::IPv4,
        IpFamily::V6 => NetfilterProtoFamily::IPv6,
    }
}

/// Serializes one ctnetlink request.
fn request(
    message: ConntrackMessage,
    family: NetfilterProtoFamily,
    flags: u16,
    seq: u32,
) -> Vec<u8> {
    let mut header = NetlinkHeader::default();
    header.flags = flags;
    header.sequence_number = seq;
    let mut packet = NetlinkMessage::new(
        header,
        NetlinkPayload::from(NetfilterMessage::new(
            NetfilterHeader::new(family, 0, 0),
            message,
        )),
    );
    packet.finalize();
    let mut buf = vec![0; packet.buffer_len()];
    packet.serialize(&mut buf);
    buf
}

/// The messages of one received datagram.
fn messages(data: &[u8]) -> Result<Vec<NetlinkMessage<NetfilterMessage>>, ConntrackError> {
    let mut out = Vec::new();
    let mut offset = 0;
    while offset < data.len() {
        let rest = data.get(offset..).unwrap_or_default();
        let message = NetlinkMessage::<NetfilterMessage>::deserialize(rest)
            .map_err(|e| ConntrackError::Decode(e.to_string()))?;
        let len = usize::try_from(message.header.length).unwrap_or(usize::MAX);
        if len == 0 {
            break;
        }
        offset = offset.saturating_add((len + 3) & !3);
        out.push(message);
    }
    Ok(out)
}

/// Reads a tuple's addresses and ports (`None` when it lacks one).
fn tuple5(tuple: &[Tuple]) -> Option<Tuple5> {
    let (mut src, mut dst, mut protocol, mut sport, mut dport) = (None, None, None, 0, 0);
    for part in tuple {
        match part {
            Tuple::Ip(ips) => {
                for ip in ips {
                    match ip {
                        IPTuple::SourceAddress(a) => src = Some(*a),
                        IPTuple::DestinationAddress(a) => dst = Some(*a),
                        _ => {}
                    }
                }
            }
            Tuple::Proto(protos) => {
                for p in protos {
                    match p {
                        ProtoTuple::Protocol(n) => protocol = Some(u8::from(*n)),
                        ProtoTuple::SourcePort(port) => sport = *port,
                        ProtoTuple::DestinationPort(port) => dport = *port,
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    Some(Tuple5 {
        protocol: protocol?,
        src: SocketAddr::new(src?, sport),
        dst: SocketAddr::new(dst?, dport),
    })
}

/// A flow from the attributes of a dumped entry (`None` for an entry
/// without both tuples).
pub fn flow_from_attributes(attributes: &[ConntrackAttribute]) -> Option<Flow> {
    let (mut original, mut reply, mut zone) = (None, None, 0);
    for attribute in attributes {
        match attribute {
            ConntrackAttribute::CtaTupleOrig(t) => original = tuple5(t),
            ConntrackAttribute::CtaTupleReply(t) => reply = tuple5(t),
            ConntrackAttribute::Other(nla) if nla.kind() == CTA_ZONE && nla.value_len() == 2 => {
                let mut value = [0u8; 2];
                nla.emit_value(&mut value);
                zone = u16::from_be_bytes(value);
            }
            _ => {}
        }
    }
    Some(Flow {
        original: original?,
        reply: reply?,
        zone,
    })
}

/// The delete request of a flow: its original tuple (and zone), which
/// names one entry.
pub fn delete_attributes(flow: &Flow) -> Vec<ConntrackAttribute> {
    let t = flow.original;
    let mut out = vec![ConntrackAttribute::CtaTupleOrig(vec![
        Tuple::Ip(vec![
            IPTuple::SourceAddress(t.src.ip()),
            IPTuple::DestinationAddress(t.dst.ip()),
        ]),
        Tuple::Proto(vec![
            ProtoTuple::Protocol(CtProtocol::from(t.protocol)),
            ProtoTuple::SourcePort(t.src.port()),
            ProtoTuple::DestinationPort(t.dst.port()),
        ]),
    ])];
    if flow.zone != 0 {
        out.push(ConntrackAttribute::Other(DefaultNla::new(
            CTA_ZONE,
            flow.zone.to_be_bytes().to_vec(),
        )));
    }
    out
}

impl KernelConntrack {
    fn socket(&mut self) -> Result<&mut Socket, ConntrackError> {
        let socket = match self.socket.take() {
            Some(socket) => socket,
            None => {
                let mut socket =
                    Socket::new(NETLINK_NETFILTER).map_err(io_err("open ctnetlink socket"))?;
                socket
                    .bind_auto()
                    .map_err(io_err("bind ctnetlink socket"))?;
                socket
                    .connect(&NetlinkAddr::new(0, 0))
                    .map_err(io_err("connect ctnetlink socket"))?;
                // Best effort: a dump of a large table fills the default.
                let _ = socket.set_rx_buf_sz(1 << 20);
                socket
            }
        };
        Ok(self.socket.insert(socket))
    }

    fn next_seq(&mut self) -> u32 {
        self.seq = self.seq.wrapping_add(1).max(1);
        self.seq
    }

    fn check<T>(&mut self, result: Result<T, ConntrackError>) -> Result<T, ConntrackError> {
        if matches!(
            result,
            Err(ConntrackError::Io { .. } | ConntrackError::Decode(_))
        ) {
            // The socket may hold a half-read reply: open another.
            self.socket = None;
        }
        result
    }

    fn list_inner(&mut self, family: IpFamily) -> Result<Vec<Flow>, ConntrackError> {
        let seq = self.next_seq();
        let req = request(
            ConntrackMessage::Get(Vec::new()),
            nf_family(family),
            NLM_F_REQUEST | NLM_F_DUMP,
            seq,
        );
        let socket = self.socket()?;
        socket
            .send(&req, 0)
            .map_err(io_err("send the conntrack dump request"))?;
        let mut buf = vec![0u8; RECV_BYTES];
        let mut flows = Vec::new();
        let mut interrupted = false;
        loop {
            let len = socket
                .recv(&mut &mut buf[..], 0)
                .map_err(io_err("receive the conntrack dump"))?;
            for message in messages(buf.get(..len).unwrap_or_default())? {
                if message.header.sequence_number != seq {
                    continue;
                }
                interrupted |= message.header.flags & NLM_F_DUMP_INTR != 0;
                match message.payload {
                    NetlinkPayload::Done(_) => {
                        if interrupted {
                            // As kube-proxy (EINTR): clean with what was read.
                            tracing::debug!("conntrack dump interrupted; using the partial list");
                        }
                        return Ok(flows);
                    }
                    NetlinkPayload::Error(e) => match e.code {
                        None => return Ok(flows),
                        Some(code) => {
                            return Err(ConntrackError::Kernel {
                                op: "dump conntrack entries",
                                errno: -code.get(),
                            });
                        }
                    },
                    NetlinkPayload::InnerMessage(NetfilterMessage {
                        inner: NetfilterMessageInner::Conntrack(ConntrackMessage::New(attrs)),
                        ..
                    }) => {
                        // Only UDP entries matter: a large table holds
                        // mostly TCP ones, not worth keeping.
                        if let Some(flow) = flow_from_attributes(&attrs)
                            && flow.original.protocol == IPPROTO_UDP
                        {
                            flows.push(flow);
                        }
                    }
                    _ => {}
                }
            }
        }
    }

    fn delete_inner(&mut self, flows: &[Flow]) -> Result<usize, ConntrackError> {
        let mut deleted = 0;
        for chunk in flows.chunks(DELETE_BATCH) {
            let mut out = Vec::new();
            let mut pending = BTreeSet::new();
            for flow in chunk {
                let seq = self.next_seq();
                let family = if flow.original.src.is_ipv6() {
                    IpFamily::V6
                } else {
                    IpFamily::V4
                };
                out.extend(request(
                    ConntrackMessage::Delete(delete_attributes(flow)),
                    nf_family(family),
                    NLM_F_REQUEST | NLM_F_ACK,
                    seq,
                ));
                pending.insert(seq);
            }
            let socket = self.socket()?;
            socket
                .send(&out, 0)
                .map_err(io_err("send conntrack delete requests"))?;
            let mut buf = vec![0u8; RECV_BYTES];
            let mut refused = None;
            while !pending.is_empty() {
                let len = socket
                    .recv(&mut &mut buf[..], 0)
                    .map_err(io_err("receive conntrack delete acknowledgements"))?;
                for message in messages(buf.get(..len).unwrap_or_default())? {
                    if !pending.remove(&message.header.sequence_number) {
                        continue;
                    }
                    match message.payload {
                        NetlinkPayload::Error(e) => match e.code.map(|c| -c.get()) {
                            None => deleted += 1,
                            // Expired or deleted since the dump.
                            Some(ENOENT) => {}
                            Some(errno) => refused = Some(errno),
                        },
                        _ => deleted += 1,
                    }
                }
            }
            if let Some(errno) = refused {
                return Err(ConntrackError::Kernel {
                    op: "delete conntrack entries",
                    errno,
                });
            }
        }
        Ok(deleted)
    }
}

/// `ENOENT`: the entry is gone already.
const ENOENT: i32 = 2;

impl ConntrackBackend for KernelConntrack {
    fn list(&mut self, family: IpFamily) -> Result<Vec<Flow>, ConntrackError> {
        let result = self.list_inner(family);
        self.check(result)
    }

    fn delete(&mut self, flows: &[Flow]) -> Result<usize, ConntrackError> {
        let result = self.delete_inner(flows);
        self.check(result)
    }
}

#[cfg(test)]
mod tests {
    use rvs_proxy::cluster::{ServiceInfo, ServicePort, SlicePort};

    use super::*;

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    fn udp(client: &str, to: &str, reply_from: &str) -> Flow {
        let client = sa(client);
        Flow {
            original: Tuple5 {
                protocol: IPPROTO_UDP,
                src: client,
                dst: sa(to),
            },
            reply: Tuple5 {
                protocol: IPPROTO_UDP,
                src: sa(reply_from),
                dst: client,
            },
            zone: 0,
        }
    }

    fn ep(addr: &str, serving: bool, terminating: bool) -> EndpointInfo {
        EndpointInfo {
            ready: serving && !terminating,
            serving,
            terminating,
            ..EndpointInfo::ready(addr.parse().unwrap())
        }
    }

    fn slice(
        svc: &ObjectName,
        ports: &[(&str, Protocol, u16)],
        eps: Vec<EndpointInfo>,
    ) -> SliceInfo {
        SliceInfo {
            service: svc.clone(),
            ports: ports
                .iter()
                .map(|(name, protocol, port)| SlicePort {
                    name: (*name).into(),
                    protocol: *protocol,
                    port: *port,
                })
                .collect(),
            endpoints: eps,
        }
    }

    /// `dns`: UDP 53 (node port 30053) and TCP 53 on 10.96.0.10 and
    /// fd00::10, external IP 192.0.2.1, load-balancer IP 198.51.100.1;
    /// endpoints 10.244.1.1 (serving), 10.244.1.2 (terminating, still
    /// serving), 10.244.1.3 (not serving), fd00:244::1. `empty`: UDP 5000
    /// on 10.96.0.20, no endpoints.
    fn cluster() -> ClusterState {
        let dns = ObjectName::new("kube-system", "dns");
        let empty = ObjectName::new("default", "empty");
        let mut svc = ServiceInfo::new(
            dns.clone(),
            vec!["10.96.0.10".parse().unwrap(), "fd00::10".parse().unwrap()],
            vec![
                ServicePort {
                    name: "dns".into(),
                    protocol: Protocol::Udp,
                    port: 53,
                    node_port: Some(30053),
                },
                ServicePort {
                    name: "dns-tcp".into(),
                    protocol: Protocol::Tcp,
                    port: 53,
                    node_port: None,
                },
            ],
        );
        svc.external_ips = vec!["192.0.2.1".parse().unwrap()];
        svc.load_balancer_ips = vec!["198.51.100.1".parse().unwrap()];
        let mut c = ClusterState::default();
        c.services.insert(dns.clone(), svc);
        c.services.insert(
            empty.clone(),
            ServiceInfo::new(
                empty.clone(),
                vec!["10.96.0.20".parse().unwrap()],
                vec![ServicePort {
                    name: String::new(),
                    protocol: Protocol::Udp,
                    port: 5000,
                    node_port: None,
                }],
            ),
        );
        c.slices.insert(
            ObjectName::new("kube-system", "dns-v4"),
            slice(
                &dns,
                &[
                    ("dns", Protocol::Udp, 5353),
                    ("dns-tcp", Protocol::Tcp, 5353),
                ],
                vec![
                    ep("10.244.1.1", true, false),
                    ep("10.244.1.2", true, true),
                    ep("10.244.1.3", false, false),
                ],
            ),
        );
        c.slices.insert(
            ObjectName::new("kube-system", "dns-v6"),
            slice(
                &dns,
                &[("dns", Protocol::Udp, 5353)],
                vec![ep("fd00:244::1", true, false)],
            ),
        );
        c
    }

    #[test]
    fn flows_to_a_udp_service_not_from_a_serving_endpoint_are_stale() {
        let s = UdpServices::new(&cluster(), IpFamily::V4);
        let stale = |f: Flow| s.is_stale(&f);
        // Every frontend of the Service port: cluster, external and
        // load-balancer IPs.
        for vip in ["10.96.0.10:53", "192.0.2.1:53", "198.51.100.1:53"] {
            assert!(
                stale(udp("10.0.0.5:40000", vip, "10.244.9.9:5353")),
                "{vip}"
            );
            assert!(
                !stale(udp("10.0.0.5:40000", vip, "10.244.1.1:5353")),
                "{vip}"
            );
        }
        // Serving terminating endpoints count; not-serving ones do not.
        assert!(!stale(udp(
            "10.0.0.5:1",
            "10.96.0.10:53",
            "10.244.1.2:5353"
        )));
        assert!(stale(udp("10.0.0.5:1", "10.96.0.10:53", "10.244.1.3:5353")));
        // The endpoint's port counts too.
        assert!(stale(udp("10.0.0.5:1", "10.96.0.10:53", "10.244.1.1:5354")));
        // A node port, whatever address it was sent to.
        assert!(stale(udp(
            "10.0.0.5:1",
            "172.18.0.2:30053",
            "10.244.9.9:5353"
        )));
        assert!(stale(udp(
            "10.0.0.5:1",
            "127.0.0.1:30053",
            "10.244.9.9:5353"
        )));
        assert!(!stale(udp(
            "10.0.0.5:1",
            "172.18.0.2:30053",
            "10.244.1.1:5353"
        )));
        // Not a UDP Service: another port, another address, a Service
        // without endpoints, TCP.
        assert!(!stale(udp(
            "10.0.0.5:1",
            "10.96.0.10:54",
            "10.244.9.9:5353"
        )));
        assert!(!stale(udp(
            "10.0.0.5:1",
            "10.96.0.11:53",
            "10.244.9.9:5353"
        )));
        assert!(!stale(udp(
            "10.0.0.5:1",
            "10.96.0.20:5000",
            "10.244.9.9:5353"
        )));
        let mut tcp = udp("10.0.0.5:1", "10.96.0.10:53", "10.244.9.9:5353");
        tcp.original.protocol = 6;
        tcp.reply.protocol = 6;
        assert!(!stale(tcp));
        // The IPv6 family has its own view.
        let v6 = UdpServices::new(&cluster(), IpFamily::V6);
        assert!(v6.is_stale(&udp("[fd00::5]:1", "[fd00::10]:53", "[fd00:244::9]:5353")));
        assert!(!v6.is_stale(&udp("[fd00::5]:1", "[fd00::10]:53", "[fd00:244::1]:5353")));
        let flows = [
            udp("10.0.0.5:1", "10.96.0.10:53", "10.244.9.9:5353"),
            udp("10.0.0.5:2", "10.96.0.10:53", "10.244.1.1:5353"),
        ];
        assert_eq!(s.stale_flows(&flows), [flows[0]]);
    }

    #[test]
    fn without_serving_endpoints_nothing_is_stale() {
        let mut c = cluster();
        c.slices.clear();
        let s = UdpServices::new(&c, IpFamily::V4);
        assert!(s.is_empty());
        assert!(!s.is_stale(&udp("10.0.0.5:1", "10.96.0.10:53", "10.244.9.9:5353")));
    }

    /// A backend that holds flows and counts calls.
    #[derive(Default)]
    struct Fake {
        flows: Vec<Flow>,
        lists: usize,
    }

    impl ConntrackBackend for Fake {
        fn list(&mut self, _: IpFamily) -> Result<Vec<Flow>, ConntrackError> {
            self.lists += 1;
            Ok(self.flows.clone())
        }
        fn delete(&mut self, flows: &[Flow]) -> Result<usize, ConntrackError> {
            let before = self.flows.len();
            self.flows.retain(|f| !flows.contains(f));
            Ok(before - self.flows.len())
        }
    }

    #[test]
    fn the_cleanup_deletes_only_stale_flows() {
        let kept = udp("10.0.0.5:2", "10.96.0.10:53", "10.244.1.1:5353");
        let gone = udp("10.0.0.5:1", "10.96.0.10:53", "10.244.9.9:5353");
        let mut fake = Fake {
            flows: vec![kept, gone],
            lists: 0,
        };
        let report = clean_stale_entries(&mut fake, &cluster(), IpFamily::V4).unwrap();
        assert_eq!(
            report,
            CleanupReport {
                listed: 2,
                stale: 1,
                deleted: 1
            }
        );
        assert_eq!(fake.flows, [kept]);
        // No UDP Service with endpoints: the table is not even listed.
        let report = clean_stale_entries(&mut fake, &ClusterState::default(), IpFamily::V4);
        assert_eq!(report.unwrap(), CleanupReport::default());
        assert_eq!(fake.lists, 1);
    }

    #[test]
    fn cleanups_are_required_when_udp_endpoints_change() {
        let mut t = UdpEndpointsTracker::default();
        let mut c = cluster();
        let dns = ObjectName::new("kube-system", "dns");
        // The first sync sees every endpoint as new.
        assert!(t.update(&c, IpFamily::V4, None));
        assert!(t.update(&c, IpFamily::V6, None));
        // Nothing changed.
        assert!(!t.update(&c, IpFamily::V4, None));
        assert!(!t.update(&c, IpFamily::V4, Some(&BTreeSet::from([dns.clone()]))));
        // An endpoint goes: required for its family only.
        let v4 = ObjectName::new("kube-system", "dns-v4");
        c.slices.get_mut(&v4).unwrap().endpoints.remove(0);
        assert!(!t.update(&c, IpFamily::V6, None));
        assert!(t.update(&c, IpFamily::V4, Some(&BTreeSet::from([dns.clone()]))));
        // A condition changes.
        c.slices.get_mut(&v4).unwrap().endpoints[0].serving = false;
        assert!(t.update(&c, IpFamily::V4, None));
        // A Service with TCP endpoints only never requires one.
        let web = ObjectName::new("default", "web");
        c.slices.insert(
            ObjectName::new("default", "web-1"),
            slice(
                &web,
                &[("http", Protocol::Tcp, 80)],
                vec![ep("10.244.2.1", true, false)],
            ),
        );
        assert!(!t.update(&c, IpFamily::V4, Some(&BTreeSet::from([web.clone()]))));
        // The Service's slices go away: its UDP endpoints changed.
        c.slices.retain(|_, s| s.service != dns);
        assert!(t.update(&c, IpFamily::V4, None));
        assert!(!t.update(&c, IpFamily::V4, None));
    }

    #[test]
    fn flows_round_trip_through_ctnetlink_attributes() {
        let mut flow = udp("10.0.0.5:40000", "10.96.0.10:53", "10.244.1.1:5353");
        flow.zone = 7;
        let attrs = delete_attributes(&flow);
        // The delete request names the original tuple and the zone; read
        // back with a reply tuple, it is the same flow.
        let reply = ConntrackAttribute::CtaTupleReply(vec![
            Tuple::Ip(vec![
                IPTuple::SourceAddress(flow.reply.src.ip()),
                IPTuple::DestinationAddress(flow.reply.dst.ip()),
            ]),
            Tuple::Proto(vec![
                ProtoTuple::Protocol(CtProtocol::Udp),
                ProtoTuple::SourcePort(flow.reply.src.port()),
                ProtoTuple::DestinationPort(flow.reply.dst.port()),
            ]),
        ]);
        let mut all = attrs.clone();
        all.push(reply);
        // Through the wire format and back.
        let bytes = request(
            ConntrackMessage::New(all),
            NetfilterProtoFamily::IPv4,
            NLM_F_REQUEST,
            9,
        );
        let parsed = messages(&bytes).unwrap();
        let NetlinkPayload::InnerMessage(NetfilterMessage {
            inner: NetfilterMessageInner::Conntrack(ConntrackMessage::New(back)),
            ..
        }) = &parsed[0].payload
        else {
            panic!("{parsed:?}");
        };
        assert_eq!(flow_from_attributes(back), Some(flow));
        assert_eq!(parsed[0].header.sequence_number, 9);
    }
}
