//! ipvsadm's output text, byte for byte, from model values.
//!
//! This module owns every listing ipvsadm prints: the version header,
//! the column titles, service and destination lines for the default,
//! `--stats`, `--rate`, `--thresholds`, `--persistent-conn`, `--tun-info`
//! and `--exact` variants, the `-S` rule format, the connection table
//! (`-c`), `--timeout` and `--daemon`. Widths, truncations (33 bytes for
//! an IPv4 service column, 28 for an IPv4 destination, 59 for any
//! `address:port`), number abbreviations (`K`, `M`, `G`, `T`) and the
//! order of entries (glibc's merge sort with libipvs's wrapping
//! comparators) follow ipvsadm 1.31 and libipvs.

use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr};

use rvs_model::{
    Connection, Daemon, DaemonState, DestinationStatus, ForwardMethod, Info, Protocol,
    ServiceFlags, ServiceKey, ServiceStatus, Timeouts,
};

use crate::cli::fmt;
use crate::inet;
use crate::names::{Names, proto_name};

/// `rvsadm --rebalancing` (an rvs extension; addresses always numeric):
/// each rebalanced virtual service with its skew (how far its most
/// over-loaded real server is over its weight's share of the
/// connections), then its real servers with the connections closed to
/// rebalance.
pub(crate) fn rebalancing(list: &[rvs_model::admin::RebalanceStatus]) -> String {
    let mut out = String::from(
        "Prot LocalAddress:Port                  Skew\n  -> RemoteAddress:Port               Closed\n",
    );
    for s in list {
        let (proto, addr) = match s.service {
            ServiceKey::Addr { protocol, addr } => {
                let name = match protocol {
                    Protocol::Tcp => "TCP",
                    Protocol::Udp => "UDP",
                    Protocol::Sctp => "SCTP",
                };
                (name, addr.to_string())
            }
            ServiceKey::Fwmark { mark, .. } => ("FWM", mark.to_string()),
        };
        let _ = writeln!(out, "{proto:<4} {addr:<33} {:>5.2}", s.skew);
        for (dest, closed) in &s.closed {
            let _ = writeln!(out, "  -> {:<33} {closed:>6}", dest.to_string());
        }
    }
    out
}

/// "IP Virtual Server version X.Y.Z (size=N)".
pub(crate) fn header(info: &Info) -> String {
    format!(
        "IP Virtual Server version {}.{}.{} (size={})\n",
        (info.version >> 16) & 0xff,
        (info.version >> 8) & 0xff,
        info.version & 0xff,
        info.conn_table_size.cast_signed()
    )
}

/// The column titles for `format` (nothing for `-S`).
pub(crate) fn title(format: u32) -> String {
    const LOCAL: &str = "Prot LocalAddress:Port";
    if format & fmt::STATS != 0 {
        format!(
            "{LOCAL:<33} {:>8} {:>8} {:>8} {:>8} {:>8}\n  -> RemoteAddress:Port\n",
            "Conns", "InPkts", "OutPkts", "InBytes", "OutBytes"
        )
    } else if format & fmt::RATE != 0 {
        format!(
            "{LOCAL:<33} {:>8} {:>8} {:>8} {:>8} {:>8}\n  -> RemoteAddress:Port\n",
            "CPS", "InPPS", "OutPPS", "InBPS", "OutBPS"
        )
    } else if format & fmt::THRESHOLDS != 0 {
        format!(
            "{LOCAL:<33} {:<10} {:<10} {:<10} {:<10}\n  -> RemoteAddress:Port\n",
            "Uthreshold", "Lthreshold", "ActiveConn", "InActConn"
        )
    } else if format & fmt::PERSISTENTCONN != 0 {
        format!(
            "{LOCAL:<33} {:<9} {:<11} {:<10} {:<10}\n  -> RemoteAddress:Port\n",
            "Weight", "PersistConn", "ActiveConn", "InActConn"
        )
    } else if format & fmt::TUN_INFO != 0 {
        "Prot LocalAddress:Port Scheduler Flags\n  -> RemoteAddress:Port           Forward TunnelInfo    Weight ActiveConn InActConn\n".to_owned()
    } else if format & fmt::RULE == 0 {
        "Prot LocalAddress:Port Scheduler Flags\n  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn\n".to_owned()
    } else {
        String::new()
    }
}

