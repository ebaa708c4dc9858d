//! Sans-IO encoding of the Linux IPVS generic netlink protocol
//! (`include/uapi/linux/ip_vs.h`).
//!
//! This crate owns the wire format only: commands ([`IpvsCmd`]), the
//! attributes of each nesting level ([`CmdAttr`], [`SvcAttr`],
//! [`DestAttr`], [`DaemonAttr`], [`StatsAttr`]) and their conversion to and
//! from [`rvs_model`] types ([`convert`]). It opens no sockets, so every
//! byte it produces is checked in unit tests against bytes captured from a
//! real kernel. The socket side lives in `rvs-ipvs`.
//!
//! Parsing is lossless: an attribute whose kind is unknown, or whose
//! payload does not have the size its kind implies, is kept verbatim as
//! `Other(DefaultNla)`, and nested attributes remember whether the sender
//! set `NLA_F_NESTED`, so a parsed message re-emits to identical bytes.

mod attr;
pub mod convert;
mod daemon;
mod dest;
mod message;
mod service;
mod stats;

pub use attr::Nested;
pub use daemon::DaemonAttr;
pub use dest::DestAttr;
pub use message::{CmdAttr, IpvsCmd, IpvsMessage};
pub use netlink_packet_core::DefaultNla;
pub use service::SvcAttr;
pub use stats::{Counter, StatsAttr, StatsField};

/// Name of the generic netlink family the kernel registers for IPVS.
pub const FAMILY_NAME: &str = "IPVS";

/// Version of the IPVS generic netlink family (`IPVS_GENL_VERSION`).
pub const FAMILY_VERSION: u8 = 0x1;

/// `AF_INET`.
pub const AF_INET: u16 = 2;
/// `AF_INET6`.
pub const AF_INET6: u16 = 10;

#[cfg(test)]
mod tests {
    #[test]
    fn family_name_is_what_the_kernel_registers() {
        // IPVS_GENL_NAME in include/uapi/linux/ip_vs.h.
        assert_eq!(super::FAMILY_NAME, "IPVS");
        assert_eq!(super::FAMILY_VERSION, 1);
    }
}
