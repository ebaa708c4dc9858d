//! End-to-end test of `rvs-proxy --dataplane userspace` on loopback, no
//! root needed: manifests in a directory, real backends on 127.0.0.0/8,
//! real client connections through the cluster IP and the node port;
//! scaling endpoints down drains (an open connection to the removed
//! endpoint lives on, new ones avoid it) and up again, an idle endpoint
//! is removed at once; kube-proxy's timeout flags apply; the admin socket
//! shows the state; SIGTERM stops the proxy cleanly. Bounded throughout.
//! The manifests are the template
//! `crates/testrig/fixtures/manifests/userspace/cluster.yaml`.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use rvs_admin::{Admin, AdminClient};
use rvs_model::{Protocol, ServiceKey};
use rvs_testrig::backend::{Backend, Probe, ask_once, ask_udp, http_get};
use rvs_testrig::{Daemon, TempDir, fixtures};

const STEP: Duration = Duration::from_secs(10);
const NODE: &str = "e2e-node";
const CLUSTER_IP: &str = "127.0.70.1";
const DNS_IP: &str = "127.0.70.53";
const HEALTH_CHECK_PORT: u16 = 31899;
const METRICS: &str = "127.0.74.1:10249";
const HEALTHZ: &str = "127.0.74.1:10256";

/// `GET PATH` from `addr`: the status code and the body.
fn get(addr: &str, path: &str) -> std::io::Result<(u16, String)> {
    http_get(self::addr(addr), path, STEP).map(|reply| (reply.status, reply.body))
}

fn addr(text: &str) -> SocketAddr {
    text.parse().unwrap()
}

/// The `userspace` scenario's manifests with web's and lb's endpoints
/// at `web_endpoints` (on this node).
fn manifests(web_endpoints: &[&str]) -> String {
    let endpoints: Vec<String> = web_endpoints
        .iter()
        .map(|ip| format!("{{addresses: [{ip}], conditions: {{ready: true}}, nodeName: {NODE}}}"))
        .collect();
    let files = fixtures::manifests("userspace").unwrap();
    let [(_, template)] = &files[..] else {
        panic!("one template expected: {files:?}");
    };
    fixtures::fill(
        template,
        &[
            ("NODE", NODE),
            ("CLUSTER_IP", CLUSTER_IP),
            ("DNS_IP", DNS_IP),
            ("HEALTH_CHECK_PORT", &HEALTH_CHECK_PORT.to_string()),
            ("ENDPOINTS", &format!("[{}]", endpoints.join(", "))),
        ],
    )
    .unwrap()
}

