//! Restore benchmark on the real kernel (in the test VM): `ipvsadm -R`
//! against `rvsadm -R` of the same file of N services × 10 real servers,
//! in one VM boot, interleaved rounds, printed as medians and their
//! ratio. Run with `cargo bench -p rvsadm --bench restore`
//! (`RVS_BENCH_SIZES` overrides the default `1000,10000`,
//! `RVS_BENCH_ROUNDS` the default 3 rounds; `RVS_BENCH_VERBOSE=1` prints
//! the VM's output).
//!
//! Every restore runs in a network namespace of its own, so each starts
//! from a fresh IPVS state: the kernel keeps deleted real servers in a
//! trash list it scans on every add, so a restore after flushing a big
//! table would pay for the previous one. The namespaces stay until the
//! VM powers off (tearing one down would run in the background of the
//! next measurement). The VM runs under TCG (software CPU emulation), so
//! absolute times are several times slower than on hardware; the ratio
//! is what compares.

#![allow(
    clippy::print_stdout,
    clippy::print_stderr,
    clippy::unwrap_used,
    clippy::expect_used
)]

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use rvs_testrig::{Vm, VmJob};

const DESTS: usize = 10;

fn restore_file(n: usize) -> String {
    let mut out = String::new();
    for i in 0..n {
        let k = i + 1;
        let vip = format!("10.96.{}.{}", k / 256, k % 256);
        let _ = writeln!(out, "-A -t {vip}:80 -s rr");
        for j in 0..DESTS {
            let _ = writeln!(
                out,
                "-a -t {vip}:80 -r 10.{}.{}.{}:8080 -m -w 1",
                100 + j,
                i / 256,
                i % 256
            );
        }
    }
    out
}

/// Runs one restore per line of `$PLAN` ("size tool"), each in a new
/// namespace, timed inside the namespace (so entering it is not counted)
/// with the guest's monotonic clock: nanoseconds from `date +%s%N` where
/// busybox has it, else `/proc/uptime`'s 10 ms. iproute2's `ip` goes by
/// its full path: busybox's ash would run its own `ip` applet, which has
/// no `netns`.
const SCRIPT: &str = r#"
set -e
IP=/usr/sbin/ip
mkdir -p /tmp/rv; ln -sf /rvs/bin/rvsadm /tmp/rv/ipvsadm
cat > /tmp/timed <<'EOS'
#!/bin/sh
# timed BIN FILE: the microseconds `BIN -R < FILE` takes; its exit code.
if date +%s%N | grep -q '^[0-9]*$'; then
    us() { echo $(( $(date +%s%N) / 1000 )); }
else
    us() { awk '{printf "%d\n", $1 * 1000000}' /proc/uptime; }
fi
t0=$(us); "$1" -R < "$2"; rc=$?; t1=$(us)
echo $((t1 - t0)); exit $rc
EOS
chmod +x /tmp/timed
i=0
echo "$PLAN" | while read -r size tool; do
    [ -n "$size" ] || continue
    i=$((i + 1)); ns=bench$i
    $IP netns add $ns
    # Until lo is up the namespace has no local routing table, and the
    # kernel refuses every real server (EINVAL: not a unicast address).
    $IP -n $ns link set lo up
    if [ "$tool" = rvsadm ]; then bin=/tmp/rv/ipvsadm; else bin=/usr/sbin/ipvsadm; fi
    sync; sleep 1
    took=$($IP netns exec $ns /tmp/timed $bin /rvs/rules-$size)
    n=$($IP netns exec $ns /usr/sbin/ipvsadm -S -n | grep -c '^-a')
    echo "result $size $tool $took $n"
done
"#;

fn median(mut v: Vec<u64>) -> u64 {
    v.sort_unstable();
    v.get(v.len() / 2).copied().unwrap_or(0)
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
    let Some(vm) = Vm::or_skip("restore bench") else {
        return;
    };
    // Interleaved: in each round both tools restore each size, and which
    // tool goes first alternates.
    let mut plan = String::new();
    for round in 0..rounds {
        for &n in &sizes {
            let tools = if round % 2 == 0 {
                ["ipvsadm", "rvsadm"]
            } else {
                ["rvsadm", "ipvsadm"]
            };
            for tool in tools {
                let _ = writeln!(plan, "{n} {tool}");
            }
        }
    }
    let mut job = VmJob::new(SCRIPT)
        .binary("rvsadm", env!("CARGO_BIN_EXE_rvsadm"))
        .env("PLAN", &plan)
        .memory_mib(3072)
        .timeout(Duration::from_secs(3600));
    for &n in &sizes {
        job = job.file(&format!("rvs/rules-{n}"), restore_file(n));
    }
    let out = vm.run(&job).expect("VM run");
    if !out.success() || std::env::var_os("RVS_BENCH_VERBOSE").is_some() {
        eprintln!("{}", out.output);
    }
    if !out.success() {
        std::process::exit(1);
    }
    let mut times: BTreeMap<(usize, String), Vec<u64>> = BTreeMap::new();
    for line in out.output.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        if let ["result", size, tool, us, dests] = f[..] {
            let (size, us, dests): (usize, u64, usize) = (
                size.parse().unwrap(),
                us.parse().unwrap(),
                dests.parse().unwrap(),
            );
            assert_eq!(dests, size * DESTS, "{tool} restored {dests} real servers");
            times.entry((size, tool.to_owned())).or_default().push(us);
        }
    }
    println!(
        "restore of N services x {DESTS} real servers, real kernel IPVS ({}) under TCG, median of {rounds} interleaved rounds, fresh netns per restore",
        vm.kernel_release()
    );
    println!(
        "{:>7} {:>14} {:>14} {:>7}",
        "N", "ipvsadm -R", "rvsadm -R", "ratio"
    );
    for n in sizes {
        let get = |tool: &str| {
            times
                .get(&(n, tool.to_owned()))
                .cloned()
                .unwrap_or_default()
        };
        let (i, r) = (get("ipvsadm"), get("rvsadm"));
        assert_eq!((i.len(), r.len()), (rounds, rounds), "missing results");
        let (mi, mr) = (median(i.clone()), median(r.clone()));
        println!(
            "{n:>7} {:>11.1} ms {:>11.1} ms {:>6.1}x   (ipvsadm {i:?} us, rvsadm {r:?} us)",
            mi as f64 / 1000.0,
            mr as f64 / 1000.0,
            mi as f64 / mr.max(1) as f64
        );
    }
}
