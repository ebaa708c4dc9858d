//! rvs-proxy (`--dataplane kernel`) against the real kube-proxy
//! (`--proxy-mode=ipvs`), through a real kube-apiserver, on the same VM
//! image and kernel: N Services × 10 endpoints (issue 16, deliverable 5).
//! Run with `cargo bench -p rvs-proxy-bin --bench vs_kube_proxy`.
//!
//! For each size and round, each proxy in turn (kube-proxy, rvs, kube-proxy,
//! rvs…) gets a fresh control plane and two fresh VM boots:
//! 1. **apply**: the proxy starts on an empty cluster; once it has synced
//!    (the `kubernetes` Service's virtual server is there) the host creates
//!    every Service and EndpointSlice (`kubectl create`, parallel chunks);
//!    measured: the create's own duration, and the time from its start to
//!    the dataplane complete (every virtual server with all its real
//!    servers), as the host sees the guest's marker;
//! 2. **cold**: the proxy starts on the existing objects; measured in the
//!    guest from its start to the dataplane complete, with the proxy's
//!    CPU seconds and peak RSS (`/proc/PID`) then; then one endpoint is
//!    added to the last Service and the host times it from the `kubectl
//!    apply` to its real server in IPVS.
//!
//! Settings (environment): `RVS_BENCH_SIZES` (default `1000,10000`),
//! `RVS_BENCH_ENDPOINTS` (10), `RVS_BENCH_ROUNDS` (2), `RVS_BENCH_CAP_SECS`
//! (600: a wait longer than that is recorded as `> cap`), `RVS_BENCH_PHASES`
//! (`apply,cold`), `RVS_BENCH_CREATE_JOBS` (4 kubectl processes),
//! `RVS_BENCH_POLL_SECS` (0.5), `RVS_BENCH_OUT` (default `target/bench`).
//! Raw results are appended to `vs_kube_proxy.csv` there, the consoles kept
//! under `vs_kube_proxy/`.
//!
//! The VM runs under TCG and the host's cores may be shared: compare the
//! ratios, not the absolute times.

#![allow(
    clippy::print_stdout,
    clippy::print_stderr,
    clippy::unwrap_used,
    clippy::expect_used
)]

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, Result, bail};
use rvs_testrig::proxy_bench::{
    Capped, ProcSample, ProxyBenchJob, ProxyUnderTest, SyntheticCluster, console_value, fmt_capped,
    median, progress, start_plane, wait_marker,
};
use rvs_testrig::{ControlPlane, Vm};

const BENCH: &str = "vs_kube_proxy bench";

/// The apply phase's guest: sync the empty cluster, say READY, wait for
/// the objects the host creates.
const APPLY: &str = r#"
eval "start_proxy $PROXY_CMD"
i=0
until ipvsadm -Ln -t 10.96.0.1:443 >/dev/null 2>&1; do
    i=$((i + 1))
    [ "$i" -le 3000 ] || { echo "no first sync"; finish 40; exit 1; }
    alive || { echo "the proxy exited"; finish 40; exit 1; }
    sleep 0.2
done
echo "first_sync_ms=$(($(ms) - T0))"
echo "@@READY@@"
S=$(ms)
wait_complete "$S" "$((CAP_MS * 3))"
echo "apply_guest_ms=$DONE_MS checks=$CHECKS"
echo "@@COMPLETE@@"
sample apply
[ "$DONE_MS" -ge 0 ] || { finish 40; exit 0; }
finish 5
"#;

/// The cold phase's guest: start on existing objects, complete, then one
/// endpoint change.
const COLD: &str = r#"
eval "start_proxy $PROXY_CMD"
wait_complete "$T0" "$CAP_MS"
echo "cold_ms=$DONE_MS checks=$CHECKS"
echo "@@COMPLETE@@"
sample cold
[ "$DONE_MS" -ge 0 ] || { finish 40; exit 0; }
# The change is made on an idle proxy: its first sync has ended (or, past
# the cap, on a proxy still busy with it).
settle "$T0" "$CAP_MS"
echo "settled_ms=$DONE_MS"
sample settled
[ "$DONE_MS" -ge -1 ] || { finish 40; exit 0; }
echo "@@CHANGE-READY@@"
S=$(ms)
wait_rs "$BENCH_LAST" "$BENCH_EXTRA" "$S" "$CAP_MS"
echo "change_guest_ms=$DONE_MS"
echo "@@CHANGED@@"
sample change
finish 5
"#;

