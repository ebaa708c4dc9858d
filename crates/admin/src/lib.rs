//! The admin socket of userspace dataplanes.
//!
//! This crate will own the wire protocol `rvsadm --target unix:PATH` speaks
//! to `rvsd` and to `rvs-proxy --admin-socket`: a client implementing
//! [`rvs_model::admin::Admin`] over a unix socket, and a server that exposes
//! any `Admin` implementation on one.

#![forbid(unsafe_code)]

pub use rvs_model::admin::Admin;
