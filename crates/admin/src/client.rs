//! The client side: [`AdminClient`], an [`Admin`] over a unix socket.
//!
//! This module owns one connection to an admin server: sending a request
//! line, reading the matching response line, and turning failures into
//! [`AdminError`]s that name the socket path. After an I/O failure the
//! connection is dropped and the next call reconnects, so a long-lived
//! client (the proxy's reconciler) survives a daemon restart.

use std::io::{self, BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rvs_model::admin::{Admin, AdminError, Op, OpKind, RebalanceStatus};
use rvs_model::{Connection, Daemon, DestinationStatus, Info, ServiceKey, ServiceStatus, Timeouts};

use crate::wire::{self, Reply, Request, RequestLine, ResponseLine, VERSION};

/// How long a call waits for the server by default before failing with a
/// [`AdminError::Transport`] (`TimedOut`/`WouldBlock`).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

/// An [`Admin`] that forwards every call to an admin server on a unix
/// socket (`rvsadm --target unix:PATH`).
#[derive(Debug)]
pub struct AdminClient {
    path: PathBuf,
    timeout: Option<Duration>,
    conn: Option<Conn>,
}

#[derive(Debug)]
struct Conn {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
}

fn transport(op: OpKind, context: String, source: io::Error) -> AdminError {
    AdminError::Transport {
        op,
        context,
        source,
    }
}

fn open(path: &Path, timeout: Option<Duration>, op: OpKind) -> Result<Conn, AdminError> {
    let stream = UnixStream::connect(path).map_err(|source| {
        transport(
            op,
            format!("connect to admin socket {}", path.display()),
            source,
        )
    })?;
    let setup = || -> io::Result<Conn> {
        stream.set_read_timeout(timeout)?;
        stream.set_write_timeout(timeout)?;
        let writer = stream.try_clone()?;
        Ok(Conn {
            reader: BufReader::new(stream),
            writer,
        })
    };
    setup().map_err(|source| {
        transport(
            op,
            format!("set up admin socket {}", path.display()),
            source,
        )
    })
}

impl AdminClient {
    /// Connects to the admin server listening at `path`.
    ///
    /// Fails with [`AdminError::Transport`] (reported under
    /// [`OpKind::GetInfo`], the model having no "connect" kind) whose
    /// context names the path.
    pub fn connect(path: impl AsRef<Path>) -> Result<AdminClient, AdminError> {
        let path = path.as_ref().to_path_buf();
        let conn = open(&path, Some(DEFAULT_TIMEOUT), OpKind::GetInfo)?;
        Ok(AdminClient {
            path,
            timeout: Some(DEFAULT_TIMEOUT),
            conn: Some(conn),
        })
    }

    /// The socket path this client talks to.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Sets how long one call may wait for the server (`None`: forever).
    pub fn set_timeout(&mut self, timeout: Option<Duration>) -> Result<(), AdminError> {
        self.timeout = timeout;
        if let Some(conn) = &self.conn {
            let set = || -> io::Result<()> {
                conn.writer.set_read_timeout(timeout)?;
                conn.writer.set_write_timeout(timeout)
            };
            set().map_err(|source| {
                transport(
                    OpKind::GetInfo,
                    format!("set timeouts on admin socket {}", self.path.display()),
                    source,
                )
            })?;
        }
        Ok(())
    }

    /// Sends one request and reads its reply. A reply of
    /// [`Reply::Error`] is turned into the matching [`AdminError`].
    pub fn call(&mut self, request: &Request) -> Result<Reply, AdminError> {
        let op = request.kind();
        let result = self.exchange(request, op);
        if matches!(result, Err(AdminError::Transport { .. })) {
            // The stream may be out of step with the server: start afresh
            // on the next call.
            self.conn = None;
        }
        match result? {
            Reply::Error(err) => Err(err.into_admin(op)),
            reply => Ok(reply),
        }
    }

    fn exchange(&mut self, request: &Request, op: OpKind) -> Result<Reply, AdminError> {
        let mut line = wire::encode(&RequestLine {
            v: VERSION,
            request: request.clone(),
        })
        .map_err(|e| AdminError::Protocol {
            op,
            detail: format!("cannot encode the request: {e}"),
        })?;
        line.push(b'\n');
        let conn = match self.conn.take() {
            Some(conn) => conn,
            None => open(&self.path, self.timeout, op)?,
        };
        let conn = self.conn.insert(conn);
        let path = &self.path;
        conn.writer.write_all(&line).map_err(|source| {
            transport(
                op,
                format!("send request to admin socket {}", path.display()),
                source,
            )
        })?;
        let mut answer = Vec::new();
        let n = conn
            .reader
            .read_until(b'\n', &mut answer)
            .map_err(|source| {
                transport(
                    op,
                    format!("read reply from admin socket {}", path.display()),
                    source,
                )
            })?;
        if n == 0 || answer.last() != Some(&b'\n') {
            return Err(transport(
                op,
                format!(
                    "admin socket {} closed the connection before replying",
                    path.display()
                ),
                io::Error::from(io::ErrorKind::UnexpectedEof),
            ));
        }
        let parsed: ResponseLine =
            serde_json::from_slice(&answer).map_err(|e| AdminError::Protocol {
                op,
                detail: format!("undecodable reply from {}: {e}", path.display()),
            })?;
        if parsed.v != VERSION {
            return Err(AdminError::Protocol {
                op,
                detail: format!(
                    "admin socket {} speaks protocol version {} (this client speaks {VERSION})",
                    path.display(),
                    parsed.v
                ),
            });
        }
        Ok(parsed.reply)
    }
}

fn unexpected(op: OpKind, reply: &Reply) -> AdminError {
    let name = match reply {
        Reply::Info(_) => "Info",
        Reply::Services(_) => "Services",
        Reply::Service(_) => "Service",
        Reply::Destinations(_) => "Destinations",
        Reply::Timeouts(_) => "Timeouts",
        Reply::Daemons(_) => "Daemons",
        Reply::Connections(_) => "Connections",
        Reply::Rebalancing(_) => "Rebalancing",
        Reply::Applied => "Applied",
        Reply::Batch(_) => "Batch",
        Reply::Error(_) => "Error",
    };
    AdminError::Protocol {
        op,
        detail: format!("the admin server answered with a {name} reply"),
    }
}

impl Admin for AdminClient {
    fn info(&mut self) -> Result<Info, AdminError> {
        match self.call(&Request::Info)? {
            Reply::Info(info) => Ok(info),
            other => Err(unexpected(OpKind::GetInfo, &other)),
        }
    }

    fn services(&mut self) -> Result<Vec<ServiceStatus>, AdminError> {
        match self.call(&Request::Services)? {
            Reply::Services(list) => Ok(list),
            other => Err(unexpected(OpKind::GetServices, &other)),
        }
    }

    fn service(&mut self, key: &ServiceKey) -> Result<ServiceStatus, AdminError> {
        match self.call(&Request::Service(*key))? {
            Reply::Service(svc) => Ok(svc),
            other => Err(unexpected(OpKind::GetServices, &other)),
        }
    }

    fn destinations(&mut self, key: &ServiceKey) -> Result<Vec<DestinationStatus>, AdminError> {
        match self.call(&Request::Destinations(*key))? {
            Reply::Destinations(list) => Ok(list),
            other => Err(unexpected(OpKind::GetDestinations, &other)),
        }
    }

    fn timeouts(&mut self) -> Result<Timeouts, AdminError> {
        match self.call(&Request::Timeouts)? {
            Reply::Timeouts(t) => Ok(t),
            other => Err(unexpected(OpKind::GetTimeouts, &other)),
        }
    }

    fn daemons(&mut self) -> Result<Vec<Daemon>, AdminError> {
        match self.call(&Request::Daemons)? {
            Reply::Daemons(list) => Ok(list),
            other => Err(unexpected(OpKind::GetDaemons, &other)),
        }
    }

    fn connections(&mut self) -> Result<Vec<Connection>, AdminError> {
        match self.call(&Request::Connections)? {
            Reply::Connections(list) => Ok(list),
            other => Err(unexpected(OpKind::GetConnections, &other)),
        }
    }

    fn rebalancing(&mut self) -> Result<Vec<RebalanceStatus>, AdminError> {
        match self.call(&Request::Rebalancing)? {
            Reply::Rebalancing(list) => Ok(list),
            other => Err(unexpected(OpKind::GetServices, &other)),
        }
    }

    fn apply(&mut self, op: &Op) -> Result<(), AdminError> {
        match self.call(&Request::Apply(op.clone()))? {
            Reply::Applied => Ok(()),
            other => Err(unexpected(op.kind(), &other)),
        }
    }

    /// One request for the whole batch; one result per operation.
    fn apply_batch(&mut self, ops: &[Op]) -> Vec<Result<(), AdminError>> {
        if ops.is_empty() {
            return Vec::new();
        }
        match self.call(&Request::ApplyBatch(ops.to_vec())) {
            Ok(Reply::Batch(results)) if results.len() == ops.len() => results
                .into_iter()
                .zip(ops)
                .map(|(result, op)| result.map_err(|e| e.into_admin(op.kind())))
                .collect(),
            Ok(Reply::Batch(results)) => {
                let detail = format!(
                    "the admin server answered {} results for {} operations",
                    results.len(),
                    ops.len()
                );
                ops.iter()
                    .map(|op| {
                        Err(AdminError::Protocol {
                            op: op.kind(),
                            detail: detail.clone(),
                        })
                    })
                    .collect()
            }
            Ok(other) => ops
                .iter()
                .map(|op| Err(unexpected(op.kind(), &other)))
                .collect(),
            Err(err) => ops.iter().map(|op| Err(copy_for(&err, op))).collect(),
        }
    }
}

/// The same failure reported under another operation (an `io::Error` is
/// not `Clone`, so its kind and message are copied); a refusal names that
/// operation's service and real server.
fn copy_for(err: &AdminError, op: &Op) -> AdminError {
    match err {
        AdminError::Refused { errno, .. } => AdminError::refusal_of(op, *errno),
        AdminError::Transport {
            context, source, ..
        } => AdminError::Transport {
            op: op.kind(),
            context: context.clone(),
            source: io::Error::new(source.kind(), source.to_string()),
        },
        AdminError::Protocol { detail, .. } => AdminError::Protocol {
            op: op.kind(),
            detail: detail.clone(),
        },
    }
}
