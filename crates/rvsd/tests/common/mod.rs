//! The rvsd rig shared by the loopback and netns tests: an `rvsd`
//! process with its admin socket in a private directory, stopped with
//! SIGTERM within a bound.

#![allow(dead_code, unreachable_pub)] // each test file uses part of it

use std::path::PathBuf;
use std::process::{Command, ExitStatus, Stdio};
use std::time::Duration;

use rvs_admin::AdminClient;
use rvs_testrig::{Daemon, TempDir};

/// The bound of every wait.
pub const STEP: Duration = Duration::from_secs(5);
/// The binary under test.
pub const RVSD: &str = env!("CARGO_BIN_EXE_rvsd");

/// The instance lock of the test tagged `tag`.
pub fn lock_name(tag: &str) -> String {
    format!("rvsd-test-{tag}-{}", std::process::id())
}

/// A running `rvsd`, killed on drop.
pub struct Rvsd {
    pub daemon: Daemon,
    pub socket: PathBuf,
    _dir: TempDir,
}

impl Rvsd {
    /// Runs `rvsd` for `tag` with its own lock; waits for the socket.
    pub fn start(tag: &str) -> Rvsd {
        Rvsd::start_with(tag, Command::new(RVSD), &lock_name(tag), &[])
    }

    /// Runs `rvsd` (`program`, which may be a wrapper such as `ip netns
    /// exec`) with a socket in a fresh directory for `tag`, the instance
    /// lock `lock` and `extra` arguments; waits for the socket.
    pub fn start_with(tag: &str, mut program: Command, lock: &str, extra: &[&str]) -> Rvsd {
        let dir = TempDir::new(&format!("rvsd-test-{tag}")).unwrap();
        let socket = dir.join("admin.sock");
        let mut daemon = Daemon::spawn(
            program
                .arg("--admin-socket")
                .arg(&socket)
                .args(["--workers", "2", "--grace", "1", "--instance-lock", lock])
                .args(extra)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::inherit()),
        )
        .unwrap();
        rvs_testrig::eventually("rvsd creates its socket", STEP, || {
            if let Some(status) = daemon.exited().unwrap() {
                panic!("rvsd exited before creating its socket: {status}");
            }
            socket.exists()
        });
        Rvsd {
            daemon,
            socket,
            _dir: dir,
        }
    }

    /// A client of its admin socket.
    pub fn admin(&self) -> AdminClient {
        AdminClient::connect(&self.socket).unwrap()
    }

    /// [`Rvsd::stop`], consuming the rig.
    pub fn terminate(mut self) -> ExitStatus {
        self.stop()
    }

    /// Sends SIGTERM and waits (within `STEP`) for rvsd to exit; its
    /// directory stays until the rig is dropped.
    pub fn stop(&mut self) -> ExitStatus {
        self.daemon.terminate(STEP).unwrap()
    }
}
