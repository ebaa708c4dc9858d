//! End-to-end tests of `rvsd` with real sockets on loopback: programmed
//! through its admin socket (the protocol `rvsadm --target unix:PATH`
//! speaks), it round-robins TCP and UDP across backends, honours weights,
//! keeps a drained (weight 0) destination's open connections, reschedules
//! away from a dead backend, counts traffic, and stops cleanly on SIGTERM.
//! Its admin socket is 0600, or 0660 for `--admin-socket-group`, and
//! SIGTERM stops it even after its socket file was removed or replaced.
//! A second rvsd in the same network namespace refuses to start and names
//! the first (one in another namespace starts: `rvsd_netns.rs`).
//! Every loop is bounded in count and time.
//!
//! Each rvsd gets its own `--instance-lock` name, so the tests run side by
//! side (and beside a real dataplane on the host).

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code

mod common;

use std::net::SocketAddr;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{RVSD, Rvsd, STEP, lock_name};
use rvs_admin::Admin;
use rvs_model::admin::Op;
use rvs_model::{Destination, Protocol, Scheduler, Service, ServiceKey};
use rvs_testrig::backend::{Backend, Probe, ask_once, ask_udp, ask_until_up};
use rvs_testrig::process::run_bounded;

fn addr(text: &str) -> SocketAddr {
    text.parse().unwrap()
}

fn tcp_key(vip: SocketAddr) -> ServiceKey {
    ServiceKey::Addr {
        protocol: Protocol::Tcp,
        addr: vip,
    }
}

#[test]
fn tcp_round_robin_weights_drain_and_dead_backends() {
    let a = Backend::tcp(addr("127.0.61.1:0"), "a").unwrap();
    let b = Backend::tcp(addr("127.0.61.2:0"), "b").unwrap();
    let rvsd = Rvsd::start("tcp");
    let mut admin = rvsd.admin();
    let vip = addr("127.0.60.1:18080");
    let key = tcp_key(vip);
    admin
        .apply(&Op::AddService(Service::new(key, Scheduler::RoundRobin)))
        .unwrap();
    for backend in [&a, &b] {
        admin
            .apply(&Op::AddDestination(
                key,
                Destination::masquerade(backend.addr()),
            ))
            .unwrap();
    }
    let mut names = vec![ask_until_up(vip, STEP).unwrap()];
    for _ in 0..9 {
        names.push(ask_once(vip, STEP).unwrap());
    }
    for pair in names.windows(2) {
        assert_ne!(pair[0], pair[1], "rr alternates: {names:?}");
    }

    // Weighted round robin 3:1.
    admin
        .apply(&Op::EditService(Service::new(
            key,
            Scheduler::WeightedRoundRobin,
        )))
        .unwrap();
    let mut heavy = Destination::masquerade(a.addr());
    heavy.weight = 3;
    admin.apply(&Op::EditDestination(key, heavy)).unwrap();
    let picks: Vec<String> = (0..40).map(|_| ask_once(vip, STEP).unwrap()).collect();
    let to_a = picks.iter().filter(|n| *n == "a").count();
    assert_eq!(to_a, 30, "wrr 3:1 over 40 connections: {picks:?}");

    // Drain b: an open connection to b keeps working, new ones go to a.
    admin
        .apply(&Op::EditService(Service::new(key, Scheduler::RoundRobin)))
        .unwrap();
    let mut held = Probe::connect_to(vip, "b", 4, STEP)
        .unwrap()
        .expect("one of four rr connections reaches b");
    let mut quiet = Destination::masquerade(b.addr());
    quiet.weight = 0;
    admin.apply(&Op::EditDestination(key, quiet)).unwrap();
    for _ in 0..6 {
        assert_eq!(ask_once(vip, STEP).unwrap(), "a");
    }
    assert_eq!(
        held.ask().unwrap(),
        "b",
        "the drained destination's connection lives on"
    );
    let dests = admin.destinations(&key).unwrap();
    let b_status = dests
        .iter()
        .find(|d| d.destination.addr == b.addr())
        .unwrap();
    assert_eq!(b_status.active_conns, 1, "{dests:?}");
    drop(held);

    // A dead destination is skipped: every new connection still succeeds.
    let dead = addr("127.0.61.3:9");
    admin
        .apply(&Op::AddDestination(key, Destination::masquerade(dead)))
        .unwrap();
    for _ in 0..6 {
        assert_eq!(ask_once(vip, STEP).unwrap(), "a");
    }

    let service = admin.service(&key).unwrap();
    assert!(service.stats.conns >= 60, "{:?}", service.stats);
    assert!(service.stats.inbytes >= 60 * 4, "{:?}", service.stats);
    assert!(service.stats.outbytes >= 60 * 2, "{:?}", service.stats);
    assert!(!admin.connections().unwrap().is_empty());

    let status = rvsd.terminate();
    assert!(status.success(), "{status:?}");
}

