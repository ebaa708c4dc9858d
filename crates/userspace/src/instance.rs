//! One userspace dataplane per network namespace.
//!
//! This module owns [`InstanceLock`]: a listening unix socket bound to an
//! **abstract** address (`@rvs-userspace-dataplane` by default). Abstract
//! addresses live in the network namespace, not in the file system, so
//!
//! * two dataplanes in one namespace (which would bind the same virtual
//!   addresses through `SO_REUSEPORT` and silently share their traffic,
//!   each with its own configuration) cannot both hold it, while
//!   dataplanes in different namespaces never see each other's lock;
//! * the kernel releases it when its holder exits, however it exits:
//!   there is no stale lock to clean up.
//!
//! Whoever finds the lock taken connects to it and reads the holder's pid
//! (`SO_PEERCRED`) and command line (`/proc/PID/cmdline`) to name it in
//! the error. Nobody accepts those connections; they wait in the
//! listener's backlog until the holder exits, and the connect is
//! non-blocking so a full backlog only costs the pid in the message.
//!
//! Abstract addresses carry no permissions: any process in the namespace
//! could take the name first and keep dataplanes from starting (the error
//! then names that process). A different lock name
//! ([`crate::Options::instance_lock`]) is a separate lock, for tests that
//! run several dataplanes side by side.

use std::fmt;
use std::io;
use std::os::fd::AsRawFd;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixListener};

use nix::sys::socket::{
    AddressFamily, SockFlag, SockType, UnixAddr, connect, getsockopt, socket, sockopt,
};

use crate::UserspaceError;

/// The lock name every dataplane takes unless told otherwise.
pub const DEFAULT_INSTANCE_LOCK: &str = "rvs-userspace-dataplane";

/// How often to retry when the holder goes away while being identified.
const ATTEMPTS: usize = 3;

/// How much of the holder's command line an error quotes.
const CMDLINE_MAX: usize = 400;

/// Proof that this process runs the only userspace dataplane of its
/// network namespace (for one lock name); released on drop.
#[derive(Debug)]
pub struct InstanceLock {
    name: String,
    _listener: UnixListener,
}

/// The process holding a lock, as far as it could be identified.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Holder {
    /// Its pid in our pid namespace (`None`: could not be told).
    pub pid: Option<i32>,
    /// Its command line, arguments separated by spaces (`None`: not
    /// readable).
    pub cmdline: Option<String>,
}

impl fmt::Display for Holder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.pid, &self.cmdline) {
            (Some(pid), Some(cmdline)) => write!(f, "pid {pid}: {cmdline}"),
            (Some(pid), None) => write!(f, "pid {pid}"),
            (None, _) => f.write_str("pid unknown"),
        }
    }
}

impl InstanceLock {
    /// Takes the lock `name` in this network namespace, or fails with
    /// [`UserspaceError::AlreadyRunning`] naming the holder.
    pub fn acquire(name: &str) -> Result<InstanceLock, UserspaceError> {
        let failed = |source| UserspaceError::InstanceLock {
            name: name.to_owned(),
            source,
        };
        let addr = SocketAddr::from_abstract_name(name.as_bytes()).map_err(failed)?;
        let mut holder = Holder::default();
        for _ in 0..ATTEMPTS {
            match UnixListener::bind_addr(&addr) {
                Ok(listener) => {
                    tracing::debug!(lock = name, "took the userspace dataplane's instance lock");
                    return Ok(InstanceLock {
                        name: name.to_owned(),
                        _listener: listener,
                    });
                }
                Err(e) if e.kind() == io::ErrorKind::AddrInUse => match identify(name) {
                    Ok(found) => holder = found,
                    // It went away meanwhile: try again.
                    Err(nix::errno::Errno::ECONNREFUSED) => {}
                    Err(_) => holder = Holder::default(),
                },
                Err(e) => return Err(failed(e)),
            }
        }
        Err(UserspaceError::AlreadyRunning {
            lock: name.to_owned(),
            holder,
        })
    }

    /// The lock's name.
    pub fn name(&self) -> &str {
        &self.name
    }
}

/// Connects to the lock and reads who listens on it.
fn identify(name: &str) -> nix::Result<Holder> {
    let fd = socket(
        AddressFamily::Unix,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
        None,
    )?;
    let addr = UnixAddr::new_abstract(name.as_bytes())?;
    match connect(fd.as_raw_fd(), &addr) {
        Ok(()) => {}
        // A full backlog: it runs, but who it is cannot be asked.
        Err(nix::errno::Errno::EAGAIN) => return Ok(Holder::default()),
        Err(e) => return Err(e),
    }
    let pid = getsockopt(&fd, sockopt::PeerCredentials)?.pid();
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline"))
        .ok()
        .map(|raw| {
            raw.split(|b| *b == 0)
                .filter(|arg| !arg.is_empty())
                .map(String::from_utf8_lossy)
                .collect::<Vec<_>>()
                .join(" ")
        })
        .filter(|line| !line.is_empty())
        .map(|line| match line.char_indices().nth(CMDLINE_MAX) {
            Some((cut, _)) => format!("{}...", &line[..cut]),
            None => line,
        });
    Ok(Holder {
        pid: (pid > 0).then_some(pid),
        cmdline,
    })
}
