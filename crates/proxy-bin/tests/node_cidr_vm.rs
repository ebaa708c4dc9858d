//! `--detect-local-mode=NodeCIDR` and `--nodeport-addresses=primary` on
//! the kernel dataplane, in the test VM, from a watched manifests
//! directory standing in for the API server:
//!
//! * at start rvs-proxy waits for the Node to have a pod CIDR, as
//!   kube-proxy does, and programs nothing before;
//! * once `spec.podCIDRs` appears, the cluster-IP masquerade rule matches
//!   traffic from outside it (`! -s POD_CIDR`);
//! * when the pod CIDR changes, the running proxy renders the rule again
//!   (kube-proxy would exit and be restarted);
//! * node ports listen only on the Node's primary address, not on its
//!   second InternalIP.

use rvs_testrig::{Vm, VmJob};

/// The Node without a pod CIDR yet; `POD_CIDR` marks where it goes.
const MANIFESTS: &str = r#"
kind: Node
metadata: {name: node-a}
spec: {}
status:
  addresses: [{type: InternalIP, address: 10.0.1.1}, {type: InternalIP, address: 10.0.2.1}]
---
kind: Service
metadata: {name: web, namespace: default}
spec:
  type: NodePort
  clusterIP: 10.96.0.10
  ports: [{name: http, port: 80, nodePort: 30080}]
---
kind: EndpointSlice
metadata: {name: web-1, namespace: default, labels: {kubernetes.io/service-name: web}}
addressType: IPv4
ports: [{name: http, port: 80, protocol: TCP}]
endpoints:
- {addresses: [10.0.2.2]}
"#;

const SCRIPT: &str = r#"
set -e
. /usr/lib/rvs/topo.sh
topo_forwarding
topo_host client 1
topo_host b1 2
# masq: the source match of the cluster-IP masquerade rule (iptables-save
# prints it first), or "none".
masq() {
    iptables-save -t nat | grep -- 'KUBE-CLUSTER-IP .*-j KUBE-MARK-MASQ' | grep -o -- '! -s [0-9./]*' || echo none
}
# set_pod_cidr CIDR: the Node gets spec.podCIDRs, renamed into place.
set_pod_cidr() {
    sed "s|^spec: .*|spec: {podCIDRs: [$1]}|" /etc/rvs/m/cluster.yaml > /etc/rvs/next
    mv /etc/rvs/next /etc/rvs/m/cluster.yaml
}
exec 2>>/tmp/proxy.log
trap 'echo "== log"; cat /tmp/proxy.log' EXIT

rvs-proxy --manifests /etc/rvs/m --hostname-override node-a \
    --detect-local-mode NodeCIDR --nodeport-addresses=primary & pid=$!
sleep 3
echo "== waiting"
ipvsadm -S -n | grep -c '^-A' || true
echo "== pod cidr"
set_pod_cidr 10.0.2.0/24
topo_wait_for "masq | grep -q '10.0.2.0/24'"
masq
ipvsadm -S -n | grep '^-A' | sort
echo "== new pod cidr"
set_pod_cidr 10.0.4.0/24
topo_wait_for "masq | grep -q '10.0.4.0/24'"
masq
kill $pid; wait $pid || true
"#;

#[test]
fn node_cidr_waits_for_and_follows_the_pod_cidr() {
    let Some(vm) = Vm::or_skip("node_cidr_waits_for_and_follows_the_pod_cidr") else {
        return;
    };
    let job = VmJob::new(SCRIPT)
        .binary("rvs-proxy", env!("CARGO_BIN_EXE_rvs-proxy"))
        .file("etc/rvs/m/cluster.yaml", MANIFESTS);
    let out = vm.run(&job).expect("VM run");
    let out = out.assert_clean();
    let o = &out.output;
    assert_eq!(
        out.section("waiting"),
        ["0"],
        "nothing before the pod CIDR: {o}"
    );
    assert_eq!(
        out.section("pod cidr"),
        [
            "! -s 10.0.2.0/24",
            "-A -t 10.0.1.1:30080 -s rr",
            "-A -t 10.96.0.10:80 -s rr",
        ],
        "{o}"
    );
    assert_eq!(out.section("new pod cidr"), ["! -s 10.0.4.0/24"], "{o}");
}
