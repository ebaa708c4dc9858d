//! Long-lived connections rebalanced after a scale-up, with real clients
//! (issue 13): 40 keep-alive HTTP/1.1 clients of Python's urllib3 (one
//! process and pooled connection each, a request every 100–500 ms, no
//! retries, so a failed request is one the client sees), then 40 HTTP/2
//! clients of hyper-h2 (each request a stream of one connection), on a
//! userspace virtual service with 2 real servers, scaled to 4 after 10 s.
//! With the `idle` policy the requests are even within ±20 % within 30 s
//! of the scale-up, with no failed request; with the policy off (the
//! control, run side by side) the new real servers get nothing.
//!
//! Loopback only (127.0.0.1); each run ends after 45 s of client time.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)] // test code

mod common;

use common::rebalance::{self as scenario, RUN_SECS, SCALE_AT, WINDOW};
use rvs_testrig::keepalive::{self, Http};

#[test]
fn idle_connections_are_rebalanced_after_a_scale_up_without_a_failed_request() {
    for http in [Http::V1, Http::V2] {
        if let Err(why) = keepalive::python(http) {
            rvs_testrig::skip("rebalance_loopback", &why);
            return;
        }
        let outcome = scenario::run(http);
        let closed = outcome.closed(&outcome.idle_service);
        keepalive::check_rebalanced(
            http,
            &format!("{closed} connections"),
            &outcome.idle,
            &outcome.control,
            (RUN_SECS, SCALE_AT, WINDOW),
        );
    }
}
