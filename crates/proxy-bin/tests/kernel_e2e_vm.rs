//! rvs-proxy on the kernel dataplane, end to end in the test VM: manifests
//! in, IPVS and `kube-ipvs0` programmed, real TCP and UDP traffic from a
//! client namespace to backend namespaces (multi-port Services included),
//! endpoint changes (UDP flows and their conntrack entries included), the
//! conntrack sysctls, foreign state left alone, and `--cleanup` removing
//! only what rvs-proxy owns. The manifests are the `kernel-*` scenarios
//! of `crates/testrig/fixtures/manifests/`.

use rvs_testrig::{Vm, VmJob};

const SCRIPT: &str = r#"
set -e
. /usr/lib/rvs/topo.sh
topo_backends
# State that belongs to someone else.
ipvsadm -A -t 10.0.0.99:80 -s wlc
ipvsadm -A -f 5 -s rr
P="rvs-proxy --manifests /etc/rvs/m --hostname-override node-a"
topo_log /tmp/proxy.log

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
echo "== unbind"
# sticky is handed to another proxy: its virtual server goes, and so does
# its address. (The headless label would not do: as kube-proxy, rvs applies
# it to EndpointSlices, not to Services.)
sed -i 's/metadata: {name: sticky, namespace: default}/metadata: {name: sticky, namespace: default, labels: {service.kubernetes.io\/service-proxy-name: elsewhere}}/' /etc/rvs/m/cluster.yaml
$P --once
/usr/sbin/ip -o addr show dev kube-ipvs0 | awk '{print $4}' | sort
ipvsadm -S -n | grep -c '10.96.0.11' || true
echo "== cleanup"
$P --cleanup
ipvsadm -S -n | sort
/usr/sbin/ip link show kube-ipvs0 >/dev/null 2>&1 && echo "kube-ipvs0 still there" || echo "kube-ipvs0 gone"
"#;

#[test]
fn rvs_proxy_programs_the_kernel_from_manifests() {
    let Some(vm) = Vm::or_skip("rvs_proxy_programs_the_kernel_from_manifests") else {
        return;
    };
    let job = VmJob::new(SCRIPT)
        .binary("rvs-proxy", env!("CARGO_BIN_EXE_rvs-proxy"))
        .manifests("kernel-sync", "/etc/rvs/m")
        .unwrap();
    let out = vm.run(&job).expect("VM run");
    let out = out.assert_clean();
    let o = &out.output;

    let plan = out.section("plan");
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
    // As kube-proxy, the node port is served on every host address (the
    // Node object lists only 10.0.1.1): 10.0.1.1, 10.0.2.1, 10.0.3.1.
    assert!(
        plan.contains(&"add service TCP 10.0.3.1:30080 scheduler rr"),
        "{plan:?}"
    );
    assert_eq!(plan.len(), 15, "5 services + 10 real servers: {plan:?}");

    let saved = out.section("sync");
    let want = [
        "-A -f 5 -s rr",
        "-A -t 10.0.0.99:80 -s wlc",
        "-A -t 10.0.1.1:30080 -s rr",
        "-A -t 10.0.2.1:30080 -s rr",
        "-A -t 10.0.3.1:30080 -s rr",
        "-A -t 10.96.0.10:80 -s rr",
        "-A -t 10.96.0.11:8080 -s rr -p 10800",
        "-a -t 10.0.1.1:30080 -r 10.0.2.2:80 -m -w 1",
        "-a -t 10.0.1.1:30080 -r 10.0.3.2:80 -m -w 1",
        "-a -t 10.0.2.1:30080 -r 10.0.2.2:80 -m -w 1",
        "-a -t 10.0.2.1:30080 -r 10.0.3.2:80 -m -w 1",
        "-a -t 10.0.3.1:30080 -r 10.0.2.2:80 -m -w 1",
        "-a -t 10.0.3.1:30080 -r 10.0.3.2:80 -m -w 1",
        "-a -t 10.96.0.10:80 -r 10.0.2.2:80 -m -w 1",
        "-a -t 10.96.0.10:80 -r 10.0.3.2:80 -m -w 1",
        "-a -t 10.96.0.11:8080 -r 10.0.2.2:80 -m -w 1",
        "-a -t 10.96.0.11:8080 -r 10.0.3.2:80 -m -w 1",
    ];
    assert_eq!(saved, want, "{o}");
    assert_eq!(
        out.section("kube-ipvs0"),
        ["10.96.0.10/32", "10.96.0.11/32"]
    );

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
        out.section("converged").is_empty(),
        "a converged node plans nothing: {o}"
    );

    let after = replies("after: ");
    assert_eq!(after, ["backend-one", "backend-one", "backend-one"]);
    let scale = out.section("scale down");
    // The removed real server is drained (weight 0) or already gone.
    if let Some(line) = scale.iter().find(|l| l.contains("10.0.3.2:80")) {
        assert_eq!(line.split_whitespace().nth(3), Some("0"), "{line}");
    }

    assert_eq!(out.section("unbind"), ["10.96.0.10/32", "0"], "{o}");
    let cleaned = out.section("cleanup");
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

