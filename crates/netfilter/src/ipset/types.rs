//! What sets and members are, independent of the wire: set types with the
//! revisions we create, families, creation specs, members in ipset's
//! text format (`10.0.0.1,tcp:80`), and their conversion to and from
//! [`DataAttr`] lists.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use ipnet::IpNet;

use super::IpsetError;
use super::message::{Addr, DataAttr, IPSET_MAXNAMELEN};

/// `IPSET_FLAG_WITH_COMMENT` in `IPSET_ATTR_CADT_FLAGS`.
pub const IPSET_FLAG_WITH_COMMENT: u32 = 1 << 4;

/// The set types kube-proxy's IPVS mode uses (plus `hash:net`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SetType {
    /// `hash:ip`.
    HashIp,
    /// `hash:net`.
    HashNet,
    /// `hash:ip,port`.
    HashIpPort,
    /// `hash:ip,port,ip`.
    HashIpPortIp,
    /// `hash:ip,port,net`.
    HashIpPortNet,
    /// `bitmap:port`.
    BitmapPort,
}

impl SetType {
    /// Every supported type.
    pub const ALL: [SetType; 6] = [
        SetType::HashIp,
        SetType::HashNet,
        SetType::HashIpPort,
        SetType::HashIpPortIp,
        SetType::HashIpPortNet,
        SetType::BitmapPort,
    ];

    /// The type's name, as `ipset` spells it.
    pub fn name(self) -> &'static str {
        match self {
            SetType::HashIp => "hash:ip",
            SetType::HashNet => "hash:net",
            SetType::HashIpPort => "hash:ip,port",
            SetType::HashIpPortIp => "hash:ip,port,ip",
            SetType::HashIpPortNet => "hash:ip,port,net",
            SetType::BitmapPort => "bitmap:port",
        }
    }

    /// The revision we create sets with: the newest one that both Linux
    /// 5.10+ and userspace `ipset` 7.x (Debian 12's 7.17) know, so that
    /// `ipset list` can show our sets. These are what ipset 7.17 itself
    /// picks on a current kernel.
    pub fn revision(self) -> u8 {
        match self {
            SetType::HashIp => 6,
            SetType::HashNet => 7,
            SetType::HashIpPort => 7,
            SetType::HashIpPortIp => 6,
            SetType::HashIpPortNet => 8,
            SetType::BitmapPort => 3,
        }
    }

    /// The type named `name`, if supported.
    pub fn from_name(name: &str) -> Option<SetType> {
        SetType::ALL.into_iter().find(|t| t.name() == name)
    }

    /// Whether it is a hash type (with family, hashsize and maxelem).
    pub fn is_hash(self) -> bool {
        self != SetType::BitmapPort
    }
}

impl fmt::Display for SetType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The address family of a hash set.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Family {
    /// `inet` (`NFPROTO_IPV4`).
    Inet,
    /// `inet6` (`NFPROTO_IPV6`).
    Inet6,
}

impl Family {
    /// The `NFPROTO_*` number.
    pub fn nfproto(self) -> u8 {
        match self {
            Family::Inet => 2,
            Family::Inet6 => 10,
        }
    }

    /// The family of `addr`.
    pub fn of(addr: &IpAddr) -> Family {
        match addr {
            IpAddr::V4(_) => Family::Inet,
            IpAddr::V6(_) => Family::Inet6,
        }
    }

    /// `inet` or `inet6`.
    pub fn name(self) -> &'static str {
        match self {
            Family::Inet => "inet",
            Family::Inet6 => "inet6",
        }
    }
}

/// How to create a set.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SetSpec {
    /// The name (1 to 31 bytes).
    pub name: String,
    /// The type.
    pub set_type: SetType,
    /// The family (ignored by `bitmap:port`).
    pub family: Family,
    /// Initial hash size (hash types).
    pub hashsize: u32,
    /// Maximal number of members (hash types).
    pub maxelem: u32,
    /// Port range (`bitmap:port`).
    pub port_range: (u16, u16),
    /// Whether members may carry comments (`comment` extension).
    pub comment: bool,
    /// The set-type revision to create ([`SetType::revision`] by
    /// default; [`crate::ipset::sync::create`] steps down on kernels that
    /// lack it).
    pub revision: u8,
}

impl SetSpec {
    /// A spec with kube-proxy's defaults: hashsize 1024, maxelem 65536,
    /// range 0-65535, no comments.
    pub fn new(name: impl Into<String>, set_type: SetType, family: Family) -> SetSpec {
        SetSpec {
            name: name.into(),
            set_type,
            family,
            hashsize: 1024,
            maxelem: 65536,
            port_range: (0, 65535),
            comment: false,
            revision: set_type.revision(),
        }
    }

