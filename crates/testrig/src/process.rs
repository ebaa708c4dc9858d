//! Processes under test on the host.
//!
//! This module owns the life of the daemons end-to-end tests start (rvsd,
//! rvs-proxy): a [`Daemon`] is killed when dropped, so a failing test
//! leaves nothing running, and [`Daemon::terminate`] checks that SIGTERM
//! stops it within a bound. [`run_bounded`] runs a command that must end
//! by itself, within a bound. Nothing here waits without a limit.

use std::io::Read as _;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::{RigError, host};

/// How often a bounded wait looks again.
const POLL: Duration = Duration::from_millis(20);

/// A process started by a test; killed (SIGKILL) and reaped when dropped.
#[derive(Debug)]
pub struct Daemon {
    child: Child,
    line: String,
}

impl Daemon {
    /// Starts `command` as it is set up (its stdio included).
    pub fn spawn(command: &mut Command) -> Result<Daemon, RigError> {
        let line = host::describe(command);
        let child = command
            .spawn()
            .map_err(RigError::io(format!("start `{line}`")))?;
        Ok(Daemon { child, line })
    }

    /// Its process id.
    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// How it exited, or `None` while it runs.
    pub fn exited(&mut self) -> Result<Option<ExitStatus>, RigError> {
        self.child
            .try_wait()
            .map_err(RigError::io(format!("wait for `{}`", self.line)))
    }

    /// Sends SIGTERM and waits for it to exit, at most `within`.
    pub fn terminate(&mut self, within: Duration) -> Result<ExitStatus, RigError> {
        let pid = i32::try_from(self.child.id()).map_err(|_| RigError::Deadline {
            what: format!("`{}` to have a valid pid", self.line),
            within,
        })?;
        // An error means it is gone already; the wait below says how.
        let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.exited()? {
                return Ok(status);
            }
            if Instant::now() >= deadline {
                return Err(RigError::Deadline {
                    what: format!("`{}` to stop on SIGTERM", self.line),
                    within,
                });
            }
            std::thread::sleep(POLL);
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `command` (stdin empty, stdout discarded) to its end, at most
/// `within`: its exit status and what it wrote to stderr. A command still
/// running then is killed and reported as [`RigError::Deadline`].
pub fn run_bounded(
    command: &mut Command,
    within: Duration,
) -> Result<(ExitStatus, String), RigError> {
    let mut daemon = Daemon::spawn(
        command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped()),
    )?;
    // Read on a thread: a chatty command must not block on a full pipe.
    let reader = daemon.child.stderr.take().map(|mut pipe| {
        std::thread::spawn(move || {
            let mut text = String::new();
            pipe.read_to_string(&mut text).map(|_| text)
        })
    });
    let deadline = Instant::now() + within;
    let status = loop {
        if let Some(status) = daemon.exited()? {
            break status;
        }
        if Instant::now() >= deadline {
            return Err(RigError::Deadline {
                what: format!("`{}` to finish", daemon.line),
                within,
            });
        }
        std::thread::sleep(POLL);
    };
    let stderr = match reader.map(std::thread::JoinHandle::join) {
        Some(Ok(read)) => {
            read.map_err(RigError::io(format!("read stderr of `{}`", daemon.line)))?
        }
        Some(Err(panic)) => std::panic::resume_unwind(panic),
        None => String::new(),
    };
    Ok((status, stderr))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sigterm_stops_a_daemon_within_the_bound() {
        let Ok(mut sleeper) = Daemon::spawn(Command::new("sleep").arg("30")) else {
            panic!("cannot start sleep");
        };
        assert!(sleeper.exited().is_ok_and(|s| s.is_none()));
        let status = sleeper.terminate(Duration::from_secs(5));
        assert!(status.is_ok_and(|s| !s.success()), "killed by SIGTERM");
    }

    #[test]
    fn a_bounded_run_returns_stderr_or_gives_up() {
        let done = run_bounded(
            Command::new("sh").args(["-c", "echo oops >&2; exit 3"]),
            Duration::from_secs(5),
        );
        let Ok((status, stderr)) = done else {
            panic!("{done:?}");
        };
        assert_eq!((status.code(), stderr.as_str()), (Some(3), "oops\n"));
        let stuck = run_bounded(Command::new("sleep").arg("30"), Duration::from_millis(100));
        assert!(matches!(stuck, Err(RigError::Deadline { .. })), "{stuck:?}");
    }
}