#[derive(Clone, Debug)]
struct Settings {
    sizes: Vec<usize>,
    endpoints: usize,
    rounds: usize,
    cap: Duration,
    apply: bool,
    cold: bool,
    create_jobs: usize,
    poll_secs: f64,
    out: PathBuf,
}

fn env_parse<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(default)
}

impl Settings {
    fn from_env() -> Settings {
        let phases = std::env::var("RVS_BENCH_PHASES").unwrap_or_else(|_| "apply,cold".into());
        Settings {
            sizes: std::env::var("RVS_BENCH_SIZES")
                .unwrap_or_else(|_| "1000,10000".into())
                .split(',')
                .filter_map(|s| s.trim().parse().ok())
                .collect(),
            endpoints: env_parse("RVS_BENCH_ENDPOINTS", 10),
            rounds: env_parse("RVS_BENCH_ROUNDS", 2usize).max(1),
            cap: Duration::from_secs(env_parse("RVS_BENCH_CAP_SECS", 600)),
            apply: phases.contains("apply"),
            cold: phases.contains("cold"),
            create_jobs: env_parse("RVS_BENCH_CREATE_JOBS", 4usize).max(1),
            poll_secs: env_parse("RVS_BENCH_POLL_SECS", 0.5),
            out: std::env::var_os("RVS_BENCH_OUT")
                .map(PathBuf::from)
                .unwrap_or_else(|| {
                    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/bench")
                }),
        }
    }
}

/// One proxy's numbers for one size and round. `None`: not measured;
/// `Some(None)`: hit the cap.
#[derive(Clone, Debug, Default)]
struct Row {
    size: usize,
    round: usize,
    proxy: String,
    first_sync_s: Option<f64>,
    apply_kubectl_s: Option<f64>,
    apply_complete_s: Option<Capped>,
    after_apply_s: Option<Capped>,
    apply_sample: Option<ProcSample>,
    cold_s: Option<Capped>,
    cold_sample: Option<ProcSample>,
    settled_s: Option<Capped>,
    settled_sample: Option<ProcSample>,
    change_ms: Option<Capped>,
    change_kubectl_ms: Option<f64>,
    error: String,
}

fn save_console(s: &Settings, row: &Row, phase: &str, console: &str) {
    let dir = s.out.join("vs_kube_proxy");
    let path = dir.join(format!(
        "n{}-r{}-{}-{phase}.log",
        row.size, row.round, row.proxy
    ));
    if let Err(e) = std::fs::create_dir_all(&dir).and_then(|()| std::fs::write(&path, console)) {
        progress(&format!("cannot keep {}: {e}", path.display()));
    }
}

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

/// The VM's budget for a boot: boot and first sync, the create, the waits.
fn vm_budget(s: &Settings, n: usize) -> Duration {
    Duration::from_secs(900 + 3 * s.cap.as_secs() + (n as u64) / 20)
}

fn apply_phase(
    s: &Settings,
    vm: &Vm,
    plane: &ControlPlane,
    proxy: &ProxyUnderTest,
    cluster: &SyntheticCluster,
    row: &mut Row,
) -> Result<()> {
    let job = ProxyBenchJob {
        proxy,
        cluster,
        script: APPLY,
        poll_secs: s.poll_secs,
        cap: s.cap,
        timeout: vm_budget(s, cluster.services),
        memory_mib: 2048,
    }
    .job(plane)?;
    let mut running = vm.start(&job)?;
    if wait_marker(&mut running, "@@READY@@", Duration::from_secs(900))?.is_none() {
        save_console(s, row, "apply", &running.console());
        bail!("no first sync within 900 s");
    }
    row.first_sync_s = console_value(&running.console(), "first_sync_ms")
        .and_then(|v| v.parse::<f64>().ok())
        .map(|ms| ms / 1000.0);
    progress(&format!(
        "  apply: {} synced the empty cluster after {:.1} s; creating {} objects",
        proxy.label,
        row.first_sync_s.unwrap_or(0.0),
        2 * cluster.services
    ));
    let started = Instant::now();
    let created = cluster.create(plane, s.create_jobs)?;
    let created_at = Instant::now();
    row.apply_kubectl_s = Some(secs(created));
    progress(&format!(
        "  apply: created in {:.1} s; waiting for the dataplane (cap {} s)",
        secs(created),
        s.cap.as_secs()
    ));
    match wait_marker(&mut running, "@@COMPLETE@@", s.cap)? {
        Some(done) => {
            row.apply_complete_s = Some(Some(secs(done - started)));
            row.after_apply_s = Some(Some(secs(done.saturating_duration_since(created_at))));
            let out = running.wait()?;
            save_console(s, row, "apply", &out.console);
            row.apply_sample = ProcSample::parse(&out.output, "apply");
            progress(&format!(
                "  apply: complete {:.1} s after the create started ({:.1} s after it ended)",
                secs(done - started),
                secs(done.saturating_duration_since(created_at))
            ));
        }
        None => {
            row.apply_complete_s = Some(None);
            row.after_apply_s = Some(None);
            save_console(s, row, "apply", &running.console());
            progress("  apply: > cap");
        }
    }
    Ok(())
}

