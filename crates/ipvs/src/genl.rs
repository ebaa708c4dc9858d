//! Generic netlink family resolution through the `nlctrl` controller.
//!
//! Every generic netlink protocol (IPVS among them) is reached through a
//! family id the kernel assigns at registration. This module owns asking
//! the controller for it and turning kernel errors into typed ones.

use std::io;

use netlink_packet_core::{NLM_F_REQUEST, NetlinkMessage, NetlinkPayload};
use netlink_packet_generic::GenlMessage;
use netlink_packet_generic::ctrl::nlas::GenlCtrlAttrs;
use netlink_packet_generic::ctrl::{GenlCtrl, GenlCtrlCmd};
use netlink_sys::protocols::NETLINK_GENERIC;
use netlink_sys::{Socket, SocketAddr};

/// A resolved generic netlink family.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Family {
    /// The family's name.
    pub name: String,
    /// The id the kernel assigned; used as the netlink message type.
    pub id: u16,
    /// The family's protocol version.
    pub version: u32,
}

/// Errors resolving a generic netlink family.
#[derive(Debug, thiserror::Error)]
pub enum GenlError {
    /// A socket operation failed.
    #[error("generic netlink: {context}")]
    Io {
        /// What was being done.
        context: &'static str,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// The name cannot be a family name (empty, or longer than the
    /// kernel's `GENL_NAMSIZ - 1` bytes).
    #[error("{name:?} is not a valid generic netlink family name (1 to {max} bytes)", max = GENL_NAMSIZ - 1)]
    InvalidName {
        /// The name that was given.
        name: String,
    },
    /// The kernel knows no family by that name.
    #[error("generic netlink family {name:?} is not registered (is its kernel module loaded?)")]
    FamilyNotFound {
        /// The family that was asked for.
        name: String,
    },
    /// The kernel answered with an error.
    #[error("generic netlink family {name:?}: kernel error")]
    Kernel {
        /// The family that was asked for.
        name: String,
        /// The kernel's errno as an I/O error.
        #[source]
        source: io::Error,
    },
    /// The kernel's answer could not be decoded or was not the expected one.
    #[error("generic netlink family {name:?}: unexpected answer: {detail}")]
    Protocol {
        /// The family that was asked for.
        name: String,
        /// What was wrong.
        detail: String,
    },
}

const ENOENT: i32 = 2;
/// `GENL_NAMSIZ` from `include/uapi/linux/genetlink.h`, NUL included.
const GENL_NAMSIZ: usize = 16;

/// Asks the kernel's generic netlink controller for the family `name`,
/// on a socket of its own.
pub fn resolve_family(name: &str) -> Result<Family, GenlError> {
    check_name(name)?;
    let io_err = |context| move |source| GenlError::Io { context, source };
    let mut socket = Socket::new(NETLINK_GENERIC).map_err(io_err("open socket"))?;
    socket.bind_auto().map_err(io_err("bind socket"))?;
    socket
        .connect(&SocketAddr::new(0, 0))
        .map_err(io_err("connect socket"))?;
    resolve_family_on(&socket, name)
}

/// Asks the kernel's generic netlink controller for the family `name` on
/// `socket` (a `NETLINK_GENERIC` socket), skipping any other message that
/// arrives on it meanwhile.
pub fn resolve_family_on(socket: &Socket, name: &str) -> Result<Family, GenlError> {
    const SEQUENCE: u32 = 0x7276_0001;
    check_name(name)?;
    let io_err = |context| move |source| GenlError::Io { context, source };
    let request = encode_get_family(name, SEQUENCE);
    socket
        .send(&request, 0)
        .map_err(io_err("send CTRL_CMD_GETFAMILY"))?;
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let len = socket
            .recv(&mut &mut buf[..], 0)
            .map_err(io_err("receive CTRL_CMD_GETFAMILY answer"))?;
        let answer = buf.get(..len).unwrap_or_default();
        // nlmsg_seq is bytes 8..12 of the header.
        let sequence = answer
            .get(8..12)
            .and_then(|b| b.try_into().ok())
            .map(u32::from_ne_bytes);
        if sequence == Some(SEQUENCE) {
            return decode_family(name, answer);
        }
    }
}

fn check_name(name: &str) -> Result<(), GenlError> {
    if name.is_empty() || name.len() >= GENL_NAMSIZ || name.contains('\0') {
        return Err(GenlError::InvalidName {
            name: name.to_owned(),
        });
    }
    Ok(())
}

/// Encodes a `CTRL_CMD_GETFAMILY` request for `name`.
fn encode_get_family(name: &str, sequence: u32) -> Vec<u8> {
    let mut genl = GenlMessage::from_payload(GenlCtrl {
        cmd: GenlCtrlCmd::GetFamily,
        nlas: vec![GenlCtrlAttrs::FamilyName(name.to_owned())],
    });
    genl.finalize();
    let mut msg = NetlinkMessage::from(genl);
    msg.header.flags = NLM_F_REQUEST;
    msg.header.sequence_number = sequence;
    msg.finalize();
    let mut buf = vec![0u8; msg.buffer_len()];
    msg.serialize(&mut buf);
    buf
}

