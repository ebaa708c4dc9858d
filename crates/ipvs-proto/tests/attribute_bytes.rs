//! Every service, destination, sync-daemon and counter attribute, byte by
//! byte, in the manner of netlink-packet-route's `link/tests/veth.rs`: the
//! bytes written out with a comment per field, parsed to the expected
//! value, and that value emitted to the very same bytes.
//!
//! Byte order: the kernel writes native-endian fields (little-endian on
//! the x86-64 VM the captures come from) except where `ip_vs.h` says
//! "network byte order" (ports, IPv4 netmasks and multicast groups).
//!
//! Source of truth: each attribute marked `captured` is copied from
//! `fixtures/kernel-replies.hex` (Debian's 6.1.0-57-cloud-amd64 kernel's
//! replies, see the crate documentation), and [`captured`] checks that
//! those bytes are there. The capture has no `FWMARK` or `PE_NAME`
//! service attribute, no sync daemon and no stats padding; those tests
//! lay the bytes out as `ip_vs_ctl.c` (`ip_vs_genl_fill_service`,
//! `ip_vs_genl_fill_daemon`, `ip_vs_genl_fill_stats`) writes them, and say
//! so.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::fmt::Debug;

use netlink_packet_core::{DefaultNla, Emitable, Nla, NlaBuffer, Parseable};
use rvs_ipvs_proto::{Counter, DaemonAttr, DestAttr, Nested, StatsAttr, StatsField, SvcAttr};

/// The captured replies, as bytes.
fn fixtures() -> Vec<Vec<u8>> {
    rvs_testrig::fixtures::read_hex(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/kernel-replies.hex"
    ))
    .unwrap()
}

/// Asserts that the kernel sent exactly these bytes somewhere in the
/// captured replies.
fn captured(bytes: &[u8]) {
    assert!(
        fixtures()
            .iter()
            .any(|reply| reply.windows(bytes.len()).any(|w| w == bytes)),
        "not in the captured replies: {bytes:02x?}"
    );
}

/// Parses `bytes` as one attribute, compares with `expected`, and emits
/// `expected` back to `bytes` (padding included).
fn round_trip<A>(bytes: &[u8], expected: A)
where
    A: Nla + for<'a> Parseable<NlaBuffer<&'a [u8]>> + PartialEq + Debug,
{
    let parsed = A::parse(&NlaBuffer::new_checked(bytes).unwrap()).unwrap();
    assert_eq!(parsed, expected);
    let mut out = vec![0xaa; expected.buffer_len()];
    expected.emit(&mut out);
    assert_eq!(out, bytes, "{expected:?}");
}

// ---------------------------------------------------------------------
// Service attributes (IPVS_SVC_ATTR_*, in IPVS_CMD_ATTR_SERVICE).
// ---------------------------------------------------------------------

#[test]
fn svc_af() {
    let bytes = [
        0x06, 0x00, // length 6
        0x01, 0x00, // type 1: IPVS_SVC_ATTR_AF
        0x0a, 0x00, // u16: AF_INET6 (10)
        0x00, 0x00, // padding
    ];
    captured(&bytes);
    round_trip(&bytes, SvcAttr::Af(10));
}

#[test]
fn svc_protocol() {
    let bytes = [
        0x06, 0x00, // length 6
        0x02, 0x00, // type 2: IPVS_SVC_ATTR_PROTOCOL
        0x11, 0x00, // u16: IPPROTO_UDP (17)
        0x00, 0x00, // padding
    ];
    captured(&bytes);
    round_trip(&bytes, SvcAttr::Protocol(17));
}

#[test]
fn svc_addr() {
    let bytes = [
        0x14, 0x00, // length 20
        0x03, 0x00, // type 3: IPVS_SVC_ATTR_ADDR
        // union nf_inet_addr, 16 bytes: fd00::53
        0xfd, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, //
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x53,
    ];
    captured(&bytes);
    let mut ip = [0; 16];
    ip[0] = 0xfd;
    ip[15] = 0x53;
    round_trip(&bytes, SvcAttr::Addr(ip.to_vec()));
}

