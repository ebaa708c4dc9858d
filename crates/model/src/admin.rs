//! The admin surface every dataplane offers: what `ipvsadm` can do.
//!
//! [`Admin`] is implemented by the kernel dataplane (generic netlink) and
//! by the userspace dataplane (over its admin socket), so `rvsadm` and the
//! proxy's reconciler drive both through one interface. Changes are
//! expressed as [`Op`] values so they can be batched and sent over a wire.
//! Refusals carry the errno the kernel would give ([`errno`]), which lets
//! `rvsadm` print ipvsadm's exact messages for either dataplane.

use std::fmt;
use std::net::SocketAddr;

use crate::{
    Connection, Daemon, DaemonState, Destination, DestinationStatus, Info, Service, ServiceKey,
    ServiceStatus, Timeouts,
};

/// Errno values the IPVS control path returns (Linux numbering), which
/// userspace dataplanes reproduce.
pub mod errno {
    /// Operation not permitted (no CAP_NET_ADMIN).
    pub const EPERM: i32 = 1;
    /// No such destination / scheduler module / sync daemon.
    pub const ENOENT: i32 = 2;
    /// No such service.
    pub const ESRCH: i32 = 3;
    /// Out of memory.
    pub const ENOMEM: i32 = 12;
    /// Object exists.
    pub const EEXIST: i32 = 17;
    /// Invalid argument.
    pub const EINVAL: i32 = 22;
    /// Protocol not available (IPVS not loaded).
    pub const ENOPROTOOPT: i32 = 92;
    /// Operation not supported.
    pub const EOPNOTSUPP: i32 = 95;
    /// Operation already in progress / daemon already running.
    pub const EALREADY: i32 = 114;
    /// Device or resource busy.
    pub const EBUSY: i32 = 16;
    /// Out of range: negative weight, or lower threshold above upper.
    pub const ERANGE: i32 = 34;

    /// Linux's symbolic names, indexed by errno (0 has none).
    const NAMES: [&str; 134] = [
        "",
        "EPERM",
        "ENOENT",
        "ESRCH",
        "EINTR",
        "EIO",
        "ENXIO",
        "E2BIG",
        "ENOEXEC",
        "EBADF",
        "ECHILD",
        "EAGAIN",
        "ENOMEM",
        "EACCES",
        "EFAULT",
        "ENOTBLK",
        "EBUSY",
        "EEXIST",
        "EXDEV",
        "ENODEV",
        "ENOTDIR",
        "EISDIR",
        "EINVAL",
        "ENFILE",
        "EMFILE",
        "ENOTTY",
        "ETXTBSY",
        "EFBIG",
        "ENOSPC",
        "ESPIPE",
        "EROFS",
        "EMLINK",
        "EPIPE",
        "EDOM",
        "ERANGE",
        "EDEADLK",
        "ENAMETOOLONG",
        "ENOLCK",
        "ENOSYS",
        "ENOTEMPTY",
        "ELOOP",
        "",
        "ENOMSG",
        "EIDRM",
        "ECHRNG",
        "EL2NSYNC",
        "EL3HLT",
        "EL3RST",
        "ELNRNG",
        "EUNATCH",
        "ENOCSI",
        "EL2HLT",
        "EBADE",
        "EBADR",
        "EXFULL",
        "ENOANO",
        "EBADRQC",
        "EBADSLT",
        "",
        "EBFONT",
        "ENOSTR",
        "ENODATA",
        "ETIME",
        "ENOSR",
        "ENONET",
        "ENOPKG",
        "EREMOTE",
        "ENOLINK",
        "EADV",
        "ESRMNT",
        "ECOMM",
        "EPROTO",
        "EMULTIHOP",
        "EDOTDOT",
        "EBADMSG",
        "EOVERFLOW",
        "ENOTUNIQ",
        "EBADFD",
        "EREMCHG",
        "ELIBACC",
        "ELIBBAD",
        "ELIBSCN",
        "ELIBMAX",
        "ELIBEXEC",
        "EILSEQ",
        "ERESTART",
        "ESTRPIPE",
        "EUSERS",
        "ENOTSOCK",
        "EDESTADDRREQ",
        "EMSGSIZE",
        "EPROTOTYPE",
        "ENOPROTOOPT",
        "EPROTONOSUPPORT",
        "ESOCKTNOSUPPORT",
        "EOPNOTSUPP",
        "EPFNOSUPPORT",
        "EAFNOSUPPORT",
        "EADDRINUSE",
        "EADDRNOTAVAIL",
        "ENETDOWN",
        "ENETUNREACH",
        "ENETRESET",
        "ECONNABORTED",
        "ECONNRESET",
        "ENOBUFS",
        "EISCONN",
        "ENOTCONN",
        "ESHUTDOWN",
        "ETOOMANYREFS",
        "ETIMEDOUT",
        "ECONNREFUSED",
        "EHOSTDOWN",
        "EHOSTUNREACH",
        "EALREADY",
        "EINPROGRESS",
        "ESTALE",
        "EUCLEAN",
        "ENOTNAM",
        "ENAVAIL",
        "EISNAM",
        "EREMOTEIO",
        "EDQUOT",
        "ENOMEDIUM",
        "EMEDIUMTYPE",
        "ECANCELED",
        "ENOKEY",
        "EKEYEXPIRED",
        "EKEYREVOKED",
        "EKEYREJECTED",
        "EOWNERDEAD",
        "ENOTRECOVERABLE",
        "ERFKILL",
        "EHWPOISON",
    ];

