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

/// Milliseconds from the guest's monotonic clock, read around a command.
const SCRIPT: &str = r#"
set -e
ms() { awk '{printf "%d\n", $1 * 1000}' /proc/uptime; }
ipvsadm -C
t0=$(ms); ipvsadm -R < /rvs/bench.rules; t1=$(ms)
echo "ipvsadm_ms $((t1 - t0))"
echo "ipvsadm_services $(ipvsadm -S -n | grep -c '^-A')"
ipvsadm -C
t0=$(ms); rvs-proxy --manifests /rvs/m --hostname-override node-a --once 2>/tmp/log; t1=$(ms)
echo "rvs_ms $((t1 - t0))"
echo "rvs_services $(ipvsadm -S -n | grep -c '^-A')"
echo "rvs_rss_kb $(grep -o 'max_rss_kb=[0-9]*' /tmp/log | tail -1)"
grep -o "elapsed_ms=[0-9]*" /tmp/log | tail -1; grep synced /tmp/log
"#;

fn main() {
    let sizes: Vec<usize> = std::env::var("RVS_BENCH_SIZES")
        .unwrap_or_else(|_| "1000,10000".into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    let Some(vm) = Vm::or_skip("kernel_sync bench") else {
        return;
    };
    println!(
        "cold sync of N services x {ENDPOINTS} endpoints, real kernel IPVS ({}) under TCG",
        vm.kernel_release()
    );
    println!(
        "{:>7} {:>12} {:>12} {:>16} {:>8}",
        "N", "ipvsadm -R", "rvs-proxy", "rvs sync work", "ratio"
    );
    for n in sizes {
        let job = VmJob::new(SCRIPT)
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
        let (ipvsadm, rvs, work) = (get("ipvsadm_ms"), get("rvs_ms"), get("elapsed_ms"));
        assert_eq!(get("ipvsadm_services") as usize, n, "{}", out.output);
        assert_eq!(get("rvs_services") as usize, n, "{}", out.output);
        if std::env::var_os("RVS_BENCH_VERBOSE").is_some() {
            eprintln!("{}", out.output);
        }
        println!(
            "{n:>7} {:>10} ms {:>10} ms {:>13} ms {:>7.1}x",
            ipvsadm,
            rvs,
            work,
            ipvsadm as f64 / rvs.max(1) as f64
        );
    }
}
