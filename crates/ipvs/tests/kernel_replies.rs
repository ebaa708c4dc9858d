//! The kernel's replies captured in the test VM (the codec crate's
//! `tests/fixtures/kernel-replies.hex`; see `rvs-ipvs-proto`'s crate
//! documentation for what they are) decode into the model values that
//! were programmed; and a service dump reply edited the way a foreign
//! virtual server would make it (a scheduler module rvs does not know, an
//! attribute a later kernel may add) decodes, displays as the kernel
//! names it and re-emits byte for byte.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use netlink_packet_core::{NetlinkMessage, NetlinkPayload};
use netlink_packet_generic::GenlMessage;
use rvs_ipvs::convert;
use rvs_ipvs_proto::{CmdAttr, IpvsCmd, IpvsMessage, SvcAttr};
use rvs_model::{ForwardMethod, Scheduler, ServiceFlags};

type Msg = NetlinkMessage<GenlMessage<IpvsMessage>>;

fn fixtures() -> Vec<Vec<u8>> {
    rvs_testrig::fixtures::read_hex(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../ipvs-proto/tests/fixtures/kernel-replies.hex"
    ))
    .unwrap()
}

fn payload(bytes: &[u8]) -> IpvsMessage {
    match Msg::deserialize(bytes).unwrap().payload {
        NetlinkPayload::InnerMessage(genl) => genl.payload,
        other => panic!("{other:?}"),
    }
}

fn re_emit(bytes: &[u8]) -> Vec<u8> {
    let msg = Msg::deserialize(bytes).unwrap();
    let mut again = vec![0; msg.buffer_len()];
    msg.serialize(&mut again);
    again
}

#[test]
fn captured_replies_decode_to_what_was_programmed() {
    let mut services = Vec::new();
    let mut dests = Vec::new();
    let mut info = None;
    let mut timeouts = None;
    let mut errors = Vec::new();
    for bytes in fixtures() {
        let msg = Msg::deserialize(&bytes).unwrap();
        match msg.payload {
            NetlinkPayload::InnerMessage(genl) => {
                let m = genl.payload;
                match m.cmd {
                    IpvsCmd::SetInfo => info = Some(convert::info(&m).unwrap()),
                    IpvsCmd::NewService => {
                        services.push(convert::service_status(m.service().unwrap()).unwrap())
                    }
                    IpvsCmd::NewDest => {
                        dests.push(convert::dest_status(m.dest().unwrap(), false).unwrap())
                    }
                    IpvsCmd::SetConfig => timeouts = Some(convert::timeouts(&m)),
                    other => panic!("unexpected command {other:?}"),
                }
            }
            NetlinkPayload::Error(e) => errors.push(e.code.map(|c| c.get())),
            NetlinkPayload::Done(_) => {}
            other => panic!("unexpected payload {other:?}"),
        }
    }
    let info = info.unwrap();
    assert_eq!((info.version, info.conn_table_size), (0x010201, 4096));
    let t = timeouts.unwrap();
    assert_eq!((t.tcp, t.tcp_fin, t.udp), (900, 120, 300));
    let wlc = services
        .iter()
        .find(|s| s.service.scheduler == Scheduler::WeightedLeastConnection)
        .unwrap();
    assert_eq!(wlc.service.key.to_string(), "TCP 10.96.0.10:80");
    assert!(
        wlc.service
            .flags
            .has(ServiceFlags::PERSISTENT | ServiceFlags::HASHED)
    );
    assert_eq!(wlc.service.timeout, 300);
    let mh = services
        .iter()
        .find(|s| s.service.scheduler == Scheduler::Maglev)
        .unwrap();
    assert_eq!(mh.service.key.to_string(), "UDP [fd00::53]:53");
    assert_eq!(dests.len(), 1);
    assert_eq!(dests[0].destination.addr.to_string(), "10.0.2.2:8080");
    assert_eq!(dests[0].destination.forward, ForwardMethod::Masquerade);
    assert_eq!(dests[0].destination.weight, 1);
    // Deleting a service that is not there: ESRCH.
    assert!(errors.contains(&Some(-3)), "{errors:?}");
}

/// The captured dump message of the `wlc` service.
fn wlc_reply() -> Vec<u8> {
    fixtures()
        .into_iter()
        .find(|bytes| bytes.windows(4).any(|w| w == b"wlc\0"))
        .unwrap()
}

