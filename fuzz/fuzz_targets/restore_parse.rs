//! Any bytes as `rvsadm -R` input: the restore path (line splitting,
//! ipvsadm's command-line parser, the batching restore loop and the
//! listings a restore file may ask for) must not panic, and what it
//! leaves must survive `rvsadm -S -n | rvsadm -R` unchanged.
//!
//! rvsadm is a binary crate, so its modules are compiled into this target
//! from their source files (`#[path]`); the dataplane is the userspace
//! IPVS core (`rvs-lb`) with a fixed clock, behind the same `Admin` trait
//! the kernel client implements. Names come from fixed `/etc/hosts` and
//! `/etc/services` texts, never from the machine.
#![no_main]

use std::time::Instant;

use libfuzzer_sys::fuzz_target;
use rvs_model::admin::{Admin, AdminError, Op};
use rvs_model::{
    Connection, Daemon, DestinationStatus, Info, ServiceKey, ServiceStatus, Timeouts,
};

#[allow(dead_code)]
#[path = "../../crates/rvsadm/src/cli.rs"]
mod cli;
#[allow(dead_code)]
#[path = "../../crates/rvsadm/src/errors.rs"]
mod errors;
#[allow(dead_code)]
#[path = "../../crates/rvsadm/src/exec.rs"]
mod exec;
#[allow(dead_code)]
#[path = "../../crates/rvsadm/src/format.rs"]
mod format;
#[allow(dead_code)]
#[path = "../../crates/rvsadm/src/inet.rs"]
mod inet;
#[allow(dead_code)]
#[path = "../../crates/rvsadm/src/names.rs"]
mod names;
#[allow(dead_code)]
#[path = "../../crates/rvsadm/src/popt.rs"]
mod popt;
#[allow(dead_code)]
#[path = "../../crates/rvsadm/src/restore.rs"]
mod restore;
#[allow(dead_code)]
#[path = "../../crates/rvsadm/src/usage.rs"]
mod usage;

use cli::{Command, List, fmt};
use exec::{Ctx, Output};

const HOSTS: &str = "127.0.0.1 localhost\n::1 localhost ip6-localhost\n\
10.1.0.1 web1.example.org web1\nfd00::5 six-five\n";
const SERVICES: &str = "http 80/tcp www\nhttp 80/udp\nhttps 443/tcp\ndomain 53/udp\nsip 5060/udp\n";

/// The userspace core at a fixed instant, as an `Admin`.
struct CoreAdmin {
    core: rvs_lb::Core,
    now: Instant,
}

impl Admin for CoreAdmin {
    fn info(&mut self) -> Result<Info, AdminError> {
        Ok(self.core.info())
    }
    fn services(&mut self) -> Result<Vec<ServiceStatus>, AdminError> {
        Ok(self.core.services(self.now))
    }
    fn service(&mut self, key: &ServiceKey) -> Result<ServiceStatus, AdminError> {
        self.core.service(key, self.now)
    }
    fn destinations(&mut self, key: &ServiceKey) -> Result<Vec<DestinationStatus>, AdminError> {
        self.core.destinations(key, self.now)
    }
    fn timeouts(&mut self) -> Result<Timeouts, AdminError> {
        Ok(self.core.timeouts())
    }
    fn daemons(&mut self) -> Result<Vec<Daemon>, AdminError> {
        Ok(Vec::new())
    }
    fn connections(&mut self) -> Result<Vec<Connection>, AdminError> {
        Ok(self.core.connections(self.now))
    }
    fn apply(&mut self, op: &Op) -> Result<(), AdminError> {
        self.core.apply(op, self.now)
    }
}

/// Runs `command` with `stdin` against `admin`.
fn run(admin: &mut CoreAdmin, names: &names::Names, command: &Command, stdin: &[u8]) -> (u8, Output) {
    let info = admin.core.info();
    let mut ctx = Ctx {
        admin,
        info,
        names,
        program: "ipvsadm".to_owned(),
    };
    let mut out = Output::default();
    let code = exec::run(&mut ctx, command, stdin, &mut out).code();
    (code, out)
}

fn save() -> Command {
    Command::List {
        what: List::All,
        format: fmt::RULE | fmt::NUMERIC,
    }
}

fuzz_target!(|data: &[u8]| {
    // The splitter: only non-empty lines of non-empty words without
    // blanks, never the program name.
    for line in restore::split(data) {
        assert!(!line.is_empty());
        for word in &line {
            assert!(!word.is_empty() && word != "ipvsadm", "{line:?}");
            assert!(!word.contains([' ', '\t', '\n', '\r']), "{line:?}");
        }
    }

    let names = names::Names::from_text(HOSTS, SERVICES);
    let now = Instant::now();
    let mut first = CoreAdmin {
        core: rvs_lb::Core::new(),
        now,
    };
    let _ = run(&mut first, &names, &Command::Restore, data);
    let (code, saved) = run(&mut first, &names, &save(), &[]);
    assert_eq!((code, saved.stderr.as_str()), (0, ""));

    // What -S -n printed restores to the same state.
    let mut second = CoreAdmin {
        core: rvs_lb::Core::new(),
        now,
    };
    let (code, restored) = run(&mut second, &names, &Command::Restore, saved.stdout.as_bytes());
    assert_eq!(
        (code, restored.stderr.as_str()),
        (0, ""),
        "restoring\n{}",
        saved.stdout
    );
    let (_, again) = run(&mut second, &names, &save(), &[]);
    assert_eq!(again.stdout, saved.stdout);
});