    /// Checks what the kernel would refuse less clearly.
    pub fn validate(&self) -> Result<(), IpsetError> {
        check_name(&self.name)?;
        let bad = |field: &'static str, reason: String| IpsetError::InvalidSpec {
            set: self.name.clone(),
            field,
            reason,
        };
        if self.set_type.is_hash() {
            if self.hashsize == 0 {
                return Err(bad("hashsize", "must be > 0".into()));
            }
            if self.maxelem == 0 {
                return Err(bad("maxelem", "must be > 0".into()));
            }
        } else if self.port_range.0 > self.port_range.1 {
            return Err(bad(
                "range",
                format!("{}-{} is empty", self.port_range.0, self.port_range.1),
            ));
        }
        Ok(())
    }

    /// The `IPSET_ATTR_DATA` content of a create request.
    pub(crate) fn create_data(&self) -> Vec<DataAttr> {
        let mut data = Vec::new();
        if self.set_type.is_hash() {
            data.push(DataAttr::HashSize(self.hashsize));
            data.push(DataAttr::MaxElem(self.maxelem));
        } else {
            data.push(DataAttr::Port(self.port_range.0));
            data.push(DataAttr::PortTo(self.port_range.1));
        }
        if self.comment {
            data.push(DataAttr::CadtFlags(IPSET_FLAG_WITH_COMMENT));
        }
        data
    }

    /// The `IPSET_ATTR_FAMILY` of a create request: `bitmap:port` has
    /// none (`NFPROTO_UNSPEC`), as the ipset CLI sends it.
    pub(crate) fn nfproto(&self) -> u8 {
        if self.set_type.is_hash() {
            self.family.nfproto()
        } else {
            0
        }
    }
}

/// Checks a set name: 1 to 31 bytes, no NUL.
pub fn check_name(name: &str) -> Result<(), IpsetError> {
    if name.is_empty() || name.len() >= IPSET_MAXNAMELEN || name.contains('\0') {
        return Err(IpsetError::InvalidName {
            name: name.to_owned(),
            reason: format!("must be 1 to {} bytes without NUL", IPSET_MAXNAMELEN - 1),
        });
    }
    Ok(())
}

/// An IP protocol of a `…,port` member.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Proto(pub u8);

impl Proto {
    /// TCP.
    pub const TCP: Proto = Proto(6);
    /// UDP.
    pub const UDP: Proto = Proto(17);
    /// SCTP.
    pub const SCTP: Proto = Proto(132);

    fn name(self) -> Option<&'static str> {
        match self.0 {
            6 => Some("tcp"),
            17 => Some("udp"),
            132 => Some("sctp"),
            136 => Some("udplite"),
            1 => Some("icmp"),
            58 => Some("icmpv6"),
            _ => None,
        }
    }
}

impl fmt::Display for Proto {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(name) => f.write_str(name),
            None => write!(f, "{}", self.0),
        }
    }
}

impl FromStr for Proto {
    type Err = String;
    fn from_str(s: &str) -> Result<Proto, String> {
        match s {
            "tcp" => Ok(Proto::TCP),
            "udp" => Ok(Proto::UDP),
            "sctp" => Ok(Proto::SCTP),
            "udplite" => Ok(Proto(136)),
            _ => s
                .parse::<u8>()
                .map(Proto)
                .map_err(|_| format!("unknown protocol {s:?}")),
        }
    }
}

/// A member of a set, typed by the set's type.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Entry {
    /// `hash:ip`: `10.0.0.1`.
    Ip(IpAddr),
    /// `hash:net`: `10.0.0.0/8` (`10.0.0.1` for a host prefix).
    Net(IpNet),
    /// `hash:ip,port`: `10.0.0.1,tcp:80`.
    IpPort(IpAddr, Proto, u16),
    /// `hash:ip,port,ip`: `10.0.0.1,tcp:80,10.0.0.1`.
    IpPortIp(IpAddr, Proto, u16, IpAddr),
    /// `hash:ip,port,net`: `10.0.0.1,tcp:80,10.0.0.0/8`.
    IpPortNet(IpAddr, Proto, u16, IpNet),
    /// `bitmap:port`: `30080`.
    Port(u16),
}

/// ipset prints a network with a host prefix as a bare address.
fn fmt_net(f: &mut fmt::Formatter<'_>, net: &IpNet) -> fmt::Result {
    if net.prefix_len() == net.max_prefix_len() {
        write!(f, "{}", net.addr())
    } else {
        write!(f, "{net}")
    }
}

