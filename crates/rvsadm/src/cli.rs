//! ipvsadm's command line: argv → a typed [`Command`].
//!
//! This module owns what ipvsadm 1.31 accepts and how it refuses: the
//! option table (scanned by [`crate::popt`]), the first option being the
//! command, per-option value parsing (`host[:port]` with names from
//! [`Names`], netmasks, timeouts, weights, scheduler flags, tunnel
//! options), the command/option compatibility table with its exact
//! messages, and the checks ipvsadm makes after parsing. Parsing happens
//! in the same order as ipvsadm's, so the first error reported is the same
//! one. Failures carry ipvsadm's exit codes ([`ParseError`]).
//!
//! `--target unix:PATH` is an rvsadm extension accepted anywhere; it does
//! not count as an ipvsadm option.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use rvs_model::admin::Op;
use rvs_model::{
    Daemon, DaemonState, Destination, ForwardMethod, Netmask, Protocol, Scheduler, Service,
    ServiceFlags, ServiceKey, Timeouts, Tunnel, TunnelFlags, TunnelType,
};

use crate::inet;
use crate::names::{Names, proto_name};
use crate::popt::{Arg, Scanner, Spec};

/// Output format bits (ipvsadm's `FMT_*`).
pub(crate) mod fmt {
    pub(crate) const NUMERIC: u32 = 0x0001;
    pub(crate) const RULE: u32 = 0x0002;
    pub(crate) const STATS: u32 = 0x0004;
    pub(crate) const RATE: u32 = 0x0008;
    pub(crate) const THRESHOLDS: u32 = 0x0010;
    pub(crate) const PERSISTENTCONN: u32 = 0x0020;
    pub(crate) const NOSORT: u32 = 0x0040;
    pub(crate) const EXACT: u32 = 0x0080;
    pub(crate) const TUN_INFO: u32 = 0x0100;
}

/// What to list.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum List {
    All,
    Service(ServiceKey),
    Connections,
    Timeout,
    Daemon,
}

/// A change to apply.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Change {
    /// A change the model expresses.
    Op(Op),
    /// `-A`/`-E` naming a scheduler no kernel has: the model cannot carry
    /// the name, so execution reproduces the kernel's refusal.
    UnknownScheduler { edit: bool, key: ServiceKey },
}

/// A parsed command line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Command {
    Help,
    Version,
    Restore,
    /// `-S` (format has [`fmt::RULE`]) or `-L` variants.
    List {
        what: List,
        format: u32,
    },
    Change(Change),
}

/// A parsed invocation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Invocation {
    pub(crate) command: Command,
    /// `--target` (rvsadm extension).
    pub(crate) target: Option<String>,
}

/// Why a command line was refused, with ipvsadm's reaction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum ParseError {
    /// "Try `PROG -h' or 'PROG --help' for more information." (exit 255).
    TryHelp,
    /// `fail(2, ...)`: the message, exit 2.
    Fail(String),
    /// A popt error: "WORD: TEXT", the command fails (255) but a restore
    /// continues.
    Popt(String),
}

impl ParseError {
    /// The text for stderr (with its newline).
    pub(crate) fn stderr_text(&self, program: &str) -> String {
        match self {
            ParseError::TryHelp => {
                format!("Try `{program} -h' or '{program} --help' for more information.\n")
            }
            ParseError::Fail(msg) => format!("{msg}\n"),
            ParseError::Popt(msg) => format!("{msg}\n"),
        }
    }

    /// The exit code.
    pub(crate) fn exit_code(&self) -> u8 {
        match self {
            ParseError::Fail(_) => 2,
            ParseError::TryHelp | ParseError::Popt(_) => 255,
        }
    }
}

