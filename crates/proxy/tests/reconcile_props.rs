//! Properties of the reconciler: applying a plan to the observed state
//! yields the desired state; a converged state plans nothing; what the
//! proxy does not own is never touched; TCP real servers drain.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};

use proptest::prelude::*;
use rvs_model::admin::Op;
use rvs_model::{
    Destination, DestinationStatus, Protocol, Scheduler, Service, ServiceKey, ServiceStatus,
};
use rvs_proxy::Desired;
use rvs_proxy::cluster::ObjectName;
use rvs_proxy::desired::{DesiredService, VipKind};
use rvs_proxy::reconcile::{Observed, Ownership, plan, simulate};

fn key(owned: bool, n: u8, udp: bool) -> ServiceKey {
    let ip: IpAddr = if owned {
        [10, 96, 0, n].into()
    } else {
        [172, 31, 0, n].into()
    };
    ServiceKey::Addr {
        protocol: if udp { Protocol::Udp } else { Protocol::Tcp },
        addr: SocketAddr::new(ip, 80),
    }
}

fn dest(n: u8) -> Destination {
    Destination::masquerade(SocketAddr::from(([10, 244, 0, n], 8080)))
}

fn desired_from(entries: &[(ServiceKey, Scheduler, Vec<u8>)]) -> Desired {
    let mut d = Desired::default();
    for (k, s, ds) in entries {
        d.services.insert(
            *k,
            DesiredService {
                service: Service::new(*k, *s),
                destinations: ds.iter().map(|n| (dest(*n).addr, dest(*n))).collect(),
                origin: (
                    ObjectName {
                        namespace: "ns".into(),
                        name: "svc".into(),
                    },
                    String::new(),
                ),
                kind: VipKind::ClusterIp,
            },
        );
        if let ServiceKey::Addr { addr, .. } = k {
            d.addresses.insert(addr.ip());
        }
    }
    d
}

/// An observed service: key, scheduler, and (destination, weight, active connections).
type ObservedSpec = (ServiceKey, Scheduler, Vec<(u8, i32, u32)>);

fn observed_from(entries: &[ObservedSpec]) -> Vec<Observed> {
    entries
        .iter()
        .map(|(k, s, ds)| Observed {
            status: ServiceStatus {
                service: Service::new(*k, *s),
                stats: Default::default(),
            },
            destinations: ds
                .iter()
                .map(|(n, w, conns)| {
                    let mut d = dest(*n);
                    d.weight = *w;
                    DestinationStatus {
                        destination: d,
                        active_conns: *conns,
                        inactive_conns: 0,
                        persistent_conns: 0,
                        stats: Default::default(),
                    }
                })
                .collect(),
        })
        .collect()
}

fn ownership() -> Ownership {
    Ownership {
        addresses: (0..=255).map(|n| IpAddr::from([10, 96, 0, n])).collect(),
        exclude: vec![],
    }
}

fn snapshot(obs: &[Observed]) -> BTreeMap<ServiceKey, (Scheduler, BTreeSet<(SocketAddr, i32)>)> {
    obs.iter()
        .map(|o| {
            (
                o.status.service.key,
                (
                    o.status.service.scheduler,
                    o.destinations
                        .iter()
                        .map(|d| (d.destination.addr, d.destination.weight))
                        .collect(),
                ),
            )
        })
        .collect()
}

fn sched() -> impl Strategy<Value = Scheduler> {
    prop_oneof![
        Just(Scheduler::RoundRobin),
        Just(Scheduler::WeightedLeastConnection),
        Just(Scheduler::SourceHashing)
    ]
}

proptest! {
    #[test]
    fn applying_the_plan_converges_and_leaves_foreign_state_alone(
        want in proptest::collection::vec((0u8..6, any::<bool>(), sched(), proptest::collection::vec(0u8..6, 0..4)), 0..6),
        have in proptest::collection::vec((0u8..6, any::<bool>(), any::<bool>(), sched(), proptest::collection::vec((0u8..6, 0i32..3), 0..4)), 0..6),
    ) {
        let want: Vec<_> = want.into_iter().map(|(n, udp, s, ds)| (key(true, n, udp), s, ds)).collect();
        let mut seen = BTreeSet::new();
        let want: Vec<_> = want.into_iter().filter(|(k, _, _)| seen.insert(*k)).collect();
        let mut seen = BTreeSet::new();
        let have: Vec<_> = have
            .into_iter()
            .map(|(n, udp, owned, s, ds)| (key(owned, n, udp), s, ds.into_iter().map(|(d, w)| (d, w, 0)).collect::<Vec<_>>()))
            .filter(|(k, _, _)| seen.insert(*k))
            .map(|(k, s, mut ds)| { let mut seen = BTreeSet::new(); ds.retain(|(d, _, _)| seen.insert(*d)); (k, s, ds) })
            .collect();
        let desired = desired_from(&want);
        let observed = observed_from(&have);
        let p = plan(&observed, &desired, &ownership());
        let after = simulate(observed.clone(), &p.ops);
        let after_snap = snapshot(&after);
        // Every desired service is there exactly as desired.
        for (k, s, ds) in &want {
            let (sched, dests) = &after_snap[k];
            prop_assert_eq!(sched, s);
            let want_dests: BTreeSet<_> = ds.iter().map(|n| (dest(*n).addr, 1)).collect();
            prop_assert_eq!(dests, &want_dests);
        }
        // Owned services that are not desired are gone; foreign ones untouched.
        let before_snap = snapshot(&observed);
        for (k, v) in &before_snap {
            if ownership().owns(k) {
                prop_assert!(desired.services.contains_key(k) == after_snap.contains_key(k));
            } else if !desired.services.contains_key(k) {
                prop_assert_eq!(after_snap.get(k), Some(v));
            }
        }
        // No operation names a foreign service that is not desired.
        for op in &p.ops {
            let k = match op {
                Op::AddService(s) | Op::EditService(s) => s.key,
                Op::DeleteService(k) | Op::AddDestination(k, _) | Op::EditDestination(k, _) | Op::DeleteDestination(k, _) => *k,
                other => panic!("unexpected op {other:?}"),
            };
            prop_assert!(ownership().owns(&k) || desired.services.contains_key(&k));
        }
        // Converged: planning again does nothing.
        let again = plan(&after, &desired, &ownership());
        prop_assert!(again.ops.is_empty(), "{:?}", again.ops);
    }
}

