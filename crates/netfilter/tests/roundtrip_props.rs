//! Property tests: typed messages survive emit → parse; members survive
//! text → attributes → member; arbitrary bytes never panic the parser.

#![allow(clippy::unwrap_used)] // test code

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;
use proptest::prelude::*;
use rvs_netfilter::ipset::message::{emit_buffer, parse_buffer};
use rvs_netfilter::ipset::{
    Addr, AdtAttr, DataAttr, Entry, IpsetAttr, IpsetCmd, IpsetMessage, Netlink, Proto,
};

fn ip() -> impl Strategy<Value = IpAddr> {
    prop_oneof![
        any::<u32>().prop_map(|v| IpAddr::V4(Ipv4Addr::from(v))),
        any::<u128>().prop_map(|v| IpAddr::V6(Ipv6Addr::from(v))),
    ]
}

fn addr() -> impl Strategy<Value = Addr> {
    (ip(), any::<bool>()).prop_map(|(ip, flagged)| Addr { ip, flagged })
}

fn text() -> impl Strategy<Value = String> {
    "[a-zA-Z0-9:,._ -]{0,40}"
}

fn entry_attr() -> impl Strategy<Value = DataAttr> {
    prop_oneof![
        addr().prop_map(DataAttr::Ip),
        addr().prop_map(DataAttr::Ip2),
        any::<u8>().prop_map(DataAttr::Cidr),
        any::<u8>().prop_map(DataAttr::Cidr2),
        any::<u16>().prop_map(DataAttr::Port),
        any::<u8>().prop_map(DataAttr::Proto),
        any::<u32>().prop_map(DataAttr::Timeout),
        any::<u32>().prop_map(DataAttr::LineNo),
        text().prop_map(DataAttr::Comment),
    ]
}

fn header_attr() -> impl Strategy<Value = DataAttr> {
    prop_oneof![
        any::<u32>().prop_map(DataAttr::HashSize),
        any::<u32>().prop_map(DataAttr::MaxElem),
        any::<u32>().prop_map(DataAttr::InitVal),
        any::<u8>().prop_map(DataAttr::BucketSize),
        any::<u32>().prop_map(DataAttr::References),
        any::<u32>().prop_map(DataAttr::MemSize),
        any::<u32>().prop_map(DataAttr::Elements),
        any::<u16>().prop_map(DataAttr::PortTo),
        any::<u32>().prop_map(DataAttr::CadtFlags),
    ]
}

fn list_reply() -> impl Strategy<Value = IpsetMessage> {
    (
        "[A-Z0-9-]{1,31}",
        proptest::collection::vec(header_attr(), 0..6),
        proptest::collection::vec(proptest::collection::vec(entry_attr(), 0..5), 0..8),
        any::<u32>(),
        any::<u16>(),
    )
        .prop_map(|(name, header, members, seq, index)| IpsetMessage {
            cmd: IpsetCmd::List,
            flags: 2,
            seq,
            pid: 7,
            nfgen_family: 2,
            version: 0,
            res_id: 0,
            attrs: vec![
                IpsetAttr::Protocol(7),
                IpsetAttr::SetName(name),
                IpsetAttr::TypeName("hash:ip,port".into()),
                IpsetAttr::Index(index),
                IpsetAttr::Data(header),
                IpsetAttr::Adt(members.into_iter().map(AdtAttr::Data).collect()),
            ],
        })
}

fn entry() -> impl Strategy<Value = Entry> {
    let proto = prop_oneof![Just(Proto::TCP), Just(Proto::UDP), Just(Proto::SCTP)];
    let v4 = any::<u32>().prop_map(|v| IpAddr::V4(Ipv4Addr::from(v)));
    let net4 = (any::<u32>(), 1u8..=32).prop_map(|(v, l)| {
        IpNet::new(IpAddr::V4(Ipv4Addr::from(v)), l)
            .unwrap()
            .trunc()
    });
    prop_oneof![
        v4.clone().prop_map(Entry::Ip),
        net4.clone().prop_map(Entry::Net),
        (v4.clone(), proto.clone(), any::<u16>()).prop_map(|(a, p, n)| Entry::IpPort(a, p, n)),
        (v4.clone(), proto.clone(), any::<u16>(), v4.clone())
            .prop_map(|(a, p, n, b)| Entry::IpPortIp(a, p, n, b)),
        (v4, proto, any::<u16>(), net4).prop_map(|(a, p, n, b)| Entry::IpPortNet(a, p, n, b)),
        any::<u16>().prop_map(Entry::Port),
    ]
}

proptest! {
    #[test]
    fn typed_list_replies_round_trip(msg in list_reply()) {
        let bytes = msg.to_bytes();
        let parsed = parse_buffer(&bytes).unwrap();
        prop_assert_eq!(&parsed, &vec![Netlink::Ipset(msg)]);
        prop_assert_eq!(emit_buffer(&parsed), bytes);
    }

    #[test]
    fn members_round_trip_through_text(e in entry()) {
        let t = e.set_type();
        prop_assert_eq!(Entry::parse(t, &e.to_string()).unwrap(), e);
    }

    #[test]
    fn arbitrary_bytes_never_panic_and_parse_stably(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
        if let Ok(parsed) = parse_buffer(&bytes) {
            // What parsed once re-emits to bytes that parse the same.
            let again = emit_buffer(&parsed);
            prop_assert_eq!(parse_buffer(&again).unwrap(), parsed);
        }
    }
}
