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

const PATH: &str = "/proc/net/ip_vs_conn";

/// Reads and parses `/proc/net/ip_vs_conn`.
pub(crate) fn read_proc() -> Result<Vec<Connection>, AdminError> {
    const OP: OpKind = OpKind::GetConnections;
    let text = std::fs::read_to_string(PATH).map_err(|source| AdminError::Transport {
        op: OP,
        context: format!("read {PATH}"),
        source,
    })?;
    parse(&text).map_err(|detail| AdminError::Protocol { op: OP, detail })
}

/// Parses the file's text (header line first).
pub fn parse(text: &str) -> Result<Vec<Connection>, String> {
    text.lines()
        .skip(1)
        .filter(|l| !l.trim().is_empty())
        .map(parse_line)
        .collect()
}

fn parse_line(line: &str) -> Result<Connection, String> {
    let fields: Vec<&str> = line.split_whitespace().collect();
    let bad = || format!("{PATH}: unparsable line {line:?}");
    if fields.len() < 9 {
        return Err(bad());
    }
    let sock = |addr: &str, port: &str| -> Result<SocketAddr, String> {
        let port = u16::from_str_radix(port, 16).map_err(|_| bad())?;
        Ok(SocketAddr::new(parse_addr(addr).ok_or_else(bad)?, port))
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
        expires: fields[8].parse().map_err(|_| bad())?,
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
        let conns = parse(text).unwrap();
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
    fn garbage_is_an_error_quoting_the_line() {
        let err = parse("header\nTCP nothex\n").unwrap_err();
        assert!(err.contains("nothex"), "{err}");
    }
}
