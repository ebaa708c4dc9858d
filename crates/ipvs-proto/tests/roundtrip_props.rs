//! Property tests: arbitrary bytes, and captured kernel replies with a
//! byte changed, never make the decoder panic, and what parses re-emits.
//! (Round trips of requests built from model values are `rvs-ipvs`'s
//! `tests/convert_props.rs`.)

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use netlink_packet_core::NetlinkMessage;
use netlink_packet_generic::GenlMessage;
use proptest::prelude::*;
use rvs_ipvs_proto::IpvsMessage;

type Msg = NetlinkMessage<GenlMessage<IpvsMessage>>;

/// The captured kernel replies, read once.
static REPLIES: std::sync::LazyLock<Vec<Vec<u8>>> = std::sync::LazyLock::new(|| {
    rvs_testrig::fixtures::read_hex(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/kernel-replies.hex"
    ))
    .unwrap()
});

proptest! {
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
        let mut bytes = REPLIES[index % REPLIES.len()].clone();
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
