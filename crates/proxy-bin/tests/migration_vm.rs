//! Migration under live traffic (issue 16, deliverable 4): one node in
//! the test VM is switched from the real kube-proxy (`--proxy-mode=ipvs`)
//! to `rvs-proxy --dataplane kernel` and back, then rvs-proxy is
//! restarted ten times, while clients send requests without pause
//! through a Service's cluster IP and its node port. Every request must
//! succeed, no real server may stay at weight 0 (kubernetes #92019), and
//! the state after each switch must equal that of a fresh start of the
//! proxy that took over.
//!
//! The cluster: the host's kube-apiserver as the conformance harness runs
//! it (`rvs_conformance::harness::start_plane`: Node `conformance-node` at
//! 10.0.2.15), reached from the guest through its one forward; a Service
//! `web` (cluster IP 10.96.10.10:80, node port 30080) whose endpoints
//! `b1`..`b4` are busybox HTTP servers in network namespaces of the guest
//! (10.0.21.2 .. 10.0.24.2, port 8080). The clients are this test's own
//! binary, copied into the guest and started as `migration_vm client` in
//! the namespace `client` (10.0.11.2): one thread per target, one request
//! at a time with a short pause, each bounded by a timeout, the whole run
//! bounded in requests and seconds. Nothing leaves the guest: its only
//! link is qemu's user network with `restrict=on`, so the host never sees
//! a service address and needs no blackhole route.
//!
//! The guest script drives the run; it prints `@@DO ACTION@@` when the
//! host must change the EndpointSlice, and the host does so. Phases (the
//! clients count requests by the phase they started in):
//!
//! 1. references: rvs-proxy, then (node wiped) kube-proxy, each started
//!    on a clean node; their converged states are the fresh-start
//!    references;
//! 2. `kube-proxy`: traffic; `b2` turns terminating, kube-proxy drains it
//!    at weight 0;
//! 3. `to-rvs`: kube-proxy gets SIGTERM and leaves its state; `b2` is
//!    made ready again and `b1` is set to weight 0 on the node port (as an
//!    interrupted drain would leave it); rvs-proxy starts and must bring
//!    both back to weight 1;
//! 4. `rvs`: scale out (`b4` added), then in (`b4` removed: it drains at
//!    weight 0) and `b3` terminating;
//! 5. `to-kube-proxy`: rvs-proxy stops; `b3` ready again, `b1` set to
//!    weight 0 on the cluster IP; kube-proxy starts;
//! 6. `kube-proxy-2`, `to-rvs-2`, then `restart-1` .. `restart-10`: each
//!    restart sets one real server to weight 0 while rvs-proxy is down;
//! 7. `rvs-final`: `b4`'s drain (handed over twice) must have ended.
//!
//! After each switch and restart the node's normalised state
//! (`rvs_conformance::state`: `ipvsadm -Sn`, ipsets, addresses,
//! iptables) must equal the fresh-start reference of the proxy now
//! running; the only allowed difference is `b4` still draining at weight
//! 0 (IPVS keeps a closed connection 2 minutes in TIME_WAIT), and not at
//! the end.
//!
//! This file has its own `main` (`harness = false`): the same binary is
//! the test on the host and the clients in the guest.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stderr,
    clippy::print_stdout
)] // test code

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::SocketAddrV4;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use rvs_conformance::diff::{self, Difference, Side};
use rvs_conformance::harness::{self, GUEST_API, proxy_args, strip_debug};
use rvs_conformance::scenario::{DEFAULT_NODE_NAME, NodeSetup, Profile};
use rvs_conformance::script::{self, FUNCTIONS, GUEST_KUBECONFIG, Proxy};
use rvs_conformance::state::State;
use rvs_testrig::{RigError, Vm, VmJob};

const TEST: &str = "migration_under_live_traffic";

/// The restarts of rvs-proxy after the switches.
const RESTARTS: usize = 10;

/// What the host does to the EndpointSlice when the guest asks, in order.
const ACTIONS: &[(&str, &[(u8, Cond)])] = &[
    ("b2-terminating", &[(1, R), (2, T), (3, R)]),
    ("b2-ready", BASE),
    ("b4-add", &[(1, R), (2, R), (3, R), (4, R)]),
    ("b4-remove-b3-terminating", &[(1, R), (2, R), (3, T)]),
    ("b3-ready", BASE),
];

/// The endpoints every compared state is taken with.
const BASE: &[(u8, Cond)] = &[(1, R), (2, R), (3, R)];

#[derive(Clone, Copy, Debug)]
enum Cond {
    Ready,
    Terminating,
}
use Cond::{Ready as R, Terminating as T};

/// The sections of a state dump compared with the fresh-start reference.
const COMPARED: &[&str] = &[
    "ipvs",
    "ipsets",
    "addresses",
    "iptables-nat",
    "iptables-filter",
    "iptables-mangle",
    "iptables-legacy",
];

/// `b4`'s real servers: they may still drain at weight 0 after a switch.
const DRAINING_RS: &str = "-r 10.0.24.2:8080 ";

const SERVICE: &str = r#"
apiVersion: v1
kind: Service
metadata: {name: web, namespace: default}
spec:
  type: NodePort
  clusterIP: 10.96.10.10
  ports: [{name: http, port: 80, targetPort: 8080, nodePort: 30080, protocol: TCP}]
