//! Sync-daemon attributes (`IPVS_DAEMON_ATTR_*`), nested in
//! `IPVS_CMD_ATTR_DAEMON`.

use netlink_packet_core::{DecodeError, DefaultNla, Nla, NlaBuffer, Parseable};

use crate::attr::{c_string, emit_c_string, exact, raw, u8_of, u16_be, u16_ne, u32_ne};

const STATE: u16 = 1;
const MCAST_IFN: u16 = 2;
const SYNC_ID: u16 = 3;
const SYNC_MAXLEN: u16 = 4;
const MCAST_GROUP: u16 = 5;
const MCAST_GROUP6: u16 = 6;
const MCAST_PORT: u16 = 7;
const MCAST_TTL: u16 = 8;

/// One attribute describing a connection-sync daemon.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum DaemonAttr {
    /// `IP_VS_STATE_MASTER` (1) or `IP_VS_STATE_BACKUP` (2).
    State(u32),
    /// Multicast interface name.
    McastIfn(String),
    /// Sync id.
    SyncId(u32),
    /// Maximum sync message length.
    SyncMaxlen(u16),
    /// IPv4 multicast group, network order.
    McastGroup([u8; 4]),
    /// IPv6 multicast group.
    McastGroup6([u8; 16]),
    /// Multicast port (host order here, network order on the wire).
    McastPort(u16),
    /// Multicast TTL.
    McastTtl(u8),
    /// Anything else, verbatim.
    Other(DefaultNla),
}

impl Nla for DaemonAttr {
    fn value_len(&self) -> usize {
        match self {
            DaemonAttr::State(_) | DaemonAttr::SyncId(_) | DaemonAttr::McastGroup(_) => 4,
            DaemonAttr::McastIfn(s) => s.len() + 1,
            DaemonAttr::SyncMaxlen(_) | DaemonAttr::McastPort(_) => 2,
            DaemonAttr::McastGroup6(_) => 16,
            DaemonAttr::McastTtl(_) => 1,
            DaemonAttr::Other(nla) => nla.value_len(),
        }
    }

    fn kind(&self) -> u16 {
        match self {
            DaemonAttr::State(_) => STATE,
            DaemonAttr::McastIfn(_) => MCAST_IFN,
            DaemonAttr::SyncId(_) => SYNC_ID,
            DaemonAttr::SyncMaxlen(_) => SYNC_MAXLEN,
            DaemonAttr::McastGroup(_) => MCAST_GROUP,
            DaemonAttr::McastGroup6(_) => MCAST_GROUP6,
            DaemonAttr::McastPort(_) => MCAST_PORT,
            DaemonAttr::McastTtl(_) => MCAST_TTL,
            DaemonAttr::Other(nla) => nla.kind(),
        }
    }

    fn emit_value(&self, buffer: &mut [u8]) {
        match self {
            DaemonAttr::State(v) | DaemonAttr::SyncId(v) => {
                buffer.copy_from_slice(&v.to_ne_bytes())
            }
            DaemonAttr::McastIfn(s) => emit_c_string(s, buffer),
            DaemonAttr::SyncMaxlen(v) => buffer.copy_from_slice(&v.to_ne_bytes()),
            DaemonAttr::McastPort(v) => buffer.copy_from_slice(&v.to_be_bytes()),
            DaemonAttr::McastGroup(b) => buffer.copy_from_slice(b),
            DaemonAttr::McastGroup6(b) => buffer.copy_from_slice(b),
            DaemonAttr::McastTtl(v) => buffer[0] = *v,
            DaemonAttr::Other(nla) => nla.emit_value(buffer),
        }
    }
}

impl DaemonAttr {
    pub(crate) fn parse_nla(buf: &NlaBuffer<&[u8]>) -> Result<DaemonAttr, DecodeError> {
        let typed = match buf.kind() {
            STATE => u32_ne(buf).map(DaemonAttr::State),
            MCAST_IFN => c_string(buf).map(DaemonAttr::McastIfn),
            SYNC_ID => u32_ne(buf).map(DaemonAttr::SyncId),
            SYNC_MAXLEN => u16_ne(buf).map(DaemonAttr::SyncMaxlen),
            MCAST_GROUP => exact::<4>(buf).map(DaemonAttr::McastGroup),
            MCAST_GROUP6 => exact::<16>(buf).map(DaemonAttr::McastGroup6),
            MCAST_PORT => u16_be(buf).map(DaemonAttr::McastPort),
            MCAST_TTL => u8_of(buf).map(DaemonAttr::McastTtl),
            _ => None,
        };
        match typed {
            Some(attr) => Ok(attr),
            None => Ok(DaemonAttr::Other(raw(buf)?)),
        }
    }
}

/// Parses one attribute: a typed variant when its kind and size are known,
/// `Other` otherwise.
impl<'a> Parseable<NlaBuffer<&'a [u8]>> for DaemonAttr {
    fn parse(buf: &NlaBuffer<&'a [u8]>) -> Result<Self, DecodeError> {
        DaemonAttr::parse_nla(buf)
    }
}
