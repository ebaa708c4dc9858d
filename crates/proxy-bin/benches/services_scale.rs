//! The article's claim, measured (issue 11): the cost of a new connection
//! through a Service, and of programming the dataplane, against the number
//! of Services — kube-proxy's iptables, nftables and IPVS modes and
//! rvs-proxy's kernel, userspace and eBPF (socket-level, for a child
//! cgroup holding the client pod) dataplanes, on one VM image and kernel,
//! through a real kube-apiserver. Run with
//! `cargo bench -p rvs-proxy-bin --bench services_scale`; draw with
//! `cargo run -p rvs-benchplot`.
//!
//! Every point is one VM boot against a fresh control plane holding N
//! Services, each with 2 endpoints: two backend pods (network namespaces
//! `b1`, `b2`, 10.244.1.1 and .2, an accept-and-close server on 8080)
//! serve every Service. In the guest:
//! 1. **cold**: the proxy starts on the existing objects; measured from
//!    its start until three sample Services (first, middle, last) accept a
//!    connection from the client pod (`c`, 10.244.0.2) *and* the proxy has
//!    counted its first finished sync (`…sync_proxy_rules_duration_seconds`;
//!    kube-proxy's IPVS mode serves the samples long before it is done),
//!    with the proxy's CPU and peak RSS then;
//! 2. **connect**: from the client pod, connections one after another to
//!    the last Service and to random ones (`RVS_BENCH_CONNECTS` each),
//!    each timed from `connect()` to the handshake's end; p50 and p99;
//! 3. **add**: the host creates one more Service; measured in the guest
//!    from the moment it was asked until that Service accepts a connection.
//!
//! Variants are interleaved within each round (a round runs every variant
//! at every size, smallest first); medians over rounds and ratios are
//! printed, raw values appended to `services_scale.csv` (see
//! `rvs_benchplot::results`) under `RVS_BENCH_OUT` (default
//! `target/bench`). A wait longer than `RVS_BENCH_CAP_SECS` (600) is
//! recorded as `cap`. Settings: `RVS_BENCH_SIZES` (100,1000,5000,10000,
//! 20000), `RVS_BENCH_ROUNDS` (3), `RVS_BENCH_VARIANTS` (all),
//! `RVS_BENCH_CONNECTS` (1000), `RVS_BENCH_POLL_SECS` (0.5; on the host
//! `RVS_BENCH_HOST_POLL_SECS`, 0.05).
//!
//! Traffic stays in the guest: the Service range is only reachable there.
//! Under TCG absolute times are inflated: compare shapes and ratios.
//!
//! **On the host kernel** (`RVS_BENCH_ENVS`, default `vm,host`; needs
//! root): the modes that need no IPVS — kube-proxy's iptables and
//! nftables, rvs userspace, and rvs's eBPF socket-level load balancer
//! (`rvs-ebpf`, for a child cgroup holding the client pod) — measured the
//! same way without emulation.
//! Each size runs in a private network, mount and PID namespace
//! (`unshare`), where the control plane, a "node" namespace standing in
//! for the guest (reaching the API server at the guest's address through
//! a relay) and the pods live; nothing leaves it and everything started
//! dies with it. The control plane and its objects are made once per size
//! and round; each variant gets a fresh node and pods. Rows carry
//! `env` `host`.
//!
//! The same binary is the guest's client and backend
//! (`services_scale --serve|--probe|--connect`), copied into the VM.

#![allow(
    clippy::print_stdout,
    clippy::print_stderr,
    clippy::unwrap_used,
    clippy::expect_used
)]

use std::fmt::Write as _;
use std::io::{BufRead as _, Write as _};
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use rvs_testrig::latency;
use rvs_testrig::proxy_bench::{
    GUEST_API, GUEST_LIB, GUEST_NIC, NODE_IP, ProcSample, ProxyBenchJob, ProxyUnderTest,
    SERVICE_CIDR, SERVICE_PORT, SyntheticCluster, console_value, progress, start_plane,
    wait_marker,
};
use rvs_testrig::{Relay, TempDir, Vm};