/// `print_largenum`: a 9-column number, abbreviated unless `--exact`.
fn largenum(out: &mut String, n: u64, format: u32) {
    if format & fmt::EXACT != 0 {
        let len = n.to_string().len();
        let width = if len <= 8 { 9 } else { len + 1 };
        let _ = write!(out, "{n:>width$}");
    } else if n < 100_000_000 {
        let _ = write!(out, "{n:>9}");
    } else if n < 1_000_000_000 {
        let _ = write!(out, "{:>8}K", n / 1000);
    } else if n < 100_000_000_000 {
        let _ = write!(out, "{:>8}M", n / 1_000_000);
    } else if n < 100_000_000_000_000 {
        let _ = write!(out, "{:>8}G", n / 1_000_000_000);
    } else {
        let _ = write!(out, "{:>8}T", n / 1_000_000_000_000);
    }
}

fn truncate_bytes(s: &mut String, max: usize) {
    if s.len() > max {
        let mut end = max;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
    }
}

/// `addrport_to_anyname`: `addr:port`, `[v6]:port`, with names unless
/// numeric; at most 59 bytes.
pub(crate) fn addrport(addr: &SocketAddr, protocol: u16, format: u32, names: &Names) -> String {
    let ip = addr.ip();
    let (open, close) = if ip.is_ipv4() { ("", "") } else { ("[", "]") };
    let mut s = if format & fmt::NUMERIC != 0 {
        format!("{open}{}{close}:{}", inet::ntop(&ip), addr.port())
    } else {
        let host = names
            .host_of(&ip)
            .map_or_else(|| inet::ntop(&ip), str::to_owned);
        let port = proto_name(protocol)
            .and_then(|p| names.service_of(addr.port(), p))
            .map_or_else(|| addr.port().to_string(), str::to_owned);
        format!("{open}{host}{close}:{port}")
    };
    truncate_bytes(&mut s, 59);
    s
}

fn protocol_number(key: &ServiceKey) -> u16 {
    match key {
        ServiceKey::Addr { protocol, .. } => u16::from(protocol.number()),
        ServiceKey::Fwmark { .. } => 0,
    }
}

fn sched_flags(svc: &rvs_model::Service) -> String {
    let f = svc.flags;
    let mut parts = Vec::new();
    match svc.scheduler.name() {
        "sh" | "mh" => {
            let name = svc.scheduler.name();
            if f.has(ServiceFlags::SCHED1) {
                parts.push(format!("{name}-fallback"));
            }
            if f.has(ServiceFlags::SCHED2) {
                parts.push(format!("{name}-port"));
            }
        }
        _ => {
            for (bit, name) in [
                (ServiceFlags::SCHED1, "flag-1"),
                (ServiceFlags::SCHED2, "flag-2"),
                (ServiceFlags::SCHED3, "flag-3"),
            ] {
                if f.has(bit) {
                    parts.push(name.to_owned());
                }
            }
        }
    }
    parts.join(",")
}

fn any_sched_flag(svc: &rvs_model::Service) -> bool {
    svc.flags.0 & (ServiceFlags::SCHED1 | ServiceFlags::SCHED2 | ServiceFlags::SCHED3) != 0
}