"#;

/// The EndpointSlice of `web` with backends `bN` in the given conditions.
fn slice(endpoints: &[(u8, Cond)]) -> String {
    let mut s = String::from(
        "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\n\
         metadata: {name: web-1, namespace: default, labels: {kubernetes.io/service-name: web}}\n\
         addressType: IPv4\nports: [{name: http, port: 8080, protocol: TCP}]\nendpoints:\n",
    );
    for (n, cond) in endpoints {
        let conditions = match cond {
            Cond::Ready => "{ready: true, serving: true, terminating: false}",
            Cond::Terminating => "{ready: false, serving: true, terminating: true}",
        };
        let _ = writeln!(
            s,
            "- {{addresses: [10.0.2{n}.2], nodeName: {DEFAULT_NODE_NAME}, conditions: {conditions}}}"
        );
    }
    s
}

/// The guest's part (after the conformance harness's functions).
const SCRIPT: &str = r#"
. /usr/lib/rvs/topo.sh
VIP=10.96.10.10
NODE=10.0.2.15
NP=30080
WHICH=none
note() { echo "-- $(uptime_s) $*"; }
report() {
    echo stop > /tmp/phase
    [ -n "${CLIENT:-}" ] && { stop_client || true; }
    echo "== ipvs at the end"; ipvsadm -Ln 2>&1
    echo "== client"; cat /tmp/client.out 2>/dev/null
    for p in kube-proxy rvs-proxy; do
        echo "== $p log (errors and warnings)"
        grep -E '^[EWF][0-9]{4} | (ERROR|WARN) ' /tmp/$p.log 2>/dev/null | tail -n 60
    done
}
fail() {
    echo "FAILED: $*"
    echo "== ipvs when it failed"; ipvsadm -Sn 2>&1
    report
    exit 1
}
# bounded WHAT SECONDS PID: waits for PID; kills it (and fails) after SECONDS.
bounded() {
    ( sleep "$2"; kill -KILL "$3" 2>/dev/null ) &
    killer=$!
    wait "$3"; rc=$?
    kill "$killer" 2>/dev/null; wait "$killer" 2>/dev/null
    [ "$rc" -ne 137 ] || fail "$1 did not end within $2 s"
    return 0
}
# start_proxy kube|rvs: starts a proxy on whatever the node has.
start_proxy() {
    WHICH=$1
    T0=$(now_epoch)
    STARTED=$(uptime_s)
    # run_kube and run_rvs exec the proxy: $! is its process.
    if [ "$1" = kube ]; then run_kube >>/tmp/kube-proxy.log 2>&1 &
    else run_rvs >>/tmp/rvs-proxy.log 2>&1 &
    fi
    PROXY=$!
}
# stop_proxy: SIGTERM, as a DaemonSet's pod is stopped; the state stays.
stop_proxy() {
    kill -TERM "$PROXY"
    bounded "$WHICH-proxy after SIGTERM" 30 "$PROXY"
    note "$WHICH stopped"
}
# wait_synced: until the proxy started last has ended a sync (its metrics).
wait_synced() {
    i=0
    until [ "$(sync_state "$T0")" = done ]; do
        i=$((i + 1)); [ $i -le 600 ] || fail "$WHICH: no sync within 300 s"
        alive || fail "$WHICH exited"
        sleep 0.5
    done
    note "$WHICH synced $(elapsed_since "$STARTED") s after its start"
}
# rs_state N: the weight of backend bN's real servers on every virtual
# server of web (cluster IP, node ports), "absent", "partial" or "mixed".
rs_state() {
    ipvsadm -Sn | awk -v rs="10.0.2$1.2:8080" -v vip="$VIP:80" -v np=":$NP" '
        $1 == "-A" && ($3 == vip || substr($3, length($3) - length(np) + 1) == np) { vs[$3] = 1; n++ }
        $1 == "-a" && ($3 in vs) && $5 == rs { m++; w[$NF] = 1 }
        END {
            if (n == 0) { print "no-service"; exit }
            if (m == 0) { print "absent"; exit }
            if (m < n) { print "partial"; exit }
            k = 0; for (x in w) { k++; one = x }
            if (k == 1) print one; else print "mixed"
        }'
}
# wait_rs N WANT: until rs_state N is WANT (bounded: 120 s).
wait_rs() {
    i=0
    until [ "$(rs_state "$1")" = "$2" ]; do
        i=$((i + 1)); [ $i -le 600 ] || fail "$WHICH: b$1 is $(rs_state "$1"), not $2, after 120 s"
        sleep 0.2
    done
}
# rs_on N VS: bN's weight on the virtual server VS, or "absent".
rs_on() {
    ipvsadm -Sn | awk -v rs="10.0.2$1.2:8080" -v vs="$2" '
        $1 == "-a" && $3 == vs && $5 == rs { w = $NF }
        END { if (w == "") print "absent"; else print w }'
}
# wait_drained N: until bN is at weight 0 or gone on the virtual servers
# the clients use (elsewhere it had no connections: deleted at once).
wait_drained() {
    for vs in "$VIP:80" "$NODE:$NP"; do
        i=0
        until [ "$(rs_on "$1" "$vs")" = 0 ] || [ "$(rs_on "$1" "$vs")" = absent ]; do
            i=$((i + 1)); [ $i -le 600 ] || fail "$WHICH: b$1 on $vs is $(rs_on "$1" "$vs"), not drained, after 120 s"
            sleep 0.2
        done
    done
}
# settle NAME: until nothing is queued and two snapshots in a row agree.
settle() {
    i=0; rm -f /tmp/s1
    while :; do
        i=$((i + 1)); [ $i -le 120 ] || fail "$WHICH: the state did not settle ($1)"
        if [ "$(sync_state 0)" = done ]; then
            snapshot > /tmp/s2
            if [ -f /tmp/s1 ] && cmp -s /tmp/s1 /tmp/s2; then return; fi
            mv /tmp/s2 /tmp/s1
        fi
        sleep 0.5
    done
}
# state_dump NAME: the settled state, for the host to compare.
state_dump() {
    settle "$1"
    echo "@@DUMP $1@@"; cat /tmp/s1; echo "@@DONE $1@@"
}
# base_weights: b1..b3 at weight 1 everywhere (the base EndpointSlice).
base_weights() { for n in 1 2 3; do wait_rs $n 1; done; }
# wipe: a clean node, as a fresh one has (for the references).
wipe() {
    for t in nat filter mangle; do iptables -t $t -F; iptables -t $t -X; done
    ipset destroy
    ipvsadm -C
    $IP link del kube-ipvs0
}
phase() { echo "$1" > /tmp/phase.new; mv /tmp/phase.new /tmp/phase; note "phase $1"; }
count() { cat /tmp/client-count 2>/dev/null || echo 0; }
# hold N: keep the phase until the clients have made N more requests.
hold() {
    goal=$(($(count) + $1)); i=0
    while [ "$(count)" -lt "$goal" ]; do
        i=$((i + 1)); [ $i -le 600 ] || fail "the clients stalled"
        sleep 0.2
    done
}
stop_client() {
    phase stop
    c=$CLIENT; CLIENT=
    bounded "the clients" 30 "$c"
}
ask() { echo "@@DO $1@@"; }
# zero N VS: sets bN to weight 0 on VS, as an interrupted drain leaves it.
zero() {
    ipvsadm -e -t "$2" -r "10.0.2$1.2:8080" -m -w 0 || fail "cannot set b$1 to weight 0 on $2"
    note "b$1 set to weight 0 on $2"
}

