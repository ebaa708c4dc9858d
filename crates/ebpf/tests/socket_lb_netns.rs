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

#[test]
fn wrr_is_exact_over_each_cycle() {
    let Some(rig) = Rig::or_skip("wrr_is_exact_over_each_cycle") else {
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
            Op::AddService(Service::new(key, Scheduler::WeightedRoundRobin)),
            Op::AddDestination(key, dest(2, 8080, 3)),
            Op::AddDestination(key, dest(3, 8080, 2)),
            Op::AddDestination(key, dest(4, 8080, 1)),
        ],
    );
    let report = rig.run(&ClientSpec::new(Mode::Tcp, vip(), 60));
    assert!(report.errors().is_empty(), "{:?}", report.errors());
    let counts = report.counts();
    assert_eq!(counts.get("b2"), Some(&30), "{counts:?}");
    assert_eq!(counts.get("b3"), Some(&20), "{counts:?}");
    assert_eq!(counts.get("b4"), Some(&10), "{counts:?}");
    // The kernel's interleaving for these weights (list b4, b3, b2):
    // levels 3, 2, 1.
    assert_eq!(report.replies()[..6], ["b2", "b3", "b2", "b4", "b3", "b2"]);
    lb.detach().expect("detach");
}

#[test]
fn weight_zero_takes_no_new_connections_and_none_left_is_refused() {
    let Some(rig) = Rig::or_skip("weight_zero_takes_no_new_connections_and_none_left_is_refused")
    else {
        return;
    };
    let _b = [rig.tcp_backend(2, "b2"), rig.tcp_backend(3, "b3")];
    let mut lb = rig.attach();
    let key = ServiceKey::tcp(vip());
    apply(
        &mut lb,
        &[
            Op::AddService(Service::new(key, Scheduler::RoundRobin)),
            Op::AddDestination(key, dest(2, 8080, 1)),
            Op::AddDestination(key, dest(3, 8080, 1)),
        ],
    );
    // A connection made before the change is untouched by it.
    let mut spec = ClientSpec::new(Mode::Tcp, vip(), 10);
    apply(&mut lb, &[Op::EditDestination(key, dest(3, 8080, 0))]);
    let report = rig.run(&spec);
    assert_eq!(report.counts().get("b2"), Some(&10), "{report:?}");
    // mh and sh refuse a weight-0 slot; so does an empty rr table.
    apply(&mut lb, &[Op::EditDestination(key, dest(2, 8080, 0))]);
    spec.count = 2;
    let report = rig.run(&spec);
    assert_eq!(report.errors().len(), 2, "{report:?}");
    assert!(
        report.errors()[0].contains("refused"),
        "IPVS answers port unreachable: {report:?}"
    );
    // Back to weight 1: served again, at once.
    apply(&mut lb, &[Op::EditDestination(key, dest(3, 8080, 1))]);
    let report = rig.run(&spec);
    assert_eq!(report.counts().get("b3"), Some(&2), "{report:?}");
    lb.detach().expect("detach");
}

