//! Bytes the real kernel sent (recorded by `tests/ipset_netns.rs` with
//! `RVS_RECORD_FIXTURES=1`) parse into typed messages and re-emit
//! identically, with no attribute left untyped.

#![allow(clippy::unwrap_used)] // test code

use rvs_netfilter::ipset::message::{emit_buffer, parse_buffer};
use rvs_netfilter::ipset::ops::collect_sets;
use rvs_netfilter::ipset::{AdtAttr, DataAttr, IpsetAttr, Netlink, SetType};

fn buffers() -> Vec<Vec<u8>> {
    rvs_testrig::fixtures::read_hex(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/ipset_list_dump.hex"
    ))
    .unwrap()
}

#[test]
fn every_kernel_buffer_re_emits_byte_for_byte() {
    let bufs = buffers();
    assert!(bufs.len() >= 8);
    for buf in &bufs {
        let parsed = parse_buffer(buf).unwrap();
        assert_eq!(&emit_buffer(&parsed), buf);
    }
    // The last buffer ends the dump.
    let last = parse_buffer(bufs.last().unwrap()).unwrap();
    assert!(matches!(last.last(), Some(Netlink::Done { .. })));
}

#[test]
fn kernel_list_replies_are_fully_typed() {
    for buf in buffers() {
        for msg in parse_buffer(&buf).unwrap() {
            let Netlink::Ipset(msg) = msg else { continue };
            for attr in &msg.attrs {
                match attr {
                    IpsetAttr::Other(raw) => panic!("untyped attribute {raw:?}"),
                    IpsetAttr::Data(data) => {
                        assert!(
                            !data.iter().any(|d| matches!(d, DataAttr::Other(_))),
                            "{data:?}"
                        );
                    }
                    IpsetAttr::Adt(items) => {
                        for item in items {
                            let AdtAttr::Data(data) = item else {
                                panic!("{item:?}")
                            };
                            assert!(
                                !data.iter().any(|d| matches!(d, DataAttr::Other(_))),
                                "{data:?}"
                            );
                        }
                    }
                    _ => {}
                }
            }
        }
    }
}

#[test]
fn kernel_list_replies_read_as_the_cli_shows_them() {
    let msgs: Vec<_> = buffers()
        .iter()
        .flat_map(|b| parse_buffer(b).unwrap())
        .filter_map(|m| match m {
            Netlink::Ipset(m) => Some(m),
            _ => None,
        })
        .collect();
    let sets = collect_sets(&msgs).unwrap();
    let show = |name: &str| {
        let set = sets.iter().find(|s| s.name == name).unwrap();
        let mut members: Vec<String> = set.members.iter().map(|m| m.entry.to_string()).collect();
        members.sort();
        (set.set_type, set.revision, members)
    };
    assert_eq!(
        show("A"),
        (
            Some(SetType::HashIpPort),
            7,
            vec!["10.0.0.1,tcp:80".into(), "10.0.0.2,udp:53".into()]
        )
    );
    assert_eq!(
        show("B"),
        (
            Some(SetType::HashIpPortIp),
            6,
            vec!["fd00::1,udp:53,fd00::2".into()]
        )
    );
    assert_eq!(
        show("C"),
        (
            Some(SetType::HashIpPortNet),
            8,
            vec![
                "1.2.3.4,tcp:80,10.0.0.0/8".into(),
                "1.2.3.4,tcp:81,10.0.0.1".into()
            ]
        )
    );
    assert_eq!(
        show("D"),
        (Some(SetType::HashIp), 6, vec!["10.1.1.1".into()])
    );
    assert_eq!(
        show("E"),
        (Some(SetType::HashNet), 7, vec!["10.0.0.0/16".into()])
    );
    assert_eq!(
        show("F"),
        (
            Some(SetType::BitmapPort),
            3,
            vec!["30080".into(), "30081".into()]
        )
    );
    let g = sets.iter().find(|s| s.name == "G").unwrap();
    assert_eq!(g.members[0].comment.as_deref(), Some("hi there"));
    let a = sets.iter().find(|s| s.name == "A").unwrap();
    assert_eq!(a.maxelem(), Some(65536));
    assert_eq!(a.references(), Some(0));
}