const BENCH: &str = "services_scale bench";
/// Rows measured in the VM (Debian's 6.1 kernel under TCG).
const ENV_VM: &str = "vm";
/// Rows measured on the host kernel, in private namespaces.
const ENV_HOST: &str = "host";
/// The variants the VM runs.
const VM_VARIANTS: [&str; 6] = [
    "kube-proxy-iptables",
    "kube-proxy-nftables",
    "kube-proxy-ipvs",
    "rvs-kernel",
    "rvs-userspace",
    "rvs-ebpf",
];
/// The guest's cgroup for `rvs-ebpf`: a child the script makes and joins
/// (so the client pod is in it), never the guest's root cgroup.
const VM_EBPF_CGROUP: &str = "/sys/fs/cgroup/rvs-bench";
/// The guest's setup for `rvs-ebpf`: cgroup2 and bpffs mounted, the
/// script in [`VM_EBPF_CGROUP`] (`CG`).
const VM_EBPF_SETUP: &str = r#"
mount -t cgroup2 none /sys/fs/cgroup 2>/dev/null
mount -t bpf bpf /sys/fs/bpf 2>/dev/null
mkdir -p "$CG" && echo $$ > "$CG/cgroup.procs" || { echo "@@SETUP-FAILED@@ cgroup"; exit 1; }
"#;
/// The variants the host kernel can run (it has no IPVS). `rvs-ebpf`:
/// the socket-level load balancer for the client pod's cgroup (a child
/// cgroup the bench makes), maps pinned on a private bpffs.
const HOST_VARIANTS: [&str; 4] = [
    "kube-proxy-iptables",
    "kube-proxy-nftables",
    "rvs-userspace",
    "rvs-ebpf",
];
/// The inner run of one host point: `--host-point N ROUND`.
const HOST_POINT: &str = "--host-point";
/// The backend pods' addresses: every Service's two endpoints.
const BACKENDS: [Ipv4Addr; 2] = [Ipv4Addr::new(10, 244, 1, 1), Ipv4Addr::new(10, 244, 1, 2)];
/// Random Services the client rotates over.
const RANDOM_TARGETS: usize = 200;

/// The guest: pods, backends, the proxy, then the three measurements.
const SCRIPT: &str = r#"
IP=/usr/sbin/ip
echo 1 > /proc/sys/net/ipv4/ip_forward
# pod NS ADDR: a network namespace with ADDR, routed through a veth whose
# node side answers for the pod's gateway, 169.254.1.1.
pod() {
    $IP netns add "$1"
    $IP link add "v-$1" type veth peer name eth0 netns "$1"
    $IP addr add 169.254.1.1/32 dev "v-$1"
    $IP link set "v-$1" up
    $IP route add "$2/32" dev "v-$1"
    $IP -n "$1" link set lo up
    $IP -n "$1" addr add "$2/32" dev eth0
    $IP -n "$1" link set eth0 up
    $IP -n "$1" route add 169.254.1.1 dev eth0
    $IP -n "$1" route add default via 169.254.1.1 dev eth0
}
pod c 10.244.0.2 && pod b1 10.244.1.1 && pod b2 10.244.1.2 || { echo "@@SETUP-FAILED@@"; exit 1; }
BOUND=$((CAP_MS / 1000 * 4 + 600))
$IP netns exec b1 scale-client --serve 10.244.1.1:8080 "$BOUND" &
$IP netns exec b2 scale-client --serve 10.244.1.2:8080 "$BOUND" &
in_pod() { $IP netns exec c scale-client "$@"; }
# reachable FROM_MS CAP_MS ADDR...: until every ADDR accepts; DONE_MS.
reachable() {
    from=$1; cap=$2; shift 2
    while :; do
        if in_pod --probe "$@"; then DONE_MS=$(($(ms) - from)); return; fi
        if [ $(($(ms) - from)) -ge "$cap" ]; then DONE_MS=-1; return; fi
        alive || { DONE_MS=-2; return; }
        sleep "$POLL"
    done
}
# synced FROM_MS CAP_MS: until the proxy has counted its first finished
# sync. A proxy that programs as it goes (kube-proxy's IPVS mode adds
# virtual servers one by one, then spends most of its first sync on one
# `ipset add` per member) serves the sample Services long before its
# dataplane is complete. DONE_MS moves only if it had to wait.
synced() {
    waited=0
    while :; do
        c=$(sync_metrics | sed 's/.*syncs=//')
        if [ "${c:-0}" -ge 1 ]; then
            [ "$waited" = 0 ] || DONE_MS=$(($(ms) - $1))
            return
        fi
        waited=1
        if [ $(($(ms) - $1)) -ge "$2" ]; then DONE_MS=-1; return; fi
        alive || { DONE_MS=-2; return; }
        sleep "$POLL"
    done
}
# diagnose: what a failed point needs to be understood.
diagnose() {
    echo "== diagnose"
    in_pod --probe --verbose $GATE_ADDRS
    $IP route; $IP -n c route; $IP -o addr | head -20 | cut -c1-120
    iptables-save -t nat 2>&1 | head -40
    nft list ruleset 2>&1 | head -40
    ipvsadm -Ln 2>&1 | head -20
}
eval "start_proxy $PROXY_CMD"
reachable "$T0" "$CAP_MS" $GATE_ADDRS
[ "$DONE_MS" -lt 0 ] || synced "$T0" "$CAP_MS"
echo "cold_ms=$DONE_MS"
sample cold
echo "@@COLD@@"
# At the cap the proxy stops first: a proxy still programming (kube-proxy's
# IPVS mode at thousands of Services) would starve the diagnosis.
[ "$DONE_MS" -ge 0 ] || { finish 40; diagnose; echo "@@DONE@@"; exit 0; }
echo "last $(in_pod --connect "$CONNECTS" $LAST_ADDR)"
echo "random $(in_pod --connect "$CONNECTS" $RANDOM_ADDRS)"
echo "@@ADD-READY@@"
S=$(ms)
reachable "$S" "$CAP_MS" "$ADD_ADDR"
echo "add_ms=$DONE_MS"
sample end
finish 5
echo "@@DONE@@"
"#;