const LIVE_SCRIPT: &str = r#"
set -e
. /usr/lib/rvs/topo.sh
topo_backends
topo_log /tmp/proxy.log
P="rvs-proxy --manifests /etc/rvs/m --hostname-override node-a --ipvs-sync-period 2s"
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
# Bounded waits, not fixed sleeps: under TCG on a loaded host one sync
# can take most of a second.
at_weight1() { ipvsadm -S -n | grep -c 'r 10.0.3.2:80 -m -w 1' || true; }
for i in $(seq 100); do [ "$(at_weight1)" = 0 ] && break; sleep 0.1; done
echo "down: $(at_weight1)"
cp /tmp/original.yaml /tmp/up.yaml
mv /tmp/up.yaml /etc/rvs/m/cluster.yaml
for i in $(seq 100); do [ "$(at_weight1)" = 1 ] && break; sleep 0.1; done
echo "up: $(at_weight1)"
kill $pid; wait $pid || true
$P & pid=$!
sleep 1
wait $loader
cat /tmp/live
echo "== recreate"
# kube-ipvs0 deleted and re-created behind the running proxy (a new
# interface index): the next full sync binds the addresses again.
/usr/sbin/ip link del kube-ipvs0
/usr/sbin/ip link add kube-ipvs0 type dummy
for i in $(seq 300); do /usr/sbin/ip -o addr show dev kube-ipvs0 | grep -q '10.96.0.10/32' && break; sleep 0.1; done
/usr/sbin/ip -o addr show dev kube-ipvs0 | grep -c '10.96.0.10/32' || true
echo "== end"
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
        .manifests("kernel-live", "/etc/rvs/m")
        .unwrap();
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
    assert_eq!(out.section("recreate"), ["1"], "{o}");
    // The restarted proxy adopted the state: 2 services x 2 real servers.
    assert!(o.contains("after restart: 4"), "{o}");
}

const MULTI_SCRIPT: &str = r#"
set -e
. /usr/lib/rvs/topo.sh
topo_forwarding
topo_host client 1
topo_host b1 2
topo_host b2 3
topo_log /tmp/proxy.log
# This test binary, run in the guest, is the UDP server and client
# (busybox nc has no UDP); its harness chatter goes to the log.
T="kernel-e2e --ignored --exact --nocapture --test-threads 1"
udp_serve() { # HOST TEXT
    RVS_UDP_SERVE=$2 RVS_UDP_BIND=0.0.0.0:5353 $IP netns exec "$1" $T in_vm_udp_server >>/tmp/proxy.log 2>&1 &
    for i in $(seq 100); do
        $IP netns exec "$1" netstat -uln | grep -q ':5353 ' && return 0
        sleep 0.1
    done
    echo "UDP server on $1 did not start"; return 1
}
udp_ask() { # ADDR:PORT "SOURCE-PORTS": one datagram from each source port
    rm -f /tmp/udp.out
    RVS_UDP_ASK=$1 RVS_UDP_PORTS=$2 RVS_UDP_OUT=/tmp/udp.out \
        $IP netns exec client $T in_vm_udp_client >>/tmp/proxy.log 2>&1
    cat /tmp/udp.out
}
for b in b1 b2; do
    topo_http $b $b-80 80
    topo_http $b $b-8081 8081
    topo_http $b $b-dns-tcp 5353
    udp_serve $b $b-dns
