//! `rvs-proxy --cleanup` with no source at all, in the test VM: no
//! manifests, no kubeconfig, no API server (and none reachable). After
//! rvs-proxy programmed a node from manifests, and beside state that is
//! someone else's, it removes only its own, found from the node alone:
//!
//! * virtual servers on addresses bound to `kube-ipvs0` (any port) and
//!   on the host's own addresses at node ports (30000–32767), then
//!   `kube-ipvs0` itself;
//! * its iptables chains and jumps, and its `KUBE-*` ipsets;
//!
//! and leaves a virtual server on another address, one on a host
//! address at a port that is no node port, one in `--ipvs-exclude-cidrs`,
//! a firewall-mark service, a foreign chain with its jump, and a foreign
//! set.

use rvs_testrig::{Vm, VmJob};

const MANIFESTS: &str = r#"
kind: Node
metadata: {name: node-a}
status:
  addresses: [{type: InternalIP, address: 10.0.1.1}]
---
kind: Service
metadata: {name: web, namespace: default}
spec:
  type: NodePort
  clusterIP: 10.96.0.10
  ports: [{name: http, port: 80, nodePort: 30080}, {name: dns, port: 53, protocol: UDP, nodePort: 30053}]
---
kind: Service
metadata: {name: lb, namespace: default}
spec:
  type: LoadBalancer
  clusterIP: 10.96.0.11
  ports: [{name: http, port: 8080, nodePort: 31000}]
status:
  loadBalancer: {ingress: [{ip: 192.0.2.10}]}
---
kind: EndpointSlice
metadata: {name: web-1, namespace: default, labels: {kubernetes.io/service-name: web}}
addressType: IPv4
ports: [{name: http, port: 80, protocol: TCP}, {name: dns, port: 53, protocol: UDP}]
endpoints:
- {addresses: [10.0.2.2]}
"#;

const SCRIPT: &str = r#"
set -e
. /usr/lib/rvs/topo.sh
topo_forwarding
topo_host client 1
topo_host b1 2
IP=/usr/sbin/ip
trap 'echo "== log"; cat /tmp/proxy.log' EXIT
exec 2>>/tmp/proxy.log

echo "== programmed"
rvs-proxy --manifests /etc/rvs/m --hostname-override node-a --once
ipvsadm -S -n | grep -c '^-A' || true
iptables-save | grep -c '^:KUBE-' || true
ipset list -n | grep -c '^KUBE-' || true

# Someone else's state, added after rvs-proxy's.
ipvsadm -A -t 10.0.0.99:30080 -s wlc
ipvsadm -A -t 10.0.1.1:80 -s wlc
ipvsadm -A -f 5 -s rr
$IP addr add 10.200.0.1/32 dev kube-ipvs0
ipvsadm -A -t 10.200.0.1:80 -s rr
iptables -N FOREIGN
iptables -A FOREIGN -j RETURN
iptables -A INPUT -j FOREIGN
ipset create foreign hash:ip

echo "== cleanup"
# No source of any kind: nothing to read a cluster from.
unset KUBECONFIG KUBERNETES_SERVICE_HOST KUBERNETES_SERVICE_PORT
cd /tmp
env -u HOME rvs-proxy --cleanup --ipvs-exclude-cidrs=10.200.0.0/16
echo "exit: $?"
ipvsadm -S -n | sort
iptables-save | grep -E '^(:|-A)' | grep -v -E '^:(INPUT|OUTPUT|FORWARD|PREROUTING|POSTROUTING) ' | sort
ipset list -n | sort
$IP link show kube-ipvs0 >/dev/null 2>&1 && echo "kube-ipvs0 still there" || echo "kube-ipvs0 gone"

echo "== again"
# A second cleanup finds nothing of ours and succeeds.
rvs-proxy --cleanup --ipvs-exclude-cidrs=10.200.0.0/16
echo "exit: $?"
"#;

fn section<'a>(output: &'a str, name: &str) -> Vec<&'a str> {
    output
        .split(&format!("== {name}\n"))
        .nth(1)
        .unwrap_or("")
        .lines()
        .take_while(|l| !l.starts_with("== "))
        .collect()
}

#[test]
fn cleanup_without_a_source_removes_only_ours() {
    let Some(vm) = Vm::or_skip("cleanup_without_a_source_removes_only_ours") else {
        return;
    };
    let job = VmJob::new(SCRIPT)
        .binary("rvs-proxy", env!("CARGO_BIN_EXE_rvs-proxy"))
        .file("etc/rvs/m/cluster.yaml", MANIFESTS);
    let out = vm.run(&job).expect("VM run");
    let o = &out.output;
    assert!(out.success(), "script failed:\n{o}");
    assert!(!o.contains(" ERROR "), "{o}");

    // 3 Service ports on cluster IPs, 3 node ports on each of the host's
    // 2 addresses (10.0.1.1, 10.0.2.1; kube-proxy's node-port addresses),
    // 1 load-balancer IP.
    let programmed = section(o, "programmed");
    assert_eq!(programmed.first(), Some(&"10"), "{o}");
    assert_ne!(programmed.get(1), Some(&"0"), "chains: {o}");
    assert_ne!(programmed.get(2), Some(&"0"), "sets: {o}");

    // The foreign kube-ipvs0 address goes with the device; its virtual
    // server, excluded, stays.
    assert_eq!(
        section(o, "cleanup"),
        [
            "exit: 0",
            "-A -f 5 -s rr",
            "-A -t 10.0.0.99:30080 -s wlc",
            "-A -t 10.0.1.1:80 -s wlc",
            "-A -t 10.200.0.1:80 -s rr",
            "-A FOREIGN -j RETURN",
            "-A INPUT -j FOREIGN",
            ":FOREIGN - [0:0]",
            "foreign",
            "kube-ipvs0 gone",
        ],
        "{o}"
    );
    assert_eq!(section(o, "again"), ["exit: 0"], "{o}");
}
