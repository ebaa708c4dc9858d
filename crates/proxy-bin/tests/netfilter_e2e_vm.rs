//! rvs-proxy's netfilter side end to end in the test VM: IPVS, ipsets and
//! iptables together on a real kernel, with traffic.
//!
//! The VM's root namespace is the node (10.0.1.1 is its address towards
//! the outside client); `b1` and `b2` are pods on it (10.0.2.2, 10.0.3.2;
//! cluster CIDR 10.0.2.0/23); `client` (10.0.1.2) and `stranger`
//! (10.0.4.2) are outside hosts. The pods answer `GET /cgi-bin/ip` with
//! the source address they see. Checked:
//!
//! * NodePort through the node IP: masqueraded (the pod sees the node),
//!   unless `externalTrafficPolicy: Local` (the pod sees the client);
//! * an external IP, masqueraded;
//! * a LoadBalancer IP with source ranges: the allowed client gets
//!   through, the stranger is dropped; a partial sync that widens the
//!   ranges lets it in, adding one set member and restoring no rules;
//! * hairpin: a pod reaching its own Service through the cluster IP;
//! * a cluster IP from the node itself;
//! * a VIP port that is no Service is rejected by KUBE-IPVS-FILTER;
//! * kube-proxy's sysctls; a new `--ipset-maxelem` rebuilding the sets
//!   in place;
//! * `--cleanup` removes our virtual servers, sets, chains and
//!   kube-ipvs0, and leaves a foreign virtual server, chain and set;
//! * the legacy iptables backend as well as nft.
//!
//! The manifests are `crates/testrig/fixtures/manifests/netfilter/`.

use rvs_testrig::{Vm, VmJob};

const SCRIPT: &str = r#"
set -e
. /usr/lib/rvs/topo.sh
IP=/usr/sbin/ip
topo_host client 1
topo_host b1 2
topo_host b2 3
topo_host stranger 4
# Pods answer with the source address they see.
for pod in b1 b2; do
    mkdir -p /srv/$pod/cgi-bin
    printf '#!/bin/sh\nprintf "Content-Type: text/plain\\r\\n\\r\\n%%s\\n" "$REMOTE_ADDR"\n' > /srv/$pod/cgi-bin/ip
    chmod +x /srv/$pod/cgi-bin/ip
    $IP netns exec $pod busybox httpd -p 80 -h /srv/$pod
done
# seen NS ADDR PORT: the source address the pod saw ("-" when the request
# failed); NS "node" is the root namespace.
seen() {
    if [ "$1" = node ]; then run=""; else run="$IP netns exec $1"; fi
    reply=$(printf 'GET /cgi-bin/ip HTTP/1.0\r\n\r\n' | $run timeout 4 busybox nc -w 2 "$2" "$3" 2>/dev/null) || true
    case "$reply" in
        # busybox httpd listens on IPv6: [::ffff:10.0.2.1] is 10.0.2.1.
        *" 200 "*) printf '%s\n' "$reply" | tr -d '\r' | tail -n 1 | sed 's/^\[::ffff:\(.*\)\]$/\1/' ;;
        *) echo - ;;
    esac
}
# counter TABLE CHAIN PATTERN: packets of the matching rule.
counter() {
    iptables-save -c -t "$1" | grep -- "-A $2 " | grep -- "$3" | head -n 1 | sed 's/^\[\([0-9]*\):.*/\1/'
}
# Someone else's state.
ipvsadm -A -t 10.0.0.99:80 -s wlc
iptables -N FOREIGN
iptables -A FOREIGN -j RETURN
iptables -A INPUT -j FOREIGN
ipset create foreign hash:ip
echo 0 > /proc/sys/net/ipv4/ip_forward

topo_log /tmp/proxy.log
P0="rvs-proxy --manifests /etc/rvs/m --hostname-override node-a --cluster-cidr 10.0.2.0/23 --ipvs-strict-arp"
P="$P0 --ipset-maxelem 4096"
$P & pid=$!
topo_wait_for "ipset list KUBE-LOAD-BALANCER-FW 2>/dev/null | grep -q 192.0.2.10 &&
    iptables-save -t filter | grep -q KUBE-SOURCE-RANGES-FIREWALL"


