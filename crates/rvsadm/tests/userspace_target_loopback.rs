//! `rvsadm --target unix:PATH` against the userspace dataplane, without
//! root: the test starts `rvs_userspace::Dataplane` in-process behind an
//! `rvs_admin` socket (as `rvsd` does) and runs the real `rvsadm` binary
//! against it.
//!
//! It owns the end-to-end checks of the userspace path: every change
//! command (`-A -E -D -C -a -e -d -Z --set -R`), every listing variant
//! this dataplane can fill (`-L -n`, `--stats`, `--exact`, `--rate`,
//! `--thresholds`, `--persistent-conn`, `-c`, `-S`, `--timeout`,
//! `--daemon`) in ipvsadm's exact text, ipvsadm's messages and exit
//! codes for missing objects, `RVSADM_TARGET`, and real TCP traffic
//! through a virtual service on loopback moving the counters and the
//! connection table. Addresses are 127.0.84.0/22 only; every wait is
//! bounded.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code

use std::io::Write as _;
use std::net::SocketAddr;
use std::os::unix::process::CommandExt as _;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rvs_admin::{RunningServer, Server, SharedAdmin};
use rvs_testrig::TempDir;
use rvs_testrig::backend::{Backend, Probe, ask_once, ask_until_up};
use rvs_userspace::{Dataplane, Options};

const STEP: Duration = Duration::from_secs(5);
const HEADER: &str = "IP Virtual Server version 1.2.1 (size=4096)\n";
const TITLE: &str = "Prot LocalAddress:Port Scheduler Flags\n  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn\n";
const STATS_TITLE: &str = "Prot LocalAddress:Port               Conns   InPkts  OutPkts  InBytes OutBytes\n  -> RemoteAddress:Port\n";
const RATE_TITLE: &str = "Prot LocalAddress:Port                 CPS    InPPS   OutPPS    InBPS   OutBPS\n  -> RemoteAddress:Port\n";

/// A userspace dataplane behind an admin socket in a private directory;
/// everything stops and goes away on drop.
struct Rig {
    socket: PathBuf,
    server: Option<RunningServer>,
    dataplane: Option<Dataplane>,
    _dir: TempDir,
}

impl Rig {
    fn start(tag: &str) -> Rig {
        let dir = TempDir::new(&format!("rvsadm-us-{tag}")).unwrap();
        let socket = dir.join("admin.sock");
        let dataplane = Dataplane::start(Options {
            workers: 1,
            // One lock per rig: the tests run dataplanes side by side on
            // distinct addresses.
            instance_lock: Some(format!("rvsadm-us-{tag}-{}", std::process::id())),
            ..Options::default()
        })
        .unwrap();
        let listener = rvs_admin::bind(&socket).unwrap();
        let admin: SharedAdmin = Arc::new(Mutex::new(dataplane.admin()));
        let server = Server::new(listener, admin).unwrap().spawn().unwrap();
        Rig {
            socket,
            server: Some(server),
            dataplane: Some(dataplane),
            _dir: dir,
        }
    }

    fn target(&self) -> String {
        format!("unix:{}", self.socket.display())
    }

    /// Runs `rvsadm --target unix:PATH ARGS` with `stdin`.
    fn run_with(&self, args: &str, stdin: &str) -> Out {
        let mut argv = vec!["--target".to_owned(), self.target()];
        argv.extend(args.split_whitespace().map(str::to_owned));
        rvsadm(&argv, &[], stdin)
    }

    fn run(&self, args: &str) -> Out {
        self.run_with(args, "")
    }

    /// Runs a command that must succeed silently.
    fn ok(&self, args: &str) {
        let out = self.run(args);
        assert_eq!(
            (out.code, out.stdout.as_str(), out.stderr.as_str()),
            (0, "", ""),
            "rvsadm {args}"
        );
    }