# host4 NAME N: topo_host for a guest without IPv6: NAME's eth0 is
# 10.0.N.2/24, routed through v-NAME (10.0.N.1) in the node's namespace.
host4() {
    $IP netns add "$1" &&
    $IP link add "v-$1" type veth peer name eth0 netns "$1" &&
    $IP addr add "10.0.$2.1/24" dev "v-$1" &&
    $IP link set "v-$1" up &&
    $IP -n "$1" link set lo up &&
    $IP -n "$1" addr add "10.0.$2.2/24" dev eth0 &&
    $IP -n "$1" link set eth0 up &&
    $IP -n "$1" route add default via "10.0.$2.1" || fail "cannot make host $1"
}
echo 1 > /proc/sys/net/ipv4/ip_forward
host4 client 11
for n in 1 2 3 4; do host4 b$n 2$n; topo_http b$n backend-$n 8080 || fail "cannot serve on b$n"; done

# 1. The fresh-start references.
start_proxy rvs; wait_synced; base_weights; state_dump ref-rvs; stop_proxy
wipe
start_proxy kube; wait_synced; base_weights; state_dump ref-kube

# 2. Traffic, on kube-proxy.
phase kube-proxy
ip netns exec client migration-client client --targets "$VIP:80,$NODE:$NP" \
    --phase-file /tmp/phase --count-file /tmp/client-count $CLIENT_LIMITS >/tmp/client.out 2>&1 &
CLIENT=$!
hold 40
ask b2-terminating; wait_drained 2; note "kube-proxy drains b2: weight $(rs_on 2 "$VIP:80") on the cluster IP"
hold 20

# 3. To rvs-proxy, on kube-proxy's state.
phase to-rvs
stop_proxy
ask b2-ready
zero 1 "$NODE:$NP"
start_proxy rvs; wait_synced; base_weights; state_dump switch-to-rvs
hold 20

# 4. rvs-proxy: real servers change under traffic.
phase rvs
ask b4-add; wait_rs 4 1; hold 40
ask b4-remove-b3-terminating; wait_drained 4; wait_drained 3
note "rvs-proxy drains b3 and b4: weights $(rs_on 3 "$VIP:80") and $(rs_on 4 "$VIP:80") on the cluster IP"
hold 20

# 5. Back to kube-proxy.
phase to-kube-proxy
stop_proxy
ask b3-ready
zero 1 "$VIP:80"
start_proxy kube; wait_synced; base_weights; state_dump switch-to-kube-proxy
hold 20
phase kube-proxy-2
hold 20

# 6. To rvs-proxy again, then restarts.
phase to-rvs-2
stop_proxy
start_proxy rvs; wait_synced; base_weights; state_dump switch-to-rvs-2
hold 20
r=1  # (the functions above use i)
while [ $r -le $RESTARTS ]; do
    phase restart-$r
    stop_proxy
    n=$(( (r - 1) % 3 + 1 ))
    if [ $((r % 2)) = 1 ]; then zero $n "$VIP:80"; else zero $n "$NODE:$NP"; fi
    start_proxy rvs; wait_synced; base_weights; state_dump restart-$r
    hold 10
    r=$((r + 1))
