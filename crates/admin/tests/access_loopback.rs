//! Who may use the admin socket, and what binding it may replace, as
//! the socket's owner: the socket's mode whatever the umask, the group
//! option, the refusal of anything at the path that is not a stale
//! socket of ours, and stopping the server when its socket file is gone
//! or replaced. Keeping another uid out needs root: `access_root.rs`.
//!
//! Child processes are this test binary run again on the `child_probe`
//! test, told what to do through environment variables: the umask is
//! process-wide, so it is not changed in the multi-threaded test process
//! itself.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code

mod common;

use std::io::Write as _;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::os::unix::net::UnixListener;
use std::path::Path;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::{child, gid, mode, refused, stub, temp_dir};
use rvs_admin::{Admin, AdminClient, BindError, BindOptions, Occupant, Server, SocketGroup};
use rvs_testrig::TempDir;

/// Entries of `dir` other than the ones named: nothing may be left behind.
fn leftovers(dir: &TempDir, expected: &[&str]) -> Vec<String> {
    std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| !expected.contains(&name.as_str()))
        .collect()
}

// ---- child processes ------------------------------------------------------

const PROBE_BIND: &str = "RVS_ACCESS_PROBE_BIND";
const PROBE_UMASK: &str = "RVS_ACCESS_PROBE_UMASK";
const PROBE_GROUP: &str = "RVS_ACCESS_PROBE_GROUP";

/// Exit codes of [`child_probe`].
const BOUND: i32 = 43;
const BIND_FAILED: i32 = 3;

/// Does nothing in a normal run. Run again by the tests below with
/// `RVS_ACCESS_PROBE_BIND=PATH` it sets the umask to
/// `RVS_ACCESS_PROBE_UMASK` (octal) and creates the admin socket at PATH
/// (for `RVS_ACCESS_PROBE_GROUP`, if set), leaving the file. It exits
/// with the outcome.
#[test]
fn child_probe() {
    if let Some(path) = std::env::var_os(PROBE_BIND) {
        let umask = std::env::var(PROBE_UMASK).unwrap();
        let umask = u32::from_str_radix(&umask, 8).unwrap();
        nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(umask));
        let group = std::env::var(PROBE_GROUP)
            .ok()
            .map(|g| g.parse::<SocketGroup>().unwrap());
        let code = match rvs_admin::bind_with(&path, &BindOptions { group }) {
            Ok(listener) => {
                // Keep the file for the parent to inspect.
                drop(listener.into_listener());
                BOUND
            }
            Err(e) => {
                let _ = writeln!(std::io::stderr(), "child bind: {e}");
                BIND_FAILED
            }
        };
        std::process::exit(code);
    }
}

fn bind_under_umask(path: &Path, umask: &str, group: Option<u32>) -> i32 {
    let group = group.map(|g| g.to_string());
    let mut envs = vec![
        (PROBE_BIND, path.as_os_str()),
        (PROBE_UMASK, std::ffi::OsStr::new(umask)),
    ];
    if let Some(group) = &group {
        envs.push((PROBE_GROUP, std::ffi::OsStr::new(group)));
    }
    child(&envs, None)
}

// ---- mode and group -------------------------------------------------------

#[test]
fn the_socket_is_owner_only() {
    let dir = temp_dir("mode");
    let path = dir.join("admin.sock");
    let listener = rvs_admin::bind(&path).unwrap();
    assert_eq!(listener.path(), Some(path.as_path()));
    let meta = std::fs::symlink_metadata(&path).unwrap();
    assert!(meta.file_type().is_socket());
    assert_eq!(mode(&path), 0o600);
    assert_eq!(meta.uid(), nix::unistd::geteuid().as_raw());
    // The private directory it was created in is gone.
    assert_eq!(leftovers(&dir, &["admin.sock"]), Vec::<String>::new());
    // The owner can use it.
    let server = Server::new(listener, stub()).unwrap().spawn().unwrap();
    assert_eq!(
        AdminClient::connect(&path)
            .unwrap()
            .info()
            .unwrap()
            .conn_table_size,
        7
    );
    server.stop().unwrap();
}