/// Replaces `wlc\0` (SCHED_NAME's 4-byte payload) by `fastest\0` (8
/// bytes) and appends an attribute of unknown type 0x7f to the service
/// nest, fixing up the lengths of the nest and of the message.
fn foreign_reply() -> Vec<u8> {
    let mut bytes = wlc_reply();
    // nlmsghdr (16) + genlmsghdr (4), then IPVS_CMD_ATTR_SERVICE.
    let nest = 20;
    assert_eq!(u16::from_ne_bytes([bytes[nest + 2], bytes[nest + 3]]), 1);
    let at = bytes.windows(4).position(|w| w == b"wlc\0").unwrap();
    // The SCHED_NAME header: length 8 (4 + "wlc\0"), type 6.
    assert_eq!(bytes[at - 4..at], [8, 0, 6, 0]);
    bytes[at - 4] = 12; // 4 + "fastest\0"
    bytes.splice(at..at + 4, *b"fastest\0");
    let unknown = [8, 0, 0x7f, 0, 0xde, 0xad, 0xbe, 0xef];
    let nest_len = u16::from_ne_bytes([bytes[nest], bytes[nest + 1]]) as usize;
    bytes.splice(nest + nest_len + 4..nest + nest_len + 4, unknown);
    let nest_len = u16::try_from(nest_len + 4 + unknown.len()).unwrap();
    bytes[nest..nest + 2].copy_from_slice(&nest_len.to_ne_bytes());
    let total = u32::try_from(bytes.len()).unwrap();
    bytes[..4].copy_from_slice(&total.to_ne_bytes());
    bytes
}

#[test]
fn a_foreign_scheduler_and_attribute_decode_display_and_re_emit() {
    let bytes = foreign_reply();
    let msg = payload(&bytes);
    assert_eq!(msg.cmd, IpvsCmd::NewService);
    let attrs = msg.service().unwrap();
    assert!(attrs.contains(&SvcAttr::SchedName("fastest".into())));
    let unknown = attrs
        .iter()
        .find_map(|a| match a {
            SvcAttr::Other(nla) => Some(nla.clone()),
            _ => None,
        })
        .unwrap();
    assert_eq!(netlink_packet_core::Nla::kind(&unknown), 0x7f);
    // The message re-emits to the very same bytes, unknowns included.
    assert_eq!(re_emit(&bytes), bytes);

    // Into the model: the scheduler is kept by its kernel name, the
    // unknown attribute is ignored, the rest is what was programmed.
    let status = convert::service_status(attrs).unwrap();
    let svc = &status.service;
    assert!(!svc.scheduler.is_known());
    assert_eq!(svc.scheduler.name(), "fastest");
    assert_eq!(svc.scheduler.to_string(), "fastest");
    assert_eq!(svc.key.to_string(), "TCP 10.96.0.10:80");
    assert_eq!(svc.timeout, 300);
    assert!(
        svc.flags
            .has(ServiceFlags::PERSISTENT | ServiceFlags::HASHED)
    );

    // Asking the kernel for the same service again names the same module.
    let request = convert::service_attrs(svc);
    assert!(request.contains(&SvcAttr::SchedName("fastest".into())));
}

#[test]
fn unknown_flag_bits_survive_decoding_and_encoding() {
    let mut bytes = wlc_reply();
    // IPVS_SVC_ATTR_FLAGS: length 12, type 7, then flags and mask.
    let at = bytes.windows(4).position(|w| w == [12, 0, 7, 0]).unwrap();
    bytes[at + 4..at + 8].copy_from_slice(&0x8000_0003u32.to_ne_bytes());
    let msg = payload(&bytes);
    assert_eq!(re_emit(&bytes), bytes);
    let svc = convert::service_status(msg.service().unwrap())
        .unwrap()
        .service;
    assert_eq!(svc.flags.0, 0x8000_0003);
    assert!(convert::service_attrs(&svc).contains(&SvcAttr::Flags {
        flags: 0x8000_0003,
        mask: u32::MAX
    }));
}

#[test]
fn a_service_of_a_foreign_protocol_is_singled_out() {
    let mut bytes = wlc_reply();
    // IPVS_SVC_ATTR_PROTOCOL: length 6, type 2, IPPROTO_TCP (6).
    let at = bytes
        .windows(6)
        .position(|w| w == [6, 0, 2, 0, 6, 0])
        .unwrap();
    bytes[at + 4] = 47; // IPPROTO_GRE
    let msg = payload(&bytes);
    let attrs = msg.service().unwrap();
    let err = convert::service_status(attrs).unwrap_err();
    assert!(err.is_unrepresentable(), "{err}");
    assert_eq!(
        convert::describe_service(attrs),
        "protocol 47 10.96.0.10:80"
    );
    assert!(matches!(msg.attrs[0], CmdAttr::Service(_)));
}
