//! The stale UDP conntrack cleanup against the host kernel's conntrack
//! table, in a fresh network namespace: UDP datagrams sent to two
//! "Services" (local addresses DNATed by iptables to loopback
//! "endpoints", as IPVS NATs them) and to a node port make real entries;
//! the kernel backend lists them, the selection picks those whose reply
//! comes from an endpoint no longer serving, and only those are deleted,
//! as `conntrack -L` shows.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code

use std::collections::BTreeSet;
use std::net::{SocketAddr, UdpSocket};

use rvs_model::Protocol;
use rvs_node::conntrack::{
    ConntrackBackend, IPPROTO_UDP, KernelConntrack, UdpServices, clean_stale_entries,
};
use rvs_proxy::cluster::{
    ClusterState, EndpointInfo, ObjectName, ServiceInfo, ServicePort, SliceInfo, SlicePort,
};
use rvs_proxy::ipsets::IpFamily;
use rvs_testrig::Netns;

/// `dns` (10.96.0.10:53, node port 30053) now served by 127.0.0.3:5353
/// only; `other` (10.96.0.11:53) by 127.0.0.4:5353.
fn cluster() -> ClusterState {
    let mut c = ClusterState::default();
    for (svc, vip, node_port, ep) in [
        ("dns", "10.96.0.10", Some(30053), "127.0.0.3"),
        ("other", "10.96.0.11", None, "127.0.0.4"),
    ] {
        let name = ObjectName::new("default", svc);
        c.services.insert(
            name.clone(),
            ServiceInfo::new(
                name.clone(),
                vec![vip.parse().unwrap()],
                vec![ServicePort {
                    name: "dns".into(),
                    protocol: Protocol::Udp,
                    port: 53,
                    node_port,
                }],
            ),
        );
        c.slices.insert(
            ObjectName::new("default", format!("{svc}-1")),
            SliceInfo {
                service: name,
                ports: vec![SlicePort {
                    name: "dns".into(),
                    protocol: Protocol::Udp,
                    port: 5353,
                }],
                endpoints: vec![EndpointInfo::ready(ep.parse().unwrap())],
            },
        );
    }
    c
}

/// `conntrack -L -p udp` in the namespace: (client port, reply source).
fn listed(ns: &Netns) -> BTreeSet<(u16, String)> {
    let out = ns.run("conntrack", &["-L", "-p", "udp"]).unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let get = |key: &str, nth: usize| {
                fields
                    .iter()
                    .filter_map(|f| f.strip_prefix(key))
                    .nth(nth)
                    .map(str::to_owned)
            };
            let sport: u16 = get("sport=", 0)?.parse().ok()?;
            Some((sport, format!("{}:{}", get("src=", 1)?, get("sport=", 1)?)))
        })
        .collect()
}

#[test]
fn only_flows_to_endpoints_no_longer_serving_are_deleted() {
    let Some(ns) = Netns::or_skip("conntrack_netns") else {
        return;
    };
    let cli = std::process::Command::new("conntrack")
        .arg("--version")
        .output();
    if cli.is_err() {
        rvs_testrig::skip("conntrack_netns", &"no conntrack CLI (Debian's conntrack)");
        return;
    }
    // Each Service address is local; iptables NATs it (by client port,
    // so one Service has flows to its old and its new endpoint).
    ns.sh("set -e
         ip addr add 10.96.0.10/32 dev lo
         ip addr add 10.96.0.11/32 dev lo
         nat='iptables -t nat -A OUTPUT -p udp'
         $nat -d 10.96.0.10 --dport 53 --sport 40002 -j DNAT --to-destination 127.0.0.3:5353
         $nat -d 10.96.0.10 --dport 53 -j DNAT --to-destination 127.0.0.2:5353
         $nat -d 10.96.0.11 --dport 53 -j DNAT --to-destination 127.0.0.4:5353
         $nat -d 127.0.0.1 --dport 30053 -j DNAT --to-destination 127.0.0.2:5353")
        .unwrap();
    let sends: [(u16, &str); 5] = [
        (40001, "10.96.0.10:53"),   // to the old endpoint: stale
        (40002, "10.96.0.10:53"),   // to the serving one: kept
        (40003, "127.0.0.1:30053"), // node port, old endpoint: stale
        (40004, "10.96.0.11:53"),   // another Service, serving: kept
        (40005, "127.0.0.5:9999"),  // no Service: kept
    ];
    let (flows, stale, report) = ns
        .enter(|| {
            for (port, to) in sends {
                let socket = UdpSocket::bind(("127.0.0.1", port)).unwrap();
                socket.send_to(b"query", to).unwrap();
            }
            let mut kernel = KernelConntrack::default();
            let flows = kernel.list(IpFamily::V4).unwrap();
            let stale = UdpServices::new(&cluster(), IpFamily::V4).stale_flows(&flows);
            let report = clean_stale_entries(&mut kernel, &cluster(), IpFamily::V4).unwrap();
            (flows, stale, report)
        })
        .unwrap();
    // The backend reads what conntrack holds.
    let ours: BTreeSet<(u16, SocketAddr)> = flows
        .iter()
        .filter(|f| f.original.protocol == IPPROTO_UDP && f.original.src.port() >= 40001)
        .map(|f| (f.original.src.port(), f.reply.src))
        .collect();
    assert_eq!(
        ours,
        BTreeSet::from([
            (40001, "127.0.0.2:5353".parse().unwrap()),
            (40002, "127.0.0.3:5353".parse().unwrap()),
            (40003, "127.0.0.2:5353".parse().unwrap()),
            (40004, "127.0.0.4:5353".parse().unwrap()),
            (40005, "127.0.0.5:9999".parse().unwrap()),
        ]),
        "{flows:?}"
    );
    let stale_ports: BTreeSet<u16> = stale.iter().map(|f| f.original.src.port()).collect();
    assert_eq!(stale_ports, BTreeSet::from([40001, 40003]));
    assert_eq!(report.deleted, 2, "{report:?}");
    let left: BTreeSet<u16> = listed(&ns)
        .into_iter()
        .map(|(port, _)| port)
        .filter(|p| *p >= 40001)
        .collect();
    assert_eq!(left, BTreeSet::from([40002, 40004, 40005]));
    // A second pass finds nothing more.
    let again = ns
        .enter(|| clean_stale_entries(&mut KernelConntrack::default(), &cluster(), IpFamily::V4))
        .unwrap()
        .unwrap();
    assert_eq!(again.deleted, 0);
}