/// The service column: `TCP  1.2.3.4:80` (or `-t 1.2.3.4:80` for `-S`).
pub(crate) fn service_name(key: &ServiceKey, format: u32, names: &Names) -> String {
    match key {
        ServiceKey::Fwmark { mark, ipv6 } => {
            let mark = mark.cast_signed();
            match (format & fmt::RULE != 0, ipv6) {
                (true, true) => format!("-f {mark} -6"),
                (true, false) => format!("-f {mark}"),
                (false, true) => format!("FWM  {mark} IPv6"),
                (false, false) => format!("FWM  {mark}"),
            }
        }
        ServiceKey::Addr { protocol, addr } => {
            let vname = addrport(addr, u16::from(protocol.number()), format, names);
            if format & fmt::RULE != 0 {
                let opt = match protocol {
                    Protocol::Tcp => "-t",
                    Protocol::Udp => "-u",
                    Protocol::Sctp => "--sctp-service",
                };
                format!("{opt} {vname}")
            } else {
                let mut s = format!("{:<4} {vname}", protocol.to_string());
                if addr.is_ipv4() {
                    truncate_bytes(&mut s, 33);
                }
                s
            }
        }
    }
}

fn is_v6_service(key: &ServiceKey) -> bool {
    key.is_ipv6()
}

fn fwd_name(f: ForwardMethod) -> &'static str {
    match f {
        ForwardMethod::Masquerade => "Masq",
        ForwardMethod::Local => "Local",
        ForwardMethod::Tunnel => "Tunnel",
        ForwardMethod::DirectRoute => "Route",
        _ => "(null)",
    }
}

fn fwd_switch(f: ForwardMethod) -> &'static str {
    match f {
        ForwardMethod::Masquerade => "-m",
        ForwardMethod::Tunnel => "-i",
        ForwardMethod::Local | ForwardMethod::DirectRoute => "-g",
        _ => "(null)",
    }
}

const TUN_NAMES: [&str; 3] = ["ipip", "gue", "gre"];
const TUN_FLAGS: [&str; 3] = ["-c", "+c", "r+c"];
const TUN_FLAG_OPTS: [&str; 3] = ["--tun-nocsum", "--tun-csum", "--tun-remcsum"];