fn env_parse<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(default)
}

#[derive(Clone, Debug)]
struct Settings {
    envs: Vec<String>,
    sizes: Vec<usize>,
    rounds: usize,
    variants: Vec<String>,
    connects: usize,
    cap: Duration,
    poll_secs: f64,
    host_poll_secs: f64,
    out: PathBuf,
}

const ALL_VARIANTS: [&str; 6] = [
    "kube-proxy-iptables",
    "kube-proxy-nftables",
    "kube-proxy-ipvs",
    "rvs-kernel",
    "rvs-userspace",
    "rvs-ebpf",
];

impl Settings {
    fn from_env() -> Settings {
        let list = |name: &str, default: &str| -> Vec<String> {
            std::env::var(name)
                .unwrap_or_else(|_| default.to_owned())
                .split(',')
                .map(|s| s.trim().to_owned())
                .filter(|s| !s.is_empty())
                .collect()
        };
        Settings {
            envs: list("RVS_BENCH_ENVS", "vm,host"),
            sizes: list("RVS_BENCH_SIZES", "100,1000,5000,10000,20000")
                .iter()
                .filter_map(|s| s.parse().ok())
                .collect(),
            rounds: env_parse("RVS_BENCH_ROUNDS", 3usize).max(1),
            variants: list("RVS_BENCH_VARIANTS", &ALL_VARIANTS.join(",")),
            connects: env_parse("RVS_BENCH_CONNECTS", 1000usize).max(1),
            cap: Duration::from_secs(env_parse("RVS_BENCH_CAP_SECS", 600)),
            poll_secs: env_parse("RVS_BENCH_POLL_SECS", 0.5),
            host_poll_secs: env_parse("RVS_BENCH_HOST_POLL_SECS", 0.05),
            out: std::env::var_os("RVS_BENCH_OUT")
                .map(PathBuf::from)
                .unwrap_or_else(|| {
                    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/bench")
                }),
        }
    }
}

/// The proxy of `variant` as `env` runs it.
fn proxy(variant: &str, k8s_bin: &Path, env: &str) -> Result<ProxyUnderTest> {
    let rvs = Path::new(env!("CARGO_BIN_EXE_rvs-proxy"));
    let mut p = match variant.split_once('-') {
        Some(("kube", mode)) => {
            let mode = mode.trim_start_matches("proxy-");
            ProxyUnderTest::kube_proxy(k8s_bin, mode)
        }
        Some(("rvs", dataplane)) => {
            let mut p = ProxyUnderTest::rvs(rvs, dataplane);
            if dataplane == "userspace" && env == ENV_VM {
                // Serve any cluster IP: bind them to kube-ipvs0. The host
                // has no dummy driver: there the node routes the Service
                // range to itself instead (`host_userspace_setup`).
                p.args.push("--bind-addresses".into());
            }
            if dataplane == "ebpf" && env == ENV_VM {
                p.args.push(format!("--cgroup={VM_EBPF_CGROUP}"));
            }
            p
        }
        _ => bail!("RVS_BENCH_VARIANTS: unknown variant {variant:?}"),
    };
    p.label = variant.to_owned();
    Ok(p)
}

/// The client and backend modes the guest runs this binary in.
fn client(args: &[String]) -> Option<i32> {
    let addrs =
        |v: &[String]| -> Vec<SocketAddr> { v.iter().filter_map(|a| a.parse().ok()).collect() };
    match args.first().map(String::as_str) {
        Some("--serve") => {
            let listener = TcpListener::bind(args.get(1)?.as_str()).ok()?;
            let bound = args.get(2).and_then(|b| b.parse().ok()).unwrap_or(600);
            latency::serve(&listener, Duration::from_secs(bound));
            Some(0)
        }
        Some("--probe") => {
            let verbose = args.get(1).is_some_and(|a| a == "--verbose");
            let targets = addrs(&args[1..]);
            if verbose {
                for t in &targets {
                    let r = std::net::TcpStream::connect_timeout(t, Duration::from_secs(1));
                    println!("probe {t}: {:?}", r.map(drop));
                }
            }
            // How long one probe waits for a Service that is not there
            // yet: the resolution of the cold and add times.
            let timeout = std::env::var("PROBE_MS")
                .ok()
                .and_then(|ms| ms.parse().ok())
                .unwrap_or(500);
            let l = latency::measure(
                &targets,
                targets.len(),
                Duration::from_millis(timeout),
                Duration::from_secs(5),
            );
            Some(i32::from(l.failed > 0 || l.micros.len() < targets.len()))
        }
        Some("--connect") => {
            let count = args.get(1).and_then(|c| c.parse().ok()).unwrap_or(100);
            let l = latency::measure(
                &addrs(&args[2..]),
                count,
                Duration::from_secs(2),
                Duration::from_secs(300),
            );
            println!(
                "p50_us={} p99_us={} ok={} failed={}",
                l.percentile(50.0).unwrap_or(0),
                l.percentile(99.0).unwrap_or(0),
                l.micros.len(),
                l.failed
            );
            Some(0)
        }
        _ => None,
    }
}

