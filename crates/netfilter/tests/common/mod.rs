//! Shared helpers of the netns tests: shell scripts in a test namespace,
//! and reading the ipset CLI's listings.

#![allow(dead_code, unreachable_pub)] // each test file uses part of it

use rvs_testrig::Netns;

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