    /// The symbolic name of a Linux errno (`ESRCH` for 3), if it has one.
    pub fn name(errno: i32) -> Option<&'static str> {
        usize::try_from(errno)
            .ok()
            .and_then(|i| NAMES.get(i))
            .copied()
            .filter(|name| !name.is_empty())
    }
}

/// One change to a dataplane's IPVS state.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum Op {
    /// `-A`: add a virtual service.
    AddService(Service),
    /// `-E`: edit a virtual service.
    EditService(Service),
    /// `-D`: delete a virtual service and its destinations.
    DeleteService(ServiceKey),
    /// `-C`: delete every virtual service.
    Flush,
    /// `-a`: add a destination to a service.
    AddDestination(ServiceKey, Destination),
    /// `-e`: edit a destination.
    EditDestination(ServiceKey, Destination),
    /// `-d`: delete a destination.
    DeleteDestination(ServiceKey, SocketAddr),
    /// `-Z`: zero the counters of one service, or of all.
    Zero(Option<ServiceKey>),
    /// `--set`: set connection timeouts (0 leaves a value unchanged).
    SetTimeouts(Timeouts),
    /// `--start-daemon`.
    StartDaemon(Daemon),
    /// `--stop-daemon`.
    StopDaemon(DaemonState),
}

impl Op {
    /// The service the operation addresses, if it names one.
    pub fn service_key(&self) -> Option<ServiceKey> {
        match self {
            Op::AddService(svc) | Op::EditService(svc) => Some(svc.key),
            Op::DeleteService(key)
            | Op::AddDestination(key, _)
            | Op::EditDestination(key, _)
            | Op::DeleteDestination(key, _)
            | Op::Zero(Some(key)) => Some(*key),
            Op::Flush
            | Op::Zero(None)
            | Op::SetTimeouts(_)
            | Op::StartDaemon(_)
            | Op::StopDaemon(_) => None,
        }
    }

    /// The real server the operation addresses, for destination operations.
    pub fn destination_addr(&self) -> Option<SocketAddr> {
        match self {
            Op::AddDestination(_, dest) | Op::EditDestination(_, dest) => Some(dest.addr),
            Op::DeleteDestination(_, addr) => Some(*addr),
            _ => None,
        }
    }

    /// Which kind of operation this is.
    pub fn kind(&self) -> OpKind {
        match self {
            Op::AddService(_) => OpKind::AddService,
            Op::EditService(_) => OpKind::EditService,
            Op::DeleteService(_) => OpKind::DeleteService,
            Op::Flush => OpKind::Flush,
            Op::AddDestination(..) => OpKind::AddDestination,
            Op::EditDestination(..) => OpKind::EditDestination,
            Op::DeleteDestination(..) => OpKind::DeleteDestination,
            Op::Zero(_) => OpKind::Zero,
            Op::SetTimeouts(_) => OpKind::SetTimeouts,
            Op::StartDaemon(_) => OpKind::StartDaemon,
            Op::StopDaemon(_) => OpKind::StopDaemon,
        }
    }
}

