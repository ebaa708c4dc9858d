//! `rvs-proxy --dataplane kernel,ebpf` in the test VM (Debian's 6.1
//! kernel, real IPVS): the socket-level load balancer serves connections
//! made by processes of the attached cgroup, IPVS serves everything else
//! (the node port from a client outside that cgroup, the cluster IP from
//! the node itself), both from the same Services.
//!
//! What tells the paths apart is IPVS's connection table: a connection
//! the socket LB rewrote at `connect()` goes straight to the backend and
//! never reaches the virtual server, so the cluster IP has no entries
//! while clients in the cgroup are served round robin; connections from
//! outside the cgroup have theirs (kept in TIME_WAIT for two minutes,
//! longer than the test). The programs attach to a
//! child cgroup the script creates, never the guest's root.

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
  ports: [{name: http, port: 80, nodePort: 30080}]
---
kind: EndpointSlice
metadata: {name: web-1, namespace: default, labels: {kubernetes.io/service-name: web}}
addressType: IPv4
ports: [{name: http, port: 80, protocol: TCP}]
endpoints:
- {addresses: [10.0.2.2]}
- {addresses: [10.0.3.2]}
"#;

const SCRIPT: &str = r#"
set -e
. /usr/lib/rvs/topo.sh
mount -t cgroup2 none /sys/fs/cgroup
mount -t bpf bpf /sys/fs/bpf
CG=/sys/fs/cgroup/rvs-clients
mkdir "$CG"
topo_backends
topo_log /tmp/proxy.log
# cg_get ADDR PORT: topo_get from the client host, by a process of the
# socket LB's cgroup.
cg_get() {
    sh -c 'echo $$ > "$0/cgroup.procs" && exec sh -c ". /usr/lib/rvs/topo.sh; topo_get client $1 $2"' "$CG" "$1" "$2"
}
# entries VIP:PORT: IPVS's connection entries for that virtual address
# (kept in TIME_WAIT long after the test's connections closed).
entries() {
    ipvsadm -L -n -c | grep -c " $1 " || true
}
# synced: how many syncs rvs-proxy has logged (IPVS, the socket LB and
# the rules all done).
synced() { grep -c 'rvs_proxy::run: synced' /tmp/proxy.log || true; }
start() {
    n=$(synced)
    rvs-proxy --manifests /etc/rvs/m --hostname-override node-a \
        --dataplane kernel,ebpf --cgroup "$CG" & pid=$!
    topo_wait_for "[ \$(synced) -gt $n ]"
}
start
echo "== cgroup"
for i in 1 2 3 4; do echo "cluster-ip: $(cg_get 10.96.0.10 80)"; done
echo "== ipvs after cgroup"
entries 10.96.0.10:80
echo "== outside"
for i in 1 2; do echo "node-port: $(topo_get client 10.0.1.1 30080)"; done
for i in 1 2; do echo "cluster-ip: $(topo_get client 10.96.0.10 80)"; done
echo "== ipvs after outside"
entries 10.0.1.1:30080
entries 10.96.0.10:80
echo "== restart"
kill $pid; wait $pid || true
# Stopped: the programs stay attached and pinned, so the cgroup is still
# served while no rvs-proxy runs.
for i in 1 2; do echo "stopped: $(cg_get 10.96.0.10 80)"; done
start
for i in 1 2; do echo "restarted: $(cg_get 10.96.0.10 80)"; done
entries 10.96.0.10:80
echo "== cleanup"
kill $pid; wait $pid || true
rvs-proxy --cleanup --dataplane kernel,ebpf
ls /sys/fs/bpf/rvs-proxy 2>/dev/null | wc -l
"#;

#[test]
fn socket_lb_serves_the_cgroup_and_ipvs_the_rest() {
    let Some(vm) = Vm::or_skip("socket_lb_serves_the_cgroup_and_ipvs_the_rest") else {
        return;
    };
    let job = VmJob::new(SCRIPT)
        .binary("rvs-proxy", env!("CARGO_BIN_EXE_rvs-proxy"))
        .file("etc/rvs/m/cluster.yaml", MANIFESTS);
    let out = vm.run(&job).expect("VM run");
    let out = out.assert_clean();
    let o = &out.output;
    // Round robin through the socket LB (alternating, whichever backend
    // comes first), and none of it through IPVS.
    let cgroup = out.section("cgroup");
    assert_eq!(cgroup.len(), 4, "{o}");
    assert!(
        cgroup.iter().all(|l| l.starts_with("cluster-ip: backend-")),
        "{o}"
    );
    assert!(cgroup.windows(2).all(|w| w[0] != w[1]), "round robin: {o}");
    assert_eq!(out.section("ipvs after cgroup"), ["0"], "{o}");
    // Outside the cgroup IPVS serves the node port and the cluster IP.
    let outside = out.section("outside");
    assert_eq!(outside.len(), 4, "{o}");
    assert!(
        outside
            .iter()
            .all(|l| l.ends_with("backend-one") || l.ends_with("backend-two")),
        "{o}"
    );
    assert_eq!(out.section("ipvs after outside"), ["2", "2"], "{o}");
    // Across a restart the cgroup stays served, still not through IPVS.
    let restart = out.section("restart");
    assert_eq!(restart.len(), 5, "{o}");
    assert!(
        restart[..4]
            .iter()
            .all(|l| l.ends_with("backend-one") || l.ends_with("backend-two")),
        "{o}"
    );
    assert_eq!(restart[4], "2", "{o}");
    assert_eq!(out.section("cleanup"), ["0"], "--cleanup unpins: {o}");
}