fn fail(msg: impl Into<String>) -> ParseError {
    ParseError::Fail(msg.into())
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Id {
    Add,
    Edit,
    Del,
    Clear,
    ListUpper,
    ListLower,
    Zero,
    AddServer,
    EditServer,
    DelServer,
    Set,
    Help,
    Version,
    Restore,
    Save,
    StartDaemon,
    StopDaemon,
    Tcp,
    Udp,
    Sctp,
    Fwmark,
    Scheduler,
    Persistent,
    Netmask,
    RealServer,
    Masq,
    Ipip,
    Gate,
    Weight,
    UThreshold,
    LThreshold,
    Numeric,
    Connection,
    McastIfn,
    Syncid,
    Timeout,
    Daemon,
    Stats,
    Rate,
    Thresholds,
    PersistentConn,
    NoSort,
    Sort,
    Exact,
    Ipv6,
    Ops,
    Pe,
    SchedFlags,
    McastGroup,
    McastPort,
    McastTtl,
    SyncMaxlen,
    TunInfo,
    TunType,
    TunPort,
    TunNocsum,
    TunCsum,
    TunRemcsum,
    Target,
}

const fn spec(long: &'static str, short: Option<char>, arg: Arg, id: Id) -> Spec<Id> {
    Spec {
        long,
        short,
        arg,
        id,
    }
}

const TABLE: &[Spec<Id>] = &[
    spec("add-service", Some('A'), Arg::None, Id::Add),
    spec("edit-service", Some('E'), Arg::None, Id::Edit),
    spec("delete-service", Some('D'), Arg::None, Id::Del),
    spec("clear", Some('C'), Arg::None, Id::Clear),
    spec("list", Some('L'), Arg::None, Id::ListUpper),
    spec("list", Some('l'), Arg::None, Id::ListLower),
    spec("zero", Some('Z'), Arg::None, Id::Zero),
    spec("add-server", Some('a'), Arg::None, Id::AddServer),
    spec("edit-server", Some('e'), Arg::None, Id::EditServer),
    spec("delete-server", Some('d'), Arg::None, Id::DelServer),
    spec("set", None, Arg::None, Id::Set),
    spec("help", Some('h'), Arg::None, Id::Help),
    spec("version", Some('v'), Arg::None, Id::Version),
    spec("restore", Some('R'), Arg::None, Id::Restore),
    spec("save", Some('S'), Arg::None, Id::Save),
    spec("start-daemon", None, Arg::Required, Id::StartDaemon),
    spec("stop-daemon", None, Arg::Required, Id::StopDaemon),
    spec("tcp-service", Some('t'), Arg::Required, Id::Tcp),
    spec("udp-service", Some('u'), Arg::Required, Id::Udp),
    spec("sctp-service", None, Arg::Required, Id::Sctp),
    spec("fwmark-service", Some('f'), Arg::Required, Id::Fwmark),
    spec("scheduler", Some('s'), Arg::Required, Id::Scheduler),
    spec("persistent", Some('p'), Arg::Optional, Id::Persistent),
    spec("netmask", Some('M'), Arg::Required, Id::Netmask),
    spec("real-server", Some('r'), Arg::Required, Id::RealServer),
    spec("masquerading", Some('m'), Arg::None, Id::Masq),
    spec("ipip", Some('i'), Arg::None, Id::Ipip),
    spec("gatewaying", Some('g'), Arg::None, Id::Gate),
    spec("weight", Some('w'), Arg::Required, Id::Weight),
    spec("u-threshold", Some('x'), Arg::Required, Id::UThreshold),
    spec("l-threshold", Some('y'), Arg::Required, Id::LThreshold),
    spec("numeric", Some('n'), Arg::None, Id::Numeric),
    spec("connection", Some('c'), Arg::None, Id::Connection),
    spec("mcast-interface", None, Arg::Required, Id::McastIfn),
    spec("syncid", None, Arg::Required, Id::Syncid),
    spec("timeout", None, Arg::None, Id::Timeout),
    spec("daemon", None, Arg::None, Id::Daemon),
    spec("stats", None, Arg::None, Id::Stats),
    spec("rate", None, Arg::None, Id::Rate),
    spec("thresholds", None, Arg::None, Id::Thresholds),
    spec("persistent-conn", None, Arg::None, Id::PersistentConn),
    spec("nosort", None, Arg::None, Id::NoSort),
    spec("sort", None, Arg::None, Id::Sort),
    spec("exact", Some('X'), Arg::None, Id::Exact),
    spec("ipv6", Some('6'), Arg::None, Id::Ipv6),
    spec("ops", Some('o'), Arg::None, Id::Ops),
    spec("pe", None, Arg::Required, Id::Pe),
    spec("sched-flags", Some('b'), Arg::Required, Id::SchedFlags),
    spec("mcast-group", None, Arg::Required, Id::McastGroup),
    spec("mcast-port", None, Arg::Required, Id::McastPort),
    spec("mcast-ttl", None, Arg::Required, Id::McastTtl),
    spec("sync-maxlen", None, Arg::Required, Id::SyncMaxlen),
    spec("tun-info", None, Arg::None, Id::TunInfo),
    spec("tun-type", None, Arg::Required, Id::TunType),
    spec("tun-port", None, Arg::Required, Id::TunPort),
    spec("tun-nocsum", None, Arg::None, Id::TunNocsum),
    spec("tun-csum", None, Arg::None, Id::TunCsum),
    spec("tun-remcsum", None, Arg::None, Id::TunRemcsum),
    spec("target", None, Arg::Required, Id::Target),
];

/// ipvsadm's commands, in its table order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Cmd {
    Add,
    Edit,
    Del,
    Flush,
    List,
    AddDest,
    DelDest,
    EditDest,
    Timeout,
    StartDaemon,
    StopDaemon,
    Restore,
    Save,
    Zero,
}

const CMD_NAMES: [&str; 14] = [
    "add-service",
    "edit-service",
    "delete-service",
    "flush",
    "list",
    "add-server",
    "delete-server",
    "edit-server",
    "set",
    "start-daemon",
    "stop-daemon",
    "restore",
    "save",
    "zero",
];

// Option bit indexes (ipvsadm's OPTC_*).
const O_NUMERIC: usize = 0;
const O_CONNECTION: usize = 1;
const O_SERVICE: usize = 2;
const O_SCHEDULER: usize = 3;
const O_PERSISTENT: usize = 4;
const O_NETMASK: usize = 5;
const O_SERVER: usize = 6;
const O_FORWARD: usize = 7;
const O_WEIGHT: usize = 8;
const O_UTHRESHOLD: usize = 9;
const O_LTHRESHOLD: usize = 10;
const O_MCAST: usize = 11;
const O_TIMEOUT: usize = 12;
const O_DAEMON: usize = 13;
const O_STATS: usize = 14;
const O_RATE: usize = 15;
const O_THRESHOLDS: usize = 16;
const O_PERSISTENTCONN: usize = 17;
const O_NOSORT: usize = 18;
const O_SYNCID: usize = 19;
const O_EXACT: usize = 20;
const O_ONEPACKET: usize = 21;
const O_PE: usize = 22;
const O_SCHED_FLAGS: usize = 23;
const O_MCAST_GROUP: usize = 24;
const O_MCAST_PORT: usize = 25;
const O_MCAST_TTL: usize = 26;
const O_SYNC_MAXLEN: usize = 27;
const O_TUN_INFO: usize = 28;
const O_TUN_TYPE: usize = 29;
const O_TUN_PORT: usize = 30;
const O_TUN_NOCSUM: usize = 31;
const O_TUN_CSUM: usize = 32;
const O_TUN_REMCSUM: usize = 33;
const NUMBER_OF_OPT: usize = 34;