impl fmt::Display for Entry {
    /// ipset's own text format, as `ipset list` prints members.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Entry::Ip(ip) => write!(f, "{ip}"),
            Entry::Net(net) => fmt_net(f, net),
            Entry::IpPort(ip, proto, port) => write!(f, "{ip},{proto}:{port}"),
            Entry::IpPortIp(ip, proto, port, ip2) => write!(f, "{ip},{proto}:{port},{ip2}"),
            Entry::IpPortNet(ip, proto, port, net) => {
                write!(f, "{ip},{proto}:{port},")?;
                fmt_net(f, net)
            }
            Entry::Port(port) => write!(f, "{port}"),
        }
    }
}

fn parse_net(s: &str) -> Result<IpNet, String> {
    if s.contains('/') {
        s.parse::<IpNet>()
            .map(|n| n.trunc())
            .map_err(|e| format!("{s:?}: {e}"))
    } else {
        s.parse::<IpAddr>()
            .map(IpNet::from)
            .map_err(|e| format!("{s:?}: {e}"))
    }
}

fn parse_ip(s: &str) -> Result<IpAddr, String> {
    s.parse::<IpAddr>().map_err(|e| format!("{s:?}: {e}"))
}

fn parse_proto_port(s: &str) -> Result<(Proto, u16), String> {
    let (proto, port) = s
        .split_once(':')
        .ok_or_else(|| format!("{s:?} is not proto:port"))?;
    let port = port
        .parse::<u16>()
        .map_err(|e| format!("port {port:?}: {e}"))?;
    Ok((proto.parse()?, port))
}

/// A set member that cannot be read: not of its set's type, or malformed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{reason}")]
pub struct EntryError {
    /// What is wrong, naming the offending part.
    pub reason: String,
}

impl From<String> for EntryError {
    fn from(reason: String) -> EntryError {
        EntryError { reason }
    }
}

impl Entry {
    /// Parses ipset's text format for a member of a `set_type` set.
    pub fn parse(set_type: SetType, s: &str) -> Result<Entry, EntryError> {
        Entry::parse_text(set_type, s).map_err(EntryError::from)
    }

    fn parse_text(set_type: SetType, s: &str) -> Result<Entry, String> {
        let parts: Vec<&str> = s.split(',').collect();
        match (set_type, parts.as_slice()) {
            (SetType::HashIp, [ip]) => Ok(Entry::Ip(parse_ip(ip)?)),
            (SetType::HashNet, [net]) => Ok(Entry::Net(parse_net(net)?)),
            (SetType::HashIpPort, [ip, pp]) => {
                let (proto, port) = parse_proto_port(pp)?;
                Ok(Entry::IpPort(parse_ip(ip)?, proto, port))
            }
            (SetType::HashIpPortIp, [ip, pp, ip2]) => {
                let (proto, port) = parse_proto_port(pp)?;
                Ok(Entry::IpPortIp(parse_ip(ip)?, proto, port, parse_ip(ip2)?))
            }
            (SetType::HashIpPortNet, [ip, pp, net]) => {
                let (proto, port) = parse_proto_port(pp)?;
                Ok(Entry::IpPortNet(
                    parse_ip(ip)?,
                    proto,
                    port,
                    parse_net(net)?,
                ))
            }
            (SetType::BitmapPort, [port]) => port
                .parse::<u16>()
                .map(Entry::Port)
                .map_err(|e| format!("port {port:?}: {e}")),
            _ => Err(format!("{s:?} is not a {set_type} member")),
        }
    }

    /// The set type this member belongs to.
    pub fn set_type(&self) -> SetType {
        match self {
            Entry::Ip(_) => SetType::HashIp,
            Entry::Net(_) => SetType::HashNet,
            Entry::IpPort(..) => SetType::HashIpPort,
            Entry::IpPortIp(..) => SetType::HashIpPortIp,
            Entry::IpPortNet(..) => SetType::HashIpPortNet,
            Entry::Port(_) => SetType::BitmapPort,
        }
    }

    /// The family of the member's addresses (`None` for ports).
    pub fn family(&self) -> Option<Family> {
        match self {
            Entry::Ip(ip)
            | Entry::IpPort(ip, ..)
            | Entry::IpPortIp(ip, ..)
            | Entry::IpPortNet(ip, ..) => Some(Family::of(ip)),
            Entry::Net(net) => Some(Family::of(&net.addr())),
            Entry::Port(_) => None,
        }
    }