#[test]
fn the_mode_is_0600_or_0660_whatever_the_umask() {
    let dir = temp_dir("umask");
    for umask in ["000", "002", "077", "277"] {
        let path = dir.join(format!("owner-{umask}.sock"));
        assert_eq!(bind_under_umask(&path, umask, None), BOUND, "umask {umask}");
        assert_eq!(mode(&path), 0o600, "umask {umask}");
        let path = dir.join(format!("group-{umask}.sock"));
        assert_eq!(
            bind_under_umask(&path, umask, Some(gid(&dir))),
            BOUND,
            "umask {umask}"
        );
        assert_eq!(mode(&path), 0o660, "umask {umask}");
        assert_eq!(std::fs::metadata(&path).unwrap().gid(), gid(&dir));
    }
    let mut left = leftovers(&dir, &[]);
    left.retain(|name| !name.ends_with(".sock"));
    assert!(left.is_empty(), "{left:?}");
}

#[test]
fn a_group_makes_the_socket_0660_and_group_owned() {
    let dir = temp_dir("group");
    let path = dir.join("admin.sock");
    let opts = BindOptions {
        group: Some(SocketGroup::Id(gid(&dir))),
    };
    let listener = rvs_admin::bind_with(&path, &opts).unwrap();
    assert_eq!(mode(&path), 0o660);
    assert_eq!(std::fs::metadata(&path).unwrap().gid(), gid(&dir));
    drop(listener);
    assert!(!path.exists(), "dropping the listener removes its file");
}

#[test]
fn groups_parse_as_ids_or_names_and_unknown_names_are_refused() {
    assert_eq!(
        "4242".parse::<SocketGroup>().unwrap(),
        SocketGroup::Id(4242)
    );
    assert_eq!(
        "rvs-admins".parse::<SocketGroup>().unwrap(),
        SocketGroup::Name("rvs-admins".into())
    );
    assert!("".parse::<SocketGroup>().is_err());
    assert!("99999999999".parse::<SocketGroup>().is_err());

    let dir = temp_dir("nogroup");
    let path = dir.join("admin.sock");
    let opts = BindOptions {
        group: Some(SocketGroup::Name("rvs-no-such-group".into())),
    };
    let err = rvs_admin::bind_with(&path, &opts).unwrap_err();
    assert!(matches!(err, BindError::UnknownGroup { .. }), "{err:?}");
    let text = err.to_string();
    assert!(
        text.contains("rvs-no-such-group") && text.contains("admin.sock"),
        "{text}"
    );
    assert!(!path.exists());
    assert!(leftovers(&dir, &[]).is_empty());
}

// ---- what is at the path --------------------------------------------------

#[test]
fn symlinks_files_directories_and_fifos_are_never_replaced() {
    let dir = temp_dir("occupied");
    let elsewhere = temp_dir("occupied-elsewhere");

    // A dangling symlink: nothing is created where it points.
    let target = elsewhere.join("created-through-the-link.sock");
    let link = dir.join("dangling.sock");
    std::os::unix::fs::symlink(&target, &link).unwrap();
    assert_eq!(
        refused(&link),
        Occupant::Symlink {
            target: target.clone()
        }
    );
    assert!(!target.exists());
    assert!(
        std::fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink()
    );

    // A symlink to a file: neither is touched.
    let file = elsewhere.join("precious");
    std::fs::write(&file, "keep me").unwrap();
    let link = dir.join("link.sock");
    std::os::unix::fs::symlink(&file, &link).unwrap();
    let occupant = refused(&link);
    assert_eq!(
        occupant,
        Occupant::Symlink {
            target: file.clone()
        }
    );
    assert!(occupant.to_string().contains("symbolic link"), "{occupant}");
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "keep me");

    // A symlink to a stale socket of ours is still a symlink.
    let stale = elsewhere.join("stale.sock");
    drop(UnixListener::bind(&stale).unwrap());
    let link = dir.join("link-to-socket.sock");
    std::os::unix::fs::symlink(&stale, &link).unwrap();
    assert!(matches!(refused(&link), Occupant::Symlink { .. }));
    assert!(stale.exists());

    let file = dir.join("file.sock");
    std::fs::write(&file, "keep me too").unwrap();
    assert_eq!(refused(&file), Occupant::RegularFile);
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "keep me too");

    let sub = dir.join("dir.sock");
    std::fs::create_dir(&sub).unwrap();
    assert_eq!(refused(&sub), Occupant::Directory);
    assert!(sub.is_dir());

    let fifo = dir.join("fifo.sock");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    assert_eq!(refused(&fifo), Occupant::Special);

    // No private directory is left behind by any refusal.
    let mut names = leftovers(&dir, &[]);
    names.sort();
    assert_eq!(
        names,
        [
            "dangling.sock",
            "dir.sock",
            "fifo.sock",
            "file.sock",
            "link-to-socket.sock",
            "link.sock"
        ]
    );
}