#[test]
fn svc_addr_ipv4() {
    let bytes = [
        0x14, 0x00, // length 20
        0x03, 0x00, // type 3: IPVS_SVC_ATTR_ADDR
        0x0a, 0x60, 0x00, 0x0a, // 10.96.0.10 ...
        0x00, 0x00, 0x00, 0x00, // ... and the rest of the 16-byte union, zero
        0x00, 0x00, 0x00, 0x00, //
        0x00, 0x00, 0x00, 0x00,
    ];
    captured(&bytes);
    let mut ip = vec![0; 16];
    ip[..4].copy_from_slice(&[10, 96, 0, 10]);
    round_trip(&bytes, SvcAttr::Addr(ip));
}

#[test]
fn svc_port() {
    let bytes = [
        0x06, 0x00, // length 6
        0x04, 0x00, // type 4: IPVS_SVC_ATTR_PORT
        0x00, 0x35, // be16: 53
        0x00, 0x00, // padding
    ];
    captured(&bytes);
    round_trip(&bytes, SvcAttr::Port(53));
}

#[test]
fn svc_fwmark() {
    // Not in the capture: laid out as ip_vs_genl_fill_service writes it
    // (nla_put_u32) for a firewall-mark service.
    let bytes = [
        0x08, 0x00, // length 8
        0x05, 0x00, // type 5: IPVS_SVC_ATTR_FWMARK
        0x07, 0x00, 0x00, 0x00, // u32: mark 7
    ];
    round_trip(&bytes, SvcAttr::Fwmark(7));
}

#[test]
fn svc_sched_name() {
    let bytes = [
        0x07, 0x00, // length 7
        0x06, 0x00, // type 6: IPVS_SVC_ATTR_SCHED_NAME
        b'm', b'h', 0x00, // "mh", NUL-terminated
        0x00, // padding
    ];
    captured(&bytes);
    round_trip(&bytes, SvcAttr::SchedName("mh".into()));
}

#[test]
fn svc_flags() {
    let bytes = [
        0x0c, 0x00, // length 12
        0x07, 0x00, // type 7: IPVS_SVC_ATTR_FLAGS, struct ip_vs_flags:
        0x02, 0x00, 0x00, 0x00, // flags: IP_VS_SVC_F_HASHED
        0xff, 0xff, 0xff, 0xff, // mask: all
    ];
    captured(&bytes);
    round_trip(
        &bytes,
        SvcAttr::Flags {
            flags: 2,
            mask: u32::MAX,
        },
    );
}

#[test]
fn svc_timeout() {
    let bytes = [
        0x08, 0x00, // length 8
        0x08, 0x00, // type 8: IPVS_SVC_ATTR_TIMEOUT
        0x2c, 0x01, 0x00, 0x00, // u32: 300 seconds
    ];
    captured(&bytes);
    round_trip(&bytes, SvcAttr::Timeout(300));
}

#[test]
fn svc_netmask() {
    let ipv6 = [
        0x08, 0x00, // length 8
        0x09, 0x00, // type 9: IPVS_SVC_ATTR_NETMASK
        0x80, 0x00, 0x00, 0x00, // IPv6: prefix length 128, host order
    ];
    captured(&ipv6);
    round_trip(&ipv6, SvcAttr::Netmask([0x80, 0, 0, 0]));
    let ipv4 = [
        0x08, 0x00, // length 8
        0x09, 0x00, // type 9: IPVS_SVC_ATTR_NETMASK
        0xff, 0xff, 0xff, 0xff, // IPv4: 255.255.255.255, network order
    ];
    captured(&ipv4);
    round_trip(&ipv4, SvcAttr::Netmask([0xff; 4]));
}