/// Decodes the controller's answer to a `CTRL_CMD_GETFAMILY` request.
fn decode_family(name: &str, answer: &[u8]) -> Result<Family, GenlError> {
    let protocol = |detail: String| GenlError::Protocol {
        name: name.to_owned(),
        detail,
    };
    let msg = NetlinkMessage::<GenlMessage<GenlCtrl>>::deserialize(answer)
        .map_err(|e| protocol(e.to_string()))?;
    match msg.payload {
        NetlinkPayload::InnerMessage(genl) => {
            let mut id = None;
            let mut version = None;
            for nla in genl.payload.nlas {
                match nla {
                    GenlCtrlAttrs::FamilyId(v) => id = Some(v),
                    GenlCtrlAttrs::Version(v) => version = Some(v),
                    _ => {}
                }
            }
            match (id, version) {
                (Some(id), Some(version)) => Ok(Family {
                    name: name.to_owned(),
                    id,
                    version,
                }),
                _ => Err(protocol(
                    "answer lacks CTRL_ATTR_FAMILY_ID or CTRL_ATTR_VERSION".into(),
                )),
            }
        }
        NetlinkPayload::Error(err) => match err.code {
            Some(code) if code.get() == -ENOENT => Err(GenlError::FamilyNotFound {
                name: name.to_owned(),
            }),
            Some(code) => Err(GenlError::Kernel {
                name: name.to_owned(),
                source: io::Error::from_raw_os_error(-code.get()),
            }),
            None => Err(protocol("acknowledgement instead of a family".into())),
        },
        other => Err(protocol(format!("message {other:?}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_asks_nlctrl_for_the_family_by_name() {
        let bytes = encode_get_family("IPVS", 7);
        // nlmsghdr: length, type GENL_ID_CTRL (0x10), flags NLM_F_REQUEST.
        assert_eq!(
            u32::from_ne_bytes(bytes[0..4].try_into().unwrap()) as usize,
            bytes.len()
        );
        assert_eq!(u16::from_ne_bytes(bytes[4..6].try_into().unwrap()), 0x10);
        assert_eq!(u16::from_ne_bytes(bytes[6..8].try_into().unwrap()), 1);
        assert_eq!(u32::from_ne_bytes(bytes[8..12].try_into().unwrap()), 7);
        // genlmsghdr: CTRL_CMD_GETFAMILY (3).
        assert_eq!(bytes[16], 3);
        // One attribute: CTRL_ATTR_FAMILY_NAME (2), "IPVS\0" padded to 4.
        assert_eq!(u16::from_ne_bytes(bytes[20..22].try_into().unwrap()), 9);
        assert_eq!(u16::from_ne_bytes(bytes[22..24].try_into().unwrap()), 2);
        assert_eq!(&bytes[24..29], b"IPVS\0");
        assert_eq!(bytes.len(), 32);
    }

    #[test]
    fn enoent_means_the_family_is_missing() {
        // An NLMSG_ERROR carrying -ENOENT and the original request header.
        let request = encode_get_family("IPVS", 1);
        let mut answer = Vec::new();
        let len = 16 + 4 + 16;
        answer.extend_from_slice(&(len as u32).to_ne_bytes());
        answer.extend_from_slice(&2u16.to_ne_bytes()); // NLMSG_ERROR
        answer.extend_from_slice(&0u16.to_ne_bytes());
        answer.extend_from_slice(&1u32.to_ne_bytes());
        answer.extend_from_slice(&0u32.to_ne_bytes());
        answer.extend_from_slice(&(-ENOENT).to_ne_bytes());
        answer.extend_from_slice(&request[..16]);
        match decode_family("IPVS", &answer) {
            Err(GenlError::FamilyNotFound { name }) => assert_eq!(name, "IPVS"),
            other => panic!("expected FamilyNotFound, got {other:?}"),
        }
    }

    #[test]
    fn overlong_names_are_refused_without_asking_the_kernel() {
        assert!(matches!(
            resolve_family("SIXTEEN-BYTES-XX"),
            Err(GenlError::InvalidName { .. })
        ));
        assert!(matches!(
            resolve_family(""),
            Err(GenlError::InvalidName { .. })
        ));
    }

    #[test]
    fn nlctrl_itself_resolves_on_any_linux() {
        // The controller registers itself as "nlctrl" with id GENL_ID_CTRL.
        let family = resolve_family("nlctrl").expect("nlctrl is always registered");
        assert_eq!(family.id, 0x10);
        assert!(family.version >= 1);
    }
}
