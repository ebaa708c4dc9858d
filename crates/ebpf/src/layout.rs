//! The byte layout of the maps the eBPF programs read.
//!
//! This module owns the encoding of every key and value the loader writes
//! and reads, mirroring the C structs of `bpf/socket_lb.c` field by field
//! (change both together; the unit tests pin sizes and offsets). Keys and
//! values are plain byte arrays, which is what the loader hands to aya:
//! the crate needs no `unsafe` `Pod` implementations. Addresses and ports
//! are in network order as in a `sockaddr`; every other integer is in the
//! host's order, as the programs read it.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use rvs_model::Protocol;

/// Map names, as the programs define them and as they are pinned.
pub mod names {
    /// Virtual services: [`super::SvcKey`] → [`super::SvcVal`].
    pub const SERVICES: &str = "rvs_svc";
    /// Selection tables: (service id, slot) → backend id.
    pub const SLOTS: &str = "rvs_slot";
    /// Real servers by id: [`super::BeVal`].
    pub const BACKENDS: &str = "rvs_be";
    /// Round-robin position per service id.
    pub const RR: &str = "rvs_rr";
    /// Per-CPU counters per service id.
    pub const SVC_STATS: &str = "rvs_svc_stats";
    /// Per-CPU counters per backend id.
    pub const BE_STATS: &str = "rvs_be_stats";
    /// ClientIP affinity (LRU).
    pub const AFFINITY: &str = "rvs_aff";
    /// Per-socket translations for the reverse hooks and UDP flows (LRU).
    pub const FLOWS: &str = "rvs_flow";
    /// Every map, in a fixed order.
    pub const ALL: [&str; 8] = [
        SERVICES, SLOTS, BACKENDS, RR, SVC_STATS, BE_STATS, AFFINITY, FLOWS,
    ];
}

/// `struct svc_key`: 16 address bytes, port, protocol, family (4 or 6).
pub type SvcKey = [u8; 20];
/// `struct svc_val`.
pub type SvcValBytes = [u8; 24];
/// `struct slot_key`.
pub type SlotKey = [u8; 8];
/// `struct be_val`.
pub type BeValBytes = [u8; 40];
/// `struct stats`: conns, inpkts, outpkts, inbytes, outbytes.
pub type StatsWords = [u64; 5];
/// Size of `struct aff_key` and `struct aff_val`.
pub const AFF_SIZES: (u32, u32) = (32, 16);
/// Size of `struct flow_key` and `struct flow_val`.
pub const FLOW_SIZES: (u32, u32) = (32, 32);

/// "No backend" in a selection table (the programs' `NO_BACKEND`).
pub const NO_BACKEND: u32 = u32::MAX;

/// Scheduler codes the programs know.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum SchedCode {
    /// `rr`: the table lists the servers of weight > 0.
    Rr = 1,
    /// `wrr`: the table is one cycle of the kernel's sequence.
    Wrr = 2,
    /// `sh`: 256 buckets, availability resolved.
    Sh = 3,
    /// `mh`: the Maglev lookup table.
    Mh = 4,
}

impl SchedCode {
    fn from_u8(v: u8) -> Option<SchedCode> {
        match v {
            1 => Some(SchedCode::Rr),
            2 => Some(SchedCode::Wrr),
            3 => Some(SchedCode::Sh),
            4 => Some(SchedCode::Mh),
            _ => None,
        }
    }
}

fn family(ip: IpAddr) -> u8 {
    if ip.is_ipv4() { 4 } else { 6 }
}

fn addr_bytes(ip: IpAddr) -> [u8; 16] {
    let mut out = [0; 16];
    match ip {
        IpAddr::V4(v4) => out[..4].copy_from_slice(&v4.octets()),
        IpAddr::V6(v6) => out = v6.octets(),
    }
    out
}

fn ip_from(bytes: &[u8], family: u8) -> Option<IpAddr> {
    match family {
        4 => {
            let o: [u8; 4] = bytes.get(..4)?.try_into().ok()?;
            Some(IpAddr::V4(Ipv4Addr::from(o)))
        }
        6 => {
            let o: [u8; 16] = bytes.get(..16)?.try_into().ok()?;
            Some(IpAddr::V6(Ipv6Addr::from(o)))
        }
        _ => None,
    }
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    let mut w = [0; 4];
    if let Some(s) = b.get(at..at + 4) {
        w.copy_from_slice(s);
    }
    u32::from_ne_bytes(w)
}

fn put_u32(b: &mut [u8], at: usize, v: u32) {
    if let Some(s) = b.get_mut(at..at + 4) {
        s.copy_from_slice(&v.to_ne_bytes());
    }
}

/// The key of a virtual service (protocol, address, port).
pub fn svc_key(protocol: Protocol, addr: SocketAddr) -> SvcKey {
    let mut k = [0; 20];
    k[..16].copy_from_slice(&addr_bytes(addr.ip()));
    k[16..18].copy_from_slice(&addr.port().to_be_bytes());
    k[18] = protocol.number();
    k[19] = family(addr.ip());
    k
}

/// The protocol and address a service key stands for.
pub fn parse_svc_key(k: &SvcKey) -> Option<(Protocol, SocketAddr)> {
    let ip = ip_from(&k[..16], k[19])?;
    let port = u16::from_be_bytes([k[16], k[17]]);
    Some((Protocol::from_number(k[18])?, SocketAddr::new(ip, port)))
}

