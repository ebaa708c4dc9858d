//! Property tests: requests built from arbitrary model values (with
//! schedulers rvs does not know among them) parse back to the same values
//! and the same bytes.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::net::{IpAddr, SocketAddr};

use netlink_packet_core::{NetlinkHeader, NetlinkMessage, NetlinkPayload};
use netlink_packet_generic::GenlMessage;
use proptest::prelude::*;
use rvs_ipvs::convert;
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

/// A known scheduler, or any name the kernel could report.
fn scheduler() -> impl Strategy<Value = Scheduler> {
    prop_oneof![
        prop::sample::select(Scheduler::ALL.to_vec()),
        "[a-z0-9_]{1,15}".prop_map(|name| Scheduler::from_kernel_name(&name).unwrap()),
    ]
}

fn service() -> impl Strategy<Value = Service> {
    (
        key(),
        scheduler(),
        0u32..64,
        any::<u32>(),
        any::<u32>(),
        proptest::option::of("[a-z]{1,8}"),
    )
        .prop_map(|(key, sched, flags, timeout, mask, pe)| {
            let mut svc = Service::new(key, sched);
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
}
