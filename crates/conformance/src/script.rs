//! The guest's side: the shell script one VM boot runs for one proxy.
//!
//! The script brings up the NIC to the API server, runs the node setup,
//! starts the proxy, and then, for each step `I`:
//!
//! 1. runs the step's guest commands, prints `@@READY I@@` and waits;
//! 2. the host, seeing `READY` on both consoles, makes the step's API
//!    changes and then moves the marker Service to port `1000 + I`;
//! 3. the script waits until the proxy has converged (below) and prints
//!    the dump between `@@DUMP I@@` and `@@DONE I@@`.
//!
//! Converged means: the marker's virtual server at the step's port has
//! its real server (so the proxy has seen everything the host wrote
//! before it, on both the Service and the EndpointSlice watches), and
//! then either the proxy's metrics show that the sync which programmed
//! it has ended (`kubeproxy_sync_proxy_rules_last_timestamp_seconds` of
//! IPv4 no older than the moment the marker was seen, and no family's
//! `..._last_queued_timestamp_seconds` newer than its last sync), or,
//! for a sync that had ended before the marker was seen (or a proxy
//! whose syncs fail), two snapshots of the kernel state in a row are
//! equal. The wait is bounded; a step that does not converge is dumped
//! anyway with `converged` saying why, which then differs.

use std::fmt::Write as _;

/// The marker Service's cluster IP.
pub const MARKER_VIP: &str = "10.96.255.254";
/// The marker's endpoint.
pub const MARKER_RS: &str = "10.255.255.254";
/// On a dual-stack node, the IPv6 marker Service's cluster IP: both
/// families' proxiers must have synced the step (kube-proxy runs one
/// proxier per family, each with its own sync).
pub const MARKER6_VIP: &str = "fd00:96::fffe";
/// The IPv6 marker's endpoint.
pub const MARKER6_RS: &str = "fd00:255::fffe";
/// The marker's port at step 0; step `I` uses `MARKER_BASE_PORT + I`.
pub const MARKER_BASE_PORT: u32 = 1000;

/// Where the guest finds the API server's kubeconfig.
pub const GUEST_KUBECONFIG: &str = "/etc/conformance/kubeconfig";
/// Where the guest finds a scenario's configuration file.
pub const GUEST_CONFIG: &str = "/etc/conformance/config.yaml";

/// The sysctls kube-proxy's IPVS mode and its conntrack setup may set.
pub const SYSCTLS: &[&str] = &[
    "net/ipv4/vs/conntrack",
    "net/ipv4/vs/conn_reuse_mode",
    "net/ipv4/vs/expire_nodest_conn",
    "net/ipv4/vs/expire_quiescent_template",
    "net/ipv4/ip_forward",
    "net/ipv6/conf/all/forwarding",
    "net/ipv4/conf/all/arp_ignore",
    "net/ipv4/conf/all/arp_announce",
    "net/ipv4/conf/all/route_localnet",
    "net/netfilter/nf_conntrack_max",
    "net/netfilter/nf_conntrack_tcp_timeout_established",
    "net/netfilter/nf_conntrack_tcp_timeout_close_wait",
    "net/netfilter/nf_conntrack_tcp_be_liberal",
    "net/netfilter/nf_conntrack_udp_timeout",
    "net/netfilter/nf_conntrack_udp_timeout_stream",
];

/// Which proxy a script runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Proxy {
    /// The real kube-proxy, `--proxy-mode=ipvs`.
    KubeProxy,
    /// rvs-proxy on the kernel dataplane.
    Rvs,
}

impl Proxy {
    /// The binary's name in the guest.
    pub fn binary(self) -> &'static str {
        match self {
            Proxy::KubeProxy => "kube-proxy",
            Proxy::Rvs => "rvs-proxy",
        }
    }
}

/// One step as the guest sees it.
#[derive(Clone, Debug)]
pub struct GuestStep {
    /// `SCENARIO/STEP`, printed with the dump (for reading consoles later).
    pub label: String,
    /// Guest commands to run before the step.
    pub node: String,
    /// Seconds the step may take to converge.
    pub budget_secs: u32,
}

