//! `rvs-conformance`: runs scenarios through kube-proxy and rvs-proxy
//! side by side and prints what differs (see the library's docs).
//!
//! ```sh
//! cargo build -p rvs-proxy-bin -p rvs-conformance
//! target/debug/rvs-conformance                       # the shipped scenarios
//! target/debug/rvs-conformance --no-builtin --generated 20 --seed 42
//! target/debug/rvs-conformance --no-builtin --duration 2h   # generate until then
//! target/debug/rvs-conformance --replay 0x1234abcd --steps 15 [--dual]
//! target/debug/rvs-conformance --print 0x1234abcd --steps 15 > my.yaml
//! ```

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Parser;

use rvs_conformance::generate::{self, generate};
use rvs_conformance::scenario::{self, Scenario};
use rvs_conformance::{Allowlist, Harness, Report};

/// Runs scenarios against kube-proxy (IPVS mode) and rvs-proxy in two
/// VMs and compares their state after every step.
#[derive(Debug, Parser)]
#[command(name = "rvs-conformance")]
struct Cli {
    /// Scenario files or directories to run (besides the shipped ones and
    /// those `RVS_CONFORMANCE_SCENARIOS` names).
    #[arg(long = "scenarios", value_name = "PATH")]
    scenarios: Vec<PathBuf>,
    /// Leave out the shipped scenarios and `RVS_CONFORMANCE_SCENARIOS`.
    #[arg(long)]
    no_builtin: bool,
    /// Only scenarios whose name matches this glob (`*`, `?`).
    #[arg(long, value_name = "GLOB")]
    only: Option<String>,
    /// Generated scenarios to run.
    #[arg(long, default_value_t = 0)]
    generated: usize,
    /// Steps per generated scenario.
    #[arg(long, default_value_t = 20)]
    steps: usize,
    /// The run's seed (default: from the clock); each generated
    /// scenario's seed derives from it.
    #[arg(long, value_parser = parse_seed)]
    seed: Option<u64>,
    /// Keep generating scenarios (in rounds of `--generated`, at least 1)
    /// until this much time has passed, e.g. `90m`, `2h`.
    #[arg(long, value_parser = parse_duration)]
    duration: Option<Duration>,
    /// Generated scenarios are dual-stack (IPv4, IPv6 and dual-stack
    /// Services on the dual-stack node).
    #[arg(long)]
    dual: bool,
    /// Run the one generated scenario of this seed (as printed on failure).
    #[arg(long, value_parser = parse_seed)]
    replay: Option<u64>,
    /// Print the generated scenario of this seed as a scenario file and exit.
    #[arg(long, value_parser = parse_seed)]
    print: Option<u64>,
    /// Judge the consoles a run kept (RVS_CONFORMANCE_OUTPUT=DIR) against
    /// the allowlist again, without running anything.
    #[arg(long, value_name = "DIR")]
    rejudge: Option<PathBuf>,
    /// The allowlist (default: the shipped one).
    #[arg(long, value_name = "PATH")]
    allowlist: Option<PathBuf>,
    /// rvs-proxy (default: beside this binary).
    #[arg(long, value_name = "PATH")]
    rvs_proxy: Option<PathBuf>,
    /// kube-proxy (default: from `K8S_BIN` or scripts/k8s-binaries.sh).
    #[arg(long, value_name = "PATH")]
    kube_proxy: Option<PathBuf>,
    /// Batches run side by side, each pair of VMs with its own control
    /// plane (default: `RVS_CONFORMANCE_LANES`, else 2).
    #[arg(long)]
    lanes: Option<usize>,
}

fn parse_seed(s: &str) -> Result<u64, String> {
    let parsed = match s.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => s.parse(),
    };
    parsed.map_err(|e| format!("{s:?}: {e}"))
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?}: a number and s, m or h"))?;
    let secs = match unit {
        "s" | "" => n,
        "m" => n * 60,
        "h" => n * 3600,
        _ => return Err(format!("{s:?}: a number and s, m or h")),
    };
    Ok(Duration::from_secs(secs))
}

/// Blocks SIGINT, SIGTERM and SIGHUP in every thread (the mask is
/// inherited) and returns them, for [`cleanup_on_signal`] to wait for.
fn block_signals() -> nix::sys::signal::SigSet {
    use nix::sys::signal::{SigSet, SigmaskHow, Signal, pthread_sigmask};
    let mut set = SigSet::empty();
    for s in [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP] {
        set.add(s);
    }
    let _ = pthread_sigmask(SigmaskHow::SIG_BLOCK, Some(&set), None);
    set
}

/// On a signal: takes the control planes in `dirs` down, kills this
/// process's children (the VMs' qemu), and exits. A run of hours is
/// often interrupted; etcd, kube-apiserver and qemu must not outlive it.
#[allow(clippy::print_stderr)]
fn cleanup_on_signal(set: nix::sys::signal::SigSet, dirs: Vec<PathBuf>) {
    std::thread::spawn(move || {
        let Ok(signal) = set.wait() else { return };
        eprintln!("rvs-conformance: {signal}: taking the control planes and VMs down");
        let script = rvs_testrig::control_plane::scripts_dir().join("control-plane.sh");
        for dir in &dirs {
            let _ = std::process::Command::new("bash")
                .arg(&script)
                .arg("down")
                .arg(dir)
                .status();
            let _ = std::fs::remove_dir_all(dir);
        }
        let me = std::process::id();
        for child in children(me) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(child),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        std::process::exit(130);
    });
}

