//! The admin socket of userspace dataplanes.
//!
//! This crate owns the wire protocol `rvsadm --target unix:PATH` speaks to
//! `rvsd` and to `rvs-proxy --admin-socket`: a client ([`AdminClient`])
//! implementing [`rvs_model::admin::Admin`] over a unix stream socket, and
//! a server ([`serve`], [`Server`]) that exposes any `Admin`
//! implementation on one.
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
//! The socket's file permissions are the access control: whoever can
//! connect can change the dataplane.

#![forbid(unsafe_code)]

mod client;
mod server;
mod wire;

pub use client::{AdminClient, DEFAULT_TIMEOUT};
pub use rvs_model::admin::Admin;
pub use server::{
    MAX_CLIENTS, RunningServer, Server, SharedAdmin, ShutdownHandle, bind, dispatch, serve,
};
pub use wire::{
    MAX_REQUEST_LINE, Reply, Request, RequestLine, ResponseLine, VERSION, WireError, decode_request,
};