/// The kind of an [`Op`] or of a read, for error messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum OpKind {
    /// Add a service.
    AddService,
    /// Edit a service.
    EditService,
    /// Delete a service.
    DeleteService,
    /// Flush all services.
    Flush,
    /// Add a destination.
    AddDestination,
    /// Edit a destination.
    EditDestination,
    /// Delete a destination.
    DeleteDestination,
    /// Zero counters.
    Zero,
    /// Set timeouts.
    SetTimeouts,
    /// Start a sync daemon.
    StartDaemon,
    /// Stop a sync daemon.
    StopDaemon,
    /// Read version information.
    GetInfo,
    /// Read services.
    GetServices,
    /// Read destinations.
    GetDestinations,
    /// Read timeouts.
    GetTimeouts,
    /// Read sync daemons.
    GetDaemons,
    /// Read the connection table.
    GetConnections,
}

impl fmt::Display for OpKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = match self {
            OpKind::AddService => "add service",
            OpKind::EditService => "edit service",
            OpKind::DeleteService => "delete service",
            OpKind::Flush => "flush services",
            OpKind::AddDestination => "add destination",
            OpKind::EditDestination => "edit destination",
            OpKind::DeleteDestination => "delete destination",
            OpKind::Zero => "zero counters",
            OpKind::SetTimeouts => "set timeouts",
            OpKind::StartDaemon => "start sync daemon",
            OpKind::StopDaemon => "stop sync daemon",
            OpKind::GetInfo => "get IPVS info",
            OpKind::GetServices => "list services",
            OpKind::GetDestinations => "list destinations",
            OpKind::GetTimeouts => "get timeouts",
            OpKind::GetDaemons => "list sync daemons",
            OpKind::GetConnections => "list connections",
        };
        f.write_str(text)
    }
}

/// Why a dataplane did not do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// The dataplane refused the operation with an errno (as the kernel
    /// would: [`errno::ESRCH`] for a missing service, [`errno::EEXIST`]
    /// for a duplicate, ...). Shown as
    /// `add destination TCP 10.96.0.10:80 -> 10.0.2.2:8080: refused by the
    /// dataplane: EEXIST (errno 17)`.
    #[error(
        "{op}{}: refused by the dataplane: {}",
        Subject(service.as_ref(), destination.as_ref()),
        Errno(*errno)
    )]
    Refused {
        /// What was attempted.
        op: OpKind,
        /// The errno (positive).
        errno: i32,
        /// The service the operation addressed, when it named one.
        service: Option<ServiceKey>,
        /// The real server, for destination operations.
        destination: Option<SocketAddr>,
    },
    /// The dataplane could not be reached or the exchange failed.
    #[error("{op}: {context}")]
    Transport {
        /// What was attempted.
        op: OpKind,
        /// What failed.
        context: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The dataplane answered something that could not be understood.
    #[error("{op}: unexpected answer: {detail}")]
    Protocol {
        /// What was attempted.
        op: OpKind,
        /// What was wrong.
        detail: String,
    },
}

/// ` TCP 10.96.0.10:80 -> 10.0.2.2:8080` (or nothing) in a refusal.
struct Subject<'a>(Option<&'a ServiceKey>, Option<&'a SocketAddr>);

impl fmt::Display for Subject<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(key) = self.0 {
            write!(f, " {key}")?;
        }
        if let Some(addr) = self.1 {
            write!(f, " -> {addr}")?;
        }
        Ok(())
    }
}

/// `ESRCH (errno 3)`, or `errno 999` for a number without a name.
struct Errno(i32);

impl fmt::Display for Errno {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match errno::name(self.0) {
            Some(name) => write!(f, "{name} (errno {})", self.0),
            None => write!(f, "errno {}", self.0),
        }
    }
}

impl AdminError {
    /// A refusal of an operation of kind `op` that names no service.
    pub fn refused(op: OpKind, errno: i32) -> AdminError {
        AdminError::Refused {
            op,
            errno,
            service: None,
            destination: None,
        }
    }

