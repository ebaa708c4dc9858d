//! Runs a shell script in the test VM and prints its output and console:
//! `cargo run -p rvs-testrig --example rvs-vm -- 'ipvsadm -Ln'`.
//! A debugging aid for developers writing VM tests.

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
    match vm.run(&rvs_testrig::VmJob::new(script + "\n")) {
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
