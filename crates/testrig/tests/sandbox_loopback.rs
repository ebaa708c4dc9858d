//! Proves the sandbox rig: a test re-runs itself in private user,
//! network, PID and mount namespaces without root, with ranges routed to
//! loopback so servers bind addresses outside 127.0.0.0/8, and what it
//! starts there dies with it.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code

use std::time::Duration;

use rvs_testrig::backend::{Backend, ask_once};
use rvs_testrig::{Sandbox, SandboxOptions};

#[test]
fn sandboxed_test_binds_routed_addresses_in_its_own_namespaces() {
    let test = "sandboxed_test_binds_routed_addresses_in_its_own_namespaces";
    let options = SandboxOptions::default()
        .local_route("10.250.0.0/16")
        .env("RVS_SANDBOX_PROBE", "passed in")
        .timeout(Duration::from_secs(60));
    let Some(_sandbox) = Sandbox::enter(test, &options) else {
        return;
    };
    // Inside: the test is PID 1 of a fresh PID namespace, root of its own
    // user namespace, and has a network namespace of its own.
    assert_eq!(std::process::id(), 1);
    assert_eq!(
        std::env::var("RVS_SANDBOX_PROBE").as_deref(),
        Ok("passed in")
    );
    let routes = std::process::Command::new("ip")
        .args(["route", "show", "table", "local"])
        .output()
        .unwrap();
    let routes = String::from_utf8_lossy(&routes.stdout);
    assert!(routes.contains("local 10.250.0.0/16 dev lo"), "{routes}");
    let links = std::fs::read_to_string("/proc/net/dev").unwrap();
    assert_eq!(
        links.lines().skip(2).count(),
        1,
        "only loopback in a fresh network namespace: {links}"
    );
    let backend = Backend::tcp("10.250.3.4:8080".parse().unwrap(), "routed").unwrap();
    assert_eq!(
        ask_once(backend.addr(), Duration::from_secs(5)).unwrap(),
        "routed"
    );
}