/// `Some(value)`, or `None` for the cap, from a guest `KEY=MS` value.
fn ms_value(console: &str, key: &str) -> Result<Option<f64>> {
    let ms: i64 = console_value(console, key)
        .and_then(|v| v.parse().ok())
        .with_context(|| format!("no {key} on the console"))?;
    match ms {
        ms if ms >= 0 => Ok(Some(ms as f64 / 1000.0)),
        -1 => Ok(None),
        _ => bail!("the proxy exited (log kept)"),
    }
}

/// The `p50_us`/`p99_us` of the guest line starting with `tag`.
fn connect_values(console: &str, tag: &str) -> Vec<(String, f64)> {
    let Some(line) = console
        .lines()
        .rev()
        .find(|l| l.starts_with(&format!("{tag} p50_us=")))
    else {
        return Vec::new();
    };
    let get = |k: &str| console_value(line, k).and_then(|v| v.parse::<f64>().ok());
    let mut out = Vec::new();
    if get("ok").unwrap_or(0.0) > 0.0 {
        for k in ["p50_us", "p99_us"] {
            if let Some(v) = get(k) {
                let metric = if tag == "random" {
                    format!("connect_{k}")
                } else {
                    format!("connect_{tag}_{k}")
                };
                out.push((metric, v));
            }
        }
    }
    if let Some(f) = get("failed") {
        out.push((format!("connect_{tag}_failed"), f));
    }
    out
}

/// The script's addresses for one point: the gate (first, middle, last
/// Service), the last one, random ones (the same for every variant of a
/// size and round) and the one the host adds.
fn targets(cluster: &SyntheticCluster, n: usize, round: usize) -> Vec<(String, String)> {
    let addr = |i: usize| format!("{}:{SERVICE_PORT}", cluster.vip(i));
    let gate: Vec<String> = [0, n / 2, n.saturating_sub(1)]
        .iter()
        .map(|&i| addr(i))
        .collect();
    let mut seed = 0x9e37_79b9_7f4a_7c15_u64 ^ (n as u64) ^ ((round as u64) << 32);
    let random: Vec<String> = (0..RANDOM_TARGETS.min(n))
        .map(|_| {
            // xorshift: the same random Services for every variant.
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            addr((seed % n as u64) as usize)
        })
        .collect();
    vec![
        ("GATE_ADDRS".into(), gate.join(" ")),
        ("LAST_ADDR".into(), addr(n.saturating_sub(1))),
        ("RANDOM_ADDRS".into(), random.join(" ")),
        ("ADD_ADDR".into(), addr(n)),
    ]
}

/// `n` Services served by the two backend pods.
fn cluster(n: usize) -> SyntheticCluster {
    let mut cluster = SyntheticCluster::new(n, BACKENDS.len());
    cluster.shared_endpoints = BACKENDS.to_vec();
    cluster
}

/// Creates the Service the add step waits for (Service `n`).
fn add_service(plane: &rvs_testrig::ControlPlane, n: usize) -> Result<()> {
    let extra = cluster(n + 1);
    plane
        .kubectl_stdin(
            &["create", "-f", "-"],
            &format!("{}\n{}\n", extra.service(n), extra.slice(n, false)),
        )
        .context("creating the added Service")?;
    Ok(())
}

/// The bench job of one point (the VM's boot budget as its timeout).
fn bench_job<'a>(
    s: &Settings,
    proxy: &'a ProxyUnderTest,
    cluster: &'a SyntheticCluster,
) -> ProxyBenchJob<'a> {
    ProxyBenchJob {
        proxy,
        cluster,
        script: SCRIPT,
        poll_secs: s.poll_secs,
        cap: s.cap,
        timeout: Duration::from_secs(900 + 3 * s.cap.as_secs() + cluster.services as u64 / 20),
        memory_mib: 3072,
    }
}

/// Keeps one point's console under `RVS_BENCH_OUT/services_scale/`.
fn keep(s: &Settings, name: &str, console: &str) {
    let dir = s.out.join("services_scale");
    let _ = std::fs::create_dir_all(&dir).and_then(|()| std::fs::write(dir.join(name), console));
}

/// The values a point's script printed, by metric (`None`: capped).
fn values_from(output: &str) -> Result<Vec<(String, Option<f64>)>> {
    let mut values = vec![("cold_s".to_owned(), ms_value(output, "cold_ms")?)];
    if let Some(sample) = ProcSample::parse(output, "cold") {
        values.push((
            "cpu_s".into(),
            Some((sample.cpu + sample.children_cpu).as_secs_f64()),
        ));
        values.push((
            "peak_rss_mib".into(),
            Some(sample.peak_rss_kib as f64 / 1024.0),
        ));
    }
    if output.lines().any(|l| l.trim() == "@@ADD-READY@@") {
        for tag in ["last", "random"] {
            for (metric, v) in connect_values(output, tag) {
                values.push((metric, Some(v)));
            }
        }
        values.push(("add_s".to_owned(), ms_value(output, "add_ms")?));
    }
    Ok(values)
}

