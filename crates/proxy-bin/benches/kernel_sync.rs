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

const ENDPOINTS: usize = 10;

fn vip(i: usize) -> String {
    let n = i + 1;
    format!("10.96.{}.{}", n / 256, n % 256)
}

fn endpoint(i: usize, j: usize) -> String {
    format!("10.{}.{}.{}", 100 + j, i / 256, i % 256)
}

/// The cluster as `kubectl get -o json` prints a List.
fn manifests(n: usize) -> String {
    let mut items = vec![r#"{"kind":"Node","metadata":{"name":"node-a"}}"#.to_owned()];
    for i in 0..n {
        items.push(format!(
            r#"{{"kind":"Service","metadata":{{"name":"s{i}","namespace":"bench"}},"spec":{{"clusterIP":"{}","ports":[{{"name":"http","port":80}}]}}}}"#,
            vip(i)
        ));
        let endpoints: Vec<String> = (0..ENDPOINTS)
            .map(|j| format!(r#"{{"addresses":["{}"]}}"#, endpoint(i, j)))
            .collect();
        items.push(format!(
            r#"{{"kind":"EndpointSlice","metadata":{{"name":"s{i}-1","namespace":"bench","labels":{{"kubernetes.io/service-name":"s{i}"}}}},"addressType":"IPv4","ports":[{{"name":"http","port":8080,"protocol":"TCP"}}],"endpoints":[{}]}}"#,
            endpoints.join(",")
        ));
    }
    format!(
        r#"{{"apiVersion":"v1","kind":"List","items":[{}]}}"#,
        items.join(",\n")
    )
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
"#;

fn median(mut v: Vec<u64>) -> u64 {
    v.sort_unstable();
    v.get(v.len() / 2).copied().unwrap_or(0)
}

fn run(vm: &Vm, n: usize, script: &str) -> (u64, u64) {
    let job = VmJob::new(script)
        .binary("rvs-proxy", env!("CARGO_BIN_EXE_rvs-proxy"))
        .file("rvs/m/cluster.json", manifests(n))
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
    (get("total_ms"), get("elapsed_ms"))
}

fn main() {
    let sizes: Vec<usize> = std::env::var("RVS_BENCH_SIZES")
        .unwrap_or_else(|_| "1000,10000".into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    let rounds: usize = std::env::var("RVS_BENCH_ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(3);
    let Some(vm) = Vm::or_skip("kernel_sync bench") else {
        return;
    };
    println!(
        "cold sync of N services x {ENDPOINTS} endpoints, real kernel IPVS ({}) under TCG, median of {rounds} interleaved rounds, fresh VM per run",
        vm.kernel_release()
    );
    println!(
        "{:>7} {:>12} {:>12} {:>16} {:>8}",
        "N", "ipvsadm -R", "rvs-proxy", "rvs sync work", "ratio"
    );
    for n in sizes {
        let (mut ipvsadm, mut rvs, mut work) = (Vec::new(), Vec::new(), Vec::new());
        for round in 0..rounds {
            // Alternate which tool goes first in each round.
            let order = if round % 2 == 0 {
                [true, false]
            } else {
                [false, true]
            };
            for is_rvs in order {
                if is_rvs {
                    let (total, w) = run(&vm, n, RVS);
                    rvs.push(total);
                    work.push(w);
                } else {
                    ipvsadm.push(run(&vm, n, IPVSADM).0);
                }
            }
        }
        let (i, r, w) = (median(ipvsadm), median(rvs), median(work));
        println!(
            "{n:>7} {i:>10} ms {r:>10} ms {w:>13} ms {:>7.1}x",
            i as f64 / r.max(1) as f64
        );
    }
}
