//! The admin socket's wire format: versioned JSON lines.
//!
//! This module owns the shape of every line on the socket ([`RequestLine`],
//! [`ResponseLine`]), the request and reply vocabularies ([`Request`],
//! [`Reply`]), the error form that crosses the wire ([`WireError`]) and
//! the conversions between it and [`AdminError`]. It does no I/O; see the
//! crate documentation for the protocol as a whole.

use std::io;
use std::net::SocketAddr;

use rvs_model::admin::{AdminError, Op, OpKind, RebalanceStatus};
use rvs_model::{Connection, Daemon, DestinationStatus, Info, ServiceKey, ServiceStatus, Timeouts};
use serde::{Deserialize, Serialize};

/// The protocol version this crate speaks, carried as `"v"` on every line.
pub const VERSION: u32 = 1;

/// The longest request line a server accepts (64 MiB, enough for an
/// `ApplyBatch` of several hundred thousand operations).
pub const MAX_REQUEST_LINE: usize = 64 << 20;

/// One request: a call of [`rvs_model::admin::Admin`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Request {
    /// [`Admin::info`](rvs_model::admin::Admin::info).
    Info,
    /// [`Admin::services`](rvs_model::admin::Admin::services).
    Services,
    /// [`Admin::service`](rvs_model::admin::Admin::service).
    Service(ServiceKey),
    /// [`Admin::destinations`](rvs_model::admin::Admin::destinations).
    Destinations(ServiceKey),
    /// [`Admin::timeouts`](rvs_model::admin::Admin::timeouts).
    Timeouts,
    /// [`Admin::daemons`](rvs_model::admin::Admin::daemons).
    Daemons,
    /// [`Admin::connections`](rvs_model::admin::Admin::connections).
    Connections,
    /// [`Admin::apply`](rvs_model::admin::Admin::apply).
    Apply(Op),
    /// [`Admin::apply_batch`](rvs_model::admin::Admin::apply_batch).
    ApplyBatch(Vec<Op>),
    /// [`Admin::rebalancing`](rvs_model::admin::Admin::rebalancing). A
    /// server that predates it answers with a protocol error.
    Rebalancing,
}

impl Request {
    /// The operation kind errors about this request are reported under.
    /// A batch reports under its first operation (or `Flush` when empty,
    /// which never fails).
    pub fn kind(&self) -> OpKind {
        match self {
            Request::Info => OpKind::GetInfo,
            Request::Services | Request::Service(_) => OpKind::GetServices,
            Request::Destinations(_) => OpKind::GetDestinations,
            Request::Timeouts => OpKind::GetTimeouts,
            Request::Daemons => OpKind::GetDaemons,
            Request::Connections => OpKind::GetConnections,
            Request::Rebalancing => OpKind::GetServices,
            Request::Apply(op) => op.kind(),
            Request::ApplyBatch(ops) => ops.first().map_or(OpKind::Flush, Op::kind),
        }
    }
}

/// One reply: the value a call returned, or why it failed.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Reply {
    /// Answer to [`Request::Info`].
    Info(Info),
    /// Answer to [`Request::Services`].
    Services(Vec<ServiceStatus>),
    /// Answer to [`Request::Service`].
    Service(ServiceStatus),
    /// Answer to [`Request::Destinations`].
    Destinations(Vec<DestinationStatus>),
    /// Answer to [`Request::Timeouts`].
    Timeouts(Timeouts),
    /// Answer to [`Request::Daemons`].
    Daemons(Vec<Daemon>),
    /// Answer to [`Request::Connections`].
    Connections(Vec<Connection>),
    /// Answer to [`Request::Rebalancing`].
    Rebalancing(Vec<RebalanceStatus>),
    /// Answer to a successful [`Request::Apply`].
    Applied,
    /// Answer to [`Request::ApplyBatch`]: one result per operation, in
    /// order.
    Batch(Vec<Result<(), WireError>>),
    /// The request failed as a whole.
    Error(WireError),
}

