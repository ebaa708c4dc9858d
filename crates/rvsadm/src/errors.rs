//! Error texts: ipvsadm's per-command errno messages and glibc's
//! `strerror` strings.
//!
//! libipvs maps an errno to a message by the function that failed
//! (`ipvs_strerror`): "Service already exists" for `EEXIST` from adding a
//! service, "Service not defined" for `ESRCH` from adding a destination,
//! and so on, falling back to a few generic texts and finally to
//! `strerror`. [`message`] reproduces that from an [`AdminError`] and the
//! command ([`Func`]) that was running.

use rvs_model::admin::{AdminError, OpKind};

/// The libipvs function whose failure is being reported.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Func {
    AddService,
    UpdateService,
    DelService,
    ZeroService,
    AddDest,
    UpdateDest,
    DelDest,
    StartDaemon,
    StopDaemon,
    GetDests,
    GetService,
    /// Functions without entries of their own (flush, timeouts, dumps).
    Other,
}

impl Func {
    /// The function ipvsadm calls for an operation of this kind.
    pub(crate) fn of(kind: OpKind) -> Func {
        match kind {
            OpKind::AddService => Func::AddService,
            OpKind::EditService => Func::UpdateService,
            OpKind::DeleteService => Func::DelService,
            OpKind::Zero => Func::ZeroService,
            OpKind::AddDestination => Func::AddDest,
            OpKind::EditDestination => Func::UpdateDest,
            OpKind::DeleteDestination => Func::DelDest,
            OpKind::StartDaemon => Func::StartDaemon,
            OpKind::StopDaemon => Func::StopDaemon,
            OpKind::GetDestinations => Func::GetDests,
            _ => Func::Other,
        }
    }
}

pub(crate) const EPERM: i32 = 1;
pub(crate) const ENOENT: i32 = 2;
pub(crate) const ESRCH: i32 = 3;
pub(crate) const ENOMEM: i32 = 12;
pub(crate) const EEXIST: i32 = 17;
pub(crate) const EINVAL: i32 = 22;
pub(crate) const EMSGSIZE: i32 = 90;
pub(crate) const ENOPROTOOPT: i32 = 92;
pub(crate) const EOPNOTSUPP: i32 = 95;
pub(crate) const EAFNOSUPPORT: i32 = 97;

/// `ipvs_strerror(errno)` with `func` as the failed function.
pub(crate) fn errno_message(func: Func, errno: i32) -> String {
    let specific = match (func, errno) {
        (Func::AddService, EEXIST) => Some("Service already exists"),
        (Func::AddService | Func::UpdateService, ENOENT) => {
            Some("Scheduler or persistence engine not found")
        }
        (Func::UpdateService | Func::DelService | Func::ZeroService, ESRCH) => {
            Some("No such service")
        }
        (Func::AddDest | Func::UpdateDest | Func::DelDest, ESRCH) => Some("Service not defined"),
        (Func::AddDest, EEXIST) => Some("Destination already exists"),
        (Func::UpdateDest | Func::DelDest, ENOENT) => Some("No such destination"),
        (Func::StartDaemon, EEXIST) => Some("Daemon has already run"),
        (Func::StopDaemon, ESRCH) => Some("No daemon is running"),
        (Func::GetDests | Func::GetService, ESRCH) => Some("No such service"),
        (_, EPERM) => Some("Permission denied (you must be root)"),
        (_, EINVAL) => {
            Some("Invalid operation.  Possibly wrong module version, address not unicast, ...")
        }
        (_, ENOPROTOOPT) => Some("Protocol not available"),
        (_, ENOMEM) => Some("Memory allocation problem"),
        (_, EOPNOTSUPP) => Some("Operation not supported with IPv6"),
        (_, EAFNOSUPPORT) => Some("Operation not supported with specified address family"),
        (_, EMSGSIZE) => Some("Module is wrong version"),
        _ => None,
    };
    match specific {
        Some(text) => text.to_owned(),
        None => strerror(errno),
    }
}