#[test]
fn udp_connected_and_unconnected_see_the_virtual_address() {
    let Some(rig) = Rig::or_skip("udp_connected_and_unconnected_see_the_virtual_address") else {
        return;
    };
    let _b = [rig.udp_backend(2, "u2"), rig.udp_backend(3, "u3")];
    let mut lb = rig.attach();
    let vip: SocketAddr = "10.96.0.53:53".parse().unwrap();
    let key = ServiceKey::udp(vip);
    apply(
        &mut lb,
        &[
            Op::AddService(Service::new(key, Scheduler::RoundRobin)),
            Op::AddDestination(key, dest(2, 5353, 1)),
            Op::AddDestination(key, dest(3, 5353, 1)),
        ],
    );
    // Connected UDP: connect() picks, getpeername shows the VIP.
    let report = rig.run(&ClientSpec::new(Mode::UdpConnected, vip, 10));
    assert!(report.errors().is_empty(), "{report:?}");
    assert_eq!(
        report.counts().values().copied().collect::<Vec<_>>(),
        [5, 5]
    );
    for a in &report.attempts {
        let Attempt::Ok { peer, .. } = a else {
            continue;
        };
        assert_eq!(*peer, vip);
    }
    // Unconnected: every reply comes from the VIP (recvmsg), and one
    // socket's datagrams stay on one server (a flow), as IPVS keeps a
    // connection entry per client port.
    let mut spec = ClientSpec::new(Mode::Udp, vip, 8);
    spec.one_socket = true;
    let report = rig.run(&spec);
    assert!(report.errors().is_empty(), "{report:?}");
    assert_eq!(report.counts().len(), 1, "one flow, one server: {report:?}");
    for a in &report.attempts {
        let Attempt::Ok { peer, .. } = a else {
            continue;
        };
        assert_eq!(*peer, vip, "the reply's source is the VIP");
    }
    // A socket each: flows are scheduled in turn.
    spec.one_socket = false;
    let report = rig.run(&spec);
    assert_eq!(
        report.counts().values().copied().collect::<Vec<_>>(),
        [4, 4]
    );
    // Counters: 10 connected + 1 + 8 flows; packets in and out for the
    // 16 unconnected datagrams.
    let svc = lb.service(&key).unwrap();
    assert_eq!(svc.stats.conns, 19, "{svc:?}");
    assert_eq!(svc.stats.inpkts, 16, "{svc:?}");
    assert_eq!(svc.stats.outpkts, 16, "{svc:?}");
    lb.apply(&Op::Zero(Some(key))).unwrap();
    assert_eq!(lb.service(&key).unwrap().stats.conns, 0);
    lb.detach().expect("detach");
}

#[test]
fn client_ip_affinity_sticks_per_namespace_and_ends_with_weight_zero() {
    let Some(rig) =
        Rig::or_skip("client_ip_affinity_sticks_per_namespace_and_ends_with_weight_zero")
    else {
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
            Op::AddService(Service::new(key, Scheduler::RoundRobin).persistent(60)),
            Op::AddDestination(key, dest(2, 8080, 1)),
            Op::AddDestination(key, dest(3, 8080, 1)),
            Op::AddDestination(key, dest(4, 8080, 1)),
        ],
    );
    // Unbound sockets of one namespace are one client.
    let report = rig.run(&ClientSpec::new(Mode::Tcp, vip(), 12));
    let counts = report.counts();
    assert_eq!(counts.len(), 1, "{counts:?}");
    let first = counts.keys().next().unwrap().clone();
    // Bound to another source address: another client.
    let mut spec = ClientSpec::new(Mode::Tcp, vip(), 6);
    spec.bind = Some("10.77.0.11".parse().unwrap());
    let bound = rig.run(&spec);
    assert_eq!(bound.counts().len(), 1, "{bound:?}");
    // The affine server quiesced: the affinity ends (expire_quiescent_template).
    let host: u8 = first.trim_start_matches('b').parse().unwrap();
    apply(&mut lb, &[Op::EditDestination(key, dest(host, 8080, 0))]);
    let report = rig.run(&ClientSpec::new(Mode::Tcp, vip(), 6));
    let counts = report.counts();
    assert_eq!(counts.len(), 1, "a new affinity: {counts:?}");
    assert!(!counts.contains_key(&first), "{counts:?}");
    lb.detach().expect("detach");
}