done

# 7. The end: b4's drain is over.
phase rvs-final
wait_rs 4 absent
state_dump final
hold 20
report
echo "== ok"
"#;

/// Renders the whole guest script.
fn guest_script(kube_args: &[String], rvs_args: &[String], client_limits: &str) -> String {
    let metrics = script::reachable("127.0.0.1:10249", 10249);
    let healthz = script::reachable("0.0.0.0:10256", 10256);
    let mut s = script::prelude(&metrics, &healthz, false);
    s.push_str("PROXY=0\n");
    let _ = writeln!(s, "RESTARTS={RESTARTS}\nCLIENT_LIMITS='{client_limits}'");
    let words = |args: &[String]| {
        args.iter()
            .map(|a| script::quote(a))
            .collect::<Vec<_>>()
            .join(" ")
    };
    let _ = writeln!(s, "run_kube() {{ exec kube-proxy {}; }}", words(kube_args));
    let _ = writeln!(s, "run_rvs() {{ exec rvs-proxy {}; }}", words(rvs_args));
    s.push_str(FUNCTIONS);
    s.push_str(SCRIPT);
    s
}

/// One phase's counts, as the clients print them.
#[derive(Clone, Debug, Default)]
struct PhaseCounts {
    name: String,
    fields: BTreeMap<String, String>,
}

impl PhaseCounts {
    fn num(&self, key: &str) -> u64 {
        self.fields
            .get(key)
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    }
}

fn client_phases(output: &str) -> Vec<PhaseCounts> {
    output
        .lines()
        .filter(|l| l.starts_with("phase="))
        .map(|l| {
            let fields: BTreeMap<String, String> = l
                .split_whitespace()
                .filter_map(|w| w.split_once('='))
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect();
            PhaseCounts {
                name: fields.get("phase").cloned().unwrap_or_default(),
                fields,
            }
        })
        .collect()
}

/// The dump named `name` in the guest's output.
fn dump<'a>(output: &'a str, name: &str) -> Option<&'a str> {
    let begin = format!("@@DUMP {name}@@\n");
    let end = format!("@@DONE {name}@@");
    let start = output.find(&begin)? + begin.len();
    let len = output[start..].find(&end)?;
    Some(&output[start..start + len])
}

/// The compared sections of a dump.
fn compared_state(text: &str) -> State {
    let mut state = State::parse(text, None);
    state
        .sections
        .retain(|name, _| COMPARED.contains(&name.as_str()));
    state
}

/// Differences between a fresh start (`-`) and the state after a switch
/// (`+`), without `b4`'s drain when `drain_allowed`.
fn differences(reference: &State, after: &State, drain_allowed: bool) -> Vec<Difference> {
    diff::compare(reference, after)
        .into_iter()
        .filter(|d| {
            !(drain_allowed
                && d.section == "ipvs"
                && d.side == Side::Rvs
                && d.line.contains(DRAINING_RS)
                && d.line.ends_with(" -w 0"))
        })
        .collect()
}

