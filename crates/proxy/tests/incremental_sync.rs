//! Partial syncs (only what changed, against the cached view) leave the
//! dataplane exactly where a full sync would, over random sequences of
//! cluster changes; foreign virtual servers survive both.
//!
//! The dataplane here is the userspace IPVS core, which has the kernel's
//! add/edit/delete semantics and errnos; the real kernel is exercised by
//! the VM tests.

#![allow(clippy::unwrap_used)] // test code

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};

use proptest::prelude::*;
use rvs_model::admin::{Admin, Op};
use rvs_model::{Protocol, Scheduler, Service, ServiceFlags, ServiceKey};
use rvs_proxy::cluster::{
    EndpointInfo, NodeInfo, ObjectName, ServiceInfo, ServicePort, SliceInfo, SlicePort,
};
use rvs_proxy::sync::{AddressBinder, NoBinder, Syncer};
use rvs_proxy::{ClusterState, ProxyConfig, desired_state};
use rvs_testrig::sim::{CoreAdmin, SimClock};

/// The userspace IPVS core (the kernel's admin semantics and errnos),
/// on a clock that does not move.
fn dataplane() -> CoreAdmin {
    CoreAdmin::new(SimClock::new(std::time::Instant::now()))
}

fn name(i: u8) -> ObjectName {
    ObjectName {
        namespace: "default".into(),
        name: format!("s{i}"),
    }
}

/// A cluster from a compact description: per Service, whether it exists,
/// affinity, and which of 6 endpoints are ready.
fn cluster(spec: &[(bool, bool, u8)]) -> ClusterState {
    let mut c = ClusterState {
        node: Some(NodeInfo {
            name: "node-a".into(),
            addresses: vec!["192.168.1.10".parse().unwrap()],
            ..NodeInfo::default()
        }),
        ..ClusterState::default()
    };
    for (i, (exists, affinity, ready)) in spec.iter().enumerate() {
        let i = i as u8;
        if !exists {
            continue;
        }
        c.services.insert(
            name(i),
            ServiceInfo {
                name: name(i),
                cluster_ips: vec![IpAddr::from([10, 96, 0, i + 1])],
                // Services share external IPs (on their own ports): an
                // address is unbound only when no Service needs it.
                external_ips: vec![IpAddr::from([10, 97, 0, i % 2 + 1])],
                load_balancer_ips: vec![],
                ports: vec![ServicePort {
                    name: "http".into(),
                    protocol: Protocol::Tcp,
                    port: 80 + u16::from(i),
                    node_port: i.is_multiple_of(2).then_some(30000 + u16::from(i)),
                }],
                affinity_timeout: affinity.then_some(60),
                external_local: false,
                internal_local: false,
                scheduler: None,
                rebalance: None,
                topology_aware: false,
                source_ranges: vec![],
                health_check_node_port: None,
            },
        );
        let endpoints = (0..6u8)
            .map(|e| EndpointInfo {
                addr: IpAddr::from([10, 244, i, e + 1]),
                ready: ready & (1 << e) != 0,
                serving: ready & (1 << e) != 0,
                terminating: false,
                node_name: None,
                zone_hints: None,
                node_hints: None,
            })
            .collect();
        c.slices.insert(
            ObjectName {
                namespace: "default".into(),
                name: format!("s{i}-1"),
            },
            SliceInfo {
                service: name(i),
                ports: vec![SlicePort {
                    name: "http".into(),
                    protocol: Protocol::Tcp,
                    port: 8080,
                }],
                endpoints,
            },
        );
    }
    c
}

fn dataplane_view(d: &mut CoreAdmin) -> BTreeMap<ServiceKey, (Service, BTreeSet<SocketAddr>)> {
    d.services()
        .unwrap()
        .into_iter()
        .map(|mut s| {
            let key = s.service.key;
            // The kernel (and the core) mark listed services hashed.
            s.service.flags = s.service.flags.with(ServiceFlags::HASHED, false);
            let dests = d.destinations(&key).unwrap();
            (
                key,
                (
                    s.service,
                    dests.iter().map(|x| x.destination.addr).collect(),
                ),
            )
        })
        .collect()
}

fn desired_view(
    c: &ClusterState,
    config: &ProxyConfig,
    foreign: &ServiceKey,
) -> BTreeMap<ServiceKey, (Service, BTreeSet<SocketAddr>)> {
    let mut view: BTreeMap<_, _> = desired_state(c, config)
        .services
        .into_iter()
        .map(|(k, d)| (k, (d.service, d.destinations.keys().copied().collect())))
        .collect();
    view.insert(
        *foreign,
        (
            Service::new(*foreign, Scheduler::WeightedLeastConnection),
            BTreeSet::new(),
        ),
    );
    view
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    #[test]
    fn partial_syncs_track_full_syncs(
        start in proptest::collection::vec((any::<bool>(), any::<bool>(), 0u8..64), 6),
        steps in proptest::collection::vec((0usize..6, any::<bool>(), any::<bool>(), 0u8..64), 1..12),
    ) {
        let config = ProxyConfig { node_name: "node-a".into(), ..ProxyConfig::default() };
        let foreign = ServiceKey::tcp("172.31.0.1:80".parse().unwrap());
        let mut dataplane = dataplane();
        dataplane.apply(&Op::AddService(Service::new(foreign, Scheduler::WeightedLeastConnection))).unwrap();
        let mut syncer = Syncer::new(dataplane, NoBinder::default(), config.clone());
        let mut spec = start;
        let c = cluster(&spec);
        syncer.sync(&c).unwrap();
        prop_assert_eq!(dataplane_view(&mut syncer.admin), desired_view(&c, &config, &foreign));
        let mut previous = c;
        for (i, exists, affinity, ready) in steps {
            spec[i] = (exists, affinity, ready);
            let c = cluster(&spec);
            let before = syncer.admin.ops;
            let report = syncer.sync_changes(&c, &c.changes_since(&previous)).unwrap();
            previous = c.clone();
            prop_assert_eq!(report.failed, 0);
            prop_assert_eq!(dataplane_view(&mut syncer.admin), desired_view(&c, &config, &foreign));
            prop_assert_eq!(syncer.binder.bound().unwrap(), desired_state(&c, &config).addresses);
            // Only the changed Service's virtual servers were touched: at
            // most its three virtual servers and their six real servers each.
            prop_assert!(syncer.admin.ops - before <= 3 * 7 * 2, "{} ops", syncer.admin.ops - before);
        }
        // A full sync afterwards finds nothing to do.
        let c = cluster(&spec);
        let report = syncer.sync(&c).unwrap();
        prop_assert_eq!(report.applied, 0);
    }
}