echo "== sysctls"
for s in vs/conntrack vs/expire_nodest_conn vs/expire_quiescent_template ip_forward conf/all/arp_ignore conf/all/arp_announce; do
    echo "$s=$(cat /proc/sys/net/ipv4/$s)"
done
echo "== sets"
ipset list -n | sort
ipset list KUBE-LOAD-BALANCER-SOURCE-CIDR | grep -E '^(Header|192)'
ipset list KUBE-NODE-PORT-LOCAL-TCP | sed -n '/^Members/,$p' | tail -n +2
ipset list KUBE-LOOP-BACK | sed -n '/^Members/,$p' | tail -n +2 | sort
echo "== traffic"
echo "nodeport: $(seen client 10.0.1.1 30080)"
echo "nodeport-local: $(seen client 10.0.1.1 30081)"
echo "lb-allowed: $(seen client 192.0.2.10 80)"
echo "lb-stranger: $(seen stranger 192.0.2.10 80)"
echo "lb-dropped: $(counter filter KUBE-SOURCE-RANGES-FIREWALL '-j DROP')"
echo "external-ip: $(seen client 198.51.100.5 80)"
echo "hairpin: $(seen b1 10.96.0.20 80)"
echo "from-node: $(seen node 10.96.0.20 80)"
echo "non-service-port: $(seen client 10.96.0.20 81)"
echo "rejected: $(counter filter KUBE-IPVS-FILTER '-j REJECT')"

echo "== widen"
sed 's|\[10.0.1.0/24\]|[10.0.1.0/24, 10.0.4.0/24]|' /etc/rvs/m/cluster.yaml > /tmp/wide.yaml
mv /tmp/wide.yaml /etc/rvs/m/cluster.yaml
topo_wait_for "ipset list KUBE-LOAD-BALANCER-SOURCE-CIDR | grep -q 10.0.4.0/24"
echo "lb-stranger: $(seen stranger 192.0.2.10 80)"
kill $pid; wait $pid || true

echo "== maxelem"
# A new maxelem rebuilds the sets in place (swapped in under the rules).
$P0 --once --ipset-maxelem 8192
ipset list KUBE-LOAD-BALANCER-SOURCE-CIDR | grep -E '^(Header|192)' | sed 's/ bucketsize.*//' | sort
echo "lb-stranger: $(seen stranger 192.0.2.10 80)"

echo "== cleanup"
$P --cleanup
ipvsadm -S -n | sort
iptables-save | grep -E '^(:|-A)' | grep -v -E '^:(INPUT|OUTPUT|FORWARD|PREROUTING|POSTROUTING) ' | sort
ip6tables-save | grep -c KUBE- || true
ipset list -n | sort
$IP link show kube-ipvs0 >/dev/null 2>&1 && echo "kube-ipvs0 still there" || echo "kube-ipvs0 gone"

echo "== legacy"
$P --iptables-backend legacy --once
echo "legacy-chains: $(iptables-legacy-save | grep -c '^:KUBE-')"
echo "nft-chains: $(iptables-nft-save | grep -c '^:KUBE-' || true)"
echo "nodeport: $(seen client 10.0.1.1 30080)"
echo "lb-allowed: $(seen client 192.0.2.10 80)"
$P --iptables-backend legacy --cleanup
echo "legacy-after: $(iptables-legacy-save | grep -c 'KUBE-' || true)"
ipset list -n | sort
"#;

fn value<'a>(lines: &[&'a str], key: &str) -> &'a str {
    lines
        .iter()
        .find_map(|l| l.strip_prefix(key).and_then(|r| r.strip_prefix(": ")))
        .unwrap_or("<missing>")
}