#[test]
fn removed_tcp_real_servers_drain_and_udp_ones_go_at_once() {
    let tcp = key(true, 1, false);
    let udp = key(true, 2, true);
    let desired = desired_from(&[
        (tcp, Scheduler::RoundRobin, vec![1]),
        (udp, Scheduler::RoundRobin, vec![1]),
    ]);
    let observed = observed_from(&[
        (
            tcp,
            Scheduler::RoundRobin,
            vec![(1, 1, 0), (2, 1, 5), (3, 1, 0)],
        ),
        (udp, Scheduler::RoundRobin, vec![(1, 1, 0), (2, 1, 5)]),
    ]);
    let p = plan(&observed, &desired, &ownership());
    let mut drained = dest(2);
    drained.weight = 0;
    assert_eq!(
        p.ops,
        vec![
            Op::EditDestination(tcp, drained.clone()),
            Op::DeleteDestination(tcp, dest(3).addr),
            Op::DeleteDestination(udp, dest(2).addr),
        ]
    );
    assert_eq!(p.draining, 1);
    // Still busy at weight 0: wait. Idle: delete.
    let busy = observed_from(&[
        (tcp, Scheduler::RoundRobin, vec![(1, 1, 0), (2, 0, 3)]),
        (udp, Scheduler::RoundRobin, vec![(1, 1, 0)]),
    ]);
    let p = plan(&busy, &desired, &ownership());
    assert!(p.ops.is_empty());
    assert_eq!(p.draining, 1);
    let idle = observed_from(&[
        (tcp, Scheduler::RoundRobin, vec![(1, 1, 0), (2, 0, 0)]),
        (udp, Scheduler::RoundRobin, vec![(1, 1, 0)]),
    ]);
    assert_eq!(
        plan(&idle, &desired, &ownership()).ops,
        vec![Op::DeleteDestination(tcp, dest(2).addr)]
    );
}

#[test]
fn a_desired_real_server_left_at_weight_0_is_restored() {
    let tcp = key(true, 1, false);
    let desired = desired_from(&[(tcp, Scheduler::RoundRobin, vec![1])]);
    let observed = observed_from(&[(tcp, Scheduler::RoundRobin, vec![(1, 0, 7)])]);
    assert_eq!(
        plan(&observed, &desired, &ownership()).ops,
        vec![Op::EditDestination(tcp, dest(1))]
    );
}

#[test]
fn excluded_cidrs_and_fwmark_services_are_never_deleted() {
    let excluded = key(true, 9, false);
    let fw = ServiceKey::Fwmark {
        mark: 1,
        ipv6: false,
    };
    let observed = observed_from(&[
        (excluded, Scheduler::RoundRobin, vec![]),
        (fw, Scheduler::RoundRobin, vec![]),
    ]);
    let mut own = ownership();
    own.exclude = vec!["10.96.0.8/29".parse().unwrap()];
    assert!(plan(&observed, &Desired::default(), &own).ops.is_empty());
    assert_eq!(
        plan(&observed, &Desired::default(), &ownership()).ops,
        vec![Op::DeleteService(excluded)]
    );
}

/// A virtual server with a scheduler rvs does not know (as the kernel may
/// report one): on an owned address it is edited to the desired
/// scheduler; elsewhere it is left exactly as it is.
#[test]
fn unknown_schedulers_are_edited_only_where_owned() {
    let fastest = Scheduler::from_kernel_name("fastest").unwrap();
    let observed: Vec<Observed> = [key(true, 1, false), key(false, 1, false)]
        .into_iter()
        .map(|k| Observed {
            status: ServiceStatus {
                service: Service::new(k, fastest),
                stats: Default::default(),
            },
            destinations: vec![],
        })
        .collect();
    let desired = desired_from(&[(key(true, 1, false), Scheduler::RoundRobin, vec![])]);
    let ownership = Ownership {
        addresses: desired.addresses.clone(),
        exclude: vec![],
    };
    let p = plan(&observed, &desired, &ownership);
    assert_eq!(
        p.ops,
        [Op::EditService(Service::new(
            key(true, 1, false),
            Scheduler::RoundRobin
        ))]
    );
}