    /// The refusal of `op`, naming the service and real server it
    /// addresses.
    pub fn refusal_of(op: &Op, errno: i32) -> AdminError {
        AdminError::Refused {
            op: op.kind(),
            errno,
            service: op.service_key(),
            destination: op.destination_addr(),
        }
    }

    /// A refusal of a read of one service (`op` is
    /// [`OpKind::GetServices`] or [`OpKind::GetDestinations`]).
    pub fn refused_for(op: OpKind, errno: i32, key: ServiceKey) -> AdminError {
        AdminError::Refused {
            op,
            errno,
            service: Some(key),
            destination: None,
        }
    }

    /// The errno of a refusal, if this is one.
    pub fn errno(&self) -> Option<i32> {
        match self {
            AdminError::Refused { errno, .. } => Some(*errno),
            _ => None,
        }
    }
}

/// What a dataplane offers to `rvsadm` and to the proxy's reconciler.
pub trait Admin {
    /// IPVS version and connection-table size.
    fn info(&mut self) -> Result<Info, AdminError>;
    /// Every virtual service with its counters.
    fn services(&mut self) -> Result<Vec<ServiceStatus>, AdminError>;
    /// One virtual service; [`errno::ESRCH`] when absent.
    fn service(&mut self, key: &ServiceKey) -> Result<ServiceStatus, AdminError>;
    /// The destinations of one service, with counters.
    fn destinations(&mut self, key: &ServiceKey) -> Result<Vec<DestinationStatus>, AdminError>;
    /// Current connection timeouts.
    fn timeouts(&mut self) -> Result<Timeouts, AdminError>;
    /// Running sync daemons.
    fn daemons(&mut self) -> Result<Vec<Daemon>, AdminError>;
    /// The connection table.
    fn connections(&mut self) -> Result<Vec<Connection>, AdminError>;
    /// Applies one change.
    fn apply(&mut self, op: &Op) -> Result<(), AdminError>;
    /// Applies many changes, in order, returning one result each. A
    /// dataplane overrides this to batch (one `sendmsg` for many netlink
    /// requests); the default applies them one by one.
    fn apply_batch(&mut self, ops: &[Op]) -> Vec<Result<(), AdminError>> {
        ops.iter().map(|op| self.apply(op)).collect()
    }
    /// Rebalancing of long-lived connections (an rvs addition): every
    /// virtual service being rebalanced, with its skew and the connections
    /// closed per real server. Empty for a dataplane that does not close
    /// connections (the kernel's IPVS).
    fn rebalancing(&mut self) -> Result<Vec<RebalanceStatus>, AdminError> {
        Ok(Vec::new())
    }
}

/// One virtual service's rebalancing, as [`Admin::rebalancing`] lists it.
#[derive(Clone, Debug, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct RebalanceStatus {
    /// The virtual service.
    pub service: ServiceKey,
    /// How far its most over-loaded real server is over its weight's
    /// share of the connections, at the last tick (0: even).
    pub skew: f64,
    /// Connections closed to rebalance, per real server, sorted.
    pub closed: Vec<(std::net::SocketAddr, u64)>,
}

/// A dataplane shared between threads (the sync loop and an admin socket
/// server, say) is a dataplane: each call locks it for its duration. A
/// poisoned lock is taken over: the dataplane's state is the kernel's or
/// a table's, not the panicked thread's.
impl<A: Admin + ?Sized> Admin for std::sync::Arc<std::sync::Mutex<A>> {
    fn info(&mut self) -> Result<Info, AdminError> {
        lock(self).info()
    }
    fn services(&mut self) -> Result<Vec<ServiceStatus>, AdminError> {
        lock(self).services()
    }
    fn service(&mut self, key: &ServiceKey) -> Result<ServiceStatus, AdminError> {
        lock(self).service(key)
    }
    fn destinations(&mut self, key: &ServiceKey) -> Result<Vec<DestinationStatus>, AdminError> {
        lock(self).destinations(key)
    }
    fn timeouts(&mut self) -> Result<Timeouts, AdminError> {
        lock(self).timeouts()
    }
    fn daemons(&mut self) -> Result<Vec<Daemon>, AdminError> {
        lock(self).daemons()
    }
    fn connections(&mut self) -> Result<Vec<Connection>, AdminError> {
        lock(self).connections()
    }
    fn apply(&mut self, op: &Op) -> Result<(), AdminError> {
        lock(self).apply(op)
    }
    fn apply_batch(&mut self, ops: &[Op]) -> Vec<Result<(), AdminError>> {
        lock(self).apply_batch(ops)
    }
    fn rebalancing(&mut self) -> Result<Vec<RebalanceStatus>, AdminError> {
        lock(self).rebalancing()
    }
}

