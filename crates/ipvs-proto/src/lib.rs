//! Sans-IO encoding of the Linux IPVS generic netlink protocol
//! (`include/uapi/linux/ip_vs.h`).
//!
//! This crate owns the wire format only: commands ([`IpvsCmd`]) and the
//! attributes of each nesting level ([`CmdAttr`], [`SvcAttr`],
//! [`DestAttr`], [`DaemonAttr`], [`StatsAttr`]), as
//! [`netlink_packet_core`] `Nla`s that plug into
//! `NetlinkMessage<GenlMessage<IpvsMessage>>`. It depends on the netlink
//! crates only and opens no sockets: the socket side, and the conversion
//! to and from rvs's service model, live in `rvs-ipvs`.
//!
//! Parsing is lossless: an attribute whose kind is unknown, or whose
//! payload does not have the size its kind implies, is kept verbatim as
//! `Other(DefaultNla)`, and nested attributes remember whether the sender
//! set `NLA_F_NESTED`, so a parsed message re-emits to identical bytes.
//! The enums are `#[non_exhaustive]`: a later kernel's attribute may get
//! a variant of its own instead of `Other`.
//!
//! # What is checked against a real kernel
//!
//! `tests/fixtures/kernel-replies.hex` holds messages the kernel *sent*:
//! the replies of the IPVS family of Debian's `6.1.0-57-cloud-amd64`
//! kernel (x86-64, so native-endian fields are little-endian) to the
//! requests of `rvs-ipvs`'s client, recorded by that client
//! (`IpvsClient::start_capture`) in the test VM by the in-VM test
//! `in_vm_kernel_replies_re_emit_identically` of
//! `crates/ipvs/tests/kernel_vm.rs` and written there with
//! `RVS_WRITE_FIXTURES=1`. They are a `GET_INFO` reply, a `GET_SERVICE`
//! dump of two services (an IPv6 UDP `mh` one and an IPv4 TCP persistent
//! `wlc` one), a `GET_DEST` dump of one destination, a `GET_CONFIG`
//! reply, acknowledgements, `NLMSG_DONE`s and the `ESRCH` error for
//! deleting a missing service. (An earlier capture from
//! `6.1.0-56-cloud-amd64` was the same bytes but for the socket's port
//! id.) `tests/kernel_fixtures.rs` parses each
//! and re-emits it byte for byte; `tests/attribute_bytes.rs` spells out
//! each service, destination and counter attribute of those replies
//! field by field. Attributes the capture does not contain (a service's
//! `FWMARK` and `PE_NAME`, every sync-daemon attribute, the stats
//! padding) are tested from bytes laid out as `ip_vs_ctl.c` writes them,
//! and say so.
//!
//! The *requests* this crate encodes for rvs are not compared with
//! captured bytes (neither ipvsadm's nor anyone's): they are checked by
//! round trips (encode, parse, same value and same bytes) and, in the
//! test VM, by the kernel accepting them and `ipvsadm` reading back what
//! they programmed (`rvs-ipvs`'s `kernel_vm` and `rvsadm`'s
//! `differential_vm` tests).

mod attr;
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