/// The 32-bit counters nest of a service or destination (all zero: the
/// capture saw no traffic).
const STATS: [u8; 92] = [
    0x5c, 0x00, // length 92
    0x0a, 0x00, // type 10: IPVS_SVC_ATTR_STATS (IPVS_DEST_ATTR_STATS too)
    0x08, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, // CONNS, u32
    0x08, 0x00, 0x02, 0x00, 0x00, 0x00, 0x00, 0x00, // INPKTS, u32
    0x08, 0x00, 0x03, 0x00, 0x00, 0x00, 0x00, 0x00, // OUTPKTS, u32
    0x0c, 0x00, 0x04, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // INBYTES, u64
    0x0c, 0x00, 0x05, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // OUTBYTES, u64
    0x08, 0x00, 0x06, 0x00, 0x00, 0x00, 0x00, 0x00, // CPS, u32
    0x08, 0x00, 0x07, 0x00, 0x00, 0x00, 0x00, 0x00, // INPPS, u32
    0x08, 0x00, 0x08, 0x00, 0x00, 0x00, 0x00, 0x00, // OUTPPS, u32
    0x08, 0x00, 0x09, 0x00, 0x00, 0x00, 0x00, 0x00, // INBPS, u32
    0x08, 0x00, 0x0a, 0x00, 0x00, 0x00, 0x00, 0x00, // OUTBPS, u32
];

fn stats32() -> Nested<StatsAttr> {
    use StatsField::*;
    let wide = [InBytes, OutBytes];
    Nested::new(
        StatsField::ALL
            .into_iter()
            .map(|f| {
                let counter = if wide.contains(&f) {
                    Counter::U64(0)
                } else {
                    Counter::U32(0)
                };
                StatsAttr::Field(f, counter)
            })
            .collect(),
    )
}

/// The 64-bit counters nest: every counter a u64, no padding attribute
/// (x86-64 has efficient unaligned access, so `nla_put_u64_64bit` adds
/// none).
const STATS64: [u8; 124] = [
    0x7c, 0x00, // length 124
    0x0c, 0x00, // type 12: IPVS_SVC_ATTR_STATS64 (IPVS_DEST_ATTR_STATS64 too)
    0x0c, 0x00, 0x01, 0x00, 0, 0, 0, 0, 0, 0, 0, 0, // CONNS
    0x0c, 0x00, 0x02, 0x00, 0, 0, 0, 0, 0, 0, 0, 0, // INPKTS
    0x0c, 0x00, 0x03, 0x00, 0, 0, 0, 0, 0, 0, 0, 0, // OUTPKTS
    0x0c, 0x00, 0x04, 0x00, 0, 0, 0, 0, 0, 0, 0, 0, // INBYTES
    0x0c, 0x00, 0x05, 0x00, 0, 0, 0, 0, 0, 0, 0, 0, // OUTBYTES
    0x0c, 0x00, 0x06, 0x00, 0, 0, 0, 0, 0, 0, 0, 0, // CPS
    0x0c, 0x00, 0x07, 0x00, 0, 0, 0, 0, 0, 0, 0, 0, // INPPS
    0x0c, 0x00, 0x08, 0x00, 0, 0, 0, 0, 0, 0, 0, 0, // OUTPPS
    0x0c, 0x00, 0x09, 0x00, 0, 0, 0, 0, 0, 0, 0, 0, // INBPS
    0x0c, 0x00, 0x0a, 0x00, 0, 0, 0, 0, 0, 0, 0, 0, // OUTBPS
];

fn stats64() -> Nested<StatsAttr> {
    Nested::new(
        StatsField::ALL
            .into_iter()
            .map(|f| StatsAttr::Field(f, Counter::U64(0)))
            .collect(),
    )
}

#[test]
fn svc_stats() {
    captured(&STATS);
    round_trip(&STATS, SvcAttr::Stats(stats32()));
}

#[test]
fn svc_pe_name() {
    // Not in the capture: laid out as ip_vs_genl_fill_service writes it
    // (nla_put_string) for a service with `--pe sip`.
    let bytes = [
        0x08, 0x00, // length 8
        0x0b, 0x00, // type 11: IPVS_SVC_ATTR_PE_NAME
        b's', b'i', b'p', 0x00, // "sip", NUL-terminated
    ];
    round_trip(&bytes, SvcAttr::PeName("sip".into()));
}

#[test]
fn svc_stats64() {
    captured(&STATS64);
    round_trip(&STATS64, SvcAttr::Stats64(stats64()));
}

#[test]
fn svc_unknown_kind_is_kept() {
    // A kind this crate does not know (a later kernel's), kept verbatim.
    let bytes = [
        0x08, 0x00, // length 8
        0x7f, 0x00, // type 127: unknown
        0xde, 0xad, 0xbe, 0xef, // payload
    ];
    round_trip(
        &bytes,
        SvcAttr::Other(DefaultNla::new(0x7f, vec![0xde, 0xad, 0xbe, 0xef])),
    );
}