const OPT_NAMES: [&str; NUMBER_OF_OPT] = [
    "numeric",
    "connection",
    "service-address",
    "scheduler",
    "persistent",
    "netmask",
    "real-server",
    "forwarding-method",
    "weight",
    "u-threshold",
    "l-threshold",
    "mcast-interface",
    "timeout",
    "daemon",
    "stats",
    "rate",
    "thresholds",
    "persistent-conn",
    "nosort",
    "syncid",
    "exact",
    "ops",
    "pe",
    "sched-flags",
    "mcast-group",
    "mcast-port",
    "mcast-ttl",
    "sync-maxlen",
    "tun-info",
    "tun-type",
    "tun-port",
    "tun-nocsum",
    "tun-csum",
    "tun-remcsum",
];

/// Which options each command takes: `+` compulsory, `x` illegal, `1`
/// at most one of the `1`s, ` ` optional (ipvsadm 1.31's table).
const COMMANDS_V_OPTIONS: [&[u8; NUMBER_OF_OPT]; 14] = [
    b"xx+   xxxxxxxxxxxxxxx   xxxxxxxxxx",
    b"xx+   xxxxxxxxxxxxxxx   xxxxxxxxxx",
    b"xx+xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",
    b"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",
    b" 11xxxxxxxxx11       xxxxxxx xxxxx",
    b"xx+xxx+    xxxxxxxxxxxxxxxxxx     ",
    b"xx+xxx+xxxxxxxxxxxxxxxxxxxxxxxxxxx",
    b"xx+xxx+    xxxxxxxxxxxxxxxxxx     ",
    b"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",
    b"xxxxxxxxxxx xxxxxxx xxxx    xxxxxx",
    b"xxxxxxxxxxxxxxxxxxx xxxxxxxxxxxxxx",
    b"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",
    b" xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",
    b"xx xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",
];

const TUN_NAMES: [&str; 3] = ["ipip", "gue", "gre"];
/// Tunnel options (tun-port, nocsum, csum, remcsum) per tunnel type.
const TUN_OPTS: [usize; 4] = [O_TUN_PORT, O_TUN_NOCSUM, O_TUN_CSUM, O_TUN_REMCSUM];
const TUNNEL_V_OPTIONS: [&[u8; 4]; 3] = [b"xxxx", b"+111", b"x11x"];

const AF_INET: u16 = 2;
const AF_INET6: u16 = 10;
const IPPROTO_TCP: u16 = 6;
const IPPROTO_UDP: u16 = 17;
const IPPROTO_SCTP: u16 = 132;
const MAX_TIMEOUT: i64 = 86400 * 31;
/// `IPVS_SVC_PERSISTENT_TIMEOUT`: `-p` without a value.
const DEFAULT_PERSISTENCE: u32 = 360;
const DEF_SCHED: &str = "wlc";
const DEF_MCAST_IFN: &str = "eth0";
const SCHEDNAME_MAXLEN: usize = 16;
const PENAME_MAXLEN: usize = 16;
const IFNAME_MAXLEN: usize = 16;

const CONN_F_MASQ: u32 = 0;
const CONN_F_TUNNEL: u32 = 2;
const CONN_F_DROUTE: u32 = 3;

/// The C program's `ipvs_service_t` while parsing.
#[derive(Clone, Debug)]
struct Svc {
    af: u16,
    protocol: u16,
    addr: IpAddr,
    port: u16,
    fwmark: u32,
    sched: String,
    flags: u32,
    timeout: u32,
    netmask: u32,
    pe: String,
}

#[derive(Clone, Debug)]
struct Dest {
    af: u16,
    addr: IpAddr,
    port: u16,
    conn_flags: u32,
    weight: i32,
    u_threshold: u32,
    l_threshold: u32,
    tun_type: u8,
    tun_port: u16,
    tun_flags: u16,
}

#[derive(Clone, Debug)]
struct DaemonOpts {
    state: DaemonState,
    ifn: String,
    syncid: u32,
    maxlen: u16,
    group: Option<IpAddr>,
    port: u16,
    ttl: u8,
}

#[derive(Debug)]
struct Entry {
    cmd: Option<Cmd>,
    svc: Svc,
    dest: Dest,
    daemon: DaemonOpts,
    timeouts: Timeouts,
    options: u64,
    format: u32,
    target: Option<String>,
}

fn set_option(options: &mut u64, optc: usize) -> Result<(), ParseError> {
    let bit = 1u64 << optc;
    if *options & bit != 0 {
        return Err(fail(format!(
            "multiple '{}' options specified",
            OPT_NAMES[optc]
        )));
    }
    *options |= bit;
    Ok(())
}

