//! IPVS generic netlink messages: the command and its top-level
//! attributes (`IPVS_CMD_ATTR_*`, or `IPVS_INFO_ATTR_*` in info replies).

use netlink_packet_core::{
    DecodeError, DefaultNla, Emitable, Nla, NlaBuffer, ParseableParametrized,
};
use netlink_packet_generic::{GenlFamily, GenlHeader};

use crate::attr::{parse_list, parse_nested, raw, u32_ne};
use crate::{DaemonAttr, DestAttr, Nested, SvcAttr};

/// An IPVS command (`IPVS_CMD_*`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum IpvsCmd {
    /// Add a service.
    NewService,
    /// Modify a service.
    SetService,
    /// Delete a service.
    DelService,
    /// Get one service, or dump all.
    GetService,
    /// Add a destination.
    NewDest,
    /// Modify a destination.
    SetDest,
    /// Delete a destination.
    DelDest,
    /// Dump the destinations of a service.
    GetDest,
    /// Start a sync daemon.
    NewDaemon,
    /// Stop a sync daemon.
    DelDaemon,
    /// Dump sync daemons.
    GetDaemon,
    /// Set timeouts.
    SetConfig,
    /// Get timeouts.
    GetConfig,
    /// Info reply.
    SetInfo,
    /// Get version and table size.
    GetInfo,
    /// Zero counters.
    Zero,
    /// Delete all services.
    Flush,
    /// A command this crate does not know.
    Other(u8),
}

impl IpvsCmd {
    const KNOWN: [IpvsCmd; 17] = [
        IpvsCmd::NewService,
        IpvsCmd::SetService,
        IpvsCmd::DelService,
        IpvsCmd::GetService,
        IpvsCmd::NewDest,
        IpvsCmd::SetDest,
        IpvsCmd::DelDest,
        IpvsCmd::GetDest,
        IpvsCmd::NewDaemon,
        IpvsCmd::DelDaemon,
        IpvsCmd::GetDaemon,
        IpvsCmd::SetConfig,
        IpvsCmd::GetConfig,
        IpvsCmd::SetInfo,
        IpvsCmd::GetInfo,
        IpvsCmd::Zero,
        IpvsCmd::Flush,
    ];

    /// The command number.
    pub fn number(self) -> u8 {
        match self {
            IpvsCmd::Other(n) => n,
            known => {
                let index = IpvsCmd::KNOWN.iter().position(|c| *c == known).unwrap_or(0);
                u8::try_from(index + 1).unwrap_or(0)
            }
        }
    }

    /// The command with number `n`.
    pub fn from_number(n: u8) -> IpvsCmd {
        match usize::from(n)
            .checked_sub(1)
            .and_then(|i| IpvsCmd::KNOWN.get(i))
        {
            Some(cmd) => *cmd,
            None => IpvsCmd::Other(n),
        }
    }

    fn carries_info(self) -> bool {
        matches!(self, IpvsCmd::SetInfo | IpvsCmd::GetInfo)
    }
}

const SERVICE: u16 = 1;
const DEST: u16 = 2;
const DAEMON: u16 = 3;
const TIMEOUT_TCP: u16 = 4;
const TIMEOUT_TCP_FIN: u16 = 5;
const TIMEOUT_UDP: u16 = 6;
const INFO_VERSION: u16 = 1;
const INFO_CONN_TAB_SIZE: u16 = 2;

/// A top-level attribute of an IPVS message.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum CmdAttr {
    /// A service description.
    Service(Nested<SvcAttr>),
    /// A destination description.
    Dest(Nested<DestAttr>),
    /// A sync-daemon description.
    Daemon(Nested<DaemonAttr>),
    /// TCP timeout, seconds.
    TimeoutTcp(u32),
    /// TCP FIN timeout, seconds.
    TimeoutTcpFin(u32),
    /// UDP timeout, seconds.
    TimeoutUdp(u32),
    /// IPVS version (info replies only).
    InfoVersion(u32),
    /// Connection table size (info replies only).
    InfoConnTabSize(u32),
    /// Anything else, verbatim.
    Other(DefaultNla),
}

impl Nla for CmdAttr {
    fn value_len(&self) -> usize {
        match self {
            CmdAttr::Service(n) => n.value_len(),
            CmdAttr::Dest(n) => n.value_len(),
            CmdAttr::Daemon(n) => n.value_len(),
            CmdAttr::TimeoutTcp(_)
            | CmdAttr::TimeoutTcpFin(_)
            | CmdAttr::TimeoutUdp(_)
            | CmdAttr::InfoVersion(_)
            | CmdAttr::InfoConnTabSize(_) => 4,
            CmdAttr::Other(nla) => nla.value_len(),
        }
    }

    fn kind(&self) -> u16 {
        match self {
            CmdAttr::Service(n) => n.kind(SERVICE),
            CmdAttr::Dest(n) => n.kind(DEST),
            CmdAttr::Daemon(n) => n.kind(DAEMON),
            CmdAttr::TimeoutTcp(_) => TIMEOUT_TCP,
            CmdAttr::TimeoutTcpFin(_) => TIMEOUT_TCP_FIN,
            CmdAttr::TimeoutUdp(_) => TIMEOUT_UDP,
            CmdAttr::InfoVersion(_) => INFO_VERSION,
            CmdAttr::InfoConnTabSize(_) => INFO_CONN_TAB_SIZE,
            CmdAttr::Other(nla) => nla.kind(),
        }
    }

