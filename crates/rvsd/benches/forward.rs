//! Userspace dataplane benchmark on loopback: `wrk` against two nginx
//! backends directly, through HAProxy 2.6 (`mode tcp`, `balance
//! roundrobin`) and through `rvsd` (rr), in interleaved rounds, printing
//! medians and ratios against HAProxy measured in the same run:
//! new connections/s (`Connection: close`), keep-alive requests/s, p50/p99
//! latency, bulk transfer throughput, and new-connection rate with 10 vs
//! 10,000 virtual services configured in rvsd.
//!
//! Run with `cargo bench -p rvsd --bench forward`. It installs `wrk`,
//! `haproxy` and `nginx` from Debian when missing. Knobs:
//! `RVS_BENCH_ROUNDS` (default 5), `RVS_BENCH_SECONDS` per measurement
//! (default 5), `RVS_BENCH_CONNS` (default 64).
//!
//! CPU pinning on this 2-core machine: the load generator (`wrk`, one
//! thread) runs on CPU 0; the proxy under test (HAProxy with one thread,
//! rvsd with one worker) on CPU 1; the nginx backends (one worker each)
//! float. Every proxy gets the same single core, so the ratios compare
//! per-core efficiency. Traffic stays on 127.0.0.0/8.

#![allow(
    clippy::print_stdout,
    clippy::print_stderr,
    clippy::unwrap_used,
    clippy::expect_used
)]

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rvs_admin::{Admin, AdminClient};
use rvs_model::admin::Op;
use rvs_model::{Destination, Protocol, Scheduler, Service, ServiceKey};

const BACKENDS: [&str; 2] = ["127.0.81.1:18100", "127.0.81.2:18100"];
const HAPROXY: &str = "127.0.82.1:18200";
const RVS: &str = "127.0.83.1:18300";
const BULK_BYTES: usize = 64 << 20;

