//! Node ports follow the host's own addresses, as kube-proxy's
//! `GetAllLocalAddressesExcept(kube-ipvs0)`: read from the binder each
//! full sync, served on every one, external IPs among them not bound,
//! and node-port virtual servers a previous proxy left on any of them
//! removed when no longer wanted.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::time::Instant;

use rvs_model::admin::{Admin, Op};
use rvs_model::{Scheduler, Service, ServiceKey};
use rvs_proxy::source::manifests::{Manifests, parse_into};
use rvs_proxy::sync::{AddressBinder, BindError, NoBinder, Syncer};
use rvs_proxy::{ClusterState, ProxyConfig};
use rvs_testrig::sim::{CoreAdmin, SimClock};

/// A binder on a host with these addresses.
#[derive(Default)]
struct Host {
    bound: NoBinder,
    local: BTreeSet<IpAddr>,
}

impl AddressBinder for Host {
    fn bound(&mut self) -> Result<BTreeSet<IpAddr>, BindError> {
        self.bound.bound()
    }
    fn bind(&mut self, addr: IpAddr) -> Result<(), BindError> {
        self.bound.bind(addr)
    }
    fn unbind(&mut self, addr: IpAddr) -> Result<(), BindError> {
        self.bound.unbind(addr)
    }
    fn local_addresses(&mut self) -> Option<Result<BTreeSet<IpAddr>, BindError>> {
        Some(Ok(self.local.clone()))
    }
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn cluster(yaml: &str) -> ClusterState {
    let mut m = Manifests::default();
    let mut errors = Vec::new();
    parse_into(yaml, "t.yaml", &mut m, &mut errors);
    assert!(errors.is_empty(), "{errors:?}");
    let (c, errors) = ClusterState::build(&m.services, &m.slices, &m.nodes, "node-a", None);
    assert!(errors.is_empty(), "{errors:?}");
    c
}

fn keys(admin: &mut CoreAdmin) -> Vec<String> {
    let mut k: Vec<String> = admin
        .services()
        .unwrap()
        .iter()
        .map(|s| s.service.key.to_string())
        .collect();
    k.sort();
    k
}

const NODE_PORT: &str = "kind: Service
metadata: {name: np, namespace: default}
spec:
  type: NodePort
  clusterIP: 10.96.0.70
  externalIPs: [192.168.0.7, 203.0.113.70]
  ports: [{name: http, port: 80, nodePort: 30070}]
";

#[test]
fn node_ports_serve_every_host_address_and_host_external_ips_are_not_bound() {
    // No Node object at all: kube-proxy still serves node ports on the
    // host's addresses.
    let c = cluster(NODE_PORT);
    let host = Host {
        local: ["127.0.0.1", "192.168.0.7", "10.0.5.1", "fe80::1"]
            .into_iter()
            .map(ip)
            .collect(),
        ..Host::default()
    };
    let mut admin = CoreAdmin::new(SimClock::new(Instant::now()));
    // Left by kube-proxy: a node port of a Service since deleted, on a
    // host address the Node object never listed; and an operator's
    // virtual server elsewhere.
    let stale = ServiceKey::tcp("10.0.5.1:31999".parse().unwrap());
    let foreign = ServiceKey::tcp("172.31.0.1:80".parse().unwrap());
    for key in [stale, foreign] {
        admin
            .apply(&Op::AddService(Service::new(key, Scheduler::RoundRobin)))
            .unwrap();
    }
    let config = ProxyConfig {
        node_name: "node-a".into(),
        ..ProxyConfig::default()
    };
    let mut syncer = Syncer::new(admin, host, config);
    let report = syncer.sync(&c).unwrap();
    assert_eq!(report.failed, 0);
    assert_eq!(
        keys(&mut syncer.admin),
        [
            "TCP 10.0.5.1:30070",
            "TCP 10.96.0.70:80",
            "TCP 172.31.0.1:80",
            "TCP 192.168.0.7:30070",
            "TCP 192.168.0.7:80",
            "TCP 203.0.113.70:80",
        ],
        "node ports on every host address but loopback and link-local; the stale one gone, the foreign one kept"
    );
    // 192.168.0.7 is the host's: served, not bound to kube-ipvs0.
    assert_eq!(
        syncer.binder.bound().unwrap(),
        [ip("10.96.0.70"), ip("203.0.113.70")].into()
    );

    // Nor put in KUBE-IPVS-IPS, so KUBE-IPVS-FILTER does not reject the
    // host's other ports (SSH) on it; the SCTP/TCP node-port sets follow
    // the host's addresses too.
    let sets =
        rvs_proxy::ipsets::desired_ipsets(&c, &syncer.config, rvs_proxy::ipsets::IpFamily::V4);
    assert_eq!(sets.get("KUBE-IPVS-IPS"), ["10.96.0.70", "203.0.113.70"]);
    assert_eq!(sets.get("KUBE-NODE-PORT-TCP"), ["30070"]);

    // The host gains an address: the next full sync serves it too.
    syncer.binder.local.insert(ip("10.0.6.1"));
    syncer.sync(&c).unwrap();
    assert!(keys(&mut syncer.admin).contains(&"TCP 10.0.6.1:30070".to_owned()));
}
