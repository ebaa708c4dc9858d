//! The admin socket of userspace dataplanes.
//!
//! This crate owns the wire protocol `rvsadm --target unix:PATH` speaks to
//! `rvsd` and to `rvs-proxy --admin-socket`: a client ([`AdminClient`])
//! implementing [`rvs_model::admin::Admin`] over a unix stream socket, a
//! server ([`serve`], [`Server`]) that exposes any `Admin` implementation
//! on one, and the socket file itself ([`bind_with`], [`AdminListener`]):
//! who may connect and what it may replace.
//!
//! # Protocol (version 1)
//!
//! A unix **stream** socket carrying JSON lines (UTF-8, `\n`-terminated,
//! serialised with serde's default externally tagged enums). The client
//! sends one request line and reads exactly one response line before
//! sending the next; a connection carries any number of exchanges.
//!
//! Every line is an object with the protocol version `"v"` (currently
//! [`VERSION`] = 1) and one payload:
//!
//! ```text
//! → {"v":1,"request":"Info"}
//! ← {"v":1,"reply":{"Info":{"version":66322,"conn_table_size":4096}}}
//! → {"v":1,"request":{"Service":{"Addr":{"protocol":"Tcp","addr":"10.96.0.1:443"}}}}
//! ← {"v":1,"reply":{"Error":{"Refused":{"op":"GetServices","errno":3}}}}
//! → {"v":1,"request":{"ApplyBatch":[{"DeleteService":{"Fwmark":{"mark":1,"ipv6":false}}},"Flush"]}}
//! ← {"v":1,"reply":{"Batch":[{"Err":{"Refused":{"op":"DeleteService","errno":3}}},{"Ok":null}]}}
//! ```
//!
//! Requests ([`Request`]) mirror the `Admin` trait: `Info`, `Services`,
//! `Service(key)`, `Destinations(key)`, `Timeouts`, `Daemons`,
//! `Connections`, `Apply(op)` and `ApplyBatch([op, ...])`, with the model
//! types ([`rvs_model::ServiceKey`], [`rvs_model::admin::Op`], ...) in
//! their serde form. Replies ([`Reply`]) carry the value (`Info`,
//! `Services`, `Service`, `Destinations`, `Timeouts`, `Daemons`,
//! `Connections`, `Applied` for `Apply`, `Batch` with one `Ok`/`Err` per
//! operation for `ApplyBatch`) or `Error` for a failed request.
//!
//! Errors ([`WireError`]) keep `AdminError::Refused { op, errno,
//! service, destination }` exactly (`service` and `destination` are left
//! out of the line when absent and may be absent, so peers from before
//! they existed still understand each other), so `rvsadm` prints the same message as for the kernel; a
//! server-side `Transport` error carries its context, message and OS
//! errno; `Protocol` its detail. `BadRequest { detail }` answers a line
//! the server could not use (not JSON, unknown request, unsupported
//! version, longer than [`MAX_REQUEST_LINE`]); the connection stays
//! usable except after an over-long line, which closes it. Blank lines
//! are ignored. The server checks `"v"` before anything else, so a
//! newer client gets "unsupported protocol version" rather than a parse
//! error; a client rejects replies of another version the same way.
//!
//! # Access
//!
//! Whoever can connect can change the dataplane, and connecting to a unix
//! socket takes write permission on its file, so the file's owner, group
//! and mode are the access control ([`bind`], [`bind_with`]):
//!
//! * The socket is created **mode `0600`** (its owner, and root) whatever
//!   the process umask, or **`0660` and group-owned** by the one group
//!   named in [`BindOptions::group`] (`rvsd --admin-socket-group NAME|GID`).
//!   It is bound in a private `0700` directory next to the path, given its
//!   mode and group there, and then hard-linked into place, so it is never
//!   reachable with a wider mode, not even for an instant.
//! * Binding **replaces only a stale socket of ours**: a socket owned by
//!   this process's effective uid on which connecting is refused. A
//!   symlink (never followed, even dangling), a regular file, a directory,
//!   another special file, a socket of another uid or a socket somebody
//!   listens on is refused with [`BindError::Occupied`], which names the
//!   path and what is there.
//! * The server **removes the socket file when it stops** only if the
//!   path still holds the file it created (same device and inode); it
//!   stops without going through the path, so removing or replacing the
//!   file while it runs neither hangs the shutdown nor loses the other
//!   file.
//! * The server **logs who changes what**: the client's uid and pid
//!   (`SO_PEERCRED`) with every operation of an `Apply` or `ApplyBatch`
//!   and its outcome at info level; connections and reads at debug level.
//!
//! Keep the socket in a directory that only the daemon's user can write
//! to (or a sticky one such as `/tmp`): whoever can rename entries in the
//! directory can swap files between the checks and the operations.

mod bind;
mod client;
mod server;
mod wire;

pub use bind::{
    AdminListener, BindError, BindOptions, GROUP_MODE, GroupParseError, OWNER_ONLY_MODE, Occupant,
    SocketGroup, bind, bind_with,
};
pub use client::{AdminClient, DEFAULT_TIMEOUT};
pub use rvs_model::admin::Admin;
pub use server::{
    MAX_CLIENTS, RunningServer, Server, SharedAdmin, ShutdownHandle, dispatch, serve,
};
pub use wire::{
    MAX_REQUEST_LINE, Reply, Request, RequestLine, ResponseLine, VERSION, WireError, decode_request,
};