fn env_num(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn ensure_tools() {
    let missing: Vec<&str> = ["wrk", "haproxy", "nginx"]
        .into_iter()
        .filter(|tool| {
            !Command::new("sh")
                .args([
                    "-c",
                    &format!("command -v {tool} || test -x /usr/sbin/{tool}"),
                ])
                .stdout(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        })
        .collect();
    if missing.is_empty() {
        return;
    }
    eprintln!("installing {missing:?} from Debian");
    let ok = Command::new("apt-get")
        .args(["install", "-y", "-qq", "--no-install-recommends"])
        .args(
            missing
                .iter()
                .map(|t| if *t == "nginx" { "nginx-light" } else { t }),
        )
        .env("DEBIAN_FRONTEND", "noninteractive")
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "apt-get install {missing:?} failed");
}

struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn_pinned(cpu: Option<u32>, program: &str, args: &[&str], envs: &[(&str, &str)]) -> Proc {
    let mut cmd = match cpu {
        Some(cpu) => {
            let mut c = Command::new("taskset");
            c.args(["-c", &cpu.to_string(), program]);
            c
        }
        None => Command::new(program),
    };
    let child = cmd
        .args(args)
        .envs(envs.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap_or_else(|e| panic!("starting {program}: {e}"));
    Proc(child)
}

fn wait_port(addr: &str) {
    let addr: SocketAddr = addr.parse().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
        assert!(Instant::now() < deadline, "{addr} never accepted");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn nginx(dir: &Path) -> Proc {
    std::fs::write(dir.join("bulk"), vec![b'x'; BULK_BYTES]).unwrap();
    let mut servers = String::new();
    for b in BACKENDS {
        let _ = writeln!(
            servers,
            "server {{ listen {b} reuseport backlog=4096; access_log off; \
             location = / {{ return 200 \"ok\\n\"; }} \
             location = /bulk {{ alias {}/bulk; }} }}",
            dir.display()
        );
    }
    let conf = format!(
        "daemon off; master_process off; worker_processes 1; pid {d}/nginx.pid; \
         error_log stderr error; user root; \
         events {{ worker_connections 4096; }} \
         http {{ sendfile on; tcp_nopush on; keepalive_requests 1000000; \
         client_body_temp_path {d}; proxy_temp_path {d}; fastcgi_temp_path {d}; \
         uwsgi_temp_path {d}; scgi_temp_path {d}; \
         default_type text/plain; {servers} }}\n",
        d = dir.display()
    );
    let path = dir.join("nginx.conf");
    std::fs::write(&path, conf).unwrap();
    let p = spawn_pinned(
        None,
        "nginx",
        &["-c", path.to_str().unwrap(), "-e", "stderr"],
        &[],
    );
    for b in BACKENDS {
        wait_port(b);
    }
    p
}

fn haproxy(dir: &Path) -> Proc {
    let conf = format!(
        "global\n  nbthread 1\n  maxconn 8000\n\
         defaults\n  mode tcp\n  timeout connect 5s\n  timeout client 60s\n  timeout server 60s\n\
         frontend fe\n  bind {HAPROXY}\n  default_backend be\n\
         backend be\n  balance roundrobin\n  server a {}\n  server b {}\n",
        BACKENDS[0], BACKENDS[1]
    );
    let path = dir.join("haproxy.cfg");
    std::fs::write(&path, conf).unwrap();
    let p = spawn_pinned(Some(1), "haproxy", &["-f", path.to_str().unwrap()], &[]);
    wait_port(HAPROXY);
    p
}

fn rvsd(dir: &Path, extra_services: usize) -> (Proc, PathBuf) {
    let socket = dir.join(format!("rvsd-{extra_services}.sock"));
    let _ = std::fs::remove_file(&socket);
    let p = spawn_pinned(
        Some(1),
        env!("CARGO_BIN_EXE_rvsd"),
        &["--admin-socket", socket.to_str().unwrap(), "--workers", "1"],
        // Not one audit line per programmed service and destination.
        &[("RUST_LOG", "info,rvs_admin=warn")],
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while !socket.exists() {
        assert!(Instant::now() < deadline, "rvsd did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut admin = AdminClient::connect(&socket).unwrap();
    let mut ops = Vec::new();
    let mut add = |vip: SocketAddr| {
        let key = ServiceKey::Addr {
            protocol: Protocol::Tcp,
            addr: vip,
        };
        ops.push(Op::AddService(Service::new(key, Scheduler::RoundRobin)));
        for b in BACKENDS {
            ops.push(Op::AddDestination(
                key,
                Destination::masquerade(b.parse().unwrap()),
            ));
        }
    };
    add(RVS.parse().unwrap());
    for i in 0..extra_services {
        add(SocketAddr::from((
            [
                127,
                90 + (i / 65_536) as u8,
                (i / 256 % 256) as u8,
                (i % 256) as u8,
            ],
            18400,
        )));
    }
    for chunk in ops.chunks(4096) {
        for r in admin.apply_batch(chunk) {
            r.unwrap();
        }
    }
    wait_port(RVS);
    (p, socket)
}

#[derive(Clone, Copy, Debug, Default)]
struct Sample {
    rps: f64,
    p50_us: f64,
    p99_us: f64,
    bytes_per_s: f64,
}

fn parse_time_us(text: &str) -> f64 {
    let (num, scale) = if let Some(n) = text.strip_suffix("us") {
        (n, 1.0)
    } else if let Some(n) = text.strip_suffix("ms") {
        (n, 1e3)
    } else if let Some(n) = text.strip_suffix('s') {
        (n, 1e6)
    } else {
        (text, 1.0)
    };
    num.parse::<f64>().unwrap_or(f64::NAN) * scale
}

fn parse_bytes(text: &str) -> f64 {
    for (suffix, scale) in [
        ("GB", 1e9 * 1.073_741_824),
        ("MB", 1_048_576.0),
        ("KB", 1024.0),
        ("B", 1.0),
    ] {
        if let Some(n) = text.strip_suffix(suffix) {
            return n.parse::<f64>().unwrap_or(f64::NAN) * scale;
        }
    }
    f64::NAN
}

fn wrk(target: &str, path: &str, close: bool, conns: u64, seconds: u64) -> Sample {
    let url = format!("http://{target}{path}");
    let mut cmd = Command::new("taskset");
    cmd.args(["-c", "0", "wrk", "-t1", "--latency"])
        .arg(format!("-c{conns}"))
        .arg(format!("-d{seconds}s"));
    if close {
        cmd.args(["-H", "Connection: close"]);
    }
    let out = cmd.arg(&url).output().expect("running wrk");
    let text = String::from_utf8_lossy(&out.stdout);
    let mut s = Sample::default();
    for line in text.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["Requests/sec:", v] => s.rps = v.parse().unwrap_or(f64::NAN),
            ["Transfer/sec:", v] => s.bytes_per_s = parse_bytes(v),
            ["50%", v] => s.p50_us = parse_time_us(v),
            ["99%", v] => s.p99_us = parse_time_us(v),
            _ => {}
        }
    }
    if text.contains("Socket errors") {
        eprintln!(
            "wrk {url}: {}",
            text.lines()
                .find(|l| l.contains("Socket errors"))
                .unwrap_or("")
        );
    }
    s
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied().unwrap_or(f64::NAN)
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    ensure_tools();
    let rounds = env_num("RVS_BENCH_ROUNDS", 5);
    let seconds = env_num("RVS_BENCH_SECONDS", 5);
    let conns = env_num("RVS_BENCH_CONNS", 64);
    let dir = std::env::temp_dir().join(format!("rvs-forward-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let _nginx = nginx(&dir);
    let _haproxy = haproxy(&dir);
    let (_rvsd, _socket) = rvsd(&dir, 0);

    let targets = [("direct", BACKENDS[0]), ("haproxy", HAPROXY), ("rvs", RVS)];
    let cases = [
        ("close", "/", true),
        ("keepalive", "/", false),
        ("bulk", "/bulk", false),
    ];
    let mut samples: BTreeMap<(&str, &str), Vec<Sample>> = BTreeMap::new();
    for round in 0..rounds {
        eprintln!("round {}/{rounds}", round + 1);
        for (case, path, close) in cases {
            let c = if case == "bulk" { 1 } else { conns };
            for (name, target) in targets {
                samples
                    .entry((case, name))
                    .or_default()
                    .push(wrk(target, path, close, c, seconds));
            }
        }
    }
    // New-connection cost with 10 vs 10,000 services configured.
    drop(_rvsd);
    let mut scale: BTreeMap<usize, Vec<f64>> = BTreeMap::new();
    for round in 0..rounds.min(3) {
        for n in [10usize, 10_000] {
            eprintln!("services round {}: {n} services", round + 1);
            let (p, _s) = rvsd(&dir, n - 1);
            scale
                .entry(n)
                .or_default()
                .push(wrk(RVS, "/", true, conns, seconds).rps);
            drop(p);
        }
    }

    let get = |case: &str, name: &str, f: fn(&Sample) -> f64| {
        let mut v: Vec<f64> = samples[&(case, name)].iter().map(f).collect();
        median(&mut v)
    };
    println!(
        "\nuserspace forwarding, medians of {rounds} interleaved rounds of {seconds} s, {conns} connections (bulk: 1)"
    );
    println!("| case | direct | haproxy | rvs | rvs / haproxy | goal |");
    println!("|---|---|---|---|---|---|");
    let row = |label: &str, case: &str, f: fn(&Sample) -> f64, unit: &str, goal: &str| {
        let (d, h, r) = (
            get(case, "direct", f),
            get(case, "haproxy", f),
            get(case, "rvs", f),
        );
        println!(
            "| {label} | {d:.0}{unit} | {h:.0}{unit} | {r:.0}{unit} | {:.2}× | {goal} |",
            r / h
        );
    };
    row(
        "new conns/s (Connection: close)",
        "close",
        |s| s.rps,
        "",
        "≥ 1.2×",
    );
    row("keep-alive req/s", "keepalive", |s| s.rps, "", "≥ 1.0×");
    row("p50 latency, close", "close", |s| s.p50_us, " µs", "");
    row("p99 latency, close", "close", |s| s.p99_us, " µs", "≤ 1.0×");
    row(
        "p99 latency, keep-alive",
        "keepalive",
        |s| s.p99_us,
        " µs",
        "≤ 1.0×",
    );
    let mbit = |s: &Sample| s.bytes_per_s * 8.0 / 1e6;
    row("bulk Mbit/s (64 MiB GETs)", "bulk", mbit, "", "");
    let bulk_vs_direct = get("bulk", "rvs", mbit) / get("bulk", "direct", mbit);
    println!(
        "bulk through rvs vs direct: {:.0} % (goal ≥ 90 %)",
        bulk_vs_direct * 100.0
    );
    let mut s10 = scale.remove(&10).unwrap_or_default();
    let mut s10k = scale.remove(&10_000).unwrap_or_default();
    let (a, b) = (median(&mut s10), median(&mut s10k));
    println!(
        "new conns/s with 10 services: {a:.0}; with 10,000: {b:.0}; cost ratio {:.3} (goal within 5 %)",
        a / b
    );
    let _ = std::fs::remove_dir_all(&dir);
}
