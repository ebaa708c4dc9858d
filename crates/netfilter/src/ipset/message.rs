//! Typed ipset messages (`include/uapi/linux/netfilter/ipset/ip_set.h`):
//! commands, command-level attributes, and the attributes inside
//! `IPSET_ATTR_DATA` and `IPSET_ATTR_ADT`.
//!
//! Parsing is lossless. An attribute is given a type only when its flags
//! and size are exactly what this module would emit for that type;
//! anything else (unknown kinds, other flags, other sizes) is kept as
//! `Other(RawNla)`. So every parsed message re-emits to identical bytes.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::DecodeError;
use super::wire::{
    self, NFGENMSG_LEN, NLA_F_NESTED, NLA_F_NET_BYTEORDER, NLMSG_DONE, NLMSG_ERROR, NlHeader,
    RawNla,
};

/// `NFNL_SUBSYS_IPSET`: the high byte of every ipset message type.
pub const NFNL_SUBSYS_IPSET: u16 = 6;
/// `IPSET_PROTOCOL`: the protocol version this codec speaks.
pub const IPSET_PROTOCOL: u8 = 7;
/// `IPSET_MAXNAMELEN`: set and type names are at most this long, NUL
/// included.
pub const IPSET_MAXNAMELEN: usize = 32;

/// An ipset command (`IPSET_CMD_*`), the low byte of the message type.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum IpsetCmd {
    /// `IPSET_CMD_PROTOCOL`: ask the kernel's protocol version.
    Protocol,
    /// `IPSET_CMD_CREATE`.
    Create,
    /// `IPSET_CMD_DESTROY`.
    Destroy,
    /// `IPSET_CMD_FLUSH`.
    Flush,
    /// `IPSET_CMD_RENAME`.
    Rename,
    /// `IPSET_CMD_SWAP`.
    Swap,
    /// `IPSET_CMD_LIST`: dump headers and members.
    List,
    /// `IPSET_CMD_SAVE`.
    Save,
    /// `IPSET_CMD_ADD`.
    Add,
    /// `IPSET_CMD_DEL`.
    Del,
    /// `IPSET_CMD_TEST`.
    Test,
    /// `IPSET_CMD_HEADER`.
    Header,
    /// `IPSET_CMD_TYPE`: ask the revisions the kernel has for a type.
    Type,
    /// Any other command number.
    Other(u8),
}

impl IpsetCmd {
    /// The command number.
    pub fn number(self) -> u8 {
        match self {
            IpsetCmd::Protocol => 1,
            IpsetCmd::Create => 2,
            IpsetCmd::Destroy => 3,
            IpsetCmd::Flush => 4,
            IpsetCmd::Rename => 5,
            IpsetCmd::Swap => 6,
            IpsetCmd::List => 7,
            IpsetCmd::Save => 8,
            IpsetCmd::Add => 9,
            IpsetCmd::Del => 10,
            IpsetCmd::Test => 11,
            IpsetCmd::Header => 12,
            IpsetCmd::Type => 13,
            IpsetCmd::Other(n) => n,
        }
    }

    /// The command with number `n`.
    pub fn from_number(n: u8) -> IpsetCmd {
        match n {
            1 => IpsetCmd::Protocol,
            2 => IpsetCmd::Create,
            3 => IpsetCmd::Destroy,
            4 => IpsetCmd::Flush,
            5 => IpsetCmd::Rename,
            6 => IpsetCmd::Swap,
            7 => IpsetCmd::List,
            8 => IpsetCmd::Save,
            9 => IpsetCmd::Add,
            10 => IpsetCmd::Del,
            11 => IpsetCmd::Test,
            12 => IpsetCmd::Header,
            13 => IpsetCmd::Type,
            n => IpsetCmd::Other(n),
        }
    }

    /// Whether the top-level `IPSET_ATTR_DATA` of this command holds an
    /// element (add/del/test) rather than set-creation parameters.
    fn data_is_entry(self) -> bool {
        matches!(self, IpsetCmd::Add | IpsetCmd::Del | IpsetCmd::Test)
    }
}

