//! Differential test: rvsadm against the real ipvsadm 1.31 on a real
//! kernel.
//!
//! Each batch boots the IPVS VM once and runs the same scripted command
//! sequence twice on a cleared kernel: phase `A` through `ipvsadm`, phase
//! `B` through `rvsadm`. After every step both tools list the state in
//! every variant (`-S -n`, `-S`, `-L`, `-Ln`, `--stats`, `--rate`,
//! `--thresholds`, `--persistent-conn`, `--exact`, `--nosort`,
//! `--tun-info`, `--timeout`, `--daemon`, `-c`). The test then requires,
//! byte for byte: each step's stdout, stderr and exit code equal in both
//! phases; every listing equal between the phases; and, within a phase,
//! rvsadm's listings equal to ipvsadm's. Both tools run under the name
//! `ipvsadm` (rvsadm through a symlink on `PATH`), since messages quote
//! the program name. Names come from the job's `/etc/hosts` and
//! `/etc/services` with `hosts: files` in `/etc/nsswitch.conf`, so
//! ipvsadm's resolver and rvsadm's file parser see the same data.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::collections::BTreeMap;
use std::fmt::Write as _;

use rvs_testrig::{Vm, VmJob};

const HOSTS: &str = "127.0.0.1 localhost\n::1 localhost ip6-localhost\n\
10.1.0.1 web1.example.org web1\n10.1.0.2 a-rather-long-real-server-name.example.org\n\
10.0.0.3 vip-three\nfd00::5 six-five\n";
const NSSWITCH: &str = "hosts: files\nservices: files\nprotocols: files\n";

/// Listing variants compared after every step.
const LISTINGS: &[&str] = &[
    "-S -n",
    "-S",
    "-L",
    "-Ln",
    "-Ln --stats",
    "-L --stats --exact",
    "-Ln --rate",
    "-Ln --thresholds",
    "-L --persistent-conn",
    "-Ln --nosort",
    "-Ln --sort",
    "-Ln --tun-info",
    "-L --timeout",
    "-L --daemon",
    "-Lnc",
    "-Lc --persistent-conn",
];

/// One step: arguments (shell words) and optional stdin.
struct Step {
    args: &'static str,
    stdin: Option<&'static str>,
}

const fn step(args: &'static str) -> Step {
    Step { args, stdin: None }
}

const fn with_stdin(args: &'static str, stdin: &'static str) -> Step {
    Step {
        args,
        stdin: Some(stdin),
    }
}

fn script(steps: &[Step]) -> String {
    let mut s = String::from(
        "mkdir -p /tmp/rv /tmp/res\nln -sf /rvs/bin/rvsadm /tmp/rv/ipvsadm\n\
         REAL=/usr/sbin/ipvsadm\n\
         run() { # phase step name tool args...\n\
           p=$1 n=$2 k=$3 t=$4; shift 4\n\
           if [ \"$t\" = rvs ]; then PATH=/tmp/rv:$PATH ipvsadm \"$@\" >/tmp/res/$p.$n.$k.out 2>/tmp/res/$p.$n.$k.err </tmp/res/stdin; else PATH=/usr/sbin:$PATH ipvsadm \"$@\" >/tmp/res/$p.$n.$k.out 2>/tmp/res/$p.$n.$k.err </tmp/res/stdin; fi\n\
           echo $? >/tmp/res/$p.$n.$k.rc\n\
         }\n\
         listings() { # phase step\n",
    );
    for (i, l) in LISTINGS.iter().enumerate() {
        let _ = writeln!(
            s,
            "  : >/tmp/res/stdin; run $1 $2 real-l{i} real {l}; run $1 $2 rvs-l{i} rvs {l}"
        );
    }
    s.push_str("}\n");
    for (phase, tool) in [("A", "real"), ("B", "rvs")] {
        let _ = writeln!(s, "$REAL -C; $REAL --set 900 120 300");
        for (n, st) in steps.iter().enumerate() {
            match st.stdin {
                Some(_) => {
                    let _ = writeln!(s, "cp /tmp/in/{n} /tmp/res/stdin");
                }
                None => s.push_str(": >/tmp/res/stdin\n"),
            }
            let _ = writeln!(s, "run {phase} {n} cmd {tool} {}", st.args);
            let _ = writeln!(s, "listings {phase} {n}");
        }
    }
    s.push_str(
        "cd /tmp/res\nfor f in *; do printf '@@FILE %s@@\\n' \"$f\"; cat \"$f\"; printf '\\n@@END@@\\n'; done\n",
    );
    s
}