#[test]
fn ipv6_and_v4_mapped_destinations_are_balanced() {
    let Some(rig) = Rig::or_skip("ipv6_and_v4_mapped_destinations_are_balanced") else {
        return;
    };
    let b6: Vec<_> = (2..4u16)
        .map(|i| {
            let addr: SocketAddr = format!("[fd77::{i}]:8080").parse().unwrap();
            rig.server
                .enter(|| rvs_testrig::backend::Backend::tcp(addr, &format!("v6-{i}")))
                .unwrap()
                .unwrap()
        })
        .collect();
    let _b4 = rig.tcp_backend(2, "b2");
    let mut lb = rig.attach();
    let vip6: SocketAddr = "[fd96::10]:80".parse().unwrap();
    let key6 = ServiceKey::tcp(vip6);
    let key4 = ServiceKey::tcp(vip());
    apply(
        &mut lb,
        &[
            Op::AddService(Service::new(key6, Scheduler::RoundRobin)),
            Op::AddDestination(key6, Destination::masquerade(b6[0].addr())),
            Op::AddDestination(key6, Destination::masquerade(b6[1].addr())),
            Op::AddService(Service::new(key4, Scheduler::RoundRobin)),
            Op::AddDestination(key4, dest(2, 8080, 1)),
        ],
    );
    let report = rig.run(&ClientSpec::new(Mode::Tcp, vip6, 4));
    assert_eq!(
        report.counts().values().copied().collect::<Vec<_>>(),
        [2, 2]
    );
    for a in &report.attempts {
        let Attempt::Ok { peer, .. } = a else {
            panic!("{a:?}")
        };
        assert_eq!(*peer, vip6);
    }
    // An IPv4 service reached through a v6 socket (::ffff:10.96.0.10).
    let mapped: SocketAddr = "[::ffff:10.96.0.10]:80".parse().unwrap();
    let report = rig.run(&ClientSpec::new(Mode::Tcp, mapped, 2));
    assert_eq!(report.replies(), ["b2", "b2"], "{report:?}");
    lb.detach().expect("detach");
}

#[test]
fn the_admin_socket_lists_services_and_counters_as_rvsadm_reads_them() {
    let Some(rig) =
        Rig::or_skip("the_admin_socket_lists_services_and_counters_as_rvsadm_reads_them")
    else {
        return;
    };
    let _b = [rig.tcp_backend(2, "b2"), rig.tcp_backend(3, "b3")];
    let lb = rig.attach();
    let shared: rvs_admin::SharedAdmin = std::sync::Arc::new(std::sync::Mutex::new(lb));
    let dir = rvs_testrig::TempDir::new("ebpf-admin").unwrap();
    let path = dir.join("admin.sock");
    let listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
    let server = rvs_admin::Server::new(listener, std::sync::Arc::clone(&shared))
        .unwrap()
        .spawn()
        .unwrap();
    // What `rvsadm --target unix:PATH` does: the admin client.
    let mut client = rvs_admin::AdminClient::connect(&path).unwrap();
    let key = ServiceKey::tcp(vip());
    for result in client.apply_batch(&[
        Op::AddService(Service::new(key, Scheduler::RoundRobin)),
        Op::AddDestination(key, dest(2, 8080, 1)),
        Op::AddDestination(key, dest(3, 8080, 1)),
    ]) {
        result.unwrap();
    }
    let err = client
        .apply(&Op::AddService(Service::new(
            ServiceKey::Fwmark {
                mark: 7,
                ipv6: false,
            },
            Scheduler::RoundRobin,
        )))
        .unwrap_err();
    assert_eq!(err.errno(), Some(rvs_model::admin::errno::EOPNOTSUPP));
    let report = rig.run(&ClientSpec::new(Mode::Tcp, vip(), 4));
    assert!(report.errors().is_empty(), "{report:?}");
    let services = client.services().unwrap();
    assert_eq!(services.len(), 1);
    assert_eq!(services[0].stats.conns, 4);
    let dests = client.destinations(&key).unwrap();
    assert_eq!(
        dests.iter().map(|d| d.stats.conns).collect::<Vec<_>>(),
        [2, 2]
    );
    assert_eq!(client.info().unwrap().version, 0x01_02_01);
    drop(client);
    drop(server);
    drop(shared);
    // Detach by the pins (the server may hold its handle a moment longer).
    assert!(rvs_ebpf::SocketLb::remove_pins(&rig.pin_dir()).unwrap());
}
