//! Shared machinery of the scale benches that run a proxy under test
//! (the real kube-proxy in any mode, or rvs-proxy on any dataplane) in a
//! fresh VM against a real kube-apiserver on the host.
//!
//! This module owns:
//! * [`ProxyUnderTest`]: a proxy binary and its flags, as the guest runs it;
//! * [`SyntheticCluster`]: N Services × E endpoints (one port, one
//!   EndpointSlice each) in one namespace, with stable addresses, created
//!   in bulk through the API server ([`SyntheticCluster::create`]:
//!   `kubectl create` in parallel chunks) and changed one endpoint at a time;
//! * [`start_plane`]: a control plane the guests reach at [`GUEST_API`];
//! * [`GUEST_LIB`]: the guest's shell functions: starting the proxy,
//!   cheap completion polling of the kernel's IPVS table, waiting for one
//!   real server, and `/proc` sampling of the proxy (CPU, peak RSS) and of
//!   its sync metrics, printed as `@@SAMPLE TAG key=value…@@` lines;
//! * [`ProxyBenchJob`]: the [`VmJob`] for one boot; [`wait_marker`],
//!   [`ProcSample`] and [`console_value`]: reading the guest's answers;
//! * [`median`] and [`fmt_capped`]: medians over rounds where a point that
//!   hit its cap counts as larger than any measured one.
//!
//! Completion is judged inside the guest without listing the whole table
//! on every poll: a gate of a few sample virtual servers (first, middle,
//! last) is asked through `ipvsadm -Ln -t` (one netlink request each), and
//! only when they all have their real servers is `/proc/net/ip_vs`
//! counted (every bench real server listens on port [`TARGET_PORT`]).

use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::{ControlPlane, RigError, RunningVm, VmJob};

/// Where the guests reach the API server (a forward to the host's port).
pub const GUEST_API: &str = "10.0.2.100:443";
/// The guest's kubeconfig path.
pub const GUEST_KUBECONFIG: &str = "/etc/bench/kubeconfig";
/// The Node the proxies run as.
pub const NODE_NAME: &str = "bench-node";
/// The guest's address (the Node's InternalIP).
pub const NODE_IP: &str = "10.0.2.15";
/// The Service CIDR; [`SyntheticCluster`] takes cluster IPs from it past
/// the first [`VIP_OFFSET`] addresses (the `kubernetes` Service has the first).
pub const SERVICE_CIDR: &str = "10.96.0.0/16";
/// Cluster IP of Service `i` is address `VIP_OFFSET + i` of [`SERVICE_CIDR`].
pub const VIP_OFFSET: u32 = 1024;
/// The Services' port.
pub const SERVICE_PORT: u16 = 80;
/// The endpoints' port (`:1F90` in `/proc/net/ip_vs`).
pub const TARGET_PORT: u16 = 8080;
/// The endpoint [`SyntheticCluster::add_endpoint`] adds.
pub const EXTRA_ENDPOINT: Ipv4Addr = Ipv4Addr::new(10, 99, 0, 1);

/// A proxy as the guest runs it: `binary_name ARGS…`, with the host's
/// `binary` copied into the guest under that name.
#[derive(Clone, Debug)]
pub struct ProxyUnderTest {
    /// Short name for tables and files (`kube-proxy`, `rvs`…).
    pub label: String,
    /// The command's name in the guest.
    pub binary_name: String,
    /// The binary on the host.
    pub binary: PathBuf,
    /// Its flags.
    pub args: Vec<String>,
}

/// Flags both proxies get: the kubeconfig, the node, the metrics address;
/// conntrack sysctls are left alone. Everything else is each proxy's default.
fn common_args(mode: &str) -> Vec<String> {
    vec![
        format!("--proxy-mode={mode}"),
        format!("--kubeconfig={GUEST_KUBECONFIG}"),
        format!("--hostname-override={NODE_NAME}"),
        "--metrics-bind-address=127.0.0.1:10249".to_owned(),
        "--conntrack-max-per-core=0".to_owned(),
    ]
}

