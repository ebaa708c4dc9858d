//! Property tests: requests built from arbitrary model values parse back
//! to the same values and the same bytes, and arbitrary bytes never make
//! the decoder panic.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::net::{IpAddr, SocketAddr};

use netlink_packet_core::{NetlinkHeader, NetlinkMessage, NetlinkPayload};
use netlink_packet_generic::GenlMessage;
use proptest::prelude::*;
use rvs_ipvs_proto::convert;
use rvs_ipvs_proto::{CmdAttr, IpvsMessage};
use rvs_model::admin::Op;
use rvs_model::{
    Destination, ForwardMethod, Netmask, Protocol, Scheduler, Service, ServiceFlags, ServiceKey,
    Tunnel, TunnelFlags, TunnelType,
};

type Msg = NetlinkMessage<GenlMessage<IpvsMessage>>;

fn ip() -> impl Strategy<Value = IpAddr> {
    prop_oneof![
        any::<[u8; 4]>().prop_map(IpAddr::from),
        any::<[u8; 16]>().prop_map(IpAddr::from),
    ]
}

fn key() -> impl Strategy<Value = ServiceKey> {
    let proto = prop_oneof![
        Just(Protocol::Tcp),
        Just(Protocol::Udp),
        Just(Protocol::Sctp)
    ];
    prop_oneof![
        (proto, ip(), any::<u16>()).prop_map(|(protocol, ip, port)| ServiceKey::Addr {
            protocol,
            addr: SocketAddr::new(ip, port)
        }),
        (1..u32::MAX, any::<bool>()).prop_map(|(mark, ipv6)| ServiceKey::Fwmark { mark, ipv6 }),
    ]
}

fn service() -> impl Strategy<Value = Service> {
    (
        key(),
        0..Scheduler::ALL.len(),
        0u32..64,
        any::<u32>(),
        any::<u32>(),
        proptest::option::of("[a-z]{1,8}"),
    )
        .prop_map(|(key, s, flags, timeout, mask, pe)| {
            let mut svc = Service::new(key, Scheduler::ALL[s]);
            svc.flags = ServiceFlags(flags);
            svc.timeout = timeout;
            svc.netmask = if key.is_ipv6() {
                Netmask(mask % 129)
            } else {
                Netmask(mask)
            };
            svc.pe_name = pe;
            svc
        })
}

fn destination() -> impl Strategy<Value = Destination> {
    (
        ip(),
        any::<u16>(),
        0u32..5,
        any::<i32>(),
        any::<u32>(),
        any::<u32>(),
        0u8..3,
        any::<u16>(),
        0u16..4,
    )
        .prop_map(|(ip, port, fwd, weight, u, l, tt, tp, tf)| {
            let forward = ForwardMethod::from_kernel(fwd);
            Destination {
                addr: SocketAddr::new(ip, port),
                forward,
                weight,
                upper_threshold: u,
                lower_threshold: l,
                tunnel: if forward == ForwardMethod::Tunnel {
                    Tunnel {
                        kind: TunnelType::from_kernel(tt),
                        port: tp,
                        flags: TunnelFlags(tf),
                    }
                } else {
                    Tunnel::default()
                },
            }
        })
}

fn wire(op: &Op, seq: u32) -> Vec<u8> {
    let mut genl = GenlMessage::from_payload(convert::request(op));
    genl.set_resolved_family_id(0x20);
    let mut header = NetlinkHeader::default();
    header.sequence_number = seq;
    let mut msg = NetlinkMessage::new(header, NetlinkPayload::from(genl));
    msg.finalize();
    let mut bytes = vec![0; msg.buffer_len()];
    msg.serialize(&mut bytes);
    bytes
}

fn reparse(bytes: &[u8]) -> IpvsMessage {
    match Msg::deserialize(bytes).unwrap().payload {
        NetlinkPayload::InnerMessage(genl) => genl.payload,
        other => panic!("{other:?}"),
    }
}

proptest! {
    #[test]
    fn services_round_trip(svc in service(), seq in any::<u32>()) {
        let bytes = wire(&Op::AddService(svc.clone()), seq);
        let msg = reparse(&bytes);
        let back = convert::service_status(msg.service().unwrap()).unwrap().service;
        prop_assert_eq!(back, svc);
        let mut again = vec![0; Msg::deserialize(&bytes).unwrap().buffer_len()];
        Msg::deserialize(&bytes).unwrap().serialize(&mut again);
        prop_assert_eq!(again, bytes);
    }

    #[test]
    fn destinations_round_trip(k in key(), dest in destination()) {
        let bytes = wire(&Op::AddDestination(k, dest.clone()), 1);
        let msg = reparse(&bytes);
        let back = convert::dest_status(msg.dest().unwrap(), k.is_ipv6()).unwrap().destination;
        prop_assert_eq!(back, dest);
        prop_assert!(matches!(msg.attrs.first(), Some(CmdAttr::Service(_))));
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        if let Ok(mut msg) = Msg::deserialize(&bytes) {
            // Whatever parsed must emit without panicking, to its own length.
            // `serialize` trusts the header's length field, so it is made
            // consistent with the payload first, as netlink-packet-core
            // requires of every message it emits.
            msg.finalize();
            let mut out = vec![0; msg.buffer_len()];
            msg.serialize(&mut out);
        }
    }

    #[test]
    fn mutated_kernel_replies_never_panic(index in 0usize..10, pos in any::<usize>(), byte in any::<u8>()) {
        let text = include_str!("fixtures/kernel-replies.hex");
        let lines: Vec<&str> = text.lines().filter(|l| !l.starts_with('#')).collect();
        let line = lines[index % lines.len()];
        let mut bytes: Vec<u8> = (0..line.len()).step_by(2).map(|i| u8::from_str_radix(&line[i..i + 2], 16).unwrap()).collect();
        let at = pos % bytes.len();
        bytes[at] = byte;
        if let Ok(mut msg) = Msg::deserialize(&bytes) {
            msg.finalize();
            let mut out = vec![0; msg.buffer_len()];
            msg.serialize(&mut out);
        }
    }
}

/// Found by the fuzzer: an attribute flagged both nested and
/// network-byte-order cannot be re-emitted faithfully, so it is refused.
#[test]
fn attributes_with_both_flag_bits_are_refused() {
    let bytes: Vec<u8> = vec![
        0x1c, 0, 0, 0, 0x28, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, // nlmsghdr, type 0x28
        1, 1, 0, 0, // genlmsghdr
        8, 0, 0xf4, 0xff, 1, 2, 3, 4, // attribute type 0xfff4
    ];
    assert!(Msg::deserialize(&bytes).is_err());
    let mut ok = bytes.clone();
    ok[22] = 0xf4;
    ok[23] = 0x3f; // no flags: accepted and re-emitted as is
    let msg = Msg::deserialize(&ok).unwrap();
    let mut again = vec![0; msg.buffer_len()];
    msg.serialize(&mut again);
    assert_eq!(again, ok);
}