fn cold_phase(
    s: &Settings,
    vm: &Vm,
    plane: &ControlPlane,
    proxy: &ProxyUnderTest,
    cluster: &SyntheticCluster,
    row: &mut Row,
) -> Result<()> {
    let job = ProxyBenchJob {
        proxy,
        cluster,
        script: COLD,
        poll_secs: s.poll_secs,
        cap: s.cap,
        timeout: vm_budget(s, cluster.services),
        memory_mib: 2048,
    }
    .job(plane)?;
    progress(&format!(
        "  cold: {} starting on the existing objects",
        proxy.label
    ));
    let mut running = vm.start(&job)?;
    // The guest enforces the cap from the proxy's start; the boot comes first.
    if wait_marker(
        &mut running,
        "@@COMPLETE@@",
        s.cap + Duration::from_secs(600),
    )?
    .is_none()
    {
        save_console(s, row, "cold", &running.console());
        bail!("the cold phase did not end");
    }
    let cold_ms: i64 = console_value(&running.console(), "cold_ms")
        .and_then(|v| v.parse().ok())
        .unwrap_or(-3);
    match cold_ms {
        ms if ms >= 0 => row.cold_s = Some(Some(ms as f64 / 1000.0)),
        -1 => row.cold_s = Some(None),
        _ => {
            let out = running.wait()?;
            save_console(s, row, "cold", &out.console);
            bail!("the proxy exited before the dataplane was complete");
        }
    }
    if cold_ms >= 0 {
        progress(&format!(
            "  cold: complete after {:.1} s; one endpoint change",
            cold_ms as f64 / 1000.0
        ));
        if wait_marker(
            &mut running,
            "@@CHANGE-READY@@",
            s.cap + Duration::from_secs(60),
        )?
        .is_none()
        {
            bail!("no @@CHANGE-READY@@");
        }
        let settled = console_value(&running.console(), "settled_ms")
            .and_then(|v| v.parse::<i64>().ok())
            .unwrap_or(-1);
        row.settled_s = Some((settled >= 0).then_some(settled as f64 / 1000.0));
        progress(&format!(
            "  cold: its first sync ended after {}",
            fmt_capped(row.settled_s, 1)
        ));
        // Past the proxies' minimum sync period (1 s) after the last sync.
        std::thread::sleep(Duration::from_secs(2));
        let started = Instant::now();
        let kubectl = cluster.add_endpoint(plane, cluster.services - 1)?;
        row.change_kubectl_ms = Some(kubectl.as_secs_f64() * 1000.0);
        match wait_marker(&mut running, "@@CHANGED@@", s.cap)? {
            Some(done) => {
                let ms = (done - started).as_secs_f64() * 1000.0;
                row.change_ms = Some(Some(ms));
                progress(&format!(
                    "  change: in IPVS {ms:.0} ms after kubectl apply started ({:.0} ms of kubectl)",
                    kubectl.as_secs_f64() * 1000.0
                ));
            }
            None => {
                row.change_ms = Some(None);
                progress("  change: > cap");
            }
        }
    } else {
        progress("  cold: > cap");
    }
    let out = running.wait()?;
    save_console(s, row, "cold", &out.console);
    row.cold_sample = ProcSample::parse(&out.output, "cold");
    row.settled_sample = ProcSample::parse(&out.output, "settled");
    Ok(())
}

fn measure(
    s: &Settings,
    vm: &Vm,
    proxy: &ProxyUnderTest,
    cluster: &SyntheticCluster,
    row: &mut Row,
) -> Result<()> {
    let plane = start_plane().context("start the control plane")?;
    if s.apply {
        apply_phase(s, vm, &plane, proxy, cluster, row)?;
    } else {
        let took = cluster.create(&plane, s.create_jobs)?;
        row.apply_kubectl_s = Some(secs(took));
        progress(&format!("  created the objects in {:.1} s", secs(took)));
    }
    if s.cold {
        cold_phase(s, vm, &plane, proxy, cluster, row)?;
    }
    Ok(())
}

// ---- Output ----

fn cell(x: Option<f64>, decimals: usize) -> String {
    x.map(|v| format!("{v:.decimals$}")).unwrap_or_default()
}

