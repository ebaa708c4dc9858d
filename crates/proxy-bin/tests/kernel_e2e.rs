//! rvs-proxy on the kernel dataplane, end to end in the test VM: manifests
//! in, IPVS and `kube-ipvs0` programmed, real traffic from a client
//! namespace to backend namespaces, endpoint changes, foreign state left
//! alone, and `--cleanup` removing only what rvs-proxy owns.

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
  ports: [{name: http, port: 80, targetPort: 80, nodePort: 30080}]
---
kind: Service
metadata: {name: sticky, namespace: default}
spec:
  clusterIP: 10.96.0.11
  sessionAffinity: ClientIP
  ports: [{name: http, port: 8080, targetPort: 80}]
---
kind: EndpointSlice
metadata: {name: web-1, namespace: default, labels: {kubernetes.io/service-name: web}}
addressType: IPv4
ports: [{name: http, port: 80, protocol: TCP}]
endpoints:
- {addresses: [10.0.2.2], conditions: {ready: true}}
- {addresses: [10.0.3.2], conditions: {ready: true}}
---
kind: EndpointSlice
metadata: {name: sticky-1, namespace: default, labels: {kubernetes.io/service-name: sticky}}
addressType: IPv4
ports: [{name: http, port: 80, protocol: TCP}]
endpoints:
- {addresses: [10.0.2.2]}
- {addresses: [10.0.3.2]}
"#;

const SCRIPT: &str = r#"
set -e
. /usr/lib/rvs/topo.sh
topo_forwarding
topo_host client 1
topo_host b1 2
topo_host b2 3
topo_http b1 backend-one
topo_http b2 backend-two
# State that belongs to someone else.
ipvsadm -A -t 10.0.0.99:80 -s wlc
ipvsadm -A -f 5 -s rr
P="rvs-proxy --manifests /etc/rvs/m --hostname-override node-a"
trap 'echo "== log"; cat /tmp/proxy.log' EXIT
exec 2>>/tmp/proxy.log

echo "== plan"
$P --dry-run
echo "== sync"
$P --once
ipvsadm -S -n | sort
echo "== kube-ipvs0"
/usr/sbin/ip -o addr show dev kube-ipvs0 | awk '{print $4}' | sort
echo "== traffic"
for i in 1 2 3 4; do r=$(topo_get client 10.96.0.10); echo "cluster-ip: $r"; done
for i in 1 2; do r=$(topo_get client 10.0.1.1 30080); echo "node-port: $r"; done
for i in 1 2 3; do r=$(topo_get client 10.96.0.11 8080); echo "sticky: $r"; done
echo "== converged"
$P --dry-run
echo "== scale down"
sed -i '/10.0.3.2/d' /etc/rvs/m/cluster.yaml
$P --once
for i in 1 2 3; do r=$(topo_get client 10.96.0.10); echo "after: $r"; done
ipvsadm -L -n -t 10.96.0.10:80
echo "== cleanup"
$P --cleanup
ipvsadm -S -n | sort
/usr/sbin/ip link show kube-ipvs0 >/dev/null 2>&1 && echo "kube-ipvs0 still there" || echo "kube-ipvs0 gone"
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
fn rvs_proxy_programs_the_kernel_from_manifests() {
    let Some(vm) = Vm::or_skip("rvs_proxy_programs_the_kernel_from_manifests") else {
        return;
    };
    let job = VmJob::new(SCRIPT)
        .binary("rvs-proxy", env!("CARGO_BIN_EXE_rvs-proxy"))
        .file("etc/rvs/m/cluster.yaml", MANIFESTS);
    let out = vm.run(&job).expect("VM run");
    assert!(out.success(), "script failed:\n{}", out.output);
    assert!(!out.output.contains(" ERROR "), "{}", out.output);
    let o = &out.output;

    let plan = section(o, "plan");
    assert!(
        plan.contains(&"add service TCP 10.96.0.10:80 scheduler rr"),
        "{plan:?}"
    );
    assert!(
        plan.contains(&"add service TCP 10.96.0.11:8080 scheduler rr persistent 10800"),
        "{plan:?}"
    );
    assert!(
        plan.contains(&"add real server 10.0.3.2:80 to TCP 10.0.1.1:30080 weight 1"),
        "{plan:?}"
    );
    assert_eq!(plan.len(), 9, "3 services + 6 real servers: {plan:?}");

    let saved = section(o, "sync");
    let want = [
        "-A -f 5 -s rr",
        "-A -t 10.0.0.99:80 -s wlc",
        "-A -t 10.0.1.1:30080 -s rr",
        "-A -t 10.96.0.10:80 -s rr",
        "-A -t 10.96.0.11:8080 -s rr -p 10800",
        "-a -t 10.0.1.1:30080 -r 10.0.2.2:80 -m -w 1",
        "-a -t 10.0.1.1:30080 -r 10.0.3.2:80 -m -w 1",
        "-a -t 10.96.0.10:80 -r 10.0.2.2:80 -m -w 1",
        "-a -t 10.96.0.10:80 -r 10.0.3.2:80 -m -w 1",
        "-a -t 10.96.0.11:8080 -r 10.0.2.2:80 -m -w 1",
        "-a -t 10.96.0.11:8080 -r 10.0.3.2:80 -m -w 1",
    ];
    assert_eq!(saved, want, "{o}");
    assert_eq!(section(o, "kube-ipvs0"), ["10.96.0.10/32", "10.96.0.11/32"]);

    let replies = |prefix: &str| -> Vec<String> {
        o.lines()
            .filter_map(|l| l.strip_prefix(prefix))
            .map(str::to_owned)
            .collect()
    };
    let cluster = replies("cluster-ip: ");
    assert_eq!(cluster.len(), 4);
    assert_eq!(
        cluster.iter().filter(|r| *r == "backend-one").count(),
        2,
        "{cluster:?}"
    );
    assert_eq!(replies("node-port: ").len(), 2);
    let sticky = replies("sticky: ");
    assert_eq!(sticky.len(), 3);
    assert!(
        sticky.iter().all(|r| *r == sticky[0]),
        "ClientIP affinity: {sticky:?}"
    );

    assert!(
        section(o, "converged").is_empty(),
        "a converged node plans nothing: {o}"
    );

    let after = replies("after: ");
    assert_eq!(after, ["backend-one", "backend-one", "backend-one"]);
    let scale = section(o, "scale down");
    // The removed real server is drained (weight 0) or already gone.
    if let Some(line) = scale.iter().find(|l| l.contains("10.0.3.2:80")) {
        assert_eq!(line.split_whitespace().nth(3), Some("0"), "{line}");
    }

    let cleaned = section(o, "cleanup");
    assert_eq!(
        cleaned,
        [
            "-A -f 5 -s rr",
            "-A -t 10.0.0.99:80 -s wlc",
            "kube-ipvs0 gone"
        ],
        "{o}"
    );
}