fn tun_flag(table: &[&'static str; 3], flags: u16) -> &'static str {
    table.get(usize::from(flags)).copied().unwrap_or("(null)")
}

fn tun_info(d: &rvs_model::Destination) -> Option<String> {
    if d.forward != ForwardMethod::Tunnel {
        return None;
    }
    let t = d.tunnel;
    let mut s = match t.kind.to_kernel() {
        0 => TUN_NAMES[0].to_owned(),
        1 => format!(
            "{}:{}:{}",
            TUN_NAMES[1],
            t.port,
            tun_flag(&TUN_FLAGS, t.flags.0)
        ),
        2 => format!("{}:{}", TUN_NAMES[2], tun_flag(&TUN_FLAGS, t.flags.0)),
        _ => return None,
    };
    truncate_bytes(&mut s, 15);
    Some(s)
}

/// One service with its destinations, as `print_service_entry` prints it.
pub(crate) fn service_entry(
    out: &mut String,
    status: &ServiceStatus,
    dests: &[DestinationStatus],
    format: u32,
    names: &Names,
) {
    let svc = &status.service;
    let stats = &status.stats;
    let svc_name = service_name(&svc.key, format, names);
    let v6 = is_v6_service(&svc.key);
    if format & fmt::RULE != 0 {
        let _ = write!(out, "-A {svc_name} -s {}", svc.scheduler.name());
        if svc.is_persistent() {
            let _ = write!(out, " -p {}", svc.timeout);
            if !v6 && svc.netmask.0 != u32::MAX {
                let _ = write!(out, " -M {}", std::net::Ipv4Addr::from(svc.netmask.0));
            }
            if v6 && svc.netmask.0 != 128 {
                let _ = write!(out, " -M {}", svc.netmask.0.cast_signed());
            }
        }
        if let Some(pe) = svc.pe_name.as_deref().filter(|p| !p.is_empty()) {
            let _ = write!(out, " --pe {pe}");
        }
        if svc.flags.has(ServiceFlags::ONEPACKET) {
            out.push_str(" -o");
        }
        if any_sched_flag(svc) {
            let _ = write!(out, " -b {}", sched_flags(svc));
        }
    } else if format & (fmt::STATS | fmt::RATE) != 0 {
        let _ = write!(out, "{svc_name:<33}");
        let values = if format & fmt::STATS != 0 {
            [
                stats.conns,
                stats.inpkts,
                stats.outpkts,
                stats.inbytes,
                stats.outbytes,
            ]
        } else {
            [
                stats.cps,
                stats.inpps,
                stats.outpps,
                stats.inbps,
                stats.outbps,
            ]
        };
        for v in values {
            largenum(out, v, format);
        }
    } else {
        let _ = write!(out, "{svc_name} {}", svc.scheduler.name());
        if any_sched_flag(svc) {
            let _ = write!(out, " ({})", sched_flags(svc));
        }
        if svc.is_persistent() {
            let _ = write!(out, " persistent {}", svc.timeout);
            if !v6 && svc.netmask.0 != u32::MAX {
                let _ = write!(out, " mask {}", std::net::Ipv4Addr::from(svc.netmask.0));
            }
            if v6 && svc.netmask.0 != 128 {
                let _ = write!(out, " mask {}", svc.netmask.0.cast_signed());
            }
            if let Some(pe) = svc.pe_name.as_deref().filter(|p| !p.is_empty()) {
                let _ = write!(out, " pe {pe}");
            }
        }
        if svc.flags.has(ServiceFlags::ONEPACKET) {
            out.push_str(" ops");
        }
    }
    out.push('\n');

    let mut dests: Vec<&DestinationStatus> = dests.iter().collect();
    if format & fmt::NOSORT == 0 {
        glibc_msort(&mut dests, |a, b| cmp_dests(a, b));
    }
    let protocol = protocol_number(&svc.key);
    for e in dests {
        let d = &e.destination;
        let mut dname = addrport(&d.addr, protocol, format, names);
        if format & fmt::RULE == 0 && d.addr.is_ipv4() {
            truncate_bytes(&mut dname, 28);
        }
        if format & fmt::RULE != 0 {
            let _ = write!(
                out,
                "-a {svc_name} -r {dname} {} -w {}",
                fwd_switch(d.forward),
                d.weight
            );
            if d.forward == ForwardMethod::Tunnel {
                let t = d.tunnel;
                match t.kind.to_kernel() {
                    2 => {
                        let _ = write!(
                            out,
                            " --tun-type {} {}",
                            TUN_NAMES[2],
                            tun_flag(&TUN_FLAG_OPTS, t.flags.0)
                        );
                    }
                    1 => {
                        let _ = write!(
                            out,
                            " --tun-type {} --tun-port {} {}",
                            TUN_NAMES[1],
                            t.port,
                            tun_flag(&TUN_FLAG_OPTS, t.flags.0)
                        );
                    }
                    0 => {
                        let _ = write!(out, " --tun-type {}", TUN_NAMES[0]);
                    }
                    _ => {}
                }
            }
            out.push('\n');
        } else if format & fmt::STATS != 0 {
            let _ = write!(out, "  -> {dname:<28}");
            let s = &e.stats;
            for v in [s.conns, s.inpkts, s.outpkts, s.inbytes, s.outbytes] {
                largenum(out, v, format);
            }
            out.push('\n');
        } else if format & fmt::RATE != 0 {
            let s = &e.stats;
            let _ = write!(
                out,
                "  -> {dname:<28} {:>8} {:>8} {:>8}",
                s.cps, s.inpps, s.outpps
            );
            largenum(out, s.inbps, format);
            largenum(out, s.outbps, format);
            out.push('\n');
        } else if format & fmt::THRESHOLDS != 0 {
            let _ = writeln!(
                out,
                "  -> {dname:<28} {:<10} {:<10} {:<10} {:<10}",
                d.upper_threshold, d.lower_threshold, e.active_conns, e.inactive_conns
            );
        } else if format & fmt::PERSISTENTCONN != 0 {
            let _ = writeln!(
                out,
                "  -> {dname:<28} {:<9} {:<11} {:<10} {:<10}",
                d.weight.cast_unsigned(),
                e.persistent_conns,
                e.active_conns,
                e.inactive_conns
            );
        } else if format & fmt::TUN_INFO != 0 {
            let ti = tun_info(d).unwrap_or_else(|| "n/a".to_owned());
            let _ = writeln!(
                out,
                "  -> {dname:<28} {:<7} {ti:<13} {:<6} {:<10} {:<10}",
                fwd_name(d.forward),
                d.weight,
                e.active_conns,
                e.inactive_conns
            );
        } else {
            let _ = writeln!(
                out,
                "  -> {dname:<28} {:<7} {:<6} {:<10} {:<10}",
                fwd_name(d.forward),
                d.weight,
                e.active_conns,
                e.inactive_conns
            );
        }
    }
}

/// glibc 2.36 `qsort` for these sizes: a top-down merge sort (first half
/// `n / 2`), taking from the left run while `cmp <= 0`. Reproducing it
/// exactly matters because libipvs's comparators wrap and are not a
/// total order.
pub(crate) fn glibc_msort<T: Copy>(v: &mut [T], cmp: impl Fn(&T, &T) -> i32 + Copy) {
    let n = v.len();
    if n <= 1 {
        return;
    }
    let n1 = n / 2;
    let (left, right) = v.split_at_mut(n1);
    glibc_msort(left, cmp);
    glibc_msort(right, cmp);
    let mut merged = Vec::with_capacity(n);
    let (mut i, mut j) = (0, 0);
    while i < left.len() && j < right.len() {
        if cmp(&left[i], &right[j]) <= 0 {
            merged.push(left[i]);
            i += 1;
        } else {
            merged.push(right[j]);
            j += 1;
        }
    }
    merged.extend_from_slice(&left[i..]);
    merged.extend_from_slice(&right[j..]);
    v.copy_from_slice(&merged);
}

/// An address as libipvs's `union nf_inet_addr`, in host-order words.
fn words(ip: &IpAddr) -> [u32; 4] {
    match ip {
        IpAddr::V4(v4) => [u32::from(*v4), 0, 0, 0],
        IpAddr::V6(v6) => {
            let o = v6.octets();
            [0, 1, 2, 3]
                .map(|i| u32::from_be_bytes([o[4 * i], o[4 * i + 1], o[4 * i + 2], o[4 * i + 3]]))
        }
    }
}

fn wrap_diff(a: u32, b: u32) -> i32 {
    a.wrapping_sub(b).cast_signed()
}

fn cmp_addr(af6: bool, a: &IpAddr, b: &IpAddr) -> i32 {
    let (wa, wb) = (words(a), words(b));
    if af6 {
        for i in 0..4 {
            let r = wrap_diff(wa[i], wb[i]);
            if r != 0 {
                return r;
            }
        }
        0
    } else {
        wrap_diff(wa[0], wb[0])
    }
}

/// libipvs `ipvs_cmp_services`: fwmark, family, protocol, address, port.
pub(crate) fn cmp_services(a: &ServiceStatus, b: &ServiceStatus) -> i32 {
    struct K {
        fwmark: u32,
        af: i32,
        proto: i32,
        addr: IpAddr,
        port: i32,
    }
    fn k(s: &ServiceStatus) -> K {
        match s.service.key {
            ServiceKey::Fwmark { mark, ipv6 } => K {
                fwmark: mark,
                af: if ipv6 { 10 } else { 2 },
                proto: 0,
                addr: if ipv6 {
                    IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED)
                } else {
                    IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED)
                },
                port: 0,
            },
            ServiceKey::Addr { protocol, addr } => K {
                fwmark: 0,
                af: if addr.is_ipv6() { 10 } else { 2 },
                proto: i32::from(protocol.number()),
                addr: addr.ip(),
                port: i32::from(addr.port()),
            },
        }
    }
    let (ka, kb) = (k(a), k(b));
    let r = wrap_diff(ka.fwmark, kb.fwmark);
    if r != 0 {
        return r;
    }
    if ka.af != kb.af {
        return ka.af - kb.af;
    }
    if ka.proto != kb.proto {
        return ka.proto - kb.proto;
    }
    let r = cmp_addr(ka.af == 10, &ka.addr, &kb.addr);
    if r != 0 {
        return r;
    }
    ka.port - kb.port
}