/// Everything one guest script needs.
#[derive(Clone, Debug)]
pub struct GuestPlan {
    /// The proxy.
    pub proxy: Proxy,
    /// Its arguments.
    pub args: Vec<String>,
    /// Node setup, before the proxy starts.
    pub setup: String,
    /// The guest's host name, when the scenario sets one.
    pub hostname: Option<String>,
    /// The steps; step 0 is the boot.
    pub steps: Vec<GuestStep>,
    /// Where the proxy serves metrics (`ADDR PORT`, reachable).
    pub metrics: (String, u16),
    /// Where it serves `/healthz` and `/livez`.
    pub healthz: (String, u16),
    /// A dual-stack node: converged also waits for the IPv6 marker and
    /// the IPv6 proxier's sync.
    pub dual: bool,
}

/// Quotes a word for the shell.
pub fn quote(word: &str) -> String {
    format!("'{}'", word.replace('\'', "'\\''"))
}

/// The address to reach a server bound to `bind` (`ADDR:PORT`) at.
pub fn reachable(bind: &str, default_port: u16) -> (String, u16) {
    let (host, port) = match bind.rsplit_once(':') {
        Some((h, p)) => (h, p.parse().unwrap_or(default_port)),
        None => (bind, default_port),
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let host = match host {
        "" | "0.0.0.0" | "::" => "127.0.0.1",
        h => h,
    };
    (host.to_owned(), port)
}

/// The shell functions every guest script defines (`snapshot`,
/// `sync_state`, `http_get`, `converge`, `dump`, …), for scripts of other
/// tests too. Set `IP`, `M_ADDR`, `M_PORT`, `H_ADDR`, `H_PORT`, `SYSCTLS`
/// and `MARKER_RS_HEX` before them, and `PROXY` to the proxy's process id
/// (see [`render`]).
pub const FUNCTIONS: &str = r#"
uptime_s() { cut -d' ' -f1 /proc/uptime; }
alive() { kill -0 "$PROXY" 2>/dev/null; }
# http_get ADDR PORT PATH: the whole response, or nothing. The request
# goes through a FIFO held open on fd 3, so that nc never half-closes the
# connection (as it does on the end of its input): the server's close
# after its HTTP/1.0 answer ends it.
rm -f /tmp/http-request; mkfifo /tmp/http-request; exec 3<>/tmp/http-request
http_get() {
    printf 'GET %s HTTP/1.0\r\nHost: conformance\r\n\r\n' "$3" >&3
    timeout 5 nc "$1" "$2" <&3 2>/dev/null
}
# http_half_closed ADDR PORT PATH: the status line of the answer to a
# request whose client then shuts its side down (busybox nc does).
http_half_closed() {
    printf 'GET %s HTTP/1.0\r\nHost: conformance\r\n\r\n' "$3" | timeout 5 nc "$1" "$2" 2>/dev/null | head -n 1
}
# now_epoch: the time of day with microseconds, as the proxies' metrics
# write it.
now_epoch() {
    adjtimex | awk '/time.tv_sec/ { s = $2 } /time.tv_usec/ { u = $2 } END { printf "%d.%06d", s, u }'
}
# sync_state T: "done" when the markers' families (IPv4, and IPv6 with
# MARKER6_RS_HEX set) last finished a sync at or after T and no family has
# a sync queued since its last one; "idle" when nothing is queued but a
# marker family's sync is older; "busy" otherwise.
sync_state() {
    http_get $M_ADDR $M_PORT /metrics | grep '^kubeproxy_sync_proxy_rules_last_' | awk -v t="$1" -v dual="${MARKER6_RS_HEX:+1}" '
        function fam(s) { if (s ~ /ip_family="/) { sub(/.*ip_family="/, "", s); sub(/".*/, "", s); return s } return "IPv4" }
        /^kubeproxy_sync_proxy_rules_last_timestamp_seconds/ { last[fam($1)] = $2 + 0 }
        /^kubeproxy_sync_proxy_rules_last_queued_timestamp_seconds/ { queued[fam($1)] = $2 + 0 }
        END {
            for (f in queued) if (!(f in last) || last[f] < queued[f]) { print "busy"; exit }
            ok = ("IPv4" in last) && last["IPv4"] >= t + 0
            if (dual) ok = ok && ("IPv6" in last) && last["IPv6"] >= t + 0
            if (ok) print "done"; else print "idle"
        }'
}
# markers_at PORT_HEX: whether the markers' real servers (IPv4, and IPv6
# with MARKER6_RS_HEX set) are at the port.
markers_at() {
    grep -q -- "-> $MARKER_RS_HEX:$1 " /proc/net/ip_vs 2>/dev/null || return 1
    [ -z "${MARKER6_RS_HEX:-}" ] || grep -q -- "-> \[$MARKER6_RS_HEX\]:$1 " /proc/net/ip_vs 2>/dev/null
}
snapshot() {
    echo "== ipvs"; ipvsadm -Sn 2>&1
    echo "== ipvs-timeouts"; ipvsadm -L --timeout 2>&1
    echo "== ipsets"; ipset save 2>&1 | sed 's/ initval 0x[0-9a-f]*//'
    for t in nat filter mangle; do
        echo "== iptables-$t"; iptables-save -t $t 2>&1 | grep -v '^#'
        echo "== ip6tables-$t"; ip6tables-save -t $t 2>&1 | grep -v '^#'
    done
    echo "== iptables-legacy"; { iptables-legacy-save; ip6tables-legacy-save; } 2>&1 | grep -v '^#'
    echo "== addresses"; $IP -o addr show 2>&1 | sed 's/\\ *valid_lft.*//'
    echo "== links"; $IP -o link show 2>&1
}
# hc_targets: ADDR PORT of every TCP listener but the proxy's own servers.
hc_targets() {
    netstat -ltn 2>/dev/null | awk -v skip=" $M_PORT $H_PORT " 'NR > 2 {
        a = $4; p = a; sub(/.*:/, "", p); h = substr(a, 1, length(a) - length(p) - 1)
        if (index(skip, " " p " ")) next
        if (h == "0.0.0.0" || h == "::" || h == "") h = "127.0.0.1"
        if (!(p in seen)) { seen[p] = 1; print h, p }
    }' | sort -n -k2
}
LAST_METRICS=""
# dump STEP LABEL: the full state after step STEP (the kernel part is
# the converged snapshot in /tmp/snapshot).
dump() {
    echo "@@DUMP $1@@"
    echo "== label"; echo "$2"
    cat /tmp/snapshot
    echo "== sysctls"
    for s in $SYSCTLS; do echo "$s=$(cat /proc/sys/$s 2>/dev/null || echo -)"; done
    echo "== http healthz"; http_get $H_ADDR $H_PORT /healthz; echo
    echo "== http livez"; http_get $H_ADDR $H_PORT /livez; echo
    echo "== healthz-half-closed"; http_half_closed $H_ADDR $H_PORT /healthz | cut -d' ' -f2; echo
    echo "== listeners"; netstat -ltnu 2>&1
    hc_targets | while read -r a p; do echo "== http hcnp $p"; http_get "$a" "$p" /; echo; done
    metrics=$(http_get $M_ADDR $M_PORT /metrics | tr -d '\r' | sed '1,/^$/d' | grep -v '^#' | sed 's/[{ ].*//' | sort -u)
    if [ -n "$LAST_METRICS" ] && [ "$metrics" = "$LAST_METRICS" ]; then
        echo "== metrics ="
    else
        echo "== metrics"; echo "$metrics"
    fi
    LAST_METRICS=$metrics
    echo "== proxy"; if alive; then echo running; else echo exited; fi
    echo "== converged"; echo "$CONVERGED"
    echo "== timing"; echo "$WAITED"
    echo "@@DONE $1@@"
}
elapsed_since() { awk -v a="$1" -v b="$(uptime_s)" 'BEGIN { printf "%d", b - a }'; }
# converge PORT BUDGET: wait for the marker's real server at PORT, then
# for the state to be final: the proxy's metrics say an IPv4 sync ended
# after the marker showed and nothing is queued (one snapshot), or, from
# two seconds after the marker on, two snapshots in a row are equal while
# nothing is queued (for a sync that ended before the marker was seen),
# or QUIET seconds after the marker, two equal snapshots whatever the
# metrics say (a proxy whose syncs fail).
QUIET=15
converge() {
    start=$(uptime_s)
    hexport=$(printf '%04X' "$1")
    phase=marker
    rm -f /tmp/snapshot
    while :; do
        waited=$(elapsed_since "$start")
        if [ "$waited" -ge "$2" ]; then
            CONVERGED="no: waiting for the $phase"; WAITED="$waited s"
            [ -f /tmp/snapshot ] || snapshot > /tmp/snapshot
            return
        fi
        if [ $phase = marker ]; then
            t0=$(now_epoch)
            if markers_at "$hexport"; then
                phase="final state"; marker_at=$waited; marker_time=$(uptime_s); rounds=0
            elif ! alive; then
                CONVERGED="no: the proxy exited"; WAITED="$waited s"; snapshot > /tmp/snapshot; return
            else
                sleep 0.2
            fi
            continue
        fi
        since=$(elapsed_since "$marker_time")
        state=$(sync_state "$t0")
        if [ "$state" = done ]; then
            snapshot > /tmp/snapshot
            CONVERGED=yes; WAITED="$waited s (marker after $marker_at s, synced)"; return
        fi
        if [ "$state" = busy ] && [ "$since" -lt $QUIET ] || [ "$since" -lt 2 ]; then
            # Each look at /metrics costs the proxy (and kube-proxy's page
            # is large): not too often, on one emulated CPU.
            sleep 0.8
            continue
        fi
        snapshot > /tmp/snapshot.new
        rounds=$((rounds + 1))
        if [ -f /tmp/snapshot ] && cmp -s /tmp/snapshot /tmp/snapshot.new; then
            mv /tmp/snapshot.new /tmp/snapshot
            CONVERGED=yes; WAITED="$waited s (marker after $marker_at s, $rounds snapshots)"; return
        fi
        mv /tmp/snapshot.new /tmp/snapshot
    done
}
# step I PORT BUDGET LABEL
step() {
    echo "@@READY $1@@"
    converge "$2" "$3"
    dump "$1" "$4"
}
"#;

/// An IPv6 address as `/proc/net/ip_vs` prints it (`%pI6`: eight groups
/// of four lower-case hex digits).
pub fn proc_ipv6(addr: &str) -> String {
    let segments = addr
        .parse::<std::net::Ipv6Addr>()
        .map(|a| a.segments())
        .unwrap_or_default();
    segments
        .iter()
        .map(|g| format!("{g:04x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// The start every guest script shares, before [`FUNCTIONS`]: the shell
/// settings, iproute2's `ip`, the NIC to the API server, and the
/// variables the functions read (the markers, the proxy's `metrics` and
/// `healthz` addresses, the sysctls); `dual` adds the IPv6 marker.
pub fn prelude(metrics: &(String, u16), healthz: &(String, u16), dual: bool) -> String {
    let mut s = String::new();
    s.push_str("set -u\nIP=/usr/sbin/ip\n");
    // Node setup and step commands get iproute2's ip, not busybox's.
    s.push_str("ip() { /usr/sbin/ip \"$@\"; }\n");
    s.push_str("$IP link set eth0 up\n$IP addr add 10.0.2.15/24 dev eth0\n");
    let hex: String = MARKER_RS
        .split('.')
        .map(|o| format!("{:02X}", o.parse::<u8>().unwrap_or(0)))
        .collect();
    let _ = writeln!(s, "MARKER_RS_HEX={hex}");
    if dual {
        let _ = writeln!(s, "MARKER6_RS_HEX={}", proc_ipv6(MARKER6_RS));
    }
    let _ = writeln!(
        s,
        "M_ADDR={}\nM_PORT={}\nH_ADDR={}\nH_PORT={}",
        metrics.0, metrics.1, healthz.0, healthz.1
    );
    let _ = writeln!(s, "SYSCTLS=\"{}\"", SYSCTLS.join(" "));
    s
}

/// Renders the guest script for `plan`.
pub fn render(plan: &GuestPlan) -> String {
    let mut s = String::from("# Generated by rvs-conformance.\n");
    s.push_str(&prelude(&plan.metrics, &plan.healthz, plan.dual));
    s.push_str(FUNCTIONS);
    if !plan.setup.trim().is_empty() {
        let _ = writeln!(
            s,
            "echo '== node setup'\n( set -ex\n{}\n) || {{ echo '@@SETUP-FAILED@@'; exit 1; }}",
            plan.setup.trim_end()
        );
    }
    if let Some(h) = &plan.hostname {
        let _ = writeln!(s, "hostname {}", quote(h));
    }
    let args: Vec<String> = plan.args.iter().map(|a| quote(a)).collect();
    let _ = writeln!(
        s,
        "{} {} >/tmp/proxy.log 2>&1 &\nPROXY=$!",
        plan.proxy.binary(),
        args.join(" ")
    );
    for (i, step) in plan.steps.iter().enumerate() {
        if !step.node.trim().is_empty() {
            let _ = writeln!(
                s,
                "( set -ex\n{}\n) || {{ echo '@@STEP-FAILED {i}@@'; exit 1; }}",
                step.node.trim_end()
            );
        }
        let _ = writeln!(
            s,
            "step {i} {} {} {}",
            MARKER_BASE_PORT + i as u32,
            step.budget_secs,
            quote(&step.label)
        );
    }
    s.push_str(
        "kill \"$PROXY\" 2>/dev/null\nwait \"$PROXY\" 2>/dev/null\n\
         echo '== proxy log (errors and warnings)'\n\
         grep -E '^[EWF][0-9]{4} | (ERROR|WARN) ' /tmp/proxy.log | tail -n 300\n\
         echo '== proxy log (end)'\ntail -n 30 /tmp/proxy.log\n",
    );
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv6_markers_are_written_as_the_kernel_lists_them() {
        assert_eq!(
            proc_ipv6(MARKER6_RS),
            "fd00:0255:0000:0000:0000:0000:0000:fffe"
        );
    }

    #[test]
    fn bind_addresses_become_reachable_ones() {
        assert_eq!(reachable("0.0.0.0:10256", 1), ("127.0.0.1".into(), 10256));
        assert_eq!(reachable("[::]:9", 1), ("127.0.0.1".into(), 9));
        assert_eq!(reachable("127.0.0.2:10249", 1), ("127.0.0.2".into(), 10249));
        assert_eq!(reachable("10.0.2.15", 7), ("10.0.2.15".into(), 7));
    }

    #[test]
    fn the_script_runs_each_step_at_its_marker_port() {
        let plan = GuestPlan {
            proxy: Proxy::Rvs,
            args: vec!["--hostname-override=node 'a'".into()],
            setup: "ip link add eth1 type dummy".into(),
            hostname: None,
            steps: vec![
                GuestStep {
                    label: "s/(boot)".into(),
                    node: String::new(),
                    budget_secs: 300,
                },
                GuestStep {
                    label: "s/one".into(),
                    node: "ip addr add 192.0.2.1/32 dev eth1".into(),
                    budget_secs: 90,
                },
            ],
            metrics: ("127.0.0.1".into(), 10249),
            healthz: ("127.0.0.1".into(), 10256),
            dual: false,
        };
        let s = render(&plan);
        assert!(s.contains("rvs-proxy '--hostname-override=node '\\''a'\\''' >/tmp/proxy.log"));
        assert!(s.contains("step 0 1000 300 's/(boot)'\n"));
        assert!(s.contains("ip addr add 192.0.2.1/32 dev eth1\n) || { echo '@@STEP-FAILED 1@@'"));
        assert!(s.contains("step 1 1001 90 's/one'\n"));
        assert!(s.find("ip link add eth1").unwrap() < s.find("rvs-proxy '").unwrap());
    }
}
