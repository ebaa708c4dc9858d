//! Destination attributes (`IPVS_DEST_ATTR_*`), nested in
//! `IPVS_CMD_ATTR_DEST`.

use netlink_packet_core::{DecodeError, DefaultNla, Nla, NlaBuffer, Parseable};

use crate::Nested;
use crate::attr::{parse_nested, raw, u8_of, u16_be, u16_ne, u32_ne};
use crate::stats::StatsAttr;

const ADDR: u16 = 1;
const PORT: u16 = 2;
const FWD_METHOD: u16 = 3;
const WEIGHT: u16 = 4;
const U_THRESH: u16 = 5;
const L_THRESH: u16 = 6;
const ACTIVE_CONNS: u16 = 7;
const INACT_CONNS: u16 = 8;
const PERSIST_CONNS: u16 = 9;
const STATS: u16 = 10;
const ADDR_FAMILY: u16 = 11;
const STATS64: u16 = 12;
const TUN_TYPE: u16 = 13;
const TUN_PORT: u16 = 14;
const TUN_FLAGS: u16 = 15;

/// One attribute describing a destination (real server).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum DestAttr {
    /// Address: the raw bytes of `union nf_inet_addr`.
    Addr(Vec<u8>),
    /// Port (host order here, network order on the wire).
    Port(u16),
    /// Forwarding method (`IP_VS_CONN_F_*` value).
    FwdMethod(u32),
    /// Weight.
    Weight(i32),
    /// Upper threshold.
    UThresh(u32),
    /// Lower threshold.
    LThresh(u32),
    /// Active connections (read-only).
    ActiveConns(u32),
    /// Inactive connections (read-only).
    InactConns(u32),
    /// Persistent connections (read-only).
    PersistConns(u32),
    /// 32-bit counters.
    Stats(Nested<StatsAttr>),
    /// Address family of [`DestAttr::Addr`].
    AddrFamily(u16),
    /// 64-bit counters.
    Stats64(Nested<StatsAttr>),
    /// Tunnel type.
    TunType(u8),
    /// Tunnel port (host order here, network order on the wire).
    TunPort(u16),
    /// Tunnel flags.
    TunFlags(u16),
    /// Anything else, verbatim.
    Other(DefaultNla),
}

impl Nla for DestAttr {
    fn value_len(&self) -> usize {
        match self {
            DestAttr::Addr(bytes) => bytes.len(),
            DestAttr::TunType(_) => 1,
            DestAttr::Port(_)
            | DestAttr::AddrFamily(_)
            | DestAttr::TunPort(_)
            | DestAttr::TunFlags(_) => 2,
            DestAttr::FwdMethod(_)
            | DestAttr::Weight(_)
            | DestAttr::UThresh(_)
            | DestAttr::LThresh(_)
            | DestAttr::ActiveConns(_)
            | DestAttr::InactConns(_)
            | DestAttr::PersistConns(_) => 4,
            DestAttr::Stats(n) | DestAttr::Stats64(n) => n.value_len(),
            DestAttr::Other(nla) => nla.value_len(),
        }
    }

    fn kind(&self) -> u16 {
        match self {
            DestAttr::Addr(_) => ADDR,
            DestAttr::Port(_) => PORT,
            DestAttr::FwdMethod(_) => FWD_METHOD,
            DestAttr::Weight(_) => WEIGHT,
            DestAttr::UThresh(_) => U_THRESH,
            DestAttr::LThresh(_) => L_THRESH,
            DestAttr::ActiveConns(_) => ACTIVE_CONNS,
            DestAttr::InactConns(_) => INACT_CONNS,
            DestAttr::PersistConns(_) => PERSIST_CONNS,
            DestAttr::Stats(n) => n.kind(STATS),
            DestAttr::AddrFamily(_) => ADDR_FAMILY,
            DestAttr::Stats64(n) => n.kind(STATS64),
            DestAttr::TunType(_) => TUN_TYPE,
            DestAttr::TunPort(_) => TUN_PORT,
            DestAttr::TunFlags(_) => TUN_FLAGS,
            DestAttr::Other(nla) => nla.kind(),
        }
    }

    fn emit_value(&self, buffer: &mut [u8]) {
        match self {
            DestAttr::Addr(bytes) => buffer.copy_from_slice(bytes),
            DestAttr::TunType(v) => buffer[0] = *v,
            DestAttr::Port(v) | DestAttr::TunPort(v) => buffer.copy_from_slice(&v.to_be_bytes()),
            DestAttr::AddrFamily(v) | DestAttr::TunFlags(v) => {
                buffer.copy_from_slice(&v.to_ne_bytes())
            }
            DestAttr::Weight(v) => buffer.copy_from_slice(&v.to_ne_bytes()),
            DestAttr::FwdMethod(v)
            | DestAttr::UThresh(v)
            | DestAttr::LThresh(v)
            | DestAttr::ActiveConns(v)
            | DestAttr::InactConns(v)
            | DestAttr::PersistConns(v) => buffer.copy_from_slice(&v.to_ne_bytes()),
            DestAttr::Stats(n) | DestAttr::Stats64(n) => n.emit_value(buffer),
            DestAttr::Other(nla) => nla.emit_value(buffer),
        }
    }
}

impl DestAttr {
    pub(crate) fn parse_nla(buf: &NlaBuffer<&[u8]>) -> Result<DestAttr, DecodeError> {
        let typed = match buf.kind() {
            ADDR if !buf.nested_flag() && matches!(buf.value().len(), 4 | 16) => {
                Some(DestAttr::Addr(buf.value().to_vec()))
            }
            PORT => u16_be(buf).map(DestAttr::Port),
            FWD_METHOD => u32_ne(buf).map(DestAttr::FwdMethod),
            WEIGHT => u32_ne(buf).map(|v| DestAttr::Weight(i32::from_ne_bytes(v.to_ne_bytes()))),
            U_THRESH => u32_ne(buf).map(DestAttr::UThresh),
            L_THRESH => u32_ne(buf).map(DestAttr::LThresh),
            ACTIVE_CONNS => u32_ne(buf).map(DestAttr::ActiveConns),
            INACT_CONNS => u32_ne(buf).map(DestAttr::InactConns),
            PERSIST_CONNS => u32_ne(buf).map(DestAttr::PersistConns),
            STATS => Some(DestAttr::Stats(parse_nested(buf, StatsAttr::parse_nla)?)),
            ADDR_FAMILY => u16_ne(buf).map(DestAttr::AddrFamily),
            STATS64 => Some(DestAttr::Stats64(parse_nested(buf, StatsAttr::parse_nla)?)),
            TUN_TYPE => u8_of(buf).map(DestAttr::TunType),
            TUN_PORT => u16_be(buf).map(DestAttr::TunPort),
            TUN_FLAGS => u16_ne(buf).map(DestAttr::TunFlags),
            _ => None,
        };
        match typed {
            Some(attr) => Ok(attr),
            None => Ok(DestAttr::Other(raw(buf)?)),
        }
    }
}

/// Parses one attribute: a typed variant when its kind and size are known,
/// `Other` otherwise.
impl<'a> Parseable<NlaBuffer<&'a [u8]>> for DestAttr {
    fn parse(buf: &NlaBuffer<&'a [u8]>) -> Result<Self, DecodeError> {
        DestAttr::parse_nla(buf)
    }
}