done
P="rvs-proxy --manifests /etc/rvs/m --hostname-override node-a"

$P --once
echo "== saved"
ipvsadm -S -n
echo "== udp listing"
ipvsadm -L -n -u 10.96.0.30:53
echo "== multi-port"
for p in 80 80 8080 8080; do echo "$p: $(topo_get client 10.96.0.20 $p)"; done
echo "== dns tcp"
topo_get client 10.96.0.30 53
topo_get client 10.0.1.1 30053
echo "== udp cluster-ip"
udp_ask 10.96.0.30:53 "40001 40002 40003 40004"
echo "== udp node-port"
udp_ask 10.0.1.1:30053 "40011 40012"
echo "== udp connections"
ipvsadm -L -n -c | grep '^UDP' || true
echo "== udp scale down"
sed -i '/10.0.3.2/d' /etc/rvs/m/dns.yaml
$P --once
ipvsadm -S -n | grep '^-a -u' || true
echo "== udp after"
# The same source ports again: flows that were on the removed backend
# must move, not hang on to it.
udp_ask 10.96.0.30:53 "40001 40002 40003 40004"
echo "== end"
"#;

/// A multi-port Service reaches each port's target port, and UDP Services
/// (ClusterIP and node port, beside TCP on the same port) carry real
/// datagrams to UDP backends and their replies back through the VIP.
#[test]
fn multi_port_and_udp_services_reach_the_right_backends() {
    let Some(vm) = Vm::or_skip("multi_port_and_udp_services_reach_the_right_backends") else {
        return;
    };
    let exe = std::env::current_exe().expect("test binary");
    let job = VmJob::new(MULTI_SCRIPT)
        .binary("rvs-proxy", env!("CARGO_BIN_EXE_rvs-proxy"))
        .binary("kernel-e2e", exe)
        .manifests("kernel-multi-port", "/etc/rvs/m")
        .unwrap();
    let out = vm.run(&job).expect("VM run");
    let out = out.assert_clean();
    let o = &out.output;

    let mut saved = out.section("saved");
    saved.sort_unstable();
    // Node ports on each of the VM node's addresses, as kube-proxy.
    let mut want = Vec::new();
    for host in ["10.0.1.1", "10.0.2.1", "10.0.3.1"] {
        for p in ["-t", "-u"] {
            want.push(format!("-A {p} {host}:30053 -s rr"));
            for backend in ["10.0.2.2", "10.0.3.2"] {
                want.push(format!("-a {p} {host}:30053 -r {backend}:5353 -m -w 1"));
            }
        }
    }
    want.extend(
        [
            "-A -t 10.96.0.20:80 -s rr",
            "-A -t 10.96.0.20:8080 -s rr",
            "-A -t 10.96.0.30:53 -s rr",
            "-A -u 10.96.0.30:53 -s rr",
            "-a -t 10.96.0.20:80 -r 10.0.2.2:80 -m -w 1",
            "-a -t 10.96.0.20:80 -r 10.0.3.2:80 -m -w 1",
            "-a -t 10.96.0.20:8080 -r 10.0.2.2:8081 -m -w 1",
            "-a -t 10.96.0.20:8080 -r 10.0.3.2:8081 -m -w 1",
            "-a -t 10.96.0.30:53 -r 10.0.2.2:5353 -m -w 1",
            "-a -t 10.96.0.30:53 -r 10.0.3.2:5353 -m -w 1",
            "-a -u 10.96.0.30:53 -r 10.0.2.2:5353 -m -w 1",
            "-a -u 10.96.0.30:53 -r 10.0.3.2:5353 -m -w 1",
        ]
        .map(str::to_owned),
    );
    want.sort_unstable();
    assert_eq!(saved, want, "{o}");

    // `ipvsadm -Ln` of the UDP virtual server: its real servers, masqueraded.
    let listing: Vec<Vec<&str>> = out
        .section("udp listing")
        .iter()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert!(
        listing
            .iter()
            .any(|l| l[..] == ["UDP", "10.96.0.30:53", "rr"]),
        "{o}"
    );
    let reals: Vec<&str> = listing
        .iter()
        .filter(|l| l.first() == Some(&"->") && l.get(2) == Some(&"Masq"))
        .map(|l| l[1])
        .collect();
    assert_eq!(reals, ["10.0.2.2:5353", "10.0.3.2:5353"], "{o}");

    // Each service port reaches its own target port on both backends.
    let mut multi = out.section("multi-port");
    multi.sort_unstable();
    assert_eq!(
        multi,
        ["8080: b1-8081", "8080: b2-8081", "80: b1-80", "80: b2-80"],
        "{o}"
    );
    let dns_tcp = out.section("dns tcp");
    assert_eq!(dns_tcp.len(), 2, "{o}");
    assert!(dns_tcp.iter().all(|r| r.ends_with("-dns-tcp")), "{o}");

    // UDP: every datagram answered by a UDP backend, the reply coming back
    // from the address the client asked (IPVS reverses the NAT).
    let udp = |name: &str| -> Vec<(String, String, String)> {
        out.section(name)
            .iter()
            .map(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                assert_eq!(f.len(), 4, "port TEXT from ADDR: {l}\n{o}");
                assert_eq!(f[2], "from", "{l}\n{o}");
                (f[0].to_owned(), f[1].to_owned(), f[3].to_owned())
            })
            .collect()
    };
    let cluster = udp("udp cluster-ip");
    assert_eq!(cluster.len(), 4, "{o}");
    assert!(
        cluster.iter().all(|(_, _, src)| src == "10.96.0.30:53"),
        "{o}"
    );
    let ones = cluster.iter().filter(|(_, r, _)| r == "b1-dns").count();
    let twos = cluster.iter().filter(|(_, r, _)| r == "b2-dns").count();
    assert_eq!((ones, twos), (2, 2), "rr over both UDP backends: {o}");
    let node_port = udp("udp node-port");
    assert_eq!(node_port.len(), 2, "{o}");
    assert!(
        node_port
            .iter()
            .all(|(_, r, src)| r.ends_with("-dns") && src == "10.0.1.1:30053"),
        "{o}"
    );
    let mut node_port_backends: Vec<&str> = node_port.iter().map(|(_, r, _)| &r[..]).collect();
    node_port_backends.sort_unstable();
    assert_eq!(node_port_backends, ["b1-dns", "b2-dns"], "{o}");

    // The kernel's connection table agrees with who answered each flow.
    let conns = out.section("udp connections");
    for (port, reply, _) in &cluster {
        let backend = if reply == "b1-dns" {
            "10.0.2.2:5353"
        } else {
            "10.0.3.2:5353"
        };
        let flow = ["10.0.1.2:", port, " 10.96.0.30:53 ", backend].concat();
        assert!(
            conns
                .iter()
                .any(|l| l.split_whitespace().skip(3).collect::<Vec<_>>().join(" ") == flow),
            "no IPVS connection {flow}: {conns:?}\n{o}"
        );
    }

    // A removed UDP endpoint goes at once, and its flows move to the rest.
    assert_eq!(
        out.section("udp scale down"),
        [
            "-a -u 10.0.1.1:30053 -r 10.0.2.2:5353 -m -w 1",
            "-a -u 10.0.2.1:30053 -r 10.0.2.2:5353 -m -w 1",
            "-a -u 10.0.3.1:30053 -r 10.0.2.2:5353 -m -w 1",
            "-a -u 10.96.0.30:53 -r 10.0.2.2:5353 -m -w 1"
        ],
        "{o}"
    );
    let after = udp("udp after");
    assert_eq!(after.len(), 4, "{o}");
    assert!(
        after
            .iter()
            .all(|(_, r, src)| r == "b1-dns" && src == "10.96.0.30:53"),
        "flows of the removed backend moved: {after:?}\n{o}"
    );
}

