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
        let (idle, control) = (&outcome.idle, &outcome.control);
        print!(
            "{}",
            idle.summary(
                &format!("{http}, policy idle, {closed} connections closed to rebalance"),
                RUN_SECS,
                WINDOW,
            )
        );
        print!(
            "{}",
            control.summary(&format!("{http}, policy off"), RUN_SECS, WINDOW)
        );

        // The control: the skew stays, the new real servers get nothing.
        let late: [u32; 4] = control.per_backend(RUN_SECS - 10.0, RUN_SECS);
        assert_eq!(&late[2..], [0, 0], "{http} control, last 10 s: {late:?}");
        assert!(control.failed.is_empty(), "{http}: {:?}", control.failed);

        // Rebalanced: even within ±20 % in some 5 s window ending within
        // 30 s of the scale-up, and still at the end; no request failed.
        assert!(
            idle.failed.is_empty(),
            "{http} failed requests: {:?}",
            idle.failed
        );
        let Some(after) = idle.even_after(SCALE_AT, WINDOW, 30.0, 0.2) else {
            panic!("{http}: never even within 30 s of the scale-up");
        };
        println!("{http}: even (±20 %, {WINDOW} s window) {after:.1} s after the scale-up");
        let end: [u32; 4] = idle.per_backend(RUN_SECS - 10.0, RUN_SECS);
        assert!(
            keepalive::even_within(&end, 0.2),
            "{http}, last 10 s: {end:?}"
        );
    }
}
