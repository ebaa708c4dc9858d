//! The kernel's IPVS connection table, as `/proc/net/ip_vs_conn` shows it.
//!
//! The netlink interface has no connection dump; ipvsadm reads this file
//! for `-c`, and so do we. Lines look like
//! `TCP 0A000102 C350 0A60000A 0050 0A000202 0050 ESTABLISHED     899`
//! for IPv4 (hex address and port), with full colon-separated IPv6
//! addresses for IPv6, optionally followed by a persistence engine's name
//! and data.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use rvs_model::Connection;
use rvs_model::admin::{AdminError, OpKind};

/// Where the kernel shows the table.
pub const PATH: &str = "/proc/net/ip_vs_conn";

/// A line of the table that could not be read.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{PATH} line {number}: {reason} in {line:?}")]
pub struct LineError {
    /// The line's number in the file (the header is line 1).
    pub number: usize,
    /// The line.
    pub line: String,
    /// What is wrong with it.
    pub reason: &'static str,
}

/// The table as read: the connections of every readable line, and why
/// each other line was left out.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ConnTable {
    /// The connections, in file order.
    pub connections: Vec<Connection>,
    /// The lines that could not be read.
    pub skipped: Vec<LineError>,
}

/// Reads and parses `/proc/net/ip_vs_conn`. Unreadable lines are left
/// out with one warning per read (their count and the first of them), so
/// that one odd entry (a protocol or persistence engine this parser does
/// not foresee) does not hide the whole table.
pub(crate) fn read_proc() -> Result<Vec<Connection>, AdminError> {
    const OP: OpKind = OpKind::GetConnections;
    let text = std::fs::read_to_string(PATH).map_err(|source| AdminError::Transport {
        op: OP,
        context: format!("read {PATH}"),
        source,
    })?;
    let table = parse(&text);
    if let Some(first) = table.skipped.first() {
        tracing::warn!(
            "left out {} unreadable line(s) of {PATH}; the first: {first}",
            table.skipped.len()
        );
    }
    Ok(table.connections)
}

/// Parses the file's text (header line first), keeping every line that
/// parses.
pub fn parse(text: &str) -> ConnTable {
    let mut table = ConnTable::default();
    for (index, line) in text.lines().enumerate().skip(1) {
        if line.trim().is_empty() {
            continue;
        }
        match parse_line(line) {
            Ok(conn) => table.connections.push(conn),
            Err(reason) => table.skipped.push(LineError {
                number: index + 1,
                line: line.to_owned(),
                reason,
            }),
        }
    }
    table
}

/// One line of the table, or what is wrong with it.
fn parse_line(line: &str) -> Result<Connection, &'static str> {
    let fields: Vec<&str> = line.split_whitespace().collect();
    if fields.len() < 9 {
        return Err("fewer than 9 fields");
    }
    let sock = |addr: &str, port: &str| -> Result<SocketAddr, &'static str> {
        let port = u16::from_str_radix(port, 16).map_err(|_| "a port is not 4 hex digits")?;
        let ip = parse_addr(addr).ok_or("an address is neither hex IPv4 nor IPv6")?;
        Ok(SocketAddr::new(ip, port))
    };
    let pe = match (fields.get(9), fields.get(10)) {
        (Some(name), data) => Some((
            (*name).to_owned(),
            data.map(|d| (*d).to_owned()).unwrap_or_default(),
        )),
        (None, _) => None,
    };
    Ok(Connection {
        protocol: fields[0].to_owned(),
        client: sock(fields[1], fields[2])?,
        virtual_addr: sock(fields[3], fields[4])?,
        destination: sock(fields[5], fields[6])?,
        state: fields[7].to_owned(),
        expires: fields[8]
            .parse()
            .map_err(|_| "the expiry is not a number")?,
        pe,
    })
}

fn parse_addr(text: &str) -> Option<IpAddr> {
    if text.contains(':') {
        text.parse::<Ipv6Addr>().ok().map(IpAddr::V6)
    } else {
        u32::from_str_radix(text, 16)
            .ok()
            .map(|v| IpAddr::V4(Ipv4Addr::from(v)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv4_and_ipv6_lines_parse() {
        let text = "Pro FromIP   FPrt ToIP     TPrt DestIP   DPrt State       Expires PEName PEData\n\
            TCP 0A000102 C350 0A60000A 0050 0A000202 1F90 ESTABLISHED     899\n\
            UDP fd00:0001:0000:0000:0000:0000:0000:0002 0035 fd00:0000:0000:0000:0000:0000:0000:0053 0035 fd00:0002:0000:0000:0000:0000:0000:0002 0035 UDP             299\n\
            TCP 0A000102 C351 0A60000A 13C4 0A000202 13C4 ESTABLISHED      59 sip abc123\n";
        let table = parse(text);
        assert!(table.skipped.is_empty(), "{:?}", table.skipped);
        let conns = table.connections;
        assert_eq!(conns.len(), 3);
        assert_eq!(conns[0].client, "10.0.1.2:50000".parse().unwrap());
        assert_eq!(conns[0].virtual_addr, "10.96.0.10:80".parse().unwrap());
        assert_eq!(conns[0].destination, "10.0.2.2:8080".parse().unwrap());
        assert_eq!(
            (conns[0].state.as_str(), conns[0].expires),
            ("ESTABLISHED", 899)
        );
        assert_eq!(conns[1].client, "[fd00:1::2]:53".parse().unwrap());
        assert_eq!(conns[1].protocol, "UDP");
        assert_eq!(conns[2].pe, Some(("sip".into(), "abc123".into())));
    }

    #[test]
    fn a_bad_line_is_left_out_and_the_rest_kept() {
        let text = "header\n\
            TCP 0A000102 C350 0A60000A 0050 0A000202 1F90 ESTABLISHED     899\n\
            TCP nothex\n\
            TCP 0A000102 C350 0A60000A 0050 0A000202 1F90 ESTABLISHED  soon\n\
            UDP 0A000102 C350 0A60000A 0050 0A000202 0035 UDP             299\n";
        let table = parse(text);
        assert_eq!(table.connections.len(), 2);
        assert_eq!(table.connections[1].protocol, "UDP");
        assert_eq!(table.skipped.len(), 2);
        let first = &table.skipped[0];
        assert_eq!((first.number, first.reason), (3, "fewer than 9 fields"));
        assert_eq!(
            first.to_string(),
            "/proc/net/ip_vs_conn line 3: fewer than 9 fields in \"TCP nothex\""
        );
        assert_eq!(table.skipped[1].reason, "the expiry is not a number");
    }
}
