//! Service attributes (`IPVS_SVC_ATTR_*`), nested in
//! `IPVS_CMD_ATTR_SERVICE`.

use netlink_packet_core::{DecodeError, DefaultNla, Nla, NlaBuffer, Parseable};

use crate::Nested;
use crate::attr::{c_string, emit_c_string, exact, parse_nested, raw, u16_be, u16_ne, u32_ne};
use crate::stats::StatsAttr;

const AF: u16 = 1;
const PROTOCOL: u16 = 2;
const ADDR: u16 = 3;
const PORT: u16 = 4;
const FWMARK: u16 = 5;
const SCHED_NAME: u16 = 6;
const FLAGS: u16 = 7;
const TIMEOUT: u16 = 8;
const NETMASK: u16 = 9;
const STATS: u16 = 10;
const PE_NAME: u16 = 11;
const STATS64: u16 = 12;

/// One attribute describing a virtual service.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum SvcAttr {
    /// Address family (`AF_INET`, `AF_INET6`).
    Af(u16),
    /// IP protocol number.
    Protocol(u16),
    /// Virtual address: the raw bytes of `union nf_inet_addr` (16 bytes
    /// from the kernel and ipvsadm, 4 are accepted too).
    Addr(Vec<u8>),
    /// Virtual port (host order here, network order on the wire).
    Port(u16),
    /// Firewall mark.
    Fwmark(u32),
    /// Scheduler name.
    SchedName(String),
    /// `struct ip_vs_flags`: the flags and which of them to change.
    Flags {
        /// Flag values.
        flags: u32,
        /// Which flags the request sets.
        mask: u32,
    },
    /// Persistence timeout, seconds.
    Timeout(u32),
    /// Persistence netmask: the 4 bytes as the wire has them (an IPv4
    /// mask in network order, or an IPv6 prefix length in host order).
    Netmask([u8; 4]),
    /// 32-bit counters.
    Stats(Nested<StatsAttr>),
    /// Persistence engine name.
    PeName(String),
    /// 64-bit counters.
    Stats64(Nested<StatsAttr>),
    /// Anything else, verbatim.
    Other(DefaultNla),
}

impl Nla for SvcAttr {
    fn value_len(&self) -> usize {
        match self {
            SvcAttr::Af(_) | SvcAttr::Protocol(_) | SvcAttr::Port(_) => 2,
            SvcAttr::Fwmark(_) | SvcAttr::Timeout(_) | SvcAttr::Netmask(_) => 4,
            SvcAttr::Flags { .. } => 8,
            SvcAttr::Addr(bytes) => bytes.len(),
            SvcAttr::SchedName(s) | SvcAttr::PeName(s) => s.len() + 1,
            SvcAttr::Stats(n) | SvcAttr::Stats64(n) => n.value_len(),
            SvcAttr::Other(nla) => nla.value_len(),
        }
    }

    fn kind(&self) -> u16 {
        match self {
            SvcAttr::Af(_) => AF,
            SvcAttr::Protocol(_) => PROTOCOL,
            SvcAttr::Addr(_) => ADDR,
            SvcAttr::Port(_) => PORT,
            SvcAttr::Fwmark(_) => FWMARK,
            SvcAttr::SchedName(_) => SCHED_NAME,
            SvcAttr::Flags { .. } => FLAGS,
            SvcAttr::Timeout(_) => TIMEOUT,
            SvcAttr::Netmask(_) => NETMASK,
            SvcAttr::Stats(n) => n.kind(STATS),
            SvcAttr::PeName(_) => PE_NAME,
            SvcAttr::Stats64(n) => n.kind(STATS64),
            SvcAttr::Other(nla) => nla.kind(),
        }
    }

    fn emit_value(&self, buffer: &mut [u8]) {
        match self {
            SvcAttr::Af(v) | SvcAttr::Protocol(v) => buffer.copy_from_slice(&v.to_ne_bytes()),
            SvcAttr::Port(v) => buffer.copy_from_slice(&v.to_be_bytes()),
            SvcAttr::Fwmark(v) | SvcAttr::Timeout(v) => buffer.copy_from_slice(&v.to_ne_bytes()),
            SvcAttr::Netmask(bytes) => buffer.copy_from_slice(bytes),
            SvcAttr::Flags { flags, mask } => {
                buffer[..4].copy_from_slice(&flags.to_ne_bytes());
                buffer[4..8].copy_from_slice(&mask.to_ne_bytes());
            }
            SvcAttr::Addr(bytes) => buffer.copy_from_slice(bytes),
            SvcAttr::SchedName(s) | SvcAttr::PeName(s) => emit_c_string(s, buffer),
            SvcAttr::Stats(n) | SvcAttr::Stats64(n) => n.emit_value(buffer),
            SvcAttr::Other(nla) => nla.emit_value(buffer),
        }
    }
}

impl SvcAttr {
    pub(crate) fn parse_nla(buf: &NlaBuffer<&[u8]>) -> Result<SvcAttr, DecodeError> {
        let typed = match buf.kind() {
            AF => u16_ne(buf).map(SvcAttr::Af),
            PROTOCOL => u16_ne(buf).map(SvcAttr::Protocol),
            ADDR if !buf.nested_flag() && matches!(buf.value().len(), 4 | 16) => {
                Some(SvcAttr::Addr(buf.value().to_vec()))
            }
            PORT => u16_be(buf).map(SvcAttr::Port),
            FWMARK => u32_ne(buf).map(SvcAttr::Fwmark),
            SCHED_NAME => c_string(buf).map(SvcAttr::SchedName),
            FLAGS => exact::<8>(buf).map(|b| SvcAttr::Flags {
                flags: u32::from_ne_bytes([b[0], b[1], b[2], b[3]]),
                mask: u32::from_ne_bytes([b[4], b[5], b[6], b[7]]),
            }),
            TIMEOUT => u32_ne(buf).map(SvcAttr::Timeout),
            NETMASK => exact::<4>(buf).map(SvcAttr::Netmask),
            STATS => Some(SvcAttr::Stats(parse_nested(buf, StatsAttr::parse_nla)?)),
            PE_NAME => c_string(buf).map(SvcAttr::PeName),
            STATS64 => Some(SvcAttr::Stats64(parse_nested(buf, StatsAttr::parse_nla)?)),
            _ => None,
        };
        match typed {
            Some(attr) => Ok(attr),
            None => Ok(SvcAttr::Other(raw(buf)?)),
        }
    }
}

/// Parses one attribute: a typed variant when its kind and size are known,
/// `Other` otherwise.
impl<'a> Parseable<NlaBuffer<&'a [u8]>> for SvcAttr {
    fn parse(buf: &NlaBuffer<&'a [u8]>) -> Result<Self, DecodeError> {
        SvcAttr::parse_nla(buf)
    }
}
