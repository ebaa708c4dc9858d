//! The rvsd rig shared by the loopback and netns tests: an `rvsd`
//! process with its admin socket in a private directory, stopped with
//! SIGTERM within a bound, and a bounded run of a command that must end.

#![allow(dead_code, unreachable_pub)] // each test file uses part of it

use std::io::Read as _;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use rvs_admin::AdminClient;

/// The bound of every wait.
pub const STEP: Duration = Duration::from_secs(5);
/// The binary under test.
pub const RVSD: &str = env!("CARGO_BIN_EXE_rvsd");

/// The instance lock of the test tagged `tag`.
pub fn lock_name(tag: &str) -> String {
    format!("rvsd-test-{tag}-{}", std::process::id())
}

/// A directory removed on drop.
pub struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A running `rvsd`, killed on drop.
pub struct Rvsd {
    pub child: Child,
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
        let dir = std::env::temp_dir().join(format!("rvsd-test-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let socket = dir.join("admin.sock");
        let child = program
            .arg("--admin-socket")
            .arg(&socket)
            .args(["--workers", "2", "--grace", "1", "--instance-lock", lock])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let mut rvsd = Rvsd {
            child,
            socket,
            _dir: TempDir(dir),
        };
        let deadline = Instant::now() + STEP;
        while !rvsd.socket.exists() {
            if let Some(status) = rvsd.child.try_wait().unwrap() {
                panic!("rvsd exited before creating its socket: {status}");
            }
            assert!(Instant::now() < deadline, "rvsd did not create its socket");
            std::thread::sleep(Duration::from_millis(20));
        }
        rvsd
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
        let pid = self.child.id().to_string();
        assert!(
            Command::new("kill")
                .args(["-TERM", &pid])
                .status()
                .unwrap()
                .success()
        );
        let deadline = Instant::now() + STEP;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < deadline, "rvsd did not stop on SIGTERM");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Rvsd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `command` to its end (within `STEP`): its status and stderr.
pub fn run_bounded(command: &mut Command) -> (ExitStatus, String) {
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + STEP;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{command:?} was still running after {STEP:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    (status, stderr)
}