const LIVE_MANIFESTS: &str = r#"
kind: Node
metadata: {name: node-a}
status:
  addresses: [{type: InternalIP, address: 10.0.1.1}]
---
kind: Service
metadata: {name: web, namespace: default}
spec:
  clusterIPs: [10.96.0.10, 'fd00:96::10']
  ports: [{name: http, port: 80, targetPort: 80}]
---
kind: EndpointSlice
metadata: {name: web-v4, namespace: default, labels: {kubernetes.io/service-name: web}}
addressType: IPv4
ports: [{name: http, port: 80, protocol: TCP}]
endpoints:
- {addresses: [10.0.2.2]}
- {addresses: [10.0.3.2]}
---
kind: EndpointSlice
metadata: {name: web-v6, namespace: default, labels: {kubernetes.io/service-name: web}}
addressType: IPv6
ports: [{name: http, port: 80, protocol: TCP}]
endpoints:
- {addresses: ['fd00:2::2']}
- {addresses: ['fd00:3::2']}
"#;

const LIVE_SCRIPT: &str = r#"
set -e
. /usr/lib/rvs/topo.sh
topo_forwarding
topo_host client 1
topo_host b1 2
topo_host b2 3
topo_http b1 backend-one
topo_http b2 backend-two
exec 2>>/tmp/proxy.log
trap 'echo "== log"; cat /tmp/proxy.log' EXIT
P="rvs-proxy --manifests /etc/rvs/m --hostname-override node-a"
cp /etc/rvs/m/cluster.yaml /tmp/original.yaml
$P & pid=$!
until ipvsadm -L -n -t 10.96.0.10:80 2>/dev/null | grep -q 10.0.3.2; do sleep 0.1; done
echo "== ipv6"
for i in 1 2; do r=$(topo_get client fd00:96::10); echo "v6: $r"; done
echo "== live"
# Bounded live traffic while endpoints scale down and up and the proxy restarts.
(
  ok=0; fail=0
  for i in $(seq 120); do
    if topo_get client 10.96.0.10 > /dev/null; then ok=$((ok + 1)); else fail=$((fail + 1)); fi
  done
  echo "ok=$ok fail=$fail" > /tmp/live
) &
loader=$!
sleep 1
# Manifests are replaced atomically, as kubectl-driven tooling would: a
# file caught half-written is a different cluster.
grep -v "10.0.3.2" /tmp/original.yaml > /tmp/down.yaml
mv /tmp/down.yaml /etc/rvs/m/cluster.yaml
sleep 1
echo "down: $(ipvsadm -S -n | grep -c 'r 10.0.3.2:80 -m -w 1' || true)"
cp /tmp/original.yaml /tmp/up.yaml
mv /tmp/up.yaml /etc/rvs/m/cluster.yaml
sleep 1
echo "up: $(ipvsadm -S -n | grep -c 'r 10.0.3.2:80 -m -w 1' || true)"
kill $pid; wait $pid || true
$P & pid=$!
sleep 1
wait $loader
cat /tmp/live
kill $pid; wait $pid || true
echo "after restart: $(ipvsadm -S -n | grep -c '^-a')"
"#;

/// Scaling endpoints down and up and restarting rvs-proxy under live
/// traffic fail no request; IPv6 cluster IPs carry traffic too.
#[test]
fn live_traffic_survives_scaling_and_restarts() {
    let Some(vm) = Vm::or_skip("live_traffic_survives_scaling_and_restarts") else {
        return;
    };
    let job = VmJob::new(LIVE_SCRIPT)
        .binary("rvs-proxy", env!("CARGO_BIN_EXE_rvs-proxy"))
        .file("etc/rvs/m/cluster.yaml", LIVE_MANIFESTS);
    let out = vm.run(&job).expect("VM run");
    assert!(out.success(), "script failed:\n{}", out.output);
    let o = &out.output;
    eprintln!("{o}");
    let v6: Vec<&str> = o.lines().filter_map(|l| l.strip_prefix("v6: ")).collect();
    assert_eq!(v6.len(), 2, "{o}");
    assert!(v6.iter().all(|r| r.starts_with("backend-")), "{o}");
    assert!(
        o.contains("down: 0"),
        "the removed endpoint is drained or deleted: {o}"
    );
    assert!(o.contains("up: 1"), "and comes back at weight 1: {o}");
    let live = o.lines().find(|l| l.starts_with("ok=")).unwrap_or("");
    assert_eq!(live, "ok=120 fail=0", "{o}");
    // The restarted proxy adopted the state: 2 services x 2 real servers.
    assert!(o.contains("after restart: 4"), "{o}");
}
