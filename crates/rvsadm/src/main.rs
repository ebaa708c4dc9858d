//! `rvsadm`: administration of IPVS virtual servers with ipvsadm's command
//! line.
//!
//! The full ipvsadm command set arrives with the kernel IPVS issue; until
//! then this binary answers `--help`/`-h` and `--probe`, which reports
//! whether the running kernel offers IPVS.

#![forbid(unsafe_code)]

use std::io::Write;
use std::process::ExitCode;

use anyhow::Context;
use rvs_model::Scheduler;

fn usage() -> String {
    let schedulers: Vec<&str> = Scheduler::ALL.iter().map(|s| s.name()).collect();
    format!(
        "rvsadm {version} (ipvsadm-compatible; the full command set is under construction)\n\
         Usage:\n  rvsadm --probe     report whether this kernel offers IPVS\n  rvsadm -h|--help   this text\n\
         Schedulers: {schedulers}\n",
        version = env!("CARGO_PKG_VERSION"),
        schedulers = schedulers.join(" "),
    )
}

fn run() -> anyhow::Result<ExitCode> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut out = std::io::stdout().lock();
    match args.first().map(String::as_str) {
        None | Some("-h" | "--help") => {
            out.write_all(usage().as_bytes()).context("write help")?;
            Ok(ExitCode::SUCCESS)
        }
        Some("--probe") => match rvs_ipvs::resolve_ipvs_family() {
            Ok(family) => {
                writeln!(
                    out,
                    "IPVS: generic netlink family {} (version {})",
                    family.id, family.version
                )
                .context("write probe result")?;
                Ok(ExitCode::SUCCESS)
            }
            Err(err) => {
                writeln!(out, "IPVS: not available: {err}").context("write probe result")?;
                Ok(ExitCode::from(1))
            }
        },
        Some(other) => {
            anyhow::bail!("unknown or not yet supported option {other:?}; see rvsadm --help")
        }
    }
}

fn main() -> ExitCode {
    match run() {
        Ok(code) => code,
        Err(err) => {
            let _ = writeln!(std::io::stderr(), "rvsadm: {err:#}");
            ExitCode::from(2)
        }
    }
}
