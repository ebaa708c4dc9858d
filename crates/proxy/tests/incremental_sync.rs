//! Partial syncs (only what changed, against the cached view) leave the
//! dataplane exactly where a full sync would, over random sequences of
//! cluster changes; foreign virtual servers survive both.
//!
//! The dataplane here is an in-memory `Admin` with the kernel's add/edit/
//! delete semantics; the real kernel is exercised by the VM tests.

#![allow(clippy::unwrap_used)] // test code

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};

use proptest::prelude::*;
use rvs_model::admin::{Admin, AdminError, Op, OpKind, errno};
use rvs_model::{
    Connection, Daemon, DestinationStatus, Info, Protocol, Scheduler, Service, ServiceKey,
    ServiceStatus, Timeouts,
};
use rvs_proxy::cluster::{
    EndpointInfo, NodeInfo, ObjectName, ServiceInfo, ServicePort, SliceInfo, SlicePort,
};
use rvs_proxy::reconcile::{Observed, simulate};
use rvs_proxy::sync::{AddressBinder, NoBinder, Syncer};
use rvs_proxy::{ClusterState, ProxyConfig, desired_state};

#[derive(Debug, Default)]
struct MemoryDataplane {
    state: BTreeMap<ServiceKey, Observed>,
    ops: usize,
}

impl Admin for MemoryDataplane {
    fn info(&mut self) -> Result<Info, AdminError> {
        Ok(Info {
            version: 0x010201,
            conn_table_size: 4096,
        })
    }
    fn services(&mut self) -> Result<Vec<ServiceStatus>, AdminError> {
        Ok(self.state.values().map(|o| o.status.clone()).collect())
    }
    fn service(&mut self, key: &ServiceKey) -> Result<ServiceStatus, AdminError> {
        self.state
            .get(key)
            .map(|o| o.status.clone())
            .ok_or(AdminError::refused_for(
                OpKind::GetServices,
                errno::ESRCH,
                *key,
            ))
    }
    fn destinations(&mut self, key: &ServiceKey) -> Result<Vec<DestinationStatus>, AdminError> {
        self.state
            .get(key)
            .map(|o| o.destinations.clone())
            .ok_or(AdminError::refused_for(
                OpKind::GetDestinations,
                errno::ESRCH,
                *key,
            ))
    }
    fn timeouts(&mut self) -> Result<Timeouts, AdminError> {
        Ok(Timeouts::default())
    }
    fn daemons(&mut self) -> Result<Vec<Daemon>, AdminError> {
        Ok(vec![])
    }
    fn connections(&mut self) -> Result<Vec<Connection>, AdminError> {
        Ok(vec![])
    }
    fn apply(&mut self, op: &Op) -> Result<(), AdminError> {
        let exists = |k: &ServiceKey| self.state.contains_key(k);
        let refuse = |errno| Err(AdminError::refusal_of(op, errno));
        match op {
            Op::AddService(s) if exists(&s.key) => return refuse(errno::EEXIST),
            Op::EditService(s) if !exists(&s.key) => return refuse(errno::ESRCH),
            Op::DeleteService(k)
            | Op::AddDestination(k, _)
            | Op::EditDestination(k, _)
            | Op::DeleteDestination(k, _)
                if !exists(k) =>
            {
                return refuse(errno::ESRCH);
            }
            _ => {}
        }
        self.ops += 1;
        let now: Vec<Observed> = self.state.values().cloned().collect();
        self.state = simulate(now, std::slice::from_ref(op))
            .into_iter()
            .map(|o| (o.status.service.key, o))
            .collect();
        Ok(())
    }
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
            zone: None,
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

fn dataplane_view(d: &MemoryDataplane) -> BTreeMap<ServiceKey, (Service, BTreeSet<SocketAddr>)> {
    d.state
        .iter()
        .map(|(k, o)| {
            (
                *k,
                (
                    o.status.service.clone(),
                    o.destinations.iter().map(|x| x.destination.addr).collect(),
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
        let mut dataplane = MemoryDataplane::default();
        dataplane.apply(&Op::AddService(Service::new(foreign, Scheduler::WeightedLeastConnection))).unwrap();
        let mut syncer = Syncer::new(dataplane, NoBinder::default(), config.clone());
        let mut spec = start;
        let c = cluster(&spec);
        syncer.sync(&c).unwrap();
        prop_assert_eq!(dataplane_view(&syncer.admin), desired_view(&c, &config, &foreign));
        let mut previous = c;
        for (i, exists, affinity, ready) in steps {
            spec[i] = (exists, affinity, ready);
            let c = cluster(&spec);
            let before = syncer.admin.ops;
            let report = syncer.sync_changes(&c, &c.changes_since(&previous)).unwrap();
            previous = c.clone();
            prop_assert_eq!(report.failed, 0);
            prop_assert_eq!(dataplane_view(&syncer.admin), desired_view(&c, &config, &foreign));
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
