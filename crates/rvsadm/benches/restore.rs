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
/// no `netns`. Each result line also carries the restore's user and
/// system CPU time, which says where the time goes: parsing and talking
/// in user space, or the kernel's netlink and IPVS work.
const SCRIPT: &str = r#"
set -e
IP=/usr/sbin/ip
mkdir -p /tmp/rv; ln -sf /rvs/bin/rvsadm /tmp/rv/ipvsadm
cat > /tmp/timed <<'EOS'
#!/bin/sh
# timed BIN FILE: the microseconds `BIN -R < FILE` takes, and its exit code.
if date +%s%N | grep -q '^[0-9]*$'; then
    us() { echo $(( $(date +%s%N) / 1000 )); }
else
    us() { awk '{printf "%d\n", $1 * 1000000}' /proc/uptime; }
fi
# Then the CPU milliseconds it spent in user space and in the kernel
# (the shell's `times` for its children, before and after).
t0=$(us); times > /tmp/times0; "$1" -R < "$2"; rc=$?; times > /tmp/times1; t1=$(us)
cpu=$(awk 'FNR == 2 {
    split($1, u, "m"); split($2, k, "m")
    user = (u[1] * 60 + u[2]) * 1000; sys = (k[1] * 60 + k[2]) * 1000
    if (FNR == NR) { u0 = user; k0 = sys } else { printf "%d %d\n", user - u0, sys - k0 }
}' /tmp/times0 /tmp/times1)
echo "$((t1 - t0)) $cpu"; exit $rc
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

/// One restore: wall-clock microseconds, user and system CPU milliseconds.
type Took = (u64, u64, u64);

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
    let mut times: BTreeMap<(usize, String), Vec<Took>> = BTreeMap::new();
    for line in out.output.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        if let ["result", size, tool, us, user, sys, dests] = f[..] {
            let (size, dests): (usize, usize) = (size.parse().unwrap(), dests.parse().unwrap());
            assert_eq!(dests, size * DESTS, "{tool} restored {dests} real servers");
            times.entry((size, tool.to_owned())).or_default().push((
                us.parse().unwrap(),
                user.parse().unwrap(),
                sys.parse().unwrap(),
            ));
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
    let mut cpu = String::new();
    for n in sizes {
        let get = |tool: &str| {
            times
                .get(&(n, tool.to_owned()))
                .cloned()
                .unwrap_or_default()
        };
        let (i, r) = (get("ipvsadm"), get("rvsadm"));
        assert_eq!((i.len(), r.len()), (rounds, rounds), "missing results");
        let wall = |v: &[Took]| v.iter().map(|t| t.0).collect::<Vec<_>>();
        let (iw, rw) = (wall(&i), wall(&r));
        let (mi, mr) = (median(iw.clone()), median(rw.clone()));
        println!(
            "{n:>7} {:>11.1} ms {:>11.1} ms {:>6.1}x   (ipvsadm {iw:?} us, rvsadm {rw:?} us)",
            mi as f64 / 1000.0,
            mr as f64 / 1000.0,
            mi as f64 / mr.max(1) as f64
        );
        for (tool, v) in [("ipvsadm", &i), ("rvsadm", &r)] {
            let user = median(v.iter().map(|t| t.1).collect());
            let sys = median(v.iter().map(|t| t.2).collect());
            let _ = writeln!(
                cpu,
                "{n:>7} {tool:>8}: user {user:>6} ms, system {sys:>6} ms (medians)"
            );
        }
    }
    println!("CPU time of the restoring process:\n{cpu}");
}
