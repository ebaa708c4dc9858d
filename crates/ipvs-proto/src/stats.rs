//! Counter attributes (`IPVS_STATS_ATTR_*`), nested in services and
//! destinations as `..._STATS` (32-bit packet and rate counters) and
//! `..._STATS64` (all 64-bit).

use netlink_packet_core::{DecodeError, DefaultNla, Nla, NlaBuffer, Parseable};

use crate::attr::{raw, u32_ne, u64_ne};

/// Which counter an attribute carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum StatsField {
    /// Connections scheduled (`IPVS_STATS_ATTR_CONNS`).
    Conns = 1,
    /// Incoming packets.
    InPkts = 2,
    /// Outgoing packets.
    OutPkts = 3,
    /// Incoming bytes.
    InBytes = 4,
    /// Outgoing bytes.
    OutBytes = 5,
    /// Connection rate.
    Cps = 6,
    /// Incoming packet rate.
    InPps = 7,
    /// Outgoing packet rate.
    OutPps = 8,
    /// Incoming byte rate.
    InBps = 9,
    /// Outgoing byte rate.
    OutBps = 10,
}

impl StatsField {
    /// Every field, in attribute order.
    pub const ALL: [StatsField; 10] = [
        StatsField::Conns,
        StatsField::InPkts,
        StatsField::OutPkts,
        StatsField::InBytes,
        StatsField::OutBytes,
        StatsField::Cps,
        StatsField::InPps,
        StatsField::OutPps,
        StatsField::InBps,
        StatsField::OutBps,
    ];

    fn from_kind(kind: u16) -> Option<StatsField> {
        StatsField::ALL.into_iter().find(|f| *f as u16 == kind)
    }
}

/// A counter value with the width it had on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Counter {
    /// A 32-bit counter.
    U32(u32),
    /// A 64-bit counter.
    U64(u64),
}

impl Counter {
    /// The value, widened.
    pub fn get(self) -> u64 {
        match self {
            Counter::U32(v) => u64::from(v),
            Counter::U64(v) => v,
        }
    }
}

/// One attribute inside a stats nest.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum StatsAttr {
    /// A known counter.
    Field(StatsField, Counter),
    /// Padding (`IPVS_STATS_ATTR_PAD`) or anything unknown, verbatim.
    Other(DefaultNla),
}

impl Nla for StatsAttr {
    fn value_len(&self) -> usize {
        match self {
            StatsAttr::Field(_, Counter::U32(_)) => 4,
            StatsAttr::Field(_, Counter::U64(_)) => 8,
            StatsAttr::Other(nla) => nla.value_len(),
        }
    }

    fn kind(&self) -> u16 {
        match self {
            StatsAttr::Field(field, _) => *field as u16,
            StatsAttr::Other(nla) => nla.kind(),
        }
    }

    fn emit_value(&self, buffer: &mut [u8]) {
        match self {
            StatsAttr::Field(_, Counter::U32(v)) => buffer.copy_from_slice(&v.to_ne_bytes()),
            StatsAttr::Field(_, Counter::U64(v)) => buffer.copy_from_slice(&v.to_ne_bytes()),
            StatsAttr::Other(nla) => nla.emit_value(buffer),
        }
    }
}

impl StatsAttr {
    pub(crate) fn parse_nla(buf: &NlaBuffer<&[u8]>) -> Result<StatsAttr, DecodeError> {
        let counter = u32_ne(buf)
            .map(Counter::U32)
            .or_else(|| u64_ne(buf).map(Counter::U64));
        Ok(match (StatsField::from_kind(buf.kind()), counter) {
            (Some(field), Some(counter)) => StatsAttr::Field(field, counter),
            _ => StatsAttr::Other(raw(buf)?),
        })
    }
}

/// Parses one attribute: a typed variant when its kind and size are known,
/// `Other` otherwise.
impl<'a> Parseable<NlaBuffer<&'a [u8]>> for StatsAttr {
    fn parse(buf: &NlaBuffer<&'a [u8]>) -> Result<Self, DecodeError> {
        StatsAttr::parse_nla(buf)
    }
}