fn cell_capped(x: Option<Capped>, decimals: usize) -> String {
    match x {
        Some(Some(v)) => format!("{v:.decimals$}"),
        Some(None) => "cap".to_owned(),
        None => String::new(),
    }
}

const CSV_HEADER: &str = "run,size,endpoints,round,proxy,cap_s,cold_s,cold_cpu_s,cold_children_cpu_s,cold_peak_rss_mib,cold_syncs,cold_sync_s,settled_s,settled_cpu_s,settled_children_cpu_s,settled_peak_rss_mib,settled_syncs,settled_sync_s,apply_kubectl_s,apply_to_complete_s,after_apply_s,apply_cpu_s,apply_children_cpu_s,apply_peak_rss_mib,apply_syncs,apply_sync_s,first_sync_s,change_ms,change_kubectl_ms,error";

fn sample_cells(p: &Option<ProcSample>) -> String {
    match p {
        Some(p) => format!(
            "{:.2},{:.2},{:.1},{},{:.2}",
            secs(p.cpu),
            secs(p.children_cpu),
            p.peak_rss_kib as f64 / 1024.0,
            p.syncs,
            p.sync_secs
        ),
        None => ",,,,".to_owned(),
    }
}

fn csv_line(run: u64, s: &Settings, r: &Row) -> String {
    format!(
        "{run},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{}",
        r.size,
        s.endpoints,
        r.round,
        r.proxy,
        s.cap.as_secs(),
        cell_capped(r.cold_s, 2),
        sample_cells(&r.cold_sample),
        cell_capped(r.settled_s, 2),
        sample_cells(&r.settled_sample),
        cell(r.apply_kubectl_s, 2),
        cell_capped(r.apply_complete_s, 2),
        cell_capped(r.after_apply_s, 2),
        sample_cells(&r.apply_sample),
        cell(r.first_sync_s, 2),
        cell_capped(r.change_ms, 0),
        cell(r.change_kubectl_ms, 0),
        r.error.replace([',', '\n'], ";")
    )
}

fn append_csv(path: &Path, run: u64, s: &Settings, r: &Row) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let new = !path.exists();
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)?;
    if new {
        writeln!(f, "{CSV_HEADER}")?;
    }
    writeln!(f, "{}", csv_line(run, s, r))
}