/// Attributes of the command level (`IPSET_ATTR_*` up to
/// `IPSET_ATTR_INDEX`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum IpsetAttr {
    /// `IPSET_ATTR_PROTOCOL` (1, u8): on every message.
    Protocol(u8),
    /// `IPSET_ATTR_SETNAME` (2, string).
    SetName(String),
    /// `IPSET_ATTR_TYPENAME` (3, string); the same number is
    /// `IPSET_ATTR_SETNAME2`, the second set of swap and rename.
    TypeName(String),
    /// `IPSET_ATTR_REVISION` (4, u8).
    Revision(u8),
    /// `IPSET_ATTR_FAMILY` (5, u8: `NFPROTO_IPV4` 2, `NFPROTO_IPV6` 10,
    /// `NFPROTO_UNSPEC` 0).
    Family(u8),
    /// `IPSET_ATTR_FLAGS` (6, big-endian u32).
    Flags(u32),
    /// `IPSET_ATTR_DATA` (7, nested): creation parameters and set header
    /// for create/list/header, or one element for add/del/test.
    Data(Vec<DataAttr>),
    /// `IPSET_ATTR_ADT` (8, nested): the members in a list reply.
    Adt(Vec<AdtAttr>),
    /// `IPSET_ATTR_LINENO` (9, big-endian u32).
    LineNo(u32),
    /// `IPSET_ATTR_PROTOCOL_MIN` (10, u8); also `IPSET_ATTR_REVISION_MIN`.
    ProtocolMin(u8),
    /// `IPSET_ATTR_INDEX` (11, big-endian u16).
    Index(u16),
    /// Anything else, verbatim.
    Other(RawNla),
}

/// An item of `IPSET_ATTR_ADT`: one member's attributes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AdtAttr {
    /// `IPSET_ATTR_DATA` (nested) holding one member.
    Data(Vec<DataAttr>),
    /// Anything else, verbatim.
    Other(RawNla),
}

/// An address attribute's value. Requests must flag the inner
/// `IPSET_ATTR_IPADDR_*` with `NLA_F_NET_BYTEORDER` (the kernel refuses
/// them otherwise); the kernel's own list replies do not flag it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Addr {
    /// The address.
    pub ip: IpAddr,
    /// `NLA_F_NET_BYTEORDER` on the inner attribute.
    pub flagged: bool,
}

impl Addr {
    /// An address as requests carry it (flagged).
    pub fn request(ip: IpAddr) -> Addr {
        Addr { ip, flagged: true }
    }
}

impl From<IpAddr> for Addr {
    fn from(ip: IpAddr) -> Addr {
        Addr::request(ip)
    }
}

/// Attributes inside `IPSET_ATTR_DATA`. Numbers above 16 mean different
/// things for creation parameters and for elements; which applies is
/// decided by the command (see [`IpsetCmd`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DataAttr {
    /// `IPSET_ATTR_IP` (1, nested address).
    Ip(Addr),
    /// `IPSET_ATTR_IP_TO` (2, nested address).
    IpTo(Addr),
    /// `IPSET_ATTR_CIDR` (3, u8).
    Cidr(u8),
    /// `IPSET_ATTR_PORT` (4, big-endian u16); `IPSET_ATTR_PORT_FROM` of a
    /// bitmap:port header.
    Port(u16),
    /// `IPSET_ATTR_PORT_TO` (5, big-endian u16).
    PortTo(u16),
    /// `IPSET_ATTR_TIMEOUT` (6, big-endian u32).
    Timeout(u32),
    /// `IPSET_ATTR_PROTO` (7, u8: an IP protocol number).
    Proto(u8),
    /// `IPSET_ATTR_CADT_FLAGS` (8, big-endian u32).
    CadtFlags(u32),
    /// `IPSET_ATTR_CADT_LINENO` (9, big-endian u32).
    LineNo(u32),
    /// `IPSET_ATTR_INITVAL` (17, big-endian u32; creation/header).
    InitVal(u32),
    /// `IPSET_ATTR_HASHSIZE` (18, big-endian u32; creation/header).
    HashSize(u32),
    /// `IPSET_ATTR_MAXELEM` (19, big-endian u32; creation/header).
    MaxElem(u32),
    /// `IPSET_ATTR_NETMASK` (20, u8; creation/header).
    Netmask(u8),
    /// `IPSET_ATTR_BUCKETSIZE` (21, u8; creation/header).
    BucketSize(u8),
    /// `IPSET_ATTR_RESIZE` (22, u8; creation/header).
    Resize(u8),
    /// `IPSET_ATTR_SIZE` (23, big-endian u32; creation/header).
    Size(u32),
    /// `IPSET_ATTR_ELEMENTS` (24, big-endian u32; header).
    Elements(u32),
    /// `IPSET_ATTR_REFERENCES` (25, big-endian u32; header).
    References(u32),
    /// `IPSET_ATTR_MEMSIZE` (26, big-endian u32; header).
    MemSize(u32),
    /// `IPSET_ATTR_IP2` (20, nested address; element).
    Ip2(Addr),
    /// `IPSET_ATTR_CIDR2` (21, u8; element).
    Cidr2(u8),
    /// `IPSET_ATTR_COMMENT` (26, string; element).
    Comment(String),
    /// Anything else, verbatim.
    Other(RawNla),
}