const UDP_CONNTRACK_SCRIPT: &str = r#"
set -e
. /usr/lib/rvs/topo.sh
topo_forwarding
topo_host client 1
topo_host b1 2
topo_host b2 3
topo_log /tmp/proxy.log
T="kernel-e2e --ignored --exact --nocapture --test-threads 1"
udp_serve() { # HOST TEXT
    RVS_UDP_SERVE=$2 RVS_UDP_BIND=0.0.0.0:5353 $IP netns exec "$1" $T in_vm_udp_server >>/tmp/proxy.log 2>&1 &
    for i in $(seq 100); do
        $IP netns exec "$1" netstat -uln | grep -q ':5353 ' && return 0
        sleep 0.1
    done
    echo "UDP server on $1 did not start"; return 1
}
udp_ask() { # ADDR:PORT "SOURCE-PORTS": one datagram from each source port
    rm -f /tmp/udp.out
    RVS_UDP_ASK=$1 RVS_UDP_PORTS=$2 RVS_UDP_OUT=/tmp/udp.out \
        $IP netns exec client $T in_vm_udp_client >>/tmp/proxy.log 2>&1
    cat /tmp/udp.out
}
ct() { # the UDP entries of the table, as `conntrack -L` prints them
    conntrack -L -p udp 2>/dev/null | sed 's/^udp *17 *[0-9]* //' | sort
}
for b in b1 b2; do udp_serve $b $b-dns; done
mv /etc/rvs/m/dns.yaml /tmp/dns.yaml
P="rvs-proxy --manifests /etc/rvs/m --hostname-override node-a"