/// `struct svc_val`, decoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SvcVal {
    /// Service id: index of its counters and round-robin position, and
    /// the first half of its slot keys.
    pub id: u32,
    /// Entries in its selection table.
    pub count: u32,
    /// Its scheduler.
    pub sched: SchedCode,
    /// `IP_VS_SVC_F_*` bits as configured.
    pub flags: u32,
    /// Affinity timeout in seconds; 0 = not persistent.
    pub timeout: u32,
}

impl SvcVal {
    /// The bytes the programs read.
    pub fn encode(&self) -> SvcValBytes {
        let mut b = [0; 24];
        put_u32(&mut b, 0, self.id);
        put_u32(&mut b, 4, self.count);
        b[8] = self.sched as u8;
        put_u32(&mut b, 12, self.flags);
        put_u32(&mut b, 16, self.timeout);
        b
    }

    /// Decodes a value read back from the map.
    pub fn decode(b: &SvcValBytes) -> Option<SvcVal> {
        Some(SvcVal {
            id: u32_at(b, 0),
            count: u32_at(b, 4),
            sched: SchedCode::from_u8(b[8])?,
            flags: u32_at(b, 12),
            timeout: u32_at(b, 16),
        })
    }
}

/// The key of one slot of a service's selection table.
pub fn slot_key(svc: u32, slot: u32) -> SlotKey {
    let mut k = [0; 8];
    put_u32(&mut k, 0, svc);
    put_u32(&mut k, 4, slot);
    k
}

/// The service id and slot of a slot key.
pub fn parse_slot_key(k: &SlotKey) -> (u32, u32) {
    (u32_at(k, 0), u32_at(k, 4))
}

/// `struct be_val`, decoded: one real server of one service.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BeVal {
    /// Its address and port.
    pub addr: SocketAddr,
    /// The id of the service it belongs to.
    pub svc: u32,
    /// Its weight (0: no new connections).
    pub weight: i32,
    /// Bumped each time the id is given to a new server, so that an
    /// affinity or a UDP flow never follows a reused id.
    pub generation: u32,
    /// The latest non-zero weight (what the Maglev table is built from).
    pub last_weight: i32,
    /// Insertion order: the kernel's list order is newest first.
    pub order: u32,
}

impl BeVal {
    /// The bytes the programs read.
    pub fn encode(&self) -> BeValBytes {
        let mut b = [0; 40];
        b[..16].copy_from_slice(&addr_bytes(self.addr.ip()));
        b[16..18].copy_from_slice(&self.addr.port().to_be_bytes());
        b[18] = family(self.addr.ip());
        put_u32(&mut b, 20, self.svc);
        b[24..28].copy_from_slice(&self.weight.to_ne_bytes());
        put_u32(&mut b, 28, self.generation);
        b[32..36].copy_from_slice(&self.last_weight.to_ne_bytes());
        put_u32(&mut b, 36, self.order);
        b
    }

    /// Decodes a slot of the backend array; `None` for a free one.
    pub fn decode(b: &BeValBytes) -> Option<BeVal> {
        let ip = ip_from(&b[..16], b[18])?;
        let port = u16::from_be_bytes([b[16], b[17]]);
        Some(BeVal {
            addr: SocketAddr::new(ip, port),
            svc: u32_at(b, 20),
            weight: u32_at(b, 24) as i32,
            generation: u32_at(b, 28),
            last_weight: u32_at(b, 32) as i32,
            order: u32_at(b, 36),
        })
    }
}

/// A free backend slot: family 0.
pub const FREE_BACKEND: BeValBytes = [0; 40];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_keys_round_trip_and_match_the_c_layout() {
        let addr: SocketAddr = "10.96.0.10:53".parse().unwrap();
        let k = svc_key(Protocol::Udp, addr);
        assert_eq!(&k[..4], &[10, 96, 0, 10]);
        assert_eq!(&k[4..16], &[0; 12]);
        assert_eq!(&k[16..18], &[0, 53]); // network order
        assert_eq!(k[18], 17);
        assert_eq!(k[19], 4);
        assert_eq!(parse_svc_key(&k), Some((Protocol::Udp, addr)));
        let v6: SocketAddr = "[fd00::1]:443".parse().unwrap();
        assert_eq!(
            parse_svc_key(&svc_key(Protocol::Tcp, v6)),
            Some((Protocol::Tcp, v6))
        );
    }

    #[test]
    fn values_round_trip() {
        let v = SvcVal {
            id: 7,
            count: 4093,
            sched: SchedCode::Mh,
            flags: 0x18,
            timeout: 10800,
        };
        assert_eq!(SvcVal::decode(&v.encode()), Some(v));
        let b = BeVal {
            addr: "[fd00::2]:8080".parse().unwrap(),
            svc: 7,
            weight: -1,
            generation: 3,
            last_weight: 5,
            order: 9,
        };
        assert_eq!(BeVal::decode(&b.encode()), Some(b));
        assert_eq!(BeVal::decode(&FREE_BACKEND), None);
        assert_eq!(parse_slot_key(&slot_key(3, 4092)), (3, 4092));
    }
}
