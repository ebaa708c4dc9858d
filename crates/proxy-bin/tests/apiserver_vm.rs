//! rvs-proxy on the kernel dataplane in the test VM, against the host's
//! real kube-apiserver: Services and EndpointSlices created with
//! `kubectl` on the host are programmed into the guest's IPVS, and
//! changes made on the host while the guest runs converge there.
//!
//! The guest's only way out is one forward (`VmJob::forward_to_host`,
//! qemu's user network with `restrict=on`): 10.0.2.100:443 in the guest
//! is kube-apiserver's port on the host's 127.0.0.1, and the serving
//! certificate names 10.0.2.100 (`ControlPlaneOptions::extra_san`).
//! rvs-proxy authenticates as `system:kube-proxy`, the identity a real
//! kube-proxy has.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stderr)] // test code

use std::net::SocketAddrV4;
use std::time::Duration;

use rvs_testrig::vm::GUEST_NET_SETUP;
use rvs_testrig::{ControlPlane, Vm, VmJob};

const TEST: &str = "kernel_dataplane_in_the_vm_follows_the_hosts_apiserver";
const SYNCED: &str = "@@RVS-SYNCED@@";

const SCRIPT: &str = r#"
set -e
trap 'echo "== log"; cat /tmp/proxy.log' EXIT
rvs-proxy --kubeconfig /etc/rvs/kubeconfig --dataplane kernel \
    --hostname-override rvs-node \
    --metrics-bind-address 127.0.0.1:10249 --healthz-bind-address 127.0.0.1:10256 \
    2>/tmp/proxy.log &
PROXY=$!
# wait_for PATTERN WHAT: a bounded poll of the guest's IPVS table.
wait_for() {
    i=0
    until ipvsadm -Ln | grep -q -- "$1"; do
        i=$((i + 1))
        [ "$i" -le 900 ] || { echo "timed out waiting: $2"; return 1; }
        kill -0 "$PROXY" 2>/dev/null || { echo "rvs-proxy exited"; return 1; }
        sleep 0.2
    done
}
wait_for '10.250.1.2:8080' 'the first sync'
echo "== synced"
ipvsadm -Ln -t 10.96.100.10:80
echo "@@RVS-SYNCED@@"
wait_for '10.250.2.1:8081' 'the new Service made on the host'
wait_for '10.250.1.3:8080' 'the scale-up made on the host'
echo "== changed"
ipvsadm -Ln -t 10.96.100.10:80
ipvsadm -Ln -t 10.96.100.11:81
echo "== kube-ipvs0"
/usr/sbin/ip -o addr show dev kube-ipvs0 | awk '{print $4}' | sort
kill "$PROXY"
wait "$PROXY" || true
"#;

fn web(endpoints: &[&str]) -> String {
    let endpoints: String = endpoints
        .iter()
        .map(|ip| format!("- {{addresses: [{ip}], conditions: {{ready: true}}}}\n"))
        .collect();
    format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: web, namespace: default}}\n\
         spec:\n  clusterIP: 10.96.100.10\n\
         \x20 ports: [{{name: http, port: 80, targetPort: 8080, protocol: TCP}}]\n\
         ---\n\
         apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\n\
         metadata: {{name: web-1, namespace: default, labels: {{kubernetes.io/service-name: web}}}}\n\
         addressType: IPv4\nports: [{{name: http, port: 8080, protocol: TCP}}]\n\
         endpoints:\n{endpoints}"
    )
}

const API: &str = r#"
apiVersion: v1
kind: Service
metadata: {name: api, namespace: default}
spec:
  clusterIP: 10.96.100.11
  ports: [{name: http, port: 81, targetPort: 8081, protocol: TCP}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: api-1, namespace: default, labels: {kubernetes.io/service-name: api}}
addressType: IPv4
ports: [{name: http, port: 8081, protocol: TCP}]
endpoints:
- {addresses: [10.250.2.1], conditions: {ready: true}}
"#;

#[test]
fn kernel_dataplane_in_the_vm_follows_the_hosts_apiserver() {
    let Some(vm) = Vm::or_skip(TEST) else {
        return;
    };
    let guest_api: SocketAddrV4 = "10.0.2.100:443".parse().unwrap();
    let Some(plane) = ControlPlane::options()
        .extra_san(&guest_api.ip().to_string())
        .start_or_skip(TEST)
    else {
        return;
    };
    plane.apply(&web(&["10.250.1.1", "10.250.1.2"])).unwrap();
    let kubeconfig = plane
        .kubeconfig_for_server("kube-proxy", &format!("https://{guest_api}"))
        .unwrap();
    let job = VmJob::new(format!("{GUEST_NET_SETUP}{SCRIPT}"))
        .binary("rvs-proxy", env!("CARGO_BIN_EXE_rvs-proxy"))
        .file("etc/rvs/kubeconfig", kubeconfig)
        .forward_to_host(guest_api, plane.api_addr().unwrap().port())
        .timeout(Duration::from_secs(400));
    let mut running = vm.start(&job).unwrap();
    running
        .wait_for_line(SYNCED, Duration::from_secs(300))
        .unwrap();
    // The guest has synced: these reach it through its watches.
    plane.apply(API).unwrap();
    plane
        .apply(&web(&["10.250.1.1", "10.250.1.2", "10.250.1.3"]))
        .unwrap();
    let out = running.wait().unwrap();
    assert!(out.success(), "script failed:\n{}", out.output);
    let o = &out.output;

    let synced = out.section("synced");
    let real = |ip: &str| synced.iter().any(|l| l.contains(&format!("-> {ip}:8080")));
    assert!(real("10.250.1.1") && real("10.250.1.2"), "{o}");
    assert!(!real("10.250.1.3"), "{o}");
    let changed = out.section("changed");
    for ip in [
        "10.250.1.1:8080",
        "10.250.1.2:8080",
        "10.250.1.3:8080",
        "10.250.2.1:8081",
    ] {
        assert!(
            changed.iter().any(|l| l.contains(&format!("-> {ip}"))),
            "{ip} missing:\n{o}"
        );
    }
    let addresses = out.section("kube-ipvs0");
    for vip in ["10.96.0.1/32", "10.96.100.10/32", "10.96.100.11/32"] {
        assert!(addresses.contains(&vip), "{addresses:?}");
    }
    let log = out.section("log").join("\n");
    assert!(log.contains("listed resource=\"services\""), "{log}");
    assert!(!log.contains(" ERROR "), "{log}");
    eprintln!("VM run took {:?}", out.elapsed);
}