// ---------------------------------------------------------------------
// Destination attributes (IPVS_DEST_ATTR_*, in IPVS_CMD_ATTR_DEST).
// ---------------------------------------------------------------------

#[test]
fn dest_addr() {
    let bytes = [
        0x14, 0x00, // length 20
        0x01, 0x00, // type 1: IPVS_DEST_ATTR_ADDR
        0x0a, 0x00, 0x02, 0x02, // 10.0.2.2 ...
        0x00, 0x00, 0x00, 0x00, // ... in a 16-byte union nf_inet_addr
        0x00, 0x00, 0x00, 0x00, //
        0x00, 0x00, 0x00, 0x00,
    ];
    captured(&bytes);
    let mut ip = vec![0; 16];
    ip[..4].copy_from_slice(&[10, 0, 2, 2]);
    round_trip(&bytes, DestAttr::Addr(ip));
}

#[test]
fn dest_port() {
    let bytes = [
        0x06, 0x00, // length 6
        0x02, 0x00, // type 2: IPVS_DEST_ATTR_PORT
        0x1f, 0x90, // be16: 8080
        0x00, 0x00, // padding
    ];
    captured(&bytes);
    round_trip(&bytes, DestAttr::Port(8080));
}

#[test]
fn dest_fwd_method() {
    let bytes = [
        0x08, 0x00, // length 8
        0x03, 0x00, // type 3: IPVS_DEST_ATTR_FWD_METHOD
        0x00, 0x00, 0x00, 0x00, // u32: IP_VS_CONN_F_MASQ (0)
    ];
    captured(&bytes);
    round_trip(&bytes, DestAttr::FwdMethod(0));
}

#[test]
fn dest_weight() {
    let bytes = [
        0x08, 0x00, // length 8
        0x04, 0x00, // type 4: IPVS_DEST_ATTR_WEIGHT
        0x01, 0x00, 0x00, 0x00, // s32: 1
    ];
    captured(&bytes);
    round_trip(&bytes, DestAttr::Weight(1));
}

#[test]
fn dest_u_thresh() {
    let bytes = [
        0x08, 0x00, // length 8
        0x05, 0x00, // type 5: IPVS_DEST_ATTR_U_THRESH
        0x00, 0x00, 0x00, 0x00, // u32: no upper threshold
    ];
    captured(&bytes);
    round_trip(&bytes, DestAttr::UThresh(0));
}

#[test]
fn dest_l_thresh() {
    let bytes = [
        0x08, 0x00, // length 8
        0x06, 0x00, // type 6: IPVS_DEST_ATTR_L_THRESH
        0x00, 0x00, 0x00, 0x00, // u32: no lower threshold
    ];
    captured(&bytes);
    round_trip(&bytes, DestAttr::LThresh(0));
}

#[test]
fn dest_active_conns() {
    let bytes = [
        0x08, 0x00, // length 8
        0x07, 0x00, // type 7: IPVS_DEST_ATTR_ACTIVE_CONNS
        0x00, 0x00, 0x00, 0x00, // u32: 0
    ];
    captured(&bytes);
    round_trip(&bytes, DestAttr::ActiveConns(0));
}

#[test]
fn dest_inact_conns() {
    let bytes = [
        0x08, 0x00, // length 8
        0x08, 0x00, // type 8: IPVS_DEST_ATTR_INACT_CONNS
        0x00, 0x00, 0x00, 0x00, // u32: 0
    ];
    captured(&bytes);
    round_trip(&bytes, DestAttr::InactConns(0));
}

#[test]
fn dest_persist_conns() {
    let bytes = [
        0x08, 0x00, // length 8
        0x09, 0x00, // type 9: IPVS_DEST_ATTR_PERSIST_CONNS
        0x00, 0x00, 0x00, 0x00, // u32: 0
    ];
    captured(&bytes);
    round_trip(&bytes, DestAttr::PersistConns(0));
}

#[test]
fn dest_stats() {
    captured(&STATS);
    round_trip(&STATS, DestAttr::Stats(stats32()));
}

