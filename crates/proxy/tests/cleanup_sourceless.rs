//! `--cleanup` without a cluster view, against the userspace IPVS core:
//! virtual servers on bound (`kube-ipvs0`) addresses go whatever their
//! port, those on the host's own addresses go only at node ports
//! (30000–32767), and everything else stays: other addresses, other
//! ports on host addresses, firewall marks, `--ipvs-exclude-cidrs`.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code

use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};

use rvs_model::admin::{Admin, Op};
use rvs_model::{Destination, Protocol, Scheduler, Service, ServiceKey};
use rvs_proxy::ProxyConfig;
use rvs_proxy::sync::{AddressBinder, NoBinder, Syncer, cleanup_owns};
use rvs_testrig::sim::{CoreAdmin, SimClock};

fn key(addr: &str) -> ServiceKey {
    ServiceKey::Addr {
        protocol: Protocol::Tcp,
        addr: addr.parse().unwrap(),
    }
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

#[test]
fn cleanup_removes_only_what_the_node_shows_is_ours() {
    let mut admin = CoreAdmin::new(SimClock::new(std::time::Instant::now()));
    let keys = [
        "10.96.0.10:80",      // cluster IP on kube-ipvs0: ours
        "10.96.0.11:30500",   // on kube-ipvs0, any port: ours
        "192.168.1.10:30080", // host address, node port: ours
        "192.168.1.10:80",    // host address, not a node port: foreign
        "192.168.1.10:32768", // just past the range: foreign
        "10.0.0.99:30080",    // not the host's: foreign
        "10.200.0.1:80",      // on kube-ipvs0 but excluded: kept
    ];
    let mut ops = Vec::new();
    for k in keys {
        let key = key(k);
        ops.push(Op::AddService(Service::new(key, Scheduler::RoundRobin)));
        let real: SocketAddr = "10.244.0.5:8080".parse().unwrap();
        ops.push(Op::AddDestination(key, Destination::masquerade(real)));
    }
    let fwmark = ServiceKey::Fwmark {
        mark: 5,
        ipv6: false,
    };
    ops.push(Op::AddService(Service::new(fwmark, Scheduler::RoundRobin)));
    for result in admin.apply_batch(&ops) {
        result.unwrap();
    }
    let mut binder = NoBinder::default();
    for a in ["10.96.0.10", "10.96.0.11", "10.200.0.1", "10.96.0.99"] {
        binder.bind(ip(a)).unwrap();
    }
    let config = ProxyConfig {
        exclude_cidrs: vec!["10.200.0.0/16".parse().unwrap()],
        ..ProxyConfig::default()
    };
    let host = BTreeSet::from([ip("192.168.1.10"), ip("127.0.0.1")]);
    let mut syncer = Syncer::new(admin, binder, config);
    let report = syncer.cleanup(&host).unwrap();
    assert_eq!(report.failed, 0);
    let left: BTreeSet<ServiceKey> = syncer
        .admin
        .services()
        .unwrap()
        .into_iter()
        .map(|s| s.service.key)
        .collect();
    let want: BTreeSet<ServiceKey> = [
        key("192.168.1.10:80"),
        key("192.168.1.10:32768"),
        key("10.0.0.99:30080"),
        key("10.200.0.1:80"),
        fwmark,
    ]
    .into();
    assert_eq!(left, want);
    // Every bound address is unbound but the excluded one.
    assert_eq!(
        syncer.binder.bound().unwrap(),
        BTreeSet::from([ip("10.200.0.1")])
    );
}

#[test]
fn the_rule_itself() {
    let bound = BTreeSet::from([ip("10.96.0.1")]);
    let host = BTreeSet::from([ip("192.168.1.10")]);
    let owns = |k: &str| cleanup_owns(&key(k), &bound, &host, &[]);
    assert!(owns("10.96.0.1:53"));
    assert!(owns("192.168.1.10:30000") && owns("192.168.1.10:32767"));
    assert!(!owns("192.168.1.10:29999") && !owns("192.168.1.10:32768"));
    assert!(!owns("10.96.0.2:30000"));
}
