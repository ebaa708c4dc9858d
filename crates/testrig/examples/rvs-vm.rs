//! Runs a shell script in the test VM and prints its output and console:
//! `cargo run -p rvs-testrig --example rvs-vm -- 'ipvsadm -Ln'`.
//! A debugging aid for developers writing VM tests. `RVS_VM_BINARIES`
//! (`NAME=PATH` pairs separated by commas, e.g.
//! `bpftool=/usr/sbin/bpftool`) copies host executables onto the guest's
//! `PATH`.

#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::process::ExitCode;

fn main() -> ExitCode {
    let script = std::env::args().skip(1).collect::<Vec<_>>().join(" ");
    let vm = match rvs_testrig::Vm::new() {
        Ok(vm) => vm,
        Err(err) => {
            eprintln!("rvs-vm: {err}");
            return ExitCode::from(2);
        }
    };
    let mut job = rvs_testrig::VmJob::new(script + "\n");
    for pair in std::env::var("RVS_VM_BINARIES")
        .unwrap_or_default()
        .split(',')
        .filter(|p| !p.is_empty())
    {
        let Some((name, path)) = pair.split_once('=') else {
            eprintln!("rvs-vm: RVS_VM_BINARIES wants NAME=PATH, not {pair:?}");
            return ExitCode::from(2);
        };
        job = job.binary(name, path);
    }
    match vm.run(&job) {
        Ok(out) => {
            if std::env::var_os("RVS_VM_CONSOLE").is_some() {
                println!("--- console ---\n{}", out.console);
            }
            print!("{}", out.output);
            eprintln!("rvs-vm: exit {} after {:?}", out.exit_code, out.elapsed);
            ExitCode::from(u8::try_from(out.exit_code).unwrap_or(1))
        }
        Err(err) => {
            eprintln!("rvs-vm: {err}");
            ExitCode::from(2)
        }
    }
}