impl ProxyUnderTest {
    /// The real kube-proxy from `k8s_bin` in `mode` (`ipvs`, `iptables`,
    /// `nftables`).
    pub fn kube_proxy(k8s_bin: &Path, mode: &str) -> ProxyUnderTest {
        ProxyUnderTest {
            label: if mode == "ipvs" {
                "kube-proxy".to_owned()
            } else {
                format!("kube-proxy-{mode}")
            },
            binary_name: "kube-proxy".to_owned(),
            binary: k8s_bin.join("kube-proxy"),
            args: common_args(mode),
        }
    }

    /// rvs-proxy (`binary`) on `dataplane` (`kernel`, `userspace`…).
    pub fn rvs(binary: &Path, dataplane: &str) -> ProxyUnderTest {
        let mut args = common_args("ipvs");
        args.push(format!("--dataplane={dataplane}"));
        ProxyUnderTest {
            label: if dataplane == "kernel" {
                "rvs".to_owned()
            } else {
                format!("rvs-{dataplane}")
            },
            binary_name: "rvs-proxy".to_owned(),
            binary: binary.to_owned(),
            args,
        }
    }

    /// The shell command line that starts it (arguments quoted).
    pub fn command_line(&self) -> String {
        let mut line = self.binary_name.clone();
        for a in &self.args {
            line.push(' ');
            line.push('\'');
            line.push_str(&a.replace('\'', "'\\''"));
            line.push('\'');
        }
        line
    }
}

/// N Services × E endpoints: Service `s{i}` (cluster IP [`Self::vip`],
/// port [`SERVICE_PORT`] → [`TARGET_PORT`]) and its one EndpointSlice
/// `s{i}-1` with endpoints [`Self::endpoint`]`(i, 0..E)`, all ready.
#[derive(Clone, Debug)]
pub struct SyntheticCluster {
    /// Services.
    pub services: usize,
    /// Endpoints per Service.
    pub endpoints: usize,
    /// Their namespace (must exist: `default` does).
    pub namespace: String,
    /// When not empty, endpoint `j` of every Service is
    /// `shared_endpoints[j % len]` (real backends in pod namespaces),
    /// instead of an address of its own.
    pub shared_endpoints: Vec<Ipv4Addr>,
}

impl SyntheticCluster {
    /// `services` × `endpoints` in namespace `default`.
    pub fn new(services: usize, endpoints: usize) -> SyntheticCluster {
        SyntheticCluster {
            services,
            endpoints,
            namespace: "default".to_owned(),
            shared_endpoints: Vec::new(),
        }
    }

    /// Service `i`'s cluster IP.
    pub fn vip(&self, i: usize) -> Ipv4Addr {
        let base = u32::from(Ipv4Addr::new(10, 96, 0, 0));
        Ipv4Addr::from(base + VIP_OFFSET + i as u32)
    }

    /// Endpoint `j` of Service `i`: `10.(100+j).(i/256).(i%256)`, or the
    /// shared one.
    pub fn endpoint(&self, i: usize, j: usize) -> Ipv4Addr {
        if !self.shared_endpoints.is_empty() {
            return self.shared_endpoints[j % self.shared_endpoints.len()];
        }
        Ipv4Addr::new(10, (100 + j) as u8, (i / 256) as u8, (i % 256) as u8)
    }

    /// The real servers the dataplane has when complete.
    pub fn real_servers(&self) -> usize {
        self.services * self.endpoints
    }

    /// Service `i` as JSON.
    pub fn service(&self, i: usize) -> String {
        format!(
            r#"{{"apiVersion":"v1","kind":"Service","metadata":{{"name":"s{i}","namespace":"{}"}},"spec":{{"clusterIP":"{}","ports":[{{"name":"http","port":{SERVICE_PORT},"targetPort":{TARGET_PORT},"protocol":"TCP"}}]}}}}"#,
            self.namespace,
            self.vip(i)
        )
    }

