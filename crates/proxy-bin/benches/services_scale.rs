//! The article's claim, measured (issue 11): the cost of a new connection
//! through a Service, and of programming the dataplane, against the number
//! of Services — kube-proxy's iptables, nftables and IPVS modes and
//! rvs-proxy's kernel and userspace dataplanes, on one VM image and kernel,
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
//!    connection from the client pod (`c`, 10.244.0.2), with the proxy's
//!    CPU and peak RSS then;
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
//! `RVS_BENCH_CONNECTS` (1000), `RVS_BENCH_POLL_SECS` (0.5).
//!
//! Traffic stays in the guest: the Service range is only reachable there.
//! Under TCG absolute times are inflated: compare shapes and ratios.
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
use std::io::Write as _;
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use rvs_testrig::Vm;
use rvs_testrig::latency;
use rvs_testrig::proxy_bench::{
    ProcSample, ProxyBenchJob, ProxyUnderTest, SERVICE_PORT, SyntheticCluster, console_value,
    progress, start_plane, wait_marker,
};

const BENCH: &str = "services_scale bench";
const ENV: &str = "vm";
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
# diagnose: what a failed point needs to be understood.
diagnose() {
    echo "== diagnose"
    in_pod --probe --verbose $GATE_ADDRS
    $IP route; $IP -n c route; $IP -o addr | cut -c1-120
    iptables-save -t nat 2>&1 | head -40
    nft list ruleset 2>&1 | head -40
    ipvsadm -Ln 2>&1 | head -20
}
eval "start_proxy $PROXY_CMD"
reachable "$T0" "$CAP_MS" $GATE_ADDRS
echo "cold_ms=$DONE_MS"
sample cold
echo "@@COLD@@"
[ "$DONE_MS" -ge 0 ] || { diagnose; finish 40; echo "@@DONE@@"; exit 0; }
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
    sizes: Vec<usize>,
    rounds: usize,
    variants: Vec<String>,
    connects: usize,
    cap: Duration,
    poll_secs: f64,
    out: PathBuf,
}

const ALL_VARIANTS: [&str; 5] = [
    "kube-proxy-iptables",
    "kube-proxy-nftables",
    "kube-proxy-ipvs",
    "rvs-kernel",
    "rvs-userspace",
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
            sizes: list("RVS_BENCH_SIZES", "100,1000,5000,10000,20000")
                .iter()
                .filter_map(|s| s.parse().ok())
                .collect(),
            rounds: env_parse("RVS_BENCH_ROUNDS", 3usize).max(1),
            variants: list("RVS_BENCH_VARIANTS", &ALL_VARIANTS.join(",")),
            connects: env_parse("RVS_BENCH_CONNECTS", 1000usize).max(1),
            cap: Duration::from_secs(env_parse("RVS_BENCH_CAP_SECS", 600)),
            poll_secs: env_parse("RVS_BENCH_POLL_SECS", 0.5),
            out: std::env::var_os("RVS_BENCH_OUT")
                .map(PathBuf::from)
                .unwrap_or_else(|| {
                    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/bench")
                }),
        }
    }
}