/// C `strtol` into `[min, max]` with nothing left over (ipvsadm's
/// `string_to_number`).
fn string_to_number(s: &str, min: i64, max: i64) -> Option<i64> {
    let trimmed = s.trim_start_matches([' ', '\t', '\n', '\r', '\x0b', '\x0c']);
    let (neg, digits) = match trimmed.as_bytes().first() {
        Some(b'-') => (true, &trimmed[1..]),
        Some(b'+') => (false, &trimmed[1..]),
        _ => (false, trimmed),
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let value: i64 = digits.parse().ok()?;
    let value = if neg { -value } else { value };
    (min..=max).contains(&value).then_some(value)
}

fn parse_timeout(buf: Option<&str>, min: i64, max: i64) -> Result<u32, ParseError> {
    let Some(buf) = buf else {
        return Ok(DEFAULT_PERSISTENCE);
    };
    string_to_number(buf, min, max)
        .and_then(|v| u32::try_from(v).ok())
        .ok_or_else(|| fail(format!("invalid timeout value `{buf}' specified")))
}

fn parse_fwmark(buf: &str) -> Result<u32, ParseError> {
    string_to_number(buf, 1, i64::from(u32::MAX))
        .and_then(|v| u32::try_from(v).ok())
        .ok_or_else(|| fail(format!("invalid fwmark value `{buf}' specified")))
}

/// `parse_service`: `host[:port]`, `[v6]:port` or a bare IPv6 address.
/// Returns (has address, has port) and updates `svc` as the C code does.
fn parse_service(buf: &str, svc: &mut Svc, names: &Names) -> (bool, bool) {
    if buf.bytes().all(|b| b.is_ascii_digit()) {
        return (false, false);
    }
    let mut host = buf;
    let mut port: Option<&str> = None;
    let mut bracketed = false;
    if let Some(inner) = buf.strip_prefix('[') {
        let Some(close) = inner.find(']') else {
            return (false, false);
        };
        let after = &inner[close + 1..];
        let Some(p) = after.strip_prefix(':') else {
            return (false, false);
        };
        host = &inner[..close];
        port = Some(p);
        bracketed = true;
    }
    if let Some(v6) = inet::inet_pton6(host) {
        svc.addr = IpAddr::V6(v6);
        svc.af = AF_INET6;
        svc.netmask = 128;
    } else {
        if bracketed {
            // The C code looks for the port separator inside the brackets
            // here and finds none: the port is ignored.
            port = None;
        } else if let Some(colon) = host.rfind(':') {
            port = Some(&host[colon + 1..]);
            host = &host[..colon];
        }
        let addr = inet::inet_aton(host).or_else(|| names.ipv4_of(host));
        match addr {
            Some(v4) => {
                svc.addr = IpAddr::V4(v4);
                svc.af = AF_INET;
            }
            None => return (false, false),
        }
    }
    let Some(port) = port else {
        return (true, false);
    };
    if let Some(n) = string_to_number(port, 0, 65535).and_then(|n| u16::try_from(n).ok()) {
        svc.port = n;
    } else if let Some(n) = proto_name(svc.protocol).and_then(|p| names.port_of(port, p)) {
        svc.port = n;
    } else {
        return (false, false);
    }
    (true, true)
}

fn parse_netmask(buf: &str, names: &Names) -> Option<u32> {
    inet::inet_aton(buf)
        .or_else(|| names.ipv4_of(buf))
        .map(u32::from)
}

/// C `atoi`.
fn atoi(s: &str) -> i64 {
    let t = s.trim_start_matches([' ', '\t', '\n', '\r', '\x0b', '\x0c']);
    let (neg, rest) = match t.as_bytes().first() {
        Some(b'-') => (true, &t[1..]),
        Some(b'+') => (false, &t[1..]),
        _ => (false, t),
    };
    let digits: String = rest
        .chars()
        .take_while(char::is_ascii_digit)
        .take(18)
        .collect();
    let v: i64 = digits.parse().unwrap_or(0);
    if neg { -v } else { v }
}

fn truncate(s: &str, max_bytes: usize) -> String {
    let mut end = s.len().min(max_bytes);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_owned()
}

fn parse_sched_flags(sched: &str, arg: &str) -> Result<u32, ParseError> {
    let sched = if sched.is_empty() { DEF_SCHED } else { sched };
    let mut flags = 0;
    // strtok: empty pieces are skipped. (ipvsadm crashes when there is no
    // piece at all, e.g. `-b ,`; rvsadm sets no flag instead.)
    for flag in arg.split(',').filter(|f| !f.is_empty()) {
        let (bit, needs) = match flag {
            "flag-1" => (ServiceFlags::SCHED1, None),
            "flag-2" => (ServiceFlags::SCHED2, None),
            "flag-3" => (ServiceFlags::SCHED3, None),
            "sh-fallback" => (ServiceFlags::SCHED1, Some("sh")),
            "sh-port" => (ServiceFlags::SCHED2, Some("sh")),
            "mh-fallback" => (ServiceFlags::SCHED1, Some("mh")),
            "mh-port" => (ServiceFlags::SCHED2, Some("mh")),
            _ => return Err(fail(format!("invalid scheduler flag `{flag}'"))),
        };
        flags |= bit;
        if needs.is_some_and(|n| n != sched) {
            return Err(fail(format!("incompatible scheduler flag `{flag}'")));
        }
    }
    Ok(flags)
}

impl Entry {
    fn new() -> Entry {
        Entry {
            cmd: None,
            svc: Svc {
                af: 0,
                protocol: 0,
                addr: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
                port: 0,
                fwmark: 0,
                sched: String::new(),
                flags: 0,
                timeout: 0,
                netmask: u32::MAX,
                pe: String::new(),
            },
            dest: Dest {
                af: 0,
                addr: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
                port: 0,
                conn_flags: CONN_F_DROUTE,
                weight: 1,
                u_threshold: 0,
                l_threshold: 0,
                tun_type: 0,
                tun_port: 0,
                tun_flags: 0,
            },
            daemon: DaemonOpts {
                state: DaemonState::Master,
                ifn: String::new(),
                syncid: 0,
                maxlen: 0,
                group: None,
                port: 0,
                ttl: 0,
            },
            timeouts: Timeouts::default(),
            options: 0,
            format: 0,
            target: None,
        }
    }

    fn has(&self, optc: usize) -> bool {
        self.options & (1u64 << optc) != 0
    }

    fn option(
        &mut self,
        id: Id,
        arg: Option<String>,
        names: &Names,
        bad: &str,
    ) -> Result<(), ParseError> {
        let arg_str = arg.as_deref().unwrap_or_default();
        match id {
            Id::Tcp | Id::Udp | Id::Sctp => {
                set_option(&mut self.options, O_SERVICE)?;
                self.svc.protocol = match id {
                    Id::Tcp => IPPROTO_TCP,
                    Id::Udp => IPPROTO_UDP,
                    _ => IPPROTO_SCTP,
                };
                let (addr, _) = parse_service(arg_str, &mut self.svc, names);
                if !addr {
                    return Err(fail("illegal virtual server address[:port] specified"));
                }
            }
            Id::Fwmark => {
                set_option(&mut self.options, O_SERVICE)?;
                self.svc.af = AF_INET;
                self.svc.protocol = IPPROTO_TCP;
                self.svc.fwmark = parse_fwmark(arg_str)?;
            }
            Id::Scheduler => {
                set_option(&mut self.options, O_SCHEDULER)?;
                self.svc.sched = truncate(arg_str, SCHEDNAME_MAXLEN - 1);
            }
            Id::Persistent => {
                set_option(&mut self.options, O_PERSISTENT)?;
                self.svc.flags |= ServiceFlags::PERSISTENT;
                self.svc.timeout = parse_timeout(arg.as_deref(), 1, MAX_TIMEOUT)?;
            }
            Id::Netmask => {
                set_option(&mut self.options, O_NETMASK)?;
                if self.svc.af != AF_INET6 {
                    self.svc.netmask = parse_netmask(arg_str, names)
                        .ok_or_else(|| fail("illegal virtual server persistent mask specified"))?;
                } else {
                    let v = atoi(arg_str);
                    if !(1..=128).contains(&v) {
                        return Err(fail("illegal ipv6 netmask specified"));
                    }
                    self.svc.netmask = u32::try_from(v).unwrap_or(128);
                }
            }
            Id::RealServer => {
                set_option(&mut self.options, O_SERVER)?;
                let mut t = self.svc.clone();
                let (addr, port) = parse_service(arg_str, &mut t, names);
                self.dest.af = t.af;
                self.dest.addr = t.addr;
                self.dest.port = t.port;
                if !addr {
                    return Err(fail("illegal real server address[:port] specified"));
                }
                if !port {
                    self.dest.port = self.svc.port;
                }
            }
            Id::Ipip | Id::Gate | Id::Masq => {
                set_option(&mut self.options, O_FORWARD)?;
                self.dest.conn_flags = match id {
                    Id::Ipip => CONN_F_TUNNEL,
                    Id::Gate => CONN_F_DROUTE,
                    _ => CONN_F_MASQ,
                };
            }
            Id::Weight => {
                set_option(&mut self.options, O_WEIGHT)?;
                self.dest.weight = string_to_number(arg_str, 0, i64::from(i32::MAX))
                    .and_then(|v| i32::try_from(v).ok())
                    .ok_or_else(|| fail("illegal weight specified"))?;
            }
            Id::UThreshold => {
                set_option(&mut self.options, O_UTHRESHOLD)?;
                self.dest.u_threshold = string_to_number(arg_str, 0, i64::from(i32::MAX))
                    .and_then(|v| u32::try_from(v).ok())
                    .ok_or_else(|| fail("illegal u_threshold specified"))?;
            }
            Id::LThreshold => {
                set_option(&mut self.options, O_LTHRESHOLD)?;
                self.dest.l_threshold = string_to_number(arg_str, 0, i64::from(i32::MAX))
                    .and_then(|v| u32::try_from(v).ok())
                    .ok_or_else(|| fail("illegal l_threshold specified"))?;
            }
            Id::Connection => set_option(&mut self.options, O_CONNECTION)?,
            Id::Numeric => {
                set_option(&mut self.options, O_NUMERIC)?;
                self.format |= fmt::NUMERIC;
            }
            Id::McastIfn => {
                set_option(&mut self.options, O_MCAST)?;
                self.daemon.ifn = truncate(arg_str, IFNAME_MAXLEN - 1);
            }
            Id::Syncid => {
                set_option(&mut self.options, O_SYNCID)?;
                self.daemon.syncid = string_to_number(arg_str, 0, 255)
                    .and_then(|v| u32::try_from(v).ok())
                    .ok_or_else(|| fail("illegal syncid specified"))?;
            }
            Id::Timeout => set_option(&mut self.options, O_TIMEOUT)?,
            Id::Daemon => set_option(&mut self.options, O_DAEMON)?,
            Id::Stats => self.format_option(O_STATS, fmt::STATS)?,
            Id::Rate => self.format_option(O_RATE, fmt::RATE)?,
            Id::Thresholds => self.format_option(O_THRESHOLDS, fmt::THRESHOLDS)?,
            Id::PersistentConn => self.format_option(O_PERSISTENTCONN, fmt::PERSISTENTCONN)?,
            Id::NoSort => self.format_option(O_NOSORT, fmt::NOSORT)?,
            Id::Sort | Id::Target => {}
            Id::Exact => self.format_option(O_EXACT, fmt::EXACT)?,
            Id::Ipv6 => {
                if self.svc.fwmark != 0 {
                    self.svc.af = AF_INET6;
                    self.svc.netmask = 128;
                } else {
                    return Err(fail("-6 used before -f\n"));
                }
            }
            Id::Ops => {
                set_option(&mut self.options, O_ONEPACKET)?;
                self.svc.flags |= ServiceFlags::ONEPACKET;
            }
            Id::Pe => {
                set_option(&mut self.options, O_PE)?;
                self.svc.pe = truncate(arg_str, PENAME_MAXLEN);
            }
            Id::SchedFlags => {
                set_option(&mut self.options, O_SCHED_FLAGS)?;
                // Applied after all options are read (it needs -s).
            }
            Id::McastGroup => {
                set_option(&mut self.options, O_MCAST_GROUP)?;
                if arg_str.contains(':') {
                    match arg_str.parse::<Ipv6Addr>() {
                        Ok(g) if g.is_multicast() => self.daemon.group = Some(IpAddr::V6(g)),
                        _ => return Err(fail(format!("invalid IPv6 mcast-group `{arg_str}'"))),
                    }
                } else {
                    match arg_str.parse::<Ipv4Addr>() {
                        Ok(g) if g.is_multicast() => self.daemon.group = Some(IpAddr::V4(g)),
                        _ => return Err(fail(format!("invalid IPv4 mcast-group `{arg_str}'"))),
                    }
                }
            }
            Id::McastPort => {
                set_option(&mut self.options, O_MCAST_PORT)?;
                self.daemon.port = string_to_number(arg_str, 1, 65535)
                    .and_then(|v| u16::try_from(v).ok())
                    .ok_or_else(|| fail("illegal mcast-port specified"))?;
            }
            Id::McastTtl => {
                set_option(&mut self.options, O_MCAST_TTL)?;
                self.daemon.ttl = string_to_number(arg_str, 1, 255)
                    .and_then(|v| u8::try_from(v).ok())
                    .ok_or_else(|| fail("illegal mcast-ttl specified"))?;
            }
            Id::SyncMaxlen => {
                set_option(&mut self.options, O_SYNC_MAXLEN)?;
                self.daemon.maxlen = string_to_number(arg_str, 1, 65535 - 20 - 8)
                    .and_then(|v| u16::try_from(v).ok())
                    .ok_or_else(|| fail("illegal sync-maxlen specified"))?;
            }
            Id::TunInfo => self.format_option(O_TUN_INFO, fmt::TUN_INFO)?,
            Id::TunType => {
                set_option(&mut self.options, O_TUN_TYPE)?;
                self.dest.tun_type = match arg_str {
                    "ipip" => 0,
                    "gue" => 1,
                    "gre" => 2,
                    _ => return Err(fail("illegal tunnel type specified")),
                };
            }
            Id::TunPort => {
                set_option(&mut self.options, O_TUN_PORT)?;
                self.dest.tun_port = string_to_number(arg_str, 1, 65535)
                    .and_then(|v| u16::try_from(v).ok())
                    .ok_or_else(|| fail("illegal tunnel port specified"))?;
            }
            Id::TunNocsum => set_option(&mut self.options, O_TUN_NOCSUM)?,
            Id::TunCsum => {
                set_option(&mut self.options, O_TUN_CSUM)?;
                self.dest.tun_flags |= TunnelFlags::CSUM;
            }
            Id::TunRemcsum => {
                set_option(&mut self.options, O_TUN_REMCSUM)?;
                self.dest.tun_flags |= TunnelFlags::REMCSUM;
            }
            // A command or -h/-v after the first option.
            _ => return Err(fail(format!("invalid option `{bad}'"))),
        }
        Ok(())
    }

    fn format_option(&mut self, optc: usize, bit: u32) -> Result<(), ParseError> {
        set_option(&mut self.options, optc)?;
        self.format |= bit;
        Ok(())
    }
}

fn daemon_state(arg: &str, msg: &str) -> Result<DaemonState, ParseError> {
    match arg {
        "master" => Ok(DaemonState::Master),
        "backup" => Ok(DaemonState::Backup),
        _ => Err(fail(msg)),
    }
}

/// Parses one command line (`argv[0]` is the program name).
pub(crate) fn parse(argv: &[String], names: &Names) -> Result<Invocation, ParseError> {
    let mut scanner = Scanner::new(TABLE, argv);
    let mut ce = Entry::new();
    let mut sched_flags_arg = String::new();

    // The first option is the command (--target aside).
    let first = loop {
        match scanner.next_opt() {
            Ok(Some((Id::Target, arg))) => ce.target = arg,
            Ok(Some(opt)) => break opt,
            Ok(None) | Err(_) => return Err(ParseError::TryHelp),
        }
    };
    let (id, arg) = first;
    let arg_str = arg.unwrap_or_default();
    ce.cmd = Some(match id {
        Id::Add => Cmd::Add,
        Id::Edit => Cmd::Edit,
        Id::Del => Cmd::Del,
        Id::AddServer => Cmd::AddDest,
        Id::EditServer => Cmd::EditDest,
        Id::DelServer => Cmd::DelDest,
        Id::Clear => Cmd::Flush,
        Id::ListUpper | Id::ListLower => Cmd::List,
        Id::Zero => Cmd::Zero,
        Id::Set => Cmd::Timeout,
        Id::Restore => Cmd::Restore,
        Id::Save => Cmd::Save,
        Id::StartDaemon => {
            ce.daemon.state = daemon_state(&arg_str, "illegal start-daemon parameter specified")?;
            Cmd::StartDaemon
        }
        Id::StopDaemon => {
            ce.daemon.state = daemon_state(&arg_str, "illegal start_daemon specified")?;
            Cmd::StopDaemon
        }
        Id::Help => {
            return Ok(Invocation {
                command: Command::Help,
                target: ce.target,
            });
        }
        Id::Version => {
            return Ok(Invocation {
                command: Command::Version,
                target: ce.target,
            });
        }
        _ => return Err(ParseError::TryHelp),
    });

    loop {
        match scanner.next_opt() {
            Ok(None) => break,
            Ok(Some((Id::Target, arg))) => ce.target = arg,
            Ok(Some((Id::SchedFlags, arg))) => {
                ce.option(Id::SchedFlags, None, names, "")?;
                sched_flags_arg = truncate(arg.as_deref().unwrap_or_default(), 127);
            }
            Ok(Some((id, arg))) => {
                let bad = scanner.bad_option().to_owned();
                ce.option(id, arg, names, &bad)?;
            }
            Err(e) => {
                return Err(ParseError::Popt(format!(
                    "{}: {}",
                    scanner.bad_option(),
                    e.text()
                )));
            }
        }
    }
    let mut leftovers = scanner.take_leftovers().into_iter();
    if ce.cmd == Some(Cmd::Timeout) {
        match (leftovers.next(), leftovers.next(), leftovers.next()) {
            (Some(a), Some(b), Some(c)) => {
                ce.timeouts.tcp = parse_timeout(Some(&a), 0, MAX_TIMEOUT)?;
                ce.timeouts.tcp_fin = parse_timeout(Some(&b), 0, MAX_TIMEOUT)?;
                ce.timeouts.udp = parse_timeout(Some(&c), 0, MAX_TIMEOUT)?;
            }
            _ => return Err(fail("--set option requires 3 timeout values")),
        }
    }
    if let Some(extra) = leftovers.next() {
        return Err(fail(format!("unexpected argument {extra}")));
    }
    if !sched_flags_arg.is_empty() {
        ce.svc.flags &= !(ServiceFlags::SCHED1 | ServiceFlags::SCHED2 | ServiceFlags::SCHED3);
        ce.svc.flags |= parse_sched_flags(&ce.svc.sched, &sched_flags_arg)?;
    }
    finish(ce)
}

fn generic_opt_check(cmd: Cmd, options: u64) -> Result<(), ParseError> {
    let i = cmd as usize;
    let row = COMMANDS_V_OPTIONS[i];
    let mut last: Option<usize> = None;
    for (j, &rule) in row.iter().enumerate() {
        if options & (1u64 << j) == 0 {
            if rule == b'+' {
                return Err(fail(format!(
                    "You need to supply the '{}' option for the '{}' command",
                    OPT_NAMES[j], CMD_NAMES[i]
                )));
            }
        } else {
            if rule == b'x' {
                return Err(fail(format!(
                    "Illegal '{}' option with the '{}' command",
                    OPT_NAMES[j], CMD_NAMES[i]
                )));
            }
            if rule == b'1' {
                match last {
                    None => last = Some(j),
                    Some(l) => {
                        return Err(fail(format!(
                            "The option '{}' conflicts with the '{}' option in the '{}' command",
                            OPT_NAMES[j], OPT_NAMES[l], CMD_NAMES[i]
                        )));
                    }
                }
            }
        }
    }
    Ok(())
}

fn tunnel_opt_check(tun_type: u8, options: u64) -> Result<(), ParseError> {
    let i = usize::from(tun_type);
    let (Some(row), Some(name)) = (TUNNEL_V_OPTIONS.get(i), TUN_NAMES.get(i)) else {
        return Ok(());
    };
    let mut last: Option<usize> = None;
    for (j, &rule) in row.iter().enumerate() {
        let k = TUN_OPTS[j];
        if options & (1u64 << k) == 0 {
            if rule == b'+' {
                return Err(fail(format!(
                    "You need to supply the '{}' option for the '{name}' tunnel type",
                    OPT_NAMES[k]
                )));
            }
        } else {
            if rule == b'x' {
                return Err(fail(format!(
                    "Illegal '{}' option with the '{name}' tunnel type",
                    OPT_NAMES[k]
                )));
            }
            if rule == b'1' {
                match last {
                    None => last = Some(k),
                    Some(l) => {
                        return Err(fail(format!(
                            "The option '{}' conflicts with the '{}' option in the '{name}' tunnel type",
                            OPT_NAMES[k], OPT_NAMES[l]
                        )));
                    }
                }
            }
        }
    }
    Ok(())
}

fn protocol_of(p: u16) -> Protocol {
    match p {
        IPPROTO_UDP => Protocol::Udp,
        IPPROTO_SCTP => Protocol::Sctp,
        _ => Protocol::Tcp,
    }
}

fn service_key(svc: &Svc) -> ServiceKey {
    if svc.fwmark != 0 {
        ServiceKey::Fwmark {
            mark: svc.fwmark,
            ipv6: svc.af == AF_INET6,
        }
    } else {
        ServiceKey::Addr {
            protocol: protocol_of(svc.protocol),
            addr: SocketAddr::new(svc.addr, svc.port),
        }
    }
}

fn forward_of(conn_flags: u32) -> ForwardMethod {
    ForwardMethod::from_kernel(conn_flags)
}

fn finish(mut ce: Entry) -> Result<Invocation, ParseError> {
    let Some(cmd) = ce.cmd else {
        return Err(ParseError::TryHelp);
    };
    generic_opt_check(cmd, ce.options)?;

    if matches!(cmd, Cmd::Add | Cmd::Edit) {
        if ce.svc.fwmark == 0 && ce.svc.port == 0 && ce.svc.flags & ServiceFlags::PERSISTENT == 0 {
            return Err(fail("Zero port specified for non-persistent service"));
        }
        if ce.svc.flags & ServiceFlags::ONEPACKET != 0
            && ce.svc.fwmark == 0
            && ce.svc.protocol != IPPROTO_UDP
        {
            return Err(fail(
                "One-Packet Scheduling is only for UDP virtual services",
            ));
        }
        if ce.svc.sched.is_empty() {
            ce.svc.sched = DEF_SCHED.to_owned();
        }
    }
    if cmd == Cmd::StartDaemon && ce.daemon.ifn.is_empty() {
        ce.daemon.ifn = DEF_MCAST_IFN.to_owned();
    }
    let fwd = ce.dest.conn_flags & 0x7;
    if matches!(cmd, Cmd::AddDest | Cmd::EditDest) {
        if ce.svc.fwmark == 0 && (fwd == CONN_F_TUNNEL || fwd == CONN_F_DROUTE) {
            ce.dest.port = ce.svc.port;
        }
        if ce.dest.af != ce.svc.af && fwd != CONN_F_TUNNEL {
            return Err(fail(
                "Different address family is allowed only for tunneling servers",
            ));
        }
        let tun_opts = [
            O_TUN_TYPE,
            O_TUN_PORT,
            O_TUN_NOCSUM,
            O_TUN_CSUM,
            O_TUN_REMCSUM,
        ];
        if tun_opts.iter().any(|&o| ce.has(o)) && fwd != CONN_F_TUNNEL {
            return Err(fail("Tunnel options conflict with forward method"));
        }
        tunnel_opt_check(ce.dest.tun_type, ce.options)?;
    }

    let target = ce.target.take();
    let key = service_key(&ce.svc);
    let command = match cmd {
        Cmd::List => {
            let o = |x: usize| ce.has(x);
            if ((o(O_CONNECTION) || o(O_TIMEOUT) || o(O_DAEMON))
                && (o(O_STATS) || o(O_RATE) || o(O_THRESHOLDS)))
                || ((o(O_TIMEOUT) || o(O_DAEMON)) && o(O_PERSISTENTCONN))
            {
                return Err(fail("options conflicts in the list command"));
            }
            let what = if o(O_CONNECTION) {
                List::Connections
            } else if o(O_SERVICE) {
                List::Service(key)
            } else if o(O_TIMEOUT) {
                List::Timeout
            } else if o(O_DAEMON) {
                List::Daemon
            } else {
                List::All
            };
            Command::List {
                what,
                format: ce.format,
            }
        }
        Cmd::Restore => Command::Restore,
        Cmd::Save => Command::List {
            what: List::All,
            format: ce.format | fmt::RULE,
        },
        Cmd::Flush => Command::Change(Change::Op(Op::Flush)),
        Cmd::Add | Cmd::Edit => {
            let edit = cmd == Cmd::Edit;
            match ce.svc.sched.parse::<Scheduler>() {
                Ok(scheduler) => {
                    let service = Service {
                        key,
                        scheduler,
                        flags: ServiceFlags(ce.svc.flags),
                        timeout: ce.svc.timeout,
                        netmask: Netmask(ce.svc.netmask),
                        pe_name: (!ce.svc.pe.is_empty()).then(|| ce.svc.pe.clone()),
                    };
                    Command::Change(Change::Op(if edit {
                        Op::EditService(service)
                    } else {
                        Op::AddService(service)
                    }))
                }
                Err(_) => Command::Change(Change::UnknownScheduler { edit, key }),
            }
        }
        Cmd::Del => Command::Change(Change::Op(Op::DeleteService(key))),
        Cmd::Zero => {
            let everything = ce.svc.fwmark == 0 && ce.svc.addr.is_unspecified() && ce.svc.port == 0;
            Command::Change(Change::Op(Op::Zero((!everything).then_some(key))))
        }
        Cmd::AddDest | Cmd::EditDest => {
            let dest = Destination {
                addr: SocketAddr::new(ce.dest.addr, ce.dest.port),
                forward: forward_of(ce.dest.conn_flags),
                weight: ce.dest.weight,
                upper_threshold: ce.dest.u_threshold,
                lower_threshold: ce.dest.l_threshold,
                tunnel: Tunnel {
                    kind: TunnelType::from_kernel(ce.dest.tun_type),
                    port: ce.dest.tun_port,
                    flags: TunnelFlags(ce.dest.tun_flags),
                },
            };
            Command::Change(Change::Op(if cmd == Cmd::AddDest {
                Op::AddDestination(key, dest)
            } else {
                Op::EditDestination(key, dest)
            }))
        }
        Cmd::DelDest => Command::Change(Change::Op(Op::DeleteDestination(
            key,
            SocketAddr::new(ce.dest.addr, ce.dest.port),
        ))),
        Cmd::Timeout => Command::Change(Change::Op(Op::SetTimeouts(ce.timeouts))),
        Cmd::StartDaemon => Command::Change(Change::Op(Op::StartDaemon(Daemon {
            state: ce.daemon.state,
            mcast_ifn: ce.daemon.ifn.clone(),
            syncid: ce.daemon.syncid,
            sync_maxlen: ce.daemon.maxlen,
            mcast_group: ce.daemon.group,
            mcast_port: ce.daemon.port,
            mcast_ttl: ce.daemon.ttl,
        }))),
        Cmd::StopDaemon => Command::Change(Change::Op(Op::StopDaemon(ce.daemon.state))),
    };
    Ok(Invocation { command, target })
}

#[cfg(test)]
mod tests;
