//! Sans-IO encoding of the Linux IPVS generic netlink protocol
//! (`include/uapi/linux/ip_vs.h`).
//!
//! This crate owns the wire format only: commands, attributes, flag bits
//! and their conversion to and from [`rvs_model`] types. It opens no
//! sockets, so every byte it produces can be checked in unit tests against
//! bytes captured from a real kernel. The socket side lives in `rvs-ipvs`.

#![forbid(unsafe_code)]

/// Name of the generic netlink family the kernel registers for IPVS.
pub const FAMILY_NAME: &str = "IPVS";

/// Version of the IPVS generic netlink family (`IPVS_GENL_VERSION`).
pub const FAMILY_VERSION: u8 = 0x1;

#[cfg(test)]
mod tests {
    #[test]
    fn family_name_is_what_the_kernel_registers() {
        // IPVS_GENL_NAME in include/uapi/linux/ip_vs.h.
        assert_eq!(super::FAMILY_NAME, "IPVS");
        assert_eq!(super::FAMILY_VERSION, 1);
    }
}