    /// Runs a listing that must succeed; returns its stdout.
    fn list(&self, args: &str) -> String {
        let out = self.run(args);
        assert_eq!((out.code, out.stderr.as_str()), (0, ""), "rvsadm {args}");
        out.stdout
    }
}

impl Drop for Rig {
    fn drop(&mut self) {
        if let Some(server) = self.server.take() {
            let _ = server.stop();
        }
        if let Some(dataplane) = self.dataplane.take() {
            dataplane.shutdown(Duration::from_millis(200));
        }
    }
}

/// What one rvsadm run printed.
#[derive(Debug)]
struct Out {
    code: i32,
    stdout: String,
    stderr: String,
}

/// Runs the rvsadm binary under the name `ipvsadm` (messages quote it).
fn rvsadm(argv: &[String], env: &[(&str, &str)], stdin: &str) -> Out {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_rvsadm"));
    cmd.arg0("ipvsadm")
        .args(argv)
        .env_remove("RVSADM_TARGET")
        .envs(env.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    let mut input = child.stdin.take().unwrap();
    input.write_all(stdin.as_bytes()).unwrap();
    drop(input);
    let out = child.wait_with_output().unwrap();
    Out {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8(out.stdout).unwrap(),
        stderr: String::from_utf8(out.stderr).unwrap(),
    }
}

fn addr(text: &str) -> SocketAddr {
    text.parse().unwrap()
}

/// The numbers after the address column of the line starting with
/// `prefix` (a `--stats` or `--rate` line).
fn numbers(listing: &str, prefix: &str) -> Vec<u64> {
    let line = listing
        .lines()
        .find(|l| l.starts_with(prefix))
        .unwrap_or_else(|| panic!("no line starting with {prefix:?} in\n{listing}"));
    line[prefix.len()..]
        .split_whitespace()
        .map(|n| n.parse().unwrap())
        .collect()
}

#[test]
fn changes_listings_and_errors_in_ipvsadm_text() {
    let rig = Rig::start("changes");
    assert_eq!(rig.list("-L -n"), format!("{HEADER}{TITLE}"));
    rig.ok("-A -t 127.0.84.1:18181 -s rr");
    rig.ok("-a -t 127.0.84.1:18181 -r 127.0.85.2:40002 -m -w 3");
    rig.ok("-a -t 127.0.84.1:18181 -r 127.0.85.1:40001 -m");
    rig.ok("-A -t 127.0.84.2:18182 -s wrr -p 300");
    rig.ok("-a -t 127.0.84.2:18182 -r 127.0.85.1:40001 -m -x 50 -y 10");
    rig.ok("-A -u 127.0.84.1:18153 -s wlc");

    let listing = "\
TCP  127.0.84.1:18181 rr
  -> 127.0.85.1:40001             Masq    1      0          0         
  -> 127.0.85.2:40002             Masq    3      0          0         
TCP  127.0.84.2:18182 wrr persistent 300
  -> 127.0.85.1:40001             Masq    1      0          0         
UDP  127.0.84.1:18153 wlc
";
    assert_eq!(rig.list("-L -n"), format!("{HEADER}{TITLE}{listing}"));
    // Combined short options and an option order of ipvsadm's own.
    assert_eq!(rig.list("-Ln"), format!("{HEADER}{TITLE}{listing}"));
    assert_eq!(
        rig.list("-L -n -t 127.0.84.2:18182"),
        format!(
            "{TITLE}TCP  127.0.84.2:18182 wrr persistent 300\n  -> 127.0.85.1:40001             Masq    1      0          0         \n"
        )
    );
    let rules = "\
-A -t 127.0.84.1:18181 -s rr
-a -t 127.0.84.1:18181 -r 127.0.85.1:40001 -m -w 1
-a -t 127.0.84.1:18181 -r 127.0.85.2:40002 -m -w 3
-A -t 127.0.84.2:18182 -s wrr -p 300
-a -t 127.0.84.2:18182 -r 127.0.85.1:40001 -m -w 1
-A -u 127.0.84.1:18153 -s wlc
";
    assert_eq!(rig.list("-S -n"), rules);
    assert_eq!(rig.list("-Sn"), rules);
    assert_eq!(
        rig.list("-L -n --stats"),
        format!(
            "{HEADER}{STATS_TITLE}\
TCP  127.0.84.1:18181                    0        0        0        0        0
  -> 127.0.85.1:40001                    0        0        0        0        0
  -> 127.0.85.2:40002                    0        0        0        0        0
TCP  127.0.84.2:18182                    0        0        0        0        0
  -> 127.0.85.1:40001                    0        0        0        0        0
UDP  127.0.84.1:18153                    0        0        0        0        0
"
        )
    );
    assert_eq!(
        rig.list("-L -n --rate -u 127.0.84.1:18153"),
        format!(
            "{RATE_TITLE}UDP  127.0.84.1:18153                    0        0        0        0        0\n"
        )
    );
    assert_eq!(
        rig.list("-L -n --thresholds -t 127.0.84.2:18182"),
        "Prot LocalAddress:Port            Uthreshold Lthreshold ActiveConn InActConn \n  -> RemoteAddress:Port\n\
TCP  127.0.84.2:18182 wrr persistent 300\n  -> 127.0.85.1:40001             50         10         0          0         \n"
    );
    assert_eq!(
        rig.list("-L -n --persistent-conn -t 127.0.84.2:18182"),
        "Prot LocalAddress:Port            Weight    PersistConn ActiveConn InActConn \n  -> RemoteAddress:Port\n\
TCP  127.0.84.2:18182 wrr persistent 300\n  -> 127.0.85.1:40001             1         0           0          0         \n"
    );
    assert_eq!(
        rig.list("-L -n -c"),
        "IPVS connection entries\npro expire state       source             virtual            destination\n"
    );
    assert_eq!(rig.list("-L --daemon"), "");

    // Timeouts: the kernel's defaults, then --set (0 keeps a value).
    assert_eq!(
        rig.list("-L --timeout"),
        "Timeout (tcp tcpfin udp): 900 120 300\n"
    );
    rig.ok("--set 100 0 30");
    assert_eq!(
        rig.list("-L --timeout"),
        "Timeout (tcp tcpfin udp): 100 120 30\n"
    );

    // Edits and deletions.
    rig.ok("-E -t 127.0.84.1:18181 -s wlc -p 60 -M 255.255.255.0");
    rig.ok("-e -t 127.0.84.1:18181 -r 127.0.85.2:40002 -m -w 0");
    rig.ok("-d -t 127.0.84.1:18181 -r 127.0.85.1:40001");
    rig.ok("-D -t 127.0.84.2:18182");
    rig.ok("-Z");
    rig.ok("-Z -u 127.0.84.1:18153");
    assert_eq!(
        rig.list("-S -n"),
        "-A -t 127.0.84.1:18181 -s wlc -p 60 -M 255.255.255.0\n\
-a -t 127.0.84.1:18181 -r 127.0.85.2:40002 -m -w 0\n-A -u 127.0.84.1:18153 -s wlc\n"
    );
    assert_eq!(
        rig.list("-L -n"),
        format!(
            "{HEADER}{TITLE}TCP  127.0.84.1:18181 wlc persistent 60 mask 255.255.255.0\n  -> 127.0.85.2:40002             Masq    0      0          0         \nUDP  127.0.84.1:18153 wlc\n"
        )
    );

    // Missing objects: ipvsadm's messages and exit codes (255 for a
    // refused change, 1 for a failed listing).
    let refusals = [
        ("-A -t 127.0.84.1:18181 -s rr", "Service already exists"),
        ("-E -t 127.0.84.9:1 -s rr", "No such service"),
        ("-D -t 127.0.84.9:1", "No such service"),
        ("-Z -t 127.0.84.9:1", "No such service"),
        (
            "-a -t 127.0.84.9:1 -r 127.0.85.1:1 -m",
            "Service not defined",
        ),
        (
            "-e -t 127.0.84.9:1 -r 127.0.85.1:1 -m",
            "Service not defined",
        ),
        ("-d -t 127.0.84.9:1 -r 127.0.85.1:1", "Service not defined"),
        (
            "-a -t 127.0.84.1:18181 -r 127.0.85.2:40002 -m",
            "Destination already exists",
        ),
        (
            "-e -t 127.0.84.1:18181 -r 127.0.85.7:40007 -m",
            "No such destination",
        ),
        (
            "-d -t 127.0.84.1:18181 -r 127.0.85.7:40007",
            "No such destination",
        ),
        (
            "-A -t 127.0.84.3:18183 -s nosuch",
            "Scheduler or persistence engine not found",
        ),
        (
            "-E -t 127.0.84.1:18181 -s nosuch",
            "Scheduler or persistence engine not found",
        ),
        ("-E -t 127.0.84.9:1 -s nosuch", "No such service"),
    ];
    for (args, message) in refusals {
        let out = rig.run(args);
        assert_eq!(
            (out.code, out.stdout.as_str(), out.stderr.as_str()),
            (255, "", format!("{message}\n").as_str()),
            "rvsadm {args}"
        );
    }
    let out = rig.run("-L -n -t 127.0.84.9:1");
    assert_eq!(
        (out.code, out.stdout.as_str(), out.stderr.as_str()),
        (1, "", "No such service\n")
    );
    // A command-line error never reaches the dataplane: exit 2.
    let out = rig.run("-A -t 127.0.84.3:18183 -s rr -w 2");
    assert_eq!(
        (out.code, out.stdout.as_str(), out.stderr.as_str()),
        (
            2,
            "",
            "Illegal 'weight' option with the 'add-service' command\n"
        )
    );
    // The refusals changed nothing.
    assert_eq!(
        rig.list("-S -n"),
        "-A -t 127.0.84.1:18181 -s wlc -p 60 -M 255.255.255.0\n\
-a -t 127.0.84.1:18181 -r 127.0.85.2:40002 -m -w 0\n-A -u 127.0.84.1:18153 -s wlc\n"
    );

    // -C, then -R of the first rule set brings it back exactly; a restore
    // line that fails reports and the restore goes on.
    rig.ok("-C");
    assert_eq!(rig.list("-S -n"), "");
    let out = rig.run_with("-R", rules);
    assert_eq!((out.code, out.stderr.as_str()), (0, ""), "{out:?}");
    assert_eq!(rig.list("-S -n"), rules);
    let out = rig.run_with(
        "-R",
        "-D -t 127.0.84.9:1\n-A -t 127.0.84.3:18183 -s sh -b sh-port\n",
    );
    assert_eq!(
        (out.code, out.stderr.as_str()),
        (0, "No such service\n"),
        "{out:?}"
    );
    assert!(
        rig.list("-L -n -t 127.0.84.3:18183")
            .contains("TCP  127.0.84.3:18183 sh (sh-port)\n"),
    );
    let out = rig.run_with("-R", "-A -t 127.0.84.4:18184\n-D -t 127.0.84.9:1\n");
    assert_eq!(
        (out.code, out.stderr.as_str()),
        (255, "No such service\n"),
        "the last line's result is the exit status: {out:?}"
    );

    // RVSADM_TARGET selects the socket as --target does.
    let env = rvsadm(
        &["-S".to_owned(), "-n".to_owned()],
        &[("RVSADM_TARGET", &rig.target())],
        "",
    );
    assert_eq!((env.code, env.stdout), (0, rig.list("-S -n")));
}

#[test]
fn a_missing_socket_is_ipvsadms_initialisation_error() {
    let dir = std::env::temp_dir().join(format!("rvsadm-us-none-{}", std::process::id()));
    let out = rvsadm(
        &[
            "--target".to_owned(),
            format!("unix:{}", dir.join("absent.sock").display()),
            "-L".to_owned(),
            "-n".to_owned(),
        ],
        &[],
        "",
    );
    assert_eq!(out.code, 2, "{out:?}");
    assert!(
        out.stderr.starts_with("Can't initialize ipvs: ")
            && out.stderr.ends_with(
                "\nAre you sure that IP Virtual Server is built in the kernel or as module?\n"
            ),
        "{out:?}"
    );
    assert_eq!(out.stdout, "");
    let out = rvsadm(
        &[
            "--target".to_owned(),
            "tcp:1.2.3.4".to_owned(),
            "-L".to_owned(),
        ],
        &[],
        "",
    );
    assert_eq!(out.code, 2, "{out:?}");
}

#[test]
fn traffic_moves_stats_rates_and_the_connection_table() {
    let a = Backend::tcp(addr("127.0.86.1:0"), "a").unwrap();
    let b = Backend::tcp(addr("127.0.86.2:0"), "b").unwrap();
    let rig = Rig::start("traffic");
    let vip = addr("127.0.87.1:18190");
    rig.ok(&format!("-A -t {vip} -s rr"));
    rig.ok(&format!("-a -t {vip} -r {} -m", a.addr()));
    rig.ok(&format!("-a -t {vip} -r {} -m", b.addr()));

    // Round robin: 10 connections alternate.
    let mut names = vec![ask_until_up(vip, STEP).unwrap()];
    for _ in 0..9 {
        names.push(ask_once(vip, STEP).unwrap());
    }
    for pair in names.windows(2) {
        assert_ne!(pair[0], pair[1], "rr alternates: {names:?}");
    }
    // A connection's bytes are counted when the forwarder sees it close,
    // just after the client has its answer: wait until the last of the
    // ten is in (bounded), then check every column.
    let deadline = Instant::now() + STEP;
    let stats = loop {
        let stats = rig.list("-L -n --stats --exact");
        let svc = numbers(&stats, &format!("TCP  {vip}"));
        if svc.get(3).is_some_and(|b| *b >= 40) || Instant::now() >= deadline {
            break stats;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(
        stats.starts_with(&format!("{HEADER}{STATS_TITLE}")),
        "{stats}"
    );
    let svc_prefix = format!("TCP  {vip}");
    let svc = numbers(&stats, &svc_prefix);
    // Conns, InPkts, OutPkts, InBytes, OutBytes; "who\n" in, "a\n" out.
    assert_eq!(svc[0], 10, "{stats}");
    assert!(svc[1] >= 10 && svc[2] >= 10, "{stats}");
    assert!(svc[3] >= 40 && svc[4] >= 20, "{stats}");
    for backend in [&a, &b] {
        let d = numbers(&stats, &format!("  -> {}", backend.addr()));
        assert_eq!(d[0], 5, "{stats}");
        assert!(d[3] >= 20 && d[4] >= 10, "{stats}");
    }
    // Each counter's column is 9 wide (8 + a space) under --exact too.
    let line = stats.lines().find(|l| l.starts_with(&svc_prefix)).unwrap();
    assert_eq!(line.len(), 33 + 5 * 9, "{line:?}");

    // Weighted round robin 3:1 over 8 connections.
    rig.ok(&format!("-E -t {vip} -s wrr"));
    rig.ok(&format!("-e -t {vip} -r {} -m -w 3", a.addr()));
    let picks: Vec<String> = (0..8).map(|_| ask_once(vip, STEP).unwrap()).collect();
    assert_eq!(picks.iter().filter(|n| *n == "a").count(), 6, "{picks:?}");
    let listing = rig.list("-L -n");
    let wrr_line = format!("TCP  {vip} wrr\n");
    assert!(listing.contains(&wrr_line), "{listing}");

    // A held-open connection is ESTABLISHED in -c and active in -L.
    let mut held = Probe::connect(vip, STEP).unwrap();
    let served_by = held.ask().unwrap();
    // The earlier connections' closes may still be in flight: wait until
    // only the held one is established.
    let deadline = Instant::now() + STEP;
    let conns = loop {
        let conns = rig.list("-L -n -c");
        if conns.matches(" ESTABLISHED ").count() == 1 {
            break conns;
        }
        assert!(Instant::now() < deadline, "not one ESTABLISHED:\n{conns}");
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut lines = conns.lines();
    assert_eq!(lines.next(), Some("IPVS connection entries"));
    assert_eq!(
        lines.next(),
        Some("pro expire state       source             virtual            destination")
    );
    let entries: Vec<Vec<&str>> = lines.map(|l| l.split_whitespace().collect()).collect();
    assert!(entries.len() >= 19, "{conns}");
    for e in &entries {
        assert_eq!(e.len(), 6, "{conns}");
        assert_eq!(e[0], "TCP", "{conns}");
        let (m, s) = e[1].split_once(':').unwrap();
        assert!(m.len() == 2 && s.len() == 2, "{conns}");
        let client: SocketAddr = e[3].parse().unwrap();
        assert!(client.ip().is_loopback(), "{conns}");
        assert_eq!(e[4], vip.to_string(), "{conns}");
        let dest: SocketAddr = e[5].parse().unwrap();
        assert!(dest == a.addr() || dest == b.addr(), "{conns}");
    }
    let established: Vec<&Vec<&str>> = entries.iter().filter(|e| e[2] == "ESTABLISHED").collect();
    assert_eq!(established.len(), 1, "{conns}");
    let held_dest = if served_by == "a" { a.addr() } else { b.addr() };
    assert_eq!(established[0][5], held_dest.to_string(), "{conns}");
    // The established timeout is the default 900 s: 15:00 or just under.
    assert!(
        ["15:00", "14:59", "14:58"].contains(&established[0][1]),
        "{conns}"
    );
    // Column layout: "%-3s %-6s %-11s %-18s %-18s %s".
    let first = conns.lines().nth(2).unwrap();
    assert_eq!(&first[3..4], " ", "{first:?}");
    assert_eq!(&first[10..11], " ", "{first:?}");
    let persistent = rig.list(&format!("-L -n --persistent-conn -t {vip}"));
    let active = numbers(&persistent, &format!("  -> {held_dest}"));
    assert_eq!(
        active[0..3],
        [if served_by == "a" { 3 } else { 1 }, 0, 1],
        "{persistent}"
    );
    drop(held);

    // Rates: the 2 s estimator turns the traffic into nonzero rates
    // within a few ticks.
    let deadline = Instant::now() + Duration::from_secs(10);
    let rate = loop {
        for _ in 0..5 {
            let _ = ask_once(vip, STEP);
        }
        let rate = rig.list("-L -n --rate");
        let r = numbers(&rate, &svc_prefix);
        // CPS and InBPS; packet rates and OutBPS may round to 0.
        if r[0] > 0 && r[3] > 0 {
            break rate;
        }
        assert!(Instant::now() < deadline, "rates never moved:\n{rate}");
        std::thread::sleep(Duration::from_millis(500));
    };
    assert!(rate.starts_with(&format!("{HEADER}{RATE_TITLE}")), "{rate}");

    // -Z zeroes the counters.
    rig.ok(&format!("-Z -t {vip}"));
    let zeroed = rig.list("-L -n --stats");
    assert_eq!(
        numbers(&zeroed, &svc_prefix)[..],
        [0, 0, 0, 0, 0],
        "{zeroed}"
    );

    // Deleting the service stops the VIP answering.
    rig.ok(&format!("-D -t {vip}"));
    rvs_testrig::eventually(&format!("{vip} to stop answering after -D"), STEP, || {
        ask_once(vip, Duration::from_millis(200)).is_err()
    });
    assert_eq!(rig.list("-L -n"), format!("{HEADER}{TITLE}"));
}