const IPSET_ATTR_IPADDR_IPV4: u16 = 1;
const IPSET_ATTR_IPADDR_IPV6: u16 = 2;

const NET: u16 = NLA_F_NET_BYTEORDER;
const NEST: u16 = NLA_F_NESTED;

fn string_value(s: &str) -> Vec<u8> {
    let mut v = s.as_bytes().to_vec();
    v.push(0);
    v
}

fn parse_string(value: &[u8]) -> Option<String> {
    let (last, body) = value.split_last()?;
    if *last != 0 || body.contains(&0) {
        return None;
    }
    String::from_utf8(body.to_vec()).ok()
}

fn u8_of(nla: &RawNla, kind: u16) -> Option<u8> {
    (nla.kind == kind)
        .then(|| wire::fixed::<1>(&nla.value))
        .flatten()
        .map(|b| b[0])
}

fn be16_of(nla: &RawNla, kind: u16) -> Option<u16> {
    (nla.kind == kind)
        .then(|| wire::fixed::<2>(&nla.value))
        .flatten()
        .map(u16::from_be_bytes)
}

fn be32_of(nla: &RawNla, kind: u16) -> Option<u32> {
    (nla.kind == kind)
        .then(|| wire::fixed::<4>(&nla.value))
        .flatten()
        .map(u32::from_be_bytes)
}

fn string_of(nla: &RawNla, kind: u16) -> Option<String> {
    (nla.kind == kind)
        .then(|| parse_string(&nla.value))
        .flatten()
}

/// An address attribute: nested, holding exactly one
/// `IPSET_ATTR_IPADDR_IPV4`/`IPV6` in network byte order.
fn addr_of(nla: &RawNla, kind: u16) -> Option<Addr> {
    if nla.kind != kind {
        return None;
    }
    let inner = wire::parse_nlas(&nla.value).ok()?;
    let [one] = inner.as_slice() else {
        return None;
    };
    let flagged = one.kind & NET != 0;
    let ip = match one.kind & !NET {
        IPSET_ATTR_IPADDR_IPV4 => IpAddr::V4(Ipv4Addr::from(wire::fixed::<4>(&one.value)?)),
        IPSET_ATTR_IPADDR_IPV6 => IpAddr::V6(Ipv6Addr::from(wire::fixed::<16>(&one.value)?)),
        _ => return None,
    };
    Some(Addr { ip, flagged })
}

fn emit_addr(out: &mut Vec<u8>, kind: u16, addr: &Addr) {
    let flag = if addr.flagged { NET } else { 0 };
    wire::emit_nested(out, kind, |out| match addr.ip {
        IpAddr::V4(a) => wire::emit_nla(out, IPSET_ATTR_IPADDR_IPV4 | flag, &a.octets()),
        IpAddr::V6(a) => wire::emit_nla(out, IPSET_ATTR_IPADDR_IPV6 | flag, &a.octets()),
    });
}