    fn emit_value(&self, buffer: &mut [u8]) {
        match self {
            CmdAttr::Service(n) => n.emit_value(buffer),
            CmdAttr::Dest(n) => n.emit_value(buffer),
            CmdAttr::Daemon(n) => n.emit_value(buffer),
            CmdAttr::TimeoutTcp(v)
            | CmdAttr::TimeoutTcpFin(v)
            | CmdAttr::TimeoutUdp(v)
            | CmdAttr::InfoVersion(v)
            | CmdAttr::InfoConnTabSize(v) => buffer.copy_from_slice(&v.to_ne_bytes()),
            CmdAttr::Other(nla) => nla.emit_value(buffer),
        }
    }
}

impl CmdAttr {
    fn parse_nla(buf: &NlaBuffer<&[u8]>, cmd: IpvsCmd) -> Result<CmdAttr, DecodeError> {
        let typed = if cmd.carries_info() {
            match buf.kind() {
                INFO_VERSION => u32_ne(buf).map(CmdAttr::InfoVersion),
                INFO_CONN_TAB_SIZE => u32_ne(buf).map(CmdAttr::InfoConnTabSize),
                _ => None,
            }
        } else {
            match buf.kind() {
                SERVICE => Some(CmdAttr::Service(parse_nested(buf, SvcAttr::parse_nla)?)),
                DEST => Some(CmdAttr::Dest(parse_nested(buf, DestAttr::parse_nla)?)),
                DAEMON => Some(CmdAttr::Daemon(parse_nested(buf, DaemonAttr::parse_nla)?)),
                TIMEOUT_TCP => u32_ne(buf).map(CmdAttr::TimeoutTcp),
                TIMEOUT_TCP_FIN => u32_ne(buf).map(CmdAttr::TimeoutTcpFin),
                TIMEOUT_UDP => u32_ne(buf).map(CmdAttr::TimeoutUdp),
                _ => None,
            }
        };
        match typed {
            Some(attr) => Ok(attr),
            None => Ok(CmdAttr::Other(raw(buf)?)),
        }
    }
}

/// Parses one top-level attribute of a message of command `cmd` (which
/// decides between `IPVS_CMD_ATTR_*` and `IPVS_INFO_ATTR_*`).
impl<'a> ParseableParametrized<NlaBuffer<&'a [u8]>, IpvsCmd> for CmdAttr {
    fn parse_with_param(buf: &NlaBuffer<&'a [u8]>, cmd: IpvsCmd) -> Result<Self, DecodeError> {
        CmdAttr::parse_nla(buf, cmd)
    }
}

/// An IPVS generic netlink message (the payload after `genlmsghdr`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IpvsMessage {
    /// The command.
    pub cmd: IpvsCmd,
    /// Its attributes, in wire order.
    pub attrs: Vec<CmdAttr>,
}

impl IpvsMessage {
    /// A message with the given command and attributes.
    pub fn new(cmd: IpvsCmd, attrs: Vec<CmdAttr>) -> IpvsMessage {
        IpvsMessage { cmd, attrs }
    }

    /// The first nested service description, if any.
    pub fn service(&self) -> Option<&[SvcAttr]> {
        self.attrs.iter().find_map(|a| match a {
            CmdAttr::Service(n) => Some(n.attrs.as_slice()),
            _ => None,
        })
    }

    /// The first nested destination description, if any.
    pub fn dest(&self) -> Option<&[DestAttr]> {
        self.attrs.iter().find_map(|a| match a {
            CmdAttr::Dest(n) => Some(n.attrs.as_slice()),
            _ => None,
        })
    }

    /// The first nested daemon description, if any.
    pub fn daemon(&self) -> Option<&[DaemonAttr]> {
        self.attrs.iter().find_map(|a| match a {
            CmdAttr::Daemon(n) => Some(n.attrs.as_slice()),
            _ => None,
        })
    }
}

impl GenlFamily for IpvsMessage {
    fn family_name() -> &'static str {
        crate::FAMILY_NAME
    }

    fn command(&self) -> u8 {
        self.cmd.number()
    }

    fn version(&self) -> u8 {
        crate::FAMILY_VERSION
    }
}

impl Emitable for IpvsMessage {
    fn buffer_len(&self) -> usize {
        self.attrs.as_slice().buffer_len()
    }

    fn emit(&self, buffer: &mut [u8]) {
        self.attrs.as_slice().emit(buffer);
    }
}

impl ParseableParametrized<[u8], GenlHeader> for IpvsMessage {
    fn parse_with_param(buf: &[u8], header: GenlHeader) -> Result<Self, DecodeError> {
        let cmd = IpvsCmd::from_number(header.cmd);
        let attrs = parse_list(buf, |nla| CmdAttr::parse_nla(nla, cmd))?;
        Ok(IpvsMessage { cmd, attrs })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_numbers_follow_ip_vs_h() {
        assert_eq!(IpvsCmd::NewService.number(), 1);
        assert_eq!(IpvsCmd::GetDest.number(), 8);
        assert_eq!(IpvsCmd::GetInfo.number(), 15);
        assert_eq!(IpvsCmd::Flush.number(), 17);
        for n in 0..=255u8 {
            assert_eq!(IpvsCmd::from_number(n).number(), n);
        }
        assert_eq!(IpvsCmd::from_number(0), IpvsCmd::Other(0));
        assert_eq!(IpvsCmd::from_number(18), IpvsCmd::Other(18));
    }
}