    /// Checks that the member fits `spec`: type, family, port range, and
    /// that all its addresses have one family.
    pub fn check_fits(&self, spec: &SetSpec) -> Result<(), IpsetError> {
        let bad = |reason: String| IpsetError::InvalidEntry {
            set: spec.name.clone(),
            entry: self.to_string(),
            reason,
        };
        if self.set_type() != spec.set_type {
            return Err(bad(format!(
                "is a {} member, the set is {}",
                self.set_type(),
                spec.set_type
            )));
        }
        if let Some(family) = self.family()
            && family != spec.family
        {
            return Err(bad(format!(
                "is {}, the set is {}",
                family.name(),
                spec.family.name()
            )));
        }
        let second = match self {
            Entry::IpPortIp(_, _, _, ip2) => Some(Family::of(ip2)),
            Entry::IpPortNet(_, _, _, net) => Some(Family::of(&net.addr())),
            _ => None,
        };
        if let Some(second) = second
            && second != spec.family
        {
            return Err(bad("mixes address families".into()));
        }
        if let Entry::Port(port) = self
            && (*port < spec.port_range.0 || *port > spec.port_range.1)
        {
            return Err(bad(format!(
                "port is outside the set's range {}-{}",
                spec.port_range.0, spec.port_range.1
            )));
        }
        Ok(())
    }

    /// The `IPSET_ATTR_DATA` content that adds or deletes this member.
    pub(crate) fn data(&self) -> Vec<DataAttr> {
        let a = Addr::request;
        match *self {
            Entry::Ip(ip) => vec![DataAttr::Ip(a(ip))],
            Entry::Net(net) => vec![
                DataAttr::Ip(a(net.addr())),
                DataAttr::Cidr(net.prefix_len()),
            ],
            Entry::IpPort(ip, proto, port) => vec![
                DataAttr::Ip(a(ip)),
                DataAttr::Port(port),
                DataAttr::Proto(proto.0),
            ],
            Entry::IpPortIp(ip, proto, port, ip2) => vec![
                DataAttr::Ip(a(ip)),
                DataAttr::Port(port),
                DataAttr::Proto(proto.0),
                DataAttr::Ip2(a(ip2)),
            ],
            Entry::IpPortNet(ip, proto, port, net) => vec![
                DataAttr::Ip(a(ip)),
                DataAttr::Port(port),
                DataAttr::Proto(proto.0),
                DataAttr::Ip2(a(net.addr())),
                DataAttr::Cidr2(net.prefix_len()),
            ],
            Entry::Port(port) => vec![DataAttr::Port(port)],
        }
    }

    /// Reads a member of a `set_type` set from a list reply's attributes.
    pub fn from_data(set_type: SetType, data: &[DataAttr]) -> Result<Entry, EntryError> {
        Entry::from_attrs(set_type, data).map_err(EntryError::from)
    }

    fn from_attrs(set_type: SetType, data: &[DataAttr]) -> Result<Entry, String> {
        let mut ip = None;
        let mut ip2 = None;
        let mut cidr = None;
        let mut cidr2 = None;
        let mut port = None;
        let mut proto = None;
        for attr in data {
            match attr {
                DataAttr::Ip(a) => ip = Some(a.ip),
                DataAttr::Ip2(a) => ip2 = Some(a.ip),
                DataAttr::Cidr(c) => cidr = Some(*c),
                DataAttr::Cidr2(c) => cidr2 = Some(*c),
                DataAttr::Port(p) => port = Some(*p),
                DataAttr::Proto(p) => proto = Some(Proto(*p)),
                _ => {}
            }
        }
        let need = |what: &str| format!("{set_type} member without {what}");
        let net = |addr: IpAddr, len: Option<u8>| {
            let max = if addr.is_ipv4() { 32 } else { 128 };
            IpNet::new(addr, len.unwrap_or(max)).map_err(|e| format!("{addr}/{len:?}: {e}"))
        };
        match set_type {
            SetType::HashIp => Ok(Entry::Ip(ip.ok_or_else(|| need("IP"))?)),
            SetType::HashNet => Ok(Entry::Net(net(ip.ok_or_else(|| need("IP"))?, cidr)?)),
            SetType::HashIpPort => Ok(Entry::IpPort(
                ip.ok_or_else(|| need("IP"))?,
                proto.ok_or_else(|| need("PROTO"))?,
                port.ok_or_else(|| need("PORT"))?,
            )),
            SetType::HashIpPortIp => Ok(Entry::IpPortIp(
                ip.ok_or_else(|| need("IP"))?,
                proto.ok_or_else(|| need("PROTO"))?,
                port.ok_or_else(|| need("PORT"))?,
                ip2.ok_or_else(|| need("IP2"))?,
            )),
            SetType::HashIpPortNet => Ok(Entry::IpPortNet(
                ip.ok_or_else(|| need("IP"))?,
                proto.ok_or_else(|| need("PROTO"))?,
                port.ok_or_else(|| need("PORT"))?,
                net(ip2.ok_or_else(|| need("IP2"))?, cidr2)?,
            )),
            SetType::BitmapPort => Ok(Entry::Port(port.ok_or_else(|| need("PORT"))?)),
        }
    }
}