impl DataAttr {
    /// Types `nla`, read as an element (`entry`) or as creation
    /// parameters.
    fn parse(nla: RawNla, entry: bool) -> DataAttr {
        let typed = match nla.number() {
            1 => addr_of(&nla, 1 | NEST).map(DataAttr::Ip),
            2 => addr_of(&nla, 2 | NEST).map(DataAttr::IpTo),
            3 => u8_of(&nla, 3).map(DataAttr::Cidr),
            4 => be16_of(&nla, 4 | NET).map(DataAttr::Port),
            5 => be16_of(&nla, 5 | NET).map(DataAttr::PortTo),
            6 => be32_of(&nla, 6 | NET).map(DataAttr::Timeout),
            7 => u8_of(&nla, 7).map(DataAttr::Proto),
            8 => be32_of(&nla, 8 | NET).map(DataAttr::CadtFlags),
            9 => be32_of(&nla, 9 | NET).map(DataAttr::LineNo),
            20 if entry => addr_of(&nla, 20 | NEST).map(DataAttr::Ip2),
            21 if entry => u8_of(&nla, 21).map(DataAttr::Cidr2),
            26 if entry => string_of(&nla, 26).map(DataAttr::Comment),
            _ if entry => None,
            17 => be32_of(&nla, 17 | NET).map(DataAttr::InitVal),
            18 => be32_of(&nla, 18 | NET).map(DataAttr::HashSize),
            19 => be32_of(&nla, 19 | NET).map(DataAttr::MaxElem),
            20 => u8_of(&nla, 20).map(DataAttr::Netmask),
            21 => u8_of(&nla, 21).map(DataAttr::BucketSize),
            22 => u8_of(&nla, 22).map(DataAttr::Resize),
            23 => be32_of(&nla, 23 | NET).map(DataAttr::Size),
            24 => be32_of(&nla, 24 | NET).map(DataAttr::Elements),
            25 => be32_of(&nla, 25 | NET).map(DataAttr::References),
            26 => be32_of(&nla, 26 | NET).map(DataAttr::MemSize),
            _ => None,
        };
        typed.unwrap_or(DataAttr::Other(nla))
    }

    fn emit(&self, out: &mut Vec<u8>) {
        let u8_ = |out: &mut Vec<u8>, kind: u16, v: u8| wire::emit_nla(out, kind, &[v]);
        let be16 = |out: &mut Vec<u8>, kind: u16, v: u16| {
            wire::emit_nla(out, kind | NET, &v.to_be_bytes())
        };
        let be32 = |out: &mut Vec<u8>, kind: u16, v: u32| {
            wire::emit_nla(out, kind | NET, &v.to_be_bytes())
        };
        match self {
            DataAttr::Ip(a) => emit_addr(out, 1 | NEST, a),
            DataAttr::IpTo(a) => emit_addr(out, 2 | NEST, a),
            DataAttr::Cidr(v) => u8_(out, 3, *v),
            DataAttr::Port(v) => be16(out, 4, *v),
            DataAttr::PortTo(v) => be16(out, 5, *v),
            DataAttr::Timeout(v) => be32(out, 6, *v),
            DataAttr::Proto(v) => u8_(out, 7, *v),
            DataAttr::CadtFlags(v) => be32(out, 8, *v),
            DataAttr::LineNo(v) => be32(out, 9, *v),
            DataAttr::InitVal(v) => be32(out, 17, *v),
            DataAttr::HashSize(v) => be32(out, 18, *v),
            DataAttr::MaxElem(v) => be32(out, 19, *v),
            DataAttr::Netmask(v) => u8_(out, 20, *v),
            DataAttr::BucketSize(v) => u8_(out, 21, *v),
            DataAttr::Resize(v) => u8_(out, 22, *v),
            DataAttr::Size(v) => be32(out, 23, *v),
            DataAttr::Elements(v) => be32(out, 24, *v),
            DataAttr::References(v) => be32(out, 25, *v),
            DataAttr::MemSize(v) => be32(out, 26, *v),
            DataAttr::Ip2(a) => emit_addr(out, 20 | NEST, a),
            DataAttr::Cidr2(v) => u8_(out, 21, *v),
            DataAttr::Comment(s) => wire::emit_nla(out, 26, &string_value(s)),
            DataAttr::Other(raw) => raw.emit(out),
        }
    }
}