    /// Service `i`'s EndpointSlice as JSON; `extra` adds [`EXTRA_ENDPOINT`].
    pub fn slice(&self, i: usize, extra: bool) -> String {
        let mut endpoints: Vec<String> = (0..self.endpoints)
            .map(|j| self.endpoint(i, j).to_string())
            .collect();
        if extra {
            endpoints.push(EXTRA_ENDPOINT.to_string());
        }
        let endpoints: Vec<String> = endpoints
            .iter()
            .map(|a| format!(r#"{{"addresses":["{a}"],"conditions":{{"ready":true}}}}"#))
            .collect();
        format!(
            r#"{{"apiVersion":"discovery.k8s.io/v1","kind":"EndpointSlice","metadata":{{"name":"s{i}-1","namespace":"{}","labels":{{"kubernetes.io/service-name":"s{i}"}}}},"addressType":"IPv4","ports":[{{"name":"http","port":{TARGET_PORT},"protocol":"TCP"}}],"endpoints":[{}]}}"#,
            self.namespace,
            endpoints.join(",")
        )
    }

    /// The cluster as `chunks` JSON Lists (Service `i` in chunk `i % chunks`,
    /// each Service followed by its slice).
    pub fn lists(&self, chunks: usize) -> Vec<String> {
        let chunks = chunks.max(1);
        (0..chunks)
            .map(|c| {
                let items: Vec<String> = (c..self.services)
                    .step_by(chunks)
                    .flat_map(|i| [self.service(i), self.slice(i, false)])
                    .collect();
                format!(
                    r#"{{"apiVersion":"v1","kind":"List","items":[{}]}}"#,
                    items.join(",\n")
                )
            })
            .collect()
    }

    /// Creates every object through the API server: `jobs` `kubectl create`
    /// processes side by side, each with a share of the Services. Returns
    /// how long it took.
    pub fn create(&self, plane: &ControlPlane, jobs: usize) -> Result<Duration, RigError> {
        let lists = self.lists(jobs);
        let started = Instant::now();
        let results: Vec<Result<String, RigError>> = std::thread::scope(|scope| {
            let handles: Vec<_> = lists
                .iter()
                .map(|list| {
                    scope.spawn(move || {
                        plane.kubectl_stdin(&["create", "-f", "-", "-o", "name"], list)
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| {
                    h.join().unwrap_or_else(|_| {
                        Err(RigError::Unexpected("a kubectl thread panicked".into()))
                    })
                })
                .collect()
        });
        let elapsed = started.elapsed();
        let mut created = 0;
        for r in results {
            created += r?.lines().count();
        }
        if created != 2 * self.services {
            return Err(RigError::Unexpected(format!(
                "created {created} objects, expected {}",
                2 * self.services
            )));
        }
        Ok(elapsed)
    }

    /// Adds [`EXTRA_ENDPOINT`] to Service `i`'s slice (`kubectl apply`);
    /// returns the time kubectl took.
    pub fn add_endpoint(&self, plane: &ControlPlane, i: usize) -> Result<Duration, RigError> {
        let started = Instant::now();
        plane.kubectl_stdin(&["apply", "-f", "-"], &self.slice(i, true))?;
        Ok(started.elapsed())
    }

    /// Environment for [`GUEST_LIB`]: the expected real servers, the gate's
    /// sample virtual servers, the extra endpoint's Service.
    pub fn guest_env(&self) -> Vec<(String, String)> {
        let last = self.services.saturating_sub(1);
        let samples = [0, self.services / 2, last];
        let gate: Vec<String> = samples
            .iter()
            .map(|&i| format!("{}:{SERVICE_PORT}", self.vip(i)))
            .collect();
        vec![
            ("BENCH_EXPECT".into(), self.real_servers().to_string()),
            ("BENCH_ENDPOINTS".into(), self.endpoints.to_string()),
            ("BENCH_GATE".into(), gate.join(" ")),
            ("BENCH_TARGET_HEX".into(), format!(":{TARGET_PORT:04X} ")),
            (
                "BENCH_LAST".into(),
                format!("{}:{SERVICE_PORT}", self.vip(last)),
            ),
            (
                "BENCH_EXTRA".into(),
                format!("{EXTRA_ENDPOINT}:{TARGET_PORT}"),
            ),
        ]
    }
}

/// A control plane for the benches: guests reach it at [`GUEST_API`];
/// Service CIDR [`SERVICE_CIDR`]; Node [`NODE_NAME`] at [`NODE_IP`].
pub fn start_plane() -> Result<ControlPlane, RigError> {
    let guest_ip = GUEST_API.split(':').next().unwrap_or_default();
    ControlPlane::options()
        .extra_san(guest_ip)
        .env("RVS_SERVICE_CIDR", SERVICE_CIDR)
        .env("RVS_NODE_NAME", NODE_NAME)
        .env("RVS_NODE_IP", NODE_IP)
        .start()
}

/// The node's NIC towards the API server ([`GUEST_API`]), as the guest
/// (or a network namespace standing in for the node) brings it up.
pub const GUEST_NIC: &str = r#"
/usr/sbin/ip link set eth0 up
/usr/sbin/ip addr add 10.0.2.15/24 dev eth0
"#;

/// The guest's shell functions (see the module's documentation). Needs
/// `BENCH_*` from [`SyntheticCluster::guest_env`]; `POLL` (seconds
/// between polls) and `CAP_MS` from [`ProxyBenchJob`]; files go to
/// `BENCH_TMP` (default `/tmp`).
pub const GUEST_LIB: &str = r#"
set -u
: "${BENCH_TMP:=/tmp}"
# A userspace dataplane holds a listener per Service port: lift the
# descriptor limit (the kernel's default hard limit is 4096).
ulimit -n 1048576 2>/dev/null || ulimit -n 65536 2>/dev/null || true
# ms: the guest's monotonic clock in milliseconds.
ms() { awk '{printf "%d", $1 * 1000}' /proc/uptime; }
# start_proxy CMD...: starts the proxy, PROXY is its pid, T0 its start.
start_proxy() { T0=$(ms); "$@" >"$BENCH_TMP/proxy.log" 2>&1 & PROXY=$!; }
alive() { kill -0 "$PROXY" 2>/dev/null; }
# rs_of VIP:PORT: real servers of one virtual server (one netlink request).
rs_of() { ipvsadm -Ln -t "$1" 2>/dev/null | grep -c ':[0-9]* *Masq'; }
gate() {
    for v in $BENCH_GATE; do
        [ "$(rs_of "$v")" -ge "$BENCH_ENDPOINTS" ] || return 1
    done
}
# wait_complete FROM_MS CAP_MS: until the IPVS table has every bench real
# server; DONE_MS is the time since FROM_MS, -1 at the cap, -2 when the
# proxy exited. CHECKS counts full table reads.
wait_complete() {
    CHECKS=0
    while :; do
        if gate; then
            CHECKS=$((CHECKS + 1))
            n=$(grep -c -- "$BENCH_TARGET_HEX" /proc/net/ip_vs)
            if [ "$n" -ge "$BENCH_EXPECT" ]; then DONE_MS=$(($(ms) - $1)); return; fi
        fi
        if [ $(($(ms) - $1)) -ge "$2" ]; then DONE_MS=-1; return; fi
        alive || { DONE_MS=-2; return; }
        sleep "$POLL"
    done
}
# wait_rs VIP:PORT RS:PORT FROM_MS CAP_MS: until that real server is there.
wait_rs() {
    while :; do
        if ipvsadm -Ln -t "$1" 2>/dev/null | grep -q -- "-> $2 "; then DONE_MS=$(($(ms) - $3)); return; fi
        if [ $(($(ms) - $3)) -ge "$4" ]; then DONE_MS=-1; return; fi
        alive || { DONE_MS=-2; return; }
        sleep 0.1
    done
}
# metrics: the proxy's /metrics page. The request goes through a FIFO held
# open on fd 3, so nc never half-closes; the server's close ends it.
rm -f "$BENCH_TMP/http-req"; mkfifo "$BENCH_TMP/http-req"; exec 3<>"$BENCH_TMP/http-req"
# A node without nc (the host bench's node namespace) asks with curl.
metrics() {
    if ! command -v nc >/dev/null 2>&1; then
        curl -s --max-time 10 http://127.0.0.1:10249/metrics 2>/dev/null
        return
    fi
    printf 'GET /metrics HTTP/1.0\r\nHost: bench\r\n\r\n' >&3
    timeout 10 nc 127.0.0.1 10249 <&3 2>/dev/null | tr -d '\r'
}
# sync_metrics: "sync_s=SECONDS syncs=COUNT" of the finished syncs.
sync_metrics() {
    metrics | awk '/^kubeproxy_sync_proxy_rules_duration_seconds_sum/ { s += $2 }
        /^kubeproxy_sync_proxy_rules_duration_seconds_count/ { c += $2 }
        END { printf "sync_s=%s syncs=%d", s + 0, c + 0 }'
}
# settle FROM_MS CAP_MS: until the proxy has finished a sync and no other
# one for 3 s (its count of syncs unchanged); DONE_MS is when the count
# last moved, since FROM_MS (-1 at the cap). A sync already running but not
# yet counted is not seen: a proxy whose next sync starts right away (a
# periodic full resync) looks settled.
settle() {
    prev=-1; moved=$(ms)
    while :; do
        now=$(ms)
        c=$(sync_metrics | sed 's/.*syncs=//')
        if [ "$c" != "$prev" ]; then prev=$c; moved=$now
        elif [ "$c" -ge 1 ] && [ $((now - moved)) -ge 3000 ]; then DONE_MS=$((moved - $1)); return
        fi
        if [ $((now - $1)) -ge "$2" ]; then DONE_MS=-1; return; fi
        alive || { DONE_MS=-2; return; }
        sleep 1
    done
}
# sample TAG: the proxy's CPU (own and its children's, clock ticks),
# peak and current RSS, and its sync metrics, on one line.
sample() {
    tag=$1
    stat=$(cut -d')' -f2- "/proc/$PROXY/stat" 2>/dev/null)
    set -- $stat
    cpu=$((${12:-0} + ${13:-0})); child=$((${14:-0} + ${15:-0}))
    # Children still running count too (an iptables-restore that has made
    # the rules but is not yet reaped when the gate opens).
    for c in $(cat /proc/$PROXY/task/*/children 2>/dev/null); do
        set -- $(cut -d')' -f2- "/proc/$c/stat" 2>/dev/null)
        child=$((child + ${12:-0} + ${13:-0}))
    done
    hwm=$(awk '/^VmHWM/ {print $2}' "/proc/$PROXY/status" 2>/dev/null)
    rss=$(awk '/^VmRSS/ {print $2}' "/proc/$PROXY/status" 2>/dev/null)
    echo "@@SAMPLE $tag cpu_ticks=$cpu child_ticks=$child hwm_kb=${hwm:-0} rss_kb=${rss:-0} $(sync_metrics) @@"
}
# finish: stops the proxy; on trouble the end of its log.
finish() {
    kill "$PROXY" 2>/dev/null; wait "$PROXY" 2>/dev/null
    echo "== proxy log (end)"; tail -n "${1:-5}" "$BENCH_TMP/proxy.log" | cut -c1-300
}
"#;

/// One boot's job: [`GUEST_NIC`], [`GUEST_LIB`], then `script` (which starts the proxy
/// with `start_proxy $PROXY_CMD` and prints its markers).
#[derive(Clone, Debug)]
pub struct ProxyBenchJob<'a> {
    /// The proxy.
    pub proxy: &'a ProxyUnderTest,
    /// The cluster it is measured on.
    pub cluster: &'a SyntheticCluster,
    /// The script after the library.
    pub script: &'a str,
    /// Seconds between completion polls.
    pub poll_secs: f64,
    /// The cap of each measured wait in the guest.
    pub cap: Duration,
    /// The VM's whole budget.
    pub timeout: Duration,
    /// Guest memory.
    pub memory_mib: u32,
}

impl ProxyBenchJob<'_> {
    /// The [`VmJob`] for `plane`.
    pub fn job(&self, plane: &ControlPlane) -> Result<VmJob, RigError> {
        let guest_api: SocketAddrV4 = GUEST_API
            .parse()
            .map_err(|_| RigError::Unexpected(format!("bad address {GUEST_API}")))?;
        let kubeconfig =
            plane.kubeconfig_for_server("kube-proxy", &format!("https://{guest_api}"))?;
        let mut job = VmJob::new(format!("{GUEST_NIC}{GUEST_LIB}\n{}", self.script))
            .binary(&self.proxy.binary_name, &self.proxy.binary)
            .file(GUEST_KUBECONFIG.trim_start_matches('/'), kubeconfig)
            .forward_to_host(guest_api, plane.api_addr()?.port())
            .kernel_arg("ipv6.disable=1")
            .memory_mib(self.memory_mib)
            .timeout(self.timeout);
        for (k, v) in self.env() {
            job = job.env(&k, &v);
        }
        Ok(job)
    }

    /// The script's environment: `PROXY_CMD`, `POLL`, `CAP_MS` and the
    /// cluster's [`SyntheticCluster::guest_env`].
    pub fn env(&self) -> Vec<(String, String)> {
        let mut env = vec![
            ("PROXY_CMD".to_owned(), self.proxy.command_line()),
            ("POLL".to_owned(), format!("{:.2}", self.poll_secs)),
            ("CAP_MS".to_owned(), self.cap.as_millis().to_string()),
        ];
        env.extend(self.cluster.guest_env());
        env
    }
}

/// Waits for a console line equal to `marker`; `Ok(Some(when))` when it
/// came, `Ok(None)` when `within` passed first (a capped point), an error
/// when the VM stopped first.
pub fn wait_marker(
    vm: &mut RunningVm,
    marker: &str,
    within: Duration,
) -> Result<Option<Instant>, RigError> {
    match vm.wait_for_line(marker, within) {
        Ok(()) => Ok(Some(Instant::now())),
        Err(RigError::Timeout { .. }) => Ok(None),
        Err(e) => Err(e),
    }
}

/// The value of the last `KEY=VALUE` word on the console's lines.
pub fn console_value(console: &str, key: &str) -> Option<String> {
    let prefix = format!("{key}=");
    console
        .lines()
        .flat_map(str::split_whitespace)
        .filter_map(|w| w.strip_prefix(&prefix))
        .next_back()
        .map(str::to_owned)
}

/// What [`GUEST_LIB`]'s `sample TAG` printed.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ProcSample {
    /// The proxy's own CPU time (utime + stime).
    pub cpu: Duration,
    /// CPU time of its children: reaped ones and those still running
    /// (iptables-restore, ipset…).
    pub children_cpu: Duration,
    /// Peak resident set (VmHWM), KiB.
    pub peak_rss_kib: u64,
    /// Resident set at the sample, KiB.
    pub rss_kib: u64,
    /// Syncs the proxy's metrics count (`…sync_proxy_rules_duration_seconds_count`).
    pub syncs: u64,
    /// Seconds they took in all (`…_sum`).
    pub sync_secs: f64,
}

/// Clock ticks per second of `/proc/PID/stat` (USER_HZ on x86).
const USER_HZ: u64 = 100;

impl ProcSample {
    /// The sample tagged `tag` on `console`.
    pub fn parse(console: &str, tag: &str) -> Option<ProcSample> {
        let head = format!("@@SAMPLE {tag} ");
        let line = console.lines().rev().find(|l| l.starts_with(&head))?;
        let get = |k: &str| console_value(line, k);
        let int = |k: &str| get(k).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
        let ticks = |t: u64| Duration::from_millis(t * 1000 / USER_HZ);
        Some(ProcSample {
            cpu: ticks(int("cpu_ticks")),
            children_cpu: ticks(int("child_ticks")),
            peak_rss_kib: int("hwm_kb"),
            rss_kib: int("rss_kb"),
            syncs: int("syncs"),
            sync_secs: get("sync_s").and_then(|v| v.parse().ok()).unwrap_or(0.0),
        })
    }
}

/// Prints `msg` on stderr after the time of day (UTC), for long runs.
pub fn progress(msg: &str) {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    #[allow(clippy::print_stderr)] // the benches' progress lines
    {
        eprintln!(
            "[{:02}:{:02}:{:02}] {msg}",
            now / 3600 % 24,
            now / 60 % 60,
            now % 60
        );
    }
}

/// One measured value over rounds: `Some(x)`, or `None` for a point that
/// hit its cap.
pub type Capped = Option<f64>;

/// The median of `values` (the mean of the middle two for an even count),
/// a capped point counting as larger than any measured one: `Some(None)`
/// when the median is capped, `None` when there are no values.
pub fn median(values: &[Capped]) -> Option<Capped> {
    if values.is_empty() {
        return None;
    }
    let mut v: Vec<f64> = values.iter().map(|x| x.unwrap_or(f64::INFINITY)).collect();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    let m = if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    };
    Some(m.is_finite().then_some(m))
}

/// `x` with `decimals`, `> cap` for a capped point, `-` for none.
pub fn fmt_capped(x: Option<Capped>, decimals: usize) -> String {
    match x {
        Some(Some(v)) => format!("{v:.decimals$}"),
        Some(None) => "> cap".to_owned(),
        None => "-".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_distinct_and_in_range() {
        let c = SyntheticCluster::new(20_000, 10);
        assert_eq!(c.vip(0), Ipv4Addr::new(10, 96, 4, 0));
        assert_eq!(c.vip(19_999), Ipv4Addr::new(10, 96, 82, 31));
        assert_eq!(c.endpoint(300, 9), Ipv4Addr::new(10, 109, 1, 44));
        assert_ne!(c.endpoint(0, 0), EXTRA_ENDPOINT);
        assert_eq!(c.real_servers(), 200_000);
    }

    #[test]
    fn lists_hold_every_object_once() {
        let c = SyntheticCluster::new(7, 2);
        let lists = c.lists(3);
        assert_eq!(lists.len(), 3);
        let all = lists.join("\n");
        for i in 0..7 {
            assert_eq!(all.matches(&format!(r#""name":"s{i}","#)).count(), 1);
            assert_eq!(all.matches(&format!(r#""name":"s{i}-1","#)).count(), 1);
        }
        assert!(c.slice(6, true).contains("10.99.0.1"));
        assert!(!c.slice(6, false).contains("10.99.0.1"));
        let env = c.guest_env();
        let gate = env.iter().find(|(k, _)| k == "BENCH_GATE").map(|(_, v)| v);
        assert_eq!(
            gate.map(String::as_str),
            Some("10.96.4.0:80 10.96.4.3:80 10.96.4.6:80")
        );
        assert!(env.contains(&("BENCH_TARGET_HEX".into(), ":1F90 ".into())));
    }

    #[test]
    fn samples_are_read_from_their_line() {
        let console = "x\n@@SAMPLE cold cpu_ticks=250 child_ticks=7 hwm_kb=51200 rss_kb=40000 sync_s=12.5 syncs=3 @@\n";
        let s = ProcSample::parse(console, "cold").unwrap_or_default();
        assert_eq!(s.cpu, Duration::from_millis(2500));
        assert_eq!(s.children_cpu, Duration::from_millis(70));
        assert_eq!((s.peak_rss_kib, s.rss_kib, s.syncs), (51200, 40000, 3));
        assert!((s.sync_secs - 12.5).abs() < 1e-9);
        assert_eq!(ProcSample::parse(console, "apply"), None);
        assert_eq!(
            console_value("a=1 cold_ms=42\n", "cold_ms").as_deref(),
            Some("42")
        );
    }

    #[test]
    fn medians_treat_a_cap_as_the_largest() {
        assert_eq!(median(&[]), None);
        assert_eq!(median(&[Some(3.0), Some(1.0), Some(2.0)]), Some(Some(2.0)));
        assert_eq!(median(&[Some(1.0), Some(3.0)]), Some(Some(2.0)));
        assert_eq!(median(&[Some(1.0), None, None]), Some(None));
        assert_eq!(median(&[Some(1.0), Some(2.0), None]), Some(Some(2.0)));
        assert_eq!(fmt_capped(median(&[None]), 1), "> cap");
        assert_eq!(fmt_capped(None, 1), "-");
    }

    #[test]
    fn the_command_line_quotes_each_flag() {
        let p = ProxyUnderTest::rvs(Path::new("/x/rvs-proxy"), "kernel");
        assert_eq!(p.label, "rvs");
        assert!(
            p.command_line()
                .starts_with("rvs-proxy '--proxy-mode=ipvs' '--kubeconfig=/etc/bench/kubeconfig'")
        );
        assert!(p.command_line().ends_with("'--dataplane=kernel'"));
        let k = ProxyUnderTest::kube_proxy(Path::new("/k8s"), "nftables");
        assert_eq!(
            (k.label.as_str(), k.binary_name.as_str()),
            ("kube-proxy-nftables", "kube-proxy")
        );
    }
}