/// An error as it crosses the wire.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum WireError {
    /// [`AdminError::Refused`], carried exactly.
    Refused {
        /// What was attempted.
        op: OpKind,
        /// The errno (positive).
        errno: i32,
        /// The service the operation addressed. Left out when absent, and
        /// absent from the lines of servers that predate it: version-1
        /// peers of either age understand each other.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        service: Option<ServiceKey>,
        /// The real server, for destination operations (as `service`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        destination: Option<SocketAddr>,
    },
    /// [`AdminError::Transport`] inside the server (its dataplane could
    /// not be reached): the context and the I/O error's text and errno.
    Transport {
        /// What was attempted.
        op: OpKind,
        /// What failed.
        context: String,
        /// The I/O error's message.
        message: String,
        /// The I/O error's OS errno, if it had one.
        os_errno: Option<i32>,
    },
    /// [`AdminError::Protocol`] inside the server.
    Protocol {
        /// What was attempted.
        op: OpKind,
        /// What was wrong.
        detail: String,
    },
    /// The server could not understand the request line (bad JSON, an
    /// unknown request, an unsupported version, a line too long).
    BadRequest {
        /// What was wrong.
        detail: String,
    },
}

impl WireError {
    /// The wire form of an error a server-side [`Admin`](rvs_model::admin::Admin) returned.
    pub fn from_admin(err: &AdminError) -> WireError {
        match err {
            AdminError::Refused {
                op,
                errno,
                service,
                destination,
            } => WireError::Refused {
                op: *op,
                errno: *errno,
                service: *service,
                destination: *destination,
            },
            AdminError::Transport {
                op,
                context,
                source,
            } => WireError::Transport {
                op: *op,
                context: context.clone(),
                message: source.to_string(),
                os_errno: source.raw_os_error(),
            },
            AdminError::Protocol { op, detail } => WireError::Protocol {
                op: *op,
                detail: detail.clone(),
            },
        }
    }

    /// The [`AdminError`] a client reports for this wire error; `op` is
    /// the kind of the request it answers (used for `BadRequest`, which
    /// names no operation).
    pub fn into_admin(self, op: OpKind) -> AdminError {
        match self {
            WireError::Refused {
                op,
                errno,
                service,
                destination,
            } => AdminError::Refused {
                op,
                errno,
                service,
                destination,
            },
            WireError::Transport {
                op,
                context,
                message,
                os_errno,
            } => {
                let source = match os_errno {
                    Some(errno) => {
                        let os = io::Error::from_raw_os_error(errno);
                        io::Error::new(os.kind(), message)
                    }
                    None => io::Error::other(message),
                };
                AdminError::Transport {
                    op,
                    context,
                    source,
                }
            }
            WireError::Protocol { op, detail } => AdminError::Protocol { op, detail },
            WireError::BadRequest { detail } => AdminError::Protocol {
                op,
                detail: format!("the admin server rejected the request: {detail}"),
            },
        }
    }
}

/// One request line: `{"v":1,"request":...}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestLine {
    /// Protocol version ([`VERSION`]).
    pub v: u32,
    /// The request.
    pub request: Request,
}

/// One response line: `{"v":1,"reply":...}`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ResponseLine {
    /// Protocol version ([`VERSION`]).
    pub v: u32,
    /// The reply.
    pub reply: Reply,
}

/// Only the version of a line, read before the rest so that a line of a
/// newer version is answered "unsupported version" rather than "bad JSON".
#[derive(Deserialize)]
pub(crate) struct VersionOnly {
    pub(crate) v: u32,
}