/// Runs the test; `Err` is a failure, `Ok(false)` a skip.
fn migration_under_live_traffic() -> Result<bool, String> {
    let started = Instant::now();
    let Some(vm) = Vm::or_skip(TEST) else {
        return Ok(false);
    };
    let plane = match harness::start_plane() {
        Ok(plane) => plane,
        Err(RigError::Unavailable(reason)) => {
            rvs_testrig::skip(TEST, &reason);
            return Ok(false);
        }
        Err(e) => return Err(format!("control plane: {e}")),
    };
    let kube_proxy = plane.k8s_bin().join("kube-proxy");
    let rvs_proxy = PathBuf::from(env!("CARGO_BIN_EXE_rvs-proxy"));
    let me = std::env::current_exe().map_err(|e| format!("current_exe: {e}"))?;
    // Debug builds are mostly DWARF, copied into the guest's memory.
    let rvs_stripped = strip_debug(&rvs_proxy);
    let me_stripped = strip_debug(&me);
    let rvs_bin = rvs_stripped
        .as_ref()
        .map_or(rvs_proxy.clone(), |s| s.1.clone());
    let client_bin = me_stripped.as_ref().map_or(me.clone(), |s| s.1.clone());

    plane
        .apply(&format!("{SERVICE}---\n{}", slice(BASE)))
        .map_err(|e| format!("apply the Service: {e}"))?;
    let profile = Profile {
        flags: Vec::new(),
        config: None,
        node: NodeSetup::default(),
        alone: None,
    };
    let kube_args = proxy_args(Proxy::KubeProxy, &profile);
    let rvs_args = proxy_args(Proxy::Rvs, &profile);
    let guest_api: SocketAddrV4 = GUEST_API.parse().map_err(|e| format!("{e}"))?;
    let kubeconfig = plane
        .kubeconfig_for_server("kube-proxy", &format!("https://{guest_api}"))
        .map_err(|e| format!("kubeconfig: {e}"))?;
    // The timeout is for the emulated guest on a shared host, which stalls
    // for seconds at times (a connect seen taking 6.7 s with a 5 s
    // timeout); a dropped SYN costs a 1 s retransmission and shows in the
    // slow-connect count instead.
    let limits = "--max-requests 200000 --max-seconds 600 --interval-ms 100 --timeout-ms 10000";
    let job = VmJob::new(guest_script(&kube_args, &rvs_args, limits))
        .binary("kube-proxy", &kube_proxy)
        .binary("rvs-proxy", &rvs_bin)
        .binary("migration-client", &client_bin)
        .file(GUEST_KUBECONFIG, kubeconfig)
        .forward_to_host(
            guest_api,
            plane.api_addr().map_err(|e| e.to_string())?.port(),
        )
        .kernel_arg("ipv6.disable=1")
        .memory_mib(1536)
        .timeout(Duration::from_secs(900));
    let mut running = vm.start(&job).map_err(|e| format!("boot: {e}"))?;
    eprintln!("{TEST}: booted ({:.1?})", started.elapsed());
    // Until the guest's verdict (bounded by the job's timeout, which
    // `wait` enforces): its notes as they come, and the changes it asks for.
    let mut shown = 0;
    let mut actions = ACTIONS.iter().peekable();
    while started.elapsed() < Duration::from_secs(1000) {
        let console = running.console();
        let notes: Vec<&str> = console.lines().filter(|l| l.starts_with("-- ")).collect();
        for note in notes.iter().skip(shown) {
            eprintln!("{TEST}: guest {note}");
        }
        shown = notes.len();
        if let Some((action, endpoints)) = actions.peek()
            && console.lines().any(|l| l == format!("@@DO {action}@@"))
        {
            plane
                .apply(&slice(endpoints))
                .map_err(|e| format!("{action}: {e}"))?;
            eprintln!("{TEST}: host {action} ({:.1?})", started.elapsed());
            actions.next();
            continue;
        }
        if console.contains("@@RVS-END rc=") {
            break;
        }
        // A pause that also notices qemu's exit (a line that never comes).
        if let Err(RigError::NoVerdict { .. }) =
            running.wait_for_line("@@never@@", Duration::from_millis(200))
        {
            break;
        }
    }
    let out = running.wait().map_err(|e| format!("the VM: {e}"))?;
    let o = &out.output;
    eprintln!("{TEST}: VM ran {:.1?}", out.elapsed);
    let pending: Vec<&str> = actions.map(|(a, _)| *a).collect();
    if !out.success() || !o.contains("\n== ok\n") || !pending.is_empty() {
        // The verdict last: CI keeps only the tail of a long output.
        return Err(format!(
            "--- guest output ---\n{o}\n--- the guest script failed (exit {}; never asked for {pending:?})",
            out.exit_code
        ));
    }

    // Requests per phase.
    let phases = client_phases(o);
    let mut table = format!(
        "{TEST}: requests per phase\nphase            sent  failed  stalled  slow(>1s)  slow connect(>0.9s)  max ms  backends\n",
    );
    for p in &phases {
        let backends: Vec<String> = (1..=4)
            .map(|n| format!("b{n}={}", p.num(&format!("backend-{n}"))))
            .collect();
        let _ = writeln!(
            table,
            "{:<15} {:>5}  {:>6}  {:>7}  {:>9}  {:>19}  {:>6}  {}",
            p.name,
            p.num("sent"),
            p.num("failed"),
            p.num("stalled"),
            p.num("slow"),
            p.num("slow_connect"),
            p.num("max_ms"),
            backends.join(" ")
        );
    }
    if let Some(line) = o.lines().find(|l| l.starts_with("guest stalls: ")) {
        let _ = writeln!(table, "{line}");
    }
    eprintln!("{table}");
    let failures: Vec<&str> = o.lines().filter(|l| l.starts_with("FAIL ")).collect();
    let mut expected: Vec<String> = [
        "kube-proxy",
        "to-rvs",
        "rvs",
        "to-kube-proxy",
        "kube-proxy-2",
        "to-rvs-2",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    expected.extend((1..=RESTARTS).map(|i| format!("restart-{i}")));
    expected.push("rvs-final".into());
    let mut problems = Vec::new();
    for name in &expected {
        match phases.iter().find(|p| &p.name == name) {
            None => problems.push(format!("phase {name}: no requests")),
            Some(p) if p.num("sent") == 0 => problems.push(format!("phase {name}: no requests")),
            Some(p) if p.num("failed") > 0 => {
                problems.push(format!("phase {name}: {} failed requests", p.num("failed")))
            }
            Some(p) if p.num("stalled") == p.num("sent") => problems.push(format!(
                "phase {name}: every request timed out in a stall of the guest"
            )),
            Some(_) => {}
        }
    }
    if let Some(rvs) = phases.iter().find(|p| p.name == "rvs")
        && rvs.num("backend-4") == 0
    {
        problems.push("phase rvs: b4 served nothing after the scale-out".into());
    }
    if !failures.is_empty() {
        problems.push(format!("failed requests:\n{}", failures.join("\n")));
    }

    // States against the fresh starts.
    let reference = |name: &str| {
        dump(o, name)
            .map(compared_state)
            .ok_or_else(|| format!("no dump {name}"))
    };
    let (ref_rvs, ref_kube) = (reference("ref-rvs")?, reference("ref-kube")?);
    if ref_rvs.lines("ipvs").is_empty() || ref_kube.lines("ipvs").is_empty() {
        problems.push("a reference has no IPVS state".into());
    }
    let mut checks = vec![
        ("switch-to-rvs".to_owned(), &ref_rvs, true),
        ("switch-to-kube-proxy".to_owned(), &ref_kube, true),
        ("switch-to-rvs-2".to_owned(), &ref_rvs, true),
    ];
    checks.extend((1..=RESTARTS).map(|i| (format!("restart-{i}"), &ref_rvs, true)));
    checks.push(("final".to_owned(), &ref_rvs, false));
    let mut compared = Vec::new();
    for (name, reference, drain_allowed) in checks {
        let state = compared_state(dump(o, &name).ok_or_else(|| format!("no dump {name}"))?);
        let diffs = differences(reference, &state, drain_allowed);
        let draining = state
            .lines("ipvs")
            .iter()
            .filter(|l| l.contains(DRAINING_RS))
            .count();
        compared.push(format!(
            "{name}: {} differences{}",
            diffs.len(),
            if draining > 0 {
                format!(" (b4 still draining on {draining} virtual servers)")
            } else {
                String::new()
            }
        ));
        if !diffs.is_empty() {
            let lines: Vec<String> = diffs
                .iter()
                .map(|d| format!("  [{}] {d}", d.section))
                .collect();
            problems.push(format!(
                "{name}: the state differs from a fresh start (- fresh only, + after the switch only):\n{}",
                lines.join("\n")
            ));
        }
    }
    let compared = format!(
        "{TEST}: against the fresh starts\n  {}",
        compared.join("\n  ")
    );
    eprintln!("{compared}");
    eprintln!("{TEST}: took {:.1?}", started.elapsed());
    if problems.is_empty() {
        Ok(true)
    } else {
        // The problems last: CI keeps only the tail of a long output.
        Err(format!(
            "--- guest output ---\n{o}\n{table}\n{compared}\n--- problems ---\n{}",
            problems.join("\n")
        ))
    }
}

/// `--list`, filters and `--skip`, as libtest reads them.
fn selected(args: &[String]) -> bool {
    let mut filters = Vec::new();
    let mut skips = Vec::new();
    let mut exact = false;
    let mut iter = args.iter();
    while let Some(a) = iter.next() {
        match a.as_str() {
            "--exact" => exact = true,
            "--skip" => skips.extend(iter.next().cloned()),
            "--test-threads" | "--color" | "--format" | "--logfile" | "-Z" | "--shuffle-seed" => {
                iter.next();
            }
            a if a.starts_with('-') => {}
            a => filters.push(a.to_owned()),
        }
    }
    let matches = |f: &String| {
        if exact {
            f == TEST
        } else {
            TEST.contains(f.as_str())
        }
    };
    (filters.is_empty() || filters.iter().any(matches)) && !skips.iter().any(matches)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("client") {
        return client::main(&args[1..]);
    }
    if args.iter().any(|a| a == "--list") {
        println!("{TEST}: test");
        return ExitCode::SUCCESS;
    }
    if !selected(&args) {
        println!(
            "\nrunning 0 tests\n\ntest result: ok. 0 passed; 0 failed; 0 ignored; 0 measured; 1 filtered out\n"
        );
        return ExitCode::SUCCESS;
    }
    println!("\nrunning 1 test");
    let outcome = std::panic::catch_unwind(migration_under_live_traffic);
    let (verdict, passed, code) = match outcome {
        Ok(Ok(_)) => ("ok", 1, ExitCode::SUCCESS),
        Ok(Err(e)) => {
            eprintln!("{TEST} failed:\n{e}");
            ("FAILED", 0, ExitCode::from(101))
        }
        Err(_) => ("FAILED", 0, ExitCode::from(101)),
    };
    println!("test {TEST} ... {verdict}\n");
    println!(
        "test result: {verdict}. {passed} passed; {} failed; 0 ignored; 0 measured; 0 filtered out\n",
        1 - passed
    );
    code
}

/// The clients, run in the guest: `migration_vm client --targets
/// ADDR:PORT,… --phase-file F --count-file F --max-requests N
/// --max-seconds N --interval-ms N --timeout-ms N`.
///
/// One thread per target sends `GET /` over a new connection, waits for
/// the whole answer (a `200` whose body names the backend) within the
/// timeout, pauses, and repeats, until the phase file says `stop` or a
/// limit is reached. Each request counts in the phase the phase file
/// named when it started. A failed one is printed at once (`FAIL …`); a
/// timed-out one during which the guest itself stalled a second or more
/// (see `Stalls`) is `STALLED …` instead and counts apart. At the end one
/// line per phase: `phase=NAME sent=N failed=N stalled=N slow=N
/// slow_connect=N max_ms=N backend-N=N …` (`slow`: over one second, as a
/// dropped SYN's retransmission costs), then `guest stalls: count=N
/// total_ms=N max_ms=N`. The number of requests made so far is kept in
/// the count file (replaced every 100 ms).
mod client {
    use std::collections::BTreeMap;
    use std::io::{Read, Write};
    use std::net::{SocketAddr, TcpStream};
    use std::process::ExitCode;
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    use std::sync::{Arc, Mutex};
    use std::time::{Duration, Instant};

    #[derive(Default)]
    struct Counts {
        sent: u64,
        failed: u64,
        slow: u64,
        slow_connect: u64,
        stalled: u64,
        max_ms: u128,
        by: BTreeMap<String, u64>,
    }

    #[derive(Default)]
    struct Tally {
        order: Vec<String>,
        phases: BTreeMap<String, Counts>,
    }

    struct Options {
        targets: Vec<SocketAddr>,
        phase_file: String,
        count_file: String,
        max_requests: u64,
        max_seconds: u64,
        interval: Duration,
        timeout: Duration,
    }

    fn options(args: &[String]) -> Result<Options, String> {
        let mut map = BTreeMap::new();
        let mut iter = args.iter();
        while let Some(k) = iter.next() {
            let v = iter.next().ok_or_else(|| format!("{k} needs a value"))?;
            map.insert(k.trim_start_matches('-').to_owned(), v.clone());
        }
        let get = |k: &str| map.get(k).cloned().ok_or_else(|| format!("--{k} missing"));
        let num =
            |k: &str| -> Result<u64, String> { get(k)?.parse().map_err(|e| format!("--{k}: {e}")) };
        Ok(Options {
            targets: get("targets")?
                .split(',')
                .map(|t| t.parse().map_err(|e| format!("{t}: {e}")))
                .collect::<Result<_, _>>()?,
            phase_file: get("phase-file")?,
            count_file: get("count-file")?,
            max_requests: num("max-requests")?,
            max_seconds: num("max-seconds")?,
            interval: Duration::from_millis(num("interval-ms")?),
            timeout: Duration::from_millis(num("timeout-ms")?),
        })
    }

    /// Why a request failed; `timed_out` when it ran out of time (as
    /// opposed to a refusal, a reset or a wrong answer).
    struct Failure {
        timed_out: bool,
        why: String,
    }

    impl Failure {
        fn io(what: &str, e: &std::io::Error) -> Failure {
            use std::io::ErrorKind::{TimedOut, WouldBlock};
            Failure {
                timed_out: matches!(e.kind(), TimedOut | WouldBlock),
                why: format!("{what}: {e}"),
            }
        }

        fn other(why: String) -> Failure {
            Failure {
                timed_out: false,
                why,
            }
        }
    }

    /// One request; the backend's name, or why it failed. `connected`
    /// gets the time the connection took.
    fn request(
        addr: SocketAddr,
        timeout: Duration,
        connected: &mut Duration,
    ) -> Result<String, Failure> {
        let deadline = Instant::now() + timeout;
        let left = || {
            deadline
                .saturating_duration_since(Instant::now())
                .max(Duration::from_millis(1))
        };
        let t = Instant::now();
        let s = TcpStream::connect_timeout(&addr, timeout);
        *connected = t.elapsed();
        let mut s = s.map_err(|e| Failure::io("connect", &e))?;
        s.set_write_timeout(Some(left()))
            .map_err(|e| Failure::io("socket", &e))?;
        s.write_all(b"GET / HTTP/1.0\r\nHost: web\r\n\r\n")
            .map_err(|e| Failure::io("write", &e))?;
        let mut answer = Vec::new();
        let mut chunk = [0u8; 2048];
        loop {
            if Instant::now() >= deadline {
                return Err(Failure {
                    timed_out: true,
                    why: "no whole answer in time".into(),
                });
            }
            s.set_read_timeout(Some(left()))
                .map_err(|e| Failure::io("socket", &e))?;
            match s.read(&mut chunk) {
                Ok(0) => break,
                Ok(n) => answer.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(Failure::io("read", &e)),
            }
        }
        let text = String::from_utf8_lossy(&answer);
        let status = text.lines().next().unwrap_or_default();
        if !(status.starts_with("HTTP/1.") && status.split_whitespace().nth(1) == Some("200")) {
            return Err(Failure::other(format!("answer {status:?}")));
        }
        let body = text.split("\r\n\r\n").nth(1).unwrap_or_default().trim();
        Ok(body.to_owned())
    }

    /// The guest's own stalls. On a busy host the emulated machine is not
    /// run for seconds at times, and its clock jumps ahead when it runs
    /// again: a request's timeout can then expire with its answer already
    /// waiting. A thread that sleeps [`TICK`] at a time sees each stall as
    /// a late wakeup.
    #[derive(Default)]
    struct Stalls {
        /// Milliseconds lost in stalls of at least [`STALL`], so far.
        total_ms: AtomicU64,
        count: AtomicU64,
        max_ms: AtomicU64,
    }

    const TICK: Duration = Duration::from_millis(20);
    /// A wakeup this late is a stall of the guest.
    const STALL: Duration = Duration::from_millis(500);
    /// A request that timed out is the guest's failure, not the proxy's,
    /// when the guest stalled this long while it ran. Refusals, resets and
    /// wrong answers are never excused, and neither is a timeout the guest
    /// did not stall in.
    const EXCUSED: Duration = Duration::from_secs(1);

    fn watch_stalls(stalls: &Stalls, done: &AtomicBool) {
        let mut last = Instant::now();
        while !done.load(Ordering::Relaxed) {
            std::thread::sleep(TICK);
            let now = Instant::now();
            let late = now.duration_since(last).saturating_sub(TICK);
            if late >= STALL {
                let ms = u64::try_from(late.as_millis()).unwrap_or(u64::MAX);
                stalls.total_ms.fetch_add(ms, Ordering::Relaxed);
                stalls.count.fetch_add(1, Ordering::Relaxed);
                stalls.max_ms.fetch_max(ms, Ordering::Relaxed);
            }
            last = now;
        }
    }

    fn phase_now(path: &str) -> String {
        std::fs::read_to_string(path)
            .map(|s| s.trim().to_owned())
            .unwrap_or_default()
    }

    pub(crate) fn main(args: &[String]) -> ExitCode {
        let opts = match options(args) {
            Ok(o) => Arc::new(o),
            Err(e) => {
                eprintln!("client: {e}");
                return ExitCode::from(2);
            }
        };
        let tally = Arc::new(Mutex::new(Tally::default()));
        let made = Arc::new(AtomicU64::new(0));
        let end = Instant::now() + Duration::from_secs(opts.max_seconds);
        let stalls = Arc::new(Stalls::default());
        let done = Arc::new(AtomicBool::new(false));
        let watcher = {
            let (stalls, done) = (Arc::clone(&stalls), Arc::clone(&done));
            std::thread::spawn(move || watch_stalls(&stalls, &done))
        };
        let workers: Vec<_> = opts
            .targets
            .clone()
            .into_iter()
            .map(|target| {
                let (opts, tally, made) = (Arc::clone(&opts), Arc::clone(&tally), Arc::clone(&made));
                let stalls = Arc::clone(&stalls);
                std::thread::spawn(move || {
                    while Instant::now() < end && made.load(Ordering::Relaxed) < opts.max_requests {
                        let phase = phase_now(&opts.phase_file);
                        if phase == "stop" {
                            break;
                        }
                        let t = Instant::now();
                        let stalled_before = stalls.total_ms.load(Ordering::Relaxed);
                        let mut connected = opts.timeout;
                        let result = request(target, opts.timeout, &mut connected);
                        let ms = t.elapsed().as_millis();
                        if matches!(&result, Err(f) if f.timed_out) {
                            // A stall still going on when the timeout fired
                            // is counted once the watcher wakes up.
                            std::thread::sleep(TICK * 5);
                        }
                        let stalled_ms =
                            stalls.total_ms.load(Ordering::Relaxed) - stalled_before;
                        made.fetch_add(1, Ordering::Relaxed);
                        if let Ok(mut tally) = tally.lock() {
                            if !tally.phases.contains_key(&phase) {
                                tally.order.push(phase.clone());
                            }
                            let c = tally.phases.entry(phase.clone()).or_default();
                            c.sent += 1;
                            c.max_ms = c.max_ms.max(ms);
                            if ms > 1000 {
                                c.slow += 1;
                            }
                            // A dropped SYN costs its retransmission: 1 s.
                            if connected >= Duration::from_millis(900) {
                                c.slow_connect += 1;
                            }
                            match result {
                                Ok(backend) => *c.by.entry(backend).or_default() += 1,
                                Err(f) => {
                                    let excused = f.timed_out
                                        && Duration::from_millis(stalled_ms) >= EXCUSED;
                                    let tag = if excused {
                                        c.stalled += 1;
                                        "STALLED"
                                    } else {
                                        c.failed += 1;
                                        "FAIL"
                                    };
                                    println!(
                                        "{tag} phase={phase} target={target} after_ms={ms} connect_ms={} guest_stalled_ms={stalled_ms} uptime={} error={}",
                                        connected.as_millis(),
                                        std::fs::read_to_string("/proc/uptime").unwrap_or_default().split(' ').next().unwrap_or_default(),
                                        f.why
                                    );
                                }
                            }
                        }
                        std::thread::sleep(opts.interval);
                    }
                })
            })
            .collect();
        let tmp = format!("{}.tmp", opts.count_file);
        while workers.iter().any(|w| !w.is_finished()) {
            let n = made.load(Ordering::Relaxed);
            if std::fs::write(&tmp, format!("{n}\n")).is_ok() {
                let _ = std::fs::rename(&tmp, &opts.count_file);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        for w in workers {
            let _ = w.join();
        }
        done.store(true, Ordering::Relaxed);
        let _ = watcher.join();
        println!(
            "guest stalls: count={} total_ms={} max_ms={}",
            stalls.count.load(Ordering::Relaxed),
            stalls.total_ms.load(Ordering::Relaxed),
            stalls.max_ms.load(Ordering::Relaxed)
        );
        let Ok(tally) = tally.lock() else {
            return ExitCode::from(1);
        };
        for name in &tally.order {
            let c = &tally.phases[name];
            let by: Vec<String> = c.by.iter().map(|(b, n)| format!("{b}={n}")).collect();
            println!(
                "phase={name} sent={} failed={} stalled={} slow={} slow_connect={} max_ms={} {}",
                c.sent,
                c.failed,
                c.stalled,
                c.slow,
                c.slow_connect,
                c.max_ms,
                by.join(" ")
            );
        }
        ExitCode::SUCCESS
    }
}
