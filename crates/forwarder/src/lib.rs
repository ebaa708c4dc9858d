//! Userspace L4 forwarder.
//!
//! This crate will own the sockets of the userspace dataplane: TCP and UDP
//! listeners on virtual addresses, connection splicing with correct
//! half-close, UDP flow tables, and the admin socket `rvsadm --target`
//! talks to. Every scheduling decision is delegated to `rvs-lb`.
//! It is filled in by the userspace dataplane issue.

#![forbid(unsafe_code)]

pub use rvs_lb::Scheduler;
