//! `rvsadm`: ipvsadm 1.31's command line, byte for byte, over any rvs
//! dataplane.
//!
//! `rvsadm` accepts what `ipvsadm` accepts and prints what it prints:
//! commands, options, messages, exit codes, listings, `-S` rules and `-R`
//! restore input. Modules:
//!
//! * [`popt`]: the option scanner (a hand-written emulation of popt:
//!   clustered short options, optional arguments, exact long names —
//!   semantics getopt/clap parsers do not reproduce);
//! * [`cli`]: argv → [`cli::Command`], with ipvsadm's option table,
//!   value parsing and compatibility checks;
//! * [`exec`]: running a command against [`rvs_model::admin::Admin`],
//!   the restore loop (batched through `Admin::apply_batch`), exit codes;
//! * [`format`](mod@format): the exact listing and rule texts;
//! * [`names`]: host and service names from `/etc/hosts` and
//!   `/etc/services` only — never DNS or any network traffic;
//! * [`restore`]: splitting `-R` input into lines as ipvsadm does;
//! * [`errors`]: ipvsadm's errno messages per command, glibc's `strerror`;
//! * [`inet`]: glibc-exact address parsing and printing;
//! * [`usage`]: the help and version texts;
//! * [`target`]: kernel or `--target unix:PATH` userspace dataplane.
//!
//! Extensions beyond ipvsadm: `--target unix:PATH` (also
//! `RVSADM_TARGET=unix:PATH`) selects a userspace dataplane's admin
//! socket; `rvsadm --probe` alone reports whether the kernel offers IPVS;
//! `rvsadm --rebalancing` lists each rebalanced virtual service's skew
//! and the connections closed per real server (an empty list from the
//! kernel's IPVS, which closes none).
//!
//! Deliberate differences from ipvsadm: the command line is parsed before
//! the dataplane is opened, so `-h` and command-line errors work without
//! IPVS (ipvsadm first fails with "Can't initialize ipvs"); `-b ,` (no
//! flag at all) sets no flag where ipvsadm crashes; names never come from
//! DNS.

mod cli;
mod errors;
mod exec;
mod format;
mod inet;
mod names;
mod popt;
mod restore;
mod target;
mod usage;

use std::io::{Read, Write};
use std::process::ExitCode;

use crate::cli::Command;
use crate::exec::{Ctx, Output};

/// `rvsadm --probe`: whether the kernel offers IPVS.
fn probe(out: &mut Output) -> u8 {
    match rvs_ipvs::resolve_ipvs_family() {
        Ok(family) => {
            out.stdout.push_str(&format!(
                "IPVS: generic netlink family {} (version {})\n",
                family.id, family.version
            ));
            0
        }
        Err(err) => {
            out.stdout
                .push_str(&format!("IPVS: not available: {err}\n"));
            1
        }
    }
}

/// `rvsadm [--target T] --rebalancing`: the dataplane's rebalancing of
/// long-lived connections; `None` when `argv` is not that command.
fn rebalancing(argv: &[String], out: &mut Output) -> Option<u8> {
    let mut flag = None;
    let mut asked = false;
    let mut rest = argv.iter().skip(1);
    while let Some(arg) = rest.next() {
        match arg.as_str() {
            "--rebalancing" => asked = true,
            "--target" => flag = Some(rest.next()?.clone()),
            "-n" | "--numeric" => {}
            other => flag = Some(other.strip_prefix("--target=")?.to_owned()),
        }
    }
    if !asked {
        return None;
    }
    let env_target = std::env::var("RVSADM_TARGET").ok();
    let listed = target::choose(flag.as_deref(), env_target.as_deref())
        .map_err(|msg| format!("{msg}\n"))
        .and_then(|t| {
            target::connect(&t)
                .and_then(|mut a| a.rebalancing())
                .map_err(|e| format!("{e}\n"))
        });
    Some(match listed {
        Ok(list) => {
            out.stdout.push_str(&format::rebalancing(&list));
            0
        }
        Err(msg) => {
            out.stderr.push_str(&msg);
            2
        }
    })
}

fn run(argv: &[String], out: &mut Output) -> u8 {
    let program = argv.first().cloned().unwrap_or_else(|| "rvsadm".to_owned());
    if argv.len() == 2 && argv[1] == "--probe" {
        return probe(out);
    }
    if let Some(code) = rebalancing(argv, out) {
        return code;
    }
    let names = names::Names::system();
    // No arguments at all (or only --target): list everything.
    let invocation = if argv.len() <= 1 {
        cli::Invocation {
            command: Command::List {
                what: cli::List::All,
                format: 0,
            },
            target: None,
        }
    } else {
        match cli::parse(argv, &names) {
            Ok(inv) => inv,
            Err(err) => {
                out.stderr.push_str(&err.stderr_text(&program));
                return err.exit_code();
            }
        }
    };
    match &invocation.command {
        Command::Help => {
            out.stdout.push_str(&usage::usage(&program));
            return 0;
        }
        Command::Version => {
            out.stdout.push_str(usage::VERSION);
            return 0;
        }
        _ => {}
    }
    let mut stdin = Vec::new();
    if invocation.command == Command::Restore
        && std::io::stdin().lock().read_to_end(&mut stdin).is_err()
    {
        stdin.clear();
    }
    let env_target = std::env::var("RVSADM_TARGET").ok();
    let target = match target::choose(invocation.target.as_deref(), env_target.as_deref()) {
        Ok(t) => t,
        Err(msg) => {
            out.stderr.push_str(&format!("{msg}\n"));
            return 2;
        }
    };
    let (mut admin, info) = match target::connect(&target)
        .and_then(|mut a| a.info().map(|i| (a, i)))
    {
        Ok(pair) => pair,
        Err(err) => {
            out.stderr.push_str(&format!(
                "Can't initialize ipvs: {}\nAre you sure that IP Virtual Server is built in the kernel or as module?\n",
                errors::message(errors::Func::Other, &err)
            ));
            return 2;
        }
    };
    let mut ctx = Ctx {
        admin: admin.as_mut(),
        info,
        names: &names,
        program,
    };
    exec::run(&mut ctx, &invocation.command, &stdin, out).code()
}

fn main() -> ExitCode {
    let argv: Vec<String> = std::env::args_os()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    let mut out = Output::default();
    let code = run(&argv, &mut out);
    // ipvsadm's stderr is unbuffered and its stdout is flushed at exit.
    let _ = std::io::stderr().lock().write_all(out.stderr.as_bytes());
    let mut stdout = std::io::stdout().lock();
    let _ = stdout.write_all(out.stdout.as_bytes());
    let _ = stdout.flush();
    ExitCode::from(code)
}
