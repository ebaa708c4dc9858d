//! Long-lived connections rebalanced by the eBPF dataplane after a
//! scale-up, with real clients (issue 13): 40 keep-alive HTTP/1.1 clients
//! of Python's urllib3 (one process and pooled connection each, a request
//! every 100–500 ms, no retries) in the test's child cgroup and client
//! namespace, on a virtual service with 2 real servers in the backend
//! namespace, scaled to 4 after 10 s. With the `idle` policy, idle
//! sockets are closed by `bpf_sock_destroy()` until the requests are even
//! within ±20 %, within 30 s of the scale-up and without a failed
//! request; a second service with the policy off (the control, side by
//! side) keeps its skew.
//!
//! Needs root, a cgroup v2, bpffs and Linux ≥ 6.5 (the host's 6.18).
//! Traffic stays between the two namespaces the rig creates; each run
//! ends after 45 s of client time.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)] // test code

mod common;

use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{Rig, apply};
use rvs_model::admin::Op;
use rvs_model::{Destination, Protocol, Scheduler, Service, ServiceKey};
use rvs_rebalance::Policy;
use rvs_testrig::keepalive::{self, Requests};

const CLIENTS: usize = 40;
const SCALE_AT: f64 = 10.0;
const RUN_SECS: f64 = 45.0;
const WINDOW: f64 = 5.0;

/// Keep-alive servers `id` 0..4 on 10.77.0.`first + id`:8080.
fn backends(rig: &Rig, first: u8) -> Vec<Destination> {
    (0..4u8)
        .map(|id| {
            let addr: SocketAddr = format!("10.77.0.{}:8080", first + id).parse().unwrap();
            let listener = rig
                .server
                .enter(|| TcpListener::bind(addr))
                .expect("enter")
                .expect("bind");
            keepalive::http_backend(listener, usize::from(id));
            Destination::masquerade(addr)
        })
        .collect()
}

fn service(vip: SocketAddr) -> ServiceKey {
    ServiceKey::Addr {
        protocol: Protocol::Tcp,
        addr: vip,
    }
}

#[test]
fn idle_sockets_are_closed_to_rebalance_after_a_scale_up_without_a_failed_request() {
    const TEST: &str = "rebalance_netns";
    let Some(rig) = Rig::or_skip(TEST) else {
        return;
    };
    if let Err(why) = keepalive::python_urllib3() {
        rvs_testrig::skip(TEST, &why);
        return;
    }
    let lb = Arc::new(Mutex::new(rig.attach()));
    let idle_vip: SocketAddr = "10.96.0.10:80".parse().unwrap();
    let off_vip: SocketAddr = "10.96.0.11:80".parse().unwrap();
    let idle_dests = backends(&rig, 2);
    let off_dests = backends(&rig, 6);
    {
        let mut lb = lb.lock().unwrap();
        for (vip, dests) in [(idle_vip, &idle_dests), (off_vip, &off_dests)] {
            let key = service(vip);
            let mut ops = vec![Op::AddService(Service::new(key, Scheduler::RoundRobin))];
            ops.extend(
                dests[..2]
                    .iter()
                    .map(|d| Op::AddDestination(key, d.clone())),
            );
            apply(&mut lb, &ops);
        }
        lb.rebalancing()
            .set((Protocol::Tcp, idle_vip), Some(Policy::IDLE));
        // The programs load at the first tick; a kernel without
        // bpf_sock_destroy is a skip.
        if let Err(err) = lb.rebalance_tick(Instant::now()) {
            if matches!(err, rvs_ebpf::EbpfError::Unsupported(_)) {
                rvs_testrig::skip(TEST, &err);
                return;
            }
            panic!("first tick: {err}");
        }
        assert!(lb.rebalancing().active());
    }
    let stop = Arc::new(AtomicBool::new(false));
    let ticker = {
        let (lb, stop) = (Arc::clone(&lb), Arc::clone(&stop));
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let next = lb.lock().unwrap().rebalance_tick(Instant::now()).unwrap();
                std::thread::sleep(next.saturating_duration_since(Instant::now()));
            }
        })
    };
    let started = Instant::now();
    let clients: Vec<_> = [idle_vip, off_vip]
        .iter()
        .map(|vip| {
            let mut cmd = rig
                .cgroup
                .command(Some(&rig.client), std::path::Path::new("python3"));
            cmd.args(keepalive::clients_args(
                &vip.ip().to_string(),
                vip.port(),
                CLIENTS,
                RUN_SECS,
            ));
            std::thread::spawn(move || cmd.output().unwrap())
        })
        .collect();
    std::thread::sleep(Duration::from_secs_f64(SCALE_AT).saturating_sub(started.elapsed()));
    {
        let mut lb = lb.lock().unwrap();
        for (vip, dests) in [(idle_vip, &idle_dests), (off_vip, &off_dests)] {
            let key = service(vip);
            let ops: Vec<Op> = dests[2..]
                .iter()
                .map(|d| Op::AddDestination(key, d.clone()))
                .collect();
            apply(&mut lb, &ops);
        }
    }
    let mut runs = Vec::new();
    for (c, label) in clients.into_iter().zip(["idle", "off"]) {
        let out = c.join().unwrap();
        assert!(
            out.status.success(),
            "{label} clients: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        runs.push(Requests::parse(&String::from_utf8_lossy(&out.stdout)));
    }
    stop.store(true, Ordering::Relaxed);
    ticker.join().unwrap();
    let statuses = lb.lock().unwrap().rebalancing().statuses();
    let closed: u64 = statuses
        .iter()
        .flat_map(|s| s.closed.iter().map(|&(_, n)| n))
        .sum();
    let (idle, control) = (&runs[0], &runs[1]);
    print!(
        "{}",
        idle.summary(
            &format!("policy idle, {closed} sockets closed to rebalance"),
            RUN_SECS,
            WINDOW,
        )
    );
    print!("{}", control.summary("policy off", RUN_SECS, WINDOW));

    // The control: the skew stays, the new real servers get nothing.
    let late: [u32; 4] = control.per_backend(RUN_SECS - 10.0, RUN_SECS);
    assert_eq!(&late[2..], [0, 0], "control, last 10 s: {late:?}");
    assert!(control.failed.is_empty(), "{:?}", control.failed);

    // Rebalanced: even within ±20 % within 30 s of the scale-up, and
    // still at the end; no request failed; only the idle service's
    // sockets were closed.
    assert!(idle.failed.is_empty(), "failed requests: {:?}", idle.failed);
    let Some(after) = idle.even_after(SCALE_AT, WINDOW, 30.0, 0.2) else {
        panic!("never even within 30 s of the scale-up");
    };
    println!("even (±20 %, {WINDOW} s window) {after:.1} s after the scale-up");
    let end: [u32; 4] = idle.per_backend(RUN_SECS - 10.0, RUN_SECS);
    assert!(keepalive::even_within(&end, 0.2), "last 10 s: {end:?}");
    assert!(closed > 0);
    assert!(
        statuses.iter().all(|s| s.service == service(idle_vip)),
        "{statuses:?}"
    );
}
