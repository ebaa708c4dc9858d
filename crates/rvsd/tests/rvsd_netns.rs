//! An rvsd in another network namespace starts beside one here under the
//! same instance lock name: the lock is per network namespace (as root,
//! in a fresh namespace on the host).

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code

mod common;

use std::process::Command;

use common::{RVSD, Rvsd, STEP, lock_name};
use rvs_admin::Admin;
use rvs_testrig::process::run_bounded;

#[test]
fn an_rvsd_in_another_network_namespace_starts_beside_one_here() {
    let test = "an_rvsd_in_another_network_namespace_starts_beside_one_here";
    let Some(ns) = rvs_testrig::Netns::or_skip(test) else {
        return;
    };
    let lock = lock_name("netns");
    let here = Rvsd::start_with("netns-here", Command::new(RVSD), &lock, &[]);
    let there = Rvsd::start_with("netns-there", ns.command(RVSD), &lock, &[]);
    // Both serve their admin sockets (paths are not per namespace).
    assert_eq!(here.admin().info().unwrap().conn_table_size, 4096);
    assert_eq!(there.admin().info().unwrap().conn_table_size, 4096);
    // While in the first namespace the lock still holds.
    let (status, stderr) = run_bounded(
        Command::new(RVSD).args([
            "--admin-socket",
            "/nonexistent/never-created.sock",
            "--instance-lock",
            &lock,
        ]),
        STEP,
    )
    .unwrap();
    assert!(!status.success(), "{status:?}");
    assert!(
        stderr.contains(&format!("(pid {}: ", here.daemon.id())),
        "{stderr}"
    );
    assert!(there.terminate().success());
    assert!(here.terminate().success());
}
