//! Userspace dataplane benchmark on loopback: `wrk` against two nginx
//! backends directly, through HAProxy 2.6 (`mode tcp`, `balance
//! roundrobin`) and through `rvsd` (rr), in interleaved rounds, printing
//! medians and ratios against HAProxy measured in the same run, with one
//! and with two threads each (HAProxy `nbthread`, rvsd `--workers`):
//! new connections/s (`Connection: close`), keep-alive requests/s, p50/p99
//! latency, bulk transfer throughput, the same with 1,000 concurrent
//! connections, and new-connection rate with 10 vs 10,000 virtual
//! services configured in rvsd.
//!
//! Run with `cargo bench -p rvsd --bench forward`. It installs `wrk`,
//! `haproxy` and `nginx` from Debian when missing. Knobs:
//! `RVS_BENCH_ROUNDS` (default 7), `RVS_BENCH_SECONDS` per measurement
//! (default 5), `RVS_BENCH_CONNS` (default 64), `RVS_BENCH_MANY` (the
//! large case's connections, default 1,000), `RVS_BENCH_THREADS` (default
//! `1,2`).
//!
//! CPU pinning on this 2-core machine: the load generator (`wrk`, one
//! thread) runs on CPU 0; a one-thread proxy (HAProxy `nbthread 1`, rvsd
//! `--workers 1`) on CPU 1, a two-thread proxy on CPUs 0 and 1 (sharing
//! CPU 0 with `wrk`); the nginx backends (one worker each) float. HAProxy
//! and rvsd with the same thread count get the same CPUs, so the ratios
//! compare per-core efficiency. Traffic stays on 127.0.0.0/8.

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
/// HAProxy's and rvsd's address for `threads` (1 or 2).
fn haproxy_addr(threads: u32) -> String {
    format!("127.0.82.{threads}:18200")
}
fn rvs_addr(threads: u32) -> String {
    format!("127.0.83.{threads}:18300")
}

/// The CPUs a proxy with `threads` threads runs on.
fn proxy_cpus(threads: u32) -> &'static str {
    if threads == 1 { "1" } else { "0,1" }
}
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