#[test]
fn dest_addr_family() {
    let bytes = [
        0x06, 0x00, // length 6
        0x0b, 0x00, // type 11: IPVS_DEST_ATTR_ADDR_FAMILY
        0x02, 0x00, // u16: AF_INET
        0x00, 0x00, // padding
    ];
    captured(&bytes);
    round_trip(&bytes, DestAttr::AddrFamily(2));
}

#[test]
fn dest_stats64() {
    captured(&STATS64);
    round_trip(&STATS64, DestAttr::Stats64(stats64()));
}

#[test]
fn dest_tun_type() {
    let bytes = [
        0x05, 0x00, // length 5
        0x0d, 0x00, // type 13: IPVS_DEST_ATTR_TUN_TYPE
        0x00, // u8: IP_VS_CONN_F_TUNNEL_TYPE_IPIP
        0x00, 0x00, 0x00, // padding
    ];
    captured(&bytes);
    round_trip(&bytes, DestAttr::TunType(0));
}

#[test]
fn dest_tun_port() {
    let bytes = [
        0x06, 0x00, // length 6
        0x0e, 0x00, // type 14: IPVS_DEST_ATTR_TUN_PORT
        0x00, 0x00, // be16: 0 (no GUE port)
        0x00, 0x00, // padding
    ];
    captured(&bytes);
    round_trip(&bytes, DestAttr::TunPort(0));
}

#[test]
fn dest_tun_flags() {
    let bytes = [
        0x06, 0x00, // length 6
        0x0f, 0x00, // type 15: IPVS_DEST_ATTR_TUN_FLAGS
        0x00, 0x00, // u16: IP_VS_TUNNEL_ENCAP_FLAG_NOCSUM
        0x00, 0x00, // padding
    ];
    captured(&bytes);
    round_trip(&bytes, DestAttr::TunFlags(0));
}

// ---------------------------------------------------------------------
// Counter attributes (IPVS_STATS_ATTR_*), one by one.
// ---------------------------------------------------------------------

#[test]
fn stats_fields_in_both_widths() {
    for field in StatsField::ALL {
        let kind = field as u8;
        let narrow = [
            0x08, 0x00, // length 8
            kind, 0x00, // type: the field
            0x00, 0x00, 0x00, 0x00, // u32: 0
        ];
        let wide = [
            0x0c, 0x00, // length 12
            kind, 0x00, // type: the field
            0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // u64: 0
        ];
        captured(&wide);
        round_trip(&wide, StatsAttr::Field(field, Counter::U64(0)));
        if !matches!(field, StatsField::InBytes | StatsField::OutBytes) {
            captured(&narrow);
        }
        round_trip(&narrow, StatsAttr::Field(field, Counter::U32(0)));
    }
}

#[test]
fn stats_counter_values_are_native_endian() {
    // Not in the capture (its counters are all zero): CONNS = 0x0102_0304
    // and INBYTES = 2^40 + 5, as nla_put_u32/nla_put_u64_64bit write them
    // on a little-endian machine.
    let conns = [
        0x08, 0x00, // length 8
        0x01, 0x00, // type 1: IPVS_STATS_ATTR_CONNS
        0x04, 0x03, 0x02, 0x01, // u32: 0x01020304
    ];
    round_trip(
        &conns,
        StatsAttr::Field(StatsField::Conns, Counter::U32(0x0102_0304)),
    );
    let inbytes = [
        0x0c, 0x00, // length 12
        0x04, 0x00, // type 4: IPVS_STATS_ATTR_INBYTES
        0x05, 0x00, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, // u64: 2^40 + 5
    ];
    round_trip(
        &inbytes,
        StatsAttr::Field(StatsField::InBytes, Counter::U64((1 << 40) + 5)),
    );
}

#[test]
fn stats_pad_is_kept() {
    // Not in the capture: IPVS_STATS_ATTR_PAD (11), which
    // nla_put_u64_64bit adds before a u64 on machines without efficient
    // unaligned access; empty, kept verbatim.
    let bytes = [
        0x04, 0x00, // length 4
        0x0b, 0x00, // type 11: IPVS_STATS_ATTR_PAD, no payload
    ];
    round_trip(&bytes, StatsAttr::Other(DefaultNla::new(11, vec![])));
}