fn parse_data(nla: RawNla, entry: bool) -> Option<Vec<DataAttr>> {
    if nla.kind != 7 | NEST {
        return None;
    }
    let inner = wire::parse_nlas(&nla.value).ok()?;
    Some(
        inner
            .into_iter()
            .map(|a| DataAttr::parse(a, entry))
            .collect(),
    )
}

fn emit_data(out: &mut Vec<u8>, attrs: &[DataAttr]) {
    wire::emit_nested(out, 7 | NEST, |out| {
        for a in attrs {
            a.emit(out);
        }
    });
}

impl AdtAttr {
    fn parse(nla: RawNla) -> AdtAttr {
        if nla.kind != 7 | NEST {
            return AdtAttr::Other(nla);
        }
        match parse_data(nla.clone(), true) {
            Some(attrs) => AdtAttr::Data(attrs),
            None => AdtAttr::Other(nla),
        }
    }

    fn emit(&self, out: &mut Vec<u8>) {
        match self {
            AdtAttr::Data(attrs) => emit_data(out, attrs),
            AdtAttr::Other(raw) => raw.emit(out),
        }
    }
}

impl IpsetAttr {
    fn parse(nla: RawNla, cmd: IpsetCmd) -> IpsetAttr {
        let typed = match nla.number() {
            1 => u8_of(&nla, 1).map(IpsetAttr::Protocol),
            2 => string_of(&nla, 2).map(IpsetAttr::SetName),
            3 => string_of(&nla, 3).map(IpsetAttr::TypeName),
            4 => u8_of(&nla, 4).map(IpsetAttr::Revision),
            5 => u8_of(&nla, 5).map(IpsetAttr::Family),
            6 => be32_of(&nla, 6 | NET).map(IpsetAttr::Flags),
            7 => parse_data(nla.clone(), cmd.data_is_entry()).map(IpsetAttr::Data),
            8 if nla.kind == 8 | NEST => wire::parse_nlas(&nla.value)
                .ok()
                .map(|items| IpsetAttr::Adt(items.into_iter().map(AdtAttr::parse).collect())),
            9 => be32_of(&nla, 9 | NET).map(IpsetAttr::LineNo),
            10 => u8_of(&nla, 10).map(IpsetAttr::ProtocolMin),
            11 => be16_of(&nla, 11 | NET).map(IpsetAttr::Index),
            _ => None,
        };
        typed.unwrap_or(IpsetAttr::Other(nla))
    }

    fn emit(&self, out: &mut Vec<u8>) {
        match self {
            IpsetAttr::Protocol(v) => wire::emit_nla(out, 1, &[*v]),
            IpsetAttr::SetName(s) => wire::emit_nla(out, 2, &string_value(s)),
            IpsetAttr::TypeName(s) => wire::emit_nla(out, 3, &string_value(s)),
            IpsetAttr::Revision(v) => wire::emit_nla(out, 4, &[*v]),
            IpsetAttr::Family(v) => wire::emit_nla(out, 5, &[*v]),
            IpsetAttr::Flags(v) => wire::emit_nla(out, 6 | NET, &v.to_be_bytes()),
            IpsetAttr::Data(attrs) => emit_data(out, attrs),
            IpsetAttr::Adt(items) => wire::emit_nested(out, 8 | NEST, |out| {
                for item in items {
                    item.emit(out);
                }
            }),
            IpsetAttr::LineNo(v) => wire::emit_nla(out, 9 | NET, &v.to_be_bytes()),
            IpsetAttr::ProtocolMin(v) => wire::emit_nla(out, 10, &[*v]),
            IpsetAttr::Index(v) => wire::emit_nla(out, 11 | NET, &v.to_be_bytes()),
            IpsetAttr::Other(raw) => raw.emit(out),
        }
    }
}

/// One ipset message: netlink header fields, `nfgenmsg` and attributes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IpsetMessage {
    /// The command.
    pub cmd: IpsetCmd,
    /// `nlmsg_flags`.
    pub flags: u16,
    /// `nlmsg_seq`.
    pub seq: u32,
    /// `nlmsg_pid`.
    pub pid: u32,
    /// `nfgen_family` (the ipset CLI always sends `AF_INET`).
    pub nfgen_family: u8,
    /// `nfgenmsg.version` (`NFNETLINK_V0`).
    pub version: u8,
    /// `nfgenmsg.res_id`, big-endian on the wire.
    pub res_id: u16,
    /// The attributes, in wire order.
    pub attrs: Vec<IpsetAttr>,
}

