//! What the admin socket's tests share: a stub dataplane to serve; and
//! for the access tests, loopback and root alike, a private directory,
//! the refusal of an occupied path, and running this test binary again as
//! a child process (on its `child_probe` test) to change what is
//! process-wide.

#![allow(dead_code, unreachable_pub)] // each test file uses part of it

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};

use rvs_admin::{Admin, BindError, Occupant, SharedAdmin};
use rvs_model::admin::{AdminError, Op};
use rvs_model::{Connection, Daemon, DestinationStatus, Info, ServiceKey, ServiceStatus, Timeouts};
use rvs_testrig::TempDir;

/// A dataplane that answers `Info` and accepts every change but deleting
/// a service (refused as the kernel refuses a missing one).
pub struct Stub;

impl Admin for Stub {
    fn info(&mut self) -> Result<Info, AdminError> {
        Ok(Info {
            version: 1,
            conn_table_size: 7,
        })
    }
    fn services(&mut self) -> Result<Vec<ServiceStatus>, AdminError> {
        Ok(Vec::new())
    }
    fn service(&mut self, _: &ServiceKey) -> Result<ServiceStatus, AdminError> {
        Err(AdminError::refused(
            rvs_model::admin::OpKind::GetServices,
            rvs_model::admin::errno::ESRCH,
        ))
    }
    fn destinations(&mut self, _: &ServiceKey) -> Result<Vec<DestinationStatus>, AdminError> {
        Ok(Vec::new())
    }
    fn timeouts(&mut self) -> Result<Timeouts, AdminError> {
        Ok(Timeouts::default())
    }
    fn daemons(&mut self) -> Result<Vec<Daemon>, AdminError> {
        Ok(Vec::new())
    }
    fn connections(&mut self) -> Result<Vec<Connection>, AdminError> {
        Ok(Vec::new())
    }
    fn apply(&mut self, op: &Op) -> Result<(), AdminError> {
        match op {
            Op::DeleteService(_) => Err(AdminError::refused(
                op.kind(),
                rvs_model::admin::errno::ESRCH,
            )),
            _ => Ok(()),
        }
    }
}

/// A [`Stub`] to serve.
pub fn stub() -> SharedAdmin {
    Arc::new(Mutex::new(Stub))
}

/// A fresh directory for `name` (mode 0755, so other uids reach the
/// socket's own mode), removed on drop.
pub fn temp_dir(name: &str) -> TempDir {
    let dir = TempDir::new(&format!("access-{name}")).unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    dir
}

/// The gid files created in `dir` get: this process's effective gid.
pub fn gid(dir: &TempDir) -> u32 {
    std::fs::metadata(dir.path()).unwrap().gid()
}

/// The permission bits of `path` itself (not of a symlink's target).
pub fn mode(path: &Path) -> u32 {
    std::fs::symlink_metadata(path).unwrap().mode() & 0o7777
}

/// Binds at `path`, which must be refused as occupied; returns the
/// occupant (and checks that the message names the path).
pub fn refused(path: &Path) -> Occupant {
    match rvs_admin::bind(path) {
        Err(BindError::Occupied {
            path: named,
            occupant,
        }) => {
            assert_eq!(named, path);
            let text = BindError::Occupied {
                path: named,
                occupant: occupant.clone(),
            }
            .to_string();
            assert!(text.contains(&*path.to_string_lossy()), "{text}");
            occupant
        }
        other => panic!("{}: expected a refusal, got {other:?}", path.display()),
    }
}

/// Runs this test binary's `child_probe` test with `envs`, as `ids`
/// (uid, gid) if given, and returns its exit code.
pub fn child(envs: &[(&str, &std::ffi::OsStr)], ids: Option<(u32, u32)>) -> i32 {
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args(["--exact", "child_probe", "--test-threads=1", "--quiet"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit());
    for (name, value) in envs {
        cmd.env(name, value);
    }
    if let Some((uid, gid)) = ids {
        // std drops the supplementary groups too when root sets a uid.
        cmd.uid(uid).gid(gid);
    }
    cmd.status().unwrap().code().unwrap()
}
