//! Long-lived connections rebalanced by the eBPF dataplane after a
//! scale-up, with real clients (issue 13): 40 keep-alive HTTP/1.1 clients
//! of Python's urllib3 (one process and pooled connection each, a request
//! every 100–500 ms, no retries), then 40 HTTP/2 clients of hyper-h2
//! (each request a stream of one connection), in the test's child cgroup and client
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

use common::Rig;
use common::rebalance::{self as scenario, IDLE_VIP, RUN_SECS, SCALE_AT, WINDOW};
use rvs_testrig::keepalive::{self, Http};

#[test]
fn idle_sockets_are_closed_to_rebalance_after_a_scale_up_without_a_failed_request() {
    const TEST: &str = "rebalance_netns";
    for http in [Http::V1, Http::V2] {
        if let Err(why) = keepalive::python(http) {
            rvs_testrig::skip(TEST, &why);
            return;
        }
        // A fresh rig (cgroup, pins, namespaces) for each protocol.
        let Some(rig) = Rig::or_skip(TEST) else {
            return;
        };
        let outcome = match scenario::run(&rig, http) {
            Ok(o) => o,
            Err(err @ rvs_ebpf::EbpfError::Unsupported(_)) => {
                rvs_testrig::skip(TEST, &err);
                return;
            }
            Err(err) => panic!("{err}"),
        };
        check(http, &outcome);
    }
}

fn check(http: Http, outcome: &scenario::Outcome) {
    let closed = outcome.closed();
    keepalive::check_rebalanced(
        http,
        &format!("{closed} sockets"),
        &outcome.idle,
        &outcome.control,
        (RUN_SECS, SCALE_AT, WINDOW),
    );
    // Only the idle service's sockets were closed.
    assert!(closed > 0);
    let idle_key = scenario::service(IDLE_VIP.parse().unwrap());
    assert!(
        outcome.statuses.iter().all(|s| s.service == idle_key),
        "{:?}",
        outcome.statuses
    );
}
