//! Kernel IPVS dataplane: the I/O side of talking to the Linux IPVS.
//!
//! This crate owns netlink sockets and the request/response exchanges with
//! the kernel ([`IpvsClient`], which implements the shared
//! [`rvs_model::admin::Admin`] surface, with batching, and exchanges raw
//! [`rvs_ipvs_proto::IpvsMessage`]s), the conversion between rvs's model
//! and IPVS attributes ([`convert`]), generic netlink family resolution
//! ([`genl`]) and the `/proc/net/ip_vs_conn` reader ([`conntab`]). The
//! wire encoding lives in `rvs-ipvs-proto`.
//!
//! ```no_run
//! use rvs_ipvs::IpvsClient;
//! use rvs_model::admin::Admin;
//!
//! # fn main() -> Result<(), rvs_model::admin::AdminError> {
//! let mut ipvs = IpvsClient::connect()?;
//! ipvs.set_receive_timeout(Some(std::time::Duration::from_secs(5)))?;
//! for status in ipvs.services()? {
//!     let key = status.service.key;
//!     println!("{key} {}", status.service.scheduler);
//!     for dest in ipvs.destinations(&key)? {
//!         println!("  -> {} weight {}", dest.destination.addr, dest.destination.weight);
//!     }
//! }
//! # Ok(())
//! # }
//! ```
//!
//! `examples/list_services.rs` is the same as a program.

pub mod client;
pub mod conntab;
pub mod convert;
pub mod genl;

pub use client::IpvsClient;
pub use genl::{Family, GenlError, resolve_family, resolve_family_on};

/// Resolves the kernel's IPVS generic netlink family.
///
/// Fails with [`GenlError::FamilyNotFound`] when the `ip_vs` module is not
/// loaded (or the kernel lacks IPVS).
pub fn resolve_ipvs_family() -> Result<Family, GenlError> {
    resolve_family(rvs_ipvs_proto::FAMILY_NAME)
}