/// A listed member: the entry and its comment, if any.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Member {
    /// The member.
    pub entry: Entry,
    /// Its comment (`comment` extension).
    pub comment: Option<String>,
}

/// A set as the kernel lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListedSet {
    /// The name.
    pub name: String,
    /// The type name as the kernel reports it.
    pub type_name: String,
    /// The type, if it is one we know.
    pub set_type: Option<SetType>,
    /// The revision.
    pub revision: u8,
    /// `NFPROTO_*` family.
    pub nfproto: u8,
    /// The header attributes (hashsize, maxelem, references, …).
    pub header: Vec<DataAttr>,
    /// The members (only when the type is known).
    pub members: Vec<Member>,
}

impl ListedSet {
    fn header_u32(&self, pick: fn(&DataAttr) -> Option<u32>) -> Option<u32> {
        self.header.iter().find_map(pick)
    }

    /// `maxelem` of a hash set.
    pub fn maxelem(&self) -> Option<u32> {
        self.header_u32(|a| match a {
            DataAttr::MaxElem(v) => Some(*v),
            _ => None,
        })
    }

    /// Number of references (iptables rules using the set).
    pub fn references(&self) -> Option<u32> {
        self.header_u32(|a| match a {
            DataAttr::References(v) => Some(*v),
            _ => None,
        })
    }

    /// The family as [`Family`], for hash sets.
    pub fn family(&self) -> Option<Family> {
        match self.nfproto {
            2 => Some(Family::Inet),
            10 => Some(Family::Inet6),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // test code

    use super::*;

    #[test]
    fn members_print_and_parse_like_ipset() {
        for (t, s) in [
            (SetType::HashIpPort, "10.0.0.1,tcp:80"),
            (SetType::HashIpPort, "fd00::1,sctp:30000"),
            (SetType::HashIpPortIp, "10.244.1.2,udp:53,10.244.1.2"),
            (SetType::HashIpPortNet, "1.2.3.4,tcp:80,10.0.0.0/8"),
            (SetType::HashIpPortNet, "1.2.3.4,tcp:81,10.0.0.1"),
            (SetType::HashIp, "10.96.0.1"),
            (SetType::HashNet, "10.0.0.0/16"),
            (SetType::BitmapPort, "30080"),
        ] {
            let e = Entry::parse(t, s).unwrap();
            assert_eq!(e.to_string(), s);
            assert_eq!(Entry::from_data(t, &e.data()).unwrap(), e);
        }
        // A /32 written out is the same member as the bare address.
        assert_eq!(
            Entry::parse(SetType::HashIpPortNet, "1.2.3.4,tcp:81,10.0.0.1/32").unwrap(),
            Entry::parse(SetType::HashIpPortNet, "1.2.3.4,tcp:81,10.0.0.1").unwrap()
        );
    }

    #[test]
    fn bad_members_are_errors_naming_the_problem() {
        assert!(Entry::parse(SetType::HashIpPort, "10.0.0.1").is_err());
        assert!(Entry::parse(SetType::HashIpPort, "10.0.0.1,tcp:99999").is_err());
        assert!(Entry::parse(SetType::HashIpPort, "10.0.0.1,foo:80").is_err());
        let spec = SetSpec::new("KUBE-CLUSTER-IP", SetType::HashIpPort, Family::Inet);
        let err = Entry::parse(SetType::HashIpPort, "fd00::1,tcp:80")
            .unwrap()
            .check_fits(&spec)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("KUBE-CLUSTER-IP") && err.contains("inet6"),
            "{err}"
        );
        let err = Entry::Port(1).check_fits(&spec).unwrap_err().to_string();
        assert!(err.contains("bitmap:port"), "{err}");
    }

    #[test]
    fn names_longer_than_31_bytes_are_refused() {
        assert!(check_name(&"X".repeat(31)).is_ok());
        assert!(check_name(&"X".repeat(32)).is_err());
        assert!(check_name("").is_err());
    }
}