#[test]
fn a_live_socket_is_refused_and_keeps_serving() {
    let dir = temp_dir("live");
    let path = dir.join("admin.sock");
    let first = Server::new(rvs_admin::bind(&path).unwrap(), stub())
        .unwrap()
        .spawn()
        .unwrap();
    let occupant = refused(&path);
    assert_eq!(occupant, Occupant::LiveSocket);
    let err = rvs_admin::bind(&path).unwrap_err().to_string();
    assert!(
        err.contains("running server") && err.contains("admin.sock"),
        "{err}"
    );
    assert_eq!(
        AdminClient::connect(&path).unwrap().info().unwrap().version,
        1
    );
    first.stop().unwrap();
}

#[test]
fn a_stale_socket_of_ours_is_replaced() {
    let dir = temp_dir("stale");
    let path = dir.join("admin.sock");
    // Bound and closed without removing the file: nobody listens.
    drop(UnixListener::bind(&path).unwrap());
    assert!(path.exists());
    let server = Server::new(rvs_admin::bind(&path).unwrap(), stub())
        .unwrap()
        .spawn()
        .unwrap();
    assert_eq!(mode(&path), 0o600);
    assert_eq!(
        AdminClient::connect(&path).unwrap().info().unwrap().version,
        1
    );
    server.stop().unwrap();
    assert!(!path.exists());
}

// ---- stopping -------------------------------------------------------------

/// Stops `server` on another thread; fails if that takes over 2 s.
fn stop_within_two_seconds(server: rvs_admin::RunningServer) {
    let (done, finished) = mpsc::channel();
    let began = Instant::now();
    std::thread::spawn(move || {
        let _ = done.send(server.stop());
    });
    let result = finished
        .recv_timeout(Duration::from_secs(2))
        .expect("the server did not stop within 2 s");
    result.unwrap();
    assert!(began.elapsed() < Duration::from_secs(2));
}

#[test]
fn stopping_does_not_need_the_socket_file() {
    let dir = temp_dir("removed");
    let path = dir.join("admin.sock");
    let server = Server::new(rvs_admin::bind(&path).unwrap(), stub())
        .unwrap()
        .spawn()
        .unwrap();
    let mut idle = AdminClient::connect(&path).unwrap();
    assert!(idle.info().is_ok());
    // A tmp cleaner or an operator removes it.
    std::fs::remove_file(&path).unwrap();
    stop_within_two_seconds(server);
    assert!(idle.info().is_err(), "open connections are closed too");
}

#[test]
fn stopping_leaves_a_file_that_replaced_the_socket() {
    let dir = temp_dir("replaced");
    let path = dir.join("admin.sock");
    let server = Server::new(rvs_admin::bind(&path).unwrap(), stub())
        .unwrap()
        .spawn()
        .unwrap();
    std::fs::remove_file(&path).unwrap();
    // Another server's socket (nobody listens, but it is not ours to remove).
    let other = UnixListener::bind(&path).unwrap();
    stop_within_two_seconds(server);
    assert!(
        std::fs::symlink_metadata(&path)
            .unwrap()
            .file_type()
            .is_socket()
    );
    drop(other);

    let path = dir.join("file");
    let server = Server::new(rvs_admin::bind(&path).unwrap(), stub())
        .unwrap()
        .spawn()
        .unwrap();
    std::fs::remove_file(&path).unwrap();
    std::fs::write(&path, "not a socket").unwrap();
    stop_within_two_seconds(server);
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "not a socket");
}

#[test]
fn stopping_removes_the_socket_it_created_but_not_a_plain_listeners() {
    let dir = temp_dir("remove");
    let path = dir.join("admin.sock");
    let server = Server::new(rvs_admin::bind(&path).unwrap(), stub())
        .unwrap()
        .spawn()
        .unwrap();
    stop_within_two_seconds(server);
    assert!(std::fs::symlink_metadata(&path).is_err());

    // A listener the caller bound itself: the file is the caller's.
    let path = dir.join("plain.sock");
    let server = Server::new(UnixListener::bind(&path).unwrap(), stub())
        .unwrap()
        .spawn()
        .unwrap();
    assert_eq!(
        AdminClient::connect(&path).unwrap().info().unwrap().version,
        1
    );
    stop_within_two_seconds(server);
    assert!(path.exists());
}