impl IpsetMessage {
    /// A request for `cmd` with `flags` (`NLM_F_REQUEST` is added) whose
    /// attributes start with `IPSET_ATTR_PROTOCOL`.
    pub fn request(cmd: IpsetCmd, flags: u16, mut attrs: Vec<IpsetAttr>) -> IpsetMessage {
        attrs.insert(0, IpsetAttr::Protocol(IPSET_PROTOCOL));
        IpsetMessage {
            cmd,
            flags: flags | wire::NLM_F_REQUEST,
            seq: 0,
            pid: 0,
            nfgen_family: 2,
            version: 0,
            res_id: 0,
            attrs,
        }
    }

    /// Appends the message to `out`.
    pub fn emit(&self, out: &mut Vec<u8>) {
        let mut payload = Vec::with_capacity(64);
        payload.push(self.nfgen_family);
        payload.push(self.version);
        payload.extend_from_slice(&self.res_id.to_be_bytes());
        for attr in &self.attrs {
            attr.emit(&mut payload);
        }
        let header = NlHeader {
            kind: (NFNL_SUBSYS_IPSET << 8) | u16::from(self.cmd.number()),
            flags: self.flags,
            seq: self.seq,
            pid: self.pid,
        };
        header.emit(out, payload.len());
        out.extend_from_slice(&payload);
    }

    /// The message's bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.emit(&mut out);
        out
    }

    /// The first `IPSET_ATTR_SETNAME`.
    pub fn set_name(&self) -> Option<&str> {
        self.attrs.iter().find_map(|a| match a {
            IpsetAttr::SetName(s) => Some(s.as_str()),
            _ => None,
        })
    }
}

/// A message received on an nfnetlink socket.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Netlink {
    /// An ipset message.
    Ipset(IpsetMessage),
    /// `NLMSG_ERROR`: an acknowledgement (`code` 0) or an error (`-errno`
    /// or `-IPSET_ERR_*`), followed by (part of) the request.
    Error {
        /// The netlink header.
        header: NlHeader,
        /// The error code: 0, or negative.
        code: i32,
        /// The bytes after the code: the original request's header and,
        /// for errors, its payload.
        rest: Vec<u8>,
    },
    /// `NLMSG_DONE`: the end of a dump.
    Done {
        /// The netlink header.
        header: NlHeader,
        /// Its payload (usually an i32 0).
        payload: Vec<u8>,
    },
    /// Any other message type, verbatim.
    Other {
        /// The netlink header.
        header: NlHeader,
        /// Its payload.
        payload: Vec<u8>,
    },
}

impl Netlink {
    /// The sequence number.
    pub fn seq(&self) -> u32 {
        match self {
            Netlink::Ipset(m) => m.seq,
            Netlink::Error { header, .. }
            | Netlink::Done { header, .. }
            | Netlink::Other { header, .. } => header.seq,
        }
    }

    /// Appends the message to `out`.
    pub fn emit(&self, out: &mut Vec<u8>) {
        match self {
            Netlink::Ipset(m) => m.emit(out),
            Netlink::Error { header, code, rest } => {
                header.emit(out, 4 + rest.len());
                out.extend_from_slice(&code.to_ne_bytes());
                out.extend_from_slice(rest);
            }
            Netlink::Done { header, payload } | Netlink::Other { header, payload } => {
                header.emit(out, payload.len());
                out.extend_from_slice(payload);
            }
        }
        out.resize(wire::align(out.len()), 0);
    }
}

/// Parses every message in a receive buffer.
pub fn parse_buffer(buf: &[u8]) -> Result<Vec<Netlink>, DecodeError> {
    wire::split_messages(buf)?
        .into_iter()
        .map(|(header, payload)| parse_message(header, payload))
        .collect()
}