/// libipvs `ipvs_cmp_dests`: address (by the first one's family), port.
pub(crate) fn cmp_dests(a: &DestinationStatus, b: &DestinationStatus) -> i32 {
    let (x, y) = (a.destination.addr, b.destination.addr);
    let r = cmp_addr(x.is_ipv6(), &x.ip(), &y.ip());
    if r != 0 {
        return r;
    }
    i32::from(x.port()) - i32::from(y.port())
}

/// `Timeout (tcp tcpfin udp): ...`.
pub(crate) fn timeouts(t: &Timeouts) -> String {
    format!(
        "Timeout (tcp tcpfin udp): {} {} {}\n",
        t.tcp.cast_signed(),
        t.tcp_fin.cast_signed(),
        t.udp.cast_signed()
    )
}

/// `--daemon`: one line per running sync daemon. ipvsadm tests the
/// state's bits, so a state the model does not know is shown by the
/// master or backup bit it has, and not at all without either.
pub(crate) fn daemons(list: &[Daemon]) -> String {
    let mut out = String::new();
    for d in list.iter().take(2) {
        let kind = match d.state {
            DaemonState::Master => "master",
            DaemonState::Backup => "backup",
            DaemonState::Other(bits) if bits & 1 != 0 => "master",
            DaemonState::Other(bits) if bits & 2 != 0 => "backup",
            DaemonState::Other(_) => continue,
        };
        let _ = write!(
            out,
            "{kind} sync daemon (mcast={}, syncid={}",
            d.mcast_ifn,
            d.syncid.cast_signed()
        );
        if d.sync_maxlen != 0 {
            let _ = write!(out, ", maxlen={}", d.sync_maxlen);
        }
        if let Some(group) = d.mcast_group {
            let _ = write!(out, ", group={}", inet::ntop(&group));
        }
        if d.mcast_port != 0 {
            let _ = write!(out, ", port={}", d.mcast_port);
        }
        if d.mcast_ttl != 0 {
            let _ = write!(out, ", ttl={}", d.mcast_ttl);
        }
        out.push_str(")\n");
    }
    out
}

