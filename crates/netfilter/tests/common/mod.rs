//! Shared helpers of the netns tests: running code inside a test
//! namespace, and the ipset CLI.

#![allow(dead_code, unreachable_pub)] // each test file uses part of it

use std::fs::File;

use nix::sched::{CloneFlags, setns};
use rvs_testrig::Netns;

/// Runs `f` on a thread that has joined `netns`'s network namespace, so
/// sockets it opens live there.
pub fn in_netns<T: Send + 'static>(netns: &Netns, f: impl FnOnce() -> T + Send + 'static) -> T {
    let path = format!("/run/netns/{}", netns.name());
    std::thread::spawn(move || {
        let file = File::open(&path).unwrap();
        setns(&file, CloneFlags::CLONE_NEWNET).unwrap();
        f()
    })
    .join()
    .unwrap()
}

/// Runs a shell script in the namespace and returns its stdout.
pub fn sh(netns: &Netns, script: &str) -> String {
    netns.sh(script).unwrap()
}

/// The `Members:` lines of `ipset list NAME` output.
pub fn cli_members(listing: &str) -> Vec<String> {
    let mut members: Vec<String> = listing
        .split("Members:\n")
        .nth(1)
        .unwrap_or_default()
        .lines()
        .take_while(|l| !l.is_empty())
        .map(str::to_owned)
        .collect();
    members.sort();
    members
}

/// The value of `Field: value` in `ipset list NAME` output.
pub fn cli_field<'a>(listing: &'a str, field: &str) -> &'a str {
    listing
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{field}: ")))
        .unwrap_or_default()
}