/// Replaces the manifest file in one step, as a `kubectl` dump would.
fn write_manifests(dir: &Path, text: &str) {
    let tmp = dir.join(".cluster.yaml.tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, dir.join("cluster.yaml")).unwrap();
}

/// Waits until `check` holds, or fails with `what`.
fn eventually(what: &str, check: impl FnMut() -> bool) {
    rvs_testrig::eventually(what, STEP, check);
}

#[test]
fn userspace_proxy_serves_services_from_manifests() {
    let a = Backend::tcp(addr("127.0.71.1:18091"), "a").unwrap();
    let _b = Backend::tcp(addr("127.0.71.2:18091"), "b").unwrap();
    let _dns = Backend::udp(addr("127.0.72.1:15355"), "dns").unwrap();

    let dir = TempDir::new("userspace-e2e").unwrap();
    let manifest_dir = dir.join("manifests");
    std::fs::create_dir_all(&manifest_dir).unwrap();
    write_manifests(&manifest_dir, &manifests(&["127.0.71.1", "127.0.71.2"]));
    let socket = dir.join("admin.sock");
    let mut proxy = Daemon::spawn(
        Command::new(env!("CARGO_BIN_EXE_rvs-proxy"))
            .arg("--manifests")
            .arg(&manifest_dir)
            .args(["--dataplane", "userspace", "--hostname-override", NODE])
            .args(["--workers", "2"])
            // Its own lock: other tests' dataplanes may run on this host.
            .args(["--instance-lock", "rvs-proxy-userspace-e2e"])
            .args(["--ipvs-tcpfin-timeout", "7s"])
            .args(["--metrics-bind-address", METRICS])
            .args(["--healthz-bind-address", HEALTHZ])
            .arg("--admin-socket")
            .arg(&socket)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit()),
    )
    .unwrap();

    let vip = addr(&format!("{CLUSTER_IP}:18081"));
    eventually("the cluster IP answers", || ask_once(vip, STEP).is_ok());
    let names: Vec<String> = (0..10).map(|_| ask_once(vip, STEP).unwrap()).collect();
    for pair in names.windows(2) {
        assert_ne!(pair[0], pair[1], "rr alternates: {names:?}");
    }
    // kube-proxy's health and metrics endpoints.
    eventually("healthz answers", || get(HEALTHZ, "/healthz").is_ok());
    let (status, body) = get(HEALTHZ, "/healthz").unwrap();
    assert_eq!(status, 200, "{body}");
    assert!(
        body.contains("lastUpdated") && body.contains("currentTime"),
        "{body}"
    );
    assert_eq!(get(HEALTHZ, "/livez").unwrap().0, 200);
    let (status, metrics) = get(METRICS, "/metrics").unwrap();
    assert_eq!(status, 200);
    for name in [
        "kubeproxy_sync_proxy_rules_duration_seconds_bucket",
        "kubeproxy_sync_proxy_rules_last_timestamp_seconds",
        "rvs_reconciler_operations_total",
    ] {
        assert!(metrics.contains(name), "{name} missing from:\n{metrics}");
    }
    // The Local-policy LoadBalancer's health check node port: both
    // endpoints are on this node.
    eventually("the health check node port answers", || {
        get(&format!("127.0.0.1:{HEALTH_CHECK_PORT}"), "/").is_ok_and(|(s, _)| s == 200)
    });
    let (_, body) = get(&format!("127.0.0.1:{HEALTH_CHECK_PORT}"), "/").unwrap();
    assert!(body.contains("\"localEndpoints\": 2"), "{body}");

    let node_port = addr("127.0.0.1:31881");
    let via_node_port: Vec<String> = (0..4).map(|_| ask_once(node_port, STEP).unwrap()).collect();
    assert!(via_node_port.iter().any(|n| n == "a") && via_node_port.iter().any(|n| n == "b"));
    let dns = addr(&format!("{DNS_IP}:15354"));
    assert_eq!(
        ask_udp(addr("127.0.73.1:0"), dns, Duration::from_secs(2)).unwrap(),
        "dns"
    );

    // Scale down to `a` while a connection to `b` is open.
    let mut held = Probe::connect_to(vip, "b", 4, STEP)
        .unwrap()
        .expect("one of four rr connections reaches b");
    write_manifests(&manifest_dir, &manifests(&["127.0.71.1"]));
    eventually("new connections avoid the removed endpoint", || {
        (0..4).all(|_| ask_once(vip, STEP).unwrap() == "a")
    });
    for _ in 0..10 {
        assert_eq!(ask_once(vip, STEP).unwrap(), "a");
    }
    assert_eq!(held.ask().unwrap(), "b", "the draining connection lives on");

    let mut admin = AdminClient::connect(&socket).unwrap();
    let key = ServiceKey::Addr {
        protocol: Protocol::Tcp,
        addr: vip,
    };
    let dests = admin.destinations(&key).unwrap();
    let draining = dests
        .iter()
        .find(|d| d.destination.addr == addr("127.0.71.2:18091"))
        .expect("the removed endpoint drains at weight 0");
    assert_eq!(draining.destination.weight, 0, "{dests:?}");
    drop(held);
    // Closed connections sit in TIME_WAIT (inactive) for 120 s, as in the
    // kernel, and kube-proxy deletes a real server only when active and
    // inactive counts are both 0: the endpoint stays at weight 0 meanwhile.
    eventually("the held connection is no longer active", || {
        let dests = admin.destinations(&key).unwrap();
        dests.iter().any(|d| {
            d.destination.addr == addr("127.0.71.2:18091")
                && d.destination.weight == 0
                && d.active_conns == 0
                && d.inactive_conns > 0
        })
    });

    // Scale up again: the draining endpoint gets its weight back.
    let before = a.served();
    write_manifests(&manifest_dir, &manifests(&["127.0.71.1", "127.0.71.2"]));
    eventually("both endpoints serve again", || {
        let names: Vec<String> = (0..4).map(|_| ask_once(vip, STEP).unwrap()).collect();
        names.iter().any(|n| n == "b")
    });
    assert!(a.served() > before);
    assert!(
        admin
            .destinations(&key)
            .unwrap()
            .iter()
            .all(|d| d.destination.weight == 1)
    );

    // An endpoint that never had a connection is deleted at once.
    let c = addr("127.0.71.3:18091");
    write_manifests(
        &manifest_dir,
        &manifests(&["127.0.71.1", "127.0.71.2", "127.0.71.3"]),
    );
    eventually("the third endpoint is added", || {
        admin
            .destinations(&key)
            .unwrap()
            .iter()
            .any(|d| d.destination.addr == c)
    });
    write_manifests(&manifest_dir, &manifests(&["127.0.71.1", "127.0.71.2"]));
    eventually("the idle endpoint is deleted", || {
        !admin
            .destinations(&key)
            .unwrap()
            .iter()
            .any(|d| d.destination.addr == c)
    });
    assert_eq!(
        admin.timeouts().unwrap().tcp_fin,
        7,
        "--ipvs-tcpfin-timeout"
    );
    let services = admin.services().unwrap();
    assert_eq!(
        services.len(),
        5,
        "web's cluster IP and node port, lb's cluster IP and node port, dns: {services:?}"
    );

    let status = proxy.terminate(STEP).unwrap();
    assert!(status.success(), "{status:?}");
    assert!(!socket.exists(), "the admin socket is removed on exit");
}