/// The message ipvsadm prints for `err` while running `func`.
///
/// A refusal carries the kernel's errno. A transport failure with an OS
/// error maps like that errno. Anything else (an answer that could not be
/// understood) is what libipvs reports as `EINVAL`.
pub(crate) fn message(func: Func, err: &AdminError) -> String {
    match err {
        AdminError::Refused { errno, .. } => errno_message(func, *errno),
        AdminError::Transport { source, .. } => match source.raw_os_error() {
            Some(errno) => errno_message(func, errno),
            None => err.to_string(),
        },
        AdminError::Protocol { .. } => errno_message(func, EINVAL),
    }
}

/// glibc's `strerror` text for a Linux errno.
pub(crate) fn strerror(errno: i32) -> String {
    let text = match errno {
        1 => "Operation not permitted",
        2 => "No such file or directory",
        3 => "No such process",
        4 => "Interrupted system call",
        5 => "Input/output error",
        6 => "No such device or address",
        7 => "Argument list too long",
        8 => "Exec format error",
        9 => "Bad file descriptor",
        10 => "No child processes",
        11 => "Resource temporarily unavailable",
        12 => "Cannot allocate memory",
        13 => "Permission denied",
        14 => "Bad address",
        15 => "Block device required",
        16 => "Device or resource busy",
        17 => "File exists",
        18 => "Invalid cross-device link",
        19 => "No such device",
        20 => "Not a directory",
        21 => "Is a directory",
        22 => "Invalid argument",
        23 => "Too many open files in system",
        24 => "Too many open files",
        25 => "Inappropriate ioctl for device",
        26 => "Text file busy",
        27 => "File too large",
        28 => "No space left on device",
        29 => "Illegal seek",
        30 => "Read-only file system",
        31 => "Too many links",
        32 => "Broken pipe",
        33 => "Numerical argument out of domain",
        34 => "Numerical result out of range",
        35 => "Resource deadlock avoided",
        36 => "File name too long",
        37 => "No locks available",
        38 => "Function not implemented",
        39 => "Directory not empty",
        40 => "Too many levels of symbolic links",
        41 => "Unknown error 41",
        42 => "No message of desired type",
        43 => "Identifier removed",
        44 => "Channel number out of range",
        45 => "Level 2 not synchronized",
        46 => "Level 3 halted",
        47 => "Level 3 reset",
        48 => "Link number out of range",
        49 => "Protocol driver not attached",
        50 => "No CSI structure available",
        51 => "Level 2 halted",
        52 => "Invalid exchange",
        53 => "Invalid request descriptor",
        54 => "Exchange full",
        55 => "No anode",
        56 => "Invalid request code",
        57 => "Invalid slot",
        58 => "Unknown error 58",
        59 => "Bad font file format",
        60 => "Device not a stream",
        61 => "No data available",
        62 => "Timer expired",
        63 => "Out of streams resources",
        64 => "Machine is not on the network",
        65 => "Package not installed",
        66 => "Object is remote",
        67 => "Link has been severed",
        68 => "Advertise error",
        69 => "Srmount error",
        70 => "Communication error on send",
        71 => "Protocol error",
        72 => "Multihop attempted",
        73 => "RFS specific error",
        74 => "Bad message",
        75 => "Value too large for defined data type",
        76 => "Name not unique on network",
        77 => "File descriptor in bad state",
        78 => "Remote address changed",
        79 => "Can not access a needed shared library",
        80 => "Accessing a corrupted shared library",
        81 => ".lib section in a.out corrupted",
        82 => "Attempting to link in too many shared libraries",
        83 => "Cannot exec a shared library directly",
        84 => "Invalid or incomplete multibyte or wide character",
        85 => "Interrupted system call should be restarted",
        86 => "Streams pipe error",
        87 => "Too many users",
        88 => "Socket operation on non-socket",
        89 => "Destination address required",
        90 => "Message too long",
        91 => "Protocol wrong type for socket",
        92 => "Protocol not available",
        93 => "Protocol not supported",
        94 => "Socket type not supported",
        95 => "Operation not supported",
        96 => "Protocol family not supported",
        97 => "Address family not supported by protocol",
        98 => "Address already in use",
        99 => "Cannot assign requested address",
        100 => "Network is down",
        101 => "Network is unreachable",
        102 => "Network dropped connection on reset",
        103 => "Software caused connection abort",
        104 => "Connection reset by peer",
        105 => "No buffer space available",
        106 => "Transport endpoint is already connected",
        107 => "Transport endpoint is not connected",
        108 => "Cannot send after transport endpoint shutdown",
        109 => "Too many references: cannot splice",
        110 => "Connection timed out",
        111 => "Connection refused",
        112 => "Host is down",
        113 => "No route to host",
        114 => "Operation already in progress",
        115 => "Operation now in progress",
        116 => "Stale file handle",
        117 => "Structure needs cleaning",
        118 => "Not a XENIX named type file",
        119 => "No XENIX semaphores available",
        120 => "Is a named type file",
        121 => "Remote I/O error",
        122 => "Disk quota exceeded",
        123 => "No medium found",
        124 => "Wrong medium type",
        125 => "Operation canceled",
        126 => "Required key not available",
        127 => "Key has expired",
        128 => "Key has been revoked",
        129 => "Key was rejected by service",
        130 => "Owner died",
        131 => "State not recoverable",
        132 => "Operation not possible due to RF-kill",
        133 => "Memory page has hardware error",
        _ => return format!("Unknown error {errno}"),
    };
    text.to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(errno: i32) -> AdminError {
        let key = rvs_model::ServiceKey::tcp("10.0.0.1:80".parse().unwrap());
        AdminError::refused_for(OpKind::AddService, errno, key)
    }

    #[test]
    fn messages_depend_on_the_command() {
        assert_eq!(
            message(Func::AddService, &refused(EEXIST)),
            "Service already exists"
        );
        assert_eq!(
            message(Func::AddDest, &refused(EEXIST)),
            "Destination already exists"
        );
        assert_eq!(
            message(Func::DelService, &refused(ESRCH)),
            "No such service"
        );
        assert_eq!(
            message(Func::DelDest, &refused(ESRCH)),
            "Service not defined"
        );
        assert_eq!(
            message(Func::DelDest, &refused(ENOENT)),
            "No such destination"
        );
        assert_eq!(
            message(Func::AddDest, &refused(ENOENT)),
            "No such file or directory"
        );
        assert_eq!(
            message(Func::UpdateService, &refused(ENOENT)),
            "Scheduler or persistence engine not found"
        );
        assert_eq!(
            message(Func::StopDaemon, &refused(ESRCH)),
            "No daemon is running"
        );
        assert_eq!(message(Func::Other, &refused(ESRCH)), "No such process");
        assert_eq!(
            message(Func::AddDest, &refused(34)),
            "Numerical result out of range"
        );
        assert_eq!(message(Func::StartDaemon, &refused(19)), "No such device");
        assert_eq!(
            message(Func::Other, &refused(ENOMEM)),
            "Memory allocation problem"
        );
        assert_eq!(
            message(Func::Other, &refused(EPERM)),
            "Permission denied (you must be root)"
        );
        assert_eq!(strerror(9999), "Unknown error 9999");
    }

    #[test]
    fn transport_errors_map_by_their_os_error() {
        let err = AdminError::Transport {
            op: OpKind::GetInfo,
            context: "connect".into(),
            source: std::io::Error::from_raw_os_error(ENOENT),
        };
        assert_eq!(message(Func::Other, &err), "No such file or directory");
        let err = AdminError::Protocol {
            op: OpKind::GetInfo,
            detail: "junk".into(),
        };
        assert!(message(Func::Other, &err).starts_with("Invalid operation."));
    }

    #[test]
    fn func_follows_the_op_kind() {
        assert_eq!(Func::of(OpKind::EditService), Func::UpdateService);
        assert_eq!(Func::of(OpKind::Flush), Func::Other);
        assert_eq!(Func::of(OpKind::DeleteDestination), Func::DelDest);
    }
}