echo "== sysctls"
# kube-proxy's defaults: 32768 per CPU, at least 131072; 24 h, 1 h.
for s in nf_conntrack_max nf_conntrack_tcp_timeout_established nf_conntrack_tcp_timeout_close_wait; do
    echo "$s=$(cat /proc/sys/net/netfilter/$s)"
done
$P --once
for s in nf_conntrack_max nf_conntrack_tcp_timeout_established nf_conntrack_tcp_timeout_close_wait; do
    echo "$s=$(cat /proc/sys/net/netfilter/$s)"
done
echo "hashsize=$(cat /sys/module/nf_conntrack/parameters/hashsize)"
echo "cpus=$(grep -c ^processor /proc/cpuinfo)"

echo "== before the service"
# Datagrams to the node port while nothing serves it: the node answers
# port unreachable, and conntrack keeps the flow, replied by the node.
udp_ask 10.0.1.1:30053 "40021"
ct | grep 'dport=30053' || true

echo "== service added"
mv /tmp/dns.yaml /etc/rvs/m/dns.yaml
$P > /tmp/rvs.log 2>&1 &
echo $! > /tmp/rvs.pid
# The whole sync (IPVS, then the rules, then the conntrack cleanup) is
# done when it logs "synced": seconds under TCG on a loaded host.
topo_wait_for "grep -q 'rvs_proxy::run: synced' /tmp/rvs.log"
ct | grep 'dport=30053' || true
echo "== node port now"
udp_ask 10.0.1.1:30053 "40021"

echo "== stream"
# One client, one source port, a datagram every 100 ms for 8 s.
RVS_UDP_ASK=10.96.0.30:53 RVS_UDP_STREAM=40031 RVS_UDP_OUT=/tmp/stream.out \
    $IP netns exec client $T in_vm_udp_stream >>/tmp/proxy.log 2>&1 &
stream=$!
sleep 2
first=$(grep -o 'b[12]-dns' /tmp/stream.out | head -n1)
case $first in b1-dns) gone=10.0.2.2 ;; *) gone=10.0.3.2 ;; esac
echo "first: $first"
echo "removing: $gone"
sed -i "/$gone/d" /etc/rvs/m/dns.yaml
for i in $(seq 100); do ipvsadm -L -n -u 10.96.0.30:53 | grep -q "$gone" || break; sleep 0.1; done
echo "removed at: $(cat /proc/uptime | cut -d' ' -f1)"
wait $stream
echo "== stream replies"
cat /tmp/stream.out
echo "== table after"
ct | grep 'dport=53 ' || true
echo "== rvs log"
kill "$(cat /tmp/rvs.pid)"; sleep 0.5
grep -i 'conntrack' /tmp/rvs.log || true
echo "== end"
"#;

