//! Long-lived connections rebalanced after a scale-up, with real clients
//! (issue 13): 40 keep-alive HTTP/1.1 clients of Python's urllib3 (one
//! process and pooled connection each, a request every 100–500 ms, no retries, so a
//! failed request is one the client sees) on a userspace virtual service
//! with 2 real servers, scaled to 4 after 10 s. With the `idle` policy the
//! requests are even within ±20 % within 30 s of the scale-up, with no
//! failed request; with the policy off (the control, run side by side)
//! the new real servers get nothing.
//!
//! Loopback only (127.0.0.1); each run ends after 45 s of client time.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)] // test code

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::Duration;

use rvs_model::admin::{Admin as _, Op};
use rvs_model::{Destination, Protocol, Scheduler, Service, ServiceKey};
use rvs_rebalance::Policy;
use rvs_testrig::keepalive::{self, Requests};
use rvs_userspace::{Dataplane, Options};

const CLIENTS: usize = 40;
const SCALE_AT: f64 = 10.0;
const RUN_SECS: f64 = 45.0;
const WINDOW: f64 = 5.0;

/// An HTTP/1.1 keep-alive server on loopback answering with `id`.
fn backend(id: usize) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    keepalive::http_backend(listener, id);
    addr
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// One run: a dataplane with `policy` for the service, 2 backends, 2
/// more at `SCALE_AT`, the clients for `RUN_SECS`.
fn run(policy: Policy, backends: [SocketAddr; 4]) -> Requests {
    let dp = Dataplane::start(Options {
        workers: 1,
        instance_lock: None,
        ..Options::default()
    })
    .unwrap();
    let vip: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let key = ServiceKey::Addr {
        protocol: Protocol::Tcp,
        addr: vip,
    };
    let mut admin = dp.admin();
    admin
        .apply(&Op::AddService(Service::new(key, Scheduler::RoundRobin)))
        .unwrap();
    for b in &backends[..2] {
        admin
            .apply(&Op::AddDestination(key, Destination::masquerade(*b)))
            .unwrap();
    }
    dp.sched()
        .rebalancing()
        .set(Protocol::Tcp, vip, Some(policy));
    rvs_testrig::eventually("the listener", Duration::from_secs(10), || {
        TcpStream::connect(vip).is_ok()
    });
    let clients = keepalive::clients_command("127.0.0.1", vip.port(), CLIENTS, RUN_SECS);
    let run = keepalive::run_scaled(clients, SCALE_AT, || {
        for b in &backends[2..] {
            admin
                .apply(&Op::AddDestination(key, Destination::masquerade(*b)))
                .unwrap();
        }
    })
    .unwrap();
    let closed: u64 = dp
        .sched()
        .rebalancing()
        .statuses()
        .iter()
        .flat_map(|s| s.closed.iter().map(|&(_, n)| n))
        .sum();
    dp.shutdown(Duration::from_millis(200));
    print!(
        "{}",
        run.summary(
            &format!("policy {policy}, {closed} connections closed to rebalance"),
            RUN_SECS,
            WINDOW,
        )
    );
    run
}

#[test]
fn idle_connections_are_rebalanced_after_a_scale_up_without_a_failed_request() {
    if let Err(why) = keepalive::python_urllib3() {
        rvs_testrig::skip("rebalance_loopback", &why);
        return;
    }
    let backends = [backend(0), backend(1), backend(2), backend(3)];
    let control = std::thread::spawn(move || run(Policy::OFF, backends));
    let idle = run(Policy::IDLE, backends);
    let control = control.join().unwrap();

    // The control: the skew stays, the new real servers get nothing.
    let late: [u32; 4] = control.per_backend(RUN_SECS - 10.0, RUN_SECS);
    assert_eq!(&late[2..], [0, 0], "control, last 10 s: {late:?}");
    assert!(control.failed.is_empty(), "{:?}", control.failed);

    // Rebalanced: even within ±20 % in some 5 s window ending within 30 s
    // of the scale-up, and still at the end; no request failed.
    assert!(idle.failed.is_empty(), "failed requests: {:?}", idle.failed);
    let Some(after) = idle.even_after(SCALE_AT, WINDOW, 30.0, 0.2) else {
        panic!("never even within 30 s of the scale-up");
    };
    println!("even (±20 %, {WINDOW} s window) {after:.1} s after the scale-up");
    let end: [u32; 4] = idle.per_backend(RUN_SECS - 10.0, RUN_SECS);
    assert!(keepalive::even_within(&end, 0.2), "last 10 s: {end:?}");
}
