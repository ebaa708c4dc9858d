//! Kernel IPVS dataplane: the I/O side of talking to the Linux IPVS.
//!
//! This crate owns netlink sockets and the request/response exchanges with
//! the kernel; the wire encoding lives in `rvs-ipvs-proto`. Today it
//! resolves generic netlink families (the first step of every IPVS
//! session); the IPVS client proper is added by the kernel IPVS issue.

#![forbid(unsafe_code)]

pub mod client;
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
