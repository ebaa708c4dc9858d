//! Host and service names, from `/etc/hosts` and `/etc/services` only.
//!
//! ipvsadm resolves names through the C library (`gethostbyname`,
//! `gethostbyaddr`, `getservbyname`, `getservbyport`). `rvsadm` must never
//! generate network traffic, so it does not call the resolver (no DNS, no
//! `getaddrinfo`, no NSS): it parses `/etc/hosts` and `/etc/services`
//! itself with the "files" backend's rules, which is what glibc answers
//! with when DNS is unavailable (as in the test VM):
//!
//! * address → host: the first `/etc/hosts` line with that address, its
//!   first (canonical) name;
//! * host → IPv4 address: the first IPv4 line naming it (canonical name
//!   or alias, compared case-insensitively);
//! * port → service: the first `/etc/services` entry with that port and
//!   protocol, its official name;
//! * service → port: the first entry whose name or alias equals the text
//!   (case-sensitive) for that protocol.
//!
//! Missing or unreadable files mean "no names" (numeric output).

use std::net::{IpAddr, Ipv4Addr};

use crate::inet;

/// The name databases.
#[derive(Debug, Default, Clone)]
pub(crate) struct Names {
    hosts: Vec<(IpAddr, Vec<String>)>,
    services: Vec<ServiceEntry>,
}

#[derive(Debug, Clone)]
struct ServiceEntry {
    names: Vec<String>,
    port: u16,
    proto: String,
}

impl Names {
    /// Reads `/etc/hosts` and `/etc/services`.
    pub(crate) fn system() -> Names {
        let hosts = std::fs::read_to_string("/etc/hosts").unwrap_or_default();
        let services = std::fs::read_to_string("/etc/services").unwrap_or_default();
        Names::from_text(&hosts, &services)
    }

    /// Builds the databases from file contents.
    pub(crate) fn from_text(hosts: &str, services: &str) -> Names {
        let mut names = Names::default();
        for line in hosts.lines() {
            let line = line.split('#').next().unwrap_or_default();
            let mut fields = line.split_ascii_whitespace();
            let Some(addr) = fields.next() else { continue };
            let aliases: Vec<String> = fields.map(str::to_owned).collect();
            if aliases.is_empty() {
                continue;
            }
            let addr = if addr.contains(':') {
                inet::inet_pton6(addr).map(IpAddr::V6)
            } else {
                addr.parse::<Ipv4Addr>().ok().map(IpAddr::V4)
            };
            if let Some(addr) = addr {
                names.hosts.push((addr, aliases));
            }
        }
        for line in services.lines() {
            let line = line.split('#').next().unwrap_or_default();
            let mut fields = line.split_ascii_whitespace();
            let (Some(name), Some(portproto)) = (fields.next(), fields.next()) else {
                continue;
            };
            let Some((port, proto)) = portproto.split_once('/') else {
                continue;
            };
            let Ok(port) = port.parse::<u16>() else {
                continue;
            };
            let mut all = vec![name.to_owned()];
            all.extend(fields.map(str::to_owned));
            names.services.push(ServiceEntry {
                names: all,
                port,
                proto: proto.to_owned(),
            });
        }
        names
    }

    /// `gethostbyaddr`: the canonical name of `addr`.
    pub(crate) fn host_of(&self, addr: &IpAddr) -> Option<&str> {
        self.hosts
            .iter()
            .find(|(a, _)| a == addr)
            .and_then(|(_, names)| names.first())
            .map(String::as_str)
    }

    /// `gethostbyname` (IPv4 only, as ipvsadm asks).
    pub(crate) fn ipv4_of(&self, name: &str) -> Option<Ipv4Addr> {
        self.hosts.iter().find_map(|(addr, names)| match addr {
            IpAddr::V4(v4) if names.iter().any(|n| n.eq_ignore_ascii_case(name)) => Some(*v4),
            _ => None,
        })
    }

    /// `getservbyport`: the official name of `port` for `proto`
    /// (`tcp`, `udp`, `sctp`).
    pub(crate) fn service_of(&self, port: u16, proto: &str) -> Option<&str> {
        self.services
            .iter()
            .find(|s| s.port == port && s.proto == proto)
            .and_then(|s| s.names.first())
            .map(String::as_str)
    }

    /// `getservbyname`: the port of service `name` for `proto`.
    pub(crate) fn port_of(&self, name: &str, proto: &str) -> Option<u16> {
        self.services
            .iter()
            .find(|s| s.proto == proto && s.names.iter().any(|n| n == name))
            .map(|s| s.port)
    }
}

/// The `/etc/services` protocol name for an IP protocol number, as
/// ipvsadm maps it (only TCP, UDP and SCTP have names).
pub(crate) fn proto_name(protocol: u16) -> Option<&'static str> {
    match protocol {
        6 => Some("tcp"),
        17 => Some("udp"),
        132 => Some("sctp"),
        _ => None,
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) const HOSTS: &str = "127.0.0.1 localhost\n::1 localhost ip6-localhost\n\
        # a comment\n10.0.0.2 web-1.example.org web1 # trailing\n\
        10.0.0.2 second-name\n10.1.0.2 backend-2\nfd00::2 web6\n10.0.0.3 a-very-long-host-name-for-truncation.example.org\n";
    pub(crate) const SERVICES: &str = "# services\nhttp 80/tcp www # WorldWideWeb\nhttp 80/udp\n\
        https 443/tcp\ndomain 53/tcp\ndomain 53/udp\nsip 5060/udp\nbogus x/tcp\n";

    pub(crate) fn names() -> Names {
        Names::from_text(HOSTS, SERVICES)
    }

    #[test]
    fn lookups_follow_the_files_backend() {
        let n = names();
        assert_eq!(
            n.host_of(&"10.0.0.2".parse().unwrap()),
            Some("web-1.example.org")
        );
        assert_eq!(n.host_of(&"::1".parse().unwrap()), Some("localhost"));
        assert_eq!(n.host_of(&"10.9.9.9".parse().unwrap()), None);
        assert_eq!(n.ipv4_of("WEB1"), Some(Ipv4Addr::new(10, 0, 0, 2)));
        assert_eq!(n.ipv4_of("localhost"), Some(Ipv4Addr::new(127, 0, 0, 1)));
        assert_eq!(n.ipv4_of("web6"), None);
        assert_eq!(n.service_of(80, "tcp"), Some("http"));
        assert_eq!(n.service_of(5060, "tcp"), None);
        assert_eq!(n.port_of("www", "tcp"), Some(80));
        assert_eq!(n.port_of("www", "udp"), None);
        assert_eq!(n.port_of("HTTP", "tcp"), None);
    }
}