/// The ids of `parent`'s child processes, from /proc.
fn children(parent: u32) -> Vec<i32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
                // pid (comm) state ppid …; comm may hold spaces: cut after ')'.
                stat.rsplit_once(')')
                    .and_then(|(_, rest)| rest.split_whitespace().nth(1))
                    .and_then(|ppid| ppid.parse::<u32>().ok())
                    == Some(parent)
            })
        })
        .collect()
}

#[allow(clippy::print_stdout, clippy::print_stderr)]
fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("rvs-conformance: {e:#}");
            ExitCode::from(2)
        }
    }
}

#[allow(clippy::print_stdout, clippy::print_stderr)]
fn run(cli: Cli) -> anyhow::Result<bool> {
    if let Some(seed) = cli.print {
        print!("{}", generate(seed, cli.steps, cli.dual).to_yaml());
        return Ok(true);
    }
    if let Some(dir) = &cli.rejudge {
        let path = cli
            .allowlist
            .clone()
            .unwrap_or_else(Allowlist::builtin_path);
        let report = rvs_conformance::harness::judge_consoles(dir, &Allowlist::load(&path)?)?;
        println!("{}", report.render());
        return Ok(report.passed());
    }
    let mut scenarios: Vec<Scenario> = Vec::new();
    let mut paths = Vec::new();
    if !cli.no_builtin && cli.replay.is_none() {
        paths.push(scenario::builtin_dir());
        paths.extend(scenario::env_paths());
    }
    paths.extend(cli.scenarios.iter().cloned());
    for p in &paths {
        scenarios.extend(
            scenario::load_path(p).with_context(|| format!("scenarios in {}", p.display()))?,
        );
    }
    if let Some(glob) = &cli.only {
        scenarios.retain(|s| rvs_conformance::allowlist::glob(glob, &s.name));
    }
    let seed = cli.seed.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1)
    });
    if let Some(s) = cli.replay {
        scenarios.push(generate(s, cli.steps, cli.dual));
    }
    scenario::check_unique(&scenarios)?;
    let allowlist_path = cli
        .allowlist
        .clone()
        .unwrap_or_else(Allowlist::builtin_path);
    let allowlist = Allowlist::load(&allowlist_path)?;
    let rvs_proxy = match cli.rvs_proxy.clone() {
        Some(p) => p,
        None => std::env::current_exe()?
            .parent()
            .map(|d| d.join("rvs-proxy"))
            .context("no directory for rvs-proxy")?,
    };
    if !rvs_proxy.is_file() {
        bail!(
            "{} not found: build it (cargo build -p rvs-proxy-bin) or pass --rvs-proxy",
            rvs_proxy.display()
        );
    }
    eprintln!(
        "rvs-conformance: seed {seed:#x}; rvs-proxy {}",
        rvs_proxy.display()
    );
    let lanes = cli
        .lanes
        .unwrap_or_else(rvs_conformance::harness::lanes_from_env);
    let signals = block_signals();
    let harness = Harness::new(cli.kube_proxy.clone(), rvs_proxy, lanes)?;
    cleanup_on_signal(signals, harness.plane_dirs());
    let started = Instant::now();
    let progress = |line: &str| eprintln!("{line}");

    let mut report = Report::new(&allowlist);
    let mut steps = std::collections::BTreeMap::new();
    let mut round_seed = seed;
    let mut round = 0;
    loop {
        let mut batch: Vec<Scenario> = if round == 0 {
            std::mem::take(&mut scenarios)
        } else {
            Vec::new()
        };
        let count = if cli.duration.is_some() {
            cli.generated.max(1)
        } else {
            cli.generated
        };
        for s in generate::seeds(round_seed, count) {
            let g = generate(s, cli.steps, cli.dual);
            steps.insert(g.name.clone(), g.steps.len());
            batch.push(g);
        }
        round_seed = round_seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
        round += 1;
        if batch.is_empty() {
            break;
        }
        let r = match harness.run(&batch, &allowlist, &progress) {
            Ok(r) => r,
            Err(e) => {
                if let Some(name) = e.scenario() {
                    let n = steps.get(name).copied().unwrap_or(cli.steps);
                    if let Some(hint) = generate::replay_hint(name, n) {
                        eprintln!("replay {name}: {hint}");
                    }
                }
                return Err(e.into());
            }
        };
        report.steps.extend(r.steps.into_iter().map(|mut s| {
            s.batch += report.batches.len();
            s
        }));
        report.batches.extend(r.batches);
        match cli.duration {
            Some(d) if started.elapsed() < d => {}
            _ => break,
        }
    }
    report.elapsed = started.elapsed();
    println!("{}", report.render());
    let failing: std::collections::BTreeSet<&str> = report
        .failing_steps()
        .into_iter()
        .filter_map(|l| l.split('/').next())
        .collect();
    for name in failing {
        if let Some(hint) =
            generate::replay_hint(name, steps.get(name).copied().unwrap_or(cli.steps))
        {
            println!("replay {name}: {hint}");
        }
    }
    if cli.replay.is_none() && cli.generated > 0 {
        println!("run seed: {seed:#x} (--seed {seed:#x} repeats this run)");
    }
    Ok(report.passed())
}
