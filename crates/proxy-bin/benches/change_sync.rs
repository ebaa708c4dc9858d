//! `rvs-proxy` on the userspace dataplane, natively (no VM, no root): the
//! cold sync of N Services × 10 endpoints from a manifests directory, the
//! daemon's RSS once converged, and the latency of one endpoint change —
//! from the manifest file being rewritten to the new real server showing
//! through the admin socket, as `rvsadm --target` would see it.
//!
//! The change alternates between adding and removing an 11th endpoint of
//! the last Service, in its own file, as a controller rewriting one
//! object would. Sizes from `RVS_BENCH_SIZES` (default `1000,10000`),
//! changes per size from `RVS_BENCH_CHANGES` (default 20). Medians.
//!
//! The peer for this measurement is the kernel bench (`kernel_sync`),
//! which compares the cold sync with `ipvsadm -R`; here the goal is
//! absolute: one change visible within 10 ms of the event.
//! `RVS_PROXY_BIN` runs another build of `rvs-proxy` (to compare two).

#![allow(clippy::print_stdout, clippy::expect_used)]

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rvs_admin::AdminClient;
use rvs_model::admin::Admin;
use rvs_model::{Protocol, ServiceKey};
use synthetic::{NEW_ENDPOINT, env_count, manifests, sizes};

mod synthetic;

fn vip(i: usize) -> String {
    let n = i + 1;
    format!("127.96.{}.{}", n / 256, n % 256)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

struct Daemon(Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Waits until `check` holds, polling as fast as the admin socket answers;
/// `None` after `limit`.
fn until(limit: Duration, mut check: impl FnMut() -> bool) -> Option<Duration> {
    let start = Instant::now();
    while start.elapsed() < limit {
        if check() {
            return Some(start.elapsed());
        }
    }
    None
}

struct Result {
    cold: Duration,
    sync_ms: String,
    rss_mib: f64,
    change_ms: f64,
    worst_ms: f64,
}

fn run(n: usize, changes: usize, dir: &Path) -> Result {
    let m = dir.join("m");
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(&m).expect("bench dir");
    std::fs::write(m.join("all.json"), manifests(0..n - 1, true, false, vip)).expect("write");
    let last = m.join("last.json");
    std::fs::write(&last, manifests(n - 1..n, false, false, vip)).expect("write");
    let socket = dir.join("admin.sock");
    let started = Instant::now();
    let bin =
        std::env::var("RVS_PROXY_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_rvs-proxy").into());
    // One forwarding worker: a listener per worker per virtual server, and
    // 2 × 10,000 listeners would exceed the 20,000 open files allowed here.
    let mut child = Command::new(bin)
        .args(["--manifests", &m.display().to_string()])
        .args(["--dataplane", "userspace", "--hostname-override", "node-a"])
        .args(["--workers", "1"])
        .args(["--admin-socket", &socket.display().to_string()])
        .args(["--metrics-bind-address", "", "--healthz-bind-address", ""])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start rvs-proxy");
    let stderr = child.stderr.take().expect("stderr");
    let pid = child.id();
    let daemon = Daemon(child);
    // The first "synced" line ends the cold sync; later ones are drained
    // so the daemon never blocks on a full pipe.
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr)
            .lines()
            .map_while(std::result::Result::ok)
        {
            if line.contains("synced") {
                let _ = tx.send(line);
            }
        }
    });
    let first = rx
        .recv_timeout(Duration::from_secs(300))
        .expect("cold sync within 300 s");
    let cold = started.elapsed();
    let sync_ms = first
        .split_whitespace()
        .find_map(|w| w.strip_prefix("elapsed_ms="))
        .unwrap_or("?")
        .to_owned();
    std::thread::sleep(Duration::from_millis(300));
    let rss_mib = rss_kib(pid) as f64 / 1024.0;
    let mut client = AdminClient::connect(&socket).expect("admin socket");
    let key = ServiceKey::Addr {
        protocol: Protocol::Tcp,
        addr: format!("{}:80", vip(n - 1)).parse().expect("vip"),
    };
    let new: std::net::IpAddr = NEW_ENDPOINT.parse().expect("ip");
    let mut seen = Vec::new();
    for round in 0..changes {
        let add = round % 2 == 0;
        std::fs::write(&last, manifests(n - 1..n, false, add, vip)).expect("write");
        let t = until(Duration::from_secs(30), || {
            client
                .destinations(&key)
                .is_ok_and(|d| d.iter().any(|x| x.destination.addr.ip() == new) == add)
        })
        .expect("change applied within 30 s");
        seen.push(t.as_secs_f64() * 1e3);
        // Let the daemon settle (and its log drain) between changes.
        std::thread::sleep(Duration::from_millis(150));
        while rx.try_recv().is_ok() {}
    }
    drop(daemon);
    let worst_ms = seen.iter().copied().fold(0.0, f64::max);
    Result {
        cold,
        sync_ms,
        rss_mib,
        change_ms: median(seen),
        worst_ms,
    }
}

fn main() {
    let sizes = sizes();
    let changes = env_count("RVS_BENCH_CHANGES", 20);
    let dir = std::env::temp_dir().join(format!("rvs-change-sync-{}", std::process::id()));
    println!(
        "{:>8} {:>14} {:>12} {:>10} {:>16} {:>14}",
        "services", "cold (wall)", "sync work", "RSS", "change (median)", "change (max)"
    );
    for n in sizes {
        let r = run(n, changes, &dir);
        println!(
            "{:>8} {:>12.0}ms {:>10}ms {:>7.0}MiB {:>14.1}ms {:>12.1}ms",
            n,
            r.cold.as_secs_f64() * 1e3,
            r.sync_ms,
            r.rss_mib,
            r.change_ms,
            r.worst_ms
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}
