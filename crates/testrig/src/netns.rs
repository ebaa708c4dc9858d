//! Fresh network namespaces on the host kernel.
//!
//! For tests of ipset, iptables and nftables programming against the host
//! kernel without touching the host's own tables. Programs run in a
//! namespace through `ip netns exec` ([`Netns::command`]), Rust code on a
//! thread that joined it ([`Netns::enter`]). A [`Netns`] is deleted (and
//! its processes killed) when dropped, including when the test panics;
//! namespaces left by killed test processes are removed the next time one
//! is created.

use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};

use nix::sched::{CloneFlags, setns};

use crate::{RigError, host};

const PREFIX: &str = "rvs-t";

/// A network namespace owned by the current test.
#[derive(Debug)]
pub struct Netns {
    name: String,
}

impl Netns {
    /// Creates a fresh namespace with loopback up. Needs root and iproute2.
    pub fn new() -> Result<Netns, RigError> {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        if !host::is_root() {
            return Err(RigError::Unavailable("network namespaces need root".into()));
        }
        if host::which("ip").is_none() {
            return Err(RigError::Unavailable(
                "`ip` not found: install Debian's iproute2".into(),
            ));
        }
        remove_stale();
        let name = format!(
            "{PREFIX}{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        host::run(
            Command::new("ip").args(["netns", "add", &name]),
            "create test namespace",
        )?;
        let netns = Netns { name };
        netns.run("ip", &["link", "set", "lo", "up"])?;
        Ok(netns)
    }

    /// Creates a namespace, or reports a skip for `test` (a failure when
    /// `RVS_REQUIRE_PRIVILEGED=1`) and returns `None`.
    pub fn or_skip(test: &str) -> Option<Netns> {
        match Netns::new() {
            Ok(netns) => Some(netns),
            Err(err) => {
                crate::skip(test, &err);
                None
            }
        }
    }

    /// The namespace's name (as `ip netns` knows it).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// A command that runs `program` inside the namespace.
    pub fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.name, program]);
        cmd
    }

    /// Runs `program args…` inside the namespace; fails unless it succeeds.
    pub fn run(&self, program: &str, args: &[&str]) -> Result<Output, RigError> {
        let mut cmd = self.command(program);
        cmd.args(args);
        host::run(&mut cmd, &format!("in namespace {}", self.name))
    }

    /// Runs `f` on a thread that has joined the namespace, so that the
    /// sockets it opens (netlink included) live there, and returns what
    /// it returns. A panic in `f` is resumed on the calling thread.
    pub fn enter<T: Send>(&self, f: impl FnOnce() -> T + Send) -> Result<T, RigError> {
        let path = format!("/run/netns/{}", self.name);
        let joined = std::thread::scope(|scope| {
            scope
                .spawn(|| -> Result<T, RigError> {
                    let file =
                        std::fs::File::open(&path).map_err(RigError::io(format!("open {path}")))?;
                    setns(&file, CloneFlags::CLONE_NEWNET).map_err(|errno| RigError::Io {
                        context: format!("join namespace {path}"),
                        source: errno.into(),
                    })?;
                    Ok(f())
                })
                .join()
        });
        match joined {
            Ok(result) => result,
            Err(panic) => std::panic::resume_unwind(panic),
        }
    }

    /// Runs a `sh -c` script inside the namespace and returns its stdout;
    /// fails unless it exits 0.
    pub fn sh(&self, script: &str) -> Result<String, RigError> {
        let output = self.run("sh", &["-c", script])?;
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    }

    /// Joins this namespace and `other` with a veth pair named `veth0` on
    /// both sides, addressed `addr_here` and `addr_there` (CIDR notation).
    pub fn link(&self, other: &Netns, addr_here: &str, addr_there: &str) -> Result<(), RigError> {
        self.run(
            "ip",
            &[
                "link",
                "add",
                "veth0",
                "type",
                "veth",
                "peer",
                "name",
                "veth0",
                "netns",
                other.name(),
            ],
        )?;
        self.run("ip", &["addr", "add", addr_here, "dev", "veth0"])?;
        self.run("ip", &["link", "set", "veth0", "up"])?;
        other.run("ip", &["addr", "add", addr_there, "dev", "veth0"])?;
        other.run("ip", &["link", "set", "veth0", "up"])?;
        Ok(())
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        delete(&self.name);
    }
}

/// Kills what runs in namespace `name` and deletes it.
fn delete(name: &str) {
    if let Ok(output) = Command::new("ip").args(["netns", "pids", name]).output() {
        for pid in String::from_utf8_lossy(&output.stdout).split_whitespace() {
            let _ = Command::new("kill").args(["-9", pid]).output();
        }
    }
    let _ = Command::new("ip").args(["netns", "delete", name]).output();
}

/// Deletes namespaces whose creating test process no longer exists.
fn remove_stale() {
    let Ok(entries) = std::fs::read_dir("/run/netns") else {
        return;
    };
    for entry in entries.filter_map(Result::ok) {
        let Ok(name) = entry.file_name().into_string() else {
            continue;
        };
        let Some(pid) = name
            .strip_prefix(PREFIX)
            .and_then(|rest| rest.split('-').next())
            .and_then(|pid| pid.parse::<u32>().ok())
        else {
            continue;
        };
        if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            delete(&name);
        }
    }
}