fn spawn_pinned(cpus: Option<&str>, program: &str, args: &[&str], envs: &[(&str, &str)]) -> Proc {
    let mut cmd = match cpus {
        Some(cpus) => {
            let mut c = Command::new("taskset");
            c.args(["-c", cpus, program]);
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

/// Refuses to start while anything listens on the bench's ports: nginx
/// binds with SO_REUSEPORT, so a leftover server would silently take a
/// share of every measurement.
fn ports_free() {
    for addr in BACKENDS
        .iter()
        .copied()
        .chain([haproxy_addr(1).as_str(), haproxy_addr(2).as_str()])
        .chain([rvs_addr(1).as_str(), rvs_addr(2).as_str()])
    {
        let a: SocketAddr = addr.parse().unwrap();
        assert!(
            std::net::TcpStream::connect_timeout(&a, Duration::from_millis(200)).is_err(),
            "something already listens on {addr}: stop it first"
        );
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

fn haproxy(dir: &Path, threads: u32) -> Proc {
    let addr = haproxy_addr(threads);
    let conf = format!(
        "global\n  nbthread {threads}\n  maxconn 8000\n\
         defaults\n  mode tcp\n  timeout connect 5s\n  timeout client 60s\n  timeout server 60s\n\
         frontend fe\n  bind {addr}\n  default_backend be\n\
         backend be\n  balance roundrobin\n  server a {}\n  server b {}\n",
        BACKENDS[0], BACKENDS[1]
    );
    let path = dir.join(format!("haproxy-{threads}.cfg"));
    std::fs::write(&path, conf).unwrap();
    let p = spawn_pinned(
        Some(proxy_cpus(threads)),
        "haproxy",
        &["-f", path.to_str().unwrap()],
        &[],
    );
    wait_port(&addr);
    p
}

fn rvsd(dir: &Path, threads: u32, extra_services: usize) -> (Proc, PathBuf) {
    let socket = dir.join(format!("rvsd-{threads}-{extra_services}.sock"));
    let _ = std::fs::remove_file(&socket);
    let workers = threads.to_string();
    let lock = format!("rvs-forward-bench-{}-{threads}", std::process::id());
    let p = spawn_pinned(
        Some(proxy_cpus(threads)),
        env!("CARGO_BIN_EXE_rvsd"),
        &[
            "--admin-socket",
            socket.to_str().unwrap(),
            "--workers",
            &workers,
            "--instance-lock",
            &lock,
        ],
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
    let addr = rvs_addr(threads);
    add(addr.parse().unwrap());
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
    wait_port(&addr);
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
    // wrk holds `conns` sockets: lift the usual 1,024 descriptor limit.
    let mut cmd = Command::new("sh");
    cmd.args([
        "-c",
        "ulimit -n $(ulimit -Hn) 2>/dev/null || true; exec taskset -c 0 wrk \"$@\"",
        "wrk",
        "-t1",
        "--latency",
    ])
    .arg(format!("-c{conns}"))
    .arg(format!("-d{seconds}s"))
    .arg("--timeout")
    .arg("10s");
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

/// One measured case: a path, whether each request is a new connection,
/// and how many connections wrk keeps open.
struct Case {
    name: &'static str,
    path: &'static str,
    close: bool,
    conns: u64,
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    ensure_tools();
    ports_free();
    let rounds = env_num("RVS_BENCH_ROUNDS", 7);
    let seconds = env_num("RVS_BENCH_SECONDS", 5);
    let conns = env_num("RVS_BENCH_CONNS", 64);
    let many = env_num("RVS_BENCH_MANY", 1000);
    let threads: Vec<u32> = std::env::var("RVS_BENCH_THREADS")
        .unwrap_or_else(|_| "1,2".to_owned())
        .split(',')
        .filter_map(|t| t.trim().parse().ok())
        .filter(|t| (1..=2).contains(t))
        .collect();
    let dir = std::env::temp_dir().join(format!("rvs-forward-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let _nginx = nginx(&dir);
    let mut proxies = Vec::new();
    for &t in &threads {
        proxies.push(haproxy(&dir, t));
        proxies.push(rvsd(&dir, t, 0).0);
    }

    let cases = [
        Case {
            name: "close",
            path: "/",
            close: true,
            conns,
        },
        Case {
            name: "keepalive",
            path: "/",
            close: false,
            conns,
        },
        Case {
            name: "bulk",
            path: "/bulk",
            close: false,
            conns: 1,
        },
        Case {
            name: "close-many",
            path: "/",
            close: true,
            conns: many,
        },
        Case {
            name: "keepalive-many",
            path: "/",
            close: false,
            conns: many,
        },
    ];
    // (case, target, threads; 0 for direct) -> samples
    let mut samples: BTreeMap<(&str, &str, u32), Vec<Sample>> = BTreeMap::new();
    for round in 0..rounds {
        eprintln!("round {}/{rounds}", round + 1);
        for case in &cases {
            let mut run = |name: &'static str, t: u32, target: &str| {
                samples
                    .entry((case.name, name, t))
                    .or_default()
                    .push(wrk(target, case.path, case.close, case.conns, seconds));
            };
            run("direct", 0, BACKENDS[0]);
            for &t in &threads {
                run("haproxy", t, &haproxy_addr(t));
                run("rvs", t, &rvs_addr(t));
            }
        }
    }
    drop(proxies);
    // New-connection cost with 10 vs 10,000 services configured (one
    // worker).
    let mut scale: BTreeMap<usize, Vec<f64>> = BTreeMap::new();
    for round in 0..rounds.min(3) {
        for n in [10usize, 10_000] {
            eprintln!("services round {}: {n} services", round + 1);
            let (p, _s) = rvsd(&dir, 1, n - 1);
            scale
                .entry(n)
                .or_default()
                .push(wrk(&rvs_addr(1), "/", true, conns, seconds).rps);
            drop(p);
        }
    }

    let get = |case: &str, name: &str, t: u32, f: fn(&Sample) -> f64| {
        let t = if name == "direct" { 0 } else { t };
        let mut v: Vec<f64> = samples[&(case, name, t)].iter().map(f).collect();
        median(&mut v)
    };
    let mbit = |s: &Sample| s.bytes_per_s * 8.0 / 1e6;
    println!(
        "\nuserspace forwarding, medians of {rounds} interleaved rounds of {seconds} s; \
         {conns} connections, bulk 1, many {many}"
    );
    for &t in &threads {
        println!(
            "\n{t} thread{} (HAProxy nbthread {t}, rvsd --workers {t}, CPU {})",
            if t == 1 { "" } else { "s" },
            proxy_cpus(t)
        );
        println!("| case | direct | haproxy | rvs | rvs / haproxy | goal | met |");
        println!("|---|---|---|---|---|---|---|");
        // `higher`: whether a larger ratio is better; `goal` the bound.
        let row = |label: &str,
                   case: &str,
                   f: fn(&Sample) -> f64,
                   unit: &str,
                   higher: bool,
                   goal: Option<f64>| {
            let (d, h, r) = (
                get(case, "direct", t, f),
                get(case, "haproxy", t, f),
                get(case, "rvs", t, f),
            );
            let ratio = r / h;
            let (goal_text, met) = match goal {
                None => (String::new(), ""),
                Some(g) if higher => (format!("≥ {g:.1}×"), if ratio >= g { "yes" } else { "no" }),
                Some(g) => (format!("≤ {g:.1}×"), if ratio <= g { "yes" } else { "no" }),
            };
            println!(
                "| {label} | {d:.0}{unit} | {h:.0}{unit} | {r:.0}{unit} | {ratio:.2}× | {goal_text} | {met} |"
            );
        };
        row(
            "new conns/s (Connection: close)",
            "close",
            |s| s.rps,
            "",
            true,
            Some(1.2),
        );
        row(
            "keep-alive req/s",
            "keepalive",
            |s| s.rps,
            "",
            true,
            Some(1.1),
        );
        row(
            "p50 latency, close",
            "close",
            |s| s.p50_us,
            " µs",
            false,
            None,
        );
        row(
            "p99 latency, close",
            "close",
            |s| s.p99_us,
            " µs",
            false,
            Some(1.0),
        );
        row(
            "p99 latency, keep-alive",
            "keepalive",
            |s| s.p99_us,
            " µs",
            false,
            Some(1.0),
        );
        row("bulk Mbit/s (64 MiB GETs)", "bulk", mbit, "", true, None);
        row(
            &format!("new conns/s, {many} connections"),
            "close-many",
            |s| s.rps,
            "",
            true,
            Some(1.2),
        );
        row(
            &format!("keep-alive req/s, {many} connections"),
            "keepalive-many",
            |s| s.rps,
            "",
            true,
            Some(1.1),
        );
        row(
            &format!("p99 latency, close, {many} connections"),
            "close-many",
            |s| s.p99_us,
            " µs",
            false,
            Some(1.0),
        );
        row(
            &format!("p99 latency, keep-alive, {many} connections"),
            "keepalive-many",
            |s| s.p99_us,
            " µs",
            false,
            Some(1.0),
        );
        let bulk_vs_direct = get("bulk", "rvs", t, mbit) / get("bulk", "direct", t, mbit);
        println!(
            "bulk through rvs vs direct: {:.0} % (goal ≥ 100 %: {})",
            bulk_vs_direct * 100.0,
            if bulk_vs_direct >= 1.0 { "yes" } else { "no" }
        );
    }
    let mut s10 = scale.remove(&10).unwrap_or_default();
    let mut s10k = scale.remove(&10_000).unwrap_or_default();
    let (a, b) = (median(&mut s10), median(&mut s10k));
    println!(
        "\nnew conns/s with 10 services: {a:.0}; with 10,000: {b:.0}; cost ratio {:.3} (goal within 5 %)",
        a / b
    );
    let _ = std::fs::remove_dir_all(&dir);
}