// ---------------------------------------------------------------------
// Sync-daemon attributes (IPVS_DAEMON_ATTR_*, in IPVS_CMD_ATTR_DAEMON).
// None is in the capture (no daemon ran): the bytes are laid out as
// ip_vs_genl_fill_daemon writes them.
// ---------------------------------------------------------------------

#[test]
fn daemon_state() {
    let bytes = [
        0x08, 0x00, // length 8
        0x01, 0x00, // type 1: IPVS_DAEMON_ATTR_STATE
        0x01, 0x00, 0x00, 0x00, // u32: IP_VS_STATE_MASTER
    ];
    round_trip(&bytes, DaemonAttr::State(1));
}

#[test]
fn daemon_mcast_ifn() {
    let bytes = [
        0x09, 0x00, // length 9
        0x02, 0x00, // type 2: IPVS_DAEMON_ATTR_MCAST_IFN
        b'e', b't', b'h', b'0', 0x00, // "eth0", NUL-terminated
        0x00, 0x00, 0x00, // padding
    ];
    round_trip(&bytes, DaemonAttr::McastIfn("eth0".into()));
}

#[test]
fn daemon_sync_id() {
    let bytes = [
        0x08, 0x00, // length 8
        0x03, 0x00, // type 3: IPVS_DAEMON_ATTR_SYNC_ID
        0x07, 0x00, 0x00, 0x00, // u32: 7
    ];
    round_trip(&bytes, DaemonAttr::SyncId(7));
}

#[test]
fn daemon_sync_maxlen() {
    let bytes = [
        0x06, 0x00, // length 6
        0x04, 0x00, // type 4: IPVS_DAEMON_ATTR_SYNC_MAXLEN
        0x78, 0x05, // u16: 1400
        0x00, 0x00, // padding
    ];
    round_trip(&bytes, DaemonAttr::SyncMaxlen(1400));
}

#[test]
fn daemon_mcast_group() {
    let bytes = [
        0x08, 0x00, // length 8
        0x05, 0x00, // type 5: IPVS_DAEMON_ATTR_MCAST_GROUP
        0xe0, 0x00, 0x00, 0x51, // in_addr, network order: 224.0.0.81
    ];
    round_trip(&bytes, DaemonAttr::McastGroup([224, 0, 0, 81]));
}

#[test]
fn daemon_mcast_group6() {
    let bytes = [
        0x14, 0x00, // length 20
        0x06, 0x00, // type 6: IPVS_DAEMON_ATTR_MCAST_GROUP6
        // in6_addr: ff02::51
        0xff, 0x02, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, //
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x51,
    ];
    let mut group = [0; 16];
    group[..2].copy_from_slice(&[0xff, 0x02]);
    group[15] = 0x51;
    round_trip(&bytes, DaemonAttr::McastGroup6(group));
}

#[test]
fn daemon_mcast_port() {
    let bytes = [
        0x06, 0x00, // length 6
        0x07, 0x00, // type 7: IPVS_DAEMON_ATTR_MCAST_PORT
        0x22, 0x90, // be16: 8848
        0x00, 0x00, // padding
    ];
    round_trip(&bytes, DaemonAttr::McastPort(8848));
}

#[test]
fn daemon_mcast_ttl() {
    let bytes = [
        0x05, 0x00, // length 5
        0x08, 0x00, // type 8: IPVS_DAEMON_ATTR_MCAST_TTL
        0x01, // u8: 1
        0x00, 0x00, 0x00, // padding
    ];
    round_trip(&bytes, DaemonAttr::McastTtl(1));
}

#[test]
fn a_payload_of_the_wrong_size_is_kept_verbatim() {
    // A kind the crate knows with a size it does not expect (two bytes
    // where a u32 belongs): kept as it came, so that it re-emits unchanged.
    let bytes = [
        0x06, 0x00, // length 6
        0x01, 0x00, // type 1: IPVS_DAEMON_ATTR_STATE ...
        0x01, 0x00, // ... with two bytes where four belong
        0x00, 0x00, // padding
    ];
    round_trip(&bytes, DaemonAttr::Other(DefaultNla::new(1, vec![1, 0])));
}