/// kube-proxy's conntrack settings, and its stale UDP entry cleanup
/// (kubernetes#71514):
///
/// * the conntrack sysctls are raised to kube-proxy's defaults;
/// * a flow to a node port made while nothing served it (replied by the
///   node itself) is deleted once the Service has endpoints, so the same
///   client port then gets its answer from the node port. Without the
///   cleanup the entry stays, and the answer comes back from another
///   source port (NAT picks one to keep the stale tuple unique), which a
///   connected UDP client drops;
/// * a client that keeps sending from one source port reaches the
///   remaining endpoint right after its own is removed, and no entry is
///   left pointing at the removed one. (On this kernel, 6.1, IPVS itself
///   expires the removed real server's connections and their conntrack
///   entries, `expire_nodest_conn` since 5.9, so this part holds with or
///   without the cleanup; it pins the behaviour, the node-port part
///   shows the cleanup's own effect.)
#[test]
fn udp_flows_leave_endpoints_that_are_gone() {
    let Some(vm) = Vm::or_skip("udp_flows_leave_endpoints_that_are_gone") else {
        return;
    };
    let exe = std::env::current_exe().expect("test binary");
    let job = VmJob::new(UDP_CONNTRACK_SCRIPT)
        .binary("rvs-proxy", env!("CARGO_BIN_EXE_rvs-proxy"))
        .binary("kernel-e2e", exe)
        .manifests("kernel-multi-port", "/etc/rvs/m")
        .unwrap();
    let out = vm.run(&job).expect("VM run");
    let out = out.assert_clean();
    let o = &out.output;

    // The sysctls, before and after.
    let sysctls = out.section("sysctls");
    let value = |line: &str| -> u64 { line.split('=').nth(1).unwrap().parse().unwrap() };
    let cpus = value(sysctls.iter().find(|l| l.starts_with("cpus=")).unwrap());
    let max = (32768 * cpus).clamp(131072, 1 << 20);
    let after: Vec<&str> = sysctls[3..6].to_vec();
    assert!(value(after[0]) >= max, "{sysctls:?}");
    assert_eq!(
        after[1], "nf_conntrack_tcp_timeout_established=86400",
        "{o}"
    );
    assert_eq!(after[2], "nf_conntrack_tcp_timeout_close_wait=3600", "{o}");
    let hashsize = value(sysctls.iter().find(|l| l.starts_with("hashsize=")).unwrap());
    assert!(hashsize >= max / 4, "{sysctls:?}");

    // The node's own port-unreachable flow is there, then gone.
    let before = out.section("before the service");
    assert!(before[0].starts_with("40021 error"), "{o}");
    assert!(
        before.iter().any(|l| l.contains("sport=40021")
            && l.contains("src=10.0.1.1 dst=10.0.1.2 sport=30053 dport=40021")),
        "no entry replied by the node: {o}"
    );
    let added = out.section("service added");
    assert!(
        !added.iter().any(|l| l.contains("sport=40021")),
        "the stale node-port entry was not deleted: {o}"
    );
    let now = out.section("node port now");
    assert!(now[0].contains("-dns from 10.0.1.1:30053"), "{o}");

    // The stream: first one backend, then, once it is removed, the other,
    // within a second of its removal; no datagram of the removed backend
    // after it, and at most a few unanswered around the switch.
    let first = out.section("stream")[0]
        .trim_start_matches("first: ")
        .to_owned();
    let other = if first == "b1-dns" {
        "b2-dns"
    } else {
        "b1-dns"
    };
    let removed_at: f64 = out
        .section("stream")
        .iter()
        .find_map(|l| l.strip_prefix("removed at: "))
        .unwrap()
        .parse()
        .unwrap();
    let replies: Vec<(f64, String)> = out
        .section("stream replies")
        .iter()
        .map(|l| {
            let (t, r) = l.split_once(' ').unwrap();
            (t.parse().unwrap(), r.to_owned())
        })
        .collect();
    let late: Vec<&(f64, String)> = replies
        .iter()
        .filter(|(t, _)| *t > removed_at + 1.0)
        .collect();
    assert!(late.len() >= 20, "{o}");
    assert!(
        late.iter().all(|(_, r)| r.starts_with(other)),
        "the flow stayed on {first}: {o}"
    );
    let lost = replies
        .iter()
        .filter(|(_, r)| r.starts_with("error"))
        .count();
    assert!(lost <= 3, "{lost} datagrams unanswered: {o}");
    let gone = if first == "b1-dns" {
        "10.0.2.2"
    } else {
        "10.0.3.2"
    };
    let table = out.section("table after");
    assert!(
        !table.iter().any(|l| l.contains(&format!("src={gone} "))),
        "an entry still points at the removed endpoint: {o}"
    );
}