/// Emits messages back to back, as a buffer to send or as received.
pub fn emit_buffer(messages: &[Netlink]) -> Vec<u8> {
    let mut out = Vec::new();
    for m in messages {
        m.emit(&mut out);
    }
    out
}

fn parse_message(header: NlHeader, payload: &[u8]) -> Result<Netlink, DecodeError> {
    match header.kind {
        NLMSG_ERROR => {
            let code = payload
                .get(..4)
                .and_then(wire::fixed::<4>)
                .map(i32::from_ne_bytes)
                .ok_or_else(|| DecodeError::new("NLMSG_ERROR shorter than its error code"))?;
            Ok(Netlink::Error {
                header,
                code,
                rest: payload.get(4..).unwrap_or_default().to_vec(),
            })
        }
        NLMSG_DONE => Ok(Netlink::Done {
            header,
            payload: payload.to_vec(),
        }),
        kind if kind >> 8 == NFNL_SUBSYS_IPSET => {
            let Some(nfgen) = payload.get(..NFGENMSG_LEN) else {
                return Err(DecodeError::new("ipset message shorter than nfgenmsg"));
            };
            let cmd = IpsetCmd::from_number((kind & 0xff) as u8);
            let attrs = wire::parse_nlas(payload.get(NFGENMSG_LEN..).unwrap_or_default())?
                .into_iter()
                .map(|nla| IpsetAttr::parse(nla, cmd))
                .collect();
            Ok(Netlink::Ipset(IpsetMessage {
                cmd,
                flags: header.flags,
                seq: header.seq,
                pid: header.pid,
                nfgen_family: nfgen[0],
                version: nfgen[1],
                res_id: u16::from_be_bytes([nfgen[2], nfgen[3]]),
                attrs,
            }))
        }
        _ => Ok(Netlink::Other {
            header,
            payload: payload.to_vec(),
        }),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // test code

    use super::*;

    /// `ipset add A 10.0.0.1,tcp:80` as ipset 7.17 sends it (strace).
    const CLI_ADD: &[u8] = &[
        76, 0, 0, 0, 9, 6, 5, 2, 0x31, 0x8d, 0x06, 0x6b, 0, 0, 0, 0, // nlmsghdr
        2, 0, 0, 0, // nfgenmsg
        5, 0, 1, 0, 7, 0, 0, 0, // protocol 7
        6, 0, 2, 0, b'A', 0, 0, 0, // setname "A"
        40, 0, 7, 0x80, // data
        12, 0, 1, 0x80, 8, 0, 1, 0x40, 10, 0, 0, 1, // ip 10.0.0.1
        6, 0, 4, 0x40, 0, 80, 0, 0, // port 80
        5, 0, 7, 0, 6, 0, 0, 0, // proto tcp
        8, 0, 9, 0x40, 0, 0, 0, 0, // lineno 0
    ];

    #[test]
    fn the_clis_add_request_parses_to_typed_attributes_and_back() {
        let parsed = parse_buffer(CLI_ADD).unwrap();
        let [Netlink::Ipset(msg)] = parsed.as_slice() else {
            panic!("{parsed:?}")
        };
        assert_eq!(msg.cmd, IpsetCmd::Add);
        assert_eq!(
            msg.attrs,
            vec![
                IpsetAttr::Protocol(7),
                IpsetAttr::SetName("A".into()),
                IpsetAttr::Data(vec![
                    DataAttr::Ip(Addr::request("10.0.0.1".parse().unwrap())),
                    DataAttr::Port(80),
                    DataAttr::Proto(6),
                    DataAttr::LineNo(0),
                ]),
            ]
        );
        assert_eq!(emit_buffer(&parsed), CLI_ADD);
    }

    #[test]
    fn unexpected_flags_or_sizes_are_kept_verbatim() {
        // PORT without NLA_F_NET_BYTEORDER, and a 3-byte PROTO.
        let nla = RawNla {
            kind: 4,
            value: vec![0, 80],
        };
        assert_eq!(DataAttr::parse(nla.clone(), true), DataAttr::Other(nla));
        let nla = RawNla {
            kind: 7,
            value: vec![6, 0, 0],
        };
        assert_eq!(DataAttr::parse(nla.clone(), true), DataAttr::Other(nla));
    }
}