/// The columns of the table: name, decimals, and how to read a row.
type Column = (&'static str, usize, fn(&Row) -> Option<Capped>);

fn columns() -> Vec<Column> {
    fn sample(p: &Option<ProcSample>, f: fn(&ProcSample) -> f64) -> Option<Capped> {
        p.as_ref().map(|p| Some(f(p)))
    }
    vec![
        ("cold s", 1, |r| r.cold_s),
        ("cold cpu s", 1, |r| sample(&r.cold_sample, |p| secs(p.cpu))),
        ("+child cpu", 1, |r| {
            sample(&r.cold_sample, |p| secs(p.children_cpu))
        }),
        ("cold RSS MiB", 0, |r| {
            sample(&r.cold_sample, |p| p.peak_rss_kib as f64 / 1024.0)
        }),
        ("sync ended s", 1, |r| r.settled_s),
        ("create s", 1, |r| r.apply_kubectl_s.map(Some)),
        ("apply→done s", 1, |r| r.apply_complete_s),
        ("after create s", 1, |r| r.after_apply_s),
        ("apply cpu s", 1, |r| {
            sample(&r.apply_sample, |p| secs(p.cpu))
        }),
        ("apply RSS MiB", 0, |r| {
            sample(&r.apply_sample, |p| p.peak_rss_kib as f64 / 1024.0)
        }),
        ("change ms", 0, |r| r.change_ms),
    ]
}

fn ratio(rvs: Option<Capped>, kp: Option<Capped>) -> String {
    match (rvs, kp) {
        (Some(Some(r)), Some(Some(k))) if k > 0.0 => format!("{:.2}", r / k),
        (Some(Some(_)), Some(None)) => "< (cap)".to_owned(),
        (Some(None), Some(Some(_))) => "> (cap)".to_owned(),
        _ => "-".to_owned(),
    }
}

fn table(s: &Settings, rows: &[Row], proxies: &[ProxyUnderTest]) -> String {
    let cols = columns();
    let mut out = String::new();
    let _ = write!(out, "{:>6} {:<11}", "N", "proxy");
    for (name, _, _) in &cols {
        let _ = write!(out, " {name:>14}");
    }
    out.push('\n');
    for &n in &s.sizes {
        let of = |label: &str| -> Vec<&Row> {
            rows.iter()
                .filter(|r| r.size == n && r.proxy == label && r.error.is_empty())
                .collect()
        };
        let mut medians: Vec<Vec<Option<Capped>>> = Vec::new();
        for p in proxies {
            let mine = of(&p.label);
            if mine.is_empty() {
                continue;
            }
            let _ = write!(
                out,
                "{n:>6} {:<11}",
                format!("{} ({})", p.label, mine.len())
            );
            let mut m = Vec::new();
            for (_, decimals, get) in &cols {
                let values: Vec<Capped> = mine.iter().filter_map(|r| get(r)).collect();
                let med = median(&values);
                let _ = write!(out, " {:>14}", fmt_capped(med, *decimals));
                m.push(med);
            }
            out.push('\n');
            medians.push(m);
        }
        if let [kp, rvs] = medians.as_slice() {
            let _ = write!(out, "{n:>6} {:<11}", "rvs/kp");
            for (r, k) in rvs.iter().zip(kp) {
                let _ = write!(out, " {:>14}", ratio(*r, *k));
            }
            out.push('\n');
        }
    }
    out
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

fn main() {
    let s = Settings::from_env();
    let Some(vm) = Vm::or_skip(BENCH) else {
        return;
    };
    let k8s_bin = match rvs_testrig::control_plane::k8s_bin() {
        Ok(dir) => dir,
        Err(e) => {
            rvs_testrig::skip(BENCH, &e);
            return;
        }
    };
    let proxies = [
        ProxyUnderTest::kube_proxy(&k8s_bin, "ipvs"),
        ProxyUnderTest::rvs(Path::new(env!("CARGO_BIN_EXE_rvs-proxy")), "kernel"),
    ];
    for p in &proxies {
        if !p.binary.is_file() {
            rvs_testrig::skip(BENCH, &format!("no {}", p.binary.display()));
            return;
        }
    }
    let run = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let csv = s.out.join("vs_kube_proxy.csv");
    let started = Instant::now();
    progress(&format!(
        "kube-proxy --proxy-mode=ipvs vs rvs-proxy --dataplane kernel: sizes {:?} × {} endpoints, {} rounds, cap {} s, kernel {} under TCG; host load {}; raw results → {}",
        s.sizes,
        s.endpoints,
        s.rounds,
        s.cap.as_secs(),
        vm.kernel_release(),
        loadavg(),
        csv.display()
    ));
    let mut rows = Vec::new();
    for &n in &s.sizes {
        let cluster = SyntheticCluster::new(n, s.endpoints);
        for round in 1..=s.rounds {
            for p in &proxies {
                progress(&format!(
                    "N={n} round {round}/{}: {} (host load {})",
                    s.rounds,
                    p.label,
                    loadavg()
                ));
                let mut row = Row {
                    size: n,
                    round,
                    proxy: p.label.clone(),
                    ..Row::default()
                };
                let t = Instant::now();
                if let Err(e) = measure(&s, &vm, p, &cluster, &mut row) {
                    let first = format!("{e:#}");
                    let first = first.lines().next().unwrap_or_default().to_owned();
                    progress(&format!("  FAILED: {first}"));
                    row.error = first;
                }
                progress(&format!("  ({:.0} s)", secs(t.elapsed())));
                if let Err(e) = append_csv(&csv, run, &s, &row) {
                    progress(&format!("cannot write {}: {e}", csv.display()));
                }
                rows.push(row);
            }
        }
        println!(
            "\n{}",
            table(
                &Settings {
                    sizes: vec![n],
                    ..s.clone()
                },
                &rows,
                &proxies
            )
        );
    }
    println!(
        "\nkube-proxy --proxy-mode=ipvs (kp) vs rvs-proxy --dataplane kernel (rvs), N Services × {} endpoints through kube-apiserver, medians of {} interleaved rounds (fresh VM per phase), kernel {} under TCG, cap {} s; host load at the end {}:",
        s.endpoints,
        s.rounds,
        vm.kernel_release(),
        s.cap.as_secs(),
        loadavg()
    );
    println!("{}", table(&s, &rows, &proxies));
    println!(
        "cold: proxy started on existing objects → every virtual server has all its real servers (guest clock); create: kubectl create of all objects; apply→done: create start → complete; after create: create end → complete; cpu: utime+stime of the proxy at completion (+child: reaped children); RSS: VmHWM; sync ended: proxy start → its first sync over (metrics); change ms: kubectl apply of one more endpoint → its real server in IPVS."
    );
    println!(
        "wall time {:.0} s; raw results in {}",
        secs(started.elapsed()),
        csv.display()
    );
}