/// One point: a fresh control plane with `n` Services, one boot of
/// `proxy`; the values measured, by metric (`None`: capped).
fn point(
    s: &Settings,
    vm: &Vm,
    proxy: &ProxyUnderTest,
    n: usize,
    round: usize,
) -> Result<Vec<(String, Option<f64>)>> {
    let plane = start_plane()?;
    let cluster = cluster(n);
    let created = cluster.create(&plane, 4)?;
    progress(&format!(
        "  {} at {n}: {} objects created in {:.1} s; booting",
        proxy.label,
        2 * n,
        created.as_secs_f64()
    ));
    let script;
    let mut job = bench_job(s, proxy, &cluster);
    if proxy.label == "rvs-ebpf" {
        script = format!("CG={VM_EBPF_CGROUP}\n{VM_EBPF_SETUP}{SCRIPT}");
        job.script = &script;
    }
    let mut job = job
        .job(&plane)?
        .binary("scale-client", std::env::current_exe()?)
        .env("CONNECTS", &s.connects.to_string());
    for (k, v) in targets(&cluster, n, round) {
        job = job.env(&k, &v);
    }
    let mut running = vm.start(&job)?;
    let log = format!("n{n}-r{round}-{}.log", proxy.label);
    let boot_and_cap = s.cap + Duration::from_secs(900);
    if wait_marker(&mut running, "@@COLD@@", boot_and_cap)?.is_none() {
        keep(s, &log, &running.console());
        bail!("no cold start result");
    }
    let cold_ok = console_value(&running.console(), "cold_ms")
        .and_then(|v| v.parse::<i64>().ok())
        .is_some_and(|ms| ms >= 0);
    if cold_ok && wait_marker(&mut running, "@@ADD-READY@@", boot_and_cap)?.is_some() {
        add_service(&plane, n)?;
    }
    if wait_marker(&mut running, "@@DONE@@", boot_and_cap)?.is_none() {
        keep(s, &log, &running.console());
        bail!("the guest did not finish");
    }
    let out = running.wait()?;
    keep(s, &log, &out.console);
    values_from(&out.output)
}