fn lock<A: ?Sized>(m: &std::sync::Mutex<A>) -> std::sync::MutexGuard<'_, A> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(feature = "serde")]
    #[test]
    fn ops_round_trip_through_json() {
        use crate::Scheduler;
        let key = ServiceKey::tcp("10.96.0.10:80".parse().unwrap());
        let ops = vec![
            Op::AddService(Service::new(key, Scheduler::RoundRobin)),
            Op::AddDestination(
                key,
                Destination::masquerade("10.0.2.2:8080".parse().unwrap()),
            ),
            Op::DeleteDestination(key, "10.0.2.2:8080".parse().unwrap()),
            Op::Zero(None),
            Op::Flush,
        ];
        let json = serde_json::to_string(&ops).unwrap();
        assert_eq!(serde_json::from_str::<Vec<Op>>(&json).unwrap(), ops);
        assert_eq!(ops[1].kind(), OpKind::AddDestination);
    }

    #[test]
    fn refusals_expose_their_errno() {
        let err = AdminError::refused(OpKind::Flush, errno::ESRCH);
        assert_eq!(err.errno(), Some(3));
        assert_eq!(
            err.to_string(),
            "flush services: refused by the dataplane: ESRCH (errno 3)"
        );
        let err = AdminError::refused(OpKind::Flush, 4242);
        assert_eq!(
            err.to_string(),
            "flush services: refused by the dataplane: errno 4242"
        );
    }

    #[test]
    fn refusals_name_the_service_and_real_server() {
        let key = ServiceKey::tcp("10.96.0.10:80".parse().unwrap());
        let dest = Destination::masquerade("10.0.2.2:8080".parse().unwrap());
        let err = AdminError::refusal_of(&Op::AddDestination(key, dest), errno::EEXIST);
        assert_eq!(
            err.to_string(),
            "add destination TCP 10.96.0.10:80 -> 10.0.2.2:8080: \
             refused by the dataplane: EEXIST (errno 17)"
        );
        let err = AdminError::refusal_of(&Op::DeleteService(key), errno::ESRCH);
        assert_eq!(
            err.to_string(),
            "delete service TCP 10.96.0.10:80: refused by the dataplane: ESRCH (errno 3)"
        );
        let err = AdminError::refused_for(OpKind::GetServices, errno::ESRCH, key);
        assert!(matches!(err, AdminError::Refused { service: Some(k), .. } if k == key));
        assert_eq!(Op::Flush.service_key(), None);
        assert_eq!(Op::Zero(Some(key)).service_key(), Some(key));
    }

    #[test]
    fn errno_names_follow_linux() {
        assert_eq!(errno::name(errno::EPERM), Some("EPERM"));
        assert_eq!(errno::name(errno::ESRCH), Some("ESRCH"));
        assert_eq!(errno::name(errno::EEXIST), Some("EEXIST"));
        assert_eq!(errno::name(errno::EINVAL), Some("EINVAL"));
        assert_eq!(errno::name(errno::ERANGE), Some("ERANGE"));
        assert_eq!(errno::name(errno::ENOPROTOOPT), Some("ENOPROTOOPT"));
        assert_eq!(errno::name(errno::EOPNOTSUPP), Some("EOPNOTSUPP"));
        assert_eq!(errno::name(errno::EALREADY), Some("EALREADY"));
        assert_eq!(errno::name(110), Some("ETIMEDOUT"));
        assert_eq!(errno::name(133), Some("EHWPOISON"));
        for none in [0, 41, 58, 134, -3] {
            assert_eq!(errno::name(none), None, "{none}");
        }
    }
}