#[test]
fn ipvs_ipsets_and_iptables_carry_traffic_together() {
    let Some(vm) = Vm::or_skip("ipvs_ipsets_and_iptables_carry_traffic_together") else {
        return;
    };
    let job = VmJob::new(SCRIPT)
        .binary("rvs-proxy", env!("CARGO_BIN_EXE_rvs-proxy"))
        .manifests("netfilter", "/etc/rvs/m")
        .unwrap();
    let out = vm.run(&job).expect("VM run");
    let out = out.assert_clean();
    let o = &out.output;

    assert_eq!(
        out.section("sysctls"),
        [
            "vs/conntrack=1",
            "vs/expire_nodest_conn=1",
            "vs/expire_quiescent_template=1",
            "ip_forward=1",
            "conf/all/arp_ignore=1",
            "conf/all/arp_announce=2",
        ],
        "{o}"
    );

    let sets = out.section("sets");
    for name in [
        "KUBE-CLUSTER-IP",
        "KUBE-LOAD-BALANCER-SOURCE-CIDR",
        "KUBE-NODE-PORT-TCP",
        "KUBE-IPVS-IPS",
        "KUBE-6-CLUSTER-IP",
        "KUBE-6-LOAD-BALANCER-SOURCE-CID",
        "foreign",
    ] {
        assert!(sets.contains(&name), "{name} missing: {o}");
    }
    assert!(
        sets.iter()
            .any(|l| l.starts_with("Header:") && l.contains("maxelem 4096")),
        "--ipset-maxelem: {o}"
    );
    assert!(sets.contains(&"192.0.2.10,tcp:80,10.0.1.0/24"), "{o}");
    assert!(sets.contains(&"30081"), "eTP=Local node port: {o}");
    assert!(
        sets.contains(&"10.0.2.2,tcp:80,10.0.2.2") && sets.contains(&"10.0.3.2,tcp:80,10.0.3.2"),
        "hairpin members: {o}"
    );

    let traffic = out.section("traffic");
    // Masqueraded to the node's address towards the pod.
    assert_eq!(value(&traffic, "nodeport"), "10.0.2.1", "{o}");
    // externalTrafficPolicy: Local keeps the client's address.
    assert_eq!(value(&traffic, "nodeport-local"), "10.0.1.2", "{o}");
    assert_eq!(value(&traffic, "lb-allowed"), "10.0.3.1", "{o}");
    assert_eq!(value(&traffic, "lb-stranger"), "-", "{o}");
    assert_ne!(value(&traffic, "lb-dropped"), "0", "{o}");
    assert_eq!(value(&traffic, "external-ip"), "10.0.3.1", "{o}");
    // Hairpin: the pod reaches itself, masqueraded.
    assert_eq!(value(&traffic, "hairpin"), "10.0.2.1", "{o}");
    assert_ne!(value(&traffic, "from-node"), "-", "{o}");
    assert_eq!(value(&traffic, "non-service-port"), "-", "{o}");
    assert_ne!(value(&traffic, "rejected"), "0", "{o}");

    let widen = out.section("widen");
    assert_eq!(
        value(&widen, "lb-stranger"),
        "10.0.3.1",
        "a partial sync widened the source ranges: {o}"
    );

    // The widening was a partial sync: one member added, no restore.
    let partial: Vec<&str> = o
        .lines()
        .filter(|l| l.contains(" synced ") && l.contains("full=false"))
        .collect();
    assert!(
        partial
            .iter()
            .any(|l| l.contains(" set_members=1 ") && l.contains(" restores=0 ")),
        "{partial:?}"
    );

    let maxelem = out.section("maxelem");
    assert_eq!(
        maxelem,
        [
            "192.0.2.10,tcp:80,10.0.1.0/24",
            "192.0.2.10,tcp:80,10.0.4.0/24",
            "Header: family inet hashsize 1024 maxelem 8192",
            "lb-stranger: 10.0.3.1",
        ],
        "{o}"
    );

    let cleaned = out.section("cleanup");
    assert_eq!(
        cleaned,
        [
            "-A -t 10.0.0.99:80 -s wlc",
            "-A FOREIGN -j RETURN",
            "-A INPUT -j FOREIGN",
            ":FOREIGN - [0:0]",
            "0",
            "foreign",
            "kube-ipvs0 gone",
        ],
        "{o}"
    );

    let legacy = out.section("legacy");
    assert_eq!(value(&legacy, "legacy-chains"), "11", "{o}");
    assert_eq!(value(&legacy, "nft-chains"), "0", "{o}");
    assert_eq!(value(&legacy, "nodeport"), "10.0.2.1", "{o}");
    assert_eq!(value(&legacy, "lb-allowed"), "10.0.3.1", "{o}");
    assert_eq!(value(&legacy, "legacy-after"), "0", "{o}");
    assert_eq!(legacy.last(), Some(&"foreign"), "{o}");
}
