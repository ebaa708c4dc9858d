//! Userspace L4 forwarder.
//!
//! This crate owns the sockets of the userspace dataplane: TCP and UDP
//! listeners on virtual addresses ([`listen`], with `SO_REUSEPORT` so
//! several workers share a VIP:port), TCP forwarding with rescheduling
//! on connect failure and a half-close-correct, `splice(2)`-based duplex
//! copy ([`tcp`], [`copy`]), and UDP flow tables with idle expiry
//! ([`udp`]). Every scheduling decision is delegated to a [`Balancer`],
//! which the `rvs-lb` core implements; a balancer may also watch a TCP
//! connection's [`Activity`] and have it closed while idle ([`activity`]).

pub mod activity;
mod balancer;
pub mod copy;
mod error;
pub mod listen;
pub mod tcp;
pub mod udp;

pub use activity::Activity;
pub use balancer::{Balancer, Counters, Flow};
pub use error::ForwardError;
pub use rvs_model::Protocol;