fn proxy(variant: &str, k8s_bin: &Path) -> Result<ProxyUnderTest> {
    let rvs = Path::new(env!("CARGO_BIN_EXE_rvs-proxy"));
    let mut p = match variant.split_once('-') {
        Some(("kube", mode)) => {
            let mode = mode.trim_start_matches("proxy-");
            ProxyUnderTest::kube_proxy(k8s_bin, mode)
        }
        Some(("rvs", dataplane)) => {
            let mut p = ProxyUnderTest::rvs(rvs, dataplane);
            if dataplane == "userspace" {
                // Serve any cluster IP: bind them to kube-ipvs0.
                p.args.push("--bind-addresses".into());
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
            let l = latency::measure(
                &targets,
                targets.len(),
                Duration::from_millis(500),
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
    let mut cluster = SyntheticCluster::new(n, BACKENDS.len());
    cluster.shared_endpoints = BACKENDS.to_vec();
    let created = cluster.create(&plane, 4)?;
    progress(&format!(
        "  {} at {n}: {} objects created in {:.1} s; booting",
        proxy.label,
        2 * n,
        created.as_secs_f64()
    ));
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
    let job = ProxyBenchJob {
        proxy,
        cluster: &cluster,
        script: SCRIPT,
        poll_secs: s.poll_secs,
        cap: s.cap,
        timeout: Duration::from_secs(900 + 3 * s.cap.as_secs() + n as u64 / 20),
        memory_mib: 3072,
    }
    .job(&plane)?
    .binary("scale-client", std::env::current_exe()?)
    .env("GATE_ADDRS", &gate.join(" "))
    .env("LAST_ADDR", &addr(n - 1))
    .env("RANDOM_ADDRS", &random.join(" "))
    .env("ADD_ADDR", &addr(n))
    .env("CONNECTS", &s.connects.to_string());
    let mut running = vm.start(&job)?;
    let keep = |console: &str| {
        let dir = s.out.join("services_scale");
        let path = dir.join(format!("n{n}-r{round}-{}.log", proxy.label));
        let _ = std::fs::create_dir_all(&dir).and_then(|()| std::fs::write(path, console));
    };
    let boot_and_cap = s.cap + Duration::from_secs(900);
    if wait_marker(&mut running, "@@COLD@@", boot_and_cap)?.is_none() {
        keep(&running.console());
        bail!("no cold start result");
    }
    let cold_ok = console_value(&running.console(), "cold_ms")
        .and_then(|v| v.parse::<i64>().ok())
        .is_some_and(|ms| ms >= 0);
    let ready = if cold_ok {
        wait_marker(&mut running, "@@ADD-READY@@", boot_and_cap)?
    } else {
        None
    };
    let mut values = Vec::new();
    if ready.is_some() {
        let mut extra = SyntheticCluster::new(n + 1, BACKENDS.len());
        extra.shared_endpoints = BACKENDS.to_vec();
        plane
            .kubectl_stdin(
                &["create", "-f", "-"],
                &format!("{}\n{}\n", extra.service(n), extra.slice(n, false)),
            )
            .context("creating the added Service")?;
    }
    if wait_marker(&mut running, "@@DONE@@", boot_and_cap)?.is_none() {
        keep(&running.console());
        bail!("the guest did not finish");
    }
    let out = running.wait()?;
    keep(&out.console);
    values.push(("cold_s".to_owned(), ms_value(&out.output, "cold_ms")?));
    if let Some(sample) = ProcSample::parse(&out.output, "cold") {
        values.push((
            "cpu_s".into(),
            Some((sample.cpu + sample.children_cpu).as_secs_f64()),
        ));
        values.push((
            "peak_rss_mib".into(),
            Some(sample.peak_rss_kib as f64 / 1024.0),
        ));
    }
    if ready.is_some() {
        for tag in ["last", "random"] {
            for (metric, v) in connect_values(&out.output, tag) {
                values.push((metric, Some(v)));
            }
        }
        values.push(("add_s".to_owned(), ms_value(&out.output, "add_ms")?));
    }
    Ok(values)
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let Some(code) = client(&args) {
        std::process::exit(code);
    }
    let s = Settings::from_env();
    let Some(vm) = Vm::or_skip(BENCH) else {
        return Ok(());
    };
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
        .map(|v| proxy(v, &k8s_bin))
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
        "{BENCH}: sizes {:?}, {} rounds, variants {:?}, cap {} s; rows to {}",
        s.sizes,
        s.rounds,
        s.variants,
        s.cap.as_secs(),
        csv_path.display()
    ));
    let mut table: Vec<(String, usize, String, Option<f64>)> = Vec::new();
    for round in 1..=s.rounds {
        for &n in &s.sizes {
            for p in &proxies {
                progress(&format!(
                    "round {round}/{}: {} at {n} Services",
                    s.rounds, p.label
                ));
                match point(&s, &vm, p, n, round) {
                    Ok(values) => {
                        let mut line = String::new();
                        for (metric, v) in values {
                            let text = v.map_or_else(|| "cap".to_owned(), |v| format!("{v}"));
                            writeln!(csv, "{ENV},{},{n},{round},{metric},{text}", p.label)?;
                            let _ = write!(line, " {metric}={text}");
                            table.push((p.label.clone(), n, metric, v));
                        }
                        progress(&format!("  {}:{line}", p.label));
                    }
                    Err(e) => progress(&format!("  {} at {n}: failed: {e:#}", p.label)),
                }
            }
        }
    }
    print_summary(&s, &table);
    Ok(())
}

/// Medians per variant and size of the metrics the figures show, and the
/// ratios the issue's goals name.
fn print_summary(s: &Settings, table: &[(String, usize, String, Option<f64>)]) {
    let med = |variant: &str, n: usize, metric: &str| -> Option<Option<f64>> {
        let v: Vec<Option<f64>> = table
            .iter()
            .filter(|(p, m, k, _)| p == variant && *m == n && k == metric)
            .map(|(_, _, _, v)| *v)
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
        println!("\n{metric} (median of {} rounds)", s.rounds);
        print!("{:>22}", "variant \\ services");
        for n in &s.sizes {
            print!(" {n:>10}");
        }
        println!();
        for v in &s.variants {
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
    let ratio = |a: Option<Option<f64>>, b: Option<Option<f64>>| match (a, b) {
        (Some(Some(a)), Some(Some(b))) if b > 0.0 => format!("{:.2}×", a / b),
        _ => "-".to_owned(),
    };
    println!("\ngoals:");
    println!(
        "  rvs-kernel p50 at {large} vs at {small}: {} (goal ≤ 1.05×)",
        ratio(
            med("rvs-kernel", large, "connect_p50_us"),
            med("rvs-kernel", small, "connect_p50_us")
        )
    );
    println!(
        "  kube-proxy-iptables p50 at {large} vs at {small}: {} (the article: grows with N)",
        ratio(
            med("kube-proxy-iptables", large, "connect_p50_us"),
            med("kube-proxy-iptables", small, "connect_p50_us")
        )
    );
    for &n in &s.sizes {
        println!(
            "  at {n}: rvs-kernel p50 / kube-proxy-nftables {} (goal ≤ 1); cold rvs-kernel / kube-proxy-ipvs {} (goal ≤ 0.2 at 10k), / kube-proxy-nftables {} (goal ≤ 1)",
            ratio(
                med("rvs-kernel", n, "connect_p50_us"),
                med("kube-proxy-nftables", n, "connect_p50_us")
            ),
            ratio(
                med("rvs-kernel", n, "cold_s"),
                med("kube-proxy-ipvs", n, "cold_s")
            ),
            ratio(
                med("rvs-kernel", n, "cold_s"),
                med("kube-proxy-nftables", n, "cold_s")
            ),
        );
    }
}