/// In the guest only (`RVS_UDP_STREAM` set): from source port
/// `RVS_UDP_STREAM`, a datagram to `RVS_UDP_ASK` every 100 ms for 8 s,
/// writing `UPTIME TEXT` per reply (or `UPTIME error`) to `RVS_UDP_OUT`.
#[test]
#[ignore = "a helper the VM tests run in the guest"]
fn in_vm_udp_stream() {
    let Ok(port) = std::env::var("RVS_UDP_STREAM") else {
        return;
    };
    let target = std::env::var("RVS_UDP_ASK").expect("RVS_UDP_ASK");
    let path = std::env::var("RVS_UDP_OUT").expect("RVS_UDP_OUT");
    let socket = std::net::UdpSocket::bind(format!("0.0.0.0:{port}")).expect("bind");
    socket
        .set_read_timeout(Some(std::time::Duration::from_millis(90)))
        .expect("timeout");
    let uptime = || -> String {
        std::fs::read_to_string("/proc/uptime")
            .unwrap_or_default()
            .split_whitespace()
            .next()
            .unwrap_or("0")
            .to_owned()
    };
    let mut out = std::fs::File::create(&path).expect("create");
    let mut buf = [0u8; 512];
    for _ in 0..80 {
        let started = std::time::Instant::now();
        let line = match socket
            .send_to(b"who", &target)
            .and_then(|_| socket.recv_from(&mut buf))
        {
            Ok((n, _)) => format!("{} {}\n", uptime(), String::from_utf8_lossy(&buf[..n])),
            Err(_) => format!("{} error\n", uptime()),
        };
        std::io::Write::write_all(&mut out, line.as_bytes()).expect("write");
        if let Some(rest) = std::time::Duration::from_millis(100).checked_sub(started.elapsed()) {
            std::thread::sleep(rest);
        }
    }
}

/// In the guest only (`RVS_UDP_SERVE` set): a UDP server on
/// `RVS_UDP_BIND` answering every datagram with `RVS_UDP_SERVE`, for at
/// most a minute.
#[test]
#[ignore = "a helper the VM tests run in the guest"]
fn in_vm_udp_server() {
    let Ok(text) = std::env::var("RVS_UDP_SERVE") else {
        return;
    };
    let bind = std::env::var("RVS_UDP_BIND").expect("RVS_UDP_BIND");
    let socket = std::net::UdpSocket::bind(&bind).expect("bind");
    socket
        .set_read_timeout(Some(std::time::Duration::from_millis(200)))
        .expect("timeout");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let mut buf = [0u8; 512];
    while std::time::Instant::now() < deadline {
        if let Ok((_, peer)) = socket.recv_from(&mut buf) {
            socket.send_to(text.as_bytes(), peer).expect("reply");
        }
    }
}

/// In the guest only (`RVS_UDP_ASK` set): one datagram to `RVS_UDP_ASK`
/// from each of the source ports `RVS_UDP_PORTS`, writing `PORT TEXT from
/// ADDR` per reply (or `PORT error …`) to `RVS_UDP_OUT`.
#[test]
#[ignore = "a helper the VM tests run in the guest"]
fn in_vm_udp_client() {
    let Ok(target) = std::env::var("RVS_UDP_ASK") else {
        return;
    };
    let ports = std::env::var("RVS_UDP_PORTS").expect("RVS_UDP_PORTS");
    let mut out = String::new();
    for port in ports.split_whitespace() {
        let ask = || -> std::io::Result<String> {
            let socket = std::net::UdpSocket::bind(format!("0.0.0.0:{port}"))?;
            socket.set_read_timeout(Some(std::time::Duration::from_secs(3)))?;
            socket.send_to(b"who", &target)?;
            let mut buf = [0u8; 512];
            let (n, from) = socket.recv_from(&mut buf)?;
            Ok(format!(
                "{} from {from}",
                String::from_utf8_lossy(&buf[..n])
            ))
        };
        match ask() {
            Ok(reply) => out.push_str(&format!("{port} {reply}\n")),
            Err(err) => out.push_str(&format!("{port} error {err}\n")),
        }
    }
    std::fs::write(std::env::var("RVS_UDP_OUT").expect("RVS_UDP_OUT"), out).expect("write");
}
