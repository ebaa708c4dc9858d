//! Persistence templates (`ip_vs_sched_persist` in `ip_vs_core.c`).
//!
//! A persistent service keeps, per client network, a template connection
//! `<protocol, caddr & netmask, 0, vaddr, vport>` that names the chosen
//! destination. Kernel behaviour reproduced:
//!
//! * the client address is masked with the service's netmask (IPv4) or
//!   cut to its prefix length (IPv6) before lookup;
//! * the template's virtual port is the service port when the connection
//!   is to the service port (a port-zero service's template has port 0),
//!   and its destination port is the destination's;
//! * a template is used while its destination is available (not deleted);
//!   a quiescent (weight 0) destination keeps its persistent clients, as
//!   with the kernel's default `expire_quiescent_template = 0`; an
//!   unusable template is invalidated (its ports become 65535 and it no
//!   longer matches) and a new one is scheduled;
//! * a template lives `timeout` seconds after its last use; when it
//!   expires while connections it controls still exist, it is kept for
//!   another 60 s at a time (`ip_vs_conn_expire`'s `expire_later`), and
//!   from then on each use re-arms it with 60 s too.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use rvs_model::{Protocol, Service};

/// The FTP control port, whose templates the kernel keeps port-less.
pub(crate) const FTP_PORT: u16 = 21;

/// What identifies a template.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct TemplateKey {
    pub(crate) protocol: Protocol,
    /// The client address after masking.
    pub(crate) client_net: IpAddr,
    /// Virtual address and the template's virtual port.
    pub(crate) vip: SocketAddr,
}

/// The client's network for a persistent service.
pub(crate) fn mask(svc: &Service, client: IpAddr) -> IpAddr {
    match client {
        IpAddr::V4(v4) => IpAddr::V4(Ipv4Addr::from(u32::from(v4) & svc.netmask.0)),
        IpAddr::V6(v6) => {
            let plen = svc.netmask.0.min(128);
            let bits = u128::from(v6);
            let masked = if plen == 0 {
                0
            } else {
                bits & (u128::MAX << (128 - plen))
            };
            IpAddr::V6(Ipv6Addr::from(masked))
        }
    }
}

/// The template key for a flow to a persistent service.
pub(crate) fn key(
    svc: &Service,
    protocol: Protocol,
    client: IpAddr,
    vip: SocketAddr,
) -> TemplateKey {
    let svc_port = match svc.key {
        rvs_model::ServiceKey::Addr { addr, .. } => addr.port(),
        rvs_model::ServiceKey::Fwmark { .. } => 0,
    };
    // FTP (port 21) templates cover every port of the virtual address.
    let vport = if vip.port() == svc_port && svc_port != FTP_PORT {
        vip.port()
    } else {
        0
    };
    TemplateKey {
        protocol,
        client_net: mask(svc, client),
        vip: SocketAddr::new(vip.ip(), vport),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rvs_model::{Netmask, Scheduler, ServiceKey};

    #[test]
    fn masks_by_family() {
        let mut svc = Service::new(
            ServiceKey::tcp("10.0.0.1:80".parse().unwrap()),
            Scheduler::RoundRobin,
        );
        svc.netmask = Netmask(0xffff_ff00);
        assert_eq!(
            mask(&svc, "192.168.7.9".parse().unwrap()),
            "192.168.7.0".parse::<IpAddr>().unwrap()
        );
        svc.netmask = Netmask(64);
        assert_eq!(
            mask(&svc, "fd00:1:2:3:4:5:6:7".parse().unwrap()),
            "fd00:1:2:3::".parse::<IpAddr>().unwrap()
        );
    }
}

#[cfg(test)]
mod assured_tests {
    use crate::sched::testkit::Bench;
    use rvs_model::{Scheduler, Service, ServiceKey};

    fn template_states(b: &Bench) -> Vec<String> {
        b.core
            .connections(b.now)
            .into_iter()
            .filter(|c| c.client.port() == 0)
            .map(|c| c.state)
            .collect()
    }

    #[test]
    fn a_template_is_assured_once_a_connection_it_controls_is_established() {
        let svc = Service::new(
            ServiceKey::tcp("10.96.0.1:80".parse().unwrap()),
            Scheduler::RoundRobin,
        )
        .persistent(300);
        let mut b = Bench::with_service(svc, &[1, 1]);
        b.picks(1);
        assert_eq!(template_states(&b), vec!["NONE"]);
        b.open_all();
        assert_eq!(template_states(&b), vec!["ASSURED"]);
    }
}
