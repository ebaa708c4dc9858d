//! Proves the control-plane rig: a real etcd and kube-apiserver on
//! 127.0.0.1 from `scripts/control-plane.sh`, `kubectl` against it, an
//! API server outage that keeps etcd's data, etcd compaction making a
//! restarted API server answer `410 Gone` to an old resourceVersion,
//! kubeconfigs through a relay and with a bearer token, and everything
//! stopped on drop. Needs the Kubernetes binaries (`K8S_BIN` or Go).

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code

use std::time::{Duration, Instant};

use rvs_testrig::{ControlPlane, Relay};

const SERVICE: &str = r#"
apiVersion: v1
kind: Service
metadata: {name: rig, namespace: default}
spec:
  ports: [{name: http, port: 80, targetPort: 8080, protocol: TCP}]
"#;

/// The list's resourceVersion of `kubectl get --raw PATH`.
fn list_version(plane: &ControlPlane, path: &str) -> String {
    let text = plane.kubectl(&["get", "--raw", path]).unwrap();
    let rest = text.split_once("\"resourceVersion\":\"").unwrap().1;
    rest.split('"').next().unwrap().to_owned()
}

/// The first event of a watch from `version` (`kubectl get --raw` of a
/// watch URL with a short server-side timeout).
fn first_watch_event(plane: &ControlPlane, version: &str) -> String {
    let url = format!("/api/v1/services?watch=1&resourceVersion={version}&timeoutSeconds=1");
    let text = plane.kubectl(&["get", "--raw", &url]).unwrap();
    text.lines().next().unwrap_or_default().to_owned()
}

#[test]
fn control_plane_survives_an_apiserver_restart_and_compaction_expires_old_versions() {
    let test = "control_plane_survives_an_apiserver_restart_and_compaction_expires_old_versions";
    let Some(plane) = ControlPlane::or_skip(test) else {
        return;
    };
    assert!(plane.api_url().starts_with("https://127.0.0.1:"));
    assert_eq!(plane.node_name(), "rvs-node");
    let nodes = plane.kubectl(&["get", "nodes", "-o", "name"]).unwrap();
    assert_eq!(nodes.trim(), "node/rvs-node");
    plane.apply(SERVICE).unwrap();
    let version = list_version(&plane, "/api/v1/services");

    // An outage: the API server goes, etcd and its data stay.
    let api = plane.api_addr().unwrap();
    plane.stop_apiserver().unwrap();
    assert!(std::net::TcpStream::connect_timeout(&api, Duration::from_secs(2)).is_err());
    assert!(plane.kubectl(&["get", "nodes"]).is_err());
    let started = Instant::now();
    plane.start_apiserver().unwrap();
    eprintln!("kube-apiserver restarted in {:?}", started.elapsed());
    assert_eq!(plane.api_addr().unwrap(), api, "same port");
    let services = plane.kubectl(&["get", "services", "-o", "name"]).unwrap();
    assert!(services.contains("service/rig"), "{services}");

    // Compaction: etcd forgets history; the restarted API server's cache
    // starts after the old version, so a watch from it gets 410 Gone.
    let before = plane.etcd_revision().unwrap();
    let compacted = plane.compact_etcd().unwrap();
    assert!(compacted >= before);
    let event = first_watch_event(&plane, &version);
    assert!(
        event.contains("\"code\":410") && event.contains("too old resource version"),
        "{event}"
    );
    // A current version still works.
    let fresh = list_version(&plane, "/api/v1/services");
    let event = first_watch_event(&plane, &fresh);
    assert!(!event.contains("\"code\":410"), "{event}");

    // Through a relay, with the admin's certificate and with a token.
    let relay = Relay::start(api).unwrap();
    let via_relay = plane
        .kubeconfig_for_server("admin", &relay.https_url())
        .unwrap();
    let path = plane.dir().join("relay.kubeconfig");
    std::fs::write(&path, via_relay).unwrap();
    let who = plane
        .kubectl(&[
            "--kubeconfig",
            path.to_str().unwrap(),
            "get",
            "nodes",
            "-o",
            "name",
        ])
        .unwrap();
    assert_eq!(who.trim(), "node/rvs-node");
    assert!(relay.relayed() >= 1);
    plane
        .kubectl(&["create", "serviceaccount", "rig", "-n", "default"])
        .unwrap();
    let token = plane
        .kubectl(&["create", "token", "rig", "-n", "default"])
        .unwrap();
    let with_token = plane
        .token_kubeconfig(token.trim(), &relay.https_url())
        .unwrap();
    std::fs::write(&path, with_token).unwrap();
    let denied = plane
        .kubectl(&["--kubeconfig", path.to_str().unwrap(), "get", "nodes"])
        .unwrap_err()
        .to_string();
    assert!(
        denied.contains("system:serviceaccount:default:rig") && denied.contains("forbidden"),
        "authenticated as the service account, which may not list nodes: {denied}"
    );

    // Down: both processes gone, the directory removed.
    let dir = plane.dir().to_owned();
    let etcd = plane.etcd_url().to_owned();
    plane.down().unwrap();
    assert!(!dir.exists());
    let etcd_addr = etcd.trim_start_matches("http://").parse().unwrap();
    assert!(std::net::TcpStream::connect_timeout(&etcd_addr, Duration::from_secs(2)).is_err());
    assert!(std::net::TcpStream::connect_timeout(&api, Duration::from_secs(2)).is_err());
}