fn parse_files(output: &str) -> BTreeMap<String, String> {
    let mut files = BTreeMap::new();
    let mut rest = output;
    while let Some(start) = rest.find("@@FILE ") {
        let after = &rest[start + 7..];
        let Some(name_end) = after.find("@@\n") else {
            break;
        };
        let name = after[..name_end].to_owned();
        let body = &after[name_end + 3..];
        let Some(end) = body.find("\n@@END@@\n") else {
            break;
        };
        files.insert(name, body[..end].to_owned());
        rest = &body[end + 9..];
    }
    files
}

fn run_batch(name: &str, steps: &[Step]) {
    let Some(vm) = Vm::or_skip(name) else {
        return;
    };
    let mut job = VmJob::new(script(steps))
        .binary("rvsadm", env!("CARGO_BIN_EXE_rvsadm"))
        .file("/etc/hosts", HOSTS)
        .file("/etc/nsswitch.conf", NSSWITCH)
        .timeout(std::time::Duration::from_secs(900));
    for (n, st) in steps.iter().enumerate() {
        if let Some(input) = st.stdin {
            job = job.file(&format!("/tmp/in/{n}"), input);
        }
    }
    let out = vm.run(&job).unwrap();
    let files = parse_files(&out.output);
    assert!(
        !files.is_empty(),
        "no results from the VM:\n{}",
        out.console
    );
    let mut failures = Vec::new();
    let get = |key: &str| {
        files
            .get(key)
            .cloned()
            .unwrap_or_else(|| format!("<missing {key}>"))
    };
    for (n, st) in steps.iter().enumerate() {
        for ext in ["rc", "out", "err"] {
            let (a, b) = (
                get(&format!("A.{n}.cmd.{ext}")),
                get(&format!("B.{n}.cmd.{ext}")),
            );
            if a != b {
                failures.push(format!(
                    "step {n} `ipvsadm {}` {ext} differs\n--- ipvsadm\n{a}\n--- rvsadm\n{b}",
                    st.args
                ));
            }
        }
        for (i, l) in LISTINGS.iter().enumerate() {
            for ext in ["rc", "out", "err"] {
                let reference = get(&format!("A.{n}.real-l{i}.{ext}"));
                for key in [
                    format!("A.{n}.rvs-l{i}.{ext}"),
                    format!("B.{n}.real-l{i}.{ext}"),
                    format!("B.{n}.rvs-l{i}.{ext}"),
                ] {
                    let other = get(&key);
                    if other != reference {
                        failures.push(format!(
                            "after step {n} `ipvsadm {}`: `{l}` {ext} of {key} differs\n--- ipvsadm (phase A)\n{reference}\n--- {key}\n{other}",
                            st.args
                        ));
                    }
                }
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} differences:\n\n{}",
        failures.len(),
        failures.join("\n\n")
    );
}

#[test]
#[ignore = "needs the kernel IPVS client"]
fn services_destinations_and_errors_match_ipvsadm() {
    run_batch(
        "services_destinations_and_errors_match_ipvsadm",
        &[
            step("-A -t 10.0.0.1:80 -s rr"),
            step("-A -t 10.0.0.1:80 -s rr"),
            step("-a -t 10.0.0.1:80 -r 10.1.0.1 -m -w 3"),
            step("-a -t 10.0.0.1:80 -r 10.1.0.2:8080 -m -x 100 -y 10"),
            step("-a -t 10.0.0.1:80 -r 10.1.0.3 -g"),
            step("-a -t 10.0.0.1:80 -r 10.1.0.4 -i"),
            step("-a -t 10.0.0.1:80 -r 10.1.0.1 -m"),
            step("-e -t 10.0.0.1:80 -r 10.1.0.1 -m -w 0"),
            step("-e -t 10.0.0.1:80 -r 10.1.0.8 -m"),
            step("-d -t 10.0.0.1:80 -r 10.1.0.9"),
            step("-d -t 10.9.9.9:80 -r 10.1.0.9"),
            step("-a -t 10.9.9.9:80 -r 10.1.0.9"),
            step("-D -t 10.9.9.9:80"),
            step("-Z -t 10.9.9.9:80"),
            step("-L -t 10.9.9.9:80"),
            step("-L -t 10.0.0.1:80"),
            step("-Ln -t 10.0.0.1:http --stats"),
            step("-A -u 10.0.0.2:53 -s wlc -o"),
            step("-A -t 10.0.0.3:443 -s sh -b sh-fallback,sh-port -p 600 -M 255.255.255.0"),
            step("-A -t 10.0.0.4:80 -s bogus"),
            step("-A -t 10.0.0.1:80 -s bogus"),
            step("-E -t 10.0.0.1:80 -s bogus"),
            step("-E -t 10.0.0.9:80 -s bogus"),
            step("-E -t 10.0.0.1:80 -s wrr -p"),
            step("-A -f 7 -s lc"),
            step("-a -f 7 -r 10.1.0.5 -g"),
            step("-A -f 8 -6 -s dh -p 30 -M 64"),
            step("-a -f 8 -6 -r [fd00::5] -g"),
            step("-A -t [fd00::10]:80 -s sed"),
            step("-a -t [fd00::10]:80 -r [fd00::1]:8080 -m"),
            step("-a -t [fd00::10]:80 -r 10.1.0.1 -m"),
            step("-A -t localhost:http -s nq"),
            step("-a -t localhost:http -r web1 -m"),
            step("-Z"),
            step("-Z -t 10.0.0.1:80"),
            step("--set 100 20 30"),
            step("-A --sctp-service 10.0.0.5:3868 -s mh -b mh-port"),
            step("-a -t 10.0.0.1:80 -r 10.1.0.6 -i --tun-type gue --tun-port 6080 --tun-csum"),
            step("-a -t 10.0.0.1:80 -r 10.1.0.7 -i --tun-type gre --tun-remcsum"),
            step("-a -t 10.0.0.1:80 -r 10.1.0.7 -i --tun-type gre --tun-csum"),
            step("-a -t 10.0.0.1:80 -r [fd00::7] -i"),
            step("--stop-daemon master"),
            step("-D -t 10.0.0.1:80"),
            step("-C"),
        ],
    );
}

#[test]
#[ignore = "needs the kernel IPVS client"]
fn every_scheduler_persistence_and_thresholds_match_ipvsadm() {
    run_batch(
        "every_scheduler_persistence_and_thresholds_match_ipvsadm",
        &[
            step("-A -t 10.2.0.1:80 -s rr"),
            step("-A -t 10.2.0.2:80 -s wrr"),
            step("-A -t 10.2.0.3:80 -s lc -p 10"),
            step("-A -t 10.2.0.4:80 -s wlc -p 20 -M 255.255.0.0"),
            step("-A -t 10.2.0.5:80 -s lblc"),
            step("-A -t 10.2.0.6:80 -s lblcr"),
            step("-A -t 10.2.0.7:80 -s dh"),
            step("-A -t 10.2.0.8:80 -s sh -b sh-port"),
            step("-A -t 10.2.0.9:80 -s sed"),
            step("-A -t 10.2.0.10:80 -s nq"),
            step("-A -t 10.2.0.11:80 -s fo"),
            step("-A -t 10.2.0.12:80 -s ovf"),
            step("-A -t 10.2.0.13:80 -s mh -b mh-fallback,mh-port"),
            step("-A -t 10.2.0.14:80 -s twos"),
            step("-A -t 10.2.0.15:80 -s rr -b flag-1,flag-3"),
            step("-A -t 200.1.1.1:80 -s rr"),
            step("-A -t 10.2.0.16:0 -p 3600"),
            step("-A -t [fd00::20]:443 -s rr -p -M 48"),
            step("-A -u [fd00::20]:53 -s rr -o"),
            step("-a -t 10.2.0.1:80 -r 10.3.0.1:80 -m -w 70000"),
            step("-a -t 10.2.0.1:80 -r 10.3.0.2:80 -m -x 10 -y 5"),
            step("-a -t 10.2.0.1:80 -r 10.3.0.3:80 -m -x 1 -y 5"),
            step("-a -t 10.2.0.1:80 -r 200.3.0.3:80 -m"),
            step("-e -t 10.2.0.1:80 -r 10.3.0.2:80 -m -x 0 -y 0 -w 9"),
            step("-E -t 10.2.0.3:80 -s rr"),
            step("-E -t 10.2.0.4:80 -s wlc -p 20 -M 255.255.255.128"),
            step("-A"),
            step("-A -t"),
            step("-Lq"),
            step("-L -q"),
            step("--bogus"),
            step("-L -A"),
            step("-L foo"),
            step("-n -L"),
            step("-A -t 1.2.3.4:80 -p abc"),
            step("-a -t 10.2.0.1:80 -r 10.3.0.9 -w -1"),
            step("-A -t 1.2.3.4:80 -o"),
            step("-A -f 1 -6 -6 -6 -t 1.2.3.4:80"),
            step("-A -6 -f 1"),
            step("-L -c --stats"),
            step("-L --timeout --daemon"),
            step("--set 1 2"),
            step("-A -t 1.2.3.4 -s rr"),
            step("-a -t 10.2.0.1:80 -r [fd00::1] -m"),
            step("-a -t 10.2.0.1:80 -r 10.3.0.9 -m --tun-type gue"),
            step("-a -t 10.2.0.1:80 -r 10.3.0.9 -i --tun-type gue"),
            step("-A -t 1.2.3.4:80 -s sh -b mh-port"),
            step("-h"),
            step("-v"),
            step("--start-daemon maestro"),
        ],
    );
}

#[test]
#[ignore = "needs the kernel IPVS client"]
fn restore_accepts_what_save_wrote_both_ways() {
    const RULES: &str = "-A -t 10.5.0.1:80 -s rr -p 360\n\
        -a -t 10.5.0.1:80 -r 10.6.0.1:80 -m -w 2\n\
        -a -t 10.5.0.1:80 -r 10.6.0.2:8080 -m -w 1\n\
        -A -u 10.5.0.2:53 -s wlc\n\
        -a -u 10.5.0.2:53 -r 10.6.0.3:53 -g -w 1\n\
        -A -f 5 -s sh -b sh-fallback\n\
        -a -f 5 -r 10.6.0.4:0 -i -w 1 --tun-type ipip\n\
        -A -t [fd00::50]:443 -s mh -p 60 -M 64\n\
        -a -t [fd00::50]:443 -r [fd00::51]:443 -m -w 5\n";
    run_batch(
        "restore_accepts_what_save_wrote_both_ways",
        &[
            with_stdin("-R", RULES),
            // What the kernel now holds, saved by ipvsadm, cleared, and
            // restored by the tool under test (and vice versa in phase B,
            // since `-S` there is rvsadm's).
            step("-C"),
            with_stdin(
                "-R",
                "ipvsadm -A -t 10.7.0.1:80\n\n  \n-A -t 10.7.0.1:80\n-a -t 10.7.0.1:80 -r 10.8.0.1 -m\n-L -q\n-d -t 10.7.0.1:80 -r 10.8.0.9\n",
            ),
            with_stdin("-R", "-A -t 10.7.0.2:80\n# a comment\n-A -t 10.7.0.3:80\n"),
            with_stdin("-R", "-A -t 10.7.0.4:80 # trailing\n-A -t 10.7.0.5:80\n"),
            with_stdin("-R", "-D -t 10.7.0.9:80\n-s\n"),
            with_stdin("-R", "-A -t 10.7.0.6:80 -s rr\n-L -n\n-R\n"),
            with_stdin("-R", RULES),
        ],
    );
}

/// `ipvsadm -S` piped into `rvsadm -R` and `rvsadm -S` into `ipvsadm -R`
/// reproduce the saved state.
#[test]
#[ignore = "needs the kernel IPVS client"]
fn save_and_restore_interoperate() {
    let Some(vm) = Vm::or_skip("save_and_restore_interoperate") else {
        return;
    };
    let script = "set -e\nmkdir -p /tmp/rv\nln -sf /rvs/bin/rvsadm /tmp/rv/ipvsadm\n\
        ipvsadm -A -t 10.5.0.1:80 -s rr -p 360\n\
        ipvsadm -a -t 10.5.0.1:80 -r 10.6.0.1:80 -m -w 2\n\
        ipvsadm -A -f 5 -6 -s sh -b sh-port\n\
        ipvsadm -a -f 5 -6 -r [fd00::4] -i --tun-type gue --tun-port 5555 --tun-remcsum\n\
        ipvsadm -A -t [fd00::50]:443 -s mh -p 60 -M 64\n\
        ipvsadm -a -t [fd00::50]:443 -r [fd00::51]:443 -m -w 5 -x 9 -y 3\n\
        ipvsadm -S -n > /tmp/a\nipvsadm -S > /tmp/a-names\n\
        ipvsadm -C\n/tmp/rv/ipvsadm -R < /tmp/a\nipvsadm -S -n > /tmp/b\ncmp /tmp/a /tmp/b\n\
        /tmp/rv/ipvsadm -S > /tmp/c\nipvsadm -C\nipvsadm -R < /tmp/c\nipvsadm -S -n > /tmp/d\ncmp /tmp/a /tmp/d\n\
        cmp /tmp/a-names /tmp/c\necho interoperate-ok\n";
    let out = vm
        .run(
            &VmJob::new(script)
                .binary("rvsadm", env!("CARGO_BIN_EXE_rvsadm"))
                .file("/etc/hosts", HOSTS)
                .file("/etc/nsswitch.conf", NSSWITCH),
        )
        .unwrap()
        .assert_success();
    assert!(out.output.contains("interoperate-ok"), "{}", out.output);
}