/// Decodes one request line, or says why it cannot be.
pub fn decode_request(line: &[u8]) -> Result<Request, WireError> {
    let bad = |detail: String| WireError::BadRequest { detail };
    let version: VersionOnly =
        serde_json::from_slice(line).map_err(|e| bad(format!("not a request line ({e})")))?;
    if version.v != VERSION {
        return Err(bad(format!(
            "unsupported protocol version {} (this server speaks {VERSION})",
            version.v
        )));
    }
    let parsed: RequestLine =
        serde_json::from_slice(line).map_err(|e| bad(format!("invalid request ({e})")))?;
    Ok(parsed.request)
}

/// Encodes one line (without its newline).
pub(crate) fn encode<T: Serialize>(line: &T) -> Result<Vec<u8>, serde_json::Error> {
    serde_json::to_vec(line)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rvs_model::admin::errno;

    #[test]
    fn refusals_survive_the_wire_form() {
        let key = ServiceKey::tcp("10.96.0.10:80".parse().unwrap());
        let dest = rvs_model::Destination::masquerade("10.0.2.2:8080".parse().unwrap());
        for err in [
            AdminError::refused(OpKind::Flush, errno::EPERM),
            AdminError::refusal_of(&Op::AddDestination(key, dest), errno::EEXIST),
        ] {
            let wire = WireError::from_admin(&err);
            let json = serde_json::to_string(&wire).unwrap();
            let back: WireError = serde_json::from_str(&json).unwrap();
            let err2 = back.into_admin(OpKind::GetInfo);
            assert_eq!(err2.errno(), err.errno());
            assert_eq!(err2.to_string(), err.to_string());
        }
    }

    #[test]
    fn refusals_stay_compatible_with_older_peers() {
        // A line from a server that predates the service and real server.
        let old = r#"{"Refused":{"op":"GetServices","errno":3}}"#;
        let err = serde_json::from_str::<WireError>(old)
            .unwrap()
            .into_admin(OpKind::GetInfo);
        assert_eq!(err.errno(), Some(errno::ESRCH));
        assert!(matches!(
            err,
            AdminError::Refused {
                service: None,
                destination: None,
                ..
            }
        ));
        // Without a service, the line is what older servers sent.
        let json = serde_json::to_string(&WireError::from_admin(&AdminError::refused(
            OpKind::GetServices,
            errno::ESRCH,
        )))
        .unwrap();
        assert_eq!(json, old);
        // With one, an older client (which knows only `op` and `errno`)
        // still reads it.
        #[derive(Deserialize)]
        enum OldWireError {
            Refused { op: OpKind, errno: i32 },
        }
        let key = ServiceKey::tcp("10.96.0.1:443".parse().unwrap());
        let json = serde_json::to_string(&WireError::from_admin(&AdminError::refusal_of(
            &Op::DeleteService(key),
            errno::ESRCH,
        )))
        .unwrap();
        assert!(json.contains("10.96.0.1:443"), "{json}");
        let OldWireError::Refused { op, errno } = serde_json::from_str(&json).unwrap();
        assert_eq!((op, errno), (OpKind::DeleteService, errno::ESRCH));
    }

    #[test]
    fn transport_errors_keep_their_os_errno() {
        let err = AdminError::Transport {
            op: OpKind::GetServices,
            context: "read netlink".into(),
            source: io::Error::from_raw_os_error(111),
        };
        match WireError::from_admin(&err).into_admin(OpKind::GetInfo) {
            AdminError::Transport {
                op,
                context,
                source,
            } => {
                assert_eq!(op, OpKind::GetServices);
                assert_eq!(context, "read netlink");
                assert_eq!(source.kind(), io::ErrorKind::ConnectionRefused);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn versions_are_checked_before_the_request() {
        let err = decode_request(br#"{"v":2,"request":"Frobnicate"}"#).unwrap_err();
        assert!(
            matches!(&err, WireError::BadRequest { detail } if detail.contains("version 2")),
            "{err:?}"
        );
        assert_eq!(
            decode_request(br#"{"v":1,"request":"Info"}"#).unwrap(),
            Request::Info
        );
    }
}
