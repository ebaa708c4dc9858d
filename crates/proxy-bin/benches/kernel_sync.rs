//! Cold-sync benchmark on the real kernel (in the test VM): N Services ×
//! 10 endpoints programmed by `rvs-proxy --once` from manifests, against
//! `ipvsadm -R` of the same virtual servers, measured in the same VM boot
//! and printed as times and ratios. Run with
//! `cargo bench -p rvs-proxy-bin --bench kernel_sync` (`RVS_BENCH_SIZES`
//! overrides the default `1000,10000`).
//!
//! The VM runs under TCG (software CPU emulation), so absolute times are
//! several times slower than on hardware; the ratio is what compares.

#![allow(
    clippy::print_stdout,
    clippy::print_stderr,
    clippy::unwrap_used,
    clippy::expect_used
)]

use std::fmt::Write as _;
use std::time::Duration;

use rvs_testrig::{Vm, VmJob};
use synthetic::{ENDPOINTS, NEW_ENDPOINT, endpoint, env_count, manifests, sizes};

mod synthetic;

fn vip(i: usize) -> String {
    let n = i + 1;
    format!("10.96.{}.{}", n / 256, n % 256)
}

fn restore_file(n: usize) -> String {
    let mut out = String::new();
    for i in 0..n {
        let _ = writeln!(out, "-A -t {}:80 -s rr", vip(i));
        for j in 0..ENDPOINTS {
            let _ = writeln!(
                out,
                "-a -t {}:80 -r {}:8080 -m -w 1",
                vip(i),
                endpoint(i, j)
            );
        }
    }
    out
}

/// Times from the guest's monotonic clock around each tool. Each tool
/// runs in its own fresh VM: after a flush, the kernel keeps deleted real
/// servers in a trash list that it scans linearly on every add, so
/// whichever tool ran second on a reused kernel would pay for the first.
const IPVSADM: &str = r#"
set -e
ms() { awk '{printf "%d\n", $1 * 1000}' /proc/uptime; }
t0=$(ms); ipvsadm -R < /rvs/bench.rules; t1=$(ms)
echo "total_ms $((t1 - t0))"
echo "services $(ipvsadm -S -n | grep -c '^-A')"
"#;

const RVS: &str = r#"
set -e
ms() { awk '{printf "%d\n", $1 * 1000}' /proc/uptime; }
t0=$(ms); rvs-proxy --manifests /rvs/m --hostname-override node-a --once 2>/tmp/log; t1=$(ms)
echo "total_ms $((t1 - t0))"
echo "services $(ipvsadm -S -n | grep -c '^-A')"
grep -o "elapsed_ms=[0-9]*" /tmp/log | tail -1
grep synced /tmp/log
# One endpoint change on the converged node, with the proxy running.
rvs-proxy --manifests /rvs/m --hostname-override node-a 2>/tmp/daemon.log &
pid=$!
while ! grep -q synced /tmp/daemon.log; do sleep 0.05; done
echo "rss_kb $(awk '/VmRSS/{print $2}' /proc/$pid/status)"
t0=$(ms); cp /rvs/last-changed.json /rvs/m/last.json
until ipvsadm -L -n -t "$LAST_VIP:80" | grep -q "$NEW_ENDPOINT"; do :; done; t1=$(ms)
echo "change_ms $((t1 - t0))"
sleep 0.5
grep "synced full=false" /tmp/daemon.log | tail -1 | grep -o "elapsed_ms=[0-9]*" | sed 's/elapsed_ms=/change_sync_ms /'
grep synced /tmp/daemon.log
kill $pid
"#;

fn median(mut v: Vec<u64>) -> u64 {
    v.sort_unstable();
    v.get(v.len() / 2).copied().unwrap_or(0)
}

/// One run's numbers: total time, sync work, and for rvs the change
/// latency, the partial sync's own time and the daemon's RSS.
#[derive(Default)]
struct Run {
    total_ms: u64,
    work_ms: u64,
    change_ms: u64,
    change_sync_ms: u64,
    rss_kb: u64,
}

fn run(vm: &Vm, n: usize, script: &str) -> Run {
    let job = VmJob::new(script)
        .binary("rvs-proxy", env!("CARGO_BIN_EXE_rvs-proxy"))
        .env("LAST_VIP", &vip(n - 1))
        .env("NEW_ENDPOINT", NEW_ENDPOINT)
        .file("rvs/m/cluster.json", manifests(0..n - 1, true, false, vip))
        .file("rvs/m/last.json", manifests(n - 1..n, false, false, vip))
        .file(
            "rvs/last-changed.json",
            manifests(n - 1..n, false, true, vip),
        )
        .file("rvs/bench.rules", restore_file(n))
        .memory_mib(2048)
        .timeout(Duration::from_secs(1800));
    let out = vm.run(&job).expect("VM run");
    if !out.success() {
        eprintln!("bench script failed:\n{}", out.output);
        std::process::exit(1);
    }
    if std::env::var_os("RVS_BENCH_VERBOSE").is_some() {
        eprintln!("{}", out.output);
    }
    let get = |key: &str| -> u64 {
        out.output
            .lines()
            .find_map(|l| {
                l.strip_prefix(key)
                    .map(|v| v.trim_start_matches([' ', '=']).trim().to_owned())
            })
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    assert_eq!(get("services") as usize, n, "{}", out.output);
    Run {
        total_ms: get("total_ms"),
        work_ms: get("elapsed_ms"),
        change_ms: get("change_ms"),
        change_sync_ms: get("change_sync_ms"),
        rss_kb: get("rss_kb"),
    }
}

fn main() {
    let sizes = sizes();
    let rounds = env_count("RVS_BENCH_ROUNDS", 3);
    let Some(vm) = Vm::or_skip("kernel_sync bench") else {
        return;
    };
    println!(
        "cold sync of N services x {ENDPOINTS} endpoints, real kernel IPVS ({}) under TCG, median of {rounds} interleaved rounds, fresh VM per run",
        vm.kernel_release()
    );
    println!(
        "{:>7} {:>12} {:>12} {:>14} {:>7} {:>14} {:>14} {:>9}",
        "N",
        "ipvsadm -R",
        "rvs-proxy",
        "rvs sync work",
        "ratio",
        "1 change seen",
        "change sync",
        "RSS"
    );
    for n in sizes {
        let (mut ipvsadm, mut rvs, mut work) = (Vec::new(), Vec::new(), Vec::new());
        let (mut change, mut change_sync, mut rss) = (Vec::new(), Vec::new(), Vec::new());
        for round in 0..rounds {
            // Alternate which tool goes first in each round.
            let order = if round % 2 == 0 {
                [true, false]
            } else {
                [false, true]
            };
            for is_rvs in order {
                if is_rvs {
                    let r = run(&vm, n, RVS);
                    rvs.push(r.total_ms);
                    work.push(r.work_ms);
                    change.push(r.change_ms);
                    change_sync.push(r.change_sync_ms);
                    rss.push(r.rss_kb);
                } else {
                    ipvsadm.push(run(&vm, n, IPVSADM).total_ms);
                }
            }
        }
        let (i, r, w) = (median(ipvsadm), median(rvs), median(work));
        println!(
            "{n:>7} {i:>9} ms {r:>9} ms {w:>11} ms {:>6.1}x {:>11} ms {:>11} ms {:>5} MiB",
            i as f64 / r.max(1) as f64,
            median(change),
            median(change_sync),
            median(rss) / 1024
        );
    }
}
