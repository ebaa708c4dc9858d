//! Restarting the loader: the maps and links stay pinned, a new loader
//! adopts them, and a client connecting all along never fails.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed expect is a failed test

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::{Rig, apply};
use rvs_ebpf::SocketLb;
use rvs_model::admin::{Admin, Op};
use rvs_model::{Destination, Scheduler, Service, ServiceKey};
use rvs_testrig::cgroup::{ClientSpec, Mode};

/// The client side: the test binary re-run inside the cgroup.
#[test]
fn client_role() {
    rvs_testrig::cgroup::serve_client_role();
}

fn vip() -> SocketAddr {
    "10.96.0.10:80".parse().unwrap()
}

fn dest(host: u8) -> Destination {
    Destination::masquerade(SocketAddr::from(([10, 77, 0, host], 8080)))
}

#[test]
fn a_restart_adopts_the_maps_without_a_failed_connection() {
    let Some(rig) = Rig::or_skip("a_restart_adopts_the_maps_without_a_failed_connection") else {
        return;
    };
    let _b = [
        rig.tcp_backend(2, "b2"),
        rig.tcp_backend(3, "b3"),
        rig.tcp_backend(4, "b4"),
    ];
    let key = ServiceKey::tcp(vip());
    let mut first = rig.attach();
    apply(
        &mut first,
        &[
            Op::AddService(Service::new(key, Scheduler::RoundRobin)),
            Op::AddDestination(key, dest(2)),
            Op::AddDestination(key, dest(3)),
        ],
    );
    // A client connecting every millisecond or so, bounded in count and time.
    let mut spec = ClientSpec::new(Mode::Tcp, vip(), 3000);
    spec.within = Duration::from_secs(3);
    spec.pace = Duration::from_micros(500);
    let client = rig.spawn(&spec);
    std::thread::sleep(Duration::from_millis(300));
    // The process "exits": everything stays pinned and attached.
    drop(first);
    std::thread::sleep(Duration::from_millis(300));
    // Three restarts in a row, each adopting the last one's maps.
    let mut lb = rig.attach();
    for _ in 0..2 {
        std::thread::sleep(Duration::from_millis(200));
        lb = rig.attach();
    }
    let dests = lb.destinations(&key).expect("adopted service");
    assert_eq!(dests.len(), 2, "{dests:?}");
    // The adopted table takes changes.
    apply(&mut lb, &[Op::AddDestination(key, dest(4))]);
    let report = client.wait().expect("client");
    assert!(report.errors().is_empty(), "{:?}", report.errors());
    assert!(report.attempts.len() >= 500, "{}", report.attempts.len());
    let counts = report.counts();
    assert!(
        counts.contains_key("b4"),
        "the change after the restart: {counts:?}"
    );
    // One set of links: the old ones were retired.
    let links = std::fs::read_dir(rig.pin_dir())
        .unwrap()
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().starts_with("link_"))
        .count();
    assert_eq!(links, 8);
    // Counters survive the restart.
    assert_eq!(
        lb.service(&key).unwrap().stats.conns,
        report.attempts.len() as u64
    );
    lb.detach().expect("detach");
    assert!(
        !SocketLb::remove_pins(&rig.pin_dir()).unwrap(),
        "nothing left"
    );
}

#[test]
fn pinned_maps_of_another_size_are_refused_with_a_way_out() {
    let Some(rig) = Rig::or_skip("pinned_maps_of_another_size_are_refused_with_a_way_out") else {
        return;
    };
    let lb = rig.attach();
    drop(lb);
    let mut opts = rig.options();
    opts.max_services *= 2;
    let err = SocketLb::attach(opts.clone()).unwrap_err();
    assert!(err.to_string().contains("remove the pins"), "{err}");
    assert!(SocketLb::remove_pins(&rig.pin_dir()).unwrap());
    SocketLb::attach(opts).unwrap().detach().unwrap();
}
