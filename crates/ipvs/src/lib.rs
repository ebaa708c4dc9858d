//! Kernel IPVS dataplane: the I/O side of talking to the Linux IPVS.
//!
//! This crate owns netlink sockets and the request/response exchanges with
//! the kernel ([`IpvsClient`], which implements the shared
//! [`rvs_model::admin::Admin`] surface, with batching), generic netlink
//! family resolution ([`genl`]) and the `/proc/net/ip_vs_conn` reader
//! ([`conntab`]). The wire encoding lives in `rvs-ipvs-proto`.

pub mod client;
pub mod conntab;
pub mod genl;

pub use client::IpvsClient;
pub use genl::{Family, GenlError, resolve_family};

/// Resolves the kernel's IPVS generic netlink family.
///
/// Fails with [`GenlError::FamilyNotFound`] when the `ip_vs` module is not
/// loaded (or the kernel lacks IPVS).
pub fn resolve_ipvs_family() -> Result<Family, GenlError> {
    resolve_family(rvs_ipvs_proto::FAMILY_NAME)
}
