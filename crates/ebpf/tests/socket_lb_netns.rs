//! The socket LB on the host kernel: programs attached to a child cgroup
//! the test creates, clients moved into it and into their own network
//! namespace, backends in another; real TCP and UDP traffic.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed expect is a failed test

mod common;

use std::net::SocketAddr;

use common::{Rig, apply};
use rvs_model::admin::{Admin, Op};
use rvs_model::{Destination, Scheduler, Service, ServiceKey};
use rvs_testrig::cgroup::{Attempt, ClientSpec, Mode};

/// The client side: the test binary re-run inside the cgroup.
#[test]
fn client_role() {
    rvs_testrig::cgroup::serve_client_role();
}

fn vip() -> SocketAddr {
    "10.96.0.10:80".parse().expect("vip")
}

fn dest(host: u8, port: u16, weight: i32) -> Destination {
    let mut d = Destination::masquerade(SocketAddr::from(([10, 77, 0, host], port)));
    d.weight = weight;
    d
}

#[test]
fn tcp_rr_is_exact_and_the_peer_is_the_virtual_address() {
    let Some(rig) = Rig::or_skip("tcp_rr_is_exact_and_the_peer_is_the_virtual_address") else {
        return;
    };
    let _b = [
        rig.tcp_backend(2, "b2"),
        rig.tcp_backend(3, "b3"),
        rig.tcp_backend(4, "b4"),
    ];
    let mut lb = rig.attach();
    let key = ServiceKey::tcp(vip());
    apply(
        &mut lb,
        &[
            Op::AddService(Service::new(key, Scheduler::RoundRobin)),
            Op::AddDestination(key, dest(2, 8080, 1)),
            Op::AddDestination(key, dest(3, 8080, 1)),
            Op::AddDestination(key, dest(4, 8080, 1)),
        ],
    );
    let report = rig.run(&ClientSpec::new(Mode::Tcp, vip(), 30));
    assert!(report.errors().is_empty(), "{:?}", report.errors());
    let counts = report.counts();
    assert_eq!(counts.len(), 3, "{counts:?}");
    assert!(counts.values().all(|&n| n == 10), "{counts:?}");
    // The kernel's order: newest first.
    assert_eq!(report.replies()[..3], ["b4", "b3", "b2"]);
    for a in &report.attempts {
        let Attempt::Ok { peer, .. } = a else {
            continue;
        };
        assert_eq!(*peer, vip(), "getpeername shows the virtual address");
    }
    // Counters, as rvsadm -Ln --stats reads them.
    let svc = lb.service(&key).expect("service");
    assert_eq!(svc.stats.conns, 30);
    let dests = lb.destinations(&key).expect("destinations");
    assert!(dests.iter().all(|d| d.stats.conns == 10), "{dests:?}");
    lb.detach().expect("detach");
    // Detached: the virtual address is no longer translated (and has no
    // route in the client namespace).
    let report = rig.run(&ClientSpec::new(Mode::Tcp, vip(), 1));
    assert_eq!(report.errors().len(), 1, "{report:?}");
}