/// The hard limit on open descriptors (`Max open files`), as inherited
/// by the proxy.
fn nofile_hard_limit() -> usize {
    std::fs::read_to_string("/proc/self/limits")
        .ok()
        .and_then(|l| {
            l.lines()
                .find(|line| line.starts_with("Max open files"))
                .and_then(|line| line.split_whitespace().nth(4))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(usize::MAX)
}

/// On the host, the node routes the Service range to itself so the
/// userspace dataplane can listen on any cluster IP (no dummy driver).
fn host_userspace_setup() -> String {
    format!("/usr/sbin/ip route add local {SERVICE_CIDR} dev lo\n")
}

/// Runs `script` with `sh -c`; fails with its output.
fn sh(what: &str, script: &str) -> Result<()> {
    let out = Command::new("sh")
        .arg("-c")
        .arg(script)
        .output()
        .with_context(|| format!("{what}: running sh"))?;
    if !out.status.success() {
        bail!(
            "{what}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

/// One size and round on the host kernel: the same binary again in
/// private namespaces ([`host_inner`]); its rows by variant and metric.
fn host_point(
    variants: &[String],
    n: usize,
    round: usize,
) -> Result<Vec<(String, String, Option<f64>)>> {
    let out = Command::new("unshare")
        .args([
            "--net",
            "--mount",
            "--pid",
            "--fork",
            "--kill-child",
            "--mount-proc",
        ])
        .arg(std::env::current_exe()?)
        .args([HOST_POINT, &n.to_string(), &round.to_string()])
        .env("RVS_BENCH_VARIANTS", variants.join(","))
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .context("running unshare")?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let rows: Vec<(String, String, Option<f64>)> = stdout
        .lines()
        .filter_map(|l| {
            let mut w = l.strip_prefix("@@ROW ")?.split_whitespace();
            let (variant, metric, value) = (w.next()?, w.next()?, w.next()?);
            let value = if value == "cap" {
                None
            } else {
                Some(value.parse().ok()?)
            };
            Some((variant.to_owned(), metric.to_owned(), value))
        })
        .collect();
    if !out.status.success() && rows.is_empty() {
        let tail: Vec<&str> = stdout.lines().rev().take(10).collect();
        bail!(
            "the host point failed ({}): {}",
            out.status,
            tail.join(" | ")
        );
    }
    Ok(rows)
}

/// Inside the private namespaces: the control plane and `n` Services,
/// then each variant on a fresh node namespace; prints `@@ROW VARIANT
/// METRIC VALUE` lines. This process is PID 1 of its namespace: the
/// scripts' killed processes are reparented to it and stay zombies (a
/// few per variant) until the namespace ends with it.
fn host_inner(n: usize, round: usize) -> Result<()> {
    let s = Settings::from_env();
    let api_ip = GUEST_API.split(':').next().unwrap_or_default();
    sh(
        "private mounts and loopback",
        &format!(
            "mount --make-rprivate / && mkdir -p /run/netns && mount -t tmpfs rvs-bench /run/netns \
             && ip link set lo up && ip addr add {api_ip}/32 dev lo"
        ),
    )?;
    let tmp = TempDir::new("rvs-scale-host")?;
    let bin = tmp.path().join("bin");
    std::fs::create_dir_all(&bin)?;
    std::os::unix::fs::symlink(std::env::current_exe()?, bin.join("scale-client"))?;
    let k8s_bin = rvs_testrig::control_plane::k8s_bin()?;
    let plane = start_plane()?;
    let cluster = cluster(n);
    let created = cluster.create(&plane, 4)?;
    progress(&format!(
        "  host at {n}: {} objects created in {:.1} s",
        2 * n,
        created.as_secs_f64()
    ));
    let _relay = Relay::start_on(GUEST_API.parse()?, plane.api_addr()?)?;
    let kubeconfig = tmp.path().join("kubeconfig");
    std::fs::write(
        &kubeconfig,
        plane.kubeconfig_for_server("kube-proxy", &format!("https://{GUEST_API}"))?,
    )?;
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    for variant in &s.variants {
        let mut p = proxy(variant, &k8s_bin, ENV_HOST)?;
        for a in &mut p.args {
            if a.starts_with("--kubeconfig=") {
                *a = format!("--kubeconfig={}", kubeconfig.display());
            }
        }
        let link = bin.join(&p.binary_name);
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(&p.binary, &link)?;
        let work = tmp.path().join(variant);
        std::fs::create_dir_all(&work)?;
        let mut setup = String::new();
        let mut _ebpf = None;
        if variant == "rvs-userspace" {
            // A listener per Service on one worker: the descriptors must
            // fit under the hard limit, which root may not be able to
            // raise (this machine's is 20000).
            let limit = nofile_hard_limit();
            if n + 1000 > limit {
                progress(&format!(
                    "  host: {variant} at {n}: skipped, needs more than the {limit} descriptors \
                     this machine allows (hard RLIMIT_NOFILE)"
                ));
                continue;
            }
            p.args.push("--workers=1".into());
            setup = host_userspace_setup();
        } else if variant == "rvs-ebpf" {
            // The script (so the client pod) runs in a child cgroup made
            // for it; the maps go to a private bpffs. Both go on drop.
            // (Before the job's PROXY_CMD is made: without --cgroup the
            // eBPF dataplane would take the root cgroup.)
            let cgroup = rvs_testrig::cgroup::Cgroup::new()?;
            let bpffs = rvs_testrig::cgroup::BpfFs::new()?;
            p.args.push(format!("--cgroup={}", cgroup.path().display()));
            p.args.push(format!(
                "--bpf-pin-dir={}",
                bpffs.path().join("rvs").display()
            ));
            setup = format!("echo $$ > '{}/cgroup.procs'\n", cgroup.path().display());
            _ebpf = Some((cgroup, bpffs));
        }
        let mut job = bench_job(&s, &p, &cluster);
        job.poll_secs = s.host_poll_secs;
        let mut env = job.env();
        env.extend(targets(&cluster, n, round));
        env.push(("CONNECTS".into(), s.connects.to_string()));
        env.push(("BENCH_TMP".into(), work.display().to_string()));
        // No emulation: a connect on the node's veths takes well under
        // a millisecond, so a probe can give up sooner than in the VM.
        env.push(("PROBE_MS".into(), "100".into()));
        env.push(("PATH".into(), path.clone()));
        let script = format!("exec 2>&1\n{GUEST_NIC}{GUEST_LIB}\n{setup}{SCRIPT}");
        progress(&format!("  host: {variant} at {n}"));
        let result = host_variant(&s, &plane, n, &script, &env);
        sh(
            "removing the node",
            "for ns in node c b1 b2; do ip netns del $ns 2>/dev/null; done; true",
        )?;
        let _ = plane.kubectl(&[
            "delete",
            "--ignore-not-found",
            &format!("service/s{n}"),
            &format!("endpointslices.discovery.k8s.io/s{n}-1"),
        ]);
        match result.and_then(|console| {
            keep(&s, &format!("host-n{n}-r{round}-{variant}.log"), &console);
            values_from(&console)
        }) {
            Ok(values) => {
                for (metric, v) in values {
                    println!("@@ROW {variant} {metric} {}", fmt_value(v));
                }
            }
            Err(e) => progress(&format!("  host: {variant} at {n}: failed: {e:#}")),
        }
    }
    Ok(())
}

/// One variant on the host: a node namespace whose `eth0` faces the
/// relay at [`GUEST_API`], `script` run in it (its own process group,
/// killed whole at the end); its output.
fn host_variant(
    s: &Settings,
    plane: &rvs_testrig::ControlPlane,
    n: usize,
    script: &str,
    env: &[(String, String)],
) -> Result<String> {
    sh(
        "making the node",
        &format!(
            "ip netns add node && ip -n node link set lo up \
             && ip link add host0 type veth peer name eth0 netns node \
             && ip link set host0 up && ip route add {NODE_IP}/32 dev host0"
        ),
    )?;
    let mut child = Command::new("nsenter")
        .args(["--net=/run/netns/node", "sh", "-c", script])
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .context("running the node's script")?;
    let group = child.id();
    let stdout = child.stdout.take().context("the script's output")?;
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    let reader = std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + 3 * s.cap + Duration::from_secs(600);
    let mut console = String::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let Ok(line) = rx.recv_timeout(left) else {
            break;
        };
        let _ = writeln!(console, "{line}");
        match line.trim() {
            "@@ADD-READY@@" => add_service(plane, n)?,
            "@@DONE@@" => break,
            _ => {}
        }
    }
    // Everything the script started: the proxy, the backends.
    let _ = Command::new("kill")
        .args(["-KILL", "--", &format!("-{group}")])
        .status();
    let _ = child.wait();
    let _ = reader.join();
    Ok(console)
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let Some(code) = client(&args) {
        std::process::exit(code);
    }
    if args.first().map(String::as_str) == Some(HOST_POINT) {
        let num = |i: usize| args.get(i).and_then(|a| a.parse().ok()).unwrap_or(0);
        return host_inner(num(1), num(2));
    }
    let s = Settings::from_env();
    let want = |env: &str| s.envs.iter().any(|e| e == env);
    let vm = if want(ENV_VM) {
        Vm::or_skip(BENCH)
    } else {
        None
    };
    let host_variants: Vec<String> = s
        .variants
        .iter()
        .filter(|v| HOST_VARIANTS.contains(&v.as_str()))
        .cloned()
        .collect();
    let host = want(ENV_HOST) && !host_variants.is_empty() && host_ok();
    if vm.is_none() && !host {
        return Ok(());
    }
    let k8s_bin = match rvs_testrig::control_plane::k8s_bin() {
        Ok(dir) => dir,
        Err(e) => {
            rvs_testrig::skip(BENCH, &e);
            return Ok(());
        }
    };
    let proxies: Vec<ProxyUnderTest> = s
        .variants
        .iter()
        .filter(|v| VM_VARIANTS.contains(&v.as_str()) || !HOST_VARIANTS.contains(&v.as_str()))
        .map(|v| proxy(v, &k8s_bin, ENV_VM))
        .collect::<Result<_>>()?;
    std::fs::create_dir_all(&s.out)?;
    let csv_path = s.out.join("services_scale.csv");
    let new_file = !csv_path.exists();
    let mut csv = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&csv_path)?;
    if new_file {
        writeln!(csv, "env,variant,services,round,metric,value")?;
    }
    progress(&format!(
        "{BENCH}: sizes {:?}, {} rounds, variants {:?} (vm: {}, host: {}), cap {} s; rows to {}",
        s.sizes,
        s.rounds,
        s.variants,
        vm.is_some(),
        if host {
            host_variants.join(",")
        } else {
            "no".to_owned()
        },
        s.cap.as_secs(),
        csv_path.display()
    ));
    let mut table: Vec<Row> = Vec::new();
    let mut record = |env: &str, variant: &str, n: usize, round: usize, metric: &str, v| {
        let text = fmt_value(v);
        let line = format!("{env},{variant},{n},{round},{metric},{text}");
        table.push((env.to_owned(), variant.to_owned(), n, metric.to_owned(), v));
        writeln!(csv, "{line}")
    };
    for round in 1..=s.rounds {
        for &n in &s.sizes {
            if host {
                progress(&format!(
                    "round {round}/{}: host kernel at {n} Services",
                    s.rounds
                ));
                match host_point(&host_variants, n, round) {
                    Ok(rows) => {
                        let mut line = String::new();
                        for (variant, metric, v) in rows {
                            record(ENV_HOST, &variant, n, round, &metric, v)?;
                            let _ = write!(line, " {variant}:{metric}={}", fmt_value(v));
                        }
                        progress(&format!("  host:{line}"));
                    }
                    Err(e) => progress(&format!("  host at {n}: failed: {e:#}")),
                }
            }
            let Some(vm) = &vm else { continue };
            for p in &proxies {
                progress(&format!(
                    "round {round}/{}: {} at {n} Services",
                    s.rounds, p.label
                ));
                match point(&s, vm, p, n, round) {
                    Ok(values) => {
                        let mut line = String::new();
                        for (metric, v) in values {
                            record(ENV_VM, &p.label, n, round, &metric, v)?;
                            let _ = write!(line, " {metric}={}", fmt_value(v));
                        }
                        progress(&format!("  {}:{line}", p.label));
                    }
                    Err(e) => progress(&format!("  {} at {n}: failed: {e:#}", p.label)),
                }
            }
        }
    }
    if vm.is_some() {
        let vm_variants: Vec<String> = proxies.iter().map(|p| p.label.clone()).collect();
        print_summary(&s, ENV_VM, &vm_variants, &table);
    }
    if host {
        print_summary(&s, ENV_HOST, &host_variants, &table);
    }
    Ok(())
}

/// (env, variant, services, metric, value or cap)
type Row = (String, String, usize, String, Option<f64>);

fn fmt_value(v: Option<f64>) -> String {
    v.map_or_else(|| "cap".to_owned(), |v| format!("{v}"))
}

/// Whether this process can make private network namespaces (root);
/// prints the skip otherwise.
fn host_ok() -> bool {
    let ok = Command::new("unshare")
        .args([
            "--net",
            "--mount",
            "--pid",
            "--fork",
            "--mount-proc",
            "true",
        ])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        rvs_testrig::skip(
            &format!("{BENCH} (host kernel)"),
            &"cannot make private network namespaces (needs root and unshare)",
        );
    }
    ok
}

/// Medians per variant and size of the metrics the figures show, and the
/// ratios the issue's goals name.
fn print_summary(s: &Settings, env: &str, variants: &[String], table: &[Row]) {
    let med = |variant: &str, n: usize, metric: &str| -> Option<Option<f64>> {
        let v: Vec<Option<f64>> = table
            .iter()
            .filter(|(e, p, m, k, _)| e == env && p == variant && *m == n && k == metric)
            .map(|(_, _, _, _, v)| *v)
            .collect();
        rvs_testrig::proxy_bench::median(&v)
    };
    let fmt = |x: Option<Option<f64>>| rvs_testrig::proxy_bench::fmt_capped(x, 1);
    for metric in [
        "connect_p50_us",
        "connect_p99_us",
        "cold_s",
        "add_s",
        "cpu_s",
        "peak_rss_mib",
    ] {
        println!("\n{env}: {metric} (median of {} rounds)", s.rounds);
        print!("{:>22}", "variant \\ services");
        for n in &s.sizes {
            print!(" {n:>10}");
        }
        println!();
        for v in variants {
            print!("{v:>22}");
            for &n in &s.sizes {
                print!(" {:>10}", fmt(med(v, n, metric)));
            }
            println!();
        }
    }
    let (Some(&small), Some(&large)) = (s.sizes.first(), s.sizes.last()) else {
        return;
    };
    // A capped denominator took longer than the cap: the ratio is below
    // the one against the cap.
    let cap = s.cap.as_secs_f64();
    let ratio = |a: Option<Option<f64>>, b: Option<Option<f64>>| match (a, b) {
        (Some(Some(a)), Some(Some(b))) if b > 0.0 => format!("{:.2}×", a / b),
        (Some(Some(a)), Some(None)) if cap > 0.0 => format!("< {:.2}×", a / cap),
        _ => "-".to_owned(),
    };
    // `a` at `na` over `b` at `nb`, medians of `metric`.
    let vs = |metric: &str, (a, na): (&str, usize), (b, nb): (&str, usize)| {
        ratio(med(a, na, metric), med(b, nb, metric))
    };
    let p50 = "connect_p50_us";
    println!("\ngoals ({env}):");
    println!(
        "  kube-proxy-iptables p50 at {large} vs at {small}: {} (the article: grows with N)",
        vs(
            p50,
            ("kube-proxy-iptables", large),
            ("kube-proxy-iptables", small)
        )
    );
    if env == ENV_HOST {
        for &n in &s.sizes {
            println!(
                "  at {n}: rvs-userspace p50 / kube-proxy-nftables {}, / kube-proxy-iptables {}; rvs-ebpf p50 / kube-proxy-nftables {}",
                vs(p50, ("rvs-userspace", n), ("kube-proxy-nftables", n)),
                vs(p50, ("rvs-userspace", n), ("kube-proxy-iptables", n)),
                vs(p50, ("rvs-ebpf", n), ("kube-proxy-nftables", n)),
            );
        }
        return;
    }
    println!(
        "  rvs-kernel p50 at {large} vs at {small}: {} (goal ≤ 1.05×)",
        vs(p50, ("rvs-kernel", large), ("rvs-kernel", small))
    );
    for &n in &s.sizes {
        println!(
            "  at {n}: rvs-kernel p50 / kube-proxy-nftables {} (goal ≤ 1), / kube-proxy-ipvs {}; cold rvs-kernel / kube-proxy-ipvs {} (goal ≤ 0.2 at 10k), / kube-proxy-nftables {} (goal ≤ 1); rvs-ebpf p50 / kube-proxy-nftables {}",
            vs(p50, ("rvs-kernel", n), ("kube-proxy-nftables", n)),
            vs(p50, ("rvs-kernel", n), ("kube-proxy-ipvs", n)),
            vs("cold_s", ("rvs-kernel", n), ("kube-proxy-ipvs", n)),
            vs("cold_s", ("rvs-kernel", n), ("kube-proxy-nftables", n)),
            vs(p50, ("rvs-ebpf", n), ("kube-proxy-nftables", n)),
        );
    }
}