/// `-c`: the connection table.
pub(crate) fn connections(conns: &[Connection], format: u32, names: &Names) -> String {
    let mut out = String::from("IPVS connection entries\n");
    if format & fmt::PERSISTENTCONN != 0 {
        let _ = writeln!(
            out,
            "pro expire {:<11} {:<18} {:<18} {:<18} {:<16} pe_data",
            "state", "source", "virtual", "destination", "pe name"
        );
    } else {
        let _ = writeln!(
            out,
            "pro expire {:<11} {:<18} {:<18} destination",
            "state", "source", "virtual"
        );
    }
    for c in conns {
        let proto: u16 = match c.protocol.as_str() {
            "TCP" => 6,
            "UDP" => 17,
            "SCTP" => 132,
            _ => 0,
        };
        let cname = addrport(&c.client, proto, format, names);
        let vname = addrport(&c.virtual_addr, proto, format, names);
        let dname = addrport(&c.destination, proto, format, names);
        let expire = format!("{:02}:{:02}", c.expires / 60, c.expires % 60);
        match &c.pe {
            Some((pe_name, pe_data))
                if format & fmt::PERSISTENTCONN != 0 && !pe_data.is_empty() =>
            {
                let _ = writeln!(
                    out,
                    "{:<3} {expire:<6} {:<11} {cname:<18} {vname:<18} {dname:<16} {pe_name:<18} {pe_data}",
                    c.protocol, c.state
                );
            }
            _ => {
                let _ = writeln!(
                    out,
                    "{:<3} {expire:<6} {:<11} {cname:<18} {vname:<18} {dname}",
                    c.protocol, c.state
                );
            }
        }
    }
    out
}

#[cfg(test)]
mod tests;