#[test]
fn udp_flows_reach_backends_and_the_socket_goes_away_on_sigterm() {
    let a = Backend::udp(addr("127.0.63.1:0"), "ua").unwrap();
    let b = Backend::udp(addr("127.0.63.2:0"), "ub").unwrap();
    let rvsd = Rvsd::start("udp");
    let socket = rvsd.socket.clone();
    let mut admin = rvsd.admin();
    let vip = addr("127.0.62.1:15353");
    let key = ServiceKey::Addr {
        protocol: Protocol::Udp,
        addr: vip,
    };
    admin
        .apply(&Op::AddService(Service::new(key, Scheduler::RoundRobin)))
        .unwrap();
    for backend in [&a, &b] {
        admin
            .apply(&Op::AddDestination(
                key,
                Destination::masquerade(backend.addr()),
            ))
            .unwrap();
    }
    let deadline = Instant::now() + STEP;
    let mut names = Vec::new();
    let mut port = 41000;
    while names.len() < 6 {
        assert!(Instant::now() < deadline, "UDP VIP answered only {names:?}");
        port += 1;
        let from = addr(&format!("127.0.64.1:{port}"));
        if let Ok(name) = ask_udp(from, vip, Duration::from_millis(500)) {
            names.push(name);
        }
    }
    assert!(
        names.iter().any(|n| n == "ua") && names.iter().any(|n| n == "ub"),
        "{names:?}"
    );
    let status = rvsd.terminate();
    assert!(status.success(), "{status:?}");
    assert!(!socket.exists(), "rvsd removes its admin socket");
}

#[test]
fn ipv6_loopback_and_source_hashing() {
    let v6 = "[::1]:0".parse::<SocketAddr>().unwrap();
    let Ok(six) = Backend::tcp(v6, "six") else {
        eprintln!("skipping: this host has no ::1");
        return;
    };
    let seven = Backend::tcp(v6, "seven").unwrap();
    let rvsd = Rvsd::start("v6");
    let mut admin = rvsd.admin();
    let vip = addr("[::1]:18098");
    let key = tcp_key(vip);
    admin
        .apply(&Op::AddService(Service::new(key, Scheduler::SourceHashing)))
        .unwrap();
    for backend in [&six, &seven] {
        admin
            .apply(&Op::AddDestination(
                key,
                Destination::masquerade(backend.addr()),
            ))
            .unwrap();
    }
    // sh hashes the client address only: every connection from ::1 lands
    // on the same destination.
    let first = ask_until_up(vip, STEP).unwrap();
    for _ in 0..8 {
        assert_eq!(
            ask_once(vip, STEP).unwrap(),
            first,
            "sh is sticky per client"
        );
    }
    let status = admin.service(&key).unwrap();
    assert_eq!(status.stats.conns, 9, "{status:?}");
    assert!(rvsd.terminate().success());
}

#[test]
fn a_second_rvsd_in_the_namespace_refuses_to_start_and_names_the_first() {
    let first = Rvsd::start("second");
    let lock = lock_name("second");
    // Same lock, same socket path: it must stop before touching the
    // first one's socket.
    let (status, stderr) = run_bounded(
        Command::new(RVSD)
            .arg("--admin-socket")
            .arg(&first.socket)
            .args(["--instance-lock", &lock]),
        STEP,
    )
    .unwrap();
    assert!(!status.success(), "{status:?}");
    let expected = format!(
        "rvsd: another userspace dataplane is running in this network namespace (pid {}: {RVSD} --admin-socket {} --workers 2",
        first.daemon.id(),
        first.socket.display()
    );
    assert!(
        stderr.contains(&expected),
        "expected {expected:?} in:\n{stderr}"
    );
    assert!(stderr.contains("); stop it first"), "{stderr}");
    assert_eq!(first.admin().info().unwrap().conn_table_size, 4096);

    let status = first.terminate();
    assert!(status.success(), "{status:?}");
    // Free again once the first one is gone.
    let again = Rvsd::start("second");
    assert!(again.admin().services().unwrap().is_empty());
    assert!(again.terminate().success());
}

#[test]
fn the_admin_socket_is_owner_only_or_shared_with_one_group() {
    use std::os::unix::fs::MetadataExt as _;
    let owner_only = Rvsd::start("mode");
    let meta = std::fs::metadata(&owner_only.socket).unwrap();
    assert_eq!(meta.mode() & 0o7777, 0o600);
    assert!(owner_only.terminate().success());

    // Our own effective gid: a group we may give files to without root.
    let gid = std::fs::metadata("/proc/self").unwrap().gid().to_string();
    let shared = Rvsd::start_with(
        "group",
        Command::new(RVSD),
        &lock_name("group"),
        &["--admin-socket-group", &gid],
    );
    let meta = std::fs::metadata(&shared.socket).unwrap();
    assert_eq!(meta.mode() & 0o7777, 0o660);
    assert_eq!(meta.gid().to_string(), gid);
    assert!(shared.terminate().success());
}

#[test]
fn sigterm_stops_rvsd_whatever_became_of_its_socket_file() {
    // Removed by a tmp cleaner: stopping used to connect to it and hang.
    let rvsd = Rvsd::start("removed");
    std::fs::remove_file(&rvsd.socket).unwrap();
    let began = Instant::now();
    assert!(rvsd.terminate().success());
    assert!(
        began.elapsed() < Duration::from_secs(3),
        "{:?}",
        began.elapsed()
    );

    // Replaced by an operator: rvsd stops and leaves the new file.
    let mut rvsd = Rvsd::start("replaced");
    std::fs::remove_file(&rvsd.socket).unwrap();
    std::fs::write(&rvsd.socket, "not rvsd's").unwrap();
    assert!(rvsd.stop().success());
    assert_eq!(std::fs::read_to_string(&rvsd.socket).unwrap(), "not rvsd's");
}
