//! Who may use the admin socket, as root: another uid is kept out by the
//! socket's mode and a member of its group gets in (child processes that
//! drop to uid 65534), and a stale socket of another uid is not ours to
//! replace. Without root these tests skip (or fail under
//! `RVS_REQUIRE_PRIVILEGED=1`); `access_loopback.rs` has the rest.
//!
//! Child processes are this test binary run again on the `child_probe`
//! test, told what to do through environment variables: uid and gid are
//! process-wide, so they are not changed in the multi-threaded test
//! process itself.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code

mod common;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;

use common::{child, refused, stub, temp_dir};
use rvs_admin::{BindOptions, Occupant, Server, SocketGroup};

const NOBODY: u32 = 65534;
/// A gid no account on the test host has as its primary group.
const OTHER_GID: u32 = 4242;
const EACCES: i32 = 13;

const PROBE_CONNECT: &str = "RVS_ACCESS_PROBE_CONNECT";

/// Exit code of [`child_probe`] when it connected (an errno otherwise).
const CONNECTED: i32 = 42;

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// Does nothing in a normal run. Run again by the tests below with
/// `RVS_ACCESS_PROBE_CONNECT=PATH` it connects to PATH and exits with
/// the outcome.
#[test]
fn child_probe() {
    if let Some(path) = std::env::var_os(PROBE_CONNECT) {
        let code = match UnixStream::connect(&path) {
            Ok(_) => CONNECTED,
            Err(e) => e.raw_os_error().unwrap_or(1),
        };
        std::process::exit(code);
    }
}

fn connect_as(path: &Path, uid: u32, gid: u32) -> i32 {
    child(&[(PROBE_CONNECT, path.as_os_str())], Some((uid, gid)))
}

#[test]
fn another_uid_cannot_connect_and_a_group_member_can() {
    if !is_root() {
        rvs_testrig::skip(
            "another_uid_cannot_connect_and_a_group_member_can",
            &"switching to another uid needs root",
        );
        return;
    }
    let dir = temp_dir("uid");
    let path = dir.join("admin.sock");
    let listener = rvs_admin::bind(&path).unwrap();
    let server = Server::new(listener, stub()).unwrap().spawn().unwrap();
    assert_eq!(
        connect_as(&path, NOBODY, NOBODY),
        EACCES,
        "mode 0600 keeps nobody out"
    );
    // Control: the directory is reachable, it is the socket's mode that
    // keeps them out.
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o666)).unwrap();
    assert_eq!(connect_as(&path, NOBODY, NOBODY), CONNECTED);
    server.stop().unwrap();

    let path = dir.join("group.sock");
    let opts = BindOptions {
        group: Some(SocketGroup::Id(OTHER_GID)),
    };
    let listener = rvs_admin::bind_with(&path, &opts).unwrap();
    let server = Server::new(listener, stub()).unwrap().spawn().unwrap();
    assert_eq!(std::fs::metadata(&path).unwrap().gid(), OTHER_GID);
    assert_eq!(
        connect_as(&path, NOBODY, OTHER_GID),
        CONNECTED,
        "a member of the group"
    );
    assert_eq!(connect_as(&path, NOBODY, NOBODY), EACCES, "not a member");
    server.stop().unwrap();
}

#[test]
fn a_stale_socket_of_another_uid_is_refused() {
    if !is_root() {
        rvs_testrig::skip(
            "a_stale_socket_of_another_uid_is_refused",
            &"giving a socket to another uid needs root",
        );
        return;
    }
    let dir = temp_dir("foreign");
    let path = dir.join("admin.sock");
    drop(UnixListener::bind(&path).unwrap());
    std::os::unix::fs::lchown(&path, Some(NOBODY), Some(NOBODY)).unwrap();
    let occupant = refused(&path);
    assert_eq!(
        occupant,
        Occupant::ForeignSocket {
            uid: NOBODY,
            ours: 0
        }
    );
    assert!(occupant.to_string().contains("uid 65534"), "{occupant}");
    assert_eq!(std::fs::symlink_metadata(&path).unwrap().uid(), NOBODY);
}
